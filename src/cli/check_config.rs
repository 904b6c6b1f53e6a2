//! `accrual check-config`: validate rules files and describe each.

use super::say;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Rules files (TOML).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(Args { files }: Args) -> Result<ExitCode> {
    let mut failed = false;
    for file in &files {
        match accrual::rules::load(file) {
            Ok(rules) => {
                say!("{}: OK", file.display());
                say!("{}", rules.describe());
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
