//! Syncs that run outside synclock, and waiting for them to end.
//!
//! The scan lists /proc and judges each process (see `verdict.rs`), passing
//! over synclock, its ancestors, and whoever holds or waits for the same
//! lock with their ancestors. A process costs one readlink of its
//! executable; only interpreters and sync tools have their command line
//! read. Waiting uses pidfds and poll(2).

mod verdict;

use std::collections::HashSet;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::libc;
use nix::sys::signal::Signal;

use crate::error::Error;
use crate::msg::Live;
use crate::proc::{self, FileId, Proc, Process};
use crate::repos::Repo;
use crate::signals::{Event, Signals};
use verdict::{Scope, Verdict, could_be_sync, judge};

/// What makes a sync one of ours: the repositories we sync.
#[derive(Debug, Default)]
pub struct Ours {
    /// Their names, as repos.conf gives them.
    pub names: Vec<String>,
    /// Their locations, as written and as resolved: where rsync and git
    /// count.
    pub locations: Vec<PathBuf>,
    /// The users who could write them: root, `portage`, their owners.
    pub uids: Vec<u32>,
}

/// A sync running outside synclock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outside {
    /// The process.
    pub process: Process,
    /// The lockfile of another lock it holds (a synclock with another
    /// `--lockfile`, a configuration mistake), if any.
    pub lockfile: Option<PathBuf>,
}

/// The names of the repositories among `repos` that `command` syncs,
/// sorted, when it is a front end [`verdict`] knows: `None` for any other
/// command, one whose repositories the command line does not tell, or one
/// naming a repository that `repos` lacks.
pub fn synced_by<'r>(
    command: &[String],
    repos: impl IntoIterator<Item = &'r Repo>,
) -> Option<Vec<String>> {
    let repos: Vec<&Repo> = repos.into_iter().collect();
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    let those = |keep: &dyn Fn(&Repo) -> bool| {
        repos.iter().filter(|repo| keep(repo)).map(|repo| repo.name.clone()).collect()
    };
    let mut names: Vec<String> = match judge(&words) {
        Verdict::Sync(Scope::Auto) => those(&|r| r.auto_sync && r.sync_type.is_some()),
        Verdict::Sync(Scope::All) => those(&|r| r.sync_type.is_some()),
        Verdict::Sync(Scope::Main) => those(&|r| r.main),
        Verdict::Repos(named) if named.iter().all(|n| repos.iter().any(|r| r.name == *n)) => {
            named.iter().map(|name| name.to_string()).collect()
        }
        _ => return None,
    };
    names.sort();
    names.dedup();
    (!names.is_empty()).then_some(names)
}

/// Sync processes running outside synclock, as `proc` shows them, for the
/// synclock `me` holding the lock on the file `lock`, that could write one
/// of `ours` (asked for once, when a first sync is seen).
pub fn outside_syncs(
    proc: &Proc,
    me: i32,
    lock: Option<FileId>,
    ours: impl Fn() -> Ours,
) -> Vec<Outside> {
    let lineage: HashSet<i32> = proc.lineage(me).into_iter().collect();
    let mut ours_once: Option<Ours> = None;
    let mut found: Vec<i32> = Vec::new();
    for pid in proc.pids() {
        if lineage.contains(&pid) {
            continue;
        }
        match proc.executable_name(pid) {
            // Kernel threads, zombies and processes gone meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Ok(name) if !could_be_sync(&name) => continue,
            // Unreadable (another user's, when not root): judged by its
            // command line, which anyone may read.
            Ok(_) | Err(_) => {}
        }
        let Some(raw) = proc.cmdline(pid) else {
            continue;
        };
        let words: Vec<&str> = proc::words(&raw).collect();
        let verdict = judge(&words);
        if verdict == Verdict::NotSync {
            continue;
        }
        let ours: &Ours = ours_once.get_or_insert_with(&ours);
        let may_write = proc.uids(pid).is_some_and(|(real, effective)| {
            ours.uids.contains(&real) || ours.uids.contains(&effective)
        });
        let sync = may_write
            && match verdict {
                Verdict::NotSync => false,
                Verdict::Sync(_) => true,
                Verdict::Repos(names) => {
                    names.iter().any(|name| ours.names.iter().any(|n| n == name))
                }
                Verdict::Tool(i) => works_under(proc, pid, &words[i + 1..], &ours.locations),
            };
        if sync {
            found.push(pid);
        }
    }
    if found.is_empty() {
        return Vec::new();
    }
    let queued = lock.map(|id| queued_for(proc, id)).unwrap_or_default();
    found
        .into_iter()
        .filter(|pid| !queued.contains(pid))
        .filter_map(|pid| {
            let lockfile = proc.locked_files(pid).into_iter().find(|f| f.is_absolute());
            Some(Outside { process: proc.process(pid)?, lockfile })
        })
        .collect()
}

