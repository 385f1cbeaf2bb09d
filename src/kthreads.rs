//! The kernel threads, noted in the lockfile (see `notes.rs`) so that the
//! holder's scan for outside syncs does not have to ask the kernel for them
//! on every run.
//!
//! Most of /proc is kernel threads on many machines, and a kernel thread is
//! never a sync. The kernel lists them as the children of kthreadd (PID 2),
//! but reading that list touches every one of them: about 30 µs with cold
//! caches, which is how the scan finds them after the previous holder's
//! command ran. So a holder notes them in the second page of the lockfile,
//! each as its PID and the inode number of its /proc directory, and the
//! next holder skips exactly those processes of its listing of /proc that
//! have both. A noted thread that exited names a dead process (its PID, if
//! reused, comes with another inode), so the notes never make the scan skip
//! anything but a kernel thread. Threads started since are found like any
//! process (their executable link is missing); when there are a few, the
//! notes are written again from the kernel's list.
//!
//! The notes also give a floor: the scan does not even list PIDs 2 to the
//! floor. Linux hands out PIDs below 300 (`RESERVED_PIDS` in kernel/pid.c)
//! only until it has handed out one above: after that, new processes get
//! PIDs from 300 on, even when the PIDs wrap around. So once a PID of 300 or
//! more is listed, the PIDs below 300 can only go, and when every listed
//! process from PID 2 up to some PID is a kernel thread, so is every
//! process there will ever be in that range. On a machine the kernel
//! threads started at boot hold most PIDs below 300: not listing them halves
//! the listing of /proc (36 to 18 µs with cold caches, measured here).

use std::os::fd::BorrowedFd;

use nix::sys::uio::pwrite;

use crate::notes::{self, ENTRY, PAGE};
use crate::procfs::{self, Listed, ProcDir};

/// Entries a page holds, the first two of them the count and the floor.
const MAX: usize = PAGE / ENTRY - 2;
/// Processes without an executable that are not noted, from which on the
/// notes are written again.
pub const STALE: usize = 3;

/// The PID that marks the count entry (its inode field is the count).
const COUNT: i32 = -1;
/// The PID that marks the floor entry (its inode field is the floor).
const FLOOR: i32 = -2;
/// Linux hands out PIDs below this only until it has handed out one of at
/// least this (`RESERVED_PIDS` in kernel/pid.c).
const RESERVED_PIDS: i32 = 300;

/// The kernel threads as noted.
#[derive(Debug, PartialEq, Eq)]
pub struct Noted {
    /// The kernel threads above the floor, in PID order.
    pub threads: Vec<Listed>,
    /// Every process there is or will be with a PID from 2 to this one is
    /// a kernel thread (1: none known).
    pub floor: i32,
}

/// The kernel threads noted in `page` (see [`notes::read`]); `None` when
/// there are no notes, or they do not all pass their seals.
pub fn from_page(page: &[u8]) -> Option<Noted> {
    let key = notes::key()?;
    let mut entries = page.chunks_exact(ENTRY);
    let (COUNT, count) = notes::read_entry(entries.next()?, key)? else {
        return None;
    };
    let (FLOOR, floor) = notes::read_entry(entries.next()?, key)? else {
        return None;
    };
    let count = usize::try_from(count).ok().filter(|n| *n <= MAX)?;
    let floor = i32::try_from(floor)
        .ok()
        .filter(|f| (1..RESERVED_PIDS).contains(f))?;
    let threads: Vec<Listed> = entries
        .take(count)
        .map(|entry| notes::read_entry(entry, key).map(|(pid, inode)| Listed { pid, inode }))
        .collect::<Option<_>>()?;
    (threads.len() == count && threads.is_sorted_by_key(|t| t.pid))
        .then_some(Noted { threads, floor })
}

/// The floor for `threads`, the kernel threads among `listed` (a whole
/// listing of /proc, in PID order): the highest PID below 300 up to which
/// every listed process above PID 1 is one of them. 1 unless a listed PID
/// of 300 or more shows that no PID below 300 will be handed out again.
pub fn floor(listed: &[Listed], threads: &[Listed]) -> i32 {
    if listed.last().is_none_or(|p| p.pid < RESERVED_PIDS) {
        return 1;
    }
    listed
        .iter()
        .filter(|p| p.pid > 1)
        .take_while(|p| p.pid < RESERVED_PIDS && contains(threads, **p))
        .last()
        .map_or(1, |p| p.pid)
}

/// The kernel threads among the `listed` processes (in PID order), from
/// the kernel's own list, read into `buf`. The listing comes first: a
/// thread that started since is not in it, and one whose PID went to a
/// new process in between keeps the old inode, which matches nothing.
pub fn from_kernel(proc_dir: &ProcDir, listed: &[Listed], buf: &mut [u8]) -> Vec<Listed> {
    procfs::kernel_threads(proc_dir, buf)
        .into_iter()
        .filter_map(|pid| {
            let at = listed.binary_search_by_key(&pid, |p| p.pid).ok()?;
            Some(listed[at])
        })
        .collect()
}

/// Notes `threads` (in PID order) and `floor` in the lockfile open on
/// `lock`, unless it holds something other than notes or they do not fit.
/// Call only while holding the lock.
pub fn note(lock: BorrowedFd<'_>, threads: &[Listed], floor: i32) {
    let Some(key) = notes::key() else {
        return;
    };
    if threads.len() > MAX || !notes::claim(lock) {
        return;
    }
    let mut page = Vec::with_capacity(PAGE);
    page.extend(notes::entry(COUNT, threads.len() as u64, key));
    page.extend(notes::entry(
        FLOOR,
        floor.clamp(1, RESERVED_PIDS - 1) as u64,
        key,
    ));
    for thread in threads {
        page.extend(notes::entry(thread.pid, thread.inode, key));
    }
    let _ = pwrite(lock, &page, notes::KERNEL as i64);
}

