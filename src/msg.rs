//! One-line messages on stderr, each prefixed `synclock:`.
//!
//! The verbosity is chosen once, from `-q`/`-v`, and read everywhere through
//! [`info`] and [`verbose`]; errors are never silenced.

use std::ffi::OsStr;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

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
    let text = format!("synclock: {}\n", visible(&args.to_string()));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `text` with its control characters (newlines, escapes, bells) written
/// out as `\n`, `\x1b`...: what other users put in command lines and file
/// names can neither forge a line nor drive the terminal.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as text, every byte kept apart: invalid UTF-8 as `\xNN`, and a
/// backslash doubled so that nothing else reads the same.
pub fn decode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
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
pub fn duration(d: Duration) -> String {
    let rounded = if d.as_secs() >= 10 {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

/// A duration in whole seconds, for people: `3m 12s`, `0s`.
pub fn seconds(d: Duration) -> String {
    duration(Duration::from_secs(d.as_secs()))
}

/// When the lock should be free, `left` from now as the history expects:
/// `free in about 48s`, or `taking longer than usual` once that is past.
pub fn free_in(left: Duration) -> String {
    if left.is_zero() {
        "taking longer than usual".into()
    } else {
        format!("free in about {}", seconds(left))
    }
}

/// The live line while waiting on a terminal, redrawn once a second with the
/// time waited and erased at the end; off a terminal (or with `-q`) it draws
/// nothing and asks for no wake-ups.
pub struct Live {
    start: Instant,
    limit: Option<Duration>,
    free_at: Option<Instant>,
    enabled: bool,
    drawn: bool,
    next: Instant,
}

impl Live {
    /// A live line for a wait that began at `start` and lasts at most
    /// `limit` (`None`: no limit).
    pub fn new(start: Instant, limit: Option<Duration>) -> Self {
        // A terminal that cannot erase a line (TERM=dumb) gets none.
        let dumb = std::env::var_os("TERM").is_none_or(|t| t.is_empty() || t == "dumb");
        let enabled = enabled(Level::Normal) && std::io::stderr().is_terminal() && !dumb;
        let next = start + Duration::from_secs(1);
        Live { start, limit, free_at: None, enabled, drawn: false, next }
    }

    /// The same line, also saying how long until `free_at`, when the
    /// history expects the lock to be free.
    pub fn expecting(mut self, free_at: Option<Instant>) -> Self {
        self.free_at = free_at;
        self
    }

    /// A line that never draws.
    pub fn off() -> Self {
        let mut live = Live::new(Instant::now(), None);
        live.enabled = false;
        live
    }

    /// When the line is next due to be redrawn, if ever.
    pub fn next_draw(&self) -> Option<Instant> {
        self.enabled.then_some(self.next)
    }

    /// Redraws the line if it is due at `now`.
    pub fn draw_if_due(&mut self, now: Instant) {
        if !self.enabled || now < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        let waited = seconds(now - self.start);
        let limit = self.limit.map(|l| format!(" of {}", duration(l))).unwrap_or_default();
        let free = self
            .free_at
            .map(|at| format!("; {}", free_in(at.saturating_duration_since(now))))
            .unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\rsynclock: waited {waited}{limit}{free}\x1b[K");
        let _ = err.flush();
        self.drawn = true;
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_people() {
        let words = ["emerge", "--sync", "a b", "", "it's"];
        assert_eq!(command_line(&words), r"emerge --sync 'a b' '' 'it'\''s'");
        assert_eq!(duration(Duration::from_millis(1234)), "1s 234ms");
        assert_eq!(duration(Duration::from_millis(192_400)), "3m 12s");
        // What others wrote is made visible, and kept apart byte for byte.
        assert_eq!(visible("a\nb\x1b]0;t\x07\u{9b}"), "a\\nb\\x1b]0;t\\x07\\x9b");
        assert_eq!(decode(b"a\\b\xfe"), "a\\\\b\\xfe");
        assert_ne!(decode(b"\xfe"), decode(b"\xff"));
    }
}
