//! The small files synclock keeps next to the lockfile (holder record, run
//! history): replaced atomically, read only when trustworthy.
//!
//! They live in the lockfile's directory, which synclock has checked (only
//! its owner, or a sticky bit, lets anyone replace entries there). Writing
//! creates a fresh temp file with O_EXCL (which never follows a symlink) and
//! renames it over the target (rename replaces a symlink, never its target);
//! a file written ahead of time is unnamed (O_TMPFILE) until it is linked
//! in ([`Unnamed`]), and one the holder rewrites on every run is kept and
//! rewritten in place ([`Kept`]).
//! Reading opens with O_NOFOLLOW and O_NONBLOCK and accepts only a regular
//! file owned by the lockfile's owner and of bounded size.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::libc;

/// The largest file accepted: far more than 64 history entries need.
pub const MAX_SIZE: u64 = 256 * 1024;

/// `<lockfile><suffix>`, e.g. `/run/synclock.lock.holder`.
pub fn next_to(lockfile: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(lockfile.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces `target` with `contents`, mode 0644, atomically. Call only while
/// holding the lock.
pub fn write_atomic(target: &Path, contents: &[u8]) -> io::Result<()> {
    let temp = temp_name(target);
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
    };
    // A leftover of a dead writer with our PID is ours to replace.
    let mut file = match create() {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&temp)?;
            create()?
        }
        other => other?,
    };
    // Readable by all whatever the umask; fchmod only when the umask took
    // a bit away (on disk it is one more journaled change).
    let fixed = if umask_spares_0644() {
        Ok(())
    } else {
        file.set_permissions(fs::Permissions::from_mode(0o644))
    };
    let written = fixed
        .and_then(|()| file.write_all(contents))
        .and_then(|()| fs::rename(&temp, target));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// A file written before it is needed, unnamed (`O_TMPFILE`) in the
/// directory of the file it is to become: when it is needed, only its last
/// bytes and a link are left to do, and a process killed before leaves
/// nothing behind. Where the file system has no unnamed files, [`create`]
/// fails and callers write the file as before.
///
/// [`create`]: Unnamed::create
pub struct Unnamed {
    file: std::fs::File,
    target: PathBuf,
}

impl Unnamed {
    /// An unnamed file holding `contents`, mode 0644, in the directory of
    /// `target`.
    pub fn create(target: &Path, contents: &[u8]) -> io::Result<Self> {
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut file = OpenOptions::new()
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir)?;
        if !umask_spares_0644() {
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
        }
        file.write_all(contents)?;
        Ok(Unnamed {
            file,
            target: target.to_path_buf(),
        })
    }

    /// Writes `bytes` at `offset` (one pwrite).
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, offset)
    }

    /// Gives the file its name, unless something has that name already
    /// (then `AlreadyExists`, and nothing there is touched or followed).
    pub fn link(&self) -> io::Result<()> {
        self.link_as(&self.target)
    }

    /// Links the file in as `to`: by its descriptor where we may (that
    /// takes CAP_DAC_READ_SEARCH), else through its /proc path, which costs
    /// a lookup of three more names (6 µs with cold caches).
    fn link_as(&self, to: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        match link_at(fd, c"", to, libc::AT_EMPTY_PATH) {
            Err(err) if matches!(err.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) => {
                let path = format!("/proc/self/fd/{fd}");
                let path = std::ffi::CString::new(path).unwrap_or_default();
                link_at(libc::AT_FDCWD, &path, to, libc::AT_SYMLINK_FOLLOW)
            }
            other => other,
        }
    }

    /// Replaces what has the name with the file, atomically: linked under a
    /// temp name, then renamed over it (rename replaces a symlink, never
    /// its target).
    pub fn replace(&self) -> io::Result<()> {
        let temp = temp_name(&self.target);
        let linked = match self.link_as(&temp) {
            // A leftover of a dead writer with our PID is ours to replace.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&temp)?;
                self.link_as(&temp)
            }
            other => other,
        };
        let renamed = linked.and_then(|()| fs::rename(&temp, &self.target));
        if renamed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        renamed
    }
}

