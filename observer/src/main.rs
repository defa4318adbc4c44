//! fsobserver: `observer run` (the daemon) and the commands that talk to it.
//!
//! The pipeline, one folder per stage, dependencies pointing down this list:
//! `node` (facts about the machine) and `config` at the bottom, then `kernel` (load, attach,
//! read the ring and the counters) -> `events` (decode, identify) -> `analyze` (aggregate,
//! capacity, locks) -> `record` (recorder, dumps) -> `act` (purge) -> `serve` (HTTP, metrics),
//! wired together by `daemon`; `client` talks to a running daemon and `cli` parses the command
//! line.

mod act;
mod analyze;
mod cli;
mod client;
mod config;
mod daemon;
mod events;
mod kernel;
mod node;
mod record;
mod serve;

use clap::Parser as _;

/// mimalloc instead of glibc's malloc: the consumer allocates a batch of records (up to 256)
/// and then frees as many rotated out of the recorder; glibc's per-thread cache holds 7 chunks
/// of a size, so every batch went through its slow paths (about 0.3-0.5 µs of daemon CPU per
/// event in a storm, measured with perf: `_int_malloc`, `malloc_consolidate`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(&cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the whole cause chain, no backtrace noise. Bad input (config)
            // exits 2 like a usage error; a failure to run exits 1.
            eprintln!("fsobserver: error: {e:#}");
            if e.downcast_ref::<config::ConfigError>().is_some()
                || e.downcast_ref::<events::filter::FilterError>().is_some()
            {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::LockStatus { path, addr, json } => {
            // Exit 5 (unknown) whatever went wrong: a script must never read it as healthy.
            let code = match addr.client() {
                Ok(c) => client::locks::status(&c, &path, json),
                Err(e) => {
                    eprintln!("fsobserver: lock-status unknown: {e}");
                    5
                }
            };
            std::process::exit(i32::from(code));
        }
        cli::Command::Locks { addr, json } => client::locks::list(&addr.client()?, json),
        cli::Command::Purge {
            policy,
            dry_run: _,
            execute,
            json,
            addr,
        } => {
            // A run answers when it has decided about every entry: wait for it.
            let mut c = addr.client()?;
            c.timeout = c.timeout.max(std::time::Duration::from_secs(1800));
            client::purge::run(&c, policy.as_deref(), execute, json)
        }
        cli::Command::Run(args) => {
            let mut overrides = config::overrides_from_env();
            overrides.extend(args.set.iter().cloned());
            let mut file = config::FileConfig::load(args.config.as_deref(), &overrides)?;
            args.apply(&mut file);
            daemon::run(file.validate()?, None)
        }
        cli::Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
        cli::Command::Config(cli::ConfigCommand::Check { file }) => {
            let cfg =
                config::FileConfig::load(Some(&file), &config::overrides_from_env())?.validate()?;
            act::purge::check(&cfg.file.purge)
                .map_err(|e| config::ConfigError::Invalid(e.to_string()))?;
            println!("config ok: {}", file.display());
            Ok(())
        }
        cli::Command::Tail(mut a) => {
            let c = if a.standalone {
                // Everything since the in-process probes attached, even what happened before
                // the stream connected.
                a.filters.since.get_or_insert_with(|| "100y".into());
                let addr = standalone(a.config.as_deref())?;
                client::Client::new(&addr, None, a.addr.timeout)?
            } else {
                a.addr.client()?
            };
            client::tail(&c, &a.filters, a.style.style())
        }
        cli::Command::Top(a) => client::top::run(&a.addr.client()?, a.interval, a.once, a.json),
        cli::Command::Dump(a) => client::dump(&a.addr.client()?, a.output.as_deref()),
        cli::Command::Replay(a) => client::replay(&a.file, &a.filters, a.style.style()),
        cli::Command::Report(a) => {
            let req = client::report::Request {
                from_dump: a.from_dump,
                mount: a.mount,
                since: a.since,
                format: a.format,
                output: a.output,
                no_purge: a.no_purge,
            };
            client::report::run(&req, || Ok(a.addr.client()?))
        }
    }
}

/// Starts the daemon in this process (HTTP on an ephemeral loopback port, no stdout events, no
/// dumps) for `observer tail --standalone`; returns its address once the probes are attached.
fn standalone(config: Option<&std::path::Path>) -> anyhow::Result<String> {
    let mut file = config::FileConfig::load(config, &config::overrides_from_env())?;
    file.output.stdout = false;
    file.http.listen = "127.0.0.1:0".into();
    file.recorder.dump_dir = Default::default();
    file.pipeline.stats_interval_secs = 0;
    let cfg = file.validate()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Err(e) = daemon::run(cfg, Some(tx)) {
            eprintln!("fsobserver: error: {e:#}");
            std::process::exit(1);
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(300))
        .map_err(|_| anyhow::anyhow!("the in-process observer did not start"))?;
    Ok(addr.to_string())
}

fn init_tracing(format: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("OBSERVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter);
    if format == "json" {
        // JSON strings escape control characters themselves.
        builder.with_writer(std::io::stderr).json().init();
    } else {
        // A log line is one line whatever a file or command is named.
        builder
            .with_ansi(false)
            .with_writer(|| node::text::EscapingWriter(std::io::stderr()))
            .init();
    }
}
