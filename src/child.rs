//! Running the command under the lock, forwarding signals to it.
//!
//! The command inherits the locked descriptor (its close-on-exec flag is
//! cleared in the child only), so if synclock is SIGKILLed the lock stays
//! held until the command and every descendant that kept the descriptor
//! exit: a sync never runs unlocked. While the command runs, SIGINT and
//! SIGQUIT are ignored by synclock (the terminal delivers them to the whole
//! foreground process group, the command included) and SIGTERM and SIGHUP are
//! forwarded to the command; synclock then waits for it and reports its status.

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;
use crate::msg;
use crate::nested::FD_VAR;
use crate::signals::Signals;

/// Starts `command` with the lock descriptor `lock_fd` inherited and named in
/// its environment, and with synclock's original signal mask.
pub fn spawn(
    command: &[OsString],
    lock_fd: RawFd,
    lockfile: &Path,
    signals: &Signals,
) -> Result<Child, Error> {
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env(FD_VAR, lock_fd.to_string())
        .env("SYNCLOCK_LOCKFILE", lockfile);
    let original_mask = signals.original_mask();
    // SAFETY: between fork and exec only async-signal-safe calls happen:
    // pthread_sigmask and fcntl, on values prepared before the fork; nothing
    // allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            original_mask.thread_set_mask()?;
            let fd = BorrowedFd::borrow_raw(lock_fd);
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}

/// Waits for `child` to exit, forwarding SIGTERM and SIGHUP to it and
/// ignoring SIGINT and SIGQUIT, and returns how it ended.
pub fn supervise(mut child: Child, signals: &Signals) -> Result<ExitStatus, Error> {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    loop {
        match signals.next()? {
            Signal::SIGCHLD => {
                let status = child.try_wait().map_err(|err| Error::System {
                    action: "cannot wait for the command",
                    errno: errno_of(&err),
                })?;
                if let Some(status) = status {
                    return Ok(status);
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

fn errno_of(err: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0))
}
