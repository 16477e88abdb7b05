//! `airlock scan`: the detection engine as a pre-commit guard.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files or directories to scan; `-` reads stdin.
    pub paths: Vec<std::path::PathBuf>,
}

pub fn run(_args: ScanArgs) -> ExitCode {
    eprintln!("airlock scan: not built yet");
    ExitCode::from(2)
}
