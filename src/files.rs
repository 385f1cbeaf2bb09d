//! The files kept next to the lockfile (holder record, history): written
//! as a new `O_EXCL` temp file renamed over the old (a symlink is replaced,
//! never followed); read with `O_NOFOLLOW | O_NONBLOCK`, only when a
//! regular file of the lockfile's owner and of bounded size.

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
    // Readable by all, whatever the umask.
    let written = file
        .set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| fs::rename(&temp, target));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// `.<name>.<pid>.tmp` next to `target`.
fn temp_name(target: &Path) -> PathBuf {
    let mut temp_name = OsString::from(".");
    temp_name.push(target.file_name().unwrap_or_default());
    temp_name.push(format!(".{}.tmp", std::process::id()));
    target.with_file_name(temp_name)
}

/// Why a kept file was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// There is none.
    Missing,
    /// It is there but not to be trusted; the reason, for a message.
    Refused(String),
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
    let meta = file.metadata().map_err(|err| Unread::Refused(err.to_string()))?;
    if let Some(why) = refusal(&meta, owner) {
        return Err(Unread::Refused(why));
    }
    let mut text = String::new();
    file.take(MAX_SIZE)
        .read_to_string(&mut text)
        .map_err(|err| Unread::Refused(err.to_string()))?;
    Ok(text)
}

/// Why a file with `meta` is not the holder's to trust: not a regular file,
/// not owned by `owner` (the lockfile's), or over [`MAX_SIZE`].
fn refusal(meta: &fs::Metadata, owner: u32) -> Option<String> {
    if !meta.is_file() {
        Some("it is not a regular file".into())
    } else if meta.uid() != owner {
        Some(format!("it is owned by uid {}, not the lockfile's owner", meta.uid()))
    } else if meta.len() > MAX_SIZE {
        Some(format!("it is larger than {MAX_SIZE} bytes"))
    } else {
        None
    }
}

/// Escapes backslash, newline and tab, for one-line fields.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n").replace('\t', "\\t")
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

    #[test]
    fn written_atomically_read_only_when_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let owner = nix::unistd::geteuid().as_raw();
        assert_eq!(read_trusted(&path, owner), Err(Unread::Missing));
        write_atomic(&path, b"one\n").unwrap();
        assert_eq!(read_trusted(&path, owner).unwrap(), "one\n");
        assert!(matches!(read_trusted(&path, owner + 1), Err(Unread::Refused(_))));
        let target = dir.path().join("target");
        fs::write(&target, "keep").unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(read_trusted(&path, owner), Err(Unread::Refused(_))));
        write_atomic(&path, b"two\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep", "not followed");
        assert_eq!(read_trusted(&path, owner).unwrap(), "two\n");
        // A second name of another file is replaced, not written through.
        fs::remove_file(&path).unwrap();
        fs::hard_link(&target, &path).unwrap();
        write_atomic(&path, b"three\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep", "not written through");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2, "no temp file left");
        assert_eq!(unescape(&escape("a\\b\nc\td")), "a\\b\nc\td");
    }
}
