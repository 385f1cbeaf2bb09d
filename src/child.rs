//! Running the command under the lock, forwarding signals to it.
//!
//! The command inherits the locked descriptor (its close-on-exec flag is
//! cleared for the child only), so if synclock is SIGKILLed the lock stays
//! held until the command and every descendant that kept the descriptor
//! exit: a sync never runs unlocked. While the command runs, SIGINT and
//! SIGQUIT are ignored by synclock (the terminal delivers them to the whole
//! foreground process group, the command included) and SIGTERM and SIGHUP are
//! forwarded to the command; synclock then waits for it and reports its status.
//!
//! The command is started with a vfork-style clone rather than fork+exec
//! (see `spawn.rs`), so the parent takes no copy-on-write page faults, which
//! is most of the cost of starting a command on a VM. The child gets
//! synclock's original signal mask (the handled signals are blocked in
//! synclock itself), SIGPIPE back at its default (synclock ignores it, see
//! `start.rs`), and the lock descriptor without close-on-exec.

use std::ffi::{CStr, CString, OsString, c_char};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;
use crate::msg;
use crate::nested::FD_VAR;
use crate::signals::Signals;
use crate::spawn;

/// The environment variable that tells nested synclocks the lockfile.
const LOCKFILE_VAR: &str = "SYNCLOCK_LOCKFILE";

/// Starts `command` with the lock descriptor `lock_fd` inherited and named in
/// its environment, and with synclock's original signal mask.
pub fn spawn(
    command: &[OsString],
    lock_fd: RawFd,
    lockfile: &Path,
    signals: &Signals,
) -> Result<Pid, Error> {
    let program_name = command[0].to_string_lossy().into_owned();
    let failed = |errno: Errno| Error::Spawn {
        program: program_name.clone(),
        source: io::Error::from(errno),
    };
    let args = command
        .iter()
        .map(|word| c_string(word.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let fd_entry = c_string(format!("{FD_VAR}={lock_fd}").as_bytes()).map_err(failed)?;
    let mut lockfile_entry = format!("{LOCKFILE_VAR}=").into_bytes();
    lockfile_entry.extend_from_slice(lockfile.as_os_str().as_bytes());
    let lockfile_entry = c_string(&lockfile_entry).map_err(failed)?;
    let mut env: Vec<&CStr> = environment()
        .filter(|entry| !is_entry_of(entry, FD_VAR) && !is_entry_of(entry, LOCKFILE_VAR))
        .collect();
    env.push(&fd_entry);
    env.push(&lockfile_entry);

    let argv: Vec<*const c_char> = args
        .iter()
        .map(|arg| arg.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const c_char> = env
        .iter()
        .map(|entry| entry.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // SIGPIPE, which synclock ignores, and the signals that end a wait,
    // whose handlers the wait installs (and has taken down again by now;
    // SIGURG's it puts back as it found it). Ignored ones are not among
    // them and stay ignored.
    let mut defaults = signals.ending();
    defaults.push(Signal::SIGPIPE);
    spawn::spawn(
        &args[0],
        &argv,
        &envp,
        &signals.original_mask(),
        &defaults,
        lock_fd,
    )
    .map_err(failed)
}

/// Our environment's `NAME=value` entries, borrowed from the C library's
/// `environ` (std::env::vars_os would copy every one of them twice).
fn environment() -> impl Iterator<Item = &'static CStr> {
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated
    // strings, and synclock never changes its environment, so the array and
    // the strings stay as they are for the life of the process.
    let mut at = unsafe { libc_environ() };
    std::iter::from_fn(move || {
        // SAFETY: see above; `at` never moves past the terminating NULL.
        unsafe {
            let entry = at.as_ref().copied().filter(|entry| !entry.is_null())?;
            at = at.add(1);
            Some(CStr::from_ptr(entry))
        }
    })
}

/// The C library's `environ` (null when there is no environment at all).
///
/// # Safety
///
/// Nothing may change the environment while the result is in use.
unsafe fn libc_environ() -> *const *const libc::c_char {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: reading the pointer itself; see the caller's contract.
    unsafe { environ }
}

/// Whether the environment entry `entry` sets the variable `name`.
fn is_entry_of(entry: &CStr, name: &str) -> bool {
    entry
        .to_bytes()
        .strip_prefix(name.as_bytes())
        .is_some_and(|rest| rest.first() == Some(&b'='))
}

fn c_string(bytes: &[u8]) -> Result<CString, Errno> {
    CString::new(bytes).map_err(|_| Errno::EINVAL)
}

/// Waits for the command `pid` to exit, forwarding SIGTERM and SIGHUP to it
/// and ignoring SIGINT and SIGQUIT, and returns how it ended.
pub fn supervise(pid: Pid, signals: &Signals) -> Result<ExitStatus, Error> {
    loop {
        match signals.next()? {
            Signal::SIGCHLD => {
                let mut status = 0;
                // SAFETY: waitpid writes only into `status`, which we own.
                let reaped = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::WNOHANG) };
                match reaped {
                    0 => {}
                    n if n == pid.as_raw() => return Ok(ExitStatus::from_raw(status)),
                    _ if Errno::last() == Errno::EINTR => {}
                    _ => {
                        return Err(Error::System {
                            action: "cannot wait for the command",
                            errno: Errno::last(),
                        });
                    }
                }
            }
            signal @ (Signal::SIGTERM | Signal::SIGHUP) => {
                msg::verbose(format_args!("forwarding {signal} to PID {pid}"));
                // The command may have just exited; its SIGCHLD follows.
                let _ = kill(pid, signal);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_matched_by_their_whole_name() {
        assert!(is_entry_of(c"SYNCLOCK_FD=3", "SYNCLOCK_FD"));
        assert!(is_entry_of(c"SYNCLOCK_FD=", "SYNCLOCK_FD"));
        assert!(!is_entry_of(c"SYNCLOCK_FDX=3", "SYNCLOCK_FD"));
        assert!(!is_entry_of(c"SYNCLOCK_FD", "SYNCLOCK_FD"));
        assert!(!is_entry_of(c"X_SYNCLOCK_FD=3", "SYNCLOCK_FD"));
    }

    #[test]
    fn the_environment_is_the_processes_own() {
        let borrowed: Vec<Vec<u8>> = environment().map(|e| e.to_bytes().to_vec()).collect();
        for (key, value) in std::env::vars_os() {
            let mut entry = key.into_encoded_bytes();
            entry.push(b'=');
            entry.extend_from_slice(value.as_encoded_bytes());
            assert!(
                borrowed.contains(&entry),
                "{}",
                String::from_utf8_lossy(&entry)
            );
        }
    }
}
