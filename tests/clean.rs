//! Cleaning stale sync leftovers in private config roots.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;

use nix::sys::signal::Signal;

use crate::support::*;

#[test]
fn every_leftover_is_cleaned_and_nothing_else() {
    let p = Portage::new();
    // Row 1: rsync quarantine (with a symlink inside pointing outside).
    p.rsync_repo("gentoo", 40);
    p.write("outside/precious", "keep");
    symlink(p.path("outside"), p.path(&format!("repos/gentoo/{QUARANTINE}/escape"))).unwrap();
    p.write("repos/gentoo/metadata/timestamp.x", "1 x\n");
    // Do not touch: Portage lock files, rsync temp files, distfiles.
    p.write("repos/gentoo/.x.portage_lockfile", "");
    p.write("repos/gentoo/.Manifest.gz.Ab3dEf", "");
    p.write("repos/gentoo/distfiles/f.tar.xz", "");
    // Rows 2-4: sync-rcu.
    p.conf("rcu.conf", "[rcu]\nlocation = @/repos/rcu\nsync-type = rsync\nsync-rcu = yes\nsync-rcu-store-dir = @/store\n");
    p.write("store/snapshots/1/profiles/repo_name", "rcu\n");
    symlink("snapshots/1", p.path("store/latest")).unwrap();
    symlink(p.path("store/latest"), p.path("repos/rcu")).unwrap();
    p.write("store/update/half/copied", "");
    symlink("snapshots/1", p.path("store/latest.new")).unwrap();
    symlink(p.path("store/latest"), p.path("repos/rcu.new")).unwrap();
    // Row 5: zipfile.
    p.conf("zip.conf", "[zip]\nlocation = @/repos/zip\nsync-type = zipfile\n");
    p.write("repos/zip/.tempab12cd_9/old/tree", "");
    p.write("repos/zip/.tempAB12CD_9/keep", "");
    p.write("repos/zip/.info", "etag");
    // Row 6: webrsync temp dirs.
    p.write("tmp/emerge-webrsync.Ab3dEf/snapshot/x", "");
    p.write("tmp/portage/webrsync-a1b2c3/x", "");
    p.write("tmp/portage/delta-webrsync.ZZZZZZ/x", "");
    p.write("tmp/portage/webrsync.q1w2e3/x", "");
    p.write("tmp/emerge-webrsync.toolong1/keep", "");
    p.write("tmp/gemato.abcdefgh/keep", "");
    // Row 7: git locks, whatever their age (nobody has them open).
    p.conf("git.conf", "[overlay]\nlocation = @/repos/overlay\nsync-type = git\n");
    p.write("repos/overlay/.git/HEAD", "ref: refs/heads/master\n");
    p.write("repos/overlay/.git/refs/heads/master", "0123\n");
    for lock in [
        ".git/index.lock",
        ".git/refs/heads/feature.lock",
        ".git/objects/pack/tmp_pack_Xy12",
        ".git/shallow.lock",
        ".git/gc.pid",
    ] {
        p.write(&format!("repos/overlay/{lock}"), "");
    }

    let out = run(p.synclock(["--", "sh", "-c", "echo ran"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran");
    let expected = format!("removed stale {QUARANTINE} in {} (", p.path("repos/gentoo").display());
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    for gone in [
        &format!("repos/gentoo/{QUARANTINE}")[..],
        "repos/gentoo/metadata/timestamp.chk",
        "repos/gentoo/metadata/timestamp.x",
        "store/update",
        "store/latest.new",
        "repos/rcu.new",
        "repos/zip/.tempab12cd_9",
        "tmp/emerge-webrsync.Ab3dEf",
        "tmp/portage/webrsync-a1b2c3",
        "tmp/portage/delta-webrsync.ZZZZZZ",
        "tmp/portage/webrsync.q1w2e3",
        "repos/overlay/.git/index.lock",
        "repos/overlay/.git/refs/heads/feature.lock",
        "repos/overlay/.git/objects/pack/tmp_pack_Xy12",
        "repos/overlay/.git/shallow.lock",
    ] {
        assert!(!p.exists(gone), "{gone} was not cleaned: {}", out.stderr);
    }
    for kept in [
        "outside/precious",
        "repos/gentoo/.x.portage_lockfile",
        "repos/gentoo/.Manifest.gz.Ab3dEf",
        "repos/gentoo/distfiles/f.tar.xz",
        "repos/gentoo/profiles/repo_name",
        "store/latest",
        "store/snapshots/1/profiles/repo_name",
        "repos/rcu",
        "repos/zip/.tempAB12CD_9/keep",
        "repos/zip/.info",
        "tmp/emerge-webrsync.toolong1/keep",
        "tmp/gemato.abcdefgh/keep",
        "repos/overlay/.git/gc.pid",
        "repos/overlay/.git/HEAD",
    ] {
        assert!(p.exists(kept), "{kept} must not be touched: {}", out.stderr);
    }
    // A second run finds nothing and says nothing.
    let again = run(p.synclock(["--", "true"]));
    assert_eq!((again.code(), again.stderr.as_str()), (Some(0), ""));
}

#[test]
fn with_tarsync_installed_timestamp_x_goes_only_with_a_webrsync_leftover() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 0);
    p.write("repos/gentoo/metadata/timestamp.x", "1 x\n");
    p.script("bin/tarsync", "#!/bin/sh\n");
    let path = format!("{}:{}", p.path("bin").display(), std::env::var("PATH").unwrap_or_default());
    // No webrsync left anything behind: the timestamp is the tree's own.
    let mut quiet = p.synclock(["--", "true"]);
    quiet.env("PATH", &path);
    let out = run(quiet);
    assert_eq!((out.code(), out.stderr.as_str()), (Some(0), ""));
    assert!(p.exists("repos/gentoo/metadata/timestamp.x"));
    // A dead webrsync's temp dir (no snapshot: tarsync updated in place).
    p.write("tmp/emerge-webrsync.Ab3dEf/x", "");
    let mut cleaning = p.synclock(["--", "true"]);
    cleaning.env("PATH", &path);
    let out = run(cleaning);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!p.exists("tmp/emerge-webrsync.Ab3dEf"), "{}", out.stderr);
    assert!(!p.exists("repos/gentoo/metadata/timestamp.x"), "{}", out.stderr);
}

