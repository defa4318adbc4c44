//! Fuzz target: configuration files and `--set` overrides built from the real keys (those of
//! the embedded default) with hostile values, and junk around them. Loading never panics; a
//! configuration that loads is within the size bounds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};

use super::*;

/// `(section, key, default value)` of every `key = value` line of the embedded default.
fn keys() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in DEFAULT_TOML.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim_matches(|c| c == '[' || c == ']').to_string();
        } else if let Some((k, v)) = line.split_once(" = ")
            && !line.starts_with('#')
        {
            let v = v.split(" #").next().unwrap_or(v).trim();
            out.push((section.clone(), k.trim().to_string(), v.to_string()));
        }
    }
    out
}

fn values() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "0",
        "-1",
        "1",
        "9223372036854775807",
        "18446744073709551615",
        "1e12",
        "nan",
        "-inf",
        "true",
        "\"\"",
        "\"/proc/self/mem\"",
        "\"../../etc\"",
        "\"0.0.0.0:0\"",
        "\"[::]:99999\"",
        "\"unix:/nonexistent/sock\"",
        "\"a\\u0000b\"",
        "\"\\u001b[31m\"",
        "\"q\\\"x\\ny\"",
        "[]",
        "[\"ENOSPC\", \"EWHAT\"]",
        "[\"\"]",
        "[1, \"x\"]",
        "{ a = 1 }",
        "[[]]",
        "1979-05-27T07:32:00Z",
    ]);
    let text = "[ -~]{0,24}".prop_map(|s| format!("{s:?}"));
    let int = any::<i64>().prop_map(|n| n.to_string());
    prop_oneof![5 => fixed.prop_map(str::to_string), 1 => text, 2 => int]
}

/// A key's value: its default (a valid document), a number scaled from a numeric default (the
/// bounds), or a hostile value.
#[derive(Clone, Debug)]
enum Value {
    Default,
    Scaled(u32),
    Hostile(String),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(Value::Default),
        2 => prop_oneof![0u32..4, Just(1_000), Just(1_000_000), any::<u32>()].prop_map(Value::Scaled),
        2 => values().prop_map(Value::Hostile),
    ]
}

fn text_of(default: &str, v: &Value) -> String {
    match v {
        Value::Default => default.to_string(),
        Value::Scaled(f) => match default.parse::<u64>() {
            Ok(n) => n
                .saturating_mul(u64::from(*f))
                .min(i64::MAX as u64)
                .to_string(),
            Err(_) => default.to_string(),
        },
        Value::Hostile(h) => h.clone(),
    }
}

type Doc = (Vec<(usize, Value)>, Vec<(usize, Value)>, String);

fn documents(nkeys: usize) -> impl Strategy<Value = Doc> {
    (
        vec((0..nkeys, value()), 0..8),
        vec((0..nkeys + 1, value()), 0..3),
        prop_oneof![6 => Just(String::new()), 1 => "[ -~\n]{0,40}"],
    )
}

fn check(keys: &[(String, String, String)], (lines, sets, junk): Doc) -> Result<(), TestCaseError> {
    let mut by_section: Vec<(&str, String)> = Vec::new();
    for (i, v) in &lines {
        let (s, k, d) = &keys[*i];
        by_section.push((s, format!("{k} = {}", text_of(d, v))));
    }
    by_section.sort_by(|a, b| a.0.cmp(b.0));
    let mut text = String::new();
    let mut current = "";
    for (s, line) in &by_section {
        if *s != current {
            text.push_str(&format!("[{s}]\n"));
            current = s;
        }
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&junk);
    let overrides: Vec<(String, String)> = sets
        .iter()
        .map(|(i, v)| match keys.get(*i) {
            Some((s, k, d)) => (format!("{s}.{k}"), text_of(d, v)),
            None => ("no.such.key".to_string(), text_of("1", v)),
        })
        .collect();
    let Ok(file) = FileConfig::parse_with(&text, "fuzz", &overrides) else {
        return Ok(());
    };
    PARSED.fetch_add(1, Relaxed);
    let Ok(config) = file.validate() else {
        return Ok(());
    };
    VALID.fetch_add(1, Relaxed);
    let f = &config.file;
    prop_assert!(f.aggregate.max_paths <= 1_000_000);
    prop_assert!(f.recorder.max_events <= 10_000_000);
    prop_assert!(f.http.max_connections <= 65_536);
    prop_assert!(f.probes.ring_buffer_bytes.is_power_of_two());
    Ok(())
}

/// Inputs that parsed, and that also validated: both paths must be exercised.
static PARSED: AtomicU64 = AtomicU64::new(0);
static VALID: AtomicU64 = AtomicU64::new(0);

#[test]
fn fuzz_config_and_overrides() {
    let keys = keys();
    assert!(
        keys.len() > 40,
        "only {} keys found in the default",
        keys.len()
    );
    crate::node::fuzzing::run("config", documents(keys.len()), |d| check(&keys, d));
    let (parsed, valid) = (PARSED.load(Relaxed), VALID.load(Relaxed));
    eprintln!("fuzz config: {parsed} parsed, {valid} of them valid");
    assert!(
        parsed >= 200 && valid >= 100,
        "{parsed} parsed, {valid} valid"
    );
}
