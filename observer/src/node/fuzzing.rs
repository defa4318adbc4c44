//! The fuzz runner shared by the fuzz targets (`fuzz_*` unit tests): proptest inputs, a fixed
//! number of cases in the test command, or as many as fit in `FSOBS_FUZZ_SECS` seconds with a
//! fresh random seed per run (`cargo xtask fuzz`). A failure is shrunk to a minimal input and
//! printed.

use std::time::{Duration, Instant};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

/// Cases per target in the test command (deterministic seed).
const CASES_IN_TESTS: u32 = 2_000;
/// Cases per round in a timed run (the clock is read between rounds).
const ROUND: u32 = 5_000;

/// Runs `property` on inputs from `strategy`; panics with the shrunk input on a failure.
pub fn run<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let timed = std::env::var("FSOBS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let config = |cases| Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 10_000,
        ..Config::default()
    };
    let started = Instant::now();
    let mut cases = 0u64;
    loop {
        let mut runner = match timed {
            Some(_) => TestRunner::new(config(ROUND)),
            None => TestRunner::new_with_rng(
                config(CASES_IN_TESTS),
                TestRng::deterministic_rng(RngAlgorithm::ChaCha),
            ),
        };
        if let Err(e) = runner.run(&strategy, &property) {
            panic!("fuzz {name}: {e}");
        }
        cases += u64::from(runner.config().cases);
        match timed {
            Some(limit) if started.elapsed() < limit => continue,
            _ => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {cases} cases in {secs:.1} s ({:.0}/s), no failure",
        cases as f64 / secs.max(1e-9)
    );
}
