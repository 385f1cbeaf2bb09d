//! Exit codes: the one place that decides what number synclock exits with.
//!
//! The wrapped command's own code passes through untouched; everything
//! synclock says about itself uses a code documented in README.md.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SigHandler, SigSet, Signal};

/// The command line was wrong (bad duration, missing command).
pub const USAGE: u8 = 2;
/// Default code when the lock could not be had (`EX_TEMPFAIL`); see `-E`.
pub const DEFAULT_CONFLICT: u8 = 75;
/// synclock itself failed (as coreutils' `timeout`, `env` and `chroot` say).
pub const FAILURE: u8 = 125;
/// The command was found but could not be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;

/// The shell's code for `status`: its exit code, or 128+N for signal N.
pub fn code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(FAILURE),
        (None, Some(signal)) => signal_code(signal),
        (None, None) => FAILURE,
    }
}

/// The shell's code for death by signal number `signal`: 128+N.
pub fn signal_code(signal: i32) -> u8 {
    u8::try_from(signal).map_or(FAILURE, |n| 128u8.saturating_add(n))
}

/// The signal synclock is to die by, once its line is said (0: none).
static DIE_BY: AtomicI32 = AtomicI32::new(0);

/// Notes that synclock, interrupted by `signal` while waiting, ends by it.
pub fn die_by(signal: Signal) {
    DIE_BY.store(signal as i32, Ordering::Relaxed);
}

/// Dies by the signal noted with [`die_by`], if any (a shell loop stops).
pub fn die_if_asked() {
    let Ok(signal) = Signal::try_from(DIE_BY.load(Ordering::Relaxed)) else { return };
    // SAFETY: the default action; no handler of ours runs.
    let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    let _ = SigSet::from_iter([signal]).thread_unblock();
    let _ = nix::sys::signal::raise(signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pass_through_and_signal_deaths_become_128_plus_n() {
        for (raw, code) in
            [(0, 0), (3 << 8, 3), (255 << 8, 255), (9, 137), (15, 143), (11 | 0x80, 139)]
        {
            assert_eq!(code_of(ExitStatus::from_raw(raw)), code, "{raw:#x}");
        }
    }
}
