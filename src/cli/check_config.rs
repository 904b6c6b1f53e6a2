//! `accrual check-config`: validate rules files (or directories of
//! versions) and describe each, with a directory's timeline.

use super::say;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Rules files (TOML), or directories of versions.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(Args { files }: Args) -> Result<ExitCode> {
    let mut failed = false;
    for file in &files {
        match accrual::rules::Timeline::load(file) {
            Ok(timeline) if file.is_dir() => {
                say!("{}: OK, {} versions", file.display(), timeline.versions().len());
                say!("{}", timeline.describe());
                for version in timeline.versions() {
                    say!("{}:", version.file);
                    say!("{}", version.rules.describe());
                }
            }
            Ok(timeline) => {
                say!("{}: OK", file.display());
                say!("{}", timeline.first().describe());
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
