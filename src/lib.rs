//! synclock: run a repository sync (or any command) under one machine-wide
//! lock.
//!
//! `run.rs` holds one run from top to bottom; each step lives in a module
//! named after its concern. Only the command-line definition ([`cli`]) and
//! [`main`] are public: the completions and man pages under `contrib/` are
//! generated from `cli` (`cargo run --example generate`), so they never drift.

mod clean;
pub mod cli;
mod error;
mod exec;
mod exit;
mod files;
mod history;
mod holder;
mod lock;
mod msg;
mod proc;
mod repos;
mod run;
mod scan;
mod signals;

/// Parses `args` (the program name first), runs them, and returns the exit
/// code; an error is printed once, as one `synclock:` line.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let code = match cli::parse(args) {
        Ok(cli) => run::run(cli).unwrap_or_else(|err| {
            msg::error(format_args!("{err}"));
            err.exit_code()
        }),
        Err(code) => code,
    };
    exit::die_if_asked();
    code
}
