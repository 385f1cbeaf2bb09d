//! Taking the lock: try at once, and when it is busy, wait in the kernel.
//!
//! The main thread waits in a blocking flock(2), so when the holder
//! releases, the kernel wakes the very thread that goes on to run the
//! command (no hand-over between threads on that path). A watcher thread
//! sleeps in poll(2) on the signalfd, with the remaining `--wait` as
//! timeout, and redraws the progress line on a terminal. When the wait must
//! end (timeout, or INT/TERM/HUP/QUIT), the watcher records why and
//! interrupts the flock with SIGURG, whose handler does nothing but make
//! flock return EINTR. No sleep/retry loop runs while waiting and an idle
//! waiter uses no CPU.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::unistd::pipe2;

use crate::cli::Wait;
use crate::error::Error;
use crate::progress::Progress;
use crate::signals::{Signals, Watcher};

/// How an attempt to take the lock ended.
pub enum Outcome {
    /// The lock is ours, through this descriptor, after waiting this long.
    Acquired(OwnedFd, Duration),
    /// It stayed busy for the whole allowed wait (zero for `-n`).
    Busy(Duration),
    /// A signal ended the wait; the command must not run.
    Interrupted(Signal),
}

/// What the watcher and the waiting main thread share.
struct Watch {
    /// The main thread has stopped waiting; the watcher must not act.
    done: bool,
    /// Why the watcher ended the wait.
    ended: Option<Outcome>,
    /// The live line on a terminal.
    progress: Progress,
}

/// Takes an exclusive flock on `fd`, waiting as `wait` allows; `busy` is
/// called once when the lock is held by someone else and we wait.
pub fn acquire(
    fd: OwnedFd,
    path: &Path,
    wait: Wait,
    signals: &Signals,
    busy: impl FnOnce(),
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
    busy();
    let limit = match wait {
        Wait::Upto(limit) => Some(limit),
        Wait::No | Wait::Forever => None,
    };
    let deadline = limit.map(|limit| start + limit);
    let system = |action| move |errno| Error::System { action, errno };
    let (stop_read, stop_write) =
        pipe2(OFlag::O_CLOEXEC).map_err(system("cannot create a pipe"))?;
    let queue = signals.watcher()?;
    let watch = Arc::new(Mutex::new(Watch {
        done: false,
        ended: None,
        progress: Progress::new(limit),
    }));
    catch_interrupt(true).map_err(system("cannot install the SIGURG handler"))?;
    let waiter = nix::unistd::gettid();
    let shared = Arc::clone(&watch);
    let watcher = thread::Builder::new()
        .name("watch".into())
        .spawn(move || watch_wait(&shared, queue, stop_read, start, deadline, waiter));
    if let Err(err) = watcher {
        let _ = catch_interrupt(false);
        return Err(system("cannot start the watcher thread")(Errno::from_raw(
            err.raw_os_error().unwrap_or(0),
        )));
    }
    let locked = lock_blocking(fd, || lock(&watch).ended.is_some());
    let ended = {
        let mut watch = lock(&watch);
        watch.done = true;
        watch.progress.clear();
        watch.ended.take()
    };
    drop(stop_write); // the watcher exits; nobody waits for it
    let _ = catch_interrupt(false);
    match (ended, locked) {
        // A lock had just as the wait was ended is dropped: the user asked
        // to stop, or the time was up.
        (Some(ended), _) => Ok(ended),
        (None, Ok(fd)) => Ok(Outcome::Acquired(fd, start.elapsed())),
        (None, Err(errno)) => Err(lock_failed(path, errno)),
    }
}

/// The shared state, even if a thread panicked while holding it: its fields
/// are plain values, valid at every point.
fn lock(watch: &Mutex<Watch>) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The watcher: sleeps until the main thread stops waiting (`stop` closes),
/// a signal ends the wait, or `deadline` passes; redraws the progress line
/// meanwhile. Having ended the wait, it interrupts the main thread's flock.
fn watch_wait(
    watch: &Mutex<Watch>,
    queue: Watcher,
    stop: OwnedFd,
    start: Instant,
    deadline: Option<Instant>,
    waiter: nix::unistd::Pid,
) {
    let every = lock(watch).progress.interval();
    let mut next_tick = every.map(|every| start + every);
    let readable = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            let mut shared = lock(watch);
            if shared.done {
                return;
            }
            shared.ended = Some(Outcome::Busy(start.elapsed()));
            break;
        }
        if let (Some(tick), Some(every)) = (next_tick, every)
            && now >= tick
        {
            let mut shared = lock(watch);
            if shared.done {
                return;
            }
            shared.progress.draw(now - start);
            next_tick = Some(tick + every);
        }
        let wake_at = match (deadline, next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut fds = [
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(queue.fd(), PollFlags::POLLIN),
        ];
        if poll_until(&mut fds, wake_at).is_err() || readable(&fds[0]) {
            return;
        }
        if !readable(&fds[1]) {
            continue;
        }
        // Another reader may have taken it meanwhile: the read never blocks.
        let Some(signal) = queue.take() else { continue };
        let mut shared = lock(watch);
        if shared.done {
            // Too late: the lock is had and the main thread reads the queue
            // now (SIGCHLD included). The signal goes back to the process
            // queue; it is blocked in every thread, so it waits there.
            let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
            return;
        }
        if signal != Signal::SIGCHLD {
            shared.ended = Some(Outcome::Interrupted(signal));
            break;
        }
    }
    // SIGURG makes the main thread's flock return EINTR. Should it arrive
    // just before the main thread enters flock, it is sent again until the
    // main thread stops waiting (closes `stop`): 1 ms, 2 ms, 4 ms ... apart.
    let mut pause = Duration::from_millis(1);
    loop {
        // SAFETY: tgkill takes plain numbers. `waiter` is the waiting
        // thread of this process, which lives until it has closed `stop`
        // and is past its wait (we return when it has), so its TID cannot
        // name another thread meanwhile.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                nix::unistd::getpid().as_raw(),
                waiter.as_raw(),
                libc::SIGURG,
            )
        };
        let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        if poll_until(&mut fds, Some(Instant::now() + pause)).is_err() || readable(&fds[0]) {
            return;
        }
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The SIGURG handler: it only has to exist, so that flock returns EINTR.
extern "C" fn interrupted(_: libc::c_int) {}

/// Installs (or removes) the do-nothing SIGURG handler that lets the
/// watcher interrupt a blocking flock: without SA_RESTART, flock returns
/// EINTR. SIGURG is ignored by default, so a stray one changes nothing.
fn catch_interrupt(on: bool) -> Result<(), Errno> {
    let handler = if on {
        SigHandler::Handler(interrupted)
    } else {
        SigHandler::SigDfl
    };
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGURG, &action) }.map(drop)
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

/// A blocking exclusive flock, retried when interrupted unless `stop` says
/// the wait is over (then EINTR).
fn lock_blocking(mut fd: OwnedFd, stop: impl Fn() -> bool) -> Result<OwnedFd, Errno> {
    loop {
        match Flock::lock(fd, FlockArg::LockExclusive) {
            Ok(guard) => return Ok(keep_locked(guard)),
            Err((_, Errno::EINTR)) if stop() => return Err(Errno::EINTR),
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
