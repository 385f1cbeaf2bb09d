//! Hostile files and bad input: root's synclock never hangs, follows,
//! crosses or lies, whatever users put in its way.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A git overlay `overlay` in `p`, owned by another user (nobody), with a
/// stale `index.lock`.
fn overlay(p: &Portage) -> std::path::PathBuf {
    p.conf("git.conf", "[overlay]\nlocation = @/repos/overlay\nsync-type = git\n");
    p.write("repos/overlay/.git/refs/heads/master", "0123\n");
    p.write("repos/overlay/.git/index.lock", "");
    as_nobody(&p.path("repos/overlay"));
    p.path("repos/overlay/.git")
}

/// Gives `path` (and what is below it, not following symlinks) to nobody,
/// as if that user had made it.
fn as_nobody(path: &std::path::Path) {
    let status = Command::new("chown").args(["-hR", "65534:65534"]).arg(path).status();
    assert!(status.is_ok_and(|s| s.success()), "chown {}", path.display());
}

/// Runs `cmd` and fails the test (killing it) if it takes longer than
/// `limit`: a hang is caught, not waited out.
fn within(cmd: Command, limit: Duration) -> Finished {
    let mut run = Bg::spawn(cmd);
    run.release();
    run.finish_within(limit)
}

#[test]
fn a_git_head_that_is_a_fifo_or_endless_neither_hangs_nor_eats_memory() {
    let p = Portage::new();
    let git = overlay(&p);
    for (what, plant) in [
        (
            "fifo HEAD",
            &(|g: &std::path::Path| {
                nix::unistd::mkfifo(&g.join("HEAD"), nix::sys::stat::Mode::S_IRWXU).unwrap()
            }) as &dyn Fn(&std::path::Path),
        ),
        ("HEAD -> /dev/zero", &|g: &std::path::Path| symlink("/dev/zero", g.join("HEAD")).unwrap()),
    ] {
        let _ = fs::remove_file(git.join("HEAD"));
        plant(&git);
        as_nobody(&git);
        let out = within(p.synclock(["--", "true"]), Duration::from_secs(10));
        assert_eq!(out.code(), Some(0), "{what}: {}", out.stderr);
        assert!(out.stderr.contains("has no resolvable HEAD"), "{what}: {}", out.stderr);
        assert!(
            git.join("index.lock").exists(),
            "{what}: a lock removed beside an unresolved HEAD"
        );
    }
    // packed-refs a fifo: HEAD names a ref that only packed-refs could hold.
    fs::remove_file(git.join("HEAD")).unwrap();
    fs::write(git.join("HEAD"), "ref: refs/heads/other\n").unwrap();
    nix::unistd::mkfifo(&git.join("packed-refs"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let out = within(p.synclock(["--", "true"]), Duration::from_secs(10));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

#[test]
fn git_refs_that_lead_out_of_the_repository_are_not_walked() {
    let p = Portage::new();
    let git = overlay(&p);
    // A detached HEAD resolves, so the refs are walked for stale locks.
    fs::write(git.join("HEAD"), "0123456789abcdef0123456789abcdef01234567\n").unwrap();
    fs::remove_dir_all(git.join("refs")).unwrap();
    symlink("/", git.join("refs")).unwrap();
    as_nobody(&git);
    let out = within(p.synclock(["--", "true"]), Duration::from_millis(1500));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!git.join("index.lock").exists(), "{}", out.stderr);
}

#[test]
fn a_planted_portage_symlink_in_portage_tmpdir_is_not_followed() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 0);
    p.write("victim/webrsync-a1b2c3/canary", "keep");
    fs::remove_dir_all(p.path("tmp/portage")).unwrap();
    symlink(p.path("victim"), p.path("tmp/portage")).unwrap();
    as_nobody(&p.path("tmp/portage"));
    let out = run(p.synclock(["--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(p.exists("victim/webrsync-a1b2c3/canary"), "{}", out.stderr);
}

#[test]
fn a_bind_mount_inside_a_quarantine_is_not_crossed() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 2);
    p.write("mounted/canary", "keep");
    let point = p.path(&format!("repos/gentoo/{QUARANTINE}/cat-0/bind"));
    fs::create_dir_all(&point).unwrap();
    let mounted = Command::new("mount").arg("--bind").arg(p.path("mounted")).arg(&point).status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipped: mount --bind is not permitted here");
        return;
    }
    let out = run(p.synclock(["--", "true"]));
    let _ = Command::new("umount").arg(&point).status();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(p.exists("mounted/canary"), "crossed into the bind mount: {}", out.stderr);
    assert!(out.stderr.contains("cannot remove"), "{}", out.stderr);
}