#[test]
fn after_a_dead_webrsync_the_main_repository_named_in_default_is_mended() {
    let p = Portage::new();
    p.conf("0-default.conf", "[DEFAULT]\nmain-repo = mine\n");
    for name in ["gentoo", "mine"] {
        p.rsync_repo(name, 0);
        p.write(&format!("repos/{name}/metadata/timestamp.x"), "1 x\n");
    }
    p.write("tmp/emerge-webrsync.Ab3dEf/snapshot/x", "");
    let out = run(p.synclock(["--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!p.exists("repos/mine/metadata/timestamp.x"), "{}", out.stderr);
    assert!(p.exists("repos/gentoo/metadata/timestamp.x"), "not the main repository");
}

#[test]
fn symlinked_quarantine_is_unlinked_and_its_target_untouched() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 0);
    p.write("elsewhere/important", "keep");
    symlink(p.path("elsewhere"), p.path(&format!("repos/gentoo/{QUARANTINE}"))).unwrap();
    let out = run(p.synclock(["--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!p.exists(&format!("repos/gentoo/{QUARANTINE}")));
    assert_eq!(fs::read_to_string(p.path("elsewhere/important")).unwrap(), "keep");
}

/// A `-n` run exits 75, naming the sync `pid` that runs outside synclock.
fn refused_for_the_outside_sync(p: &Portage, pid: nix::unistd::Pid) {
    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("PID {pid} (")), "{}", out.stderr);
}

#[test]
fn live_unwrapped_sync_delays_cleaning_and_the_command() {
    let p = Portage::exclusive();
    p.rsync_repo("gentoo", 3);
    let mut emerge = p.unwrapped_emerge_sync();

    refused_for_the_outside_sync(&p, emerge.pid);

    let ran = p.path("ran");
    let mut wrapped = Bg::spawn(p.synclock(["--wait", "1m", "--", "touch", ran.to_str().unwrap()]));
    let line = wrapped.expect_stderr("which runs outside synclock");
    assert!(
        line.contains(&format!(
            "waiting for PID {} (/bin/sh {} --sync)",
            emerge.pid,
            p.path("bin/emerge").display()
        )),
        "{line}"
    );
    assert!(!ran.exists(), "the command ran while an unwrapped sync was alive");
    assert!(
        p.exists(&format!("repos/gentoo/{QUARANTINE}")),
        "cleaned while a sync ran outside the lock"
    );
    emerge.release();
    let out = wrapped.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(ran.exists());
    assert!(
        !p.exists(&format!("repos/gentoo/{QUARANTINE}")),
        "not cleaned once the sync outside the lock had ended"
    );
}

#[test]
fn a_signal_inherited_as_ignored_does_not_end_the_wait_for_an_outside_sync() {
    // Under nohup SIGHUP is ignored; the kernel would still queue it while
    // blocked, so synclock must not block (and then act on) it.
    let p = Portage::exclusive();
    let mut emerge = p.unwrapped_emerge_sync();
    let ran = p.path("ran");
    let cmd = p.synclock(["--wait", "1m", "--", "touch", ran.to_str().unwrap()]);
    let out = sighup_while_waiting_under_nohup(cmd, "which runs outside synclock", &mut emerge);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(ran.exists(), "the command did not run");
}

#[test]
fn unwrapped_rsync_into_the_real_path_of_a_symlinked_repo_is_waited_for() {
    // The repository is configured through a symlink; the rsync names only
    // the directory it reaches, which synclock finds by resolving the
    // location (only once it meets an rsync).
    let p = Portage::exclusive();
    fs::create_dir_all(p.path("repos/real")).unwrap();
    symlink(p.path("repos/real"), p.path("repos/linked")).unwrap();
    p.conf("linked.conf", "[linked]\nlocation = @/repos/linked\nsync-type = rsync\n");
    p.script("bin/rsync", STAND_IN);
    let mut rsync = Bg::spawn({
        let mut cmd = hermetic(p.path("bin/rsync"));
        cmd.arg("-a").arg("rsync://mirror/x/").arg(p.path("repos/real"));
        cmd
    });
    rsync.expect_stdout("started");

    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "PID {} (/bin/sh {} -a",
            rsync.pid,
            p.path("bin/rsync").display()
        )),
        "{}",
        out.stderr
    );
    rsync.release();
    rsync.finish();
    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!((out.code(), out.stderr.as_str()), (Some(0), ""));
}

