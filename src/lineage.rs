//! Our ancestors, read while we wait for the lock, so that our scan for
//! outside syncs passes over them once we hold it: our ancestors never
//! count, and looking at each of them costs a readlink and, for the shells
//! among them, a read of the command line, on the hand-off path.
//!
//! Reading them costs two reads of /proc per ancestor, and syncs queued
//! from the same shell share all their ancestors. So each link learnt (a
//! process and its parent, each by PID and /proc inode) is noted in the
//! fourth page of the lockfile's notes (see `notes.rs`), where the next
//! waiter finds it with one `pread`. A link stays true for as long as the
//! parent lives: a process's parent changes only when its parent dies.
//! The scan relies on that too: it takes our lineage up to the first link
//! that is not listed in /proc with its inode (see [`mark`]), so a stale
//! link never makes it pass over a process that is not our ancestor.

use std::os::fd::BorrowedFd;

use nix::sys::uio::{pread, pwrite};

use crate::notes::{LINK, LINKS, Link};
use crate::procfs::{self, Listed};

/// Ancestors read at most: more than any real chain of wrappers.
const MAX: usize = 16;
/// Which link of its pair a new link of `pid` takes, given the pair's
/// links as noted: the one that is `pid`'s already, else one that is no
/// link, else the one `pid` itself picks (so that two PIDs that keep
/// meeting on a pair mostly pick different ones).
fn slot_for(pid: i32, pair: &[Option<Link>; 2]) -> usize {
    let own = pair
        .iter()
        .position(|link| link.is_some_and(|l| l.child.pid == pid));
    let free = pair.iter().position(Option::is_none);
    own.or(free)
        .unwrap_or((pid.unsigned_abs() as usize / LINKS.len()) % 2)
}

/// The links noted in the pair for `pid`.
fn pair_for(lock: BorrowedFd<'_>, pid: i32, key: u64) -> [Option<Link>; 2] {
    let mut bytes = [0u8; 2 * LINK];
    let len = pread(lock, &mut bytes, LINKS.offset_of(pid)).unwrap_or(0);
    let link = |at: usize| {
        bytes
            .get(at..at + LINK)
            .filter(|_| len >= at + LINK)
            .and_then(|b| Link::decode(b, key))
    };
    [link(0), link(LINK)]
}

/// Notes `link` in the lockfile open on `lock`, given its pair as read.
fn note(lock: BorrowedFd<'_>, link: Link, pair: &[Option<Link>; 2], key: u64) {
    let at = LINKS.offset_of(link.child.pid) + (slot_for(link.child.pid, pair) * LINK) as i64;
    let _ = pwrite(lock, &link.encode(key), at);
}

/// The ancestors of this process from `parent` (our parent when we looked,
/// see `waiters.rs`) up, as far as they can be read (not beyond our PID
/// namespace) and at most [`MAX`]. Links are taken from the lockfile open
/// on `lock` (which holds notes; `key` seals them) where noted, and else
/// read from /proc and noted there.
pub fn read(lock: BorrowedFd<'_>, parent: Listed, key: u64) -> Vec<Listed> {
    let mut chain = Vec::new();
    let mut next = Some(parent).filter(|p| p.pid > 0);
    // The stat of the next link, when we have just read it.
    let mut read_ahead = None;
    while let Some(link) = next
        && chain.len() < MAX
    {
        chain.push(link);
        let pair = pair_for(lock, link.pid, key);
        if let Some(noted) = parent_in(&pair, link) {
            next = Some(noted).filter(|p| p.pid > 0);
            read_ahead = None;
            continue;
        }
        let Some((parent, ahead)) = parent_of(link, read_ahead.take()) else {
            break;
        };
        let top = Listed { pid: 0, inode: 0 };
        let learnt = Link {
            child: link,
            parent: parent.unwrap_or(top),
        };
        note(lock, learnt, &pair, key);
        next = parent;
        read_ahead = ahead;
    }
    chain
}

/// The parent of `process` as noted in its `pair` of links.
fn parent_in(pair: &[Option<Link>; 2], process: Listed) -> Option<Listed> {
    pair.iter()
        .flatten()
        .find(|link| link.child == process)
        .map(|link| link.parent)
}

/// The parent of `process` (`None`: at the top of our PID namespace) read
/// from /proc, with the parent's PID and start from its stat, which the
/// next link can use. `stat` is `process`'s own, when already read.
///
/// `process` must still have its inode after its stat is read: else the
/// stat may be another's that took its PID. The parent must have started
/// no later than `process`: a process that took the parent's PID after the
/// parent died did not.
fn parent_of(process: Listed, stat: Option<Stat>) -> Option<(Option<Listed>, Option<Stat>)> {
    let stat = match stat {
        Some(stat) => stat,
        None => {
            let stat = Stat::read(process.pid)?;
            (procfs::directory_inode(Some(process.pid)) == Some(process.inode)).then_some(stat)?
        }
    };
    let Some(pid) = stat.parent else {
        return Some((None, None));
    };
    let inode = procfs::directory_inode(Some(pid))?;
    let parent_stat = Stat::read(pid).filter(|parent| parent.start <= stat.start)?;
    Some((Some(Listed { pid, inode }), Some(parent_stat)))
}

