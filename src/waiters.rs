//! Who waits for the lock, noted in the lockfile (see `notes.rs`), so that
//! the holder's scan for outside syncs can pass over them without a look.
//!
//! The scan (see `syncers.rs`) does not count the processes that take part
//! in the lock: those that hold or wait for it, and their ancestors. It
//! still has to look at each of them to learn that: a readlink of the
//! executable, and for a shell a read of its command line. With syncs
//! queued for the lock that is most of the scan, and the scan lies between
//! one holder's release and the next one's command.
//!
//! So a synclock that finds the lock busy writes a slot into the lockfile
//! before it waits: its PID and its parent's, each with the inode number of
//! its /proc directory. A slot counts only while its waiter is listed in
//! /proc with the same inode, and its parent only while that one is too (a
//! process's parent changes only when the parent dies). The waiter clears
//! its slot once its command has started, or when it stops waiting.
//!
//! A lost slot (two waiters whose PIDs share a slot, a failed write, a
//! waiter in another PID namespace) only means that the waiter and its
//! parent are looked at like any other process: the slots can spare the
//! scan work, never make it miss a sync.
//!
//! While it waits, a synclock also notes its whole lineage (its ancestors,
//! each with its /proc inode), for its own scan once it holds the lock: our
//! ancestors never count either, and looking at each of them is a readlink
//! and, for the shells among them, a read of the command line.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::uio::{pread, pwrite};

use crate::notes::{self, HEADER_SIZE, PAGE};
use crate::plain;
use crate::procfs::{self, Listed};

/// PID, parent PID (4 bytes each), the two inode numbers and the seal (8
/// bytes each), little-endian.
const SLOT_SIZE: usize = 32;
/// Slots in all: with the header, the first page of notes.
const SLOTS: usize = (PAGE - HEADER_SIZE) / SLOT_SIZE;

/// One waiter as its slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    /// The waiting synclock.
    pub waiter: Listed,
    /// Its parent when it registered; PID 0 when it has none it can name
    /// (a parent in another PID namespace).
    pub parent: Listed,
}

impl Waiter {
    fn encode(&self, key: u64) -> [u8; SLOT_SIZE] {
        let mut slot = [0u8; SLOT_SIZE];
        slot[0..4].copy_from_slice(&self.waiter.pid.to_le_bytes());
        slot[4..8].copy_from_slice(&self.parent.pid.to_le_bytes());
        slot[8..16].copy_from_slice(&self.waiter.inode.to_le_bytes());
        slot[16..24].copy_from_slice(&self.parent.inode.to_le_bytes());
        let seal = notes::seal(key, &slot[..24]);
        slot[24..32].copy_from_slice(&seal.to_le_bytes());
        slot
    }

    fn decode(slot: &[u8], key: u64) -> Option<Waiter> {
        let slot: &[u8; SLOT_SIZE] = slot.try_into().ok()?;
        let seal = u64::from_le_bytes(slot[24..32].try_into().ok()?);
        if seal != notes::seal(key, &slot[..24]) {
            return None;
        }
        let pid = |at: usize| i32::from_le_bytes(slot[at..at + 4].try_into().unwrap_or_default());
        let inode = |at: usize| u64::from_le_bytes(slot[at..at + 8].try_into().unwrap_or_default());
        let waiter = Waiter {
            waiter: Listed {
                pid: pid(0),
                inode: inode(8),
            },
            parent: Listed {
                pid: pid(4),
                inode: inode(16),
            },
        };
        (waiter.waiter.pid > 0 && waiter.parent.pid >= 0).then_some(waiter)
    }
}

/// Where the slot of `pid` starts in the lockfile.
fn offset_of(pid: i32) -> i64 {
    let index = pid.unsigned_abs() as usize % SLOTS;
    (HEADER_SIZE + index * SLOT_SIZE) as i64
}

/// This process's slot in the lockfile, cleared when dropped, and its
/// lineage. It keeps a descriptor of its own for the lockfile (a duplicate
/// of the locked one, close-on-exec), so that it can outlive whichever code
/// path took the lock.
#[derive(Debug)]
pub struct Registration {
    fd: OwnedFd,
    slot: [u8; SLOT_SIZE],
    lineage: Vec<Listed>,
}

impl Registration {
    /// Our ancestors when we registered, parent first (see [`lineage`]).
    pub fn lineage(&self) -> &[Listed] {
        &self.lineage
    }
}

/// Ancestors noted at most: more than any real chain of wrappers.
const MAX_LINEAGE: usize = 16;

