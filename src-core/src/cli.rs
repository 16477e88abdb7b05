//! The `airlock` command line: argument parsing and dispatch to one module per command.
//!
//! Errors print their cause chain on stderr (never a secret) and exit 1; `scan` has its own
//! exit codes (0 clean, 1 findings, 2 error).

mod config_cmd;
mod display;
mod doctor;
mod exec;
mod import_env;
mod keys;
mod ledger_cmd;
mod live;
mod prices;
pub mod scan;
mod serve;

use crate::config::{self, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "Local guard for AI API keys, prompts and spend"
)]
pub struct Cli {
    /// Config file (default: $AIRLOCK_CONFIG, then the XDG config dir).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy on 127.0.0.1:8787.
    Serve(serve::ServeArgs),
    /// Provider keys in the OS keyring, and local Airlock keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Run a command with SDK base URLs and a short-lived Airlock key in its environment.
    Exec(exec::ExecArgs),
    /// Print SDK settings as shell exports (for eval or direnv), with a new Airlock key.
    Env(exec::EnvArgs),
    /// Write or check the config file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Check the keyring, port, keys, data dir and config, and say how to fix each problem.
    Doctor,
    /// Spend from the ledger, in total or grouped by day, key, model or provider.
    Spend(ledger_cmd::SpendArgs),
    /// Recent requests from the ledger.
    Log(ledger_cmd::LogArgs),
    /// Follow live events from the running server.
    Tail {
        /// Print the raw JSON events.
        #[arg(long)]
        json: bool,
    },
    /// Show each limit and its use (from the running server).
    Limits {
        #[arg(long)]
        json: bool,
    },
    /// Refuse every request until `airlock resume`.
    Pause,
    /// Undo `airlock pause`.
    Resume,
    /// Print the admin API token (kept in the OS keyring; created on first use).
    AdminToken,
    /// The model price table.
    #[command(subcommand)]
    Prices(prices::PricesCommand),
    /// Scan files, directories, stdin (`-`) or the staged diff for secrets and PII.
    Scan(scan::ScanArgs),
    /// Internal: the token counter `serve` starts to estimate cut streams.
    #[command(name = "__count-tokens", hide = true)]
    CountTokens,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet_default = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(quiet_default);
    let ctx = Ctx {
        config_flag: cli.config,
    };
    let result = match cli.command {
        Command::Scan(args) => return scan::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Keys(cmd) => keys::run(&ctx, cmd),
        Command::Exec(args) => return exec::run_exec(&ctx, args),
        Command::Env(args) => exec::run_env(&ctx, args),
        Command::Config(cmd) => config_cmd::run(&ctx, cmd),
        Command::Doctor => return doctor::run(&ctx),
        Command::Spend(args) => ledger_cmd::spend(&ctx, args),
        Command::Log(args) => ledger_cmd::log(&ctx, args),
        Command::Tail { json } => live::tail(&ctx, json),
        Command::Limits { json } => live::limits(&ctx, json),
        Command::Pause => live::set_paused(&ctx, true),
        Command::Resume => live::set_paused(&ctx, false),
        Command::AdminToken => live::admin_token(&ctx),
        Command::Prices(cmd) => prices::run(&ctx, cmd),
        Command::CountTokens => {
            crate::meter::counter::serve_counts(std::io::stdin().lock(), std::io::stdout().lock())
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock: error: {}", shown_error(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as the terminal may see it: with its causes, and with anything the detection
/// engine finds in it masked. Errors quote their input (a config value, a rule id, a path), and
/// that input may be a secret pasted in the wrong place.
pub(crate) fn shown_error(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    match crate::inspect::Engine::new() {
        Ok(engine) => engine.mask_findings(&text).into_owned(),
        Err(_) => text,
    }
}

/// `airlock keys list | head` closes the pipe early; that is not an error worth printing.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    if installed.is_err() {
        // Only happens when a subscriber is already set, as in some tests; logging still works.
    }
}

/// What every command gets: where the config is.
pub struct Ctx {
    config_flag: Option<PathBuf>,
}

impl Ctx {
    pub fn config_path(&self) -> (Option<PathBuf>, bool) {
        config::paths::config_file(self.config_flag.clone())
    }

    pub fn load_config(&self) -> anyhow::Result<Config> {
        let (path, explicit) = self.config_path();
        Ok(Config::load(path.as_deref(), explicit)?)
    }

    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(config::paths::data_dir()?)
    }

    pub fn key_store(&self) -> anyhow::Result<crate::keys::KeyStore> {
        Ok(crate::keys::KeyStore::open(&self.data_dir()?)?)
    }
}
