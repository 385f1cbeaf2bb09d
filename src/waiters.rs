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
//! While it waits, a synclock also reads its lineage (see `lineage.rs`)
//! and notes its parent if that is a plain shell (see `plain.rs`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::uio::{pread, pwrite};

use crate::lineage;
use crate::notes::{self, SLOTS};
use crate::plain;
use crate::procfs::{self, Listed};

/// A slot: one [`notes::Link`], the waiter and its parent.
const SLOT_SIZE: usize = notes::LINK;

/// One waiter as its slot says: the waiter is the link's child.
pub type Waiter = notes::Link;

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
    /// Our ancestors when we registered, parent first (see `lineage.rs`).
    pub fn lineage(&self) -> &[Listed] {
        &self.lineage
    }
}

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
    let slot = Waiter { child: me, parent }.encode(key);
    if pwrite(lock, &slot, SLOTS.offset_of(me.pid)).ok()? != SLOT_SIZE {
        return None;
    }
    let fd = lock.try_clone_to_owned().ok();
    let Some(fd) = fd else {
        clear(lock, &slot, SLOTS.offset_of(me.pid));
        return None;
    };
    let lineage = lineage::read(lock, parent, key);
    if parent.pid > 0 {
        plain::note_parent(lock, parent);
    }
    Some(Registration { fd, slot, lineage })
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
        clear(self.fd.as_fd(), &self.slot, SLOTS.offset_of(pid));
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
        if let Some(i) = procfs::position(listed, waiter.child) {
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
    use crate::notes::{HEADER_SIZE, PAGE};
    use std::io::Write;

    const KEY: u64 = 0x1234;

    fn listed(pid: i32, inode: u64) -> Listed {
        Listed { pid, inode }
    }

    fn waiter(pid: i32, inode: u64, parent: i32, parent_inode: u64) -> Waiter {
        Waiter {
            child: listed(pid, inode),
            parent: listed(parent, parent_inode),
        }
    }

    #[test]
    fn slots_round_trip_and_fit_the_first_page() {
        assert_eq!(SLOTS.len(), 127);
        let one = waiter(4242, 1 << 40, 17, 99);
        assert_eq!(Waiter::decode(&one.encode(KEY), KEY), Some(one));
        assert!(SLOTS.offset_of(i32::MAX) as usize + SLOT_SIZE <= PAGE);
        assert_eq!(SLOTS.offset_of(1), SLOTS.offset_of(1 + SLOTS.len() as i32));
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
        assert_eq!(waiters[0].child.pid, me);
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
