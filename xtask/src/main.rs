//! Project workflows: `cargo xtask setup|build|image|run|test|bench|fuzz|vm-test`.
//!
//! xtask makes sure the toolchain pieces the eBPF build needs exist (rust-src for nightly,
//! bpf-linker in `.tools/`), builds the eBPF object once per run, and drives cargo with the
//! right environment (`observer/build.rs` embeds that object; built by plain cargo, it builds
//! its own with aya-build).

mod bench;
mod cargo;
mod image;
mod test;
mod toolchain;

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
    /// Install what the eBPF build needs (nightly rust-src, bpf-linker in .tools/) and build the
    /// eBPF object; idempotent.
    Setup,
    /// Set up, then build the observer (release) with its eBPF object embedded.
    Build,
    /// Build, then make the container image offline (no registry): a docker-archive in
    /// target/image that `podman load -i` (or `docker load -i`) accepts.
    Image,
    /// Build, then run `observer run` with the embedded default config (needs root).
    /// Extra arguments go to `observer run`, e.g. `cargo xtask run -- --errno ENOSPC,EIO`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit tests (debug and release), the real-kernel integration
    /// tests on the host and in the kernel matrix (root), with the machine guard around it all.
    Test {
        /// Only tests whose name contains this filter (host and VMs alike).
        filter: Option<String>,
        /// Skip the VM kernel matrix (host tests only).
        #[arg(long = "no-vm")]
        skip_vm: bool,
        /// The development loop: habits, unit tests and the host integration tests (no kernel
        /// matrix). CI runs everything.
        #[arg(long)]
        quick: bool,
        /// List every test, by binary, and run nothing.
        #[arg(long)]
        list: bool,
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
        /// Run only this part: `table` (the workloads without/floor/bpftrace/observer),
        /// `programs` (BPF run time per operation, observer against bpftrace), `locks`
        /// (lock-guard flag latency), `purge` (a 500,000-file
        /// purge: time, removal rate, /healthz latency) or `storm` (ENOSPC storms and the steady
        /// 10k/s: daemon CPU per event, losses, RSS).
        #[arg(long, value_parser = ["table", "programs", "locks", "purge", "storm"])]
        only: Option<String>,
        /// Benchmark this observer binary (e.g. another commit's build) instead of building one.
        #[arg(long)]
        observer: Option<PathBuf>,
    },
    /// Fuzz the ring-buffer decoder (and event line) and the configuration/override parser for
    /// a fixed time each, with fresh random seeds (not part of `test`).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Run the integration tests inside other kernels under qemu (Debian 5.10, 6.1, 6.12).
    VmTest {
        /// Kernel to boot: 5.10, 6.1, 6.12 or a path to a kernel image (repeatable).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
        /// Probe mode to force in the guest (repeatable).
        #[arg(long = "mode")]
        modes: Vec<String>,
        /// Only tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
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
        Command::Image => {
            let tools = toolchain::ensure(&root)?;
            let bin = cargo::build_observer(&root, &tools)?;
            test::ensure_podman()?;
            let archive = image::build(&root, &bin)?;
            println!(
                "{}\n  load it: podman load -i {0}\n  image:   {}",
                archive.display(),
                image::reference()
            );
            Ok(())
        }
        Command::Run { args } => {
            let tools = toolchain::ensure(&root)?;
            let bin = cargo::build_observer(&root, &tools)?;
            cargo::exec_observer(&bin, &args)
        }
        Command::Test {
            filter,
            skip_vm,
            quick,
            list,
        } => {
            if list {
                return test::list_all(&root);
            }
            test::test(
                &root,
                &test::Options {
                    filter,
                    vm: !(skip_vm || quick),
                    quick,
                },
            )
        }
        Command::Bench {
            rounds,
            json,
            compare,
            only,
            observer,
        } => {
            let old = compare.map(|p| read_report(&p)).transpose()?;
            let tools = toolchain::ensure(&root)?;
            let observer = match observer {
                Some(bin) => bin,
                None => cargo::build_observer(&root, &tools)?,
            };
            if let Some(part) = only.as_deref() {
                let v = match part {
                    "locks" => bench::lock_latency(&observer, &std::env::temp_dir(), 1000)?,
                    "purge" => bench::purge_cost(&observer, &std::env::temp_dir(), 10, 50_000)?,
                    "storm" => bench::storm_only(&root, &tools, &observer, rounds)?,
                    "table" => bench::table_only(&root, &tools, &observer, rounds)?,
                    "programs" => bench::programs_only(&root, &tools, &observer, rounds)?,
                    other => {
                        anyhow::bail!("--only {other:?}: table, programs, locks, purge or storm")
                    }
                };
                if let Some(p) = json {
                    std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
                }
                print_comparison(old.as_ref(), &v);
                return Ok(());
            }
            let v = bench::bench(&root, &tools, &observer, rounds.max(1), json.as_deref())?;
            print_comparison(old.as_ref(), &v);
            Ok(())
        }
        Command::Fuzz { seconds } => {
            let tools = toolchain::ensure(&root)?;
            cargo::fuzz(&root, &tools, seconds)
        }
        Command::VmTest {
            kernels,
            modes,
            filter,
        } => {
            let tools = toolchain::ensure(&root)?;
            let runs = test::vm::matrix(&kernels, &modes);
            let cells = test::vm::vm_test(&root, &tools, &runs, filter.as_deref())?;
            test::summarize(&cells, &[], true, filter.is_some())
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
        for line in bench::compare(old, new) {
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
