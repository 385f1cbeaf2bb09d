//! What synclock does for each command line: the order of lock, run, release.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::child;
use crate::cli::{Action, Cli, Wait};
use crate::error::Error;
use crate::exit;
use crate::holder;
use crate::lockfile;
use crate::msg;
use crate::nested;
use crate::procfs;
use crate::progress::Progress;
use crate::record::{self, Record};
use crate::signals::Signals;
use crate::status;
use crate::wait::{self, Observer, Outcome};

/// Carries out the parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    msg::set_level(cli.level());
    match cli.action {
        Some(Action::Status { json }) => status::run(&cli.lockfile, json),
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
        let mut report = WaitReport::new(path, wait);
        let outcome = wait::acquire(fd, path, wait, &signals, &mut report);
        report.progress.clear();
        match outcome? {
            Outcome::Acquired(fd, waited) => {
                msg::verbose(format_args!(
                    "acquired {} after waiting {}",
                    path.display(),
                    msg::duration(waited)
                ));
                Held::Own(fd)
            }
            Outcome::Busy(waited) => {
                report_conflict(path, wait, waited);
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
    let acquired = SystemTime::now();
    let started = Instant::now();
    let child = child::spawn(&cli.command, held.raw(), path, &signals)?;
    if matches!(held, Held::Own(_)) {
        write_record(path, &cli.command, child.id(), acquired);
    }
    let status = child::supervise(child, &signals)?;
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
        record::remove(path);
        drop(fd);
        msg::verbose(format_args!(
            "released {} after {}",
            path.display(),
            msg::duration(started.elapsed())
        ));
    }
    Ok(exit::code_of(status))
}

/// Says who holds the lock for those who cannot ask /proc (see `record.rs`).
fn write_record(path: &Path, command: &[std::ffi::OsString], child: u32, since: SystemTime) {
    let pid = std::process::id() as i32;
    let record = Record {
        pid,
        start_ticks: procfs::start_ticks(pid).unwrap_or(0),
        child: i32::try_from(child).ok(),
        pid_namespace: procfs::pid_namespace(),
        host: holder::local_host(),
        command: command
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect(),
        since,
    };
    if let Err(err) = record::write(path, &record) {
        msg::verbose(format_args!(
            "cannot write holder record {}: {err}; status will know less",
            record::path_for(path).display()
        ));
    }
}

/// Who holds the lock, in words, for the waiting and giving-up lines.
fn holder_words(path: &Path) -> String {
    let holder = status::inspect(path)
        .ok()
        .and_then(|inspection| inspection.holder);
    holder.map_or_else(|| "another process".to_string(), |h| holder::describe(&h))
}

/// Reports a busy lock: one line, then the live line on a terminal.
struct WaitReport<'a> {
    path: &'a Path,
    wait: Wait,
    progress: Progress,
}

impl<'a> WaitReport<'a> {
    fn new(path: &'a Path, wait: Wait) -> Self {
        let limit = match wait {
            Wait::Upto(limit) => Some(limit),
            Wait::No | Wait::Forever => None,
        };
        WaitReport {
            path,
            wait,
            progress: Progress::new(limit),
        }
    }
}

impl Observer for WaitReport<'_> {
    fn busy(&mut self) {
        if !msg::enabled(msg::Level::Normal) {
            return;
        }
        let limit = match self.wait {
            Wait::Upto(limit) => format!("waiting up to {}", msg::duration(limit)),
            Wait::No | Wait::Forever => "waiting".to_string(),
        };
        msg::info(format_args!(
            "{} is held by {}; {limit}",
            self.path.display(),
            holder_words(self.path)
        ));
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.progress.interval()
    }

    fn tick(&mut self, waited: Duration) {
        self.progress.draw(waited);
    }
}

/// The one line said when the lock could not be had.
fn report_conflict(path: &Path, wait: Wait, waited: Duration) {
    if !msg::enabled(msg::Level::Normal) {
        return;
    }
    let holder = holder_words(path);
    let shown = path.display();
    match wait {
        Wait::No => msg::info(format_args!(
            "{shown} is held by {holder}; not waiting (--nonblock or --wait 0)"
        )),
        Wait::Upto(limit) => msg::info(format_args!(
            "gave up after {}; {shown} is still held by {holder}",
            msg::duration(limit.max(Duration::from_secs(waited.as_secs())))
        )),
        Wait::Forever => msg::info(format_args!("{shown} is still held by {holder}")),
    }
}
