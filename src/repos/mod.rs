//! Finding the repositories the way Portage does: `PORTAGE_REPOSITORIES`, or
//! the repos.conf files (a file or a directory walked in sorted order,
//! skipping `.*` and `*~`) read into one parser (`ini.rs`). An error
//! anywhere makes Portage ignore all of repos.conf; synclock then cleans
//! nothing.

mod ini;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// One repository from repos.conf (or `--repo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The section name (`gentoo`), or the path for `--repo`.
    pub name: String,
    /// `location` as written (U in README's *Cleaning* table).
    pub location: PathBuf,
    /// `sync-type`, when set (`rsync`, `git`, `webrsync`, `zipfile`, ...).
    pub sync_type: Option<String>,
    /// `sync-rcu = yes|true`.
    pub sync_rcu: bool,
    /// `sync-rcu-store-dir` (S), when set.
    pub rcu_store_dir: Option<PathBuf>,
    /// `auto-sync` (on unless `no`, `false` or blank): synced by
    /// `emerge --sync` and `emaint sync -a`.
    pub auto_sync: bool,
    /// Whether it is the main repository (`main-repo` in `[DEFAULT]`, else
    /// `gentoo`): synced by `emerge-webrsync`.
    pub main: bool,
}

impl Repo {
    /// Whether the sync type is `kind`.
    pub fn is(&self, kind: &str) -> bool {
        self.sync_type.as_deref() == Some(kind)
    }
}

/// The repository configuration, or why Portage would ignore it.
pub type Discovery = Result<Vec<Repo>, ini::Error>;

/// The repositories Portage would sync, from the environment and files.
/// `interrupt` is called for each file; it may end the process.
pub fn discover(interrupt: &dyn Fn()) -> Discovery {
    let eprefix = env::var("EPREFIX").unwrap_or_default();
    let root = env::var("ROOT").unwrap_or_else(|_| "/".into());
    let config_root = env::var("PORTAGE_CONFIGROOT").unwrap_or_else(|_| format!("{eprefix}/"));
    let eroot = format!("{}{}/", root.trim_end_matches('/'), eprefix.trim_end_matches('/'));
    let mut parser = ini::Parser::new(&[
        ("EPREFIX", &eprefix),
        ("EROOT", &eroot),
        ("PORTAGE_CONFIGROOT", &config_root),
        ("ROOT", &root),
        ("sync-rsync-extra-opts", &env::var("PORTAGE_RSYNC_EXTRA_OPTS").unwrap_or_default()),
    ]);
    if let Ok(text) = env::var("PORTAGE_REPOSITORIES") {
        parser.read(&text, "PORTAGE_REPOSITORIES")?;
    } else {
        let sources = [
            PathBuf::from(format!("{eprefix}/usr/share/portage/config/repos.conf")),
            Path::new(&config_root).join("etc/portage/repos.conf"),
        ];
        for file in sources.iter().flat_map(|source| walk(source, &mut Vec::new(), interrupt)) {
            interrupt();
            // Portage skips a file it cannot open, and reads UTF-8 with
            // replacement and universal newlines.
            let Ok(bytes) = fs::read(&file) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n").replace('\r', "\n");
            parser.read(&text, &file.display().to_string())?;
        }
    }
    let main = parser.default_value("main-repo")?.filter(|m| !m.trim().is_empty());
    Ok(repos_of(&parser.resolved()?, main.as_deref().map_or("gentoo", str::trim)))
}

/// The repositories described by resolved sections: those with a non-blank
/// `location`; `main` names the main one.
fn repos_of(sections: &[(String, Vec<(String, String)>)], main: &str) -> Vec<Repo> {
    sections
        .iter()
        .filter_map(|(name, options)| {
            let get = |key: &str| {
                options
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.trim())
                    .filter(|v| !v.is_empty())
            };
            let yes = |key: &str| {
                get(key).is_some_and(|v| {
                    v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("true")
                })
            };
            Some(Repo {
                name: name.clone(),
                location: PathBuf::from(get("location")?),
                sync_type: get("sync-type").map(str::to_string),
                sync_rcu: yes("sync-rcu"),
                rcu_store_dir: get("sync-rcu-store-dir").map(PathBuf::from),
                auto_sync: options.iter().find(|(k, _)| k == "auto-sync").is_none_or(|(_, v)| {
                    ["yes", "true"].contains(&v.trim().to_lowercase().as_str())
                }),
                main: name == main,
            })
        })
        .collect()
}

