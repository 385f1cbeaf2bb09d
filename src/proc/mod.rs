//! Read-only views of /proc: who holds or waits for a lock, and a process's
//! stat, status, command line, executable, working directory and open
//! files. Paths are taken relative to a root the caller gives
//! ([`Proc::system`], or [`Proc::at`] a fake tree in unit tests).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::stat::{FileStat, major, minor};

/// Device and inode: what makes two opens the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity recorded in a stat result.
    pub fn of(stat: &FileStat) -> Self {
        FileId { dev: stat.st_dev, ino: stat.st_ino }
    }
}

/// The FLOCK entries of one file in `/proc/locks`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LockEntries {
    /// The PID recorded for the granted lock (the process that took it).
    pub holder: Option<i32>,
    /// PIDs blocked waiting for it (the `->` lines), in kernel order.
    pub waiters: Vec<i32>,
}

/// A process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its PID in the PID namespace of the /proc read.
    pub pid: i32,
    /// Its argv (empty for kernel threads and zombies).
    pub command: Vec<String>,
    /// When it started.
    pub started: Option<SystemTime>,
    /// Its start in clock ticks since boot: with the PID, it names one
    /// process across PID reuse.
    pub start_ticks: u64,
    /// Its parent's PID.
    pub parent: Option<i32>,
}

/// The largest command line read: far more than the words judged need.
const MAX_CMDLINE: u64 = 128 * 1024;

/// A /proc tree to read from.
#[derive(Debug, Clone)]
pub struct Proc {
    root: PathBuf,
}

impl Proc {
    /// The machine's /proc.
    pub fn system() -> Self {
        Proc::at("/proc")
    }