/// The processes that take part in the lock on `id`: those /proc/locks
/// shows holding or waiting for it, and all their ancestors.
fn queued_for(proc: &Proc, id: FileId) -> HashSet<i32> {
    let entries = proc.lock_entries(id).unwrap_or_default();
    entries.holder.into_iter().chain(entries.waiters).flat_map(|pid| proc.lineage(pid)).collect()
}

/// Whether `pid` (rsync or git with `args`) works under one of `locations`:
/// its working directory, or an absolute path among its arguments.
fn works_under(proc: &Proc, pid: i32, args: &[&str], locations: &[PathBuf]) -> bool {
    let under = |path: &Path| locations.iter().any(|location| path.starts_with(location));
    proc.cwd(pid).as_deref().is_some_and(under)
        || args.iter().filter(|a| a.starts_with('/')).any(|a| under(Path::new(a)))
}

/// How waiting for outside syncs ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    /// All of them exited.
    All,
    /// Some still run at the deadline.
    TimedOut,
    /// A signal ended the wait.
    Interrupted(Signal),
}

/// Waits until every process in `syncs` has exited, until `deadline`, or
/// until a signal arrives, redrawing `live` meanwhile.
pub fn wait_gone(
    proc: &Proc,
    syncs: &[Outside],
    deadline: Option<Instant>,
    signals: &Signals,
    live: &mut Live,
) -> Result<Gone, Error> {
    let mut pidfds: Vec<OwnedFd> =
        syncs.iter().filter_map(|s| pidfd_of(proc, &s.process)).collect();
    while !pidfds.is_empty() {
        let fds: Vec<_> = pidfds.iter().map(|fd| fd.as_fd()).collect();
        match signals.wait(&fds, deadline, live)? {
            Event::Ready(ready) => {
                let mut index = 0;
                pidfds.retain(|_| {
                    index += 1;
                    !ready.contains(&(index - 1))
                });
            }
            Event::TimedOut => return Ok(Gone::TimedOut),
            Event::Signal(Signal::SIGCHLD) => {}
            Event::Signal(signal) => return Ok(Gone::Interrupted(signal)),
        }
    }
    Ok(Gone::All)
}

