//! Syncs that run outside synclock, and waiting for them to end.
//!
//! The lock only orders syncs that take it. Before cleaning, /proc is
//! scanned for sync processes that did not: `emerge --sync`, `emaint sync`,
//! `pmaint sync`, `emerge-webrsync`, `emerge-delta-webrsync`, `eix-sync`, and
//! `rsync`/`git` working under a repository location. synclock's own
//! processes and its ancestors (an unwrapped `eix-sync` calling a wrapped
//! `emerge --sync`) are not counted, nor are the ancestors of whoever else
//! waits for the same lock (another such eix-sync). Waiting for them uses
//! pidfds and poll(2): the kernel wakes us when they exit.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use crate::error::Error;
use crate::kthreads;
use crate::lineage;
use crate::lockfile;
use crate::notes;
use crate::plain;
use crate::procfs::{self, Process};
use crate::signals::Signals;
use crate::waiters;

/// Programs that are a sync whatever their arguments.
const SYNC_PROGRAMS: [&str; 3] = ["emerge-webrsync", "emerge-delta-webrsync", "eix-sync"];

/// Sync processes running outside synclock. `locations` gives the
/// repositories (as written and resolved) under which rsync and git count,
/// asked only when such a process is found (resolving costs system calls,
/// and most scans meet none); `lockfile` is the lock we hold, open on
/// `lock`.
///
/// A sync whose descendant holds or waits for that lock is not outside it:
/// an unwrapped `eix-sync` whose wrapped `emerge --sync` queues behind us
/// syncs under the lock once we are done, and waiting for it would be
/// waiting for ourselves (two such eix-syncs would hold each other up for
/// the whole `--wait`). Like our own ancestors, such syncs are not counted.
///
/// Looking at every process is the cost of this safety check, so it is
/// kept small: kernel threads are skipped without a system call (noted in
/// the lockfile by an earlier holder, see `kthreads.rs`), and so are our
/// parent, our `lineage` (our ancestors as noted while we waited), and the
/// waiters that wrote themselves into the lockfile with their parents (see
/// `waiters.rs`), each checked against the listing of /proc. Every other
/// process costs one readlink of its executable, and only interpreters and
/// sync tools have their command line read (into one buffer, split into
/// words borrowed from it), but for shells a waiter noted as plain (see
/// `plain.rs`), whose stat is read instead; only matches are read further.
pub fn find(
    locations: impl Fn() -> Vec<PathBuf>,
    lockfile: &Path,
    lock: BorrowedFd<'_>,
    lineage: &[procfs::Listed],
) -> Vec<Process> {
    let me = std::process::id() as i32;
    let Ok(proc_dir) = procfs::ProcDir::open() else {
        return Vec::new();
    };
    // One buffer for every read: each fresh page of stack costs a fault.
    let mut buf = [0u8; notes::SIZE];
    // Those queued for the lock wrote themselves into the lockfile, and
    // earlier synclocks noted the kernel threads and plain shells there.
    let pages = notes::read(lock, &mut buf);
    let waiters = waiters::from_slots(pages.slots);
    let noted = kthreads::from_page(pages.kernel);
    // Most of /proc is kernel threads on many machines; they are skipped
    // without opening anything, most of them without even being listed.
    let listed = proc_dir.list_above(noted.as_ref().map_or(1, |n| n.floor), &mut buf);
    let asked;
    let kernel = match &noted {
        Some(noted) => &noted.threads,
        None => {
            asked = kthreads::from_kernel(&proc_dir, &listed, &mut buf);
            &asked
        }
    };
    let mut taking_part = waiters::participants(&listed, &waiters);
    lineage::mark(&mut taking_part, &listed, lineage);
    // Our parent is one of our ancestors, which never count, whatever
    // they run.
    let parent = nix::unistd::getppid().as_raw();
    let mut candidates = Vec::new();
    // Processes without an executable (kernel threads, zombies) that are
    // not among the noted kernel threads.
    let mut unnoted = 0;
    for (&process, taking_part) in listed.iter().zip(taking_part) {
        let pid = process.pid;
        if taking_part || pid == me || pid == parent || kthreads::contains(kernel, process) {
            continue;
        }
        // The executable's name is cheaper to read than the command line
        // and does not wait for the process's memory map: a program that
        // is neither an interpreter nor a sync tool cannot be a sync.
        match proc_dir.executable_name(pid, &mut buf) {
            Err(Errno::ENOENT | Errno::ESRCH) => {
                unnoted += 1;
                continue;
            }
            Ok(name) if !std::str::from_utf8(name).is_ok_and(could_be_sync) => continue,
            Ok(_) | Err(_) => {}
        }
        // A shell forked without exec whose command line a waiting
        // synclock (its child) read: stat tells it is still that image,
        // without waiting for its memory map as reading the command line
        // does (the shell is often forking its next command right now).
        if plain::is_noted(lock, process) && proc_dir.forked_without_exec(pid, &mut buf) {
            continue;
        }
        let Some(len) = proc_dir.read_cmdline(pid, &mut buf) else {
            continue;
        };
        if is_sync(pid, &words(&buf[..len]), &locations) {
            candidates.push(pid);
        }
    }
    match noted {
        None => kthreads::note(lock, kernel, kthreads::floor(&listed, kernel)),
        Some(noted) if unnoted >= kthreads::STALE => {
            let threads = kthreads::from_kernel(&proc_dir, &listed, &mut buf);
            kthreads::note(lock, &threads, noted.floor);
        }
        Some(_) => {}
    }
    if candidates.is_empty() {
        return Vec::new();
    }
    let under_lock = queued_for(lockfile, me);
    let mut found: Vec<Process> = candidates
        .into_iter()
        .filter(|pid| !under_lock.contains(pid))
        .filter_map(procfs::process)
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// The processes that take part in the lock on `lockfile`: `me`, those
/// /proc/locks shows holding or waiting for it, and all their ancestors.
fn queued_for(lockfile: &Path, me: i32) -> HashSet<i32> {
    let entries = lockfile::look_up(lockfile)
        .ok()
        .flatten()
        .and_then(|(id, _)| procfs::lock_entries(id))
        .unwrap_or_default();
    let mut pids = HashSet::new();
    for pid in [me]
        .into_iter()
        .chain(entries.holder)
        .chain(entries.waiters)
    {
        // Up to the first process already in the set: its ancestors are
        // too (waiters share most of theirs).
        let mut next = Some(pid);
        while let Some(pid) = next.filter(|pid| pids.insert(*pid)) {
            next = procfs::parent_of(pid);
        }
    }
    pids
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Whether process `pid` running `words` is a sync, judged by its command
/// line (and, for rsync and git, by its arguments and working directory).
fn is_sync(pid: i32, words: &[&str], locations: &dyn Fn() -> Vec<PathBuf>) -> bool {
    match judge(words) {
        Verdict::Sync => true,
        Verdict::NotSync => false,
        Verdict::Tool(i) => works_under(pid, &words[i + 1..], &locations()),
    }
}

/// What a command line alone says of a process.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A sync.
    Sync,
    /// Not a sync, whatever else is true of the process.
    NotSync,
    /// rsync or git, as word `i`: a sync when working under a repository.
    Tool(usize),
}

/// Judges a process by its command line `words` alone.
fn judge(words: &[&str]) -> Verdict {
    if words
        .first()
        .is_none_or(|argv0| basename(argv0) == "synclock")
    {
        return Verdict::NotSync;
    }
    let followed_by = |i: usize, arg: &str| words[i + 1..].contains(&arg);
    // The program is argv[0], or the script an interpreter runs.
    let interpreted = is_interpreter(basename(words[0]));
    let candidates = if interpreted { 3 } else { 1 };
    for (i, word) in words.iter().enumerate().take(candidates) {
        match program(basename(word)) {
            Some(Program::Emerge) if followed_by(i, "--sync") => return Verdict::Sync,
            Some(Program::Maint) if followed_by(i, "sync") => return Verdict::Sync,
            Some(Program::Sync) => return Verdict::Sync,
            Some(Program::Tool) => return Verdict::Tool(i),
            _ => {}
        }
    }
    Verdict::NotSync
}

/// The words of a command line as read from /proc (NUL-separated), those
/// that are UTF-8 and not empty.
fn words(cmdline: &[u8]) -> Vec<&str> {
    cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .filter_map(|w| std::str::from_utf8(w).ok())
        .collect()
}

/// Whether the command line of `pid`, read now into `buf`, shows a process
/// that is no sync whatever it does (see `plain.rs`). A command line that
/// fills `buf` may go on past it, and is not judged.
pub fn never_a_sync(proc_dir: &procfs::ProcDir, pid: i32, buf: &mut [u8]) -> bool {
    proc_dir
        .read_cmdline(pid, buf)
        .is_some_and(|len| len < buf.len() && judge(&words(&buf[..len])) == Verdict::NotSync)
}

/// The programs [`is_sync`] knows by name.
enum Program {
    /// `emerge`: a sync with `--sync`.
    Emerge,
    /// `emaint` or `pmaint`: a sync with the `sync` command.
    Maint,
    /// A sync whatever its arguments.
    Sync,
    /// rsync or git: a sync when working under a repository.
    Tool,
}

/// What `name` is to [`is_sync`], if it knows it.
fn program(name: &str) -> Option<Program> {
    match name {
        "emerge" => Some(Program::Emerge),
        "emaint" | "pmaint" => Some(Program::Maint),
        "rsync" | "git" => Some(Program::Tool),
        name if SYNC_PROGRAMS.contains(&name) => Some(Program::Sync),
        _ => None,
    }
}

/// Interpreters that may run a sync script; `python*` includes Gentoo's
/// python-exec wrapper.
fn is_interpreter(name: &str) -> bool {
    name.starts_with("python")
        || name.starts_with("pypy")
        || ["bash", "sh", "dash", "ash", "busybox", "zsh", "ksh", "mksh"].contains(&name)
}

/// Whether a process running the executable `name` may be a sync: an
/// interpreter, or a program [`is_sync`] looks for.
fn could_be_sync(name: &str) -> bool {
    is_interpreter(name) || program(name).is_some()
}

fn works_under(pid: i32, args: &[&str], locations: &[PathBuf]) -> bool {
    let under = |path: &Path| locations.iter().any(|location| path.starts_with(location));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    cwd.as_deref().is_some_and(under)
        || args
            .iter()
            .filter(|a| a.starts_with('/'))
            .any(|a| under(Path::new(a)))
}

/// How waiting for outside syncs ended.
pub enum Gone {
    /// All of them exited.
    All,
    /// Some still run at the deadline.
    TimedOut,
    /// A signal ended the wait.
    Interrupted(Signal),
}

/// Waits until every process in `syncers` has exited, until `deadline`, or
/// until a signal arrives.
pub fn wait_gone(
    syncers: &[Process],
    deadline: Option<Instant>,
    signals: &Signals,
) -> Result<Gone, Error> {
    let mut pidfds: Vec<OwnedFd> = syncers.iter().filter_map(pidfd_of).collect();
    while !pidfds.is_empty() {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(Gone::TimedOut);
        }
        let mut fds: Vec<PollFd<'_>> = std::iter::once(signals.fd())
            .chain(pidfds.iter().map(|fd| fd.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        poll_until(&mut fds, deadline)?;
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            return Ok(Gone::Interrupted(signals.next()?));
        }
        let mut index = 0;
        pidfds.retain(|_| {
            index += 1;
            !ready[index]
        });
    }
    Ok(Gone::All)
}

/// Sleeps in poll(2) until one of `fds` is ready, `wake_at` passes, or a
/// signal interrupts; the kernel does the waiting.
fn poll_until(fds: &mut [PollFd<'_>], wake_at: Option<Instant>) -> Result<(), Error> {
    let timeout = match wake_at {
        None => PollTimeout::NONE,
        Some(wake_at) => {
            // Round up so we never wake a hair early and spin.
            let left = wake_at.saturating_duration_since(Instant::now());
            PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(errno) => Err(Error::System {
            action: "cannot poll",
            errno,
        }),
    }
}

/// A pidfd for `process`, unless it has already exited (or its PID now
/// names another process).
fn pidfd_of(process: &Process) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor
    // or -1; no memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let same = procfs::process(process.pid).is_some_and(|now| now.started == process.started);
    same.then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_sync_command_lines() {
        let repos = [PathBuf::from("/var/db/repos/gentoo")];
        let sync = |words: &[&str]| is_sync(-1, words, &|| repos.to_vec());
        assert!(sync(&["emerge", "--sync"]));
        assert!(sync(&[
            "/usr/bin/python3.12",
            "/usr/lib/python-exec/python3.12/emerge",
            "-q",
            "--sync",
            "gentoo"
        ]));
        assert!(sync(&["emaint", "-a", "sync"]));
        assert!(sync(&[
            "/usr/bin/python3",
            "/usr/bin/emaint",
            "sync",
            "--auto"
        ]));
        assert!(sync(&["/bin/bash", "/usr/bin/emerge-webrsync"]));
        assert!(sync(&["eix-sync"]));
        assert!(sync(&[
            "rsync",
            "-a",
            "rsync://mirror/gentoo-portage",
            "/var/db/repos/gentoo/.tmp-unverified-download-quarantine"
        ]));
        assert!(!sync(&["emerge", "-uDN", "@world"]));
        assert!(!sync(&["emaint", "binhost"]));
        assert!(!sync(&[
            "synclock", "--wait", "1h", "--", "emerge", "--sync"
        ]));
        assert!(!sync(&[
            "/usr/local/bin/synclock",
            "--",
            "emaint",
            "sync",
            "-a"
        ]));
        assert!(!sync(&["rsync", "-a", "/home/a", "/home/b"]));
        assert!(!sync(&["vim", "emerge", "--sync"]));
        assert!(!sync(&["less", "/var/db/repos/gentoo/x"]));
    }

    #[test]
    fn only_command_lines_that_alone_rule_out_a_sync_are_never_a_sync() {
        assert_eq!(
            judge(&["bash", "-c", "for i in 1 2; do x; done"]),
            Verdict::NotSync
        );
        assert_eq!(
            judge(&["/usr/bin/synclock", "--", "emerge", "--sync"]),
            Verdict::NotSync
        );
        assert_eq!(judge(&["emerge", "-uDN", "@world"]), Verdict::NotSync);
        assert_eq!(judge(&["sh", "/usr/bin/eix-sync"]), Verdict::Sync);
        assert_eq!(judge(&["emerge", "--sync"]), Verdict::Sync);
        // rsync and git also depend on where they work.
        assert_eq!(judge(&["rsync", "-a", "a", "b"]), Verdict::Tool(0));
        assert_eq!(
            judge(&["/bin/sh", "-e", "/usr/bin/git", "pull"]),
            Verdict::Tool(2)
        );
        assert_eq!(words(b"sh\0-c\0\0x\xff\0"), ["sh", "-c"]);
    }

    #[test]
    fn a_command_line_longer_than_the_buffer_is_not_judged() {
        let dir = procfs::ProcDir::open().unwrap();
        let me = std::process::id() as i32;
        let mut big = [0u8; 8192];
        let len = dir.read_cmdline(me, &mut big).unwrap();
        assert!(never_a_sync(&dir, me, &mut big), "this test binary");
        assert!(
            !never_a_sync(&dir, me, &mut big[..len]),
            "cut at the buffer"
        );
        assert!(!never_a_sync(&dir, -1, &mut big), "no such process");
    }

    #[test]
    fn executables_that_may_be_a_sync() {
        for name in [
            "python3.12",
            "python-exec2c",
            "pypy3",
            "bash",
            "sh",
            "busybox",
        ] {
            assert!(could_be_sync(name), "{name}");
        }
        for name in ["rsync", "git", "emerge", "eix-sync", "emerge-webrsync"] {
            assert!(could_be_sync(name), "{name}");
        }
        for name in ["sleep", "synclock", "sshd", "systemd", ""] {
            assert!(!could_be_sync(name), "{name}");
        }
    }
}
