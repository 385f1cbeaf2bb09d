//! Running the command under the lock, forwarding signals to it.
//!
//! The command inherits the locked descriptor (close-on-exec cleared in the
//! child only), so a SIGKILLed synclock never lets a sync run unlocked. It
//! gets the signal mask synclock was started with and SIGPIPE at its
//! default. While it runs, SIGTERM and SIGHUP are forwarded to it; SIGINT and
//! SIGQUIT, which the terminal sends to the whole process group, are not.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};

use nix::libc;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

use crate::error::Error;
use crate::msg::{self, Live};
use crate::signals::{Event, Signals};

/// The environment variable that tells nested synclocks the lockfile.
pub const LOCKFILE_VAR: &str = "SYNCLOCK_LOCKFILE";

/// Starts `command` with the locked descriptor `lock` (of `lockfile`)
/// inherited and named in its environment as `fd_var` (without one, when an
/// ancestor holds the lock), and with the signal mask `mask`.
pub fn spawn(
    command: &[OsString],
    lock: Option<BorrowedFd<'_>>,
    lockfile: &Path,
    fd_var: &str,
    mask: SigSet,
) -> Result<Child, Error> {
    let fd = lock.map_or(-1, |lock| lock.as_raw_fd());
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).env(LOCKFILE_VAR, lockfile);
    if fd >= 0 {
        cmd.env(fd_var, fd.to_string());
    } else {
        cmd.env_remove(fd_var);
    }
    // SAFETY: between fork and exec the closure calls only fcntl and
    // pthread_sigmask, which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if fd >= 0 && libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            mask.thread_set_mask().map_err(std::io::Error::from)
        });
    }
    cmd.spawn().map_err(|source| Error::Spawn {
        program: command[0].to_string_lossy().into_owned(),
        source,
    })
}

/// Waits for `child` to exit, forwarding SIGTERM and SIGHUP to it and
/// ignoring SIGINT and SIGQUIT, and returns how it ended.
pub fn supervise(child: &mut Child, signals: &Signals) -> Result<ExitStatus, Error> {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(-1));
    loop {
        // A SIGCHLD that comes after this look stays pending for the wait.
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(err) => {
                return Err(Error::System {
                    action: "cannot wait for the command",
                    errno: nix::errno::Errno::from_raw(err.raw_os_error().unwrap_or(0)),
                });
            }
        }
        if let Event::Signal(signal @ (Signal::SIGTERM | Signal::SIGHUP)) =
            signals.wait(&[], None, &mut Live::off())?
        {
            msg::verbose(format_args!("forwarding {signal} to PID {pid}"));
            // The command may have just exited; its SIGCHLD follows.
            let _ = kill(pid, signal);
        }
    }
}