/// `source` itself if it is a file, or the files below it in Portage's
/// order (`portage.util._recursive_file_list`).
fn config_files(source: &Path) -> Vec<PathBuf> {
    walk(source, &mut Vec::new(), &|| {})
}

/// [`config_files`] below `source`, `above` being the directories on the
/// way there: a symlink back to one of them is not walked again.
fn walk(source: &Path, above: &mut Vec<(u64, u64)>, interrupt: &dyn Fn()) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    interrupt();
    match fs::metadata(source) {
        Ok(meta) if meta.is_dir() && !above.contains(&(meta.dev(), meta.ino())) => {
            let mut names: Vec<std::ffi::OsString> = fs::read_dir(source)
                .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            names.sort();
            above.push((meta.dev(), meta.ino()));
            let files = names
                .into_iter()
                .filter(|name| {
                    let name = name.to_string_lossy();
                    !name.starts_with('.')
                        && !name.ends_with('~')
                        && !["CVS", "RCS", "SCCS"].contains(&&*name)
                })
                .flat_map(|name| walk(&source.join(name), above, interrupt))
                .collect();
            above.pop();
            files
        }
        Ok(meta) if meta.is_file() => vec![source.to_path_buf()],
        _ => Vec::new(),
    }
}

/// The UID of the `portage` account, which Portage syncs as, if there is
/// one (looked up through NSS).
pub fn portage_uid() -> Option<u32> {
    nix::unistd::User::from_name("portage").ok().flatten().map(|user| user.uid.as_raw())
}

/// `PORTAGE_TMPDIR`: the environment, else a plain assignment in make.conf
/// (under PORTAGE_CONFIGROOT, not expanded), else `/var/tmp`.
pub fn portage_tmpdir() -> PathBuf {
    if let Some(dir) = env::var_os("PORTAGE_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let eprefix = env::var("EPREFIX").unwrap_or_default();
    let config_root = env::var("PORTAGE_CONFIGROOT").unwrap_or_else(|_| format!("{eprefix}/"));
    let mut found = None;
    for file in ["etc/make.conf", "etc/portage/make.conf"] {
        for source in config_files(&Path::new(&config_root).join(file)) {
            let Ok(text) = fs::read_to_string(&source) else {
                continue;
            };
            for line in text.lines() {
                let line = line.trim().trim_start_matches("export ").trim();
                let Some(value) = line.strip_prefix("PORTAGE_TMPDIR=") else {
                    continue;
                };
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                if !value.contains('$') && value.starts_with('/') {
                    found = Some(PathBuf::from(value));
                }
            }
        }
    }
    found.unwrap_or_else(|| PathBuf::from(format!("{eprefix}/var/tmp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_become_repos() {
        let option = |k: &str, v: &str| (k.to_string(), v.to_string());
        let sections = vec![
            (
                "gentoo".to_string(),
                vec![
                    option("location", "/var/db/repos/gentoo"),
                    option("sync-type", "rsync"),
                    option("sync-rcu", "Yes"),
                    option("sync-rcu-store-dir", "/var/db/rcu"),
                ],
            ),
            ("blank".to_string(), vec![option("location", "  ")]),
            ("none".to_string(), vec![option("sync-type", "git")]),
            ("guru".to_string(), vec![option("location", "/g"), option("auto-sync", " ")]),
        ];
        let repos = repos_of(&sections, "gentoo");
        assert_eq!(repos.len(), 2);
        assert!(repos[0].is("rsync") && repos[0].sync_rcu);
        assert!(repos[0].auto_sync && repos[0].main && !repos[1].auto_sync && !repos[1].main);
        assert_eq!(repos[0].rcu_store_dir.as_deref(), Some(Path::new("/var/db/rcu")));
    }

    #[test]
    fn directories_are_walked_in_portage_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["b.conf", "a.conf", "z/x.conf", "A.conf", ".hidden", "c~", "s/.git/x", "g.bak"]
        {
            let path = root.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        std::os::unix::fs::symlink(".", root.join("z/loop")).unwrap();
        let names: Vec<String> = config_files(root)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["A.conf", "a.conf", "b.conf", "g.bak", "z/x.conf"]);
    }
}
