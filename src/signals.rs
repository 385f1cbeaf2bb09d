//! Signals as events read from a signalfd instead of asynchronous handlers.
//!
//! The signals synclock cares about are blocked in the main thread before any
//! other thread exists (threads inherit the mask), so they stay pending in
//! the process's queue, which the supervising loops read through a signalfd
//! when the kernel says so. No handler code runs in signal context (but
//! while waiting for the lock, see `wait.rs`), and a SIGCHLD that arrives
//! before we look stays pending: no lost wake-ups. The child gets the
//! original mask back before exec (see `child.rs`).

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

/// Whether `signal` is set to be ignored (asked without changing it).
fn is_ignored(signal: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<nix::libc::sigaction>::uninit();
    // SAFETY: a null new action only reads the current one into `old`.
    let asked = unsafe {
        nix::libc::sigaction(
            signal as nix::libc::c_int,
            std::ptr::null(),
            old.as_mut_ptr(),
        )
    };
    // SAFETY: sigaction filled `old` when it returned 0.
    asked == 0 && unsafe { old.assume_init() }.sa_sigaction == nix::libc::SIG_IGN
}

/// The queue of blocked signals, and the mask to give back to children.
pub struct Signals {
    queue: SignalFd,
    handled: SigSet,
    original: SigSet,
}

impl Signals {
    /// Blocks the handled signals in this thread (call before starting any
    /// thread) and opens the signalfd they queue on.
    ///
    /// A signal synclock inherited as ignored (SIGHUP under `nohup`, SIGINT
    /// and SIGQUIT in a background job) is left out and stays ignored: the
    /// kernel queues a blocked signal even when it is ignored, so blocking
    /// it would turn it back on.
    pub fn block() -> Result<Self, Error> {
        let handled: SigSet = HANDLED
            .into_iter()
            .filter(|signal| *signal == Signal::SIGCHLD || !is_ignored(*signal))
            .collect();
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
        Ok(Signals {
            queue,
            handled,
            original,
        })
    }

    /// The blocked signals that end a wait: INT, TERM, HUP and QUIT, less
    /// any that synclock was started with ignored.
    pub fn ending(&self) -> Vec<Signal> {
        self.handled
            .iter()
            .filter(|signal| *signal != Signal::SIGCHLD)
            .collect()
    }

    /// The signal mask synclock was started with, for the command.
    pub fn original_mask(&self) -> SigSet {
        self.original
    }

    /// The descriptor that becomes readable when a signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.queue.as_fd()
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
