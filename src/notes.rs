//! What synclocks note for each other in the lockfile itself: who waits
//! for the lock (`waiters.rs`), which processes are kernel threads
//! (`kthreads.rs`), which cannot be a sync while they live (`plain.rs`),
//! and who is whose parent (`lineage.rs`), so that the holder's scan for
//! outside syncs can pass over them without a look, and a waiter learns
//! its ancestors with few reads.
//!
//! The lockfile is the natural place: every synclock has it open already,
//! it belongs to one lock, and only its owner can write it (0600, checked
//! on open). synclock writes into a lockfile only when it is empty or
//! starts with [`HEADER`], never into a file that someone gave as
//! `--lockfile` and that holds anything else.
//!
//! Layout: four 4 KiB pages. The first holds the header and the waiters'
//! slots, the second the kernel threads, the third the plain processes,
//! the fourth links of lineages. Every record in them names
//! processes by PID and the inode number of their /proc directory: /proc
//! keeps one inode for a process as long as it lives, a later process with
//! the same PID gets another, and the holder's listing of /proc reports
//! every process's inode for free.
//!
//! Every record is sealed with a hash of its fields keyed with this boot's
//! id (`/proc/sys/kernel/random/boot_id`): a record read while it is being
//! written, bytes that are not a record, or a record written on another
//! host sharing the lockfile (whose PIDs and inodes are not ours) fail the
//! seal and count as no record.

use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use nix::sys::uio::{pread, pwrite};

use crate::procfs::Listed;

/// The start of a lockfile that holds notes.
pub const HEADER: [u8; HEADER_SIZE] = *b"synclock notes 1\n\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
/// The header's length.
pub const HEADER_SIZE: usize = 32;
/// The size of a page of notes.
pub const PAGE: usize = 4096;
/// The first two pages of notes: [`read`] wants a buffer this long.
pub const SIZE: usize = 2 * PAGE;

/// A part of the notes: a table of records of one size, each PID's record
/// (or group of records) at the PID modulo the table's length.
#[derive(Clone, Copy)]
pub struct Table {
    /// Where it starts in the lockfile.
    pub start: usize,
    /// The size of a PID's records.
    pub size: usize,
}

/// The waiters' slots: the first page, after the header (`waiters.rs`).
pub const SLOTS: Table = Table {
    start: HEADER_SIZE,
    size: LINK,
};
/// The kernel threads: the second page, written whole (`kthreads.rs`).
pub const KERNEL: usize = PAGE;
/// The plain shells: the third page (`plain.rs`).
pub const PLAIN: Table = Table {
    start: 2 * PAGE,
    size: ENTRY,
};
/// Lineage links, two to a PID: the fourth page (`lineage.rs`).
pub const LINKS: Table = Table {
    start: 3 * PAGE,
    size: 2 * LINK,
};

impl Table {
    /// How many PIDs' records the table holds: up to the end of its page.
    pub const fn len(self) -> usize {
        (PAGE - self.start % PAGE) / self.size
    }

    /// Where the records of `pid` start in the lockfile.
    pub fn offset_of(self, pid: i32) -> i64 {
        let index = pid.unsigned_abs() as usize % self.len();
        (self.start + index * self.size) as i64
    }
}
/// The size of an entry naming one process (see [`entry`]).
pub const ENTRY: usize = 16;

