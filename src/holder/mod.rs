//! Who holds the lock and who waits for it, and `synclock status`
//! (`status.rs`) which prints it. The kernel first: `/proc/locks` names the
//! process that took the lock, `/proc/*/fdinfo` the ones that hold it now
//! (a dead or reused PID is never named). The holder record (`record.rs`)
//! adds what /proc lacks, only while held and only when it fits.

pub mod record;
pub mod status;

use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;

use crate::error::Error;
use crate::history::{self, Entry, Typical};
use crate::lock;
use crate::msg;
use crate::proc::{FileId, Proc, Process};
use crate::repos::Repo;
use crate::scan;
use record::Record;

/// The holder of a held lock.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Its PID as this process sees it, when visible.
    pub pid: Option<i32>,
    /// What it runs under the lock (for synclock, the wrapped command).
    pub command: Vec<String>,
    /// The PID of the wrapped command, when synclock is the holder.
    pub command_pid: Option<i32>,
    /// Its host.
    pub host: Option<String>,
    /// When the hold began (the record's time, else the process start).
    pub since: Option<SystemTime>,
    /// The process that took the lock when it is gone and `pid` inherited it.
    pub acquired_by: Option<i32>,
    /// Its PID inside its own PID namespace, when that differs from ours.
    pub namespace_pid: Option<i32>,
    /// Where these facts come from: `"kernel"` (/proc shows the holder),
    /// `"record"` (only the holder record: another PID namespace or host),
    /// `"unknown"` (held, but nothing says by whom).
    pub source: &'static str,
}

/// Everything known about the lock's state.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Whether the lock is held.
    pub held: bool,
    /// The holder, when held.
    pub holder: Option<Holder>,
    /// Processes blocked waiting for it.
    pub waiters: Vec<Process>,
}

/// The state of the lock at `lockfile`, as `proc` shows it; a missing
/// lockfile is a free lock.
pub fn inspect(proc: &Proc, lockfile: &Path) -> Result<Inspection, Error> {
    let Some((id, owner)) = lock::look_up(lockfile)? else {
        return Ok(Inspection { held: false, holder: None, waiters: Vec::new() });
    };
    let mut entries = proc.lock_entries(id).unwrap_or_default();
    // /proc/locks filters out a holder in another PID namespace: then a
    // probe tells whether the lock is held.
    let held = match (entries.holder, lock::is_busy(lockfile)) {
        (Some(_), _) | (None, Some(true)) => true,
        (None, Some(false)) => false,
        // Not ours to open: a record says someone may hold it where we
        // cannot see; without one, nothing here holds it.
        (None, None) if record::read(lockfile, owner).is_some() => {
            return Err(Error::Os {
                action: "cannot tell whether this lock is held",
                path: lockfile.to_path_buf(),
                errno: Errno::EACCES,
                hint: "no holder is visible from here and only the lockfile's owner may open it \
                       to probe; run as root",
            });
        }
        (None, None) => false,
    };
    if held && entries.holder.is_none() {
        // Taken between the two looks, or hidden from this PID namespace:
        // a second look tells them apart.
        entries = proc.lock_entries(id).unwrap_or_default();
    }
    let waiters = entries.waiters.iter().filter_map(|pid| proc.process(*pid)).collect();
    let holder = held.then(|| {
        let record = record::read(lockfile, owner);
        match entries.holder {
            Some(lock_pid) => from_kernel(proc, id, lock_pid, record),
            None => from_record(proc, record),
        }
    });
    Ok(Inspection { held, holder, waiters })
}

/// The holder as /proc shows it, completed by a record that fits it.
fn from_kernel(proc: &Proc, id: FileId, lock_pid: i32, record: Option<Record>) -> Holder {
    let process = proc.process(lock_pid);
    let our_namespace = proc.pid_namespace();
    // Never name a process the kernel does not show holding the lock: when
    // its descriptors are not ours to read, only its own record vouches.
    let holds = proc.holds(lock_pid, id);
    let vouched =
        |p: &Process| record.as_ref().is_some_and(|r| fits(proc, r, p, None, our_namespace));
    let (process, acquired_by) = match (process, holds) {
        (Some(process), Some(true)) => (Some(process), None),
        (Some(process), None) if vouched(&process) => (Some(process), None),
        (Some(_), None) => (None, None),
        _ => {
            let pids = proc.holders(id);
            let top = pids
                .iter()
                .copied()
                .find(|pid| proc.stat(*pid).and_then(|s| s.0).is_none_or(|up| !pids.contains(&up)));
            (top.and_then(|pid| proc.process(pid)), Some(lock_pid))
        }
    };
    let Some(process) = process else {
        return Holder { acquired_by, ..from_record(proc, None) };
    };
    let fitting = record.filter(|r| fits(proc, r, &process, acquired_by, our_namespace));
    let same_namespace = |r: &Record| r.pid_namespace == our_namespace;
    Holder {
        pid: Some(process.pid),
        command: fitting
            .as_ref()
            .map_or_else(|| running_command(proc, &process), |r| r.command.clone()),
        // synclock itself holds: the command is its child.
        command_pid: fitting
            .as_ref()
            .filter(|r| same_namespace(r) && r.pid == process.pid)
            .and_then(|_| proc.children(process.pid).first().copied()),
        host: Some(fitting.as_ref().map_or_else(local_host, |r| r.host.clone())),
        since: fitting.as_ref().map(|r| r.since).or(process.started),
        acquired_by,
        namespace_pid: fitting.as_ref().filter(|r| !same_namespace(r)).map(|r| r.pid),
        source: "kernel",
    }
}

