//! synclock: run a repository sync (or any command) under one machine-wide lock.
//!
//! The binary's `main` calls [`main`]; everything else lives in one private
//! module per concern. Only the command-line definition ([`cli`]) is public,
//! so that the shell completions and man pages under `contrib/` can be
//! generated from it (`cargo run --example generate`) and never drift.

mod app;
mod child;
mod clean;
pub mod cli;
mod error;
mod exit;
mod files;
mod history;
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
mod users;
mod wait;

use std::process::ExitCode;

/// Parses the command line, runs it, and returns the exit code; errors are
/// printed once, as one `synclock:` line.
pub fn main() -> ExitCode {
    let code = match cli::parse() {
        Ok(cli) => app::run(cli).unwrap_or_else(|err| {
            msg::error(format_args!("{err}"));
            err.exit_code()
        }),
        Err(code) => code,
    };
    ExitCode::from(code)
}
