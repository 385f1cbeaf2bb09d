//! One run of synclock, top to bottom: the only place that knows the order
//! of the steps. Each step lives in the module named after it and takes
//! plain values (paths, durations, a borrowed descriptor), never [`Cli`].

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::getpid;

use crate::clean;
use crate::cli::{Action, Cli};
use crate::error::Error;
use crate::exec;
use crate::exit;
use crate::history;
use crate::holder::{self, record};
use crate::lock::{self, Held, Outcome, Wait};
use crate::msg::{self, Live};
use crate::proc::Proc;
use crate::repos::{self, Repo};
use crate::scan::{self, Gone, Ours, Outside};
use crate::signals::Signals;

/// Carries out the parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<u8, Error> {
    msg::set_level(cli.level());
    let proc = Proc::system();
    match cli.action {
        Some(Action::Status { json }) => holder::status::run(&proc, &cli.lockfile, json),
        Some(Action::Clean { dry_run }) => locked_run(&cli, &proc, Some(dry_run)),
        None => locked_run(&cli, &proc, None),
    }
}

/// The whole life of a run under the lock: of COMMAND, or with `clean`
/// (`Some(dry_run)`) of the cleaning alone.
fn locked_run(cli: &Cli, proc: &Proc, clean: Option<bool>) -> Result<u8, Error> {
    let path = &cli.lockfile;
    let shown = if clean.is_some() { "cleaning".into() } else { msg::command_line(&cli.command) };
    let began = SystemTime::now();
    let start = Instant::now();
    let signals = Signals::block()?;

    // Nested under a synclock (or another holder) of this lock: COMMAND
    // runs at once; cleaning is not for a sync in progress.
    let inherited = lock::inherited(path, proc);
    let ancestor = inherited.is_none().then(|| lock::held_by_ancestor(path, proc)).flatten();
    if inherited.is_some() || ancestor.is_some() {
        let by = match (inherited, ancestor) {
            (Some(fd), _) => format!("inherited descriptor {fd}"),
            (None, pid) => format!("ancestor PID {}", pid.unwrap_or_default()),
        };
        if clean.is_some() {
            msg::info(format_args!(
                "{} is held by a sync that runs us ({by}); not cleaning under a sync in progress",
                path.display()
            ));
            return Ok(0);
        }
        msg::verbose(format_args!(
            "{} is already held for us ({by}); running {shown}",
            path.display()
        ));
        // SAFETY: `inherited` checked that `fd` is open and holds the lock;
        // nothing closes it while this run lives.
        let lock = inherited.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        let mut child =
            exec::spawn(&cli.command, lock, path, lock::FD_VAR, signals.original_mask())?;
        let status = exec::supervise(&mut child, &signals)?;
        report_death(&shown, status);
        return Ok(exit::code_of(status));
    }

    // The repositories: read before the lock, which reading needs not.
    let not_run = not_run(&shown);
    let plan =
        plan(cli, &|| signals.end_if_pending("reading the repository configuration", &not_run));
    let cleaning = || signals.end_if_pending("cleaning", &not_run);
    // Byte for byte: commands that differ in bytes not UTF-8 are two.
    let mut words: Vec<String> = cli.command.iter().map(|w| msg::decode(w.as_bytes())).collect();
    if clean.is_some() {
        words = vec!["synclock".into(), "clean".into()];
    }
    // What it syncs, for the history: repositories, else its command line.
    let synced = plan.as_ref().and_then(|plan| scan::synced_by(&words, plan.repos()));

    // The lock, with no sync outside it. Each round: take the lock; skip if
    // --coalesce or --min-interval say so; scan. If a sync runs outside the
    // lock, release it (holding it could wait for ourselves), wait for that
    // sync, and start again.
    let (held, acquired, past, interrupted) = loop {
        let held = match take_lock(cli, proc, &signals, &shown, start, plan.as_ref())? {
            Ok(held) => held,
            Err(code) => return Ok(code),
        };
        let past = history::read(path, held.owner).unwrap_or_else(|why| {
            msg::info(format_args!("{why}"));
            Vec::new()
        });
        if clean.is_none()
            && !cli.force
            && (cli.coalesce || cli.min_interval.is_some())
            && already_done(cli, &shown, &words, synced.as_deref(), &past, began)
        {
            return Ok(0);
        }
        // A holder record found under the lock is the mark of a run that
        // never finished; it stays until someone cleans after that run.
        let interrupted = record::read(path, held.owner);
        let outside = outside_syncs(cli, proc, plan.as_ref());
        if outside.is_empty() {
            break (held, SystemTime::now(), past, interrupted);
        }
        drop(held);
        if let Some(code) = wait_for_outside(cli, proc, &signals, start, &outside, &shown)? {
            if let (Some(_), Some(plan)) = (clean, &plan) {
                clean::run(plan, proc, interrupted.is_some(), clean::Mode::Leave, &cleaning);
            }
            return Ok(code);
        }
    };

    // The mark of a run in progress (a dry run changes nothing, this
    // included), then the leftovers of killed syncs.
    let record = (clean != Some(true)).then(|| RecordInPlace::put(path, proc, &words, acquired));
    let mode = match clean {
        Some(true) => clean::Mode::DryRun,
        Some(false) | None => clean::Mode::Remove,
    };
    let summary = match &plan {
        Some(plan) if !cli.no_clean || clean.is_some() => {
            clean::run(plan, proc, interrupted.is_some(), mode, &cleaning)
        }
        Some(_) | None => clean::Summary::default(),
    };
    if mode == clean::Mode::Remove && (!cli.no_clean || clean.is_some()) {
        say_interrupted(interrupted.as_ref(), &summary.recovered);
    }

    // A signal that came since the lock was had: stop before COMMAND.
    if let Some(signal) = signals.pending()? {
        match clean {
            Some(_) => msg::info(format_args!("interrupted by {signal} while cleaning")),
            None => msg::info(format_args!(
                "interrupted by {signal} before {shown} started; it was not run"
            )),
        }
        return Ok(exit::signal_code(signal as i32));
    }
    if clean.is_some() {
        if summary.items == 0 && summary.failures == 0 {
            msg::info(format_args!("nothing to clean"));
        }
        return Ok(if summary.failures > 0 { exit::FAILURE } else { 0 });
    }

    // COMMAND, supervised.
    let lock = Some(held.file.as_fd());
    let mut child = exec::spawn(&cli.command, lock, path, lock::FD_VAR, signals.original_mask())?;
    let status = exec::supervise(&mut child, &signals)?;
    report_death(&shown, status);

    // The history, then the record goes, then the lock.
    let run = history::Run {
        command: words,
        start: acquired,
        end: SystemTime::now(),
        code: exit::code_of(status),
        pid: getpid().as_raw(),
    };
    if let Err(err) = history::remember(path, past, run, synced.as_deref().unwrap_or_default()) {
        let history = history::path_for(path);
        msg::info(format_args!(
            "cannot write history {}: {err}; --coalesce and --min-interval know nothing until \
             it can be: remove it (rm -r {0})",
            history.display()
        ));
    }
    drop(record);
    drop(held);
    msg::verbose(format_args!(
        "released {} after {}",
        path.display(),
        msg::duration(start.elapsed())
    ));
    Ok(exit::code_of(status))
}

