//! One-line messages on stderr, each prefixed `synclock:`.
//!
//! The verbosity is chosen once, from `-q`/`-v`, and read everywhere through
//! [`info`] and [`verbose`]; errors are never silenced.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much synclock says about itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    /// Only errors (`-q`).
    Quiet = 0,
    /// Errors and noteworthy events such as waiting for the lock.
    Normal = 1,
    /// Also timings and releases (`-v`).
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Normal as u8);

/// Chooses the verbosity for the rest of the run.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True when messages of `level` are shown.
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

/// Writes one `synclock: ...` line, whatever the verbosity.
pub fn error(args: fmt::Arguments<'_>) {
    line(args);
}

/// Writes one line unless `-q` was given.
pub fn info(args: fmt::Arguments<'_>) {
    if enabled(Level::Normal) {
        line(args);
    }
}

/// Writes one line only with `-v`.
pub fn verbose(args: fmt::Arguments<'_>) {
    if enabled(Level::Verbose) {
        line(args);
    }
}

fn line(args: fmt::Arguments<'_>) {
    // One write(2) a line, so that lines of synclocks sharing a log or a
    // terminal never interleave (stderr is unbuffered: writeln! would write
    // each piece). A failing stderr has nowhere to report to; the exit code
    // still tells.
    let text = format!("synclock: {args}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A command line as a user would type it, for messages: words joined by
/// spaces, a word quoted when it is empty or holds a space or quote.
pub fn command_line<W: AsRef<OsStr>>(words: &[W]) -> String {
    words
        .iter()
        .map(|word| {
            let word = word.as_ref().to_string_lossy();
            if word.is_empty() || word.contains([' ', '\t', '\n', '\'', '"']) {
                format!("'{}'", word.replace('\'', r"'\''"))
            } else {
                word.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A duration for people: `1m 30s`, with sub-second parts only below 10 s.
pub fn duration(d: std::time::Duration) -> String {
    let rounded = if d.as_secs() >= 10 {
        std::time::Duration::from_secs(d.as_secs())
    } else {
        std::time::Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::time::Duration;

    #[test]
    fn command_line_quotes_only_where_needed() {
        let words: Vec<OsString> = ["emerge", "--sync", "a b", "", "it's"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(command_line(&words), r"emerge --sync 'a b' '' 'it'\''s'");
    }

    #[test]
    fn durations_are_rounded_for_people() {
        assert_eq!(duration(Duration::from_millis(1234)), "1s 234ms");
        assert_eq!(duration(Duration::from_millis(192_400)), "3m 12s");
    }
}
