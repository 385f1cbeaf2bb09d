//! Nesting: a synclock started under another synclock reuses its lock.
//!
//! Re-opening the lockfile would wait for the outer holder for ever. So an
//! inner synclock runs its command directly when `SYNCLOCK_FD` names an
//! open descriptor of the very lockfile that holds the lock (a forged or
//! stale value is ignored), or, when the descriptor was closed on the way
//! (Python's `subprocess`), when the kernel shows an ancestor holding it.

use std::fs::File;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

use nix::libc;
use nix::sys::stat::fstat;

use crate::lock::open::{is_busy, look_up};
use crate::msg;
use crate::proc::{FileId, Proc};

/// The environment variable naming the inherited locked descriptor.
pub const FD_VAR: &str = "SYNCLOCK_FD";

/// The inherited descriptor from `SYNCLOCK_FD` if it really holds the lock
/// on the file now at `lockfile`; `None` means: take the lock normally.
pub fn inherited(lockfile: &Path, proc: &Proc) -> Option<RawFd> {
    let value = std::env::var_os(FD_VAR)?;
    let fd = value.to_str().and_then(|v| v.parse::<RawFd>().ok()).filter(|fd| *fd >= 0);
    let verdict = match fd {
        None => Err("it is not a descriptor number"),
        Some(fd) => check(fd, lockfile, proc).map(|()| fd),
    };
    match verdict {
        Ok(fd) => Some(fd),
        Err(why) => {
            msg::verbose(format_args!(
                "ignoring {FD_VAR}={}: {why}; taking the lock on {} normally",
                value.to_string_lossy(),
                lockfile.display()
            ));
            None
        }
    }
}

fn check(fd: RawFd, lockfile: &Path, proc: &Proc) -> Result<(), &'static str> {
    // SAFETY: F_GETFD only asks whether `fd` is open; any number is allowed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err("that descriptor is not open");
    }
    // SAFETY: `fd` is open (checked above) and stays open while we look at
    // it: nothing in this single-threaded start-up closes descriptors.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let opened = fstat(borrowed).map_err(|_| "fstat failed")?;
    let at_path = look_up(lockfile).ok().flatten().map(|(id, _)| id);
    if at_path != Some(FileId::of(&opened)) {
        return Err("it is not the lockfile");
    }
    // The kernel lists a granted lock in the descriptor's fdinfo.
    if proc.holds(nix::unistd::getpid().as_raw(), FileId::of(&opened)) == Some(false) {
        return Err("it does not hold the lock");
    }
    // Re-taking the flock on the description that holds it succeeds at
    // once; on one that does not, it fails while the real holder lives.
    // Closing the duplicate (dropping the File) does not unlock.
    let dup = File::from(borrowed.try_clone_to_owned().map_err(|_| "dup failed")?);
    dup.try_lock().map_err(|_| "it does not hold the lock")
}

/// The ancestor of ours that holds the lock on the file at `lockfile`, if
/// one does (/proc/locks, then each ancestor's fdinfo; only when the lock is
/// busy: reading /proc/locks may wait milliseconds for an RCU grace period).
pub fn held_by_ancestor(lockfile: &Path, proc: &Proc) -> Option<i32> {
    if is_busy(lockfile) != Some(true) {
        return None;
    }
    let (id, _) = look_up(lockfile).ok().flatten()?;
    let holder = proc.lock_entries(id)?.holder?;
    let lineage = proc.lineage(nix::unistd::getpid().as_raw());
    lineage.into_iter().skip(1).find(|&pid| pid == holder || proc.holds(pid, id) == Some(true))
}