#[test]
fn other_users_command_lines_cannot_forge_lines_or_drive_the_terminal() {
    let p = Portage::exclusive();
    p.script("bin/eix-sync", STAND_IN);
    let mut sync = Bg::spawn({
        let mut cmd = hermetic(p.path("bin/eix-sync"));
        cmd.arg("\nsynclock: nothing to clean\x1b]0;pwned\x07\x1b[31m");
        cmd
    });
    sync.expect_stdout("started");
    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(!out.stderr.contains('\x1b') && !out.stderr.contains('\x07'), "{:?}", out.stderr);
    assert!(
        out.stderr.contains("\\nsynclock: nothing to clean\\x1b]0;pwned\\x07"),
        "{}",
        out.stderr
    );
    sync.release();
    sync.finish();
}

#[test]
fn a_directory_planted_as_record_or_history_is_reported_every_run() {
    let env = TestEnv::new();
    let lock = env.lockfile().display().to_string();
    for suffix in [".holder", ".history"] {
        let planted = format!("{lock}{suffix}");
        let _ = fs::remove_file(&planted);
        fs::create_dir_all(format!("{planted}/x")).unwrap();
        for _ in 0..2 {
            let out = run(env.synclock(["--", "true"]));
            assert_eq!(out.code(), Some(0), "{}", out.stderr);
            assert!(out.stderr.contains(&format!("rm -r {planted})")), "{suffix}: {}", out.stderr);
        }
        fs::remove_dir_all(&planted).unwrap();
    }
}

#[test]
fn status_names_no_process_the_kernel_does_not_show_holding_the_lock() {
    // A record left by a container's synclock (another PID namespace), and
    // a plain flock(1) holder started right after: the record is not its.
    let env = TestEnv::new();
    fs::write(env.lockfile(), "").unwrap();
    fs::set_permissions(env.lockfile(), fs::Permissions::from_mode(0o600)).unwrap();
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let record = format!(
        "synclock-holder 1\npid 1\nstart_ticks 5\nhost h\npid_namespace 1\narg stale\nsince {}.000\n",
        since.as_secs()
    );
    fs::write(format!("{}.holder", env.lockfile().display()), record).unwrap();
    let mut flock = Bg::spawn({
        let mut cmd = hermetic("flock");
        cmd.arg(env.lockfile()).args(["sh", "-c", "echo locked; read _ || true"]);
        cmd
    });
    flock.expect_stdout("locked");
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(1));
    assert_ne!(json["holder"]["command"][0], "stale", "{json}");
    assert_eq!(json["holder"]["namespace_pid"], serde_json::Value::Null, "{json}");
    flock.release();
    flock.finish();
}

#[test]
fn status_in_a_container_that_cannot_tell_says_so() {
    if skipped_unless_containers() {
        return;
    }
    let env = TestEnv::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut holder = env.holder();
    let mut inner = vec!["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN];
    let lock = env.lockfile().display().to_string();
    inner.extend(["--lockfile", &lock, "status"]);
    let out = run(in_container(&inner));
    assert_eq!(out.code(), Some(125), "said free while held: {}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("cannot tell whether this lock is held"), "{}", out.stderr);
    holder.release();
    holder.finish();
}

#[test]
fn durations_too_large_and_a_lockfile_naming_a_directory_are_usage_errors() {
    let env = TestEnv::new();
    for args in [
        &["--wait", "1e19", "--", "true"][..],
        &["--wait", "9.3e18", "--", "true"],
        &["--min-interval", "1e19", "--", "true"],
        &["--min-interval", "5e17", "--", "true"],
    ] {
        let mut cmd = env.synclock::<[&str; 0], &str>([]);
        cmd.args(args);
        let out = run(cmd);
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("longer than 100 years"), "{}", out.stderr);
    }
    let mut cmd = hermetic(BIN);
    cmd.args(["--lockfile", &format!("{}/", env.lockfile().display()), "--", "true"]);
    let out = run(cmd);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("names no file"), "{}", out.stderr);
}

#[test]
fn a_looping_or_exploding_repos_conf_cleans_nothing_and_runs_the_command() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 1);
    symlink(".", p.path("root/etc/portage/repos.conf/loop")).unwrap();
    let out = within(p.synclock(["--", "echo", "ran"]), Duration::from_secs(20));
    assert_eq!((out.code(), out.stdout.as_str()), (Some(0), "ran"), "{}", out.stderr);
    assert!(!p.exists(&format!("repos/gentoo/{QUARANTINE}")), "a loop hid the repository");
    // Each level refers to the next ten times: 10^10 bytes if expanded.
    let mut bomb = String::from("[DEFAULT]\n");
    for level in 0..10 {
        bomb.push_str(&format!("v{level} = {}\n", format!("%(v{})s", level + 1).repeat(10)));
    }
    bomb.push_str("v10 = x\n[bomb]\nlocation = %(v0)s\n");
    p.write("root/etc/portage/repos.conf/zz-bomb.conf", &bomb);
    let out = within(p.synclock(["--", "echo", "ran"]), Duration::from_secs(20));
    assert_eq!((out.code(), out.stdout.as_str()), (Some(0), "ran"), "{}", out.stderr);
    assert!(out.stderr.contains("cannot use repos.conf"), "{}", out.stderr);
}