/// Syncs of the `plan`'s repositories that run outside synclock now (none
/// when `cli` says not to look).
fn outside_syncs(cli: &Cli, proc: &Proc, plan: Option<&clean::Plan>) -> Vec<Outside> {
    if cli.no_outside_check {
        return Vec::new();
    }
    let path = &cli.lockfile;
    scan::outside_syncs(
        proc,
        getpid().as_raw(),
        lock::look_up(path).ok().flatten().map(|(id, _)| id),
        || {
            let locations = plan.map(clean::Plan::locations).unwrap_or_default();
            let owners =
                locations.iter().filter_map(|l| std::fs::metadata(l).ok()).map(|m| m.uid());
            let uids = [0].into_iter().chain(repos::portage_uid()).chain(owners).collect();
            let names = plan.into_iter().flat_map(clean::Plan::repos).map(|r| r.name.clone());
            Ours { names: names.collect(), locations, uids }
        },
    )
}

/// The waiting policy that `--wait` and `--nonblock` add up to.
fn wait_of(cli: &Cli) -> Wait {
    match (cli.nonblock, cli.wait) {
        (true, _) => Wait::No,
        (false, Some(limit)) if limit.is_zero() => Wait::No,
        (false, Some(limit)) => Wait::Upto(limit),
        (false, None) => Wait::Forever,
    }
}

