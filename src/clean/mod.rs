//! Cleaning what killed syncs leave behind, inside the lock, exactly the
//! rows of README's *Cleaning* table: (1) the rsync quarantine, (2-4)
//! sync-rcu's staging tree and temporary symlinks, (5) zipfile's temp dirs,
//! (6) webrsync's temp dirs, (7) git lock files nobody holds; after an
//! interrupted run, a forced full compare. Nothing else is ever touched;
//! removal never follows a symlink or leaves the tree (see `remove.rs`), and
//! an error is one line that does not stop the sync.

use std::cell::OnceCell;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sys::stat::fstat;

mod remove;

use crate::msg;
use crate::proc::Proc;
use crate::repos::{self, Repo};
use remove::{is_at, kind, open_dir, open_subdir, read_small_at, stat_at, walk};

/// The quarantine a hardlink rsync sync works in (row 1).
pub const QUARANTINE: &str = ".tmp-unverified-download-quarantine";

/// What cleaning does with what it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Remove it, saying so in one line each.
    Remove,
    /// List it on stdout (`clean --dry-run`) and remove nothing.
    DryRun,
    /// Say in one line each that it is left in place (a sync runs outside
    /// the lock), and remove nothing.
    Leave,
}

/// What a cleaning pass did.
#[derive(Debug, Default)]
pub struct Summary {
    /// After an interrupted run, what was done for each repository, in
    /// words (`gentoo: forced a full compare`).
    pub recovered: Vec<String>,
    /// Items removed (or, in a dry run, that would be).
    pub items: usize,
    /// Entries removed in all.
    pub entries: u64,
    /// Items that could not be removed.
    pub failures: usize,
}

/// The repositories to clean, each with L (its location resolved, when it
/// can be cleaned), and PORTAGE_TMPDIR.
#[derive(Debug, Default)]
pub struct Plan {
    repos: Vec<(Repo, Option<PathBuf>)>,
    tmpdir: PathBuf,
}

impl Plan {
    /// A plan for `repos` and `tmpdir`.
    pub fn new(repos: Vec<Repo>, tmpdir: PathBuf) -> Self {
        let repos = repos
            .into_iter()
            .map(|repo| {
                let located = location(&repo);
                (repo, located)
            })
            .collect();
        Plan { repos, tmpdir }
    }

    /// The repositories that can be cleaned, each with L.
    fn located(&self) -> impl Iterator<Item = (&Repo, &Path)> {
        self.repos.iter().filter_map(|(repo, location)| Some((repo, location.as_deref()?)))
    }

    /// The repositories.
    pub fn repos(&self) -> impl Iterator<Item = &Repo> {
        self.repos.iter().map(|(repo, _)| repo)
    }

    /// Every repository location, as written and as resolved: where rsync
    /// and git count as syncs.
    pub fn locations(&self) -> Vec<PathBuf> {
        self.located()
            .flat_map(|(repo, location)| [repo.location.clone(), location.to_path_buf()])
            .collect()
    }
}

/// Cleans the leftovers of the planned repositories and of webrsync
/// (`proc` tells who uses a repository). With `interrupted`, the previous
/// wrapped run did not finish.
/// `interrupt` is called often; it may end the process (a signal came).
pub fn run(
    plan: &Plan,
    proc: &Proc,
    interrupted: bool,
    mode: Mode,
    interrupt: &(dyn Fn() + Sync),
) -> Summary {
    let mut cleaner = Cleaner {
        mode,
        proc,
        summary: Summary::default(),
        portage_uid: OnceCell::new(),
        interrupt,
    };
    for (repo, location) in plan.located() {
        cleaner.repo(repo, location);
    }
    let main = plan.located().find(|(repo, _)| repo.main);
    cleaner.webrsync(&plan.tmpdir, main.map(|(_, location)| location));
    if interrupted {
        cleaner.interrupted(plan.located());
    }
    cleaner.summary
}

/// L = realpath(U), if it is an absolute, existing, local directory other
/// than `/`.
fn location(repo: &Repo) -> Option<PathBuf> {
    let written = &repo.location;
    let skip = |why: &str| {
        msg::verbose(format_args!(
            "not cleaning repository {} at {}: {why}",
            repo.name,
            written.display()
        ));
        None
    };
    if !written.is_absolute() {
        return skip("its location is not an absolute path");
    }
    // One open resolves every symlink on the way (Portage's realpath); the
    // kernel then names the directory reached.
    let Ok(dir) = open_dir(written) else {
        return skip("it is not an existing directory");
    };
    let resolved =
        fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir)));
    let Some(location) =
        resolved.ok().filter(|p| p.is_absolute()).or_else(|| fs::canonicalize(written).ok())
    else {
        return skip("its real path cannot be found");
    };
    if location == Path::new("/") {
        return skip("it is /");
    }
    if is_remote(dir.as_fd()) {
        return skip("it is on a network file system");
    }
    Some(location)
}

