//! What synclock does for each command line: the order of lock, run, release.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::child;
use crate::cli::{Action, Cli, Wait};
use crate::error::Error;
use crate::exit;
use crate::lockfile;
use crate::msg;
use crate::nested;
use crate::signals::Signals;
use crate::wait::{self, Outcome};

/// Carries out the parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    msg::set_level(cli.level());
    match cli.action {
        Some(Action::Status { .. }) => Err(Error::System {
            action: "status is not available yet",
            errno: nix::errno::Errno::ENOSYS,
        }),
        None => run_locked(&cli),
    }
}

/// The lock as this process holds it.
enum Held {
    /// Taken by this synclock; closing it releases our hold.
    Own(OwnedFd),
    /// Inherited from an outer synclock on the same lockfile.
    Inherited(RawFd),
}

impl Held {
    fn raw(&self) -> RawFd {
        match self {
            Held::Own(fd) => fd.as_raw_fd(),
            Held::Inherited(fd) => *fd,
        }
    }
}

/// Takes the lock (or reuses an inherited one), runs the command and
/// returns its exit code.
fn run_locked(cli: &Cli) -> Result<u8, Error> {
    let path = &cli.lockfile;
    let command_line = msg::command_line(&cli.command);
    let signals = Signals::block()?;
    let held = if let Some(fd) = nested::inherited_lock(path) {
        msg::verbose(format_args!(
            "{} is already held for us (inherited descriptor {fd}); running {command_line}",
            path.display()
        ));
        Held::Inherited(fd)
    } else {
        let (fd, _) = lockfile::open_checked(path)?;
        let wait = cli.wait_policy();
        match wait::acquire(fd, path, wait, &signals, || announce_wait(cli, wait))? {
            Outcome::Acquired(fd, waited) => {
                msg::verbose(format_args!(
                    "acquired {} after waiting {}",
                    path.display(),
                    msg::duration(waited)
                ));
                Held::Own(fd)
            }
            Outcome::Busy(waited) => {
                report_conflict(cli, wait, waited);
                return Ok(cli.conflict_exit_code);
            }
            Outcome::Interrupted(signal) => {
                msg::info(format_args!(
                    "interrupted by {signal} while waiting for {}; {command_line} was not run",
                    path.display()
                ));
                return Ok(exit::signal_code(signal as i32));
            }
        }
    };
    let started = Instant::now();
    let status = child::run(&cli.command, held.raw(), path, &signals)?;
    if let Some(signal) = status.signal().and_then(|n| Signal::try_from(n).ok())
        && !matches!(signal, Signal::SIGINT | Signal::SIGPIPE)
    {
        let core = if status.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        msg::info(format_args!("{command_line} was killed by {signal}{core}"));
    }
    if let Held::Own(fd) = held {
        drop(fd);
        msg::verbose(format_args!(
            "released {} after {}",
            path.display(),
            msg::duration(started.elapsed())
        ));
    }
    Ok(exit::code_of(status))
}

/// The one line said before waiting for a busy lock.
fn announce_wait(cli: &Cli, wait: Wait) {
    let limit = match wait {
        Wait::Upto(limit) => format!("waiting up to {}", msg::duration(limit)),
        Wait::No | Wait::Forever => "waiting".to_string(),
    };
    msg::info(format_args!(
        "{} is held by another process; {limit}",
        cli.lockfile.display()
    ));
}

/// The one line said when the lock could not be had.
fn report_conflict(cli: &Cli, wait: Wait, waited: Duration) {
    let path = cli.lockfile.display();
    match wait {
        Wait::No => msg::info(format_args!(
            "{path} is held by another process; not waiting (--nonblock or --wait 0)"
        )),
        Wait::Upto(_) | Wait::Forever => msg::info(format_args!(
            "gave up after {}; {path} is still held by another process",
            msg::duration(waited)
        )),
    }
}