/// Takes the lock for `what` (for messages), within the `--wait` budget
/// that began at `start`; `Err(code)` when synclock must exit with `code`.
fn take_lock(
    cli: &Cli,
    proc: &Proc,
    signals: &Signals,
    what: &str,
    start: Instant,
    plan: Option<&clean::Plan>,
) -> Result<Result<Held, u8>, Error> {
    let path = &cli.lockfile;
    let wait = wait_of(cli);
    loop {
        let (file, owner) = lock::open_checked(path)?;
        match lock::acquire(file, path, wait, start, signals, || {
            report_holder(proc, path, wait, None, plan)
        })? {
            // Renamed or replaced while we waited: the lock that counts is
            // on the file the path names now.
            Outcome::Acquired(file, _) if !lock::still_at(path, &file) => {
                msg::verbose(format_args!(
                    "{} was replaced while we took it; taking it again",
                    path.display()
                ));
            }
            Outcome::Acquired(file, waited) => {
                let after = if waited.is_zero() {
                    "at once".into()
                } else {
                    format!("after waiting {}", msg::duration(waited))
                };
                msg::verbose(format_args!("acquired {} {after}", path.display()));
                return Ok(Ok(Held { file, owner }));
            }
            Outcome::Busy(waited) => {
                report_holder(proc, path, wait, Some(waited), plan);
                return Ok(Err(cli.conflict_exit_code));
            }
            Outcome::Interrupted(signal) => {
                msg::info(format_args!(
                    "interrupted by {signal} while waiting for {}; {what} was not run",
                    path.display()
                ));
                if signal == Signal::SIGINT {
                    exit::die_by(signal);
                }
                return Ok(Err(exit::signal_code(signal as i32)));
            }
        }
    }
}