struct Cleaner<'a> {
    mode: Mode,
    proc: &'a Proc,
    interrupt: &'a (dyn Fn() + Sync),
    summary: Summary,
    /// Looked up only when an owner is neither root nor the repository's
    /// owner.
    portage_uid: OnceCell<Option<u32>>,
}

impl Cleaner<'_> {
    fn repo(&mut self, repo: &Repo, location: &Path) {
        let quarantine = location.join(QUARANTINE);
        let Ok(dir) = open_dir(location) else { return };
        let repo_owner = fstat(dir.as_fd()).map(|s| s.st_uid).unwrap_or(0);
        // Row 1: the hardlink quarantine, in any repository.
        if let Ok(Some(stat)) = stat_at(dir.as_fd(), Path::new(QUARANTINE)) {
            let trusted = self.owned_by(stat.st_uid, repo_owner);
            match kind(&stat) {
                libc::S_IFLNK => {
                    self.remove(dir.as_fd(), QUARANTINE, &quarantine, "stale quarantine symlink");
                }
                libc::S_IFDIR if trusted => {
                    let what = format!("stale {QUARANTINE} in {}", location.display());
                    if self.remove(dir.as_fd(), QUARANTINE, &quarantine, &what) {
                        self.metadata_file(
                            &dir,
                            location,
                            "timestamp.chk",
                            "to force a full compare",
                        );
                    }
                }
                libc::S_IFDIR => self.refuse(&quarantine, stat.st_uid),
                _ => {}
            }
        }
        if repo.sync_rcu {
            self.rcu(repo);
        }
        if repo.is("zipfile") {
            self.zipfile(&dir, location, repo_owner);
        }
        if repo.is("git") {
            let removed = self.git(&dir, location);
            if removed > 0 {
                let s = if removed == 1 { "" } else { "s" };
                self.summary
                    .recovered
                    .push(format!("{}: removed {removed} git lock{s}", repo.name));
            }
        }
    }

    /// Rows 2–4: sync-rcu's staging tree and temporary symlinks.
    fn rcu(&mut self, repo: &Repo) {
        let written = repo.location.to_string_lossy().trim_end_matches('/').to_string();
        let user_new = PathBuf::from(format!("{written}.new"));
        if let (Some(parent), Some(name)) = (user_new.parent(), user_new.file_name())
            && let Ok(dir) = open_dir(parent)
            && let Ok(Some(stat)) = stat_at(dir.as_fd(), Path::new(name))
            && kind(&stat) == libc::S_IFLNK
        {
            self.remove(dir.as_fd(), &name.to_string_lossy(), &user_new, "stale sync-rcu symlink");
        }
        let Some(store) = repo.rcu_store_dir.as_ref().and_then(|s| fs::canonicalize(s).ok()) else {
            return;
        };
        if store == Path::new("/") {
            return;
        }
        let Ok(dir) = open_dir(&store) else { return };
        if let Ok(Some(stat)) = stat_at(dir.as_fd(), Path::new("latest.new"))
            && kind(&stat) == libc::S_IFLNK
        {
            self.remove(
                dir.as_fd(),
                "latest.new",
                &store.join("latest.new"),
                "stale sync-rcu symlink",
            );
        }
        let update = store.join("update");
        if !is_at(dir.as_fd(), Path::new("update"), libc::S_IFDIR) {
            return;
        }
        if store.join("latest").is_dir() {
            self.remove(
                dir.as_fd(),
                "update",
                &update,
                &format!("stale sync-rcu staging tree {}", update.display()),
            );
        } else if !repo.location.is_symlink() {
            msg::info(format_args!(
                "left {} alone: {}/latest is missing, so it may hold the only copy of repository {} \
                 (an interrupted sync-rcu migration); run the sync to finish it",
                update.display(),
                store.display(),
                repo.name
            ));
        }
    }

    /// Row 5: zipfile's `.tempXXXXXXXX` holding the previous tree.
    fn zipfile(&mut self, dir: &OwnedFd, location: &Path, repo_owner: u32) {
        let temp = |n: &str| mktemp_name(n, ".temp", 8, zipfile_char);
        for name in self.own_dirs(dir.as_fd(), temp, repo_owner) {
            let path = location.join(&name);
            let what = format!("stale zipfile temp dir {}", path.display());
            self.remove(dir.as_fd(), &name, &path, &what);
        }
    }

    /// The directories in `dir` that `wanted` names, owned by root, portage
    /// or `owner`.
    fn own_dirs(
        &self,
        dir: BorrowedFd<'_>,
        wanted: impl Fn(&str) -> bool,
        owner: u32,
    ) -> Vec<String> {
        let own = |n: &String| matches!(stat_at(dir, Path::new(n)), Ok(Some(ref s)) if kind(s) == libc::S_IFDIR && self.owned_by(s.st_uid, owner));
        names_matching(dir, wanted).into_iter().filter(own).collect()
    }

    /// Row 6: webrsync temp dirs of dead runs; `main` is the main
    /// repository's location, which webrsync syncs.
    fn webrsync(&mut self, tmpdir: &Path, main: Option<&Path>) {
        // Whether a dead webrsync was found, and whether it had unpacked a
        // snapshot (else, with tarsync, it updated the tree in place).
        let mut dead = false;
        let mut snapshot = false;
        // PORTAGE_TMPDIR is often world-writable (sticky /var/tmp): below it,
        // nothing is followed, `portage` included.
        let Ok(top) = open_dir(tmpdir) else { return };
        let portage = open_subdir(top.as_fd(), Path::new("portage")).ok();
        let places = [
            (Some(top), tmpdir.to_path_buf(), &["emerge-webrsync."][..]),
            (portage, tmpdir.join("portage"), &["webrsync-", "delta-webrsync.", "webrsync."]),
        ];
        for (dir, place, prefixes) in places {
            let Some(dir) = dir else { continue };
            let matching = |n: &str| prefixes.iter().any(|p| mktemp_name(n, p, 6, mktemp_char));
            for name in self.own_dirs(dir.as_fd(), matching, 0) {
                let path = place.join(&name);
                dead = true;
                snapshot |= open_subdir(dir.as_fd(), Path::new(&name))
                    .is_ok_and(|d| is_at(d.as_fd(), Path::new("snapshot"), libc::S_IFDIR));
                let what = format!("stale webrsync temp dir {}", path.display());
                self.remove(dir.as_fd(), &name, &path, &what);
            }
        }
        if dead
            && (snapshot || tarsync_installed())
            && let Some(main) = main
            && let Ok(dir) = open_dir(main)
        {
            self.metadata_file(
                &dir,
                main,
                "timestamp.x",
                "so that the next webrsync is not refused",
            );
        }
    }

    /// Row 7: git's lock files that no git holds: git keeps a lock file
    /// open while it holds it, so one that no process has open, in a
    /// repository where no git process works, is stale. Returns how many
    /// were removed.
    fn git(&mut self, dir: &OwnedFd, location: &Path) -> usize {
        let Ok(git) = open_subdir(dir.as_fd(), Path::new(".git")) else {
            return 0;
        };
        let git_path = location.join(".git");
        if !head_resolves(git.as_fd()) {
            msg::info(format_args!(
                "{} has no resolvable HEAD (an interrupted first clone?); left as is: remove {} \
                 and sync again to re-clone",
                location.display(),
                git_path.display()
            ));
            return 0;
        }
        // Below .git, as paths relative to it, each a regular file.
        let mut candidates: Vec<PathBuf> =
            ["index", "shallow", "HEAD", "ORIG_HEAD", "config", "packed-refs"]
                .iter()
                .map(|name| PathBuf::from(format!("{name}.lock")))
                .collect();
        if let Ok(refs) = open_subdir(git.as_fd(), Path::new("refs")) {
            collect_ref_locks(refs.as_fd(), Path::new("refs"), &mut candidates, 0);
        }
        if let Some(pack) = walk(git.as_fd(), Path::new("objects/pack")) {
            let temp = |n: &str| n.starts_with("tmp_pack_") || n.starts_with("tmp_idx_");
            candidates.extend(
                names_matching(pack.as_fd(), temp)
                    .iter()
                    .map(|n| Path::new("objects/pack").join(n)),
            );
        }
        let regular = |rel: &PathBuf| {
            let parent = walk(git.as_fd(), rel.parent().unwrap_or(Path::new("")));
            let name = Path::new(rel.file_name().unwrap_or_default());
            parent.is_some_and(|d| is_at(d.as_fd(), name, libc::S_IFREG))
        };
        candidates.retain(regular);
        if candidates.is_empty() {
            return 0;
        }
        if let Some(git) = git_working_in(self.proc, location) {
            msg::info(format_args!(
                "left git locks in {} alone: PID {} ({}) works in the repository",
                location.display(),
                git.pid,
                msg::command_line(&git.command)
            ));
            return 0;
        }
        let paths: Vec<PathBuf> = candidates.iter().map(|rel| git_path.join(rel)).collect();
        let open = self.proc.open_anywhere(&paths);
        let mut removed = 0;
        for (rel, path) in candidates.iter().zip(paths) {
            if let Some((_, pid)) = open.iter().find(|(open, _)| *open == path) {
                msg::info(format_args!(
                    "left git lock {} alone: PID {pid} has it open",
                    path.display()
                ));
                continue;
            }
            let Some(parent) = walk(git.as_fd(), rel.parent().unwrap_or(Path::new(""))) else {
                continue;
            };
            let name = rel.file_name().unwrap_or_default().to_string_lossy();
            let what = format!("stale git lock {}", path.display());
            removed += usize::from(self.remove(parent.as_fd(), &name, &path, &what));
        }
        removed
    }

    /// After an interrupted run: force a full compare of the rsync and
    /// webrsync repositories that exist.
    fn interrupted<'p>(&mut self, located: impl Iterator<Item = (&'p Repo, &'p Path)>) {
        for (repo, location) in located {
            if repo.is("rsync") || repo.is("webrsync") || repo.sync_type.is_none() {
                let Ok(dir) = open_dir(location) else {
                    continue;
                };
                for name in ["timestamp.chk", "timestamp.x"] {
                    self.metadata_file(&dir, location, name, "to force a full compare");
                }
                self.summary.recovered.push(format!("{}: forced a full compare", repo.name));
            }
        }
    }

    /// Removes `L/metadata/NAME` if it is a regular file.
    fn metadata_file(&mut self, dir: &OwnedFd, location: &Path, name: &str, why: &str) {
        let Ok(metadata) = open_subdir(dir.as_fd(), Path::new("metadata")) else {
            return;
        };
        if let Ok(Some(stat)) = stat_at(metadata.as_fd(), Path::new(name))
            && kind(&stat) == libc::S_IFREG
        {
            let path = location.join("metadata").join(name);
            let what = format!("{} {why}", path.display());
            self.remove(metadata.as_fd(), name, &path, &what);
        }
    }

    /// Removes (or, but in [`Mode::Remove`], counts) `name` in `dir` and
    /// reports it in one line; true on success.
    fn remove(&mut self, dir: BorrowedFd<'_>, name: &str, path: &Path, what: &str) -> bool {
        (self.interrupt)();
        let outcome =
            remove::remove(dir, Path::new(name), path, self.mode != Mode::Remove, self.interrupt);
        let entries = match outcome.entries {
            0 | 1 => String::new(),
            n => format!(" ({} entries)", thousands(n)),
        };
        if let Some(failure) = outcome.failure {
            self.summary.failures += 1;
            msg::info(format_args!(
                "cannot remove {}: {}; left {} in place (fix permissions or remove it by hand)",
                failure.path.display(),
                failure.errno.desc(),
                path.display()
            ));
            return false;
        }
        self.summary.items += 1;
        self.summary.entries += outcome.entries;
        match self.mode {
            Mode::Remove => msg::info(format_args!("removed {what}{entries}")),
            Mode::DryRun => {
                println!("would remove {}{entries}", msg::visible(&path.display().to_string()))
            }
            Mode::Leave => msg::info(format_args!("left {}{entries} in place", path.display())),
        }
        true
    }

    fn owned_by(&self, uid: u32, repo_owner: u32) -> bool {
        uid == 0
            || uid == repo_owner
            || Some(uid) == *self.portage_uid.get_or_init(repos::portage_uid)
    }

    fn refuse(&mut self, path: &Path, uid: u32) {
        self.summary.failures += 1;
        msg::info(format_args!(
            "left {} alone: it is owned by uid {uid}, not root, portage or the repository's owner",
            path.display()
        ));
    }
}

