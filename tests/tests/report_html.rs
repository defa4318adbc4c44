//! The HTML report in a real browser: Chromium from Debian's packages, headless, with no
//! network; the screenshot's plot areas are checked for the charts' colours.

use std::{path::Path, process::Command, time::Duration};

use integration_tests::*;

/// Pixels of exactly `rgb` in a PNG (8-bit RGB or RGBA, non-interlaced), decoded by Python's
/// zlib: the test needs no image library.
fn pixels_of(png: &Path, colors: &[[u8; 3]]) -> Vec<u64> {
    const DECODE: &str = r#"
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
pos, idat, w, h, ct = 8, b"", 0, 0, 0
while pos < len(data):
    n, t = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if t == b"IHDR":
        w, h, depth, ct, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and ct in (2, 6) and interlace == 0, (depth, ct, interlace)
    elif t == b"IDAT":
        idat += body
    pos += 12 + n
bpp = 3 if ct == 2 else 4
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
want = [tuple(int(c, 16) for c in (a[0:2], a[2:4], a[4:6])) for a in sys.argv[2:]]
counts = [0] * len(want)
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(w):
        px = tuple(line[x * bpp:x * bpp + 3])
        for k, c in enumerate(want):
            if px == c:
                counts[k] += 1
    prev = line
print(" ".join(map(str, counts)))
"#;
    let hex: Vec<String> = colors
        .iter()
        .map(|c| format!("{:02x}{:02x}{:02x}", c[0], c[1], c[2]))
        .collect();
    let out = output_within(
        Command::new("python3")
            .arg("-c")
            .arg(DECODE)
            .arg(png)
            .args(&hex),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "png decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The HTML report is one self-contained page: a real browser (Chromium from Debian's packages,
/// headless, in a network namespace with no network at all) renders its fill curve and its
/// growth-by-directory bars.
#[test]
#[cfg_attr(fsobs_vm, ignore = "host only: needs a browser (not in the guests)")]
fn the_html_report_renders_its_charts_offline_in_a_real_browser() {
    let m = Mount::tmpfs("size=16m");
    let obs = Observer::start(&[
        "--set",
        "growth.enabled=true",
        "--set",
        "growth.interval_ms=200",
        "--set",
        "capacity.sample_interval_ms=100",
    ]);
    // A steady fill: files in two directories over a couple of seconds.
    for round in 0..10 {
        for d in ["builds", "cache"] {
            let dir = m.dir.join(d).join(format!("r{round}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..20 {
                std::fs::write(dir.join(format!("f{i}")), vec![1u8; 16 << 10]).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mount = m.dir.to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let r = obs.report("purge=false");
        let curve = r["fill_curves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["mount"] == mount.as_str())
            .cloned();
        let points = curve.map_or(0, |c| c["points"].as_array().map_or(0, Vec::len));
        if points >= 10 && r["culprits"].as_array().is_some_and(|c| !c.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no curve or culprits: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let work = tempfile::tempdir().unwrap();
    let page = work.path().join("report.html");
    let out = observer_cmd(&[
        "report",
        "--addr",
        obs.addr(),
        "--no-purge",
        "--mount",
        &mount,
        "--format",
        "html",
        "-o",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("<script"),
        "the page reaches out: {html}"
    );
    let shot = work.path().join("shot.png");
    let profile = work.path().join("profile");
    let out = output_within(
        Command::new("unshare")
            .args([
                "--net",
                "/usr/bin/chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", shot.display()))
            .args(["--window-size=1200,2600", "--force-device-scale-factor=1"])
            .arg(format!("file://{}", page.display()))
            .env("HOME", work.path()),
        Duration::from_secs(120),
    );
    assert!(
        shot.exists(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The fill curve's line (#1f6feb) and the growth bars (#2da44e), in the screenshot.
    let counts = pixels_of(&shot, &[[0x1f, 0x6f, 0xeb], [0x2d, 0xa4, 0x4e]]);
    assert!(counts[0] > 300, "the fill curve is blank: {counts:?}");
    assert!(counts[1] > 2000, "the growth bars are blank: {counts:?}");
    eprintln!("chart pixels (curve, bars): {counts:?}");
}
