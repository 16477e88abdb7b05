//! The `airlock` command line: argument parsing and dispatch to one module per command.

pub mod scan;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "Local guard for AI API keys, prompts and spend"
)]
pub struct Cli {
    /// Config file (default: $AIRLOCK_CONFIG, then the XDG config dir).
    #[arg(long, global = true, env = "AIRLOCK_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan files, directories, stdin (`-`) or the staged diff for secrets and PII.
    Scan(scan::ScanArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Scan(args) => scan::run(args),
    }
}
