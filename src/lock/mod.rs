//! The lock: open the lockfile without being tricked, take it (trying
//! first, then waiting in the kernel within the `--wait` budget), or find
//! that an outer synclock already holds it for us.

mod acquire;
mod nested;
mod open;

use std::fs::File;
use std::time::Duration;

pub use acquire::{Outcome, acquire};
pub use nested::{FD_VAR, held_by_ancestor, inherited};
pub use open::{check, is_busy, look_up, open_checked, still_at};

/// How long to wait for a busy lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once (`-n`, `--wait 0`).
    No,
    /// Give up after this long.
    Upto(Duration),
    /// Wait as long as it takes (the default).
    Forever,
}

/// The lock, taken by this synclock: closing the file releases our hold.
#[derive(Debug)]
pub struct Held {
    /// The locked lockfile.
    pub file: File,
    /// The lockfile's owner, whom the files kept next to it must match.
    pub owner: u32,
}
