//! The holder record `<lockfile>.holder`: who holds the lock (PID, PID
//! namespace, host, command, start), for what /proc cannot see (another PID
//! namespace, another host). Written under the lock, atomically, 0644;
//! removed on release, so one left behind marks a run that never finished.
//! Readers trust it only when the lockfile's owner owns it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files;

/// What a holder says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The synclock process holding the lock, in its own PID namespace.
    pub pid: i32,
    /// Its start time in clock ticks since boot (guards against PID reuse).
    pub start_ticks: u64,
    /// The inode of its PID namespace.
    pub pid_namespace: Option<u64>,
    /// Its host name.
    pub host: String,
    /// The command run under the lock.
    pub command: Vec<String>,
    /// When it acquired the lock.
    pub since: SystemTime,
}

/// Where the record of `lockfile` lives: `<lockfile>.holder`.
pub fn path_for(lockfile: &Path) -> PathBuf {
    files::next_to(lockfile, ".holder")
}

/// Replaces the record atomically. Call only while holding the lock.
pub fn write(lockfile: &Path, record: &Record) -> std::io::Result<()> {
    files::write_atomic(&path_for(lockfile), encode(record).as_bytes())
}

/// Removes the record; call before releasing the lock.
pub fn remove(lockfile: &Path) {
    let _ = std::fs::remove_file(path_for(lockfile));
}

/// Reads the record if there is a trustworthy one: a regular file (not
/// followed through a symlink) owned by `owner` (the lockfile's owner).
pub fn read(lockfile: &Path, owner: u32) -> Option<Record> {
    decode(&files::read_trusted(&path_for(lockfile), owner).ok()?)
}

/// One `key value` line each; the command as one `arg` line per word, with
/// backslash and newline escaped.
fn encode(record: &Record) -> String {
    let mut text = format!(
        "synclock-holder 1\npid {}\nstart_ticks {}\nhost {}\n",
        record.pid,
        record.start_ticks,
        files::escape(&record.host),
    );
    if let Some(ns) = record.pid_namespace {
        text.push_str(&format!("pid_namespace {ns}\n"));
    }
    for word in &record.command {
        text.push_str(&format!("arg {}\n", files::escape(word)));
    }
    let since = record.since.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    text + &format!("since {}.{:03}\n", since.as_secs(), since.subsec_millis())
}

fn decode(text: &str) -> Option<Record> {
    let mut lines = text.lines();
    if lines.next()? != "synclock-holder 1" {
        return None;
    }
    let mut record = Record {
        pid: 0,
        start_ticks: 0,
        pid_namespace: None,
        host: String::new(),
        command: Vec::new(),
        since: SystemTime::UNIX_EPOCH,
    };
    for line in lines {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "pid" => record.pid = value.parse().ok()?,
            "start_ticks" => record.start_ticks = value.parse().ok()?,
            "pid_namespace" => record.pid_namespace = Some(value.parse().ok()?),
            "host" => record.host = files::unescape(value),
            "since" => {
                let (secs, millis) = value.split_once('.').unwrap_or((value, "0"));
                let since = Duration::from_secs(secs.parse().ok()?)
                    + Duration::from_millis(millis.parse().ok()?);
                record.since = SystemTime::UNIX_EPOCH + since;
            }
            "arg" => record.command.push(files::unescape(value)),
            _ => {} // newer fields are skipped
        }
    }
    (record.pid > 0).then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn written_read_and_removed() {
        let record = Record {
            pid: 4242,
            start_ticks: 98765,
            pid_namespace: Some(4026531836),
            host: "builder".into(),
            command: vec!["sh".into(), "-c".into(), "echo a\\b\nnext".into(), String::new()],
            since: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_033_600_123),
        };
        assert_eq!(decode(&encode(&record)), Some(record.clone()));
        for garbage in ["", "pid 5\n", "synclock-holder 1\npid x\n", "synclock-holder 1\nhost h\n"]
        {
            assert_eq!(decode(garbage), None, "{garbage:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("l");
        write(&lock, &record).unwrap();
        let meta = std::fs::symlink_metadata(path_for(&lock)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(read(&lock, meta.uid()), Some(record));
        assert_eq!(read(&lock, meta.uid() + 1), None, "foreign owner must not be trusted");
        remove(&lock);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left");
    }
}
