//! The command line: options, subcommands and their parsers.
//!
//! `synclock [OPTIONS] [--] COMMAND [ARGS...]` runs COMMAND under the lock;
//! `synclock [OPTIONS] status` asks who holds it. Everything after `--` (or
//! after the first word that is not an option) belongs to COMMAND, so
//! `synclock -- status` runs a program named `status`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::exit;
use crate::msg;

/// Where the lock lives unless `--lockfile` or `SYNCLOCK_LOCKFILE` say
/// otherwise: /run is writable by root only, unlike /run/lock.
pub const DEFAULT_LOCKFILE: &str = "/run/synclock.lock";

/// Runs a sync (or any command) under one machine-wide lock.
#[derive(Parser, Debug)]
#[command(
    name = "synclock",
    version,
    subcommand_negates_reqs = true,
    disable_help_subcommand = true,
    override_usage = "synclock [OPTIONS] [--] COMMAND [ARGS...]\n       \
                      synclock [OPTIONS] status [--json]\n       \
                      synclock [OPTIONS] clean [--dry-run]",
    subcommand_help_heading = "Subcommands",
    subcommand_value_name = "SUBCOMMAND",
    after_help = "Options go before COMMAND; -- ends them (needed when COMMAND starts with -).\n\
                  Environment: SYNCLOCK_LOCKFILE, SYNCLOCK_COALESCE, SYNCLOCK_MIN_INTERVAL and\n\
                  SYNCLOCK_NO_OUTSIDE_CHECK set the defaults of the options of those names.\n\
                  Exit status: COMMAND's own; 128+N if signal N killed it; 75 (or -E) when the\n\
                  lock was not had; 2 usage error; 125 synclock failed; 126 COMMAND cannot be\n\
                  executed; 127 COMMAND not found. See synclock(1)."
)]
pub struct Cli {
    /// The lockfile of all syncs (/run/synclock.lock).
    #[arg(
        long,
        global = true,
        hide_env = true,
        hide_default_value = true,
        value_name = "PATH",
        env = "SYNCLOCK_LOCKFILE",
        default_value = DEFAULT_LOCKFILE,
        value_parser = parse_lockfile
    )]
    pub lockfile: PathBuf,

    /// Give up after DURATION: 30 (s), 300ms, 5m, 1h.
    #[arg(short, long, global = true, allow_negative_numbers = true, value_name = "DURATION", value_parser = parse_wait)]
    pub wait: Option<Duration>,

    /// Fail at once when the lock is held.
    #[arg(short, long, global = true)]
    pub nonblock: bool,

    /// Exit code when the lock was not had (75).
    #[arg(
        short = 'E',
        long,
        global = true,
        hide_default_value = true,
        value_name = "N",
        default_value_t = exit::DEFAULT_CONFLICT
    )]
    pub conflict_exit_code: u8,

    /// Say nothing but errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Also say waits, signals and the release.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Also clean this repository (repeatable).
    #[arg(long = "repo", global = true, value_name = "DIR")]
    pub repos: Vec<PathBuf>,

    /// Do not clean leftovers of killed syncs.
    #[arg(long)]
    pub no_clean: bool,

    /// Do not wait for syncs outside synclock.
    #[arg(
        long,
        global = true,
        hide_env = true,
        env = "SYNCLOCK_NO_OUTSIDE_CHECK",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub no_outside_check: bool,

    /// Skip if its repositories were synced meanwhile.
    #[arg(
        long,
        hide_env = true,
        env = "SYNCLOCK_COALESCE",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::SetTrue
    )]
    pub coalesce: bool,

    /// Skip if synced successfully within DURATION.
    #[arg(long, hide_env = true, allow_negative_numbers = true, value_name = "DURATION", env = "SYNCLOCK_MIN_INTERVAL", value_parser = parse_wait)]
    pub min_interval: Option<Duration>,

    /// Run even if --coalesce or --min-interval skip.
    #[arg(long)]
    pub force: bool,

    /// What to do instead of running a command.
    #[command(subcommand)]
    pub action: Option<Action>,

    /// The command to run under the lock.
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
    /// Say who holds the lock (exit 0 free, 1 held).
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove leftovers of killed syncs, under the lock.
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

/// Parses `args` (the program name first): help and version go to stdout
/// (exit 0), a usage error is one `synclock:` line and exit code 2.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, u8> {
    let args: Vec<OsString> = args.into_iter().collect();
    Cli::try_parse_from(&args).map_err(|err| {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
            let _ = err.print();
            return 0;
        }
        // A bad value that came from the environment: name the variable.
        let from_env = match err.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(arg)) => Cli::command().get_arguments().find_map(|a| {
                let long = format!("--{}", a.get_long()?);
                let given = args.iter().any(|w| w.to_str().is_some_and(|w| w.starts_with(&long)));
                let var = a.get_env()?.to_string_lossy().into_owned();
                (arg.starts_with(&long) && !given).then_some(var)
            }),
            _ => None,
        };
        let from_env = from_env.map(|var| format!("{var}: ")).unwrap_or_default();
        msg::error(format_args!("{from_env}{}; see 'synclock --help'", one_line(&err)));
        exit::USAGE
    })
}

/// clap's error text squeezed onto one line, without its `error: ` prefix
/// and its usage footer.
fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let mut lines = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"));
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
