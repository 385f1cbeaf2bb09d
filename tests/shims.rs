//! The contrib/shims wrappers, with fake Portage programs later in PATH.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const SHIM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/shims/synclock-shim");
const NAMES: [&str; 5] =
    ["emerge", "emaint", "emerge-webrsync", "emerge-delta-webrsync", "eix-sync"];

/// A shim directory first in PATH, then fake "real" programs that log their
/// arguments, PID, parent and whether they run under the lock.
struct Shims {
    env: TestEnv,
}

impl Shims {
    fn new() -> Self {
        // A shim runs as `sh .../shims/emerge --sync`: to every other
        // test's synclock, a sync outside its lock.
        let env = TestEnv::exclusive();
        let shims = env.path("shims");
        let real = env.path("real");
        fs::create_dir_all(&shims).unwrap();
        fs::create_dir_all(&real).unwrap();
        fs::copy(SHIM, shims.join("synclock-shim")).unwrap();
        for name in NAMES {
            symlink("synclock-shim", shims.join(name)).unwrap();
            // "locked" is synclock status's exit code: 1 held, 0 free.
            let body = format!(
                "#!/bin/sh\n\"$SYNCLOCK\" status >/dev/null; locked=$?\n\
                 echo \"{name} $* pid=$$ ppid=$PPID fd=${{SYNCLOCK_FD:-none}} locked=$locked\" >> \"$LOG\"\n"
            );
            let body =
                if name == "eix-sync" { format!("{body}exec emerge --sync\n") } else { body };
            write_exe(&real.join(name), &body);
        }
        Shims { env }
    }

    fn path_var(&self, dirs: &[PathBuf]) -> String {
        let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        parts.push("/usr/bin:/bin".into());
        parts.join(":")
    }

    /// Runs `name args` as a user would, with the shims first in PATH.
    fn run(&self, name: &str, args: &[&str], path: &[PathBuf]) -> (Finished, String) {
        let mut cmd = hermetic(self.env.path("shims").join(name));
        cmd.args(args)
            .env("PATH", self.path_var(path))
            .env("SYNCLOCK", BIN)
            .env("SYNCLOCK_LOCKFILE", self.env.lockfile())
            .env("SYNCLOCK_WAIT", "30s")
            .env("LOG", self.env.path("log"));
        let out = run(cmd);
        let log = fs::read_to_string(self.env.path("log")).unwrap_or_default();
        let _ = fs::remove_file(self.env.path("log"));
        (out, log)
    }

    fn default_path(&self) -> Vec<PathBuf> {
        vec![self.env.path("shims"), self.env.path("real")]
    }
}

fn write_exe(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn sync_invocations_go_through_the_lock() {
    let shims = Shims::new();
    for (name, args) in [
        ("emerge", &["--sync"][..]),
        ("emerge", &["-q", "--sync", "gentoo"][..]),
        ("emaint", &["sync", "-a"][..]),
        ("emaint", &["-a", "sync"][..]),
        ("emerge-webrsync", &[][..]),
        ("emerge-delta-webrsync", &["-q"][..]),
    ] {
        let (out, log) = shims.run(name, args, &shims.default_path());
        assert_eq!(out.code(), Some(0), "{name} {args:?}: {}", out.stderr);
        let line =
            log.lines().next().unwrap_or_else(|| panic!("{name} did not run: {}", out.stderr));
        assert!(
            line.starts_with(&format!("{name} {}", args.join(" ")).trim_end().to_string()),
            "{line}"
        );
        assert_ne!(field(line, "fd"), "none", "{name} {args:?} ran without SYNCLOCK_FD");
        assert_eq!(field(line, "locked"), "1", "{name} {args:?} ran without the lock held");
    }
}

#[test]
fn other_invocations_run_untouched_in_the_same_process() {
    let shims = Shims::new();
    for (name, args) in [("emerge", &["-uDN", "@world"][..]), ("emaint", &["binhost", "--fix"][..])]
    {
        let mut cmd = hermetic(shims.env.path("shims").join(name));
        cmd.args(args)
            .env("PATH", shims.path_var(&shims.default_path()))
            .env("SYNCLOCK", BIN)
            .env("SYNCLOCK_LOCKFILE", shims.env.lockfile())
            .env("LOG", shims.env.path("log"));
        let mut bg = Bg::spawn(cmd);
        let pid = bg.pid.as_raw();
        bg.release();
        assert_eq!(bg.finish().code(), Some(0));
        let log = fs::read_to_string(shims.env.path("log")).unwrap();
        let _ = fs::remove_file(shims.env.path("log"));
        let line = log.lines().next().unwrap();
        assert_eq!(field(line, "fd"), "none", "{line}");
        assert_eq!(field(line, "locked"), "0", "{line}");
        assert_eq!(field(line, "pid"), pid.to_string(), "the shim must exec, not fork: {line}");
    }
}

#[test]
fn eix_sync_nests_without_deadlock() {
    let shims = Shims::new();
    let (out, log) = shims.run("eix-sync", &[], &shims.default_path());
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("eix-sync") && lines[1].starts_with("emerge --sync"), "{log}");
    assert_eq!(field(lines[1], "locked"), "1");
    assert_eq!(
        field(lines[0], "fd"),
        field(lines[1], "fd"),
        "the inner sync reuses the outer lock"
    );
}

