//! What the kernel says about locks and processes, read from /proc.
//!
//! `/proc/locks` names the lock by device and inode, so it answers without
//! any permission on the lockfile, and for locks taken by other tools. Its
//! PID is the process that called flock(); that process may have exited
//! while a child keeps the inherited descriptor, so the real holders are
//! found in the `lock:` lines of `/proc/PID/fdinfo/FD`.

use std::ffi::CStr;
use std::fs;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::libc;
use nix::sys::stat::{major, minor};

use crate::lockfile::Identity;

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
    /// Its PID in our namespace.
    pub pid: i32,
    /// Its argv (empty for kernel threads and zombies).
    pub command: Vec<String>,
    /// When it started.
    pub started: Option<SystemTime>,
    /// Its parent's PID.
    pub parent: Option<i32>,
}

/// The `/proc/locks` entries for the file `id`; `None` if /proc/locks cannot
/// be read.
pub fn lock_entries(id: Identity) -> Option<LockEntries> {
    let text = fs::read_to_string("/proc/locks").ok()?;
    Some(parse_locks(&text, id))
}

/// Parses `/proc/locks` text, keeping the FLOCK lines of file `id`.
pub fn parse_locks(text: &str, id: Identity) -> LockEntries {
    let mut entries = LockEntries::default();
    for line in text.lines() {
        let Some(lock) = parse_lock_line(line) else {
            continue;
        };
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
    let _advisory = words.next()?;
    let _mode = words.next()?;
    let pid = words.next()?.parse().ok()?;
    let mut file = words.next()?.split(':');
    let maj = u64::from_str_radix(file.next()?, 16).ok()?;
    let min = u64::from_str_radix(file.next()?, 16).ok()?;
    let ino = file.next()?.parse().ok()?;
    Some(LockLine {
        blocked,
        pid,
        file: (maj, min, ino),
    })
}

fn key(id: Identity) -> (u64, u64, u64) {
    (major(id.dev), minor(id.dev), id.ino)
}

/// Whether `pid` holds a flock on `id` through one of its descriptors;
/// `None` when its fdinfo cannot be read (gone, or not ours to read).
pub fn holds(pid: i32, id: Identity) -> Option<bool> {
    let dir = fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    Some(dir.flatten().any(|entry| fdinfo_holds(&entry.path(), id)))
}

/// Every process that holds the flock on `id` through a descriptor of its
/// own (all sharers of the open file description), from `/proc/*/fdinfo`.
/// Reading other users' fdinfo needs root; others see only their own.
pub fn holders(id: Identity) -> Vec<i32> {
    let mut pids: Vec<i32> = pids()
        .into_iter()
        .filter(|pid| holds(*pid, id) == Some(true))
        .collect();
    pids.sort_unstable();
    pids
}

fn fdinfo_holds(path: &Path, id: Identity) -> bool {
    fs::read_to_string(path).is_ok_and(|info| {
        info.lines()
            .filter_map(|line| line.strip_prefix("lock:"))
            .filter_map(parse_lock_line)
            .any(|lock| !lock.blocked && lock.file == key(id))
    })
}

/// What /proc says about `pid`, or `None` if there is no such process.
pub fn process(pid: i32) -> Option<Process> {
    let (parent, start_ticks) = read_stat(pid)?;
    let command = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|word| !word.is_empty())
                .map(|word| String::from_utf8_lossy(word).into_owned())
                .collect()
        })
        .unwrap_or_default();
    Some(Process {
        pid,
        command,
        started: boot_time().map(|boot| boot + ticks(start_ticks)),
        parent,
    })
}

/// The start time of `pid` in clock ticks since boot (field 22 of stat):
/// with the PID, it names one process across PID reuse.
pub fn start_ticks(pid: i32) -> Option<u64> {
    read_stat(pid).map(|(_, ticks)| ticks)
}

/// The parent of `pid`, if it has one and is still there.
pub fn parent_of(pid: i32) -> Option<i32> {
    read_stat(pid).and_then(|(parent, _)| parent)
}

/// Parent PID and start ticks of `pid`, from one read of `/proc/PID/stat`
/// (far shorter than the buffer).
pub fn read_stat(pid: i32) -> Option<(Option<i32>, u64)> {
    read_head(&format!("/proc/{pid}/stat"), parse_stat)
}

