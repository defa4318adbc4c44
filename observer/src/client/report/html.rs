//! The report as one self-contained HTML page: the TL;DR, the tables, and two charts drawn as
//! inline SVG (each filesystem's fill curve; net entries per culprit directory). No script, no
//! style sheet or font from elsewhere: it opens offline and in a ticket attachment.

use std::fmt::Write as _;

use serde_json::Value;

use super::{bytes, dir_bytes, n, s, time, tldr};

/// Escapes text for HTML (every name in the report comes from a filesystem or `/proc`).
fn esc(t: &str) -> String {
    let mut o = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const W: f64 = 720.0;
const H: f64 = 240.0;
const PAD: f64 = 48.0;

/// One filesystem's used bytes over time, against its size.
fn fill_chart(o: &mut String, c: &Value) {
    let pts: Vec<(f64, f64, f64)> = c["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?, p[2].as_f64()?)))
        .collect();
    let _ = writeln!(o, "<h3>{}</h3>", esc(&s(&c["mount"])));
    if pts.len() < 2 {
        let _ = writeln!(o, "<p>Not enough samples yet.</p>");
        return;
    }
    let (t0, t1) = (pts[0].0, pts[pts.len() - 1].0.max(pts[0].0 + 1.0));
    let size = pts.iter().map(|p| p.2).fold(1.0, f64::max);
    let x = |t: f64| PAD + (t - t0) / (t1 - t0) * (W - 2.0 * PAD);
    let y = |u: f64| H - PAD - u / size * (H - 2.0 * PAD);
    let line: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1)))
        .collect();
    let _ = writeln!(
        o,
        r##"<svg class="chart fill" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="fill curve">
<rect x="{PAD}" y="{PAD}" width="{}" height="{}" fill="#f4f6f8" stroke="#99a"/>
<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="#c33" stroke-dasharray="4"/>
<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="3"/>
<text x="{PAD}" y="{}" font-size="12">{}</text><text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>
<text x="4" y="{}" font-size="12">{}</text><text x="4" y="{}" font-size="12">0</text>
</svg>"##,
        W - 2.0 * PAD,
        H - 2.0 * PAD,
        y(size),
        W - PAD,
        y(size),
        line.join(" "),
        H - PAD / 3.0,
        esc(&time(&c["points"][0][0])),
        W - PAD,
        H - PAD / 3.0,
        esc(&time(&c["points"][pts.len() - 1][0])),
        PAD + 4.0,
        esc(&bytes(size as u64)),
        H - PAD,
    );
}

/// Net entries per culprit directory, as horizontal bars.
fn growth_chart(o: &mut String, rows: &[Value]) {
    if rows.is_empty() {
        let _ = writeln!(o, "<p>No directory is growing.</p>");
        return;
    }
    let max = rows
        .iter()
        .map(|r| r["net"].as_f64().unwrap_or(0.0))
        .fold(1.0, f64::max);
    let bar = 26.0;
    let h = PAD + bar * rows.len() as f64;
    let _ = writeln!(
        o,
        r#"<svg class="chart growth" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img" aria-label="growth by directory">"#
    );
    for (i, r) in rows.iter().enumerate() {
        let net = r["net"].as_f64().unwrap_or(0.0).max(0.0);
        let y = PAD / 2.0 + i as f64 * bar;
        let w = net / max * (W - 300.0);
        let _ = writeln!(
            o,
            r##"<rect x="290" y="{y}" width="{w:.1}" height="{}" fill="#2da44e"/><text x="284" y="{}" font-size="12" text-anchor="end">{}</text><text x="{:.1}" y="{}" font-size="12">{}</text>"##,
            bar - 6.0,
            y + bar / 2.0,
            esc(&s(&r["dir"])),
            296.0 + w,
            y + bar / 2.0,
            net as i64,
        );
    }
    let _ = writeln!(o, "</svg>");
}

fn table(o: &mut String, head: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(o, "<table><tr>");
    for h in head {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    let _ = writeln!(o, "</tr>");
    for r in rows {
        let _ = write!(o, "<tr>");
        for c in r {
            let _ = write!(o, "<td>{}</td>", esc(&c));
        }
        let _ = writeln!(o, "</tr>");
    }
    let _ = writeln!(o, "</table>");
}

pub fn page(v: &Value) -> String {
    let mut o = String::new();
    let title = format!("Filesystem report — {}", s(&v["node"]));
    let _ = writeln!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccd;padding:3px 8px;font-size:13px}}\
         th{{background:#eef}}</style></head><body>",
        esc(&title)
    );
    let _ = writeln!(
        o,
        "<h1>{}</h1><p>Generated {}; counting since {}.</p>",
        esc(&title),
        esc(&time(&v["generated_unix_ns"])),
        esc(&time(&v["counting_since_unix_ns"]))
    );
    let _ = writeln!(o, "<h2>TL;DR</h2><ul>");
    for l in tldr(v) {
        let _ = writeln!(o, "<li>{}</li>", esc(&l));
    }
    let _ = writeln!(o, "</ul><h2>Fill</h2>");
    for c in v["fill_curves"].as_array().into_iter().flatten() {
        fill_chart(&mut o, c);
    }
    let _ = writeln!(o, "<h2>Growth by directory</h2>");
    let culprits: Vec<Value> = v["culprits"].as_array().cloned().unwrap_or_default();
    growth_chart(&mut o, &culprits);
    table(
        &mut o,
        &[
            "directory",
            "net",
            "created",
            "directories",
            "removed",
            "bytes",
            "never cleaned",
        ],
        culprits
            .iter()
            .map(|c| {
                vec![
                    s(&c["dir"]),
                    c["net"].as_i64().unwrap_or(0).to_string(),
                    n(&c["created"]).to_string(),
                    n(&c["mkdirs"]).to_string(),
                    n(&c["removed"]).to_string(),
                    dir_bytes(c),
                    c["never_cleaned"].as_bool().unwrap_or(false).to_string(),
                ]
            })
            .collect(),
    );
    let _ = writeln!(o, "<h2>Victims</h2>");
    table(
        &mut o,
        &[
            "workload", "process", "call", "errno", "path", "count", "first", "last",
        ],
        v["victims"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                vec![
                    s(&x["workload"]),
                    s(&x["comm"]),
                    s(&x["syscall"]),
                    s(&x["errno"]),
                    s(&x["path"]),
                    n(&x["count"]).to_string(),
                    time(&x["first_unix_ns"]),
                    time(&x["last_unix_ns"]),
                ]
            })
            .collect(),
    );
    let _ = writeln!(
        o,
        "<h2>Orphans of dead processes</h2><p>{} lock files whose holder has died.</p>",
        n(&v["orphans"]["locks_holder_dead"])
    );
    let _ = writeln!(o, "</body></html>");
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_cannot_break_out_of_the_page() {
        let v = serde_json::json!({"version": 1, "node": "<script>x</script>",
            "culprits": [{"dir": "/a/<img src=x onerror=y>", "net": 3}]});
        let p = super::page(&v);
        assert!(!p.contains("<script>x") && !p.contains("<img"), "{p}");
        assert!(p.contains("&lt;img src=x onerror=y&gt;"));
    }
}
