//! What synclock does for each command line: the order of lock, run, release.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::child;
use crate::clean;
use crate::cli::{Action, Cli, Wait};
use crate::error::Error;
use crate::exit;
use crate::history;
use crate::holder;
use crate::lockfile;
use crate::msg;
use crate::nested;
use crate::procfs;
use crate::record::{self, Record};
use crate::repos::{self, Repo};
use crate::signals::Signals;
use crate::status;
use crate::syncers::{self, Gone};
use crate::wait::{self, Outcome};
use crate::waiters;

/// Carries out the parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    msg::set_level(cli.level());
    match cli.action {
        Some(Action::Status { json }) => status::run(&cli.lockfile, json),
        Some(Action::Clean { dry_run }) => run_clean(&cli, dry_run),
        None => run_locked(&cli),
    }
}

/// The lock as this process holds it.
enum Held {
    /// Taken by this synclock; closing it releases our hold. `owner` is the
    /// lockfile's owner, whom the record and history next to it must match.
    Own {
        /// The locked descriptor.
        fd: OwnedFd,
        /// The lockfile's owner.
        owner: u32,
        /// Our slot in the lockfile, written while we waited: cleared once
        /// our command has started (see `waiters.rs`).
        registration: Option<waiters::Registration>,
    },
    /// Inherited from an outer synclock on the same lockfile.
    Inherited(RawFd),
}

impl Held {
    fn raw(&self) -> RawFd {
        match self {
            Held::Own { fd, .. } => fd.as_raw_fd(),
            Held::Inherited(fd) => *fd,
        }
    }