/// The repositories to clean, from repos.conf and `--repo`; `None` when
/// repos.conf has an error (Portage then ignores all of it).
fn plan(cli: &Cli, interrupt: &dyn Fn()) -> Option<clean::Plan> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let extra = cli.repos.iter().map(|dir| {
        let location = cwd.join(dir);
        if !location.is_dir() {
            msg::info(format_args!(
                "--repo {}: no such directory; nothing is cleaned there",
                location.display()
            ));
        }
        Repo {
            name: location.display().to_string(),
            location,
            sync_type: None,
            sync_rcu: false,
            rcu_store_dir: None,
            auto_sync: false,
            main: false,
        }
    });
    match repos::discover(interrupt) {
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

/// Whether `--coalesce` or `--min-interval` make running `words` (shown as
/// `shown`) again pointless, going by the history `entries`: every
/// repository in `synced` (else the command line) succeeded while we waited
/// (since `began`), or less than the interval ago. Says so, naming the runs.
fn already_done(
    cli: &Cli,
    shown: &str,
    words: &[String],
    synced: Option<&[String]>,
    entries: &[history::Entry],
    began: SystemTime,
) -> bool {
    let Some(mut runs) = history::covering(entries, synced, words)
        .map(|found| found.into_iter().map(|entry| &entry.last).collect::<Vec<_>>())
        .filter(|runs| runs.iter().all(|run| run.succeeded()))
    else {
        return false;
    };
    let Some(oldest) = runs.iter().map(|run| run.end).min() else {
        return false;
    };
    runs.sort_by_key(|run| (run.start, run.pid));
    runs.dedup();
    let what = synced.map_or_else(|| format!("{shown} succeeded"), |r| r.join(", ") + " synced");
    let by: Vec<String> = runs
        .iter()
        .map(|run| {
            // A command line that is its own identity was said already.
            let command = synced
                .map_or_else(String::new, |_| format!(": {}", msg::command_line(&run.command)));
            format!(
                "PID {}{command}, finished at {}, took {}",
                run.pid,
                humantime::format_rfc3339_seconds(run.end),
                msg::duration(run.took())
            )
        })
        .collect();
    let by = by.join("; ");
    if cli.coalesce && oldest >= began {
        msg::info(format_args!("{what} while we waited (by {by}); {shown} not run again"));
        return true;
    }
    let Some(interval) = cli.min_interval else {
        return false;
    };
    let age = SystemTime::now().duration_since(oldest).unwrap_or_default();
    if age >= interval {
        return false;
    }
    msg::info(format_args!(
        "{what} {} ago (by {by}); next run allowed after {} (--min-interval {}); {shown} not \
         run (--force runs it anyway)",
        msg::seconds(age),
        humantime::format_rfc3339_seconds(oldest + interval),
        msg::duration(interval)
    ));
    true
}

/// Waits, within the `--wait` budget that began at `start`, for syncs
/// outside synclock; `Some(code)` when synclock must exit with it.
fn wait_for_outside(
    cli: &Cli,
    proc: &Proc,
    signals: &Signals,
    start: Instant,
    outside: &[Outside],
    what: &str,
) -> Result<Option<u8>, Error> {
    let who = name_outside(outside);
    let runs = if outside.len() == 1 { "runs" } else { "run" };
    let wait = wait_of(cli);
    let limit = match wait {
        Wait::No => {
            msg::info(format_args!(
                "{who} {runs} outside synclock; not waiting (--nonblock or --wait 0); {what} was \
                 not run"
            ));
            return Ok(Some(cli.conflict_exit_code));
        }
        Wait::Upto(limit) => Some(limit),
        Wait::Forever => None,
    };
    let upto =
        limit.map(|limit| format!("; waiting up to {}", msg::duration(limit))).unwrap_or_default();
    msg::info(format_args!(
        "waiting for {who}, which {runs} outside synclock, without holding the lock{upto}"
    ));
    let deadline = limit.map(|limit| start + limit);
    let mut live = Live::new(start, limit);
    let gone = scan::wait_gone(proc, outside, deadline, signals, &mut live)?;
    drop(live);
    match gone {
        Gone::All => Ok(None),
        Gone::TimedOut => {
            msg::info(format_args!(
                "gave up waiting after {}; {who} still {runs} outside synclock; {what} was not run",
                msg::duration(limit.unwrap_or_default())
            ));
            Ok(Some(cli.conflict_exit_code))
        }
        Gone::Interrupted(signal) => {
            msg::info(format_args!(
                "interrupted by {signal} while waiting for {who}; {what} was not run"
            ));
            if signal == Signal::SIGINT {
                exit::die_by(signal);
            }
            Ok(Some(exit::signal_code(signal as i32)))
        }
    }
}

/// Up to three syncs outside the lock in words (then "and N more"), each
/// with the other lockfile it holds, if any: a configuration mistake.
fn name_outside(outside: &[Outside]) -> String {
    let named: Vec<String> = outside
        .iter()
        .take(3)
        .map(|o| {
            let other = o.lockfile.as_ref().map_or_else(String::new, |lockfile| {
                format!(
                    ", under another lockfile {}: give it the same --lockfile",
                    lockfile.display()
                )
            });
            format!("PID {} ({}{other})", o.process.pid, msg::command_line(&o.process.command))
        })
        .collect();
    match (named.as_slice(), outside.len()) {
        ([one], 1) => one.clone(),
        ([first @ .., last], n) if n <= 3 => format!("{} and {last}", first.join(", ")),
        (all, n) => format!("{} and {} more", all.join(", "), n - 3),
    }
}

/// Says that the run whose record was left behind never finished, and
/// what was `recovered` for each repository.
fn say_interrupted(interrupted: Option<&record::Record>, recovered: &[String]) {
    if let Some(record) = interrupted {
        let done = if recovered.is_empty() {
            "no repository needed recovering".to_string()
        } else {
            recovered.join("; ")
        };
        msg::info(format_args!(
            "the previous run under this lock (PID {}: {}, started {}) did not finish; {done}",
            record.pid,
            msg::command_line(&record.command),
            humantime::format_rfc3339_seconds(record.since)
        ));
    }
}

/// Names a signal that killed the command (but INT and PIPE, which a user
/// expects).
fn report_death(shown: &str, status: std::process::ExitStatus) {
    if let Some(signal) = status.signal().and_then(|n| Signal::try_from(n).ok())
        && !matches!(signal, Signal::SIGINT | Signal::SIGPIPE)
    {
        let core = if status.core_dumped() { " (core dumped)" } else { "" };
        msg::info(format_args!("{shown} was killed by {signal}{core}"));
    }
}

/// What a signal that ends synclock before COMMAND leaves undone.
fn not_run(shown: &str) -> String {
    if shown == "cleaning" { "stopped there".into() } else { format!("{shown} was not run") }
}

/// Our holder record of the lockfile at this path, in place: removed when
/// dropped, which comes before the lock is released on every way out of a
/// run but a SIGKILL, which leaves it as the mark of an interrupted run.
struct RecordInPlace<'a>(&'a Path);

