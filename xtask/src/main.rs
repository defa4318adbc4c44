//! Project workflows: `cargo xtask setup|build|run|test`.
//!
//! The eBPF object itself is built by `observer/build.rs` (aya-build); xtask makes sure the
//! toolchain pieces it needs exist (rust-src for nightly, bpf-linker in `.tools/`) and drives
//! cargo with the right environment.

mod bench;
mod bench_compare;
mod bench_locks;
mod bench_purge;
mod bench_storm;
mod cargo;
mod kernels;
mod toolchain;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the eBPF build needs (nightly rust-src, bpf-linker in .tools/); idempotent.
    Setup,
    /// Set up, then build the observer (release) with its eBPF object embedded.
    Build,
    /// Build, then run `observer run` with the embedded default config (needs root).
    /// Extra arguments go to `observer run`, e.g. `cargo xtask run -- --errno ENOSPC,EIO`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit tests and the real-kernel integration tests (root).
    Test {
        /// Only tests whose name contains this filter.
        filter: Option<String>,
        /// Skip the VM kernel matrix (host tests only).
        #[arg(long = "no-vm")]
        skip_vm: bool,
    },
    /// Benchmark each workload without and with the observer (needs root; not a test).
    Bench {
        /// Alternating rounds per workload (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print this run next to an earlier run's `--json` file (another commit's), with the
        /// change per figure.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Run only this part: `locks` (lock-guard flag latency), `purge` (a 500,000-file
        /// purge: time, removal rate, /healthz latency) or `storm` (ENOSPC storms and the steady
        /// 10k/s: daemon CPU per event, losses, RSS).
        #[arg(long, value_parser = ["locks", "purge", "storm"])]
        only: Option<String>,
    },
    /// Run the integration tests inside other kernels under qemu (Debian 5.10, 6.1, 6.12).
    VmTest {
        /// Kernel to boot: 5.10, 6.1, 6.12 or a path to a kernel image (repeatable).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Probe mode to force in the guest (repeatable).
        #[arg(long = "mode")]
        modes: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let root = workspace_root();
    match cli.command {
        Command::Setup => toolchain::ensure(&root).map(drop),
        Command::Build => {
            let tools = toolchain::ensure(&root)?;
            cargo::build_observer(&root, &tools).map(drop)
        }
        Command::Run { args } => {
            let tools = toolchain::ensure(&root)?;
            let bin = cargo::build_observer(&root, &tools)?;
            cargo::exec_observer(&bin, &args)
        }
        Command::Test { filter, skip_vm } => {
            let tools = toolchain::ensure(&root)?;
            let bin = cargo::build_observer(&root, &tools)?;
            vm::ensure_host_packages(
                &root,
                &[
                    ("/usr/sbin/mkfs.btrfs", "btrfs-progs"),
                    ("/usr/bin/promtool", "prometheus"),
                ],
            )?;
            toolchain::ensure_python_deps(&root)?;
            let mut totals = cargo::test_all(&root, &tools, &bin, filter.as_deref())?;
            if skip_vm || filter.is_some() {
                eprintln!("xtask: the kernel matrix was NOT run (--no-vm or a filter)");
            } else {
                let vm = vm::vm_test(&root, &tools, &vm::matrix(&[], &[]))?;
                totals.add(&vm);
            }
            // The closing line: every test of the host and of every VM run.
            println!(
                "tests: {} passed, {} failed, {} skipped",
                totals.passed, totals.failed, totals.ignored
            );
            totals.verdict()
        }
        Command::Bench {
            rounds,
            json,
            compare,
            only,
        } => {
            let old = compare.map(|p| read_report(&p)).transpose()?;
            let tools = toolchain::ensure(&root)?;
            if let Some(part) = only.as_deref() {
                let observer = cargo::build_observer(&root, &tools)?;
                let v = match part {
                    "locks" => bench_locks::lock_latency(&observer, &std::env::temp_dir(), 1000)?,
                    "purge" => {
                        bench_purge::purge_cost(&observer, &std::env::temp_dir(), 10, 50_000)?
                    }
                    "storm" => bench::storm_only(&root, &tools, &observer, rounds)?,
                    other => anyhow::bail!("--only {other:?}: locks, purge or storm"),
                };
                if let Some(p) = json {
                    std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
                }
                print_comparison(old.as_ref(), &v);
                return Ok(());
            }
            let v = bench::bench(&root, &tools, rounds.max(1), json.as_deref())?;
            print_comparison(old.as_ref(), &v);
            Ok(())
        }
        Command::VmTest { kernels, modes } => {
            let tools = toolchain::ensure(&root)?;
            let totals = vm::vm_test(&root, &tools, &vm::matrix(&kernels, &modes))?;
            println!("vm: {} passed, {} failed", totals.passed, totals.failed);
            totals.verdict()
        }
    }
}

/// An earlier `--json` report, read before the run so a bad path fails at once.
fn read_report(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--compare {}: cannot read it", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("--compare {}: not a bench --json report", path.display()))
}

fn print_comparison(old: Option<&serde_json::Value>, new: &serde_json::Value) {
    if let Some(old) = old {
        println!();
        for line in bench_compare::compare(old, new) {
            println!("{line}");
        }
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
