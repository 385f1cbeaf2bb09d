//! The command line: options, subcommands and their parsers.
//!
//! `synclock [OPTIONS] [--] COMMAND [ARGS...]` runs COMMAND under the lock;
//! `synclock [OPTIONS] status` asks who holds it. Everything after `--` (or
//! after the first word that is not an option) belongs to COMMAND, so
//! `synclock -- status` runs a program named `status`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::exit;
use crate::msg;

/// Where the lock lives unless `--lockfile` or `SYNCLOCK_LOCKFILE` say
/// otherwise: /run is writable by root only, unlike /run/lock.
pub const DEFAULT_LOCKFILE: &str = "/run/synclock.lock";

/// Runs a repository sync (or any command) while holding one machine-wide lock.
#[derive(Parser, Debug)]
#[command(
    name = "synclock",
    version,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true,
    after_help = "Exit status: COMMAND's own; 128+N if a signal N killed it; 75 (or -E) when \
                  the lock was not had; 2 usage error; 125 synclock failed; 126 COMMAND cannot \
                  be executed; 127 COMMAND not found."
)]
pub struct Cli {
    /// The lockfile shared by every sync on this machine (env
    /// SYNCLOCK_LOCKFILE).
    #[arg(
        long,
        value_name = "PATH",
        env = "SYNCLOCK_LOCKFILE",
        default_value = DEFAULT_LOCKFILE,
        value_parser = parse_lockfile
    )]
    pub lockfile: PathBuf,

    /// Give up after waiting this long: 300ms, 90s, 5m, "1h 30m"; a bare
    /// number means seconds; 0 means do not wait. Default: wait without limit.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_wait)]
    pub wait: Option<Duration>,

    /// Fail at once when the lock is held (same as --wait 0).
    #[arg(short, long)]
    pub nonblock: bool,

    /// Exit code when the lock could not be had.
    #[arg(
        short = 'E',
        long,
        value_name = "N",
        default_value_t = exit::DEFAULT_CONFLICT
    )]
    pub conflict_exit_code: u8,

    /// Say nothing but errors.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also report the time spent waiting and the release of the lock.
    #[arg(short, long)]
    pub verbose: bool,

    /// Also clean this repository location (repeatable), besides those in
    /// repos.conf.
    #[arg(long = "repo", value_name = "DIR")]
    pub repos: Vec<PathBuf>,

    /// Do not clean stale sync leftovers before running COMMAND.
    #[arg(long)]
    pub no_clean: bool,

    /// Do not look for syncs that run outside synclock, for a COMMAND that
    /// is no Portage sync (env SYNCLOCK_NO_OUTSIDE_CHECK).
    #[arg(
        long,
        env = "SYNCLOCK_NO_OUTSIDE_CHECK",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub no_outside_check: bool,

    /// Do not run COMMAND if the same command line finished successfully
    /// under the lock while this invocation waited (env SYNCLOCK_COALESCE).
    #[arg(
        long,
        env = "SYNCLOCK_COALESCE",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub coalesce: bool,

    /// Do not run COMMAND if the same command line last succeeded less than
    /// DURATION ago (env SYNCLOCK_MIN_INTERVAL).
    #[arg(long, value_name = "DURATION", env = "SYNCLOCK_MIN_INTERVAL", value_parser = parse_wait)]
    pub min_interval: Option<Duration>,

    /// Run COMMAND even when --coalesce or --min-interval would skip it.
    #[arg(long)]
    pub force: bool,

    /// What to do instead of running a command.
    #[command(subcommand)]
    pub action: Option<Action>,

    /// The command to run while holding the lock, with its arguments.
    #[arg(
        trailing_var_arg = true,
        required = true,
        value_name = "COMMAND",
        value_parser = clap::value_parser!(OsString)
    )]
    pub command: Vec<OsString>,
}

/// Subcommands; global options go before them.
#[derive(Subcommand, Debug)]
pub enum Action {
    /// Tell whether the lock is free, who holds it and who waits
    /// (exit 0 free, 1 held, 125 error).
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Take the lock, remove stale sync leftovers, run nothing
    /// (exit 0, or 125 if something could not be removed).
    Clean {
        /// List what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl Cli {
    /// The verbosity chosen by `-q`/`-v`.
    pub fn level(&self) -> msg::Level {
        match (self.quiet, self.verbose) {
            (true, _) => msg::Level::Quiet,
            (false, true) => msg::Level::Verbose,
            (false, false) => msg::Level::Normal,
        }
    }
}

/// Parses the command line `args` (the program name first). Help and
/// version go to stdout (exit 0); a usage error becomes one `synclock:` line
/// on stderr and exit code 2.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, u8> {
    Cli::try_parse_from(args).map_err(|err| {
        use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
        if matches!(err.kind(), DisplayHelp | DisplayVersion) {
            let _ = err.print();
            return 0;
        }
        msg::error(format_args!("{}; see 'synclock --help'", one_line(&err)));
        exit::USAGE
    })
}

/// clap's error text squeezed onto one line, without its `error: ` prefix
/// and its usage footer.
fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let mut lines =
        text.lines().map(str::trim).take_while(|line| !line.starts_with("Usage:")).filter(|line| {
            !line.is_empty()
                && !line.starts_with("tip:")
                && !line.starts_with("For more information")
        });
    let first = lines.next().unwrap_or("invalid command line");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    std::iter::once(first).chain(lines).collect::<Vec<_>>().join(" ").replace(
        "the following required arguments were not provided: <COMMAND>...",
        "no command given",
    )
}

/// Parses a `--wait` value: a bare number of seconds (as flock(1) takes it,
/// fractions allowed) or a humantime duration such as `5m` or `1h 30m`.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    /// Longer than any wait anybody means, and short enough to add to any
    /// time and print as a date.
    const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("'{text}' is not a duration of zero or more seconds"))?,
        Err(_) => humantime::parse_duration(text).map_err(|err| {
            format!("'{text}' is not a duration ({err}); try 30, 300ms, 5m or '1h 30m'")
        })?,
    };
    if duration > MAX {
        return Err(format!("'{text}' is longer than 100 years, the most synclock takes"));
    }
    Ok(duration)
}

/// Parses `--lockfile`: a path that names a file (no trailing `/`).
fn parse_lockfile(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() || text.ends_with('/') {
        return Err(format!("'{text}' names no file; give a path such as /run/synclock.lock"));
    }
    Ok(PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_are_parsed_as_documented() {
        assert_eq!(parse_wait("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["-1", "soon", "inf", "1e19", "5e17"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
        assert!(parse_lockfile("x.lock/").is_err());
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses");
        let cli = parse(&["synclock", "--lockfile", "/x", "status", "--json"]);
        assert!(matches!(cli.action, Some(Action::Status { json: true })));
        let cli = parse(&["synclock", "--", "status"]);
        assert!(cli.action.is_none() && cli.command == [OsString::from("status")]);
        assert!(parse(&["synclock", "--coalesce", "true"]).coalesce);
        let cli = parse(&["synclock", "-n", "emerge", "--sync", "-q"]);
        assert!(cli.nonblock && !cli.quiet);
        assert_eq!(cli.command, ["emerge", "--sync", "-q"].map(OsString::from));
    }
}
