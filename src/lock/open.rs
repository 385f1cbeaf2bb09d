//! Opening the lockfile without being tricked: anyone who can open it can
//! hold it and block root, and a planted symlink, fifo or hard link can
//! redirect or hang the open. So: no symlink followed, no blocking open,
//! created 0600 with `O_EXCL`, checked with fstat, and its directories up
//! to `/` safe from renames by others.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::libc;
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, lstat};
use nix::unistd::{Uid, geteuid};

use crate::error::Error;
use crate::proc::FileId;

/// The identity and owner of the file at `path` (not following a final
/// symlink); `Ok(None)` when there is none.
pub fn look_up(path: &Path) -> Result<Option<(FileId, u32)>, Error> {
    match lstat(path) {
        Ok(stat) => Ok(Some((FileId::of(&stat), stat.st_uid))),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(os("cannot look up lockfile", path, errno)),
    }
}

/// Whether the lock on the lockfile at `path` is held now (a non-blocking
/// flock fails); `None` when we may not open it. Taking a free lock for a
/// moment only delays another taker a moment.
pub fn is_busy(path: &Path) -> Option<bool> {
    let (file, _) = open_existing(path).ok()?;
    match file.try_lock() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Whether `path` still names the file open as `file` (not renamed or
/// replaced since it was opened).
pub fn still_at(path: &Path, file: &File) -> bool {
    let opened = fstat(file).map(|stat| FileId::of(&stat)).ok();
    opened.is_some() && look_up(path).ok().flatten().map(|(id, _)| id) == opened
}

/// Opens `path` for locking, creating it with mode 0600 when missing, and
/// refuses anything that is not a private regular file of root or the caller.
/// Returns the descriptor and the lockfile's owner (from the check's fstat).
pub fn open_checked(path: &Path) -> Result<(File, u32), Error> {
    open_inner(path, true)
}

/// Like [`open_checked`], but never creates the file.
fn open_existing(path: &Path) -> Result<(File, u32), Error> {
    open_inner(path, false)
}

fn open_inner(path: &Path, create_missing: bool) -> Result<(File, u32), Error> {
    let name = path.file_name().ok_or_else(|| {
        unsafe_lockfile(path, "it names no file; give a path such as /run/synclock.lock".into())
    })?;
    let dir = open_parent(path)?;
    // A few rounds cover another process creating or removing the file
    // between our lookup and our open.
    for _ in 0..4 {
        match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => check_kind(path, &stat)?,
            Err(Errno::ENOENT) if !create_missing => {
                return Err(os("cannot open lockfile", path, Errno::ENOENT));
            }
            Err(Errno::ENOENT) => match create(&dir, name) {
                Ok(fd) => return verified(path, fd),
                Err(Errno::EEXIST) => continue,
                Err(errno) => return Err(os("cannot create lockfile", path, errno)),
            },
            Err(errno) => return Err(os("cannot look up lockfile", path, errno)),
        }
        let flags = OFlag::O_RDWR
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY;
        match openat(&dir, name, flags, Mode::empty()) {
            Ok(fd) => return verified(path, fd),
            Err(Errno::ENOENT) => continue,
            Err(Errno::ELOOP) => return Err(unsafe_lockfile(path, symlink_reason())),
            Err(errno) => return Err(os("cannot open lockfile", path, errno)),
        }
    }
    Err(os("cannot open lockfile", path, Errno::EAGAIN))
}

/// Opens the directory that holds the lockfile and checks that nobody but
/// its owner can swap the lockfile inside it.
fn open_parent(path: &Path) -> Result<OwnedFd, Error> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = open(parent, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| Error::Os {
            action: "cannot open the directory of lockfile",
            path: path.to_path_buf(),
            errno,
            hint: "synclock does not create directories; create it or choose another --lockfile",
        })?;
    // Whoever may rename an entry on the way could move the held lockfile
    // away: every directory up to `/`, as written and resolved, must be safe.
    let absolute = std::env::current_dir().unwrap_or_default().join(parent);
    let resolved = std::fs::canonicalize(&absolute).unwrap_or_else(|_| absolute.clone());
    for dir in absolute.ancestors().chain(resolved.ancestors()) {
        let stat = nix::sys::stat::stat(dir)
            .map_err(|errno| os("cannot stat the directories of lockfile", path, errno))?;
        check_directory(path, dir, &stat)?;
    }
    Ok(dir)
}

