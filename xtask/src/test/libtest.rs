//! Reading what a libtest binary ran: the tests it lists (`--list`), and per test whether it
//! passed, failed or was skipped (`ignored, <reason>`). A test binary that crashes or loses
//! tests can not make the tally look better: every listed test needs an outcome line, and one
//! without is counted as failed (`missing`). Binaries run with `--report-time` (see
//! [`TIME_ARGS`]) also say how long each test took; the slowest are printed at the end.

use std::collections::BTreeMap;

/// What happened to one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// Ignored by libtest (chosen at build time for the cell), with its reason.
    Skipped(String),
    /// Listed but no outcome arrived: the binary crashed, hung or lost it.
    Missing,
}

/// Arguments (with `RUSTC_BOOTSTRAP=1` in the environment: libtest checks it at run time)
/// that make a test binary print each test's duration: `test NAME ... ok <1.234s>`.
pub const TIME_ARGS: &[&str] = &["-Z", "unstable-options", "--report-time"];

/// The outcome of every test of one binary (or of one VM cell's binaries), by name.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub tests: BTreeMap<String, Outcome>,
    /// Seconds per test, where the binary reported them.
    pub seconds: BTreeMap<String, f64>,
}

/// Counts over reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub missing: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.missing += o.missing;
    }

    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.skipped + self.missing
    }
}

/// Test names from the output of `<test binary> --list` (`name: test` lines).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// A test outcome printed by libtest: `ok`, `FAILED`, `ignored` or `ignored, <reason>`, with
/// the test's duration when it was reported (`ok <1.234s>`).
fn outcome(s: &str) -> Option<(Outcome, Option<f64>)> {
    let s = s.trim_end();
    let (word, secs) = match s.strip_suffix("s>").and_then(|r| r.rsplit_once(" <")) {
        Some((word, t)) => (word, t.parse::<f64>().ok()),
        None => (s, None),
    };
    outcome_word(word).map(|o| (o, secs))
}

fn outcome_word(s: &str) -> Option<Outcome> {
    match s {
        "ok" => Some(Outcome::Passed),
        "FAILED" => Some(Outcome::Failed),
        "ignored" => Some(Outcome::Skipped(String::new())),
        s => s
            .strip_prefix("ignored, ")
            .map(|r| Outcome::Skipped(r.to_string())),
    }
}

impl Report {
    /// The outcomes of `expected` tests in libtest's output `text` (run with
    /// `--test-threads=1`). A child process writing to the same stream may split
    /// `test NAME ... ` from its result; the result is then the next line that is one.
    pub fn from_output(expected: &[String], text: &str) -> Report {
        let mut seen: BTreeMap<String, Outcome> = BTreeMap::new();
        let mut seconds = BTreeMap::new();
        let mut pending: Option<String> = None;
        let mut record = |name: &str, (o, secs): (Outcome, Option<f64>)| {
            seen.insert(name.to_string(), o);
            if let Some(t) = secs {
                seconds.insert(name.to_string(), t);
            }
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("test ")
                && let Some((name, result)) = rest.split_once(" ... ")
                && expected.iter().any(|e| e == name)
            {
                match outcome(result) {
                    Some(o) => {
                        record(name, o);
                        pending = None;
                    }
                    None => pending = Some(name.to_string()),
                }
                continue;
            }
            if let Some(name) = &pending
                && let Some(o) = outcome(line)
            {
                record(name, o);
                pending = None;
            }
        }
        let tests = expected
            .iter()
            .map(|n| (n.clone(), seen.remove(n).unwrap_or(Outcome::Missing)))
            .collect();
        Report { tests, seconds }
    }

    /// The `n` slowest tests, slowest first.
    pub fn slowest(&self, n: usize) -> Vec<(&str, f64)> {
        let mut v: Vec<(&str, f64)> = self.seconds.iter().map(|(k, t)| (k.as_str(), *t)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(n);
        v
    }

    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for o in self.tests.values() {
            match o {
                Outcome::Passed => t.passed += 1,
                Outcome::Failed => t.failed += 1,
                Outcome::Skipped(_) => t.skipped += 1,
                Outcome::Missing => t.missing += 1,
            }
        }
        t
    }

    /// The tests that did not pass and were not skipped, with what happened.
    pub fn problems(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.tests.iter().filter_map(|(n, o)| match o {
            Outcome::Failed => Some((n.as_str(), "FAILED")),
            Outcome::Missing => Some((n.as_str(), "MISSING (crashed, hung or never ran)")),
            _ => None,
        })
    }

    /// Skip reasons with how many tests each skipped.
    pub fn skip_reasons(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for o in self.tests.values() {
            if let Outcome::Skipped(r) = o {
                let r = if r.is_empty() { "no reason given" } else { r };
                *m.entry(r.to_string()).or_default() += 1;
            }
        }
        m
    }

    pub fn extend(&mut self, prefix: &str, other: Report) {
        for (n, o) in other.tests {
            self.tests.insert(format!("{prefix}{n}"), o);
        }
        for (n, t) in other.seconds {
            self.seconds.insert(format!("{prefix}{n}"), t);
        }
    }
}

/// One place tests ran: the host (debug unit tests, release tests) or a VM cell.
pub struct Cell {
    pub name: String,
    pub report: Report,
    pub seconds: f64,
    /// Why the cell as a whole failed (no verdict from a guest, a build error...).
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_tests_and_not_benchmarks() {
        let text = "a::one: test\ntwo: test\nb: benchmark\n\n2 tests, 1 benchmark\n";
        assert_eq!(parse_list(text), names(&["a::one", "two"]));
    }

    #[test]
    fn every_listed_test_needs_an_outcome() {
        let expected = names(&["a", "b", "c", "d", "e"]);
        let out = "running 5 tests\n\
                   test a ... ok <1.500s>\n\
                   test b ... ignored, host only: userspace\n\
                   test c ... pid=42 ready=1\n\
                   ok <0.250s>\n\
                   test d ... FAILED\n\
                   test e ... ";
        let r = Report::from_output(&expected, out);
        assert_eq!(r.tests["a"], Outcome::Passed);
        assert_eq!(
            r.tests["b"],
            Outcome::Skipped("host only: userspace".into())
        );
        assert_eq!(r.tests["c"], Outcome::Passed, "result after a child's line");
        assert_eq!(r.tests["d"], Outcome::Failed);
        assert_eq!(r.tests["e"], Outcome::Missing, "the binary died in e");
        let t = r.tally();
        assert_eq!(
            t,
            Tally {
                passed: 2,
                failed: 1,
                skipped: 1,
                missing: 1
            }
        );
        assert_eq!(r.problems().count(), 2);
        assert_eq!(r.slowest(5), vec![("a", 1.5), ("c", 0.25)]);
    }

    #[test]
    fn a_test_not_listed_proves_nothing() {
        let r = Report::from_output(&names(&["a"]), "test other ... ok\n");
        assert_eq!(
            r.tests["a"],
            Outcome::Missing,
            "a test not listed proves nothing"
        );
    }
}
