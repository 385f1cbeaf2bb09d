//! The live status line while waiting on a terminal.
//!
//! On a terminal, one line is redrawn in place (carriage return and
//! erase-to-end-of-line) at most once a second with the time waited, and
//! erased when the wait ends. Off a terminal nothing is redrawn: logs get
//! the single "is held by" line only.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::msg;

/// The redrawn line, if stderr is a terminal and messages are on.
pub struct Progress {
    enabled: bool,
    drawn: bool,
    limit: Option<Duration>,
}

impl Progress {
    /// A progress line for a wait of at most `limit` (`None`: no limit).
    pub fn new(limit: Option<Duration>) -> Self {
        let enabled = msg::enabled(msg::Level::Normal) && std::io::stderr().is_terminal();
        Progress {
            enabled,
            drawn: false,
            limit,
        }
    }

    /// How often to redraw: once a second on a terminal, never otherwise.
    pub fn interval(&self) -> Option<Duration> {
        self.enabled.then_some(Duration::from_secs(1))
    }

    /// Redraws the line with the time waited so far.
    pub fn draw(&mut self, waited: Duration) {
        if !self.enabled {
            return;
        }
        let waited = msg::duration(Duration::from_secs(waited.as_secs()));
        let limit = self
            .limit
            .map(|l| format!(" of {}", msg::duration(l)))
            .unwrap_or_default();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\rsynclock: waited {waited}{limit}\x1b[K");
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the line so that the next message starts clean.
    pub fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            self.drawn = false;
        }
    }
}