/// Writes this process's slot into the lockfile open on `lock`, unless the
/// file holds something other than notes; `None` when nothing was written.
pub fn register(lock: BorrowedFd<'_>) -> Option<Registration> {
    let key = notes::key()?;
    let me = Listed {
        pid: std::process::id() as i32,
        inode: procfs::directory_inode(None)?,
    };
    let parent = parent().unwrap_or(Listed { pid: 0, inode: 0 });
    if !notes::claim(lock) {
        return None;
    }
    let slot = Waiter { waiter: me, parent }.encode(key);
    if pwrite(lock, &slot, offset_of(me.pid)).ok()? != SLOT_SIZE {
        return None;
    }
    let fd = lock.try_clone_to_owned().ok();
    let Some(fd) = fd else {
        clear(lock, &slot, offset_of(me.pid));
        return None;
    };
    let lineage = lineage(me.pid, parent);
    if parent.pid > 0 {
        plain::note_parent(lock, parent);
    }
    Some(Registration { fd, slot, lineage })
}

/// The ancestors of `me`, from `parent` up, each with its /proc inode, as
/// far as they can be read (not beyond our PID namespace) and at most
/// [`MAX_LINEAGE`]. Each must have started no later than its child: a PID
/// that went to a new process since is not taken for an ancestor.
fn lineage(me: i32, parent: Listed) -> Vec<Listed> {
    let mut chain = Vec::new();
    let Some(mut child_start) = procfs::start_ticks(me) else {
        return chain;
    };
    let mut next = Some(parent).filter(|p| p.pid > 0);
    while let Some(link) = next
        && chain.len() < MAX_LINEAGE
    {
        let Some((grandparent, start)) = procfs::read_stat(link.pid) else {
            break;
        };
        if start > child_start {
            break;
        }
        chain.push(link);
        child_start = start;
        next = grandparent
            .and_then(|pid| procfs::directory_inode(Some(pid)).map(|inode| Listed { pid, inode }));
    }
    chain
}

/// Flags, among the `listed` processes (in PID order), our `lineage` (as
/// noted while we waited, parent first) as far as it still is ours: each
/// link listed with the same inode is the same process, and a process's
/// parent changes only when the parent dies, so the chain holds up to the
/// first link that is gone.
pub fn mark_lineage(flags: &mut [bool], listed: &[Listed], lineage: &[Listed]) {
    for &link in lineage {
        let Some(i) = procfs::position(listed, link) else {
            break;
        };
        flags[i] = true;
    }
}

/// Our parent's PID and /proc inode, if the parent is in our PID namespace.
/// The PID is asked again after the inode is read: had the parent died in
/// between (and its PID gone to a new process), we would have a new parent.
fn parent() -> Option<Listed> {
    let pid = nix::unistd::getppid().as_raw();
    if pid <= 0 {
        return None;
    }
    let inode = procfs::directory_inode(Some(pid))?;
    (nix::unistd::getppid().as_raw() == pid).then_some(Listed { pid, inode })
}

impl Drop for Registration {
    fn drop(&mut self) {
        let pid = i32::from_le_bytes(self.slot[0..4].try_into().unwrap_or_default());
        clear(self.fd.as_fd(), &self.slot, offset_of(pid));
    }
}

/// Zeroes the slot at `offset` if it still holds `slot` (another waiter
/// whose PID shares the slot may have taken it over since).
fn clear(lock: BorrowedFd<'_>, slot: &[u8; SLOT_SIZE], offset: i64) {
    let mut now = [0u8; SLOT_SIZE];
    if pread(lock, &mut now, offset).ok() == Some(SLOT_SIZE) && now == *slot {
        let _ = pwrite(lock, &[0u8; SLOT_SIZE], offset);
    }
}

/// The waiters whose slots are in `slots` (see [`notes::read`]). Dead ones
/// may be among them: check each against a listing of /proc (see
/// [`participants`]).
pub fn from_slots(slots: &[u8]) -> Vec<Waiter> {
    let used = || {
        slots
            .chunks_exact(SLOT_SIZE)
            .filter(|s| s.iter().any(|b| *b != 0))
    };
    // Only when there are slots is the key needed (a waiter has it already).
    let Some(key) = used().next().and_then(|_| notes::key()) else {
        return Vec::new();
    };
    used()
        .filter_map(|slot| Waiter::decode(slot, key))
        .collect()
}

