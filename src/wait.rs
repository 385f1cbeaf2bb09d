//! Taking the lock: try at once, and when it is busy, wait in the kernel.
//!
//! The blocking flock(2) runs in a helper thread that reports through a
//! pipe; the main thread sleeps in poll(2) on that pipe and on the signalfd,
//! with the remaining `--wait` as timeout. So a waiter wakes the moment the
//! holder releases (no sleep/retry loop, no CPU while waiting), a timeout is
//! exact, and INT/TERM/HUP/QUIT end the wait at once. On timeout or signal the
//! process exits, which abandons the helper's pending flock.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::pipe2;

use crate::cli::Wait;
use crate::error::Error;
use crate::signals::Signals;

/// How an attempt to take the lock ended.
pub enum Outcome {
    /// The lock is ours, through this descriptor, after waiting this long.
    Acquired(OwnedFd, Duration),
    /// It stayed busy for the whole allowed wait (zero for `-n`).
    Busy(Duration),
    /// A signal ended the wait; the command must not run.
    Interrupted(Signal),
}

/// What the waiting loop tells its caller about a busy lock.
pub trait Observer {
    /// The lock is held by someone else and we are about to wait.
    fn busy(&mut self);
    /// How often [`Observer::tick`] wants to be called while waiting.
    fn tick_interval(&self) -> Option<Duration>;
    /// Called every `tick_interval` while still waiting.
    fn tick(&mut self, waited: Duration);
}

/// Takes an exclusive flock on `fd`, waiting as `wait` allows and telling
/// `observer` about a busy lock.
pub fn acquire(
    fd: OwnedFd,
    path: &Path,
    wait: Wait,
    signals: &Signals,
    observer: &mut impl Observer,
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let fd = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(guard) => return Ok(Outcome::Acquired(keep_locked(guard), Duration::ZERO)),
        Err((fd, Errno::EWOULDBLOCK)) => fd,
        Err((_, errno)) => return Err(lock_failed(path, errno)),
    };
    if wait == Wait::No {
        return Ok(Outcome::Busy(Duration::ZERO));
    }
    observer.busy();
    let interval = observer.tick_interval();
    let mut next_tick = interval.map(|every| start + every);
    let deadline = match wait {
        Wait::Upto(limit) => Some(start + limit),
        Wait::No | Wait::Forever => None,
    };
    let (wake_read, wake_write) = pipe2(OFlag::O_CLOEXEC).map_err(|errno| Error::System {
        action: "cannot create a pipe",
        errno,
    })?;
    // The helper leaves its result here before it wakes us; we take it
    // without joining the helper, whose exit is then off our path.
    let result: Arc<Mutex<Option<Result<OwnedFd, Errno>>>> = Arc::default();
    let slot = Arc::clone(&result);
    thread::Builder::new()
        .name("flock".into())
        .spawn(move || {
            let locked = lock_blocking(fd);
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(locked);
            drop(wake_write); // EOF on the pipe wakes the main thread
        })
        .map_err(|err| Error::System {
            action: "cannot start the waiting thread",
            errno: Errno::from_raw(err.raw_os_error().unwrap_or(0)),
        })?;
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Ok(Outcome::Busy(start.elapsed()));
        }
        if let (Some(tick), Some(every)) = (next_tick, interval)
            && now >= tick
        {
            observer.tick(now - start);
            next_tick = Some(tick + every);
        }
        let wake_at = match (deadline, next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut fds = [
            PollFd::new(wake_read.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.fd(), PollFlags::POLLIN),
        ];
        poll_until(&mut fds, wake_at)?;
        let readable = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if readable(&fds[1]) {
            return Ok(Outcome::Interrupted(signals.next()?));
        }
        if readable(&fds[0]) {
            let taken = result.lock().unwrap_or_else(PoisonError::into_inner).take();
            return match taken.unwrap_or(Err(Errno::EIO)) {
                Ok(fd) => Ok(Outcome::Acquired(fd, start.elapsed())),
                Err(errno) => Err(lock_failed(path, errno)),
            };
        }
    }
}

/// Sleeps in poll(2) until one of `fds` is ready, `wake_at` passes, or a
/// signal interrupts; the kernel does the waiting.
pub fn poll_until(fds: &mut [PollFd<'_>], wake_at: Option<Instant>) -> Result<(), Error> {
    let timeout = match wake_at {
        None => PollTimeout::NONE,
        Some(wake_at) => {
            // Round up so we never wake a hair early and spin.
            let left = wake_at.saturating_duration_since(Instant::now());
            PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(errno) => Err(Error::System {
            action: "cannot poll",
            errno,
        }),
    }
}

/// A blocking exclusive flock, retried when interrupted.
fn lock_blocking(mut fd: OwnedFd) -> Result<OwnedFd, Errno> {
    loop {
        match Flock::lock(fd, FlockArg::LockExclusive) {
            Ok(guard) => return Ok(keep_locked(guard)),
            Err((back, Errno::EINTR)) => fd = back,
            Err((_, errno)) => return Err(errno),
        }
    }
}

/// Turns nix's guard back into a plain descriptor that keeps the lock.
///
/// The guard's Drop would call `LOCK_UN`, which releases the lock for every
/// process sharing the open file description, the command included. The
/// lock must instead live exactly as long as some holder keeps the
/// description open, so it is released by close, never by unlock.
fn keep_locked(guard: Flock<OwnedFd>) -> OwnedFd {
    use std::os::fd::AsRawFd;
    let guard = std::mem::ManuallyDrop::new(guard);
    // SAFETY: the guard owns this descriptor and is never dropped
    // (ManuallyDrop), so the new OwnedFd becomes its only owner.
    unsafe { OwnedFd::from_raw_fd(guard.as_raw_fd()) }
}

fn lock_failed(path: &Path, errno: Errno) -> Error {
    let hint = match errno {
        Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS => {
            "its file system does not support flock; choose a local --lockfile such as /run/synclock.lock"
        }
        _ => "",
    };
    Error::Os {
        action: "cannot lock",
        path: path.to_path_buf(),
        errno,
        hint,
    }
}