/// This boot's key for sealing notes, or `None` when the boot id cannot be
/// read (then no note is written or trusted).
pub fn key() -> Option<u64> {
    static KEY: OnceLock<Option<u64>> = OnceLock::new();
    *KEY.get_or_init(|| {
        use std::io::Read;
        // One read: the id is 37 bytes.
        let mut id = [0u8; 64];
        let mut file = std::fs::File::open("/proc/sys/kernel/random/boot_id").ok()?;
        let len = file.read(&mut id).ok()?;
        (len >= 32).then(|| fnv(FNV_START, &id[..len]))
    })
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits, from `hash` over `bytes`.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// The seal of a record's `fields` under `key`; never the seal of nothing,
/// so that zeroed bytes are no record.
pub fn seal(key: u64, fields: &[u8]) -> u64 {
    fnv(key ^ FNV_START, fields) | 1
}

/// The low half of the seal of an entry's PID and inode.
fn check(pid: i32, inode: u64, key: u64) -> u32 {
    let mut fields = [0u8; 12];
    fields[..4].copy_from_slice(&pid.to_le_bytes());
    fields[4..].copy_from_slice(&inode.to_le_bytes());
    seal(key, &fields) as u32
}

/// An entry naming a process by `pid` and `inode` (or, with a negative
/// PID, a number kept in the inode field), sealed under `key`: the PID (4
/// bytes), the low half of the seal (4), the inode number (8), little-endian.
pub fn entry(pid: i32, inode: u64, key: u64) -> [u8; ENTRY] {
    let mut entry = [0u8; ENTRY];
    entry[0..4].copy_from_slice(&pid.to_le_bytes());
    entry[4..8].copy_from_slice(&check(pid, inode, key).to_le_bytes());
    entry[8..16].copy_from_slice(&inode.to_le_bytes());
    entry
}

/// The PID and inode in `entry` (see [`entry`]), if its seal holds under
/// `key`.
pub fn read_entry(entry: &[u8], key: u64) -> Option<(i32, u64)> {
    let entry: &[u8; ENTRY] = entry.try_into().ok()?;
    let pid = i32::from_le_bytes(entry[0..4].try_into().ok()?);
    let inode = u64::from_le_bytes(entry[8..16].try_into().ok()?);
    let sealed = u32::from_le_bytes(entry[4..8].try_into().ok()?);
    (sealed == check(pid, inode, key)).then_some((pid, inode))
}

/// The size of a [`Link`] as written.
pub const LINK: usize = 32;

/// A process and its parent, each by PID and /proc inode: a waiter's slot
/// (`waiters.rs`), or a link of someone's lineage (`lineage.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The process.
    pub child: Listed,
    /// Its parent; PID 0 when it has none that can be named (at the top
    /// of our PID namespace, or in another one).
    pub parent: Listed,
}

impl Link {
    /// The link as written, sealed under `key`: the two PIDs (4 bytes
    /// each), the two inode numbers and the seal (8 bytes each),
    /// little-endian.
    pub fn encode(&self, key: u64) -> [u8; LINK] {
        let mut bytes = [0u8; LINK];
        bytes[0..4].copy_from_slice(&self.child.pid.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.parent.pid.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.child.inode.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.parent.inode.to_le_bytes());
        let seal = seal(key, &bytes[..24]);
        bytes[24..32].copy_from_slice(&seal.to_le_bytes());
        bytes
    }

    /// The link in `bytes`, if its seal holds under `key` and its PIDs can
    /// be ones.
    pub fn decode(bytes: &[u8], key: u64) -> Option<Link> {
        let bytes: &[u8; LINK] = bytes.try_into().ok()?;
        let sealed = u64::from_le_bytes(bytes[24..32].try_into().ok()?);
        if sealed != seal(key, &bytes[..24]) {
            return None;
        }
        let pid = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let inode =
            |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let link = Link {
            child: Listed {
                pid: pid(0),
                inode: inode(8),
            },
            parent: Listed {
                pid: pid(4),
                inode: inode(16),
            },
        };
        (link.child.pid > 0 && link.parent.pid >= 0).then_some(link)
    }
}

/// Makes sure the lockfile open on `lock` holds notes: writes the header
/// into an empty one. False when it holds anything else, or on an error:
/// then nothing is to be written into it.
pub fn claim(lock: BorrowedFd<'_>) -> bool {
    let mut start = [0u8; HEADER_SIZE];
    match pread(lock, &mut start, 0) {
        Ok(0) => pwrite(lock, &HEADER, 0) == Ok(HEADER_SIZE),
        Ok(HEADER_SIZE) => start == HEADER,
        Ok(_) | Err(_) => false,
    }
}

/// The first two pages of notes, as read from the lockfile (the third is
/// read an entry at a time, see `plain.rs`).
pub struct Pages<'b> {
    /// The waiters' slots: the first page without the header.
    pub slots: &'b [u8],
    /// The second page: the kernel threads.
    pub kernel: &'b [u8],
}