    /// The tree at `root`, laid out as /proc.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Proc { root: root.into() }
    }

    fn path(&self, pid: i32, name: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(name)
    }

    /// Every PID listed, in order.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = fs::read_dir(&self.root)
            .map(|dir| {
                dir.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).collect()
            })
            .unwrap_or_default();
        pids.sort_unstable();
        pids
    }

    /// Parent PID and start ticks of `pid`, from `/proc/PID/stat`.
    pub fn stat(&self, pid: i32) -> Option<(Option<i32>, u64)> {
        let mut text = String::new();
        fs::File::open(self.path(pid, "stat")).ok()?.take(4096).read_to_string(&mut text).ok()?;
        parse_stat(&text)
    }

    /// `pid` and its ancestors, nearest first, up to the first that is gone.
    pub fn lineage(&self, pid: i32) -> Vec<i32> {
        let mut chain = vec![pid];
        while let Some(parent) = chain.last().and_then(|&p| self.stat(p)?.0) {
            if chain.contains(&parent) || chain.len() > 4096 {
                break;
            }
            chain.push(parent);
        }
        chain
    }

    /// The raw command line of `pid` (NUL-separated words), bounded.
    pub fn cmdline(&self, pid: i32) -> Option<Vec<u8>> {
        let mut raw = Vec::with_capacity(4096);
        fs::File::open(self.path(pid, "cmdline"))
            .ok()?
            .take(MAX_CMDLINE)
            .read_to_end(&mut raw)
            .ok()?;
        Some(raw)
    }

    /// The file name of `pid`'s executable, without a " (deleted)" suffix.
    /// Fails with NotFound for kernel threads, zombies and gone processes.
    pub fn executable_name(&self, pid: i32) -> io::Result<String> {
        let target = fs::read_link(self.path(pid, "exe"))?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(name.strip_suffix(" (deleted)").unwrap_or(&name).to_string())
    }

    /// The real and effective UIDs of `pid` (from `/proc/PID/status`).
    pub fn uids(&self, pid: i32) -> Option<(u32, u32)> {
        let status = fs::read_to_string(self.path(pid, "status")).ok()?;
        let line = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
        let mut ids = line.split_whitespace().map(|id| id.parse().ok());
        Some((ids.next()??, ids.next()??))
    }

    /// The files on which `pid` holds a flock through a descriptor of its
    /// own (as its fdinfo lists them).
    pub fn locked_files(&self, pid: i32) -> Vec<PathBuf> {
        let Ok(fds) = fs::read_dir(self.path(pid, "fdinfo")) else {
            return Vec::new();
        };
        fds.flatten()
            .filter(|info| {
                fs::read_to_string(info.path()).is_ok_and(|text| {
                    text.lines()
                        .filter_map(|line| line.strip_prefix("lock:"))
                        .filter_map(parse_lock_line)
                        .any(|lock| !lock.blocked)
                })
            })
            .filter_map(|info| fs::read_link(self.path(pid, "fd").join(info.file_name())).ok())
            .collect()
    }

    /// The PID namespace of `pid` (its inode) and `pid`'s number there, in
    /// its innermost namespace (the last of `NSpid` in its status).
    pub fn namespace_pid(&self, pid: i32) -> Option<(u64, i32)> {
        use std::os::unix::fs::MetadataExt;
        let ns = fs::metadata(self.path(pid, "ns/pid")).ok()?.ino();
        let status = fs::read_to_string(self.path(pid, "status")).ok()?;
        let line = status.lines().find_map(|line| line.strip_prefix("NSpid:"))?;
        Some((ns, line.split_whitespace().last()?.parse().ok()?))
    }

    /// The working directory of `pid`.
    pub fn cwd(&self, pid: i32) -> Option<PathBuf> {
        fs::read_link(self.path(pid, "cwd")).ok()
    }

    /// The paths of `pid`'s open descriptors.
    pub fn open_files(&self, pid: i32) -> Vec<PathBuf> {
        fs::read_dir(self.path(pid, "fd"))
            .map(|fds| fds.flatten().filter_map(|fd| fs::read_link(fd.path()).ok()).collect())
            .unwrap_or_default()
    }

    /// Which of `paths` some process has open, and which process.
    pub fn open_anywhere(&self, paths: &[PathBuf]) -> Vec<(PathBuf, i32)> {
        let me = nix::unistd::getpid().as_raw();
        self.pids()
            .into_iter()
            .filter(|pid| *pid != me)
            .flat_map(|pid| {
                self.open_files(pid)
                    .into_iter()
                    .filter(|f| paths.contains(f))
                    .map(move |f| (f, pid))
            })
            .collect()
    }

    /// What /proc says about `pid`, or `None` if there is no such process.
    pub fn process(&self, pid: i32) -> Option<Process> {
        let (parent, start_ticks) = self.stat(pid)?;
        let command = self
            .cmdline(pid)
            .map(|raw| {
                raw.split(|b| *b == 0).filter(|w| !w.is_empty()).map(crate::msg::decode).collect()
            })
            .unwrap_or_default();
        Some(Process {
            pid,
            command,
            started: self.boot_time().map(|boot| boot + ticks(start_ticks)),
            start_ticks,
            parent,
        })
    }

    /// The direct children of `pid`, if the kernel lists them.
    pub fn children(&self, pid: i32) -> Vec<i32> {
        let path = self.path(pid, &format!("task/{pid}/children"));
        fs::read_to_string(path)
            .map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The `/proc/locks` entries for the file `id`; `None` if it cannot be
    /// read.
    pub fn lock_entries(&self, id: FileId) -> Option<LockEntries> {
        let text = fs::read_to_string(self.root.join("locks")).ok()?;
        Some(parse_locks(&text, id))
    }

    /// Whether `pid` holds a flock on `id` through one of its descriptors;
    /// `None` when its fdinfo cannot be read (gone, or not ours to read).
    pub fn holds(&self, pid: i32, id: FileId) -> Option<bool> {
        let dir = fs::read_dir(self.path(pid, "fdinfo")).ok()?;
        Some(dir.flatten().any(|entry| fdinfo_holds(&entry.path(), id)))
    }

    /// Every process that holds the flock on `id` through a descriptor of
    /// its own. Reading other users' fdinfo needs root.
    pub fn holders(&self, id: FileId) -> Vec<i32> {
        self.pids().into_iter().filter(|pid| self.holds(*pid, id) == Some(true)).collect()
    }

    /// The inode of this process's PID namespace: two processes see the
    /// same PIDs when theirs are equal.
    pub fn pid_namespace(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(self.root.join("self/ns/pid")).ok().map(|m| m.ino())
    }

    fn boot_time(&self) -> Option<SystemTime> {
        let stat = fs::read_to_string(self.root.join("stat")).ok()?;
        let secs =
            stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }
}

