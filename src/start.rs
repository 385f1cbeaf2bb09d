//! Process start-up, done here instead of by the Rust runtime.
//!
//! The binary is `#![no_main]`: the C library calls its `main`, which calls
//! [`start`]. The Rust runtime's own start-up would first read
//! `/proc/self/maps` to find the main thread's stack and put SIGSEGV and
//! SIGBUS handlers on an alternate stack, only to print a nicer message on
//! stack overflow: 19 system calls, about 60 µs of every run on the
//! development VM (measured against the same program with `no_main`). A
//! wrapped sync is short to start and runs often under contention, so
//! synclock does only the part it needs:
//!
//! - descriptors 0, 1 and 2 are opened on /dev/null when closed, so that no
//!   file synclock opens (the lockfile, the holder record) becomes its
//!   standard error and receives its messages;
//! - SIGPIPE is ignored, so a closed stderr cannot kill synclock while it
//!   holds the lock (the command gets SIGPIPE back at its default);
//! - the arguments come from `argv` (with musl, std would not see them);
//! - a panic exits with code 101 after its message, and standard output is
//!   flushed at the end, as with Rust's runtime.

use std::ffi::{CStr, OsString, c_char, c_int};
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigHandler, Signal, signal};
use nix::sys::stat::Mode;

use crate::exit;

/// The exit code after a panic, as Rust's runtime gives it.
const PANIC: c_int = 101;

/// Prepares the process as described above, runs `body` with the
/// arguments, and returns the exit code for the C library's `exit`.
///
/// # Safety
///
/// `argv` must hold `argc` valid NUL-terminated strings, as the C library
/// passes them to `main`.
pub unsafe fn start(
    argc: c_int,
    argv: *const *const c_char,
    body: impl FnOnce(Vec<OsString>) -> u8,
) -> c_int {
    if !standard_fds_open() {
        return c_int::from(exit::FAILURE);
    }
    // SAFETY: SIG_IGN installs no handler, so no code runs on a signal.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    // SAFETY: passed on from our caller, who guarantees it.
    let args = unsafe { arguments(argc, argv) };
    let code = catch_unwind(AssertUnwindSafe(|| c_int::from(body(args))));
    let _ = std::io::stdout().flush();
    code.unwrap_or(PANIC)
}

/// Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed (the
/// lowest free number is the one `open` returns); false if that fails.
fn standard_fds_open() -> bool {
    use std::os::fd::BorrowedFd;
    // SAFETY: poll only looks at these numbers; a closed one is reported
    // with POLLNVAL, never used.
    let fds = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let mut polled = fds.map(|fd| PollFd::new(fd, PollFlags::empty()));
    if poll(&mut polled, PollTimeout::ZERO).is_err() {
        return true; // cannot tell; nothing to repair that we know of
    }
    for fd in &polled {
        if fd
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLNVAL))
        {
            match open("/dev/null", OFlag::O_RDWR, Mode::empty()) {
                // Kept open for the life of the process, as stdin/out/err.
                Ok(null) => std::mem::forget(null),
                Err(_) => return false,
            }
        }
    }
    true
}

/// The command-line arguments from the C library's `argc` and `argv`.
///
/// # Safety
///
/// As for [`start`].
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    let count = usize::try_from(argc).unwrap_or(0);
    (0..count)
        .map(|i| {
            // SAFETY: i < argc, and each argv entry is a valid C string.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            OsString::from_vec(arg.to_bytes().to_vec())
        })
        .collect()
}
