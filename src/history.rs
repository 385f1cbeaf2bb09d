//! The run history `<lockfile>.history`, behind `--coalesce`,
//! `--min-interval`, the expected wait and `status`: for each repository,
//! its last successful sync; for each command line (the program by its base
//! name), its last run; each with the durations of its last successful
//! runs. Written under the lock, atomically, bounded; a corrupt,
//! untrustworthy or older one is said in one line and treated as empty.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files::{self, Unread};
use crate::msg;

/// Entries of each kind (repositories, command lines) remembered at most.
pub const MAX_ENTRIES: usize = 64;
/// Durations remembered per entry: the expected wait is their median.
pub const DURATIONS: usize = 5;
/// The longest entry remembered: all of them fit in what is read back.
const MAX_ENTRY: usize = 2000;
const HEADER: &str = "synclock-history 3";

/// One run of a command under the lock.
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

    /// How long it took.
    pub fn took(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// What the history knows of one repository or one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The repository; `None` for a command line's entry.
    pub repo: Option<String>,
    /// A repository's last successful sync, or a command line's last run.
    pub last: Run,
    /// How long its last successful runs took, newest first.
    pub took: Vec<Duration>,
}

/// How long a sync usually takes: the median of the last `runs` durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typical {
    /// The median.
    pub took: Duration,
    /// Of how many.
    pub runs: usize,
}

impl fmt::Display for Typical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let took = msg::duration(self.took);
        match self.runs {
            1 => write!(f, "it took {took} last time"),
            n => write!(f, "it usually takes about {took} (median of the last {n})"),
        }
    }
}

/// Where the history of `lockfile` lives.
pub fn path_for(lockfile: &Path) -> PathBuf {
    files::next_to(lockfile, ".history")
}

/// The history of the lock at `lockfile` (owned by `owner`), newest
/// first; `Err` is the line that says why it is ignored (it is then empty).
pub fn read(lockfile: &Path, owner: u32) -> Result<Vec<Entry>, String> {
    let path = path_for(lockfile);
    let why = match files::read_trusted(&path, owner) {
        Err(Unread::Missing) => return Ok(Vec::new()),
        Err(Unread::Refused(why)) => why,
        Ok(text) => match decode(&text) {
            Ok(entries) => return Ok(entries),
            Err(1)
                if text.starts_with("synclock-history ") && text.lines().next() != Some(HEADER) =>
            {
                "it is in another synclock's format".into()
            }
            Err(line) => format!("it is corrupt (line {line})"),
        },
    };
    Err(format!("ignoring history {}: {why}; starting afresh", path.display()))
}

/// The entry of the repository `name`.
pub fn repo<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
    entries.iter().find(|e| e.repo.as_deref() == Some(name))
}

/// The entry of the command line `command`, its program taken by base name.
pub fn command<'a>(entries: &'a [Entry], command: &[String]) -> Option<&'a Entry> {
    entries.iter().find(|e| e.repo.is_none() && same_command(&e.last.command, command))
}

/// The entries that say whether a sync of `repos` (else of the command
/// line `words`) was done, and when: one per repository, or the command
/// line's; `None` when one is missing.
pub fn covering<'a>(
    entries: &'a [Entry],
    repos: Option<&[String]>,
    words: &[String],
) -> Option<Vec<&'a Entry>> {
    match repos {
        Some(names) => names.iter().map(|name| repo(entries, name)).collect(),
        None => command(entries, words).map(|entry| vec![entry]),
    }
}

/// How long a sync of `repos` (else of the command line `words`) usually
/// takes: the slowest of its repositories' medians.
pub fn typical(entries: &[Entry], repos: Option<&[String]>, words: &[String]) -> Option<Typical> {
    let known: Vec<&Entry> = match repos {
        Some(names) => names.iter().filter_map(|name| repo(entries, name)).collect(),
        None => command(entries, words).into_iter().collect(),
    };
    known
        .iter()
        .filter(|entry| !entry.took.is_empty())
        .map(|entry| {
            let mut took = entry.took.clone();
            took.sort();
            Typical { took: took[took.len() / 2], runs: took.len() }
        })
        .max_by_key(|typical| typical.took)
}