/// A pidfd for `process`, unless it has already exited (or its PID now
/// names another process: checked after opening, by its start time).
fn pidfd_of(proc: &Proc, process: &Process) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor
    // or -1; no memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let same = proc.stat(process.pid).is_some_and(|(_, ticks)| ticks == process.start_ticks);
    same.then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A fake /proc of processes `(pid, parent, exe, argv, cwd)`, run by
    /// root but PIDs from 1000 on, run by uid 1000; no exe for a kernel
    /// thread.
    fn fake(processes: &[(i32, i32, &str, &str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for &(pid, parent, exe, argv, cwd) in processes {
            let dir = root.path().join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            let stat = format!("{pid} (x) S {parent} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {pid}0 0");
            fs::write(dir.join("stat"), stat).unwrap();
            fs::write(dir.join("cmdline"), argv.replace(' ', "\0") + "\0").unwrap();
            let uid = if pid >= 1000 { 1000 } else { 0 };
            fs::write(dir.join("status"), format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"))
                .unwrap();
            if !exe.is_empty() {
                symlink(exe, dir.join("exe")).unwrap();
            }
            symlink(cwd, dir.join("cwd")).unwrap();
        }
        root
    }

    fn pids(found: Vec<Outside>) -> Vec<i32> {
        found.iter().map(|o| o.process.pid).collect()
    }

    #[test]
    fn the_scan_finds_outside_syncs_and_nothing_else() {
        let repo = "/var/db/repos/gentoo";
        let root = fake(&[
            (1, 0, "/sbin/init", "/sbin/init", "/"),
            (2, 0, "", "", "/"),
            // Us (100), and an ancestor that is a sync (unwrapped eix-sync).
            (50, 1, "/bin/bash", "sh /usr/bin/eix-sync", "/"),
            (100, 50, "/usr/bin/synclock", "synclock -- emerge --sync", "/"),
            // Outside syncs.
            (200, 1, "/usr/bin/python3.12", "python3 /usr/bin/emerge --sync", "/root"),
            (201, 1, "/usr/bin/python3.12", "/usr/bin/emaint sync -a", "/"),
            (204, 1, "/usr/bin/rsync", "rsync -a rsync://m/g /var/db/repos/gentoo", "/"),
            (206, 1, "/usr/bin/git", "git pull", "/var/db/repos/gentoo/x"),
            // Not syncs: a retitled program, a tool elsewhere.
            (202, 1, "/bin/sleep", "emerge --sync", "/"),
            (205, 1, "/usr/bin/rsync", "rsync /home/a /home/b", "/"),
            // A waiter for our lock (301), whose unwrapped parent syncs.
            (302, 1, "/bin/sh", "sh /usr/bin/eix-sync", "/"),
            (301, 302, "/usr/bin/synclock", "synclock -- emerge --sync", "/"),
            // Front ends naming repositories: ours, and another's.
            (400, 1, "/usr/bin/python3.12", "/usr/bin/emaint sync -r gentoo", "/"),
            (402, 1, "/usr/bin/python3.12", "/usr/bin/emerge --sync other guru", "/"),
            // Another user's sync cannot write our repositories.
            (1001, 1, "/bin/sh", "sh /home/u/eix-sync", "/"),
        ]);
        fs::write(
            root.path().join("locks"),
            "1: FLOCK  ADVISORY  WRITE 100 00:2a:5678 0 EOF\n\
             1: -> FLOCK  ADVISORY  WRITE 301 00:2a:5678 0 EOF\n",
        )
        .unwrap();
        let id = FileId { dev: nix::sys::stat::makedev(0, 0x2a), ino: 5678 };
        let proc = Proc::at(root.path());
        let asked = std::cell::Cell::new(0);
        let ours = || {
            asked.set(asked.get() + 1);
            Ours {
                names: vec!["gentoo".into(), "guru".into()],
                locations: vec![PathBuf::from(repo)],
                uids: vec![0],
            }
        };
        let found = outside_syncs(&proc, 100, Some(id), ours);
        assert_eq!(pids(found), [200, 201, 204, 206, 400, 402]);
        assert_eq!(asked.get(), 1, "what is ours is asked for once");
        // Without the lock's queue, the waiter's parent counts; the user's
        // sync counts when the user owns a repository.
        let ours = || Ours { uids: vec![0, 1000], ..Ours::default() };
        assert_eq!(pids(outside_syncs(&proc, 100, None, ours)), [200, 201, 302, 1001]);
    }

    #[test]
    fn low_pids_are_scanned_like_any_other() {
        // A container's own PID namespace: its sync may be PID 2.
        let root = fake(&[
            (1, 0, "/bin/sh", "sh", "/"),
            (2, 1, "/bin/sh", "sh /usr/bin/emerge-webrsync", "/"),
            (3, 1, "/usr/bin/synclock", "synclock -- true", "/"),
        ]);
        let ours = || Ours { uids: vec![0], ..Ours::default() };
        let found = outside_syncs(&Proc::at(root.path()), 3, None, ours);
        assert_eq!(found[0].process.command, ["sh", "/usr/bin/emerge-webrsync"]);
        assert_eq!(pids(found), [2]);
    }
}
