//! Shells that are no sync, noted in the lockfile (see `notes.rs`) so that
//! the holder's scan for outside syncs need not read their command lines.
//!
//! The scan reads the command line of every shell that does not take part
//! in the lock. That read takes the lock on the shell's memory map, and a
//! shell whose synclock has just ended is often forking its next command,
//! which holds that lock: the read then waits until the fork is done, half
//! a millisecond on average, between one holder's release and the next
//! one's command.
//!
//! A process keeps its command line until it calls exec, and Linux marks a
//! forked process that has not called exec since (`PF_FORKNOEXEC`, in the
//! flags of /proc/PID/stat, which can be read without waiting for the
//! memory map). So a synclock that waits for the lock, and whose parent is
//! such a process (a subshell, a loop run in the background), reads its
//! parent's command line, and when that shows no sync, notes the parent
//! here by PID and /proc inode. The scan passes over a noted process
//! exactly while it is listed with that inode and its stat still shows it
//! forked and not exec'd: then it runs the image whose command line was
//! judged. A process that exec'd since (into `emerge --sync`, say) has lost
//! the mark and is looked at like any other.
//!
//! A note stays valid for the process's whole life, so notes are never
//! cleared; a PID that falls on a used entry takes it over. A lost note
//! only means the process is looked at.

use std::os::fd::BorrowedFd;

use nix::sys::uio::{pread, pwrite};

use crate::notes::{self, ENTRY, PLAIN};
use crate::procfs::{Listed, ProcDir};
use crate::syncers;

/// The process the entry for `pid` names, as read from the lockfile open
/// on `lock`, if that entry is sealed under `key`.
fn entry_for(lock: BorrowedFd<'_>, pid: i32, key: u64) -> Option<(i32, u64)> {
    let mut entry = [0u8; ENTRY];
    (pread(lock, &mut entry, PLAIN.offset_of(pid)) == Ok(ENTRY) && entry != [0u8; ENTRY])
        .then(|| notes::read_entry(&entry, key))
        .flatten()
}

/// Whether `process` (a PID as listed, with its /proc inode) is noted in
/// the lockfile open on `lock`. The caller must still see that it has not
/// called exec since.
pub fn is_noted(lock: BorrowedFd<'_>, process: Listed) -> bool {
    notes::key().and_then(|key| entry_for(lock, process.pid, key))
        == Some((process.pid, process.inode))
}

/// Notes `parent`, the parent of this waiting synclock, in the lockfile
/// open on `lock` (which holds notes), if it is a process forked without
/// exec whose command line shows no sync, and is not noted yet.
pub fn note_parent(lock: BorrowedFd<'_>, parent: Listed) {
    let Some(key) = notes::key() else {
        return;
    };
    if entry_for(lock, parent.pid, key) == Some((parent.pid, parent.inode)) {
        return;
    }
    let Ok(proc_dir) = ProcDir::open() else {
        return;
    };
    let mut buf = [0u8; notes::SIZE];
    if !proc_dir.forked_without_exec(parent.pid, &mut buf)
        || !syncers::never_a_sync(&proc_dir, parent.pid, &mut buf)
    {
        return;
    }
    // Still our parent, so still the process with that inode: had it
    // died, we would have another parent.
    if nix::unistd::getppid().as_raw() == parent.pid {
        let _ = pwrite(
            lock,
            &notes::entry(parent.pid, parent.inode, key),
            PLAIN.offset_of(parent.pid),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notes::PAGE;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn entries_are_in_the_third_page_by_pid() {
        assert_eq!(PLAIN.offset_of(0), 2 * PAGE as i64);
        assert_eq!(
            PLAIN.offset_of(PLAIN.len() as i32 - 1) as usize + ENTRY,
            3 * PAGE
        );
        assert_eq!(PLAIN.offset_of(7), PLAIN.offset_of(7 + PLAIN.len() as i32));
    }

    #[test]
    fn a_process_is_noted_only_with_its_pid_and_inode_under_a_good_seal() {
        let file = tempfile::tempfile().unwrap();
        let lock = file.as_fd();
        let key = notes::key().unwrap();
        let shell = Listed {
            pid: 4242,
            inode: 77,
        };
        assert!(!is_noted(lock, shell), "nothing noted yet");
        let at = PLAIN.offset_of(shell.pid) as u64;
        file.write_at(&notes::entry(4242, 77, key), at).unwrap();
        assert!(is_noted(lock, shell));
        assert!(
            !is_noted(
                lock,
                Listed {
                    pid: 4242,
                    inode: 78
                }
            ),
            "PID reused"
        );
        let same_entry = Listed {
            pid: 4242 + PLAIN.len() as i32,
            inode: 77,
        };
        assert!(!is_noted(lock, same_entry), "another PID on that entry");
        file.write_at(&notes::entry(4242, 77, key + 1), at).unwrap();
        assert!(!is_noted(lock, shell), "another boot's entry");
        let mut torn = notes::entry(4242, 77, key);
        torn[9] ^= 1;
        file.write_at(&torn, at).unwrap();
        assert!(!is_noted(lock, shell), "a torn entry");
    }

    #[test]
    fn a_parent_that_exec_d_is_not_noted() {
        // The test binary's parent (cargo, or a shell) exec'd: noting it
        // would be of no use, and nothing is written.
        let file = tempfile::tempfile().unwrap();
        let pid = nix::unistd::getppid().as_raw();
        let inode = crate::procfs::directory_inode(Some(pid)).unwrap();
        note_parent(file.as_fd(), Listed { pid, inode });
        assert_eq!(file.metadata().unwrap().len(), 0);
    }
}