#[test]
fn command_lines_that_differ_only_in_bytes_that_are_not_utf8_are_two_commands() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    let word = |byte: u8| std::ffi::OsStr::from_bytes(&[byte]).to_os_string();
    let mut first = env.synclock(["--", "sh", "-c", "exit 0"]);
    first.arg(word(0xfe));
    assert_eq!(run(first).code(), Some(0));
    let mut second_bytes = env.synclock(["--min-interval", "1h", "--", "sh", "-c", "exit 0"]);
    second_bytes.arg(word(0xff));
    let out = run(second_bytes);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("not run"), "0xff taken for 0xfe: {}", out.stderr);
}

#[test]
fn status_never_names_a_process_that_reused_the_acquirers_pid() {
    if skipped_unless_root("to choose the next PID (ns_last_pid)") {
        return;
    }
    let env = TestEnv::exclusive();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // flock(1) takes the lock and its child keeps it; flock is killed, and
    // the next process is given its PID (ns_last_pid). A user then asks
    // who holds the lock.
    let script = r#"lock=$1 bin=$2 marker=$3
flock "$lock" sh -c 'echo $$ > "$0"; exec sleep 300' "$marker" >/dev/null 2>&1 & acquirer=$!
while [ ! -s "$marker" ]; do :; done
kill -9 "$acquirer"; wait "$acquirer"
echo $((acquirer - 1)) > /proc/sys/kernel/ns_last_pid
sleep 301 >/dev/null 2>&1 & reused=$!
if [ "$reused" = "$acquirer" ]; then
  echo "reused=$reused"
  setpriv --reuid=65534 --regid=65534 --clear-groups "$bin" --lockfile "$lock" status --json
fi
kill "$reused" "$(cat "$marker")""#;
    // A lockfile a run would take (flock(1) would create it 0644).
    fs::write(env.lockfile(), "").unwrap();
    fs::set_permissions(env.lockfile(), fs::Permissions::from_mode(0o600)).unwrap();
    let lock = env.lockfile().display().to_string();
    for attempt in 0..5 {
        let marker = env.path(&format!("locked{attempt}")).display().to_string();
        let mut cmd = hermetic("sh");
        cmd.args(["-c", script, "sh", &lock, BIN, &marker]);
        let out = run(cmd);
        let Some(reused) = out.stdout.lines().find_map(|l| l.strip_prefix("reused=")) else {
            continue; // another process took the PID first
        };
        let json: serde_json::Value =
            serde_json::from_str(out.stdout.lines().nth(1).unwrap()).expect(&out.stdout);
        assert_eq!(json["held"], true, "{}", out.stdout);
        assert_ne!(json["holder"]["pid"].to_string(), reused, "{}", out.stdout);
        assert_ne!(json["holder"]["command"][0], "sleep", "{}", out.stdout);
        return;
    }
    eprintln!("skipped: other processes took the freed PID first in 5 attempts");
}

#[test]
fn a_signal_while_repos_conf_is_read_ends_the_run_at_once() {
    let p = Portage::new();
    let dir = p.path("root/etc/portage/repos.conf/many");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..40_000 {
        fs::write(
            dir.join(format!("{i:05}.conf")),
            format!("[r{i}]\nlocation = /nonexistent/{i}\n"),
        )
        .unwrap();
    }
    let ran = p.path("ran");
    let mut wrapped = Bg::spawn(p.synclock(["--", "touch", ran.to_str().unwrap()]));
    // Seen reading: a descriptor of it open on a file of that directory.
    let fds = format!("/proc/{}/fd", wrapped.pid);
    let end = Instant::now() + deadline();
    while !fs::read_dir(&fds).is_ok_and(|fds| {
        fds.flatten().any(|fd| fs::read_link(fd.path()).is_ok_and(|f| f.starts_with(&dir)))
    }) {
        assert!(Instant::now() < end, "never seen reading repos.conf");
    }
    wrapped.signal(nix::sys::signal::Signal::SIGTERM);
    let out = wrapped.finish();
    assert_eq!(out.code(), Some(143), "{}", out.stderr);
    assert!(
        out.stderr.contains("interrupted by SIGTERM while reading the repository configuration"),
        "{}",
        out.stderr
    );
    assert!(!ran.exists());
}
