//! Signals as events read from a signalfd instead of asynchronous handlers.
//!
//! The signals synclock cares about are blocked in the main thread before any
//! other thread exists (threads inherit the mask), so they stay pending in
//! the process's queue, which the supervising loops read through a signalfd
//! when the kernel says so (and, while the main thread is blocked in flock,
//! the watcher thread through a second, non-blocking one). No handler code
//! runs in signal context, and a SIGCHLD that arrives before we look stays
//! pending: no lost wake-ups. The child gets the original mask back before
//! exec (see `child.rs`).

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::Error;

/// The signals that end a wait (INT, TERM, HUP, QUIT), are forwarded or
/// ignored while the command runs, plus CHLD for the command's exit.
const HANDLED: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGCHLD,
];

/// The queue of blocked signals, and the mask to give back to children.
pub struct Signals {
    queue: SignalFd,
    original: SigSet,
}

impl Signals {
    /// Blocks the handled signals in this thread (call before starting any
    /// thread) and opens the signalfd they queue on.
    pub fn block() -> Result<Self, Error> {
        let handled: SigSet = HANDLED.into_iter().collect();
        let original = handled
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(|errno| Error::System {
                action: "cannot block signals",
                errno,
            })?;
        let queue = SignalFd::with_flags(&handled, SfdFlags::SFD_CLOEXEC).map_err(|errno| {
            Error::System {
                action: "cannot create a signalfd",
                errno,
            }
        })?;
        Ok(Signals { queue, original })
    }

    /// The signal mask synclock was started with, for the command.
    pub fn original_mask(&self) -> SigSet {
        self.original
    }

    /// The descriptor that becomes readable when a signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.queue.as_fd()
    }

    /// A second reader of the same queue that never blocks, for the thread
    /// that watches a wait: each signal is read by one reader only.
    pub fn watcher(&self) -> Result<Watcher, Error> {
        let handled: SigSet = HANDLED.into_iter().collect();
        SignalFd::with_flags(&handled, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map(Watcher)
            .map_err(|errno| Error::System {
                action: "cannot create a signalfd",
                errno,
            })
    }

    /// Waits for the next handled signal and returns it.
    pub fn next(&self) -> Result<Signal, Error> {
        loop {
            match self.queue.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if let Ok(signal) = Signal::try_from(number) {
                        return Ok(signal);
                    }
                }
                Ok(None) | Err(Errno::EINTR) => {}
                Err(errno) => {
                    return Err(Error::System {
                        action: "cannot read the signalfd",
                        errno,
                    });
                }
            }
        }
    }
}

/// A non-blocking reader of the signal queue (see [`Signals::watcher`]).
pub struct Watcher(SignalFd);

impl Watcher {
    /// The descriptor that becomes readable when a signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Takes the next pending handled signal, if one is there.
    pub fn take(&self) -> Option<Signal> {
        let info = self.0.read_signal().ok()??;
        Signal::try_from(i32::try_from(info.ssi_signo).ok()?).ok()
    }
}