impl<'a> RecordInPlace<'a> {
    /// Writes the record of this process running `command` since `since`.
    fn put(path: &'a Path, proc: &Proc, command: &[String], since: SystemTime) -> Self {
        let pid = getpid().as_raw();
        let record = record::Record {
            pid,
            start_ticks: proc.stat(pid).map_or(0, |(_, ticks)| ticks),
            pid_namespace: proc.pid_namespace(),
            host: holder::local_host(),
            command: command.to_vec(),
            since,
        };
        if let Err(err) = record::write(path, &record) {
            msg::info(format_args!(
                "cannot write holder record {}: {err}; a run killed now would not be recovered \
                 by the next one: remove it (rm -r {0})",
                record::path_for(path).display()
            ));
        }
        RecordInPlace(path)
    }
}

impl Drop for RecordInPlace<'_> {
    fn drop(&mut self) {
        record::remove(self.0);
    }
}

/// The one line said when the lock is busy: before waiting (`waited` is
/// `None`; on a terminal the live line follows), or when giving up. Returns
/// when the lock should be free, if the history of the holder's sync (its
/// repositories among the `plan`'s) tells.
fn report_holder(
    proc: &Proc,
    path: &Path,
    wait: Wait,
    waited: Option<Duration>,
    plan: Option<&clean::Plan>,
) -> Option<Instant> {
    if !msg::enabled(msg::Level::Normal) {
        return None;
    }
    let holder = holder::inspect(proc, path).ok().and_then(|inspection| inspection.holder);
    let typical = holder.as_ref().and_then(|holder| {
        let (_, owner) = lock::look_up(path).ok().flatten()?;
        let repos = plan.into_iter().flat_map(clean::Plan::repos);
        holder::typical(holder, &history::read(path, owner).unwrap_or_default(), repos)
    });
    let free_at = holder
        .as_ref()
        .zip(typical)
        .and_then(|(holder, typical)| holder::free_in(holder, typical))
        .map(|left| Instant::now() + left);
    let mut holder =
        holder.as_ref().map_or_else(|| "another process".to_string(), holder::describe);
    if let Some(typical) = typical {
        holder.push_str(&format!("; {typical}"));
    }
    let shown = path.display();
    match (wait, waited) {
        (Wait::No, _) => msg::info(format_args!(
            "{shown} is held by {holder}; not waiting (--nonblock or --wait 0)"
        )),
        (Wait::Upto(limit), None) => msg::info(format_args!(
            "{shown} is held by {holder}; waiting up to {}",
            msg::duration(limit)
        )),
        (Wait::Forever, None) => msg::info(format_args!("{shown} is held by {holder}; waiting")),
        (Wait::Upto(limit), Some(waited)) => msg::info(format_args!(
            "gave up after {}; {shown} is still held by {holder}",
            msg::duration(limit.max(Duration::from_secs(waited.as_secs())))
        )),
        (Wait::Forever, Some(_)) => msg::info(format_args!("{shown} is still held by {holder}")),
    }
    free_at
}