/// Parent PID and start ticks from `/proc/PID/stat`.
fn parse_stat(stat: &str) -> Option<(Option<i32>, u64)> {
    let mut fields = fields_after_name(stat)?;
    // The first is field 3 (state); parent is field 4, starttime field 22.
    let parent = fields.nth(1)?.parse().ok().filter(|p| *p > 0);
    let start = fields.nth(17)?.parse().ok()?;
    Some((parent, start))
}

/// The fields of `/proc/PID/stat` from field 3 (state) on. The command
/// name before them, in parentheses, may itself hold spaces and
/// parentheses, so they are counted from the last `)`.
fn fields_after_name(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// The kernel's own tasks: kthreadd (PID 2) and its children, which are
/// kernel threads and the kernel's user-mode helpers (modprobe, core-dump
/// handlers), never a sync. Sorted; empty unless PID 2 here is a kernel
/// thread (in a container's PID namespace it is an ordinary process).
/// `buf` is room to read into.
pub fn kernel_threads(proc_dir: &ProcDir, buf: &mut [u8]) -> Vec<i32> {
    const KTHREADD: i32 = 2;
    // Only kernel threads and zombies have no executable, and a zombie has
    // no children: its children were handed to another parent.
    if proc_dir.executable_name(KTHREADD, buf) != Err(Errno::ENOENT) {
        return Vec::new();
    }
    let mut pids = proc_dir.children(KTHREADD, buf);
    pids.push(KTHREADD);
    pids.sort_unstable();
    pids
}

/// Linux's mark of a process forked and not exec'd since
/// (`PF_FORKNOEXEC` in include/linux/sched.h): set by fork, cleared by
/// exec, shown in the flags field of /proc/PID/stat.
const PF_FORKNOEXEC: u32 = 0x40;

/// The flags field (field 9) of `/proc/PID/stat`.
fn stat_flags(stat: &str) -> Option<u32> {
    fields_after_name(stat)?.nth(6)?.parse().ok()
}

/// Judges the start of the file at `path` (one read of at most 1 KiB).
fn read_head<T>(path: &str, judge: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let len = fs::File::open(path).ok()?.read(&mut buf).ok()?;
    judge(std::str::from_utf8(&buf[..len]).ok()?)
}

/// A process other than us whose working directory or an open file lies
/// under `location`, if any (what git's own locks protect against).
pub fn user_of(location: &Path) -> Option<Process> {
    let me = std::process::id() as i32;
    let under =
        |link: std::io::Result<std::path::PathBuf>| link.is_ok_and(|p| p.starts_with(location));
    pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .find(|pid| {
            under(fs::read_link(format!("/proc/{pid}/cwd")))
                || fs::read_dir(format!("/proc/{pid}/fd"))
                    .is_ok_and(|fds| fds.flatten().any(|fd| under(fs::read_link(fd.path()))))
        })
        .and_then(process)
}

/// Every PID in /proc.
pub fn pids() -> Vec<i32> {
    let mut buf = [0u8; 8192];
    ProcDir::open()
        .map(|dir| dir.list(&mut buf).into_iter().map(|p| p.pid).collect())
        .unwrap_or_default()
}

/// The inode number of the /proc directory of `pid`, or of this process for
/// `None`. /proc gives each process its own inode for as long as the
/// process lives, so a PID with this number names one process, across PID
/// reuse; listing /proc reports the same numbers (see [`Listed`]).
pub fn directory_inode(pid: Option<i32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    nix::sys::stat::stat(path.as_str())
        .ok()
        .map(|stat| stat.st_ino)
}

/// A process as listed in /proc: its PID and the inode number of its
/// directory, which tells it apart from a later process with the same PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The PID.
    pub pid: i32,
    /// The inode number of `/proc/PID`.
    pub inode: u64,
}

/// Where `process` is in `listed` (in PID order), if it is there with the
/// same inode: only then is it the same process.
pub fn position(listed: &[Listed], process: Listed) -> Option<usize> {
    listed
        .binary_search_by_key(&process.pid, |p| p.pid)
        .ok()
        .filter(|&at| listed[at].inode == process.inode)
}