/// The words of a command line as read from /proc (NUL-separated): those
/// that are UTF-8 and not empty.
pub fn words(cmdline: &[u8]) -> impl Iterator<Item = &str> {
    cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).filter_map(|w| std::str::from_utf8(w).ok())
}

/// Parent PID and start ticks from `/proc/PID/stat`, counted from the last
/// `)` (the command name may hold any): parent is field 4, starttime 22.
fn parse_stat(stat: &str) -> Option<(Option<i32>, u64)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let parent = fields.nth(1)?.parse().ok().filter(|p| *p > 0);
    let start = fields.nth(17)?.parse().ok()?;
    Some((parent, start))
}

/// Parses `/proc/locks` text, keeping the FLOCK lines of file `id`.
pub fn parse_locks(text: &str, id: FileId) -> LockEntries {
    let mut entries = LockEntries::default();
    for lock in text.lines().filter_map(parse_lock_line) {
        if lock.file != key(id) {
            continue;
        }
        if lock.blocked {
            entries.waiters.push(lock.pid);
        } else if entries.holder.is_none() {
            entries.holder = Some(lock.pid);
        }
    }
    entries
}

/// One parsed lock line: `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`,
/// with `->` after the ordinal for a blocked waiter.
struct LockLine {
    blocked: bool,
    pid: i32,
    file: (u64, u64, u64),
}

fn parse_lock_line(line: &str) -> Option<LockLine> {
    let mut words = line.split_whitespace();
    words.next()?; // ordinal "N:"
    let mut kind = words.next()?;
    let blocked = kind == "->";
    if blocked {
        kind = words.next()?;
    }
    if kind != "FLOCK" {
        return None;
    }
    let pid = words.nth(2)?.parse().ok()?;
    let mut file = words.next()?.split(':');
    let maj = u64::from_str_radix(file.next()?, 16).ok()?;
    let min = u64::from_str_radix(file.next()?, 16).ok()?;
    let ino = file.next()?.parse().ok()?;
    Some(LockLine { blocked, pid, file: (maj, min, ino) })
}

fn key(id: FileId) -> (u64, u64, u64) {
    (major(id.dev), minor(id.dev), id.ino)
}

fn fdinfo_holds(path: &Path, id: FileId) -> bool {
    fs::read_to_string(path).is_ok_and(|info| {
        info.lines()
            .filter_map(|line| line.strip_prefix("lock:"))
            .filter_map(parse_lock_line)
            .any(|lock| !lock.blocked && lock.file == key(id))
    })
}

fn ticks(count: u64) -> Duration {
    use nix::unistd::{SysconfVar, sysconf};
    let per_second = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Duration::from_millis(count.saturating_mul(1000) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::makedev;

    #[test]
    fn lock_lines_and_stat_fields_are_parsed() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 00:2a:5678 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 4300 00:2a:5678 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 99 00:2a:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 77 00:2a:9999 0 EOF\n";
        let entries = parse_locks(locks, FileId { dev: makedev(0, 0x2a), ino: 5678 });
        assert_eq!((entries.holder, entries.waiters), (Some(4242), vec![4300]));
        let other = FileId { dev: makedev(0xfd, 1), ino: 5678 };
        assert_eq!(parse_locks(locks, other), LockEntries::default());
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(parse_stat(stat), Some((Some(7), 12345)));
        assert_eq!(
            parse_stat("1 (i) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9 0"),
            Some((None, 9))
        );
        assert_eq!(parse_stat("garbage"), None);
    }
}
