//! synclock: run a repository sync (or any command) under one machine-wide lock.
//!
//! `main` only parses the command line, hands it to [`app::run`] and turns the
//! outcome into the process exit code; everything else lives in one module per
//! concern.

mod app;
mod child;
mod clean;
mod cli;
mod error;
mod exit;
mod holder;
mod ini;
mod lockfile;
mod msg;
mod nested;
mod procfs;
mod progress;
mod record;
mod remove;
mod repos;
mod signals;
mod status;
mod syncers;
mod wait;

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = match cli::parse() {
        Ok(cli) => app::run(cli).unwrap_or_else(|err| {
            msg::error(format_args!("{err}"));
            err.exit_code()
        }),
        Err(code) => code,
    };
    ExitCode::from(code)
}
