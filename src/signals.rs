//! Signals as events read from a signalfd, never asynchronous handlers.
//!
//! INT, TERM, HUP, QUIT and CHLD are blocked before any thread exists and
//! stay pending until read, so one that comes while synclock is busy is
//! seen at its next look, and the command is never started after one.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::error::Error;
use crate::msg::{self, Live};

/// The signals that end a wait (INT, TERM, HUP, QUIT), are forwarded or
/// ignored while the command runs, plus CHLD for the command's exit.
const HANDLED: [Signal; 5] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGCHLD];

/// What ended a [`Signals::wait`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// These of the descriptors waited on are ready (their indices).
    Ready(Vec<usize>),
    /// The deadline passed.
    TimedOut,
    /// A signal came.
    Signal(Signal),
}

/// The queue of blocked signals, and the mask to give back to children.
pub struct Signals {
    queue: SignalFd,
    original: SigSet,
}

impl Signals {
    /// Blocks the handled signals (call before starting any thread) and
    /// opens the signalfd they queue on.
    ///
    /// One inherited as ignored (SIGHUP under `nohup`) is left out and stays
    /// ignored: the kernel queues a blocked signal even when it is ignored.
    pub fn block() -> Result<Self, Error> {
        let system = |action| move |errno| Error::System { action, errno };
        let handled: SigSet = HANDLED
            .into_iter()
            .filter(|signal| *signal == Signal::SIGCHLD || !is_ignored(*signal))
            .collect();
        let original = handled
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(system("cannot block signals"))?;
        let flags = SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK;
        let queue =
            SignalFd::with_flags(&handled, flags).map_err(system("cannot create a signalfd"))?;
        Ok(Signals { queue, original })
    }

    /// The signal mask synclock was started with, for the command.
    pub fn original_mask(&self) -> SigSet {
        self.original
    }

    /// The first pending signal that ends a run (INT, TERM, HUP or QUIT),
    /// without waiting; a pending CHLD is read and dropped.
    pub fn pending(&self) -> Result<Option<Signal>, Error> {
        while let Some(signal) = self.read()? {
            if signal != Signal::SIGCHLD {
                return Ok(Some(signal));
            }
        }
        Ok(None)
    }

    /// Sleeps in poll(2) until one of `fds` is readable, a signal comes or
    /// `deadline` passes, redrawing `live` when it is due. No wake-up is
    /// asked for but those: a wait without deadline or live line uses no CPU.
    pub fn wait(
        &self,
        fds: &[BorrowedFd<'_>],
        deadline: Option<Instant>,
        live: &mut Live,
    ) -> Result<Event, Error> {
        loop {
            if let Some(signal) = self.read()? {
                return Ok(Event::Signal(signal));
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                return Ok(Event::TimedOut);
            }
            live.draw_if_due(now);
            let wake = match (deadline, live.next_draw()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = wake.map_or(PollTimeout::NONE, |wake| {
                // Rounded up, so that poll never returns a hair early.
                let left = wake.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            });
            let mut polled: Vec<PollFd<'_>> = std::iter::once(self.queue.as_fd())
                .chain(fds.iter().copied())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut polled, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => {
                    return Err(Error::System { action: "cannot poll", errno });
                }
            }
            let ready: Vec<usize> = polled[1..]
                .iter()
                .enumerate()
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect();
            if !ready.is_empty() {
                return Ok(Event::Ready(ready));
            }
        }
    }

    /// Ends synclock at once (one line, 128+N) if INT, TERM, HUP or QUIT has
    /// come: for long steps whose work a later run can finish.
    pub fn end_if_pending(&self, what: &str, not_run: &str) {
        if let Ok(Some(signal)) = self.pending() {
            msg::info(format_args!("interrupted by {signal} while {what}; {not_run}"));
            std::process::exit(128 + signal as i32);
        }
    }

    /// The next pending signal, if any, without waiting.
    fn read(&self) -> Result<Option<Signal>, Error> {
        loop {
            match self.queue.read_signal() {
                Ok(Some(info)) => {
                    let number = i32::try_from(info.ssi_signo).unwrap_or(0);
                    if let Ok(signal) = Signal::try_from(number) {
                        return Ok(Some(signal));
                    }
                }
                Ok(None) | Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::EINTR) => {}
                Err(errno) => {
                    return Err(Error::System { action: "cannot read the signalfd", errno });
                }
            }
        }
    }
}

/// Whether `signal` is set to be ignored (asked without changing it).
fn is_ignored(signal: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<nix::libc::sigaction>::uninit();
    // SAFETY: a null new action only reads the current one into `old`.
    let asked = unsafe {
        nix::libc::sigaction(signal as nix::libc::c_int, std::ptr::null(), old.as_mut_ptr())
    };
    // SAFETY: sigaction filled `old` when it returned 0.
    asked == 0 && unsafe { old.assume_init() }.sa_sigaction == nix::libc::SIG_IGN
}