/// Names in the directory open on `dir` that satisfy `wanted`: read from
/// the descriptor that the caller then stats and removes them through.
fn names_matching(dir: BorrowedFd<'_>, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> = remove::list(dir)
        .map(|entries| {
            entries
                .into_iter()
                .filter_map(|(name, _)| name.into_string().ok())
                .filter(|n| wanted(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `prefix` followed by exactly `len` characters accepted by `allowed`.
fn mktemp_name(name: &str, prefix: &str, len: usize, allowed: fn(char) -> bool) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.chars().count() == len && rest.chars().all(allowed))
}

/// Python's tempfile names: `[a-z0-9_]`.
fn zipfile_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// mktemp(1)'s `XXXXXX`: `[A-Za-z0-9]`.
fn mktemp_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// The `*.lock` files below the refs directory open as `dir` (at `rel`
/// below .git), walked without following a symlink.
fn collect_ref_locks(dir: BorrowedFd<'_>, rel: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    use std::os::unix::ffi::OsStrExt;
    for (name, _) in remove::list(dir).unwrap_or_default() {
        let name = Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()));
        match stat_at(dir, name) {
            Ok(Some(s)) if kind(&s) == libc::S_IFDIR && depth < 16 => {
                if let Ok(sub) = open_subdir(dir, name) {
                    collect_ref_locks(sub.as_fd(), &rel.join(name), out, depth + 1);
                }
            }
            Ok(Some(s))
                if kind(&s) == libc::S_IFREG && name.extension().is_some_and(|e| e == "lock") =>
            {
                out.push(rel.join(name));
            }
            _ => {}
        }
    }
}

/// A git process working in the repository at `location`: its working
/// directory there, or `-C` naming a directory there.
fn git_working_in(proc: &Proc, location: &Path) -> Option<crate::proc::Process> {
    let pid = proc.pids().into_iter().find(|&pid| {
        let is_git = proc.executable_name(pid).is_ok_and(|n| n == "git" || n.starts_with("git-"));
        is_git
            && (proc.cwd(pid).is_some_and(|cwd| cwd.starts_with(location))
                || proc.cmdline(pid).is_some_and(|raw| {
                    let words: Vec<&str> = crate::proc::words(&raw).collect();
                    words.windows(2).any(|w| w[0] == "-C" && Path::new(w[1]).starts_with(location))
                }))
    })?;
    proc.process(pid)
}

/// Whether `.git/HEAD` names a commit or an existing ref.
fn head_resolves(git: BorrowedFd<'_>) -> bool {
    let Some(head) = read_small_at(git, Path::new("HEAD"), 4096) else {
        return false;
    };
    let head = String::from_utf8_lossy(&head);
    let head = head.trim();
    match head.strip_prefix("ref:") {
        None => !head.is_empty(),
        Some(name) => {
            let name = Path::new(name.trim());
            let file = Path::new(name.file_name().unwrap_or_default());
            let loose = walk(git, name.parent().unwrap_or(Path::new("")))
                .is_some_and(|dir| is_at(dir.as_fd(), file, libc::S_IFREG));
            let packed = || {
                let wanted = format!(" {}", name.display());
                read_small_at(git, Path::new("packed-refs"), 64 << 20).is_some_and(|text| {
                    String::from_utf8_lossy(&text).lines().any(|line| line.ends_with(&wanted))
                })
            };
            loose || packed()
        }
    }
}

fn tarsync_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("tarsync").is_file()))
}

