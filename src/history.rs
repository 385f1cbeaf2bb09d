//! The run history `<lockfile>.history`: for each command line, its last
//! run (start, end, exit code, PID), for `--coalesce`, `--min-interval` and
//! `status`. Written under the lock, atomically, bounded to [`MAX_ENTRIES`];
//! a corrupt or untrustworthy one is said in one line and treated as empty.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files::{self, Unread};
use crate::msg;

/// Command lines remembered at most.
pub const MAX_ENTRIES: usize = 64;
/// The longest entry remembered: all of them fit in what is read back.
const MAX_ENTRY: usize = 4000;
const HEADER: &str = "synclock-history 2";

/// The last run of one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command line, word by word.
    pub command: Vec<String>,
    /// When it got the lock.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its exit code (128+N for signal N).
    pub code: u8,
    /// The synclock process that ran it.
    pub pid: i32,
}

impl Run {
    /// Whether it succeeded.
    pub fn succeeded(&self) -> bool {
        self.code == 0
    }
}

/// Where the history of `lockfile` lives.
pub fn path_for(lockfile: &Path) -> PathBuf {
    files::next_to(lockfile, ".history")
}

/// The remembered runs of the lock at `lockfile` (owned by `owner`),
/// newest first.
pub fn read(lockfile: &Path, owner: u32) -> Vec<Run> {
    let path = path_for(lockfile);
    judge(&path, files::read_trusted(&path, owner))
}

/// The runs in `text` as read from `path`; what is wrong with it is said
/// in one line, and the history is then empty.
fn judge(path: &Path, text: Result<String, Unread>) -> Vec<Run> {
    let why = match text.map(|text| decode(&text)) {
        Ok(Ok(runs)) => return runs,
        Err(Unread::Missing) => return Vec::new(),
        Ok(Err(line)) => format!("it is corrupt (line {line})"),
        Err(Unread::Refused(why)) => why,
    };
    msg::info(format_args!("ignoring history {}: {why}; starting afresh", path.display()));
    Vec::new()
}

/// The last run of `command` in `runs`.
pub fn last<'a>(runs: &'a [Run], command: &[String]) -> Option<&'a Run> {
    runs.iter().find(|run| run.command == command)
}

/// Remembers `run` in the history of `lockfile` (owned by `owner`),
/// atomically. Call only while holding the lock.
pub fn remember(lockfile: &Path, owner: u32, run: Run) -> std::io::Result<()> {
    // One huge command line must not push the others out of the file.
    if encode(std::slice::from_ref(&run)).len() > MAX_ENTRY {
        msg::verbose(format_args!(
            "not remembered in the history: a command line over {MAX_ENTRY} bytes"
        ));
        return Ok(());
    }
    let mut runs = read(lockfile, owner);
    runs.retain(|old| old.command != run.command);
    runs.insert(0, run);
    runs.truncate(MAX_ENTRIES);
    files::write_atomic(&path_for(lockfile), encode(&runs).as_bytes())
}

/// Times are kept in nanoseconds: `--coalesce` compares a run's end with the
/// moment a waiter began, and the two can fall in the same millisecond.
fn nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos()
}

fn time_of(nanos: &str) -> Option<SystemTime> {
    let nanos: u128 = nanos.parse().ok()?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let subsec = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, subsec))
}

/// One line a run: `start end code pid` (times in nanoseconds), then the command's
/// words, all separated by tabs (words escaped).
fn encode(runs: &[Run]) -> String {
    let mut text = format!("{HEADER}\n");
    for run in runs {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}",
            nanos(run.start),
            nanos(run.end),
            run.code,
            run.pid
        ));
        for word in &run.command {
            text.push('\t');
            text.push_str(&files::escape(word));
        }
        text.push('\n');
    }
    text
}

/// The runs, or the number of the first bad line.
fn decode(text: &str) -> Result<Vec<Run>, usize> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) || !text.ends_with('\n') {
        return Err(1);
    }
    lines
        .enumerate()
        .map(|(index, line)| {
            let bad = index + 2;
            let mut fields = line.split('\t');
            let mut next = || fields.next().ok_or(bad);
            let start = time_of(next()?).ok_or(bad)?;
            let end = time_of(next()?).ok_or(bad)?;
            let code = next()?.parse().map_err(|_| bad)?;
            let pid = next()?.parse().map_err(|_| bad)?;
            let command: Vec<String> = fields.map(files::unescape).collect();
            if command.is_empty() {
                return Err(bad);
            }
            Ok(Run { command, start, end, code, pid })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remember(lockfile: &Path, run: Run) -> std::io::Result<()> {
        super::remember(lockfile, nix::unistd::geteuid().as_raw(), run)
    }

    fn run(words: &[&str], code: u8) -> Run {
        Run {
            command: words.iter().map(|w| w.to_string()).collect(),
            start: SystemTime::UNIX_EPOCH + Duration::new(1_764_033_600, 123_456_789),
            end: SystemTime::UNIX_EPOCH + Duration::new(1_764_033_751, 456_000_001),
            code,
            pid: 4242,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let runs = vec![run(&["emerge", "--sync"], 0), run(&["sh", "-c", "a\tb\nc\\d", ""], 1)];
        assert_eq!(decode(&encode(&runs)), Ok(runs));
    }

    #[test]
    fn corrupt_and_truncated_histories_are_rejected() {
        assert_eq!(decode(""), Err(1));
        assert_eq!(decode("garbage\n"), Err(1));
        let good = encode(&[run(&["emerge", "--sync"], 0)]);
        assert_eq!(decode(&good[..good.len() - 3]), Err(1), "a cut last line");
        assert_eq!(decode(&format!("{HEADER}\n1\t2\tx\t4\temerge\n")), Err(2));
        assert_eq!(decode(&format!("{HEADER}\n1\t2\t0\t4\n")), Err(2));
    }

    #[test]
    fn remember_keeps_one_entry_per_command_and_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("l");
        let owner = nix::unistd::geteuid().as_raw();
        for i in 0..(MAX_ENTRIES + 5) {
            remember(&lock, run(&["cmd", &i.to_string()], 0)).unwrap();
        }
        remember(&lock, run(&["cmd", "3"], 7)).unwrap();
        let runs = read(&lock, owner);
        assert_eq!(runs.len(), MAX_ENTRIES);
        assert_eq!(runs[0].command, ["cmd", "3"]);
        assert_eq!(runs[0].code, 7);
        assert_eq!(runs.iter().filter(|r| r.command == ["cmd", "3"]).count(), 1);
        assert!(last(&runs, &["cmd".into(), "0".into()]).is_none(), "the oldest fell out");
        remember(&lock, run(&["x".repeat(300_000).as_str()], 0)).unwrap();
        assert_eq!(read(&lock, owner).len(), MAX_ENTRIES, "a huge entry pushes none out");
    }
}