/// The direct children of `pid`, if the kernel lists them.
pub fn children(pid: i32) -> Vec<i32> {
    let mut buf = vec![0u8; 64 * 1024];
    ProcDir::open()
        .map(|dir| dir.children(pid, &mut buf))
        .unwrap_or_default()
}

/// The inode of our PID namespace: two processes see the same PIDs when
/// theirs are equal.
pub fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

fn boot_time() -> Option<SystemTime> {
    static BOOT: std::sync::OnceLock<Option<SystemTime>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let secs = stat
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    })
}

/// /proc opened once, to read many processes' files relative to it.
pub struct ProcDir(std::os::fd::OwnedFd);

impl ProcDir {
    /// Opens /proc.
    pub fn open() -> Result<Self, nix::errno::Errno> {
        use nix::fcntl::{OFlag, open};
        use nix::sys::stat::Mode;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        open("/proc", flags, Mode::empty()).map(ProcDir)
    }

    /// The processes in /proc, in PID order, listed with getdents64 on our
    /// descriptor into the caller's `buf`: a DIR stream would cost a second
    /// descriptor, three more system calls and a fresh 32 KiB buffer, on
    /// the hand-off path.
    pub fn list(&self, buf: &mut [u8]) -> Vec<Listed> {
        self.list_above(1, buf)
    }

    /// [`ProcDir::list`], but for PIDs 2 to `floor`, which the caller knows
    /// to be kernel threads and free PIDs that Linux no longer hands out
    /// (see `kthreads.rs`).
    ///
    /// The listing starts where Linux puts PID 1, past the 60 or so entries
    /// such as `cpuinfo` (a fifth of the listing's time), and then goes on
    /// past `floor`. The first entry read must be PID 1; were positions
    /// ever to map to PIDs otherwise, it would not be, and the whole
    /// directory is listed instead.
    pub fn list_above(&self, floor: i32, buf: &mut [u8]) -> Vec<Listed> {
        /// The directory position of PID 0 in /proc (`TGID_OFFSET` in
        /// fs/proc/base.c: `FIRST_PROCESS_ENTRY + 2`, since Linux 2.6).
        const PID_0: i64 = 258;
        // Room for PID 1's entry and little more.
        let mut listed = self.list_from(PID_0, &mut buf[..32], false);
        if listed.first().is_none_or(|p| p.pid != 1) {
            return self.list_from(0, buf, true);
        }
        listed.truncate(1);
        listed.extend(self.list_from(PID_0 + i64::from(floor.max(1)) + 1, buf, true));
        listed
    }