#[test]
fn unwrapped_syncs_whose_wrapped_part_queues_for_the_lock_are_not_waited_for() {
    // Two unwrapped eix-syncs, each running a wrapped emerge --sync: the
    // one that gets the lock must not wait for the other, which waits for
    // the lock itself.
    let p = Portage::exclusive();
    p.script("bin/eix-sync", "#!/bin/sh\n\"$@\"\n");
    let mut holder = Bg::spawn(p.synclock(["--", "sh", "-c", "echo locked; read _ || true"]));
    holder.expect_stdout("locked");
    let eix_sync = |name: &str| {
        let mut cmd = hermetic(p.path("bin/eix-sync"));
        let wrapped = p.synclock(["--wait", "5s", "--", "echo", name]);
        cmd.arg(wrapped.get_program()).args(wrapped.get_args());
        cmd.envs(wrapped.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let mut sync = Bg::spawn(cmd);
        sync.expect_stderr("is held by");
        sync
    };
    let mut first = eix_sync("first");
    let mut second = eix_sync("second");
    holder.release();
    // Waiting for the other would last the whole 5 s and end in 75. (The
    // second may still wait briefly for the first eix-sync's own exit,
    // once the first's wrapped part has finished: that one is outside.)
    for (sync, name) in [(&mut first, "first"), (&mut second, "second")] {
        let out = sync.finish();
        assert_eq!(out.code(), Some(0), "{name}: {}", out.stderr);
        assert!(out.stdout.contains(name), "{name}: {}", out.stdout);
        assert!(!out.stderr.contains("gave up"), "{name}: {}", out.stderr);
    }
}

#[test]
fn an_unwrapped_sync_whose_waiting_part_died_is_waited_for() {
    // An unwrapped eix-sync whose wrapped part was killed while it waited:
    // it no longer queues for the lock, so it is an outside sync again.
    let p = Portage::exclusive();
    p.script("bin/eix-sync", "#!/bin/sh\n\"$@\"\necho wrapped part ended\nread _ || true\n");
    let mut holder = Bg::spawn(p.synclock(["--", "sh", "-c", "echo locked; read _ || true"]));
    holder.expect_stdout("locked");
    let mut eix_sync = Bg::spawn({
        let mut cmd = hermetic(p.path("bin/eix-sync"));
        let wrapped = p.synclock(["--wait", "1m", "--", "true"]);
        cmd.arg(wrapped.get_program()).args(wrapped.get_args());
        cmd.envs(wrapped.get_envs().filter_map(|(k, v)| Some((k, v?))));
        cmd
    });
    eix_sync.expect_stderr("is held by");
    let wrapped = children_of(eix_sync.pid.as_raw());
    assert_eq!(wrapped.len(), 1, "{wrapped:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(wrapped[0]), Signal::SIGKILL).unwrap();
    eix_sync.expect_stdout("wrapped part ended");
    holder.release();
    assert_eq!(holder.finish().code(), Some(0));

    refused_for_the_outside_sync(&p, eix_sync.pid);
    eix_sync.release();
    eix_sync.finish();
}

#[test]
fn a_shell_that_execs_a_sync_is_found() {
    // A subshell, no sync while its synclock waits, that then execs
    // `emerge --sync` must be found by the next holder's scan.
    let p = Portage::exclusive();
    p.script("bin/emerge", STAND_IN);
    let mut holder = Bg::spawn(p.synclock(["--", "sh", "-c", "echo locked; read _ || true"]));
    holder.expect_stdout("locked");
    let mut shell = Bg::spawn({
        let wrapped = p.synclock(["--wait", "1m", "--", "true"]);
        let mut cmd = hermetic("sh");
        let script = "(\"$@\"; echo wrapped done; exec \"$EMERGE\" --sync); :";
        cmd.args(["-c", script, "sh"]);
        cmd.arg(wrapped.get_program()).args(wrapped.get_args());
        cmd.envs(wrapped.get_envs().filter_map(|(k, v)| Some((k, v?))));
        cmd.env("EMERGE", p.path("bin/emerge"));
        cmd
    });
    shell.expect_stderr("is held by");
    let subshell = children_of(shell.pid.as_raw());
    assert_eq!(subshell.len(), 1, "{subshell:?}");
    let subshell = subshell[0];
    holder.release();
    assert_eq!(holder.finish().code(), Some(0));
    shell.expect_stdout("wrapped done");
    shell.expect_stdout("started");

    refused_for_the_outside_sync(&p, nix::unistd::Pid::from_raw(subshell));
    shell.release();
    shell.finish();
}

#[test]
fn malformed_repos_conf_cleans_nothing_but_runs_the_command() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 3);
    p.conf("broken.conf", "[gentoo]\nlocation = /x\n[gentoo]\nsync-type = git\n");
    let out = run(p.synclock(["--", "sh", "-c", "echo ran"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran");
    assert!(out.stderr.contains("cannot use repos.conf"), "{}", out.stderr);
    assert!(out.stderr.contains("broken.conf"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(p.exists(&format!("repos/gentoo/{QUARANTINE}")));
}

#[test]
fn interrupted_run_forces_a_full_compare() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 0);
    let mut holder = Bg::spawn(p.synclock(["--", "sh", "-c", "echo locked; read _ || true"]));
    holder.expect_stdout("locked");
    holder.signal(Signal::SIGKILL);
    holder.wait_exit();
    holder.release(); // the orphaned command ends; the lock is free again
    let out = run(p.synclock(["--wait", "1m", "--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("the previous run under this lock (PID {}", holder.pid)),
        "{}",
        out.stderr
    );
    assert!(!p.exists("repos/gentoo/metadata/timestamp.chk"), "{}", out.stderr);
    // A run that finished normally leaves no such trace.
    p.write("repos/gentoo/metadata/timestamp.chk", "x\n");
    let out = run(p.synclock(["--", "true"]));
    assert!(!out.stderr.contains("did not finish"), "{}", out.stderr);
    assert!(p.exists("repos/gentoo/metadata/timestamp.chk"));
}

#[test]
fn clean_dry_run_removes_nothing_then_clean_removes() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 10);
    let out = run(p.synclock(["clean", "--dry-run"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let listed = out.stdout.lines().count();
    let quarantine = p.path(&format!("repos/gentoo/{QUARANTINE}"));
    assert!(
        out.stdout.contains(&format!("would remove {}", quarantine.display())),
        "{}",
        out.stdout
    );
    assert!(quarantine.exists());
    assert!(p.exists("repos/gentoo/metadata/timestamp.chk"));
    let out = run(p.synclock(["clean"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!quarantine.exists());
    assert!(!p.exists("repos/gentoo/metadata/timestamp.chk"));
    // The same things as the dry run listed: the quarantine, the timestamp.
    assert_eq!((listed, out.stderr.lines().count()), (2, 2), "{}", out.stderr);
    assert!(out.stderr.contains("(28 entries)"), "{}", out.stderr); // 1 + 7 + 10 + 10
    let out = run(p.synclock(["clean"]));
    assert!(out.stderr.contains("nothing to clean"), "{}", out.stderr);
}

#[test]
fn no_clean_and_repo_options() {
    let p = Portage::new();
    p.rsync_repo("gentoo", 2);
    let out = run(p.synclock(["--no-clean", "--", "true"]));
    assert_eq!(out.code(), Some(0));
    assert!(p.exists(&format!("repos/gentoo/{QUARANTINE}")));
    // A location repos.conf does not list, given by hand.
    p.write(&format!("unlisted/{QUARANTINE}/x"), "");
    let unlisted = p.path("unlisted");
    let out = run(p.synclock(["--repo", unlisted.to_str().unwrap(), "--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!p.exists(&format!("unlisted/{QUARANTINE}")));
    assert!(!p.exists(&format!("repos/gentoo/{QUARANTINE}")));
}

#[test]
fn foreign_quarantine_is_left_alone() {
    if skipped_unless_root("to chown") {
        return;
    }
    let p = Portage::new();
    p.rsync_repo("gentoo", 1);
    let quarantine = p.path(&format!("repos/gentoo/{QUARANTINE}"));
    std::os::unix::fs::chown(&quarantine, Some(65534), Some(65534)).unwrap();
    let out = run(p.synclock(["--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(quarantine.exists());
    assert!(out.stderr.contains("owned by uid 65534"), "{}", out.stderr);
}

#[test]
fn a_low_pid_sync_in_a_container_is_waited_for_after_a_host_run() {
    // A host and a container share the lockfile. The host's run must leave
    // nothing in it that makes the container's synclock miss a sync
    // running there as PID 2 of its own PID namespace.
    let p = Portage::exclusive();
    if skipped_unless_containers() {
        return;
    }
    let repo = p.path("repos/gentoo");
    fs::create_dir_all(&repo).unwrap();
    let host = run(p.synclock(["--repo", repo.to_str().unwrap(), "--", "true"]));
    assert_eq!(host.code(), Some(0), "{}", host.stderr);

    p.script("bin/emerge-webrsync", "#!/bin/sh\necho started > \"$1\"\nsleep 60 &\nwait\n");
    let fifo = p.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // PID 1 is this shell; its first child, PID 2, the stand-in sync.
    let script = r#"sync="$1"; fifo="$2"; shift 2
"$sync" "$fifo" &
read started < "$fifo"
"$@" && echo "rc=0" || echo "rc=$?"
echo "pid=$!""#;
    let wrapped = p.synclock(["--repo", repo.to_str().unwrap(), "-w", "1", "--", "true"]);
    let mut inner: Vec<&std::ffi::OsStr> = vec!["sh".as_ref(), "-c".as_ref(), script.as_ref()];
    inner.push("sh".as_ref());
    let sync = p.path("bin/emerge-webrsync");
    inner.push(sync.as_os_str());
    inner.push(fifo.as_os_str());
    inner.push(wrapped.get_program());
    inner.extend(wrapped.get_args());
    let mut cmd = in_container(&inner);
    cmd.envs(wrapped.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let out = run(cmd);
    assert!(out.stdout.contains("rc=75"), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("pid=2"), "{}", out.stdout);
    assert!(
        out.stderr.contains("PID 2 (/bin/sh ") && out.stderr.contains("runs outside synclock"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_signal_while_cleaning_ends_the_run_before_the_command() {
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let p = Portage::new();
        p.rsync_repo("gentoo", 0);
        let quarantine = p.path(&format!("repos/gentoo/{QUARANTINE}"));
        fs::create_dir_all(&quarantine).unwrap();
        for i in 0..60_000 {
            fs::File::create(quarantine.join(format!("f{i}"))).unwrap();
        }
        let before = fs::metadata(&quarantine).unwrap().modified().unwrap();
        let ran = p.path("ran");
        let mut wrapped = Bg::spawn(p.synclock(["--", "touch", ran.to_str().unwrap()]));
        // The first entry removed changes the quarantine's mtime.
        let end = std::time::Instant::now() + deadline();
        while fs::metadata(&quarantine).is_ok_and(|m| m.modified().unwrap() == before) {
            assert!(std::time::Instant::now() < end, "cleaning never started");
            std::thread::yield_now();
        }
        assert!(quarantine.exists(), "removal ended before the signal");
        wrapped.signal(signal);
        let out = wrapped.finish();
        assert_eq!(out.code(), Some(code), "{signal}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("interrupted by {signal} while cleaning; touch")),
            "{}",
            out.stderr
        );
        assert!(!ran.exists(), "{signal}: the command started");
    }
}

/// A stand-in sync that any user may run: a script in a directory of its
/// own, readable by all.
fn public_stand_in(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("synclock-public").tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join(name);
    fs::write(&path, STAND_IN).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    (dir, path)
}

#[test]
fn another_users_sync_never_delays_roots_run() {
    if skipped_unless_root("to run a stand-in as another user") {
        return;
    }
    let p = Portage::exclusive();
    p.rsync_repo("gentoo", 0);
    let (_dir, emerge) = public_stand_in("emerge");
    let mut theirs = Bg::spawn({
        let mut cmd = hermetic("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&emerge).arg("--sync");
        cmd
    });
    theirs.expect_stdout("started");
    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(0), "nobody's sync delayed root's: {}", out.stderr);
    theirs.release();
    theirs.finish();
    // The same stand-in as root is waited for.
    let mut roots = Bg::spawn({
        let mut cmd = hermetic(&emerge);
        cmd.arg("--sync");
        cmd
    });
    roots.expect_stdout("started");
    refused_for_the_outside_sync(&p, roots.pid);
    roots.release();
    roots.finish();
}

#[test]
fn a_front_end_syncing_another_repository_does_not_delay() {
    let p = Portage::exclusive();
    p.rsync_repo("gentoo", 0);
    for (repo, delays) in [("other", false), ("gentoo", true)] {
        let mut emaint = p.running("emaint", &["sync", "-r", repo]);
        if delays {
            refused_for_the_outside_sync(&p, emaint.pid);
        } else {
            let out = run(p.synclock(["-n", "--", "true"]));
            assert_eq!(out.code(), Some(0), "emaint sync -r {repo}: {}", out.stderr);
        }
        emaint.release();
        emaint.finish();
    }
}

#[test]
fn a_sync_under_another_lockfile_is_named_with_it() {
    let p = Portage::exclusive();
    p.script("bin/emerge", STAND_IN);
    let other = p.path("other.lock");
    let mut elsewhere = Bg::spawn({
        let mut cmd = hermetic(BIN);
        cmd.arg("--lockfile").arg(&other).arg("--").arg(p.path("bin/emerge")).arg("--sync");
        cmd.env("PORTAGE_REPOSITORIES", "");
        cmd
    });
    elsewhere.expect_stdout("started");
    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    let want = format!("under another lockfile {}: give it the same --lockfile", other.display());
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    elsewhere.release();
    elsewhere.finish();
}

#[test]
fn the_outside_check_can_be_switched_off() {
    let p = Portage::exclusive();
    let mut emerge = p.unwrapped_emerge_sync();
    let out = run(p.synclock(["-n", "--no-outside-check", "--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let mut cmd = p.synclock(["-n", "--", "true"]);
    cmd.env("SYNCLOCK_NO_OUTSIDE_CHECK", "yes");
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    emerge.release();
    emerge.finish();
}

#[test]
fn the_waiting_line_names_three_syncs_and_counts_the_rest() {
    let p = Portage::exclusive();
    let syncs: Vec<Bg> = (0..4).map(|_| p.running("eix-sync", &[])).collect();
    let out = run(p.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(out.stderr.matches("PID ").count(), 3, "{}", out.stderr);
    assert!(out.stderr.contains(") and 1 more run outside synclock"), "{}", out.stderr);
    for mut sync in syncs {
        sync.release();
        sync.finish();
    }
}

#[test]
fn a_git_lock_is_stale_once_nobody_has_it_open() {
    let p = Portage::new();
    p.conf("git.conf", "[overlay]\nlocation = @/repos/overlay\nsync-type = git\n");
    p.write("repos/overlay/.git/HEAD", "ref: refs/heads/master\n");
    p.write("repos/overlay/.git/refs/heads/master", "0123\n");
    p.write("repos/overlay/.git/shallow.lock", "");
    let lock = p.path("repos/overlay/.git/shallow.lock");
    // git holds its lock files open; a shell merely sitting in the
    // repository does not count.
    let mut git = Bg::spawn({
        let mut cmd = hermetic("sh");
        cmd.args(["-c", "exec 3<\"$1\"; echo started; read _ || true", "sh"]).arg(&lock);
        cmd
    });
    git.expect_stdout("started");
    let mut idle = Bg::spawn({
        let mut cmd = hermetic("sh");
        cmd.args(["-c", "echo started; read _ || true"]).current_dir(p.path("repos/overlay"));
        cmd
    });
    idle.expect_stdout("started");
    let out = run(p.synclock(["--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(lock.exists(), "removed while open: {}", out.stderr);
    let want = format!("left git lock {} alone: PID {} has it open", lock.display(), git.pid);
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    git.release();
    git.finish();
    let out = run(p.synclock(["--", "true"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!lock.exists(), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("removed stale git lock {}", lock.display())),
        "{}",
        out.stderr
    );
    idle.release();
    idle.finish();
}

#[test]
fn clean_says_what_it_left_for_a_sync_outside_the_lock() {
    let p = Portage::exclusive();
    p.rsync_repo("gentoo", 3);
    let mut emerge = p.unwrapped_emerge_sync();
    let quarantine = p.path(&format!("repos/gentoo/{QUARANTINE}"));
    for args in [&["-n", "clean"][..], &["-n", "clean", "--dry-run"], &["-n", "-E", "3", "clean"]] {
        let mut cmd = p.synclock([]);
        cmd.args(args);
        let out = run(cmd);
        let code = if args.contains(&"-E") { 3 } else { 75 };
        assert_eq!(out.code(), Some(code), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("cleaning was not run"), "{}", out.stderr);
        let left = format!("left {} (", quarantine.display());
        assert!(out.stderr.contains(&left), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("nothing to clean"), "{}", out.stderr);
        assert!(quarantine.exists());
    }
    emerge.release();
    emerge.finish();
}

#[test]
fn repo_paths_are_taken_from_the_working_directory_or_warned_about() {
    let p = Portage::new();
    p.write(&format!("repos/mine/{QUARANTINE}/x"), "");
    let mut cmd = p.synclock(["--repo", "mine", "--repo", "missing", "--", "true"]);
    cmd.current_dir(p.path("repos"));
    let out = run(cmd);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!p.exists(&format!("repos/mine/{QUARANTINE}")), "{}", out.stderr);
    let warning = format!("--repo {}: no such directory", p.path("repos/missing").display());
    assert!(out.stderr.contains(&warning), "{}", out.stderr);
}

#[test]
fn the_wait_for_a_sync_outside_the_lock_has_the_live_line_on_a_terminal() {
    let p = Portage::exclusive();
    let mut emerge = p.unwrapped_emerge_sync();
    let out = on_a_terminal(p.synclock(["--wait", "1500ms", "--", "true"]), "xterm");
    assert_eq!(out.code(), Some(75), "{out:?}");
    assert!(out.stdout.contains("\rsynclock: waited 1s of 1s 500ms\x1b[K"), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("\r\x1b[Ksynclock: gave up waiting after 1s 500ms"),
        "{:?}",
        out.stdout
    );
    emerge.release();
    emerge.finish();
}

#[test]
fn an_unfinished_runs_record_stays_while_we_wait_for_an_outside_sync() {
    // The lock is released while we wait: the record of the run that never
    // finished must be there for whoever takes it meanwhile, as it was.
    let p = Portage::exclusive();
    p.rsync_repo("gentoo", 1);
    let record = format!("{}.holder", p.env.lockfile().display());
    fs::write(
        &record,
        "synclock-holder 1\npid 1\nstart_ticks 1\nhost h\narg original\nsince 1.000\n",
    )
    .unwrap();
    let mut emerge = p.unwrapped_emerge_sync();
    let mut ours = Bg::spawn(p.synclock(["--wait", "20", "--", "true"]));
    ours.expect_stderr("which runs outside synclock");
    let during = fs::read_to_string(&record).unwrap();
    assert!(
        during.contains("arg original\n") && during.starts_with("synclock-holder 1\npid 1\n"),
        "{during}"
    );
    emerge.release();
    emerge.finish();
    let out = ours.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("(PID 1: original, started"), "{}", out.stderr);
    assert!(!p.exists(&format!("repos/gentoo/{QUARANTINE}")), "{}", out.stderr);
    assert!(!std::path::Path::new(&record).exists(), "the record outlived the run");
}