/// What the lineage needs of `/proc/PID/stat`.
#[derive(Clone, Copy)]
struct Stat {
    parent: Option<i32>,
    start: u64,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        procfs::read_stat(pid).map(|(parent, start)| Stat { parent, start })
    }
}

/// Flags, among the `listed` processes (in PID order), our `lineage` (as
/// read while we waited, parent first) as far as it still is ours: each
/// link listed with the same inode is the same process, and a process's
/// parent changes only when the parent dies, so the chain holds up to the
/// first link that is gone.
pub fn mark(flags: &mut [bool], listed: &[Listed], lineage: &[Listed]) {
    for &link in lineage {
        let Some(i) = procfs::position(listed, link) else {
            break;
        };
        flags[i] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notes;
    use std::os::fd::AsFd;

    fn listed(pid: i32, inode: u64) -> Listed {
        Listed { pid, inode }
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
            mark(&mut flags, &procs, lineage);
            flags
        };
        let lineage = [listed(4242, 77), listed(30, 5), listed(1, 10)];
        assert_eq!(marked(&lineage), [true, false, true, true]);
        // PID 30 is another process now: what was above it is not ours.
        let lineage = [listed(4242, 77), listed(30, 6), listed(1, 10)];
        assert_eq!(marked(&lineage), [false, false, false, true]);
    }

    fn our_parent() -> Listed {
        let pid = nix::unistd::getppid().as_raw();
        listed(pid, procfs::directory_inode(Some(pid)).unwrap())
    }

    #[test]
    fn this_processes_lineage_is_read_from_proc_and_noted() {
        let key = notes::key().unwrap();
        let file = tempfile::tempfile().unwrap();
        let chain = read(file.as_fd(), our_parent(), key);
        assert!(!chain.is_empty());
        assert_eq!(chain[0], our_parent());
        let all = procfs::ProcDir::open().unwrap().list(&mut [0u8; 8192]);
        let mut flags = vec![false; all.len()];
        mark(&mut flags, &all, &chain);
        assert_eq!(flags.iter().filter(|f| **f).count(), chain.len());
        for pair in chain.windows(2) {
            assert_eq!(procfs::parent_of(pair[0].pid), Some(pair[1].pid));
            let noted = pair_for(file.as_fd(), pair[0].pid, key);
            assert_eq!(parent_in(&noted, pair[0]), Some(pair[1]));
        }
        // Read again, every link comes from the notes: with the file's
        // links made to say otherwise, the chain says so too.
        assert_eq!(read(file.as_fd(), our_parent(), key), chain);
        let made_up = Link {
            child: chain[0],
            parent: listed(1, 12345),
        };
        let first = pair_for(file.as_fd(), chain[0].pid, key);
        note(file.as_fd(), made_up, &first, key);
        let from_notes = read(file.as_fd(), our_parent(), key);
        assert_eq!(from_notes, [chain[0], listed(1, 12345)]);
    }

    #[test]
    fn a_link_of_another_process_or_boot_is_not_taken() {
        let key = notes::key().unwrap();
        let file = tempfile::tempfile().unwrap();
        let lock = file.as_fd();
        let child = listed(4242, 77);
        let link = Link {
            child,
            parent: listed(17, 99),
        };
        note(lock, link, &pair_for(lock, 4242, key), key);
        let pair = pair_for(lock, 4242, key);
        assert_eq!(parent_in(&pair, child), Some(listed(17, 99)));
        assert_eq!(parent_in(&pair, listed(4242, 78)), None, "PID reused");
        assert_eq!(
            parent_in(&pair_for(lock, 4242, key + 1), child),
            None,
            "another boot's"
        );
    }

    #[test]
    fn two_pids_on_one_pair_are_both_kept() {
        let key = notes::key().unwrap();
        let file = tempfile::tempfile().unwrap();
        let lock = file.as_fd();
        let (a, b, c) = (
            listed(7, 1),
            listed(7 + LINKS.len() as i32, 2),
            listed(7 + 2 * LINKS.len() as i32, 3),
        );
        let link = |child| Link {
            child,
            parent: listed(1, 10),
        };
        for process in [a, b, a, b] {
            note(lock, link(process), &pair_for(lock, process.pid, key), key);
        }
        let pair = pair_for(lock, 7, key);
        assert!(parent_in(&pair, a).is_some() && parent_in(&pair, b).is_some());
        // A third takes one of the two; a link is only ever replaced, not torn.
        note(lock, link(c), &pair, key);
        let pair = pair_for(lock, 7, key);
        assert!(parent_in(&pair, c).is_some());
        assert!(parent_in(&pair, a).is_some() != parent_in(&pair, b).is_some());
    }

    #[test]
    fn a_process_that_is_not_what_its_inode_says_has_no_parent_read() {
        let me = std::process::id() as i32;
        let mine = procfs::directory_inode(None).unwrap();
        assert!(parent_of(listed(me, mine), None).is_some());
        assert!(parent_of(listed(me, mine + 1), None).is_none());
        assert!(parent_of(listed(-1, 1), None).is_none());
    }
}