    /// The processes listed from the directory position `start`: to the
    /// end, or what one read brings.
    fn list_from(&self, start: i64, buf: &mut [u8], to_the_end: bool) -> Vec<Listed> {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        let mut listed = Vec::with_capacity(if to_the_end { 256 } else { 1 });
        // SAFETY: lseek on our own open descriptor.
        if unsafe { libc::lseek(fd, start, libc::SEEK_SET) } != start {
            return listed;
        }
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let len =
                unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
            match usize::try_from(len) {
                Ok(0) | Err(_) => break,
                Ok(len) => {
                    listed.extend(dirents(&buf[..len]).filter_map(|(inode, name)| {
                        parse_pid(name).map(|pid| Listed { pid, inode })
                    }))
                }
            }
            if !to_the_end {
                break;
            }
        }
        // The kernel lists PIDs in order; the scan's lookups rely on it.
        if !listed.is_sorted_by_key(|p| p.pid) {
            listed.sort_unstable_by_key(|p| p.pid);
        }
        listed
    }

    /// The file name of `pid`'s executable, without a " (deleted)" suffix,
    /// read into `buf`. Fails with ENOENT for kernel threads, zombies and
    /// gone processes, and with EACCES for processes we may not inspect.
    pub fn executable_name<'b>(&self, pid: i32, buf: &'b mut [u8]) -> Result<&'b [u8], Errno> {
        use std::os::fd::AsRawFd;
        let path = PidPath::new(pid, "exe");
        // SAFETY: `path` is NUL-terminated; the kernel writes at most
        // `buf.len()` bytes into `buf`.
        let len = unsafe {
            libc::readlinkat(
                self.0.as_raw_fd(),
                path.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        let bytes = &buf[..usize::try_from(len).map_err(|_| Errno::last())?];
        let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
        Ok(bytes.rsplit(|b| *b == b'/').next().unwrap_or(bytes))
    }

    /// Reads the start of `pid`'s command line (NUL-separated words) into
    /// `buf` with one read; returns the length read.
    pub fn read_cmdline(&self, pid: i32, buf: &mut [u8]) -> Option<usize> {
        let fd = self.open_file(PidPath::new(pid, "cmdline")).ok()?;
        nix::unistd::read(&fd, buf).ok()
    }

    /// Whether `pid` is a forked process that has not called exec since
    /// (its stat is read into `buf`). Such a process still runs the image
    /// it was forked with, and so still has the command line it had at
    /// any earlier moment of its life. Reading stat, unlike the command
    /// line, never waits for the process's memory map.
    pub fn forked_without_exec(&self, pid: i32, buf: &mut [u8]) -> bool {
        let Ok(fd) = self.open_file(PidPath::new(pid, "stat")) else {
            return false;
        };
        let len = nix::unistd::read(&fd, buf).unwrap_or(0);
        std::str::from_utf8(&buf[..len])
            .ok()
            .and_then(stat_flags)
            .is_some_and(|flags| flags & PF_FORKNOEXEC != 0)
    }

    /// The direct children of `pid` (its `task/PID/children`), read into
    /// `buf` with one read: `fs::read_to_string` would stat the file (which
    /// claims size 0) and then probe with reads of 32, 32, 64... bytes, the
    /// kernel walking the list of children again for each. The kernel fills
    /// a read as far as it can, so a short read is the whole list; when
    /// `buf` is too small, the PIDs that fit are returned (without the last,
    /// which may be cut).
    fn children(&self, pid: i32, buf: &mut [u8]) -> Vec<i32> {
        let Some(len) = self
            .open_file(PidPath::new(pid, format_args!("task/{pid}/children")))
            .ok()
            .and_then(|fd| nix::unistd::read(&fd, buf).ok())
        else {
            return Vec::new();
        };
        pid_list(&buf[..len], len == buf.len())
    }

    /// Opens `path` for reading, relative to our descriptor.
    fn open_file(&self, path: PidPath) -> Result<OwnedFd, Errno> {
        use nix::fcntl::{OFlag, openat};
        use nix::sys::stat::Mode;
        use std::os::fd::AsFd;
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        openat(self.0.as_fd(), path.as_c_str(), flags, Mode::empty())
    }
}

/// `PID/name`, NUL-terminated, on the stack: the paths the scan reads
/// for every process cost no allocation.
struct PidPath([u8; 64]);

impl PidPath {
    fn new(pid: i32, name: impl std::fmt::Display) -> Self {
        let mut path = [0u8; 64];
        // The last byte stays NUL; a name too long for the rest is cut, and
        // then not found.
        let _ = write!(&mut path[..63], "{pid}/{name}");
        PidPath(path)
    }

    fn as_c_str(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.0).unwrap_or(c"")
    }

    fn as_ptr(&self) -> *const libc::c_char {
        self.as_c_str().as_ptr()
    }
}

/// The inode numbers and names in a getdents64 buffer: each
/// `linux_dirent64` record is d_ino (8 bytes), d_off (8), d_reclen (2),
/// d_type (1), then the NUL-terminated name, padded to d_reclen.
fn dirents(buf: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    const NAME: usize = 19;
    let mut at = 0;
    std::iter::from_fn(move || {
        let record = buf.get(at..)?;
        let reclen = usize::from(u16::from_ne_bytes([*record.get(16)?, *record.get(17)?]));
        let name = record.get(NAME..reclen)?;
        let inode = u64::from_ne_bytes(record.get(..8)?.try_into().ok()?);
        at += reclen;
        Some((inode, name.split(|b| *b == 0).next().unwrap_or(name)))
    })
}

/// The PIDs in a space-separated list; when the list may be `cut` short,
/// without the last, which may be part of a longer number.
fn pid_list(text: &[u8], cut: bool) -> Vec<i32> {
    let mut words: Vec<&[u8]> = text.split(u8::is_ascii_whitespace).collect();
    if cut {
        words.pop();
    }
    words.into_iter().filter_map(parse_pid).collect()
}