/// Remembers `run`, which synced `repos` (if it succeeded), in the history
/// `entries` of `lockfile`, atomically. Call only while holding the lock
/// under which `entries` were read.
pub fn remember(
    lockfile: &Path,
    mut entries: Vec<Entry>,
    run: Run,
    repos: &[String],
) -> std::io::Result<()> {
    let fresh = |repo: Option<&String>, old: Option<&Entry>| {
        let mut took = old.map(|e| e.took.clone()).unwrap_or_default();
        if run.succeeded() {
            took.insert(0, run.took());
        }
        took.truncate(DURATIONS);
        Entry { repo: repo.cloned(), last: run.clone(), took }
    };
    let mut new = vec![fresh(None, command(&entries, &run.command))];
    if run.succeeded() {
        new.extend(repos.iter().map(|name| fresh(Some(name), repo(&entries, name))));
    }
    // One huge command line (or repository name) must not push the others
    // out of the file.
    if new.iter().any(|entry| encode(std::slice::from_ref(entry)).len() > MAX_ENTRY) {
        msg::verbose(format_args!(
            "not remembered in the history: an entry over {MAX_ENTRY} bytes"
        ));
        return Ok(());
    }
    entries.retain(|old| {
        !new.iter().any(|n| match (&n.repo, &old.repo) {
            (None, None) => same_command(&n.last.command, &old.last.command),
            (n, old) => n.is_some() && n == old,
        })
    });
    new.extend(entries);
    let (mut repos_kept, mut commands_kept) = (0, 0);
    new.retain(|entry| {
        let kept = if entry.repo.is_some() { &mut repos_kept } else { &mut commands_kept };
        *kept += 1;
        *kept <= MAX_ENTRIES
    });
    files::write_atomic(&path_for(lockfile), encode(&new).as_bytes())
}

/// Whether two command lines are one: the same program by base name, and
/// the same arguments.
fn same_command(a: &[String], b: &[String]) -> bool {
    fn program(words: &[String]) -> Option<&str> {
        words.first().map(|word| word.rsplit('/').next().unwrap_or(word))
    }
    program(a) == program(b) && a.get(1..) == b.get(1..)
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

/// One line an entry, fields separated by tabs: the repository (empty for
/// a command line), start, end (nanoseconds), code, PID, the durations in
/// milliseconds (comma-separated), then the command's words (escaped).
fn encode(entries: &[Entry]) -> String {
    let mut text = format!("{HEADER}\n");
    for Entry { repo, last, took } in entries {
        let took: Vec<String> = took.iter().map(|d| d.as_millis().to_string()).collect();
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            files::escape(repo.as_deref().unwrap_or_default()),
            nanos(last.start),
            nanos(last.end),
            last.code,
            last.pid,
            took.join(",")
        ));
        for word in &last.command {
            text.push('\t');
            text.push_str(&files::escape(word));
        }
        text.push('\n');
    }
    text
}