/// Which of the `listed` processes (in PID order) the `waiters` show to
/// take part in the lock: each waiter that is listed with the inode of its
/// slot, and its parent when that is too. One flag per listed process.
pub fn participants(listed: &[Listed], waiters: &[Waiter]) -> Vec<bool> {
    let mut flags = vec![false; listed.len()];
    for waiter in waiters {
        if let Some(i) = procfs::position(listed, waiter.waiter) {
            flags[i] = true;
            if let Some(j) = procfs::position(listed, waiter.parent) {
                flags[j] = true;
            }
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const KEY: u64 = 0x1234;

    fn listed(pid: i32, inode: u64) -> Listed {
        Listed { pid, inode }
    }

    fn waiter(pid: i32, inode: u64, parent: i32, parent_inode: u64) -> Waiter {
        Waiter {
            waiter: listed(pid, inode),
            parent: listed(parent, parent_inode),
        }
    }

    #[test]
    fn slots_round_trip_and_fit_the_first_page() {
        assert_eq!(SLOTS, 127);
        let one = waiter(4242, 1 << 40, 17, 99);
        assert_eq!(Waiter::decode(&one.encode(KEY), KEY), Some(one));
        assert!(offset_of(i32::MAX) as usize + SLOT_SIZE <= PAGE);
        assert_eq!(offset_of(1), offset_of(1 + SLOTS as i32));
    }

    #[test]
    fn a_torn_foreign_or_other_boots_slot_is_no_slot() {
        let slot = waiter(4242, 77, 17, 99).encode(KEY);
        for byte in 0..SLOT_SIZE {
            let mut torn = slot;
            torn[byte] ^= 0x10;
            assert_eq!(Waiter::decode(&torn, KEY), None, "byte {byte} changed");
        }
        assert_eq!(Waiter::decode(&[0u8; SLOT_SIZE], KEY), None);
        assert_eq!(Waiter::decode(&slot[..20], KEY), None);
        assert_eq!(Waiter::decode(&slot, KEY + 1), None, "another host's");
        // A slot whose fields were written over by another waiter's.
        let mut mixed = slot;
        mixed[..8].copy_from_slice(&waiter(5000, 1, 2, 3).encode(KEY)[..8]);
        assert_eq!(Waiter::decode(&mixed, KEY), None);
    }

    #[test]
    fn our_lineage_counts_up_to_the_first_link_that_is_gone() {
        let procs = [
            listed(1, 10),
            listed(17, 99),
            listed(30, 5),
            listed(4242, 77),
        ];
        let marked = |lineage: &[Listed]| {
            let mut flags = vec![false; procs.len()];
            mark_lineage(&mut flags, &procs, lineage);
            flags
        };
        let lineage = [listed(4242, 77), listed(30, 5), listed(1, 10)];
        assert_eq!(marked(&lineage), [true, false, true, true]);
        // PID 30 is another process now: what was above it is not ours.
        let lineage = [listed(4242, 77), listed(30, 6), listed(1, 10)];
        assert_eq!(marked(&lineage), [false, false, false, true]);
    }

    #[test]
    fn this_processes_lineage_is_read_from_proc() {
        let me = std::process::id() as i32;
        let chain = lineage(me, parent().expect("a parent here"));
        assert!(!chain.is_empty());
        assert_eq!(chain[0].pid, nix::unistd::getppid().as_raw());
        let listed = procfs::ProcDir::open().unwrap().list(&mut [0u8; 8192]);
        let mut flags = vec![false; listed.len()];
        mark_lineage(&mut flags, &listed, &chain);
        assert_eq!(flags.iter().filter(|f| **f).count(), chain.len());
        for pair in chain.windows(2) {
            assert_eq!(procfs::parent_of(pair[0].pid), Some(pair[1].pid));
        }
    }

    #[test]
    fn participants_are_the_listed_waiters_and_their_listed_parents() {
        let procs = [
            listed(1, 10),
            listed(17, 99),
            listed(30, 5),
            listed(4242, 77),
            listed(5000, 8),
        ];
        let waiters = [
            waiter(4242, 77, 17, 99), // alive, parent alive
            waiter(30, 6, 1, 10),     // PID 30 is now another process
            waiter(5000, 8, 31, 4),   // parent gone
            waiter(6000, 1, 1, 10),   // waiter gone
        ];
        let flags = participants(&procs, &waiters);
        assert_eq!(flags, [false, true, false, true, true]);
    }

    fn lockfile(contents: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(contents).unwrap();
        file
    }

    fn contents(file: &std::fs::File) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut all = vec![0u8; 3 * PAGE];
        let len = file.read_at(&mut all, 0).unwrap();
        all.truncate(len);
        all
    }

    #[test]
    fn a_registration_is_read_back_and_cleared_when_dropped() {
        let file = lockfile(b"");
        let registration = register(file.as_fd()).expect("registered");
        let mut buf = [0u8; notes::SIZE];
        let waiters = from_slots(notes::read(file.as_fd(), &mut buf).slots);
        let me = std::process::id() as i32;
        assert_eq!(waiters.len(), 1);
        assert_eq!(waiters[0].waiter.pid, me);
        assert_eq!(waiters[0].parent.pid, nix::unistd::getppid().as_raw());
        let listed = procfs::ProcDir::open().unwrap().list(&mut buf.clone());
        let flags = participants(&listed, &waiters);
        let mine = listed.iter().position(|p| p.pid == me).unwrap();
        assert!(flags[mine], "this process is listed with its inode");
        drop(registration);
        assert_eq!(from_slots(notes::read(file.as_fd(), &mut buf).slots), []);
        assert_eq!(contents(&file)[..HEADER_SIZE], notes::HEADER);
    }

    #[test]
    fn a_file_with_other_contents_is_never_written() {
        for before in [&b"precious\n"[..], b"synclock notes 0\n", b"x"] {
            let file = lockfile(before);
            assert!(register(file.as_fd()).is_none());
            let mut buf = [0u8; notes::SIZE];
            assert_eq!(from_slots(notes::read(file.as_fd(), &mut buf).slots), []);
            assert_eq!(contents(&file), before);
        }
    }
}