/// linkat(2) of `from` relative to `dir` as `to`, with `flags`.
fn link_at(
    dir: std::os::fd::RawFd,
    from: &std::ffi::CStr,
    to: &Path,
    flags: libc::c_int,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `dir` is a descriptor or AT_FDCWD, and both paths are
    // NUL-terminated strings that outlive the call.
    let linked = unsafe { libc::linkat(dir, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if linked == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `.<name>.<pid>.tmp` next to `target`.
fn temp_name(target: &Path) -> PathBuf {
    let mut temp_name = OsString::from(".");
    temp_name.push(target.file_name().unwrap_or_default());
    temp_name.push(format!(".{}.tmp", std::process::id()));
    target.with_file_name(temp_name)
}

/// Whether files created 0644 keep all of it under the process umask.
fn umask_spares_0644() -> bool {
    use nix::sys::stat::{Mode, umask};
    static SPARES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SPARES.get_or_init(|| {
        // umask(2) can only be read by setting it: set and restore at once.
        let old = umask(Mode::from_bits_truncate(0o022));
        umask(old);
        old.bits() & 0o644 == 0
    })
}

/// Why a kept file was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// There is none.
    Missing,
    /// It is there but not to be trusted; the reason, for a message.
    Refused(String),
}

/// A small file next to the lockfile that the lock's holder keeps and
/// rewrites in place: one pwrite (and a truncation when it got shorter)
/// instead of a new file and a rename, whose directory operations cost
/// about 40 µs with cold caches, against 5, on the path from one holder's
/// command to the next one's. Readers that do not hold the lock may catch
/// a rewrite half done, so they read until two reads agree
/// ([`read_settled`]).
pub struct Kept {
    file: std::fs::File,
    len: u64,
}

impl Kept {
    /// Opens `path` for rewriting. `None` when there is none (the first
    /// one is written whole and renamed into place, so that no reader ever
    /// sees an empty file), or when what is there is not a regular file of
    /// `owner` with one link, writable by nobody else, of at most
    /// [`MAX_SIZE`] bytes: then callers replace it atomically instead. Call
    /// only while holding the lock.
    pub fn open(path: &Path, owner: u32) -> Option<Kept> {
        // Looked at first: opening a device or fifo can have side effects.
        if !fs::symlink_metadata(path).ok()?.file_type().is_file() {
            return None;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        let trusted =
            refusal(&meta, owner).is_none() && meta.nlink() == 1 && meta.mode() & 0o022 == 0;
        trusted.then_some(Kept {
            file,
            len: meta.len(),
        })
    }

    /// The contents, in one read.
    pub fn read(&self) -> io::Result<String> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; usize::try_from(self.len).unwrap_or(0) + 1];
        let len = self.file.read_at(&mut bytes, 0)?;
        bytes.truncate(len);
        String::from_utf8(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
    }

    /// Replaces the contents with `contents`.
    pub fn rewrite(&mut self, contents: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(contents, 0)?;
        let len = contents.len() as u64;
        if self.len > len {
            self.file.set_len(len)?;
        }
        self.len = len;
        Ok(())
    }
}

/// [`read_trusted`], for a reader that does not hold the lock, of a file
/// the holder rewrites in place ([`Kept`]): read again until two reads
/// agree (a rewrite takes microseconds).
pub fn read_settled(path: &Path, owner: u32) -> Result<String, Unread> {
    let mut last = read_trusted(path, owner)?;
    for _ in 0..8 {
        let now = read_trusted(path, owner)?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// Reads `path` if it is a regular file owned by `owner`, not reached
/// through a symlink, and at most [`MAX_SIZE`] bytes.
pub fn read_trusted(path: &Path, owner: u32) -> Result<String, Unread> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ENOENT) => Unread::Missing,
            Some(libc::ELOOP) => Unread::Refused("it is a symbolic link".into()),
            _ => Unread::Refused(err.to_string()),
        })?;
    let meta = file
        .metadata()
        .map_err(|err| Unread::Refused(err.to_string()))?;
    if let Some(why) = refusal(&meta, owner) {
        return Err(Unread::Refused(why));
    }
    // Sized from fstat, so the whole file comes in one read (and one more
    // that finds the end).
    let mut text = String::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
    file.take(MAX_SIZE)
        .read_to_string(&mut text)
        .map_err(|err| Unread::Refused(err.to_string()))?;
    Ok(text)
}

/// Why a file with `meta` is not to be trusted as written by the lock's
/// holder: not a regular file, owned by someone other than `owner` (the
/// lockfile's owner), or larger than [`MAX_SIZE`]. `None` when it is.
fn refusal(meta: &fs::Metadata, owner: u32) -> Option<String> {
    if !meta.is_file() {
        Some("it is not a regular file".into())
    } else if meta.uid() != owner {
        Some(format!(
            "it is owned by uid {}, not the lockfile's owner",
            meta.uid()
        ))
    } else if meta.len() > MAX_SIZE {
        Some(format!("it is larger than {MAX_SIZE} bytes"))
    } else {
        None
    }
}

/// Escapes backslash, newline and tab, for one-line fields.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

/// Undoes [`escape`].
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn an_unnamed_file_is_linked_by_descriptor_or_through_proc() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        let file = Unnamed::create(&target, b"one").unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        file.link().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"one");
        let again = file.link().unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        // The way taken where linking by descriptor is not allowed.
        let other = Unnamed::create(&target, b"two").unwrap();
        let path = format!("/proc/self/fd/{}", other.file.as_raw_fd());
        let path = std::ffi::CString::new(path).unwrap();
        let linked = dir.path().join("y");
        link_at(libc::AT_FDCWD, &path, &linked, libc::AT_SYMLINK_FOLLOW).unwrap();
        assert_eq!(fs::read(&linked).unwrap(), b"two");
        other.replace().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "no temp file left");
    }

    #[test]
    fn a_kept_file_is_rewritten_in_place_and_read_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let owner = nix::unistd::geteuid().as_raw();
        assert!(Kept::open(&path, owner).is_none(), "none yet");
        write_atomic(&path, b"a longer first text\n").unwrap();
        let mut kept = Kept::open(&path, owner).expect("kept");
        assert_eq!(kept.read().unwrap(), "a longer first text\n");
        kept.rewrite(b"short\n").unwrap();
        assert_eq!(read_settled(&path, owner).unwrap(), "short\n");
        assert!(Kept::open(&path, owner + 1).is_none(), "another owner's");
        fs::hard_link(&path, dir.path().join("second name")).unwrap();
        assert!(Kept::open(&path, owner).is_none(), "a file with two names");
    }
}
