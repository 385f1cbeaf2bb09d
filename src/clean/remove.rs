//! Removing a leftover tree the way `rm -rf` does, but never following a
//! symlink: every step is relative to an opened directory (`openat` with
//! `O_NOFOLLOW`, `unlinkat`), and a mount point is left alone. The top
//! directory's entries are shared among up to 4 threads.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::libc;
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// The first thing that could not be removed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where (for messages only).
    pub path: PathBuf,
    /// The kernel's answer.
    pub errno: Errno,
}

/// What a removal did: entries removed (or, in a dry run, found), and the
/// first failure if any.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Entries removed or counted, the top one included.
    pub entries: u64,
    /// The first entry that could not be removed.
    pub failure: Option<Failure>,
}

/// Opens a directory to work in, following symlinks only in `path` itself
/// (a repository location may be reached through one, as Portage's realpath).
pub fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
}

/// Opens the subdirectory `name` of `parent` without following a symlink.
pub fn open_subdir(parent: BorrowedFd<'_>, name: &Path) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(parent, name, flags, Mode::empty())
}

/// Opens the directory `relative` (plain names only) below `dir`, one
/// component at a time, without following a symlink.
pub fn walk(dir: BorrowedFd<'_>, relative: &Path) -> Option<OwnedFd> {
    let mut current = dir.try_clone_to_owned().ok()?;
    for part in relative.components() {
        let std::path::Component::Normal(name) = part else { return None };
        current = open_subdir(current.as_fd(), Path::new(name)).ok()?;
    }
    Some(current)
}

/// The regular file `name` in `dir`, read without following a symlink or
/// blocking (a fifo), when it holds at most `max` bytes.
pub fn read_small_at(dir: BorrowedFd<'_>, name: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).ok()?;
    let stat = fstat(fd.as_fd()).ok()?;
    if kind(&stat) != libc::S_IFREG || u64::try_from(stat.st_size).ok()? > max {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd).take(max + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= max).then_some(bytes)
}

/// The mount the open `dir` is on (`statx`'s `STATX_MNT_ID`): a bind mount
/// of the same file system has the same device but another mount.
fn mount_of(dir: BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the path is an empty C string and `stx` a buffer of the right
    // size; with AT_EMPTY_PATH the kernel describes `dir` itself.
    let done = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    // SAFETY: statx filled the buffer when it returned 0.
    let stx = (done == 0).then(|| unsafe { stx.assume_init() })?;
    (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// `lstat` of `name` in `parent`; `None` when it does not exist.
pub fn stat_at(parent: BorrowedFd<'_>, name: &Path) -> Result<Option<FileStat>, Errno> {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno),
    }
}

/// Whether `name` in `dir` is of `kind` (`S_IFDIR`, `S_IFREG`...), not
/// following a symlink.
pub fn is_at(dir: BorrowedFd<'_>, name: &Path, of: libc::mode_t) -> bool {
    matches!(stat_at(dir, name), Ok(Some(ref s)) if kind(s) == of)
}

/// Whether a stat result is a directory, a symlink or a regular file.
pub fn kind(stat: &FileStat) -> libc::mode_t {
    stat.st_mode & libc::S_IFMT
}

/// Removes `name` in `parent` (at `shown`, for messages): a whole tree if
/// it is a directory, else the one entry. With `dry_run`, only counts.
/// `interrupt` is called before each directory (it may end the process).
pub fn remove(
    parent: BorrowedFd<'_>,
    name: &Path,
    shown: &Path,
    dry_run: bool,
    interrupt: &(dyn Fn() + Sync),
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(cname) = CString::new(name.as_os_str().as_encoded_bytes()) else {
        outcome.failure = Some(Failure { path: shown.to_path_buf(), errno: Errno::EINVAL });
        return outcome;
    };
    let device = (fstat(parent).map(|s| s.st_dev).unwrap_or(0), mount_of(parent));
    let walk = Walk { device, dry_run, interrupt };
    let above = shown.parent().unwrap_or(Path::new(""));
    remove_entry(&walk, parent, &cname, None, above, &mut outcome, 0);
    outcome
}

/// What holds for a whole removal.
struct Walk<'a> {
    /// The device and mount it started on, which it never leaves.
    device: (u64, Option<u64>),
    /// Count only.
    dry_run: bool,
    /// Called before each directory; may end the process.
    interrupt: &'a (dyn Fn() + Sync),
}

/// Directory depth beyond which synclock stops descending: deeper than any
/// Portage tree, and a bound on open descriptors.
const MAX_DEPTH: usize = 64;