/// NFS, SMB/CIFS and FUSE: another host may be syncing there.
fn is_remote(dir: BorrowedFd<'_>) -> bool {
    const REMOTE: [u64; 4] = [0x6969, 0xFF53_4D42, 0xFE53_4D42, 0x6573_5546];
    // f_type is signed with glibc and unsigned with musl; the magic numbers
    // are positive either way.
    #[allow(clippy::unnecessary_cast)]
    let remote = |fs: nix::sys::statfs::Statfs| REMOTE.contains(&(fs.filesystem_type().0 as u64));
    nix::sys::statfs::fstatfs(dir).is_ok_and(remote)
}

/// `41230` as `41,230`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(41_230), "41,230");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn temp_names_match_exactly() {
        assert!(mktemp_name(".tempab_3x9zq", ".temp", 8, zipfile_char));
        assert!(!mktemp_name(".tempAB_3x9zq", ".temp", 8, zipfile_char));
        assert!(!mktemp_name(".tempab_3x9z", ".temp", 8, zipfile_char));
        assert!(mktemp_name("emerge-webrsync.Ab3dEf", "emerge-webrsync.", 6, mktemp_char));
        assert!(!mktemp_name("emerge-webrsync.Ab3dE_", "emerge-webrsync.", 6, mktemp_char));
    }
}
