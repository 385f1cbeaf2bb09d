//! synclock: run a repository sync (or any command) under one machine-wide lock.
//!
//! The binary's C `main` calls [`main`]; everything else lives in one private
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
mod kthreads;
mod lineage;
mod lockfile;
mod msg;
mod nested;
mod notes;
mod plain;
mod procfs;
mod progress;
mod record;
mod remove;
mod repos;
mod signals;
mod spawn;
mod start;
mod status;
mod syncers;
mod users;
mod wait;
mod waiters;

use std::ffi::{c_char, c_int};

/// Parses the command line, runs it, and returns the exit code; errors are
/// printed once, as one `synclock:` line. The process is set up first (see
/// `start.rs`: the binary skips the Rust runtime's start-up).
///
/// # Safety
///
/// `argv` must hold `argc` valid NUL-terminated strings, as the C library
/// passes them to `main`.
pub unsafe fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let body = |args| match cli::parse(args) {
        Ok(cli) => app::run(cli).unwrap_or_else(|err| {
            msg::error(format_args!("{err}"));
            err.exit_code()
        }),
        Err(code) => code,
    };
    // SAFETY: passed on from our caller, who guarantees it.
    unsafe { start::start(argc, argv, body) }
}
