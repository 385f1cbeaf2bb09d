//! The single integration test binary: every test runs the real synclock.

mod support;

mod clean;
mod coalesce;
mod exit_codes;
mod generated;
mod holder;
mod hostile;
mod ini;
mod lockfile_safety;
mod locking;
mod nesting;
mod ordering;
mod shims;
mod signals;
mod startup;
mod stress;
mod verdict;
