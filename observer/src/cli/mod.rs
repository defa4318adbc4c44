//! Command line (clap derive; every option also reads an `OBSERVER_*` environment variable).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "observer",
    version,
    about = "fsobserver: eBPF filesystem failure observer"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "OBSERVER_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the observer in the foreground: JSON Lines events on stdout, logs on stderr.
    Run(RunArgs),
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Stream a running daemon's events as they happen (Ctrl-C exits 0).
    Tail(TailArgs),
    /// A refreshing table of the heaviest path prefixes and processes of a running daemon.
    Top(TopArgs),
    /// Write a running daemon's flight recorder (last events, snapshots, loss counters).
    Dump(DumpArgs),
    /// The daemon's tracked locks: state, holder, last heartbeat, last error.
    Locks {
        #[command(flatten)]
        addr: AddrArg,
        #[arg(long)]
        json: bool,
    },
    /// Whether a lock may be taken over. Exit status: 0 healthy, 3 heartbeat failing with the
    /// holder alive (do not steal), 4 holder dead (safe to steal), 5 unknown.
    LockStatus {
        path: String,
        #[command(flatten)]
        addr: AddrArg,
        #[arg(long)]
        json: bool,
    },
    /// Print a dump file through the tail formatting.
    Replay(ReplayArgs),
    /// Why a disk is filling: victims, fill, culprits, cleanup that never ran, orphans,
    /// deleted-but-open space and the fix, from a running daemon or a dump.
    Report(ReportArgs),
    /// Ask the daemon for an emergency purge run and print every decision. Dry run unless
    /// --execute.
    Purge {
        /// One policy (default: every policy).
        #[arg(long)]
        policy: Option<String>,
        /// Only report what would be deleted (the default).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
        /// Really delete (entries are re-checked, moved to the trash, removed in the
        /// background).
        #[arg(long)]
        execute: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file (with OBSERVER__SECTION__KEY overrides); exit 2 if invalid.
    Check { file: PathBuf },
}

#[derive(Debug, Args, Clone)]
pub struct AddrArg {
    /// The daemon's API: `unix:PATH` or `host:port`. Default: the socket
    /// /run/fsobserver/api.sock when it exists, else 127.0.0.1:9464. The daemon must run as
    /// root (or as you): a socket or loopback port served by anyone else is refused.
    #[arg(long, env = "OBSERVER_ADDR", default_value = "")]
    pub addr: String,
    /// A file holding the bearer token (`http.tokens_file`) for a daemon beyond this host.
    #[arg(long, env = "OBSERVER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// How long to wait for the daemon to answer.
    #[arg(long, env = "OBSERVER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

impl AddrArg {
    pub fn client(&self) -> Result<crate::client::Client, crate::client::ClientError> {
        crate::client::Client::new(&self.addr, self.token_file.as_deref(), self.timeout)
    }
}

#[derive(Debug, Args, Clone)]
pub struct TailArgs {
    #[command(flatten)]
    pub addr: AddrArg,
    /// Load the probes in this process instead of connecting to a daemon (needs root).
    #[arg(long)]
    pub standalone: bool,
    /// Configuration for --standalone (default: the embedded configuration).
    #[arg(long, requires = "standalone")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub style: StyleArgs,
    #[command(flatten)]
    pub filters: crate::events::filter::FilterArgs,
}

/// How event lines are printed (`tail`, `replay`).
#[derive(Debug, Args, Clone)]
pub struct StyleArgs {
    /// JSON Lines instead of columns.
    #[arg(long)]
    pub json: bool,
    /// No colors (also off when stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
}

impl StyleArgs {
    pub fn style(&self) -> crate::client::Style {
        crate::client::Style::new(self.json, self.no_color)
    }
}

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub addr: AddrArg,
    /// Print once and exit.
    #[arg(long)]
    pub once: bool,
    /// The raw `/top` JSON.
    #[arg(long)]
    pub json: bool,
    /// Refresh interval.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
}