/// The entries, or the number of the first bad line.
fn decode(text: &str) -> Result<Vec<Entry>, usize> {
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
            let repo = Some(files::unescape(next()?)).filter(|r| !r.is_empty());
            let start = time_of(next()?).ok_or(bad)?;
            let end = time_of(next()?).ok_or(bad)?;
            let code = next()?.parse().map_err(|_| bad)?;
            let pid = next()?.parse().map_err(|_| bad)?;
            let took = next()?
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().map(Duration::from_millis).map_err(|_| bad))
                .collect::<Result<_, _>>()?;
            let command: Vec<String> = fields.map(files::unescape).collect();
            if command.is_empty() {
                return Err(bad);
            }
            Ok(Entry { repo, last: Run { command, start, end, code, pid }, took })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remember(lockfile: &Path, run: Run, repos: &[&str]) {
        let repos: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
        super::remember(lockfile, read(lockfile, owner()).unwrap(), run, &repos).unwrap();
    }

    fn owner() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn run(words: &[&str], code: u8, secs: u64) -> Run {
        let start = SystemTime::UNIX_EPOCH + Duration::new(1_764_033_600, 123_456_789);
        Run {
            command: words.iter().map(|w| w.to_string()).collect(),
            start,
            end: start + Duration::from_secs(secs),
            code,
            pid: 4242,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let entries = vec![
            Entry { repo: None, last: run(&["sh", "-c", "a\tb\nc\\d", ""], 1, 1), took: vec![] },
            Entry {
                repo: Some("gen\ttoo".into()),
                last: run(&["emerge", "--sync"], 0, 2),
                took: vec![Duration::from_millis(2000), Duration::from_millis(1500)],
            },
        ];
        assert_eq!(decode(&encode(&entries)), Ok(entries));
    }

    #[test]
    fn corrupt_and_truncated_histories_are_rejected() {
        assert_eq!(decode(""), Err(1));
        assert_eq!(decode("synclock-history 2\n1\t2\t0\t4\temerge\n"), Err(1));
        let good = encode(&[Entry { repo: None, last: run(&["emerge"], 0, 1), took: vec![] }]);
        assert_eq!(decode(&good[..good.len() - 3]), Err(1), "a cut last line");
        assert_eq!(decode(&format!("{HEADER}\n\t1\t2\tx\t4\t\temerge\n")), Err(2));
        assert_eq!(decode(&format!("{HEADER}\n\t1\t2\t0\t4\tx\temerge\n")), Err(2));
        assert_eq!(decode(&format!("{HEADER}\n\t1\t2\t0\t4\t\n")), Err(2));
    }

    #[test]
    fn repositories_and_command_lines_are_remembered_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("l");
        let words = |w: &[&str]| w.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        remember(&lock, run(&["/usr/bin/emerge", "--sync"], 0, 40), &["gentoo", "guru"]);
        remember(&lock, run(&["emerge", "--sync"], 0, 60), &["gentoo", "guru"]);
        remember(&lock, run(&["emerge", "--sync"], 1, 99), &["gentoo", "guru"]);
        remember(&lock, run(&["emaint", "sync", "-r", "guru"], 0, 10), &["guru"]);
        let entries = read(&lock, owner()).unwrap();
        let cmd = command(&entries, &words(&["/bin/emerge", "--sync"])).unwrap();
        assert_eq!((cmd.last.code, cmd.took.len()), (1, 2), "one entry per program base name");
        let gentoo = repo(&entries, "gentoo").unwrap();
        assert_eq!((gentoo.last.took(), gentoo.took.len()), (Duration::from_secs(60), 2));
        assert_eq!(repo(&entries, "guru").unwrap().took.len(), 3, "a failure is no sync");
        let typical = typical(&entries, Some(&words(&["gentoo", "guru"])), &[]).unwrap();
        assert_eq!(typical, Typical { took: Duration::from_secs(60), runs: 2 });
        for i in 0..(MAX_ENTRIES + 5) {
            remember(&lock, run(&["cmd", &i.to_string()], 0, 1), &[]);
        }
        let entries = read(&lock, owner()).unwrap();
        assert_eq!(entries.iter().filter(|e| e.repo.is_none()).count(), MAX_ENTRIES);
        assert!(repo(&entries, "gentoo").is_some(), "command lines never push repositories out");
        remember(&lock, run(&["x".repeat(300_000).as_str()], 0, 1), &["gentoo"]);
        remember(&lock, run(&["x"], 0, 1), &["y".repeat(3000).as_str()]);
        assert_eq!(read(&lock, owner()).unwrap(), entries, "a huge entry changes nothing");
    }
}