/// Reads the first two pages of notes in the lockfile open on `lock` with
/// one pread into `buf` ([`SIZE`] long); both parts are empty when it holds
/// no notes.
pub fn read<'b>(lock: BorrowedFd<'_>, buf: &'b mut [u8]) -> Pages<'b> {
    let buf = &mut buf[..SIZE];
    let len = pread(lock, buf, 0).unwrap_or(0);
    let notes = &buf[..len];
    match notes.strip_prefix(&HEADER) {
        Some(_) => {
            let (first, second) = notes.split_at(notes.len().min(KERNEL));
            Pages {
                slots: &first[HEADER_SIZE..],
                kernel: second,
            }
        }
        None => Pages {
            slots: &[],
            kernel: &[],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn seals_depend_on_the_key_and_every_byte() {
        let fields = *b"0123456789abcdef";
        let sealed = seal(7, &fields);
        assert_ne!(sealed, seal(8, &fields), "another boot's key");
        for byte in 0..fields.len() {
            let mut changed = fields;
            changed[byte] ^= 1;
            assert_ne!(sealed, seal(7, &changed), "byte {byte}");
        }
        assert_ne!(seal(0, &[0; 16]), 0);
        assert!(key().is_some(), "this machine has a boot id");
        assert_eq!(key(), key());
    }

    fn file(contents: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(contents).unwrap();
        file
    }

    fn listed(pid: i32, inode: u64) -> Listed {
        Listed { pid, inode }
    }

    #[test]
    fn links_round_trip_and_a_torn_or_foreign_one_is_none() {
        let link = Link {
            child: listed(4242, 1 << 40),
            parent: listed(17, 99),
        };
        let bytes = link.encode(7);
        assert_eq!(Link::decode(&bytes, 7), Some(link));
        for byte in 0..LINK {
            let mut torn = bytes;
            torn[byte] ^= 0x10;
            assert_eq!(Link::decode(&torn, 7), None, "byte {byte} changed");
        }
        assert_eq!(Link::decode(&bytes, 8), None, "another boot's");
        // Fields written over by another link's.
        let mut mixed = bytes;
        let other = Link {
            child: listed(5000, 1),
            parent: listed(2, 3),
        };
        mixed[..8].copy_from_slice(&other.encode(7)[..8]);
        assert_eq!(Link::decode(&mixed, 7), None);
        assert_eq!(Link::decode(&[0u8; LINK], 7), None);
        assert_eq!(Link::decode(&bytes[..20], 7), None);
        let top = Link {
            child: listed(1, 5),
            parent: listed(0, 0),
        };
        assert_eq!(Link::decode(&top.encode(7), 7), Some(top));
    }

    #[test]
    fn each_table_fills_its_own_page() {
        for (table, page) in [(SLOTS, 0), (PLAIN, 2), (LINKS, 3)] {
            assert_eq!(table.start / PAGE, page);
            let end = table.offset_of(table.len() as i32 - 1) as usize + table.size;
            assert!(end <= (page + 1) * PAGE && end + table.size > (page + 1) * PAGE);
            assert_eq!(table.offset_of(5), table.offset_of(5 + table.len() as i32));
        }
        assert_eq!(KERNEL / PAGE, 1);
        assert_eq!((SLOTS.len(), PLAIN.len(), LINKS.len()), (127, 256, 64));
    }

    #[test]
    fn only_an_empty_lockfile_or_one_with_notes_is_claimed() {
        let empty = file(b"");
        assert!(claim(empty.as_fd()));
        assert!(claim(empty.as_fd()), "claimed again");
        let mut buf = [0u8; SIZE];
        assert_eq!(read(empty.as_fd(), &mut buf).slots, b"");
        for other in [&b"precious\n"[..], b"synclock notes 0\n", b"x"] {
            let other = file(other);
            assert!(!claim(other.as_fd()));
            let pages = read(other.as_fd(), &mut buf);
            assert_eq!((pages.slots, pages.kernel), (&b""[..], &b""[..]));
        }
    }
}
