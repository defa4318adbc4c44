//! Commands that talk to a running daemon over its HTTP API (`tail`, `top`, `dump`, `locks`,
//! `lock-status`, `purge`, `report`) through [`Client`], or read a dump file (`replay`).

pub mod http;
pub mod human;
pub mod locks;
pub mod purge;
pub mod report;
pub mod top;

use std::{
    io::{BufRead as _, BufReader, IsTerminal as _, Read, Write as _},
    path::Path,
};

use anyhow::Context as _;

use crate::{
    client::human::EventLine,
    events::filter::{Filter, FilterArgs},
    node::clock::now_unix_ns,
};

pub use http::{Client, ClientError};

/// Ctrl-C ends a streaming command with exit status 0.
pub fn exit_zero_on_sigint() {
    extern "C" fn on_sigint(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: installs a handler that only calls an async-signal-safe function.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// How event lines are shown.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub json: bool,
    pub color: bool,
}

impl Style {
    pub fn new(json: bool, no_color: bool) -> Self {
        Self {
            json,
            color: !no_color && !json && std::io::stdout().is_terminal(),
        }
    }
}

/// Prints event lines from `input` that pass `filter`: JSON as received with `--json`,
/// columns otherwise. Non-event lines (dump header, snapshots, stats) are shown as JSON
/// only with `--json` and `show_other`.
fn print_events(
    input: impl Read,
    filter: Option<&Filter>,
    style: Style,
    show_other: bool,
) -> anyhow::Result<u64> {
    let mut out = std::io::stdout().lock();
    if !style.json {
        writeln!(out, "{}", human::header())?;
    }
    let mut n = 0;
    for line in BufReader::new(input).lines() {
        let line = line.context("reading the event stream")?;
        let Ok(mut ev) = serde_json::from_str::<EventLine>(&line) else {
            continue;
        };
        if ev.r#type == "lock" {
            ev = human::lock_line(&line);
        } else if ev.r#type == "purge" {
            ev = human::purge_line(&line);
        }
        if !matches!(ev.r#type.as_str(), "syscall" | "lock" | "purge") {
            if show_other && style.json {
                writeln!(out, "{line}")?;
            } else if ev.r#type == "lagged" {
                eprintln!("fsobserver: {line}");
            }
            continue;
        }
        if filter.is_some_and(|f| !f.matches(&ev)) {
            continue;
        }
        n += 1;
        if style.json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", human::columns(&ev, style.color))?;
        }
        out.flush()?;
    }
    Ok(n)
}

/// `observer tail`: the daemon's live stream, filtered by the daemon.
pub fn tail(client: &Client, filters: &FilterArgs, style: Style) -> anyhow::Result<()> {
    // Bad filters are reported here, before connecting.
    Filter::new(filters, now_unix_ns())?;
    exit_zero_on_sigint();
    let body = client.get_stream("/events", &filters.query_pairs())?;
    print_events(body, None, style, false)?;
    Ok(())
}

/// `observer dump`: the daemon's flight recorder to a file (or stdout).
pub fn dump(client: &Client, output: Option<&Path>) -> anyhow::Result<()> {
    let mut body = client.get_stream("/dump", &[])?;
    match output {
        Some(p) => {
            let mut f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            let n = std::io::copy(&mut body, &mut f)
                .with_context(|| format!("writing {}", p.display()))?;
            f.sync_all()?;
            eprintln!("fsobserver: dump written to {} ({n} bytes)", p.display());
        }
        None => {
            std::io::copy(&mut body, &mut std::io::stdout().lock())?;
        }
    }
    Ok(())
}

/// `observer replay`: a dump file through the tail formatting (header summarised on stderr).
pub fn replay(file: &Path, filters: &FilterArgs, style: Style) -> anyhow::Result<()> {
    let text = std::fs::File::open(file)
        .with_context(|| format!("cannot open dump {}", file.display()))?;
    let mut lines = BufReader::new(text);
    let mut first = String::new();
    lines.read_line(&mut first)?;
    let header: serde_json::Value = serde_json::from_str(&first)
        .ok()
        .filter(|h: &serde_json::Value| h["type"] == "dump-header")
        .with_context(|| {
            format!(
                "{} is not an fsobserver dump (no header line)",
                file.display()
            )
        })?;
    if style.json {
        print!("{first}");
    } else {
        eprintln!(
            "dump of {} (kernel {}, {} probes, {}, reason {}): {} events; losses {}",
            header["node"].as_str().unwrap_or("?"),
            header["kernel"].as_str().unwrap_or("?"),
            header["probe_mode"].as_str().unwrap_or("?"),
            header["created"].as_str().unwrap_or("?"),
            header["reason"].as_str().unwrap_or("?"),
            header["events"],
            header["losses"],
        );
    }
    // A dump is a finished record: `since` is relative to its end, not to now.
    let end = header["window_end_unix_ns"]
        .as_u64()
        .unwrap_or_else(now_unix_ns);
    let filter = Filter::new(filters, end)?;
    print_events(lines, Some(&filter), style, true)?;
    Ok(())
}