#[derive(Debug, Args, Clone)]
pub struct DumpArgs {
    #[command(flatten)]
    pub addr: AddrArg,
    /// File to write (default: stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub addr: AddrArg,
    /// Write the report from a dump (`observer dump` or a burst dump) instead of the daemon.
    #[arg(long, value_name = "FILE")]
    pub from_dump: Option<PathBuf>,
    /// Only this filesystem (its mount point on the node).
    #[arg(long)]
    pub mount: Option<String>,
    /// Only victims of this recent period, e.g. `1h` (counters are since the daemon started).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// md (Markdown, for a terminal or a ticket), json, or html (one self-contained page).
    #[arg(long, default_value = "md")]
    pub format: String,
    /// File to write (default: stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Do not run the purge policies as a dry run for the fix section.
    #[arg(long)]
    pub no_purge: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// A dump written by `observer dump` or a burst dump.
    pub file: PathBuf,
    #[command(flatten)]
    pub style: StyleArgs,
    #[command(flatten)]
    pub filters: crate::events::filter::FilterArgs,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// TOML configuration file (default: the embedded configuration).
    #[arg(long, env = "OBSERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Any configuration key, e.g. `--set http.listen=0.0.0.0:9464` (repeatable; TOML values;
    /// also `OBSERVER__HTTP__LISTEN=...` in the environment). Applied after the file.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE", value_parser = crate::config::split_override)]
    pub set: Vec<(String, String)>,
    /// Do not write events to stdout (overrides output.stdout).
    #[arg(long, env = "OBSERVER_NO_STDOUT")]
    pub no_stdout: bool,
    /// HTTP API address, "" to disable (overrides http.listen).
    #[arg(long, env = "OBSERVER_LISTEN")]
    pub listen: Option<String>,
    /// Probe set: auto (fexit where allowed, else tracepoints), tracepoint or fexit
    /// (overrides system.probe_mode).
    #[arg(long, env = "OBSERVER_PROBE_MODE")]
    pub probe_mode: Option<String>,
    /// Kernel BTF file (overrides system.btf_path).
    #[arg(long, env = "OBSERVER_BTF")]
    pub btf: Option<PathBuf>,
    /// Do not mount tracefs when it is missing (overrides system.mount_tracefs).
    #[arg(long, env = "OBSERVER_NO_MOUNT_TRACEFS")]
    pub no_mount_tracefs: bool,
    /// Errnos to report, e.g. `--errno ENOSPC --errno EDQUOT` (overrides probes.errnos).
    #[arg(long = "errno", env = "OBSERVER_ERRNOS", value_delimiter = ',')]
    pub errnos: Vec<String>,
    /// Ring buffer size in bytes (overrides probes.ring_buffer_bytes).
    #[arg(long, env = "OBSERVER_RING_BUFFER_BYTES")]
    pub ring_buffer_bytes: Option<u32>,
    /// Userspace queue capacity in records (overrides pipeline.queue_capacity).
    #[arg(long, env = "OBSERVER_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Seconds between stats lines, 0 = only at exit (overrides pipeline.stats_interval_secs).
    #[arg(long, env = "OBSERVER_STATS_INTERVAL")]
    pub stats_interval: Option<u64>,
    /// Detail records for successful deletions: 0 none, 1 all, N one in N
    /// (overrides probes.delete_sample).
    #[arg(long, env = "OBSERVER_DELETE_SAMPLE")]
    pub delete_sample: Option<u32>,
    /// Detail records for successful creates (leak detector): 0 none, 1 all, N one in N
    /// (overrides probes.create_sample).
    #[arg(long, env = "OBSERVER_CREATE_SAMPLE")]
    pub create_sample: Option<u32>,
    /// Only report these filesystems, by mount point (overrides filters.watch_mounts).
    #[arg(
        long = "watch-mount",
        env = "OBSERVER_WATCH_MOUNTS",
        value_delimiter = ','
    )]
    pub watch_mounts: Vec<PathBuf>,
    /// Never report these process names (overrides filters.exclude_comms).
    #[arg(
        long = "exclude-comm",
        env = "OBSERVER_EXCLUDE_COMMS",
        value_delimiter = ','
    )]
    pub exclude_comms: Vec<String>,
}

impl RunArgs {
    /// Applies the command-line overrides to a parsed file configuration.
    pub fn apply(&self, file: &mut crate::config::FileConfig) {
        if self.no_stdout {
            file.output.stdout = false;
        }
        if let Some(l) = &self.listen {
            file.http.listen = l.clone();
        }
        if let Some(m) = &self.probe_mode {
            file.system.probe_mode = m.clone();
        }
        if let Some(p) = &self.btf {
            file.system.btf_path = p.clone();
        }
        if self.no_mount_tracefs {
            file.system.mount_tracefs = false;
        }
        if !self.errnos.is_empty() {
            file.probes.errnos = self.errnos.clone();
        }
        if let Some(n) = self.ring_buffer_bytes {
            file.probes.ring_buffer_bytes = n;
        }
        if let Some(n) = self.queue_capacity {
            file.pipeline.queue_capacity = n;
        }
        if let Some(n) = self.stats_interval {
            file.pipeline.stats_interval_secs = n;
        }
        if let Some(n) = self.delete_sample {
            file.probes.delete_sample = n;
        }
        if let Some(n) = self.create_sample {
            file.probes.create_sample = n;
        }
        if !self.watch_mounts.is_empty() {
            file.filters.watch_mounts = self.watch_mounts.clone();
        }
        if !self.exclude_comms.is_empty() {
            file.filters.exclude_comms = self.exclude_comms.clone();
        }
    }
}