    /// Our ancestors as noted while we waited for the lock (none when we
    /// did not wait).
    fn lineage(&self) -> &[procfs::Listed] {
        match self {
            Held::Own {
                registration: Some(registration),
                ..
            } => registration.lineage(),
            Held::Own { .. } | Held::Inherited(_) => &[],
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: our own descriptor, or one inherited from the outer
        // synclock that `nested` checked is open; neither is closed while
        // `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.raw()) }
    }

    /// Clears our slot among the waiters, if we wrote one: we wait no more.
    fn stop_waiting(&mut self) {
        if let Held::Own { registration, .. } = self {
            registration.take();
        }
    }
}

/// Takes the lock (or reuses an inherited one), cleans, runs the command
/// and returns its exit code.
fn run_locked(cli: &Cli) -> Result<u8, Error> {
    let path = &cli.lockfile;
    let command_line = msg::command_line(&cli.command);
    let start = Instant::now();
    let began = SystemTime::now();
    let signals = Signals::block()?;
    let inherited = nested::inherited_lock(path);
    // Reading repos.conf needs no lock: done before waiting, it stays off
    // the hand-off path. A nested run cleans nothing (its parent did).
    let plan = if inherited.is_none() { plan(cli) } else { None };
    let words: Vec<String> = cli
        .command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    // The holder record, written but for its time, also before waiting.
    let pending = inherited
        .is_none()
        .then(|| record::prepare(path, holder_record(&words)));
    let mut held = match take_lock(cli, &signals, &command_line, inherited)? {
        Ok(held) => held,
        Err(code) => return Ok(code),
    };
    let owner = match &held {
        Held::Own { owner, .. } => Some(*owner),
        Held::Inherited(_) => None,
    };
    // The history is read once: here when --coalesce or --min-interval ask
    // for it, else while the command runs (the lock is held throughout).
    let wants_history = !cli.force && (cli.coalesce || cli.min_interval.is_some());
    let mut log = owner
        .filter(|_| wants_history)
        .map(|owner| history::Log::open(path, owner));
    if log
        .as_ref()
        .is_some_and(|log| already_done(cli, &command_line, &words, log.runs(), began))
    {
        return Ok(0);
    }
    let started = Instant::now();
    let acquired = SystemTime::now();
    // The record goes first: a SIGKILL at any moment after the command
    // starts must leave it behind, as the mark of an interrupted run.
    // Putting it in place also tells whether the last run finished.
    let mut record = None;
    if let (Some(owner), Some(pending)) = (owner, pending) {
        let published = pending.publish(path, owner, acquired);
        if published.written {
            record = Some(RecordInPlace(path));
        } else {
            msg::verbose(format_args!(
                "cannot write holder record {}; status will know less",
                record::path_for(path).display()
            ));
        }
        let interrupted = published.interrupted;
        let cleaning = if cli.no_clean {
            Cleaning::Off
        } else {
            Cleaning::On
        };
        let prepared = prepare(
            cli,
            &signals,
            &held,
            start,
            plan.as_ref(),
            interrupted.as_ref(),
            cleaning,
        )?;
        if let Prepared::Stop(code) = prepared {
            return Ok(code);
        }
    }
    let child = child::spawn(&cli.command, held.raw(), path, &signals)?;
    // While the command runs: we hold the lock, nobody else writes these.
    held.stop_waiting();
    let history = owner.map(|owner| {
        let log = log
            .take()
            .unwrap_or_else(|| history::Log::open(path, owner));
        let run = history::Run {
            command: words,
            start: acquired,
            end: acquired,
            code: 0,
            pid: std::process::id() as i32,
        };
        log.prepare(run)
    });
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
    if let Some(history) = history
        && let Err(err) = history.finish(SystemTime::now(), exit::code_of(status))
    {
        msg::verbose(format_args!(
            "cannot write history {}: {err}",
            history::path_for(path).display()
        ));
    }
    drop(record);
    if let Held::Own { fd, .. } = held {
        drop(fd);
        msg::verbose(format_args!(
            "released {} after {}",
            path.display(),
            msg::duration(started.elapsed())
        ));
    }
    Ok(exit::code_of(status))
}

/// Whether `--coalesce` or `--min-interval` make running `command` (shown
/// as `shown`) again pointless, given the remembered `runs`; says why when so.
fn already_done(
    cli: &Cli,
    shown: &str,
    command: &[String],
    runs: &[history::Run],
    began: SystemTime,
) -> bool {
    let Some(last) = history::last(runs, command).filter(|run| run.succeeded()) else {
        return false;
    };
    let end = humantime::format_rfc3339_seconds(last.end);
    let took = msg::duration(Duration::from_secs(
        last.end
            .duration_since(last.start)
            .unwrap_or_default()
            .as_secs(),
    ));
    if cli.coalesce && last.end >= began {
        msg::info(format_args!(
            "{shown} finished at {end} (PID {}, {took}) while we waited; not run again",
            last.pid
        ));
        return true;
    }
    let Some(interval) = cli.min_interval else {
        return false;
    };
    let age = SystemTime::now()
        .duration_since(last.end)
        .unwrap_or_default();
    if age >= interval {
        return false;
    }
    msg::info(format_args!(
        "{shown} last succeeded at {end} ({} ago); next run allowed after {} (--min-interval {}); \
         not run (--force runs it anyway)",
        msg::duration(Duration::from_secs(age.as_secs())),
        humantime::format_rfc3339_seconds(last.end + interval),
        msg::duration(interval)
    ));
    true
}

/// `synclock clean`: lock, wait for outside syncs, clean, release.
fn run_clean(cli: &Cli, dry_run: bool) -> Result<u8, Error> {
    let start = Instant::now();
    let signals = Signals::block()?;
    let inherited = nested::inherited_lock(&cli.lockfile);
    let plan = plan(cli);
    let mut held = match take_lock(cli, &signals, "cleaning", inherited)? {
        Ok(held) => held,
        Err(code) => return Ok(code),
    };
    let interrupted = match &held {
        Held::Own { owner, .. } => record::read(&cli.lockfile, *owner),
        Held::Inherited(_) => None,
    };
    let summary = match prepare(
        cli,
        &signals,
        &held,
        start,
        plan.as_ref(),
        interrupted.as_ref(),
        if dry_run {
            Cleaning::DryRun
        } else {
            Cleaning::On
        },
    )? {
        Prepared::Stop(code) => return Ok(code),
        Prepared::Go(summary) => summary.unwrap_or_default(),
    };
    held.stop_waiting();
    if interrupted.is_some() && !dry_run {
        record::remove(&cli.lockfile);
    }
    if summary.items == 0 && summary.failures == 0 {
        msg::info(format_args!("nothing to clean"));
    }
    Ok(if summary.failures > 0 {
        exit::FAILURE
    } else {
        0
    })
}

/// What the preparation inside the lock decided.
enum Prepared {
    /// Exit with this code, running nothing.
    Stop(u8),
    /// Go on; what cleaning did, if it ran.
    Go(Option<clean::Summary>),
}

/// Takes the lock for `what` (a command line, for messages), or reuses the
/// `inherited` one; `Err(code)` when synclock must exit with `code` instead.
fn take_lock(
    cli: &Cli,
    signals: &Signals,
    what: &str,
    inherited: Option<RawFd>,
) -> Result<Result<Held, u8>, Error> {
    let path = &cli.lockfile;
    if let Some(fd) = inherited {
        msg::verbose(format_args!(
            "{} is already held for us (inherited descriptor {fd}); running {what}",
            path.display()
        ));
        return Ok(Ok(Held::Inherited(fd)));
    }
    let (fd, owner) = lockfile::open_checked(path)?;
    let wait = cli.wait_policy();
    let mut registration = None;
    let outcome = wait::acquire(fd, path, wait, signals, |fd| {
        registration = waiters::register(fd);
        report_busy(path, wait);
    });
    match outcome? {
        Outcome::Acquired(fd, waited) => {
            msg::verbose(format_args!(
                "acquired {} after waiting {}",
                path.display(),
                msg::duration(waited)
            ));
            Ok(Ok(Held::Own {
                fd,
                owner,
                registration,
            }))
        }
        Outcome::Busy(waited) => {
            report_conflict(path, wait, waited);
            Ok(Err(cli.conflict_exit_code))
        }
        Outcome::Interrupted(signal) => {
            msg::info(format_args!(
                "interrupted by {signal} while waiting for {}; {what} was not run",
                path.display()
            ));
            Ok(Err(exit::signal_code(signal as i32)))
        }
    }
}

/// The repositories to clean, from repos.conf and `--repo`; `None` when
/// repos.conf has an error (Portage then ignores all of it).
fn plan(cli: &Cli) -> Option<clean::Plan> {
    let extra = cli.repos.iter().map(|dir| Repo {
        name: dir.display().to_string(),
        location: dir.clone(),
        sync_type: None,
        sync_rcu: false,
        rcu_store_dir: None,
    });
    match repos::discover() {
        Ok(found) => Some(clean::Plan::new(
            found.into_iter().chain(extra).collect(),
            repos::portage_tmpdir(),
        )),
        Err(err) => {
            msg::info(format_args!(
                "cannot use repos.conf ({err}); Portage ignores all of it then, so synclock \
                 cleans nothing this time"
            ));
            None
        }
    }
}

/// What to do about stale sync leftovers once the lock is had.
#[derive(Clone, Copy)]
enum Cleaning {
    /// Nothing (`--no-clean`).
    Off,
    /// Remove them.
    On,
    /// Say what would be removed (`clean --dry-run`).
    DryRun,
}

/// Inside the lock (`held`), before the command: wait for
/// syncs running outside synclock (they must not overlap ours), then clean
/// as `cleaning` says.
fn prepare(
    cli: &Cli,
    signals: &Signals,
    held: &Held,
    start: Instant,
    plan: Option<&clean::Plan>,
    interrupted: Option<&Record>,
    cleaning: Cleaning,
) -> Result<Prepared, Error> {
    let locations = || plan.map(clean::Plan::locations).unwrap_or_default();
    let outside = syncers::find(locations, &cli.lockfile, held.fd(), held.lineage());
    if !outside.is_empty() {
        return Ok(match wait_for_outside(cli, signals, start, &outside)? {
            Some(code) => Prepared::Stop(code),
            None => Prepared::Go(None),
        });
    }
    let summary = match (cleaning, plan) {
        (Cleaning::On, Some(plan)) => Some(clean::run(plan, interrupted, false)),
        (Cleaning::DryRun, Some(plan)) => Some(clean::run(plan, interrupted, true)),
        (Cleaning::Off, _) | (_, None) => None,
    };
    Ok(Prepared::Go(summary))
}

/// Waits, within the `--wait` budget, for syncs that run outside synclock;
/// nothing is cleaned this time.
fn wait_for_outside(
    cli: &Cli,
    signals: &Signals,
    start: Instant,
    outside: &[procfs::Process],
) -> Result<Option<u8>, Error> {
    let first = &outside[0];
    let more = match outside.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    let who = format!(
        "PID {} ({}){more}",
        first.pid,
        msg::command_line(&first.command)
    );
    let wait = cli.wait_policy();
    let deadline = match wait {
        Wait::No => {
            msg::info(format_args!(
                "{who} runs outside synclock; not waiting (--nonblock or --wait 0)"
            ));
            return Ok(Some(cli.conflict_exit_code));
        }
        Wait::Upto(limit) => Some(start + limit),
        Wait::Forever => None,
    };
    let limit = match wait {
        Wait::Upto(limit) => format!("; waiting up to {}", msg::duration(limit)),
        Wait::No | Wait::Forever => String::new(),
    };
    msg::info(format_args!(
        "waiting for {who}, which runs outside synclock; cleaning nothing this time{limit}"
    ));
    match syncers::wait_gone(outside, deadline, signals)? {
        Gone::All => Ok(None),
        Gone::TimedOut => {
            msg::info(format_args!(
                "gave up waiting; {who} still runs outside synclock"
            ));
            Ok(Some(cli.conflict_exit_code))
        }
        Gone::Interrupted(signal) => {
            msg::info(format_args!(
                "interrupted by {signal} while waiting for {who}; nothing was run"
            ));
            Ok(Some(exit::signal_code(signal as i32)))
        }
    }
}

/// The holder record of this process running `command`; its time is set
/// when the lock is had.
fn holder_record(command: &[String]) -> Record {
    let pid = std::process::id() as i32;
    Record {
        pid,
        start_ticks: procfs::start_ticks(pid).unwrap_or(0),
        pid_namespace: procfs::pid_namespace(),
        host: holder::local_host(),
        command: command.to_vec(),
        since: SystemTime::UNIX_EPOCH,
    }
}

/// Our holder record of the lockfile at this path, in place: removed when
/// dropped, which must come before the lock is released (and does on every
/// way out of [`run_locked`] but a SIGKILL, which leaves it as the mark of
/// an interrupted run).
struct RecordInPlace<'a>(&'a Path);

impl Drop for RecordInPlace<'_> {
    fn drop(&mut self) {
        record::remove(self.0);
    }
}

/// Who holds the lock, in words, for the waiting and giving-up lines.
fn holder_words(path: &Path) -> String {
    let holder = status::inspect(path)
        .ok()
        .and_then(|inspection| inspection.holder);
    holder.map_or_else(|| "another process".to_string(), |h| holder::describe(&h))
}

/// The one line said when the lock is busy and we wait (on a terminal, the
/// live line follows; see `progress.rs`).
fn report_busy(path: &Path, wait: Wait) {
    if !msg::enabled(msg::Level::Normal) {
        return;
    }
    let limit = match wait {
        Wait::Upto(limit) => format!("waiting up to {}", msg::duration(limit)),
        Wait::No | Wait::Forever => "waiting".to_string(),
    };
    msg::info(format_args!(
        "{} is held by {}; {limit}",
        path.display(),
        holder_words(path)
    ));
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