/// A PID from a /proc entry name; other entries (`self`, `cpuinfo`) are `None`.
fn parse_pid(name: &[u8]) -> Option<i32> {
    std::str::from_utf8(name).ok()?.parse().ok()
}

fn ticks(count: u64) -> Duration {
    use nix::unistd::{SysconfVar, sysconf};
    let per_second = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    let per_second = u64::try_from(per_second).unwrap_or(100);
    Duration::from_millis(count.saturating_mul(1000) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::makedev;

    const LOCKS: &str = "\
1: FLOCK  ADVISORY  WRITE 4242 00:2a:5678 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4300 00:2a:5678 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4301 00:2a:5678 0 EOF
2: POSIX  ADVISORY  WRITE 99 00:2a:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 77 00:2a:9999 0 EOF
4: OFDLCK ADVISORY  READ  -1 fd:01:5678 0 EOF
";

    #[test]
    fn finds_holder_and_waiters_of_one_file() {
        let id = Identity {
            dev: makedev(0, 0x2a),
            ino: 5678,
        };
        let entries = parse_locks(LOCKS, id);
        assert_eq!(entries.holder, Some(4242));
        assert_eq!(entries.waiters, vec![4300, 4301]);
    }

    #[test]
    fn other_files_and_lock_kinds_are_ignored() {
        let other_dev = Identity {
            dev: makedev(0xfd, 1),
            ino: 5678,
        };
        assert_eq!(parse_locks(LOCKS, other_dev), LockEntries::default());
        let other_ino = Identity {
            dev: makedev(0, 0x2a),
            ino: 1,
        };
        assert_eq!(parse_locks(LOCKS, other_ino), LockEntries::default());
    }

    #[test]
    fn stat_with_parentheses_in_the_name() {
        let stat = "123 (a) b (c)) S 45 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9876 1 2";
        assert_eq!(parse_stat(stat), Some((Some(45), 9876)));
    }

    #[test]
    fn kernel_threads_are_kthreadds_children() {
        let kernel = kernel_threads(&ProcDir::open().expect("/proc"), &mut [0; 4096]);
        let me = std::process::id() as i32;
        assert!(!kernel.contains(&me) && !kernel.contains(&1));
        assert!(kernel.is_empty() || kernel.contains(&2));
        for pid in kernel.into_iter().filter(|pid| *pid != 2) {
            // A task that exited meanwhile has no stat any more.
            if let Some((parent, _)) = read_stat(pid) {
                assert_eq!(parent, Some(2), "PID {pid}");
            }
        }
    }

    #[test]
    fn the_pid_list_has_this_process_and_no_other_entries() {
        let dir = ProcDir::open().expect("/proc");
        let mut buf = [0u8; 4096];
        let listed = dir.list(&mut buf);
        let pids: Vec<i32> = listed.iter().map(|p| p.pid).collect();
        assert!(pids.contains(&(std::process::id() as i32)));
        assert!(pids.contains(&1));
        assert!(pids.is_sorted());
        // Each inode is the one stat reports for the directory.
        let me = std::process::id() as i32;
        let mine = listed.iter().find(|p| p.pid == me).unwrap();
        assert_eq!(Some(mine.inode), directory_inode(Some(me)));
        assert_eq!(Some(mine.inode), directory_inode(None));
        // Listing again starts from the beginning; so does a listing from
        // the very start of the directory.
        assert!(dir.list(&mut buf).iter().any(|p| p.pid == 1));
        let full = dir.list_from(0, &mut buf, true);
        assert!(full.first().is_some_and(|p| p.pid == 1));
        assert!(full.contains(mine));
        assert!(full.len().abs_diff(listed.len()) < 20);
        // Above a floor: PID 1, then what is above it.
        let above = dir.list_above(2, &mut buf);
        assert_eq!(above[0].pid, 1);
        assert!(above[1..].iter().all(|p| p.pid > 2));
        assert!(above.contains(mine));
        // A buffer that holds a few entries at a time lists them all.
        assert!(dir.list(&mut [0; 64]).len().abs_diff(pids.len()) < 20);
        let listed = std::fs::read_dir("/proc")
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .parse::<i32>()
                    .is_ok()
            })
            .count();
        assert!(
            pids.len().abs_diff(listed) < 20,
            "{} against {listed}",
            pids.len()
        );
    }

    #[test]
    fn dirent_records_are_split_by_their_length() {
        let mut buf = Vec::new();
        for (inode, name) in [(7u64, "123"), (8, "self"), (u64::MAX, "4567890")] {
            let reclen = (19 + name.len() + 1).next_multiple_of(8);
            let mut record = vec![0u8; reclen];
            record[..8].copy_from_slice(&inode.to_ne_bytes());
            record[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
            record[19..19 + name.len()].copy_from_slice(name.as_bytes());
            buf.extend(record);
        }
        let inodes: Vec<u64> = dirents(&buf).map(|(inode, _)| inode).collect();
        assert_eq!(inodes, [7, 8, u64::MAX]);
        let names: Vec<&[u8]> = dirents(&buf).map(|(_, name)| name).collect();
        assert_eq!(names, [&b"123"[..], b"self", b"4567890"]);
        let pids: Vec<i32> = names.into_iter().filter_map(parse_pid).collect();
        assert_eq!(pids, [123, 4567890]);
        // A record claiming length 0 ends the walk instead of looping.
        assert_eq!(dirents(&[0u8; 24]).count(), 0);
    }

    #[test]
    fn pid_lists_drop_a_number_that_may_be_cut() {
        assert_eq!(pid_list(b"3 4 17 ", false), [3, 4, 17]);
        assert_eq!(pid_list(b"3 4 17", false), [3, 4, 17]);
        // "17" may be the start of 1742.
        assert_eq!(pid_list(b"3 4 17", true), [3, 4]);
        assert_eq!(pid_list(b"", false), Vec::<i32>::new());
    }

    #[test]
    fn pid_paths_are_relative_and_cut_to_fit() {
        assert_eq!(PidPath::new(4242, "exe").as_c_str(), c"4242/exe");
        assert_eq!(
            PidPath::new(7, format_args!("task/{}/children", 7)).as_c_str(),
            c"7/task/7/children"
        );
        let path = PidPath::new(i32::MAX, "x".repeat(100));
        assert_eq!(path.as_c_str().to_bytes().len(), 63);
        assert!(path.as_c_str().to_bytes().starts_with(b"2147483647/xxx"));
    }

    #[test]
    fn executable_and_command_line_of_this_process() {
        let dir = ProcDir::open().expect("/proc");
        let me = std::process::id() as i32;
        let mut buf = [0u8; 4096];
        let exe = std::env::current_exe().unwrap();
        let name = dir.executable_name(me, &mut buf).expect("own exe");
        assert_eq!(name, exe.file_name().unwrap().as_encoded_bytes());
        assert_eq!(dir.executable_name(-1, &mut buf), Err(Errno::ENOENT));
        let len = dir.read_cmdline(me, &mut buf).expect("own cmdline");
        let argv0 = std::env::args_os().next().unwrap();
        assert!(buf[..len].starts_with(argv0.as_encoded_bytes()));
    }

    #[test]
    fn a_subshell_is_forked_without_exec_and_a_command_is_not() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let dir = ProcDir::open().unwrap();
        let mut buf = [0u8; 4096];
        let me = std::process::id() as i32;
        assert!(!dir.forked_without_exec(me, &mut buf), "exec'd by cargo");
        assert!(!dir.forked_without_exec(-1, &mut buf), "no such process");
        // sh forks for the subshell, which runs only builtins.
        let mut sh = Command::new("sh")
            .args(["-c", "(echo ready; read _) ; :"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let shell = sh.id() as i32;
        let subshell = children(shell);
        assert_eq!(subshell.len(), 1, "{subshell:?}");
        assert!(
            dir.forked_without_exec(subshell[0], &mut buf),
            "the subshell"
        );
        assert!(!dir.forked_without_exec(shell, &mut buf), "sh, exec'd");
        drop(sh.stdin.take());
        assert!(sh.wait().unwrap().success());
        assert_eq!(stat_flags("1 (a) b) S 0 0 0 0 -1 4194368 5"), Some(4194368));
        assert_eq!(stat_flags("1 (a) S 0"), None);
    }

    #[test]
    fn this_process_is_visible() {
        let me = process(std::process::id() as i32).expect("own /proc entry");
        assert!(!me.command.is_empty());
        assert!(me.started.is_some_and(|t| t <= SystemTime::now()));
    }
}