#[test]
fn the_shim_never_execs_itself() {
    let shims = Shims::new();
    // The shim directory twice in PATH, and a second copy of the shims.
    let copy = shims.env.path("more-shims");
    fs::create_dir_all(&copy).unwrap();
    symlink(shims.env.path("shims/synclock-shim"), copy.join("emerge")).unwrap();
    let path = vec![shims.env.path("shims"), shims.env.path("shims"), copy, shims.env.path("real")];
    let (out, log) = shims.run("emerge", &["--sync"], &path);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(log.starts_with("emerge --sync"), "{log}");
    // No real program at all: an error, not a loop.
    let (out, _) = shims.run("emerge", &["--sync"], &[shims.env.path("shims")]);
    assert_eq!(out.code(), Some(127));
    assert!(out.stderr.contains("no real emerge in PATH"), "{}", out.stderr);
}

#[test]
fn systemd_units_verify_as_shipped() {
    if skipped_unless_installed("systemd-analyze") {
        return;
    }
    assert!(Command::new("systemd-analyze").arg("--version").output().unwrap().status.success());
    // A root of our own: the system's units, synclock where the unit calls
    // it, and the unit files unchanged.
    let env = TestEnv::new();
    let system = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("sysinit.target").exists())
        .expect("the system's units");
    let root = env.path("root");
    fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    let copied =
        Command::new("cp").arg("-r").arg(system).arg(root.join("usr/lib/systemd/")).status();
    assert!(copied.unwrap().success());
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy(BIN, root.join("usr/bin/synclock")).unwrap();
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units).unwrap();
    for unit in ["synclock-sync.service", "synclock-sync.timer"] {
        fs::copy(
            format!("{}/contrib/systemd/{unit}", env!("CARGO_MANIFEST_DIR")),
            units.join(unit),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(units.join("synclock-sync.service"))
        .arg(units.join("synclock-sync.timer"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    // verify only warns (a missing program, an unknown key): any line about
    // our units fails.
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("synclock-sync")).collect();
    assert!(warnings.is_empty(), "systemd-analyze verify warns: {warnings:#?}");
    // emaint is in /usr/sbin on most Gentoo systems: found through a PATH
    // that has it, in the unit and in the cron script alike.
    for file in ["contrib/systemd/synclock-sync.service", "contrib/cron/synclock-sync"] {
        let text = fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(text.contains("-- emaint sync --auto") && !text.contains("/bin/emaint"), "{file}");
        assert!(text.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"), "{file}");
    }
}

#[test]
fn the_shim_says_so_when_synclock_is_missing_and_lets_help_through() {
    let shims = Shims::new();
    let mut cmd = hermetic(shims.env.path("shims").join("emerge"));
    cmd.arg("--sync")
        .env("PATH", shims.path_var(&shims.default_path()))
        .env("SYNCLOCK", "synclock-not-installed")
        .env("LOG", shims.env.path("log"));
    let out = run(cmd);
    assert_eq!(out.code(), Some(127), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("synclock-shim: synclock-not-installed not found"),
        "{}",
        out.stderr
    );
    // Help and version never wait for the lock: hold it, then ask.
    let mut holder = shims.env.holder();
    for (name, arg) in
        [("emerge-webrsync", "--help"), ("emerge-delta-webrsync", "-h"), ("emerge", "--version")]
    {
        let (out, log) = shims.run(name, &[arg, "--sync"], &shims.default_path());
        assert_eq!(out.code(), Some(0), "{name} {arg}: {}", out.stderr);
        assert_eq!(field(log.lines().next().unwrap(), "fd"), "none", "{name} {arg}: {log}");
    }
    holder.release();
    holder.finish();
}

#[test]
fn contrib_scripts_pass_shellcheck() {
    if skipped_unless_installed("shellcheck") {
        return;
    }
    assert!(Command::new("shellcheck").arg("--version").output().unwrap().status.success());
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("shellcheck")
        .args(["contrib/shims/synclock-shim", "contrib/cron/synclock-sync", "contrib/bench/run"])
        .args(["tests/need.sh", "tests/portage/proof.sh", ".ci/run"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn ebuild_and_scripts_parse() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (shell, file) in [
        ("bash", "contrib/gentoo/app-admin/synclock/synclock-9999.ebuild"),
        ("sh", "contrib/shims/synclock-shim"),
        ("sh", "contrib/cron/synclock-sync"),
    ] {
        let out = Command::new(shell).arg("-n").arg(format!("{root}/{file}")).output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