/// Refuses a directory on the way that another user owns, or that group or
/// others may write without the sticky bit.
fn check_directory(path: &Path, dir: &Path, stat: &FileStat) -> Result<(), Error> {
    let owner = Uid::from_raw(stat.st_uid);
    if !owner.is_root() && owner != geteuid() {
        return Err(unsafe_lockfile(
            path,
            format!(
                "its directory {} is owned by uid {owner}{}, who could rename the lockfile \
                 away while it is held; use a directory only root can write, such as /run",
                dir.display(),
                user_name(owner)
            ),
        ));
    }
    let writable_by_others = stat.st_mode & (libc::S_IWGRP | libc::S_IWOTH) != 0;
    if writable_by_others && stat.st_mode & libc::S_ISVTX == 0 {
        return Err(unsafe_lockfile(
            path,
            format!(
                "its directory {} is writable by group or others without the sticky bit, so \
                 another user could replace the lockfile; use a directory only root can write, \
                 such as /run",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// ` (name)` of the account `uid`, or nothing.
fn user_name(uid: Uid) -> String {
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(String::new, |user| format!(" ({})", user.name))
}

fn create(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDWR
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    openat(dir, name, flags, Mode::S_IRUSR | Mode::S_IWUSR)
}

/// Refuses, before opening, a name that is not a regular file: opening a
/// device or fifo can have side effects of its own.
fn check_kind(path: &Path, stat: &FileStat) -> Result<(), Error> {
    let reason = match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => return Ok(()),
        libc::S_IFLNK => symlink_reason(),
        libc::S_IFDIR => {
            "it is a directory; give the path of a file inside it, such as DIR/synclock.lock".into()
        }
        libc::S_IFIFO => {
            "it is a fifo, not a regular file; remove it or choose another --lockfile".into()
        }
        libc::S_IFSOCK => {
            "it is a socket, not a regular file; remove it or choose another --lockfile".into()
        }
        _ => "it is a device, not a regular file; choose another --lockfile".into(),
    };
    Err(unsafe_lockfile(path, reason))
}

fn symlink_reason() -> String {
    "it is a symbolic link, which synclock never follows; remove it (someone may have planted it) \
     or point --lockfile at the real file"
        .into()
}

/// Checks what was actually opened.
fn verified(path: &Path, fd: OwnedFd) -> Result<(File, u32), Error> {
    let stat = fstat(fd.as_fd()).map_err(|errno| os("cannot stat lockfile", path, errno))?;
    check_stat(path, &stat)?;
    Ok((File::from(fd), stat.st_uid))
}

/// The checks a run makes of the lockfile at `path`, without opening it
/// (`status` is for any user): its directories, and what is there.
pub fn check(path: &Path) -> Result<(), Error> {
    let name = path.file_name().unwrap_or_default();
    match fstatat(&open_parent(path)?, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => check_stat(path, &stat),
        Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(os("cannot look up lockfile", path, errno)),
    }
}

/// A regular file owned by root or the caller, private to its owner, with
/// one name.
fn check_stat(path: &Path, stat: &FileStat) -> Result<(), Error> {
    check_kind(path, stat)?;
    let owner = Uid::from_raw(stat.st_uid);
    if !owner.is_root() && owner != geteuid() {
        let name = user_name(owner);
        return Err(unsafe_lockfile(
            path,
            format!(
                "it is owned by uid {owner}{name}, not by root or you; remove it (another user \
                 may have planted it) or choose another --lockfile"
            ),
        ));
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o066 != 0 {
        return Err(unsafe_lockfile(
            path,
            format!(
                "its mode {mode:04o} lets group or others open it and hold the lock; run \
                 'chmod 600 {0}', and see with 'fuser -v {0}' or 'lsof {0}' who may have it \
                 open already",
                path.display()
            ),
        ));
    }
    if stat.st_nlink != 1 {
        return Err(unsafe_lockfile(
            path,
            format!(
                "it has {} hard links, so it may be another file in disguise; remove it and let \
                 synclock create it",
                stat.st_nlink
            ),
        ));
    }
    Ok(())
}

fn unsafe_lockfile(path: &Path, reason: String) -> Error {
    Error::UnsafeLockfile { path: PathBuf::from(path), reason }
}

fn os(action: &'static str, path: &Path, errno: Errno) -> Error {
    let hint = match errno {
        Errno::EACCES | Errno::EPERM => "run as root, or choose a lockfile you own with --lockfile",
        Errno::EROFS => "choose a lockfile on a writable file system with --lockfile",
        _ => "",
    };
    Error::Os { action, path: PathBuf::from(path), errno, hint }
}