/// Whether `process` is one of the noted `threads` (in PID order).
pub fn contains(threads: &[Listed], process: Listed) -> bool {
    procfs::position(threads, process).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn read(lock: BorrowedFd<'_>, buf: &mut [u8]) -> Option<Vec<Listed>> {
        from_page(notes::read(lock, buf).kernel).map(|noted| noted.threads)
    }

    fn listed(pid: i32, inode: u64) -> Listed {
        Listed { pid, inode }
    }

    #[test]
    fn noted_threads_are_read_back() {
        let file = tempfile::tempfile().unwrap();
        let mut buf = [0u8; notes::SIZE];
        assert_eq!(read(file.as_fd(), &mut buf), None, "nothing noted yet");
        let threads = [listed(2, 20), listed(3, 33), listed(90, 1 << 40)];
        note(file.as_fd(), &threads, 3);
        let noted = from_page(notes::read(file.as_fd(), &mut buf).kernel).unwrap();
        assert_eq!(
            noted,
            Noted {
                threads: threads.to_vec(),
                floor: 3
            }
        );
        note(file.as_fd(), &threads[..1], 1);
        assert_eq!(read(file.as_fd(), &mut buf).as_deref(), Some(&threads[..1]));
        note(file.as_fd(), &[], 1);
        assert_eq!(read(file.as_fd(), &mut buf).as_deref(), Some(&[][..]));
        // More than a page holds: the notes stay as they were.
        let many: Vec<Listed> = (0..=MAX as i32).map(|pid| listed(pid, 1)).collect();
        note(file.as_fd(), &many, 1);
        assert_eq!(read(file.as_fd(), &mut buf).as_deref(), Some(&[][..]));
    }

    #[test]
    fn a_damaged_or_foreign_page_is_no_notes() {
        use std::os::unix::fs::FileExt;
        let file = tempfile::tempfile().unwrap();
        note(file.as_fd(), &[listed(2, 20), listed(3, 33)], 3);
        let mut buf = [0u8; notes::SIZE];
        for at in [
            PAGE,
            PAGE + 4,
            PAGE + ENTRY + 9,
            PAGE + 2 * ENTRY,
            PAGE + 3 * ENTRY,
        ] {
            let mut byte = [0u8];
            file.read_at(&mut byte, at as u64).unwrap();
            file.write_at(&[byte[0] ^ 1], at as u64).unwrap();
            assert_eq!(read(file.as_fd(), &mut buf), None, "byte {at}");
            file.write_at(&byte, at as u64).unwrap();
        }
        assert!(read(file.as_fd(), &mut buf).is_some());
        let mut entry = notes::entry(9, 9, 7);
        file.write_at(&entry, (PAGE + ENTRY) as u64).unwrap();
        assert_eq!(read(file.as_fd(), &mut buf), None, "another boot's entry");
        let key = notes::key().unwrap();
        note(file.as_fd(), &[listed(2, 20), listed(3, 33)], 3);
        file.write_at(&notes::entry(FLOOR, 300, key), (PAGE + ENTRY) as u64)
            .unwrap();
        assert_eq!(read(file.as_fd(), &mut buf), None, "a floor of 300");
        entry = notes::entry(COUNT, MAX as u64 + 1, key);
        file.write_at(&entry, PAGE as u64).unwrap();
        assert_eq!(read(file.as_fd(), &mut buf), None, "a count too large");
    }

    #[test]
    fn the_floor_is_the_last_kernel_thread_before_any_other_process() {
        let threads = [listed(2, 2), listed(3, 3), listed(7, 7), listed(301, 5)];
        let mut procs = vec![listed(1, 1), listed(2, 2), listed(3, 3), listed(7, 7)];
        procs.extend([listed(9, 9), listed(301, 5), listed(400, 4)]);
        assert_eq!(floor(&procs, &threads), 7, "PID 9 is a process");
        procs.remove(4);
        assert_eq!(floor(&procs, &threads), 7, "never beyond 299");
        assert_eq!(floor(&procs[..4], &threads), 1, "no PID of 300 or more yet");
        let later = [listed(1, 1), listed(2, 2), listed(3, 9), listed(350, 8)];
        assert_eq!(floor(&later, &threads), 2, "PID 3 is another process");
    }

    #[test]
    fn kernel_threads_are_matched_by_pid_and_inode() {
        let threads = [listed(2, 20), listed(3, 33)];
        assert!(contains(&threads, listed(3, 33)));
        assert!(!contains(&threads, listed(3, 34)), "PID reused");
        assert!(!contains(&threads, listed(4, 33)));
    }

    #[test]
    fn the_kernels_threads_are_kthreadd_and_its_children() {
        let dir = ProcDir::open().unwrap();
        let mut buf = [0u8; PAGE];
        let listed = dir.list(&mut buf);
        let threads = from_kernel(&dir, &listed, &mut buf);
        let me = std::process::id() as i32;
        assert!(threads.iter().all(|t| t.pid != me && t.pid != 1));
        for thread in threads.iter().filter(|t| t.pid != 2) {
            // One that exited meanwhile has no stat any more.
            if let Some(parent) = procfs::parent_of(thread.pid) {
                assert_eq!(parent, 2, "PID {}", thread.pid);
            }
        }
        // A thread that is not in the listing (it started after it) is
        // not taken, not even by its PID alone.
        if let Some(first) = threads.first() {
            let without: Vec<Listed> = listed
                .iter()
                .filter(|p| p.pid != first.pid)
                .copied()
                .collect();
            let again = from_kernel(&dir, &without, &mut buf);
            assert!(again.iter().all(|t| t.pid != first.pid));
        }
    }
}
