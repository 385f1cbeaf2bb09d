//! Nesting: a synclock started under another synclock reuses its lock.
//!
//! The outer synclock passes its locked descriptor to the command and names
//! it in `SYNCLOCK_FD`. Re-opening the lockfile would create a second open
//! file description whose flock waits for the first one for ever, so an
//! inner synclock on the same lockfile instead checks the inherited
//! descriptor and runs its command directly. The check must not let a forged
//! or stale value skip the lock: the descriptor has to be open, be the very
//! file at the lockfile path (device and inode), and hold the flock.

use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use nix::sys::stat::fstat;

use crate::lockfile;
use crate::msg;

/// The environment variable naming the inherited locked descriptor.
pub const FD_VAR: &str = "SYNCLOCK_FD";

/// The inherited descriptor from `SYNCLOCK_FD` if it really holds the lock
/// on the file now at `lockfile`; `None` means: take the lock normally.
pub fn inherited_lock(lockfile: &Path) -> Option<RawFd> {
    let value = std::env::var_os(FD_VAR)?;
    let fd = value
        .to_str()
        .and_then(|v| v.parse::<RawFd>().ok())
        .filter(|fd| *fd >= 0);
    let verdict = match fd {
        None => Err("it is not a descriptor number".to_string()),
        Some(fd) => check(fd, lockfile).map(|()| fd),
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

fn check(fd: RawFd, lockfile: &Path) -> Result<(), String> {
    // SAFETY: F_GETFD only asks whether `fd` is open; any number is allowed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err("that descriptor is not open".into());
    }
    // SAFETY: `fd` is open (checked above) and stays open while we look at
    // it: nothing in this single-threaded start-up closes descriptors.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let opened = fstat(borrowed).map_err(|errno| format!("fstat failed: {}", errno.desc()))?;
    let at_path = lockfile::look_up(lockfile).ok().flatten().map(|(id, _)| id);
    if at_path != Some(lockfile::Identity::of(&opened)) {
        return Err("it is not the lockfile".into());
    }
    if held_per_fdinfo(fd) == Some(false) {
        return Err("it does not hold the lock".into());
    }
    // Re-taking the flock on the description that holds it succeeds at once;
    // on one that does not, it fails while the real holder lives.
    let dup = borrowed
        .try_clone_to_owned()
        .map_err(|err| format!("dup failed: {err}"))?;
    match Flock::lock(dup, FlockArg::LockExclusiveNonblock) {
        Ok(guard) => {
            // Dropping would unlock the shared description; just close the dup.
            let fd = std::mem::ManuallyDrop::new(guard);
            // SAFETY: the guard is never dropped, so the dup is closed once.
            unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(&**fd)) };
            Ok(())
        }
        Err(_) => Err("it does not hold the lock".into()),
    }
}

/// What `/proc/self/fdinfo/FD` says about a flock held through `fd`, if
/// /proc is there to ask: the kernel lists only granted locks.
fn held_per_fdinfo(fd: RawFd) -> Option<bool> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    Some(info.lines().any(|line| {
        line.starts_with("lock:") && line.contains(" FLOCK ") && line.contains(" WRITE ")
    }))
}
