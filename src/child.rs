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
//! The command is started with posix_spawnp(3) rather than fork+exec: glibc
//! spawns with a vfork-style clone, so the parent takes no copy-on-write page
//! faults, which is most of the cost of starting a command on a VM. The spawn
//! attributes give the child synclock's original signal mask (the handled
//! signals are blocked in synclock itself), SIGPIPE back at its default
//! (synclock ignores it, see `start.rs`), and the lock descriptor without close-on-exec
//! (a dup2 of the descriptor onto itself).

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::libc;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;
use crate::msg;
use crate::nested::FD_VAR;
use crate::signals::Signals;

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
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != FD_VAR && key != LOCKFILE_VAR)
        .filter_map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    env.push(c_string(format!("{FD_VAR}={lock_fd}").as_bytes()).map_err(failed)?);
    let mut lockfile_entry = format!("{LOCKFILE_VAR}=").into_bytes();
    lockfile_entry.extend_from_slice(lockfile.as_os_str().as_bytes());
    env.push(c_string(&lockfile_entry).map_err(failed)?);

    let mut attr = PosixSpawnAttr::init().map_err(failed)?;
    attr.set_sigmask(&signals.original_mask()).map_err(failed)?;
    attr.set_sigdefault(&[Signal::SIGPIPE].into_iter().collect::<SigSet>())
        .map_err(failed)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(failed)?;
    let mut actions = PosixSpawnFileActions::init().map_err(failed)?;
    // dup2 onto itself clears close-on-exec in the child only (glibc >= 2.29).
    actions.add_dup2(lock_fd, lock_fd).map_err(failed)?;
    posix_spawnp(&args[0], &actions, &attr, &args, &env).map_err(failed)
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