fn remove_entry(
    walk: &Walk<'_>,
    parent: BorrowedFd<'_>,
    name: &CStr,
    hint: Option<Type>,
    above: &Path,
    outcome: &mut Outcome,
    depth: usize,
) {
    // The path is built only where needed: a message, or a directory.
    let shown = || above.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let is_dir = match hint {
        Some(Type::Directory) => true,
        Some(_) => false,
        None => match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => kind(&stat) == libc::S_IFDIR,
            Err(Errno::ENOENT) => return,
            Err(errno) => return fail(outcome, &shown(), errno),
        },
    };
    if is_dir {
        (walk.interrupt)();
        if depth >= MAX_DEPTH {
            return fail(outcome, &shown(), Errno::ELOOP);
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = match openat(parent, name, flags, Mode::empty()) {
            Ok(dir) => dir,
            Err(errno) => return fail(outcome, &shown(), errno),
        };
        match fstat(dir.as_fd()) {
            Ok(stat) if (stat.st_dev, mount_of(dir.as_fd())) == walk.device => {}
            Ok(_) => return fail(outcome, &shown(), Errno::EXDEV), // a mount point
            Err(errno) => return fail(outcome, &shown(), errno),
        }
        let children = match list(dir.as_fd()) {
            Ok(children) => children,
            Err(errno) => return fail(outcome, &shown(), errno),
        };
        let here = shown();
        let remove_child = |(child, child_type): &(CString, Option<Type>),
                            outcome: &mut Outcome| {
            remove_entry(walk, dir.as_fd(), child, *child_type, &here, outcome, depth + 1);
        };
        if depth == 0 {
            in_parallel(&children, remove_child, outcome);
        } else {
            for child in &children {
                remove_child(child, outcome);
            }
        }
    }
    if !walk.dry_run {
        let flag = if is_dir { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
        match unlinkat(parent, name, flag) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return,
            Err(errno) => return fail(outcome, &shown(), errno),
        }
    }
    outcome.entries += 1;
}

/// Runs `remove` on each of `children`, one thread per CPU (at most 4),
/// adding the outcomes up into `outcome`: the kernel unlinks in parallel.
fn in_parallel<T: Sync>(
    children: &[T],
    remove: impl Fn(&T, &mut Outcome) + Sync,
    outcome: &mut Outcome,
) {
    let workers =
        std::thread::available_parallelism().map_or(1, |n| n.get()).min(4).min(children.len());
    let next = AtomicUsize::new(0);
    let work = || {
        let mut mine = Outcome::default();
        while let Some(child) = children.get(next.fetch_add(1, Ordering::Relaxed)) {
            remove(child, &mut mine);
        }
        mine
    };
    let outcomes = std::thread::scope(|scope| {
        // A thread that cannot be had leaves its share to the others.
        let helpers: Vec<_> = (1..workers)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut outcomes = vec![work()];
        outcomes.extend(helpers.into_iter().filter_map(|h| h.join().ok()));
        outcomes
    });
    for done in outcomes {
        outcome.entries += done.entries;
        if outcome.failure.is_none() {
            outcome.failure = done.failure;
        }
    }
}

/// The entries of `dir` (without `.` and `..`), read before any is removed.
pub fn list(dir: BorrowedFd<'_>) -> Result<Vec<(CString, Option<Type>)>, Errno> {
    let own =
        dir.try_clone_to_owned().map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    let mut reader = Dir::from_fd(own)?;
    let mut children = Vec::new();
    for entry in reader.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            children.push((name.to_owned(), entry.file_type()));
        }
    }
    Ok(children)
}

fn fail(outcome: &mut Outcome, shown: &Path, errno: Errno) {
    outcome.failure.get_or_insert(Failure { path: shown.to_path_buf(), errno });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn removes_a_tree_but_not_what_symlinks_point_to() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let tree = dir.path().join("tree");
        // Wide enough for the threads to share it.
        for d in 0..20 {
            fs::create_dir_all(tree.join(format!("d{d}/sub"))).unwrap();
            fs::write(tree.join(format!("d{d}/sub/f")), "x").unwrap();
        }
        std::os::unix::fs::symlink(&outside, tree.join("d0/link")).unwrap();
        let top = open_dir(dir.path()).unwrap();
        for dry_run in [true, false] {
            let outcome = remove(top.as_fd(), Path::new("tree"), &tree, dry_run, &|| {});
            assert_eq!((outcome.entries, outcome.failure), (62, None));
            assert_eq!(tree.exists(), dry_run, "a dry run removes nothing");
        }
        assert!(outside.join("keep").exists(), "symlink target untouched");
    }
}
