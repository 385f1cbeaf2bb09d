//! The verdict on one process from its executable's name and command line:
//! `emerge --sync`, `emaint sync`, `pmaint sync`, `emerge-webrsync`,
//! `emerge-delta-webrsync` and `eix-sync` are syncs (of the repositories
//! they name or stand for); rsync and git are when they work under a
//! repository.
//! Tested in `tests/verdict.rs`, which compiles this file alone.

/// Programs that sync the main repository whatever their arguments.
const WEBRSYNC: [&str; 2] = ["emerge-webrsync", "emerge-delta-webrsync"];

/// What a command line alone says of a process.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// A sync of the repositories in `Scope`.
    Sync(Scope),
    /// A sync of these repositories only (`emerge --sync NAME...`,
    /// `emaint sync -r NAME`, `pmaint sync NAME...`).
    Repos(Vec<&'a str>),
    /// Not a sync, whatever else is true of the process.
    NotSync,
    /// rsync or git, as word `i`: a sync when working under a repository.
    Tool(usize),
}

/// Which repositories a [`Verdict::Sync`] syncs.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Scope {
    /// Those with `auto-sync` on (`emerge --sync`, `emaint sync -a`,
    /// `eix-sync` without options).
    Auto,
    /// Every one with a sync type (`emaint sync -A`).
    All,
    /// The main repository (`emerge-webrsync`, `emerge-delta-webrsync`).
    Main,
    /// Some, but the command line does not say which (`eix-sync -w`,
    /// `emaint sync` without `-a`, `-A` or `-r`, `pmaint sync`).
    Unknown,
}

/// Judges a process by its command line `words` alone.
pub fn judge<'a>(words: &[&'a str]) -> Verdict<'a> {
    if words.first().is_none_or(|argv0| basename(argv0) == "synclock") {
        return Verdict::NotSync;
    }
    let followed_by = |i: usize, arg: &str| words[i + 1..].iter().position(|w| *w == arg);
    // The program is argv[0], or the script an interpreter runs: one of
    // the first two words after it that are not its own options (`-u`),
    // the second for a wrapper (`python3.12 .../python-exec2/emerge`).
    let scripts = if is_interpreter(basename(words[0])) { 2 } else { 0 };
    let after = words.iter().enumerate().skip(1).filter(|(_, w)| !w.starts_with('-'));
    for (i, word) in words.iter().enumerate().take(1).chain(after.take(scripts)) {
        match program(basename(word)) {
            Some(Program::Emerge) if followed_by(i, "--sync").is_some() => {
                return named(positional(&words[i + 1..]), Scope::Auto);
            }
            Some(Program::Maint) => {
                if let Some(at) = followed_by(i, "sync") {
                    if basename(word) == "pmaint" {
                        return named(positional(&words[i + 1 + at + 1..]), Scope::Unknown);
                    }
                    return emaint(&words[i + 1..]);
                }
            }
            Some(Program::Webrsync) => return Verdict::Sync(Scope::Main),
            Some(Program::EixSync) if i + 1 == words.len() => return Verdict::Sync(Scope::Auto),
            Some(Program::EixSync) => return Verdict::Sync(Scope::Unknown),
            Some(Program::Tool) => return Verdict::Tool(i),
            _ => {}
        }
    }
    Verdict::NotSync
}

/// The verdict on a front end that names `repos`, or syncs `scope` when
/// it names none.
fn named(repos: Vec<&str>, scope: Scope) -> Verdict<'_> {
    if repos.is_empty() { Verdict::Sync(scope) } else { Verdict::Repos(repos) }
}

/// The words that are not options.
fn positional<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().filter(|a| !a.starts_with('-')).collect()
}

/// The verdict on `emaint ARGS` that include `sync`: `-A`/`--allrepos`,
/// `-a`/`--auto`, or `-r NAME`, `--repo NAME`, `--repo=NAME`, before or
/// after `sync`.
fn emaint<'a>(args: &[&'a str]) -> Verdict<'a> {
    let has = |options: [&str; 2]| args.iter().any(|a| options.contains(a));
    if has(["-A", "--allrepos"]) {
        return Verdict::Sync(Scope::All);
    }
    if has(["-a", "--auto"]) {
        return Verdict::Sync(Scope::Auto);
    }
    let mut repos = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match *word {
            "-r" | "--repo" => repos.extend(words.next().copied()),
            other => repos.extend(other.strip_prefix("--repo=")),
        }
    }
    named(repos, Scope::Unknown)
}

/// Whether a process running the executable `name` may be a sync: an
/// interpreter, or a program [`judge`] looks for. Any other process is
/// passed over without reading its command line.
pub fn could_be_sync(name: &str) -> bool {
    is_interpreter(name) || program(name).is_some()
}

/// The programs [`judge`] knows by name.
enum Program {
    /// `emerge`: a sync with `--sync`.
    Emerge,
    /// `emaint` or `pmaint`: a sync with the `sync` command.
    Maint,
    /// `emerge-webrsync` or `emerge-delta-webrsync`.
    Webrsync,
    /// `eix-sync`.
    EixSync,
    /// rsync or git: a sync when working under a repository.
    Tool,
}

/// What `name` is to [`judge`], if it knows it.
fn program(name: &str) -> Option<Program> {
    match name {
        "emerge" => Some(Program::Emerge),
        "emaint" | "pmaint" => Some(Program::Maint),
        "rsync" | "git" => Some(Program::Tool),
        "eix-sync" => Some(Program::EixSync),
        name if WEBRSYNC.contains(&name) => Some(Program::Webrsync),
        _ => None,
    }
}

/// Interpreters that may run a sync script; `python*` includes Gentoo's
/// python-exec wrapper.
fn is_interpreter(name: &str) -> bool {
    name.starts_with("python")
        || name.starts_with("pypy")
        || ["bash", "sh", "dash", "ash", "busybox", "zsh", "ksh", "mksh"].contains(&name)
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}
