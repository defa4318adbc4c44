//! fsobserver: `observer run` (daemon) and CLI subcommands.
//!
//! Pipeline, one module per stage: probes -> reader -> decode -> (aggregate) -> output.

mod cli;
mod config;
mod daemon;
mod decode;
mod errno;
mod mounts;
mod output;
mod preflight;
mod probes;
mod reader;
mod stats;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(&cli.log_format);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the whole cause chain, no backtrace noise. Bad input (config)
            // exits 2 like a usage error; a failure to run exits 1.
            eprintln!("fsobserver: error: {e:#}");
            if e.downcast_ref::<config::ConfigError>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Run(args) => {
            let mut file = config::FileConfig::load(args.config.as_deref())?;
            args.apply(&mut file);
            daemon::run(file.validate()?)
        }
        cli::Command::DefaultConfig => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
    }
}

fn init_tracing(format: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("OBSERVER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