/// Whether `record` was written by the holder /proc shows (or by the
/// synclock it inherited the lock from), rather than left by an earlier one.
fn fits(
    proc: &Proc,
    record: &Record,
    process: &Process,
    acquired_by: Option<i32>,
    ns: Option<u64>,
) -> bool {
    let same_start = process.start_ticks == record.start_ticks;
    if record.pid_namespace == ns {
        (record.pid == process.pid && same_start) || acquired_by == Some(record.pid)
    } else {
        // Another PID namespace: the holder must be that namespace's
        // process with the record's PID there, started at the same tick.
        let there = record.pid_namespace.map(|ns| (ns, record.pid));
        same_start && there.is_some() && proc.namespace_pid(process.pid) == there
    }
}

/// The holder known only from its record (or not at all).
fn from_record(proc: &Proc, record: Option<Record>) -> Holder {
    let source = if record.is_some() { "record" } else { "unknown" };
    // A record from our own PID namespace names a PID we could see; one
    // from another namespace names a PID that means nothing here.
    let ours = record.as_ref().is_some_and(|r| r.pid_namespace == proc.pid_namespace());
    let pid = record.as_ref().map(|r| r.pid);
    Holder {
        pid: pid.filter(|_| ours),
        command: record.as_ref().map(|r| r.command.clone()).unwrap_or_default(),
        command_pid: None,
        host: record.as_ref().map(|r| r.host.clone()),
        since: record.as_ref().map(|r| r.since),
        acquired_by: None,
        namespace_pid: pid.filter(|_| !ours),
        source,
    }
}

/// What a holder process runs: for a synclock without a record, its child.
fn running_command(proc: &Proc, process: &Process) -> Vec<String> {
    let is_synclock = process
        .command
        .first()
        .is_some_and(|argv0| Path::new(argv0).file_name().is_some_and(|n| n == "synclock"));
    let child = is_synclock
        .then(|| proc.children(process.pid).first().and_then(|c| proc.process(*c)))
        .flatten();
    child.map_or_else(|| process.command.clone(), |child| child.command)
}

/// This machine's host name.
pub fn local_host() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The holder in words, e.g. `PID 4242 (emerge --sync) for 3m 12s`.
pub fn describe(holder: &Holder) -> String {
    let command = if holder.command.is_empty() {
        String::new()
    } else {
        format!(" ({})", msg::command_line(&holder.command))
    };
    let mut text = match (holder.pid, holder.namespace_pid, holder.acquired_by) {
        (Some(pid), Some(inner), _) => {
            format!("PID {pid}{command}, PID {inner} in its own PID namespace")
        }
        (Some(pid), None, Some(gone)) => {
            format!("PID {pid}{command}, inherited from PID {gone} which is gone")
        }
        (Some(pid), None, None) => format!("PID {pid}{command}"),
        (None, Some(inner), _) => format!("PID {inner}{command} in another PID namespace"),
        (None, None, Some(gone)) => {
            format!("a process that inherited it from PID {gone} (gone); run as root to see which")
        }
        (None, None, None) => "a process not visible from here (run as root to see it)".to_string(),
    };
    if let Some(host) = holder.host.as_ref().filter(|h| **h != local_host()) {
        text.push_str(&format!(" on host {host}"));
    }
    if let Some(age) = holder.since.and_then(|since| SystemTime::now().duration_since(since).ok()) {
        text.push_str(&format!(" for {}", msg::seconds(age)));
    }
    text
}

/// How long the holder's sync usually takes, going by the history
/// `entries`: that of its repositories among `repos`, else of its command.
pub fn typical<'r>(
    holder: &Holder,
    entries: &[Entry],
    repos: impl IntoIterator<Item = &'r Repo>,
) -> Option<Typical> {
    let synced = scan::synced_by(&holder.command, repos);
    history::typical(entries, synced.as_deref(), &holder.command)
}

/// How long until the lock should be free, going by `typical`: zero when
/// the holder has taken longer already; `None` when its start is unknown.
pub fn free_in(holder: &Holder, typical: Typical) -> Option<Duration> {
    let age = SystemTime::now().duration_since(holder.since?).unwrap_or_default();
    Some(typical.took.saturating_sub(age))
}
