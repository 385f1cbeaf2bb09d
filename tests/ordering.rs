//! The promise in every order of events: no deadlock, no overlap, whatever
//! runs outside the lock and however the command starts a nested synclock.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

/// A stand-in sync script `name` in `env`: says "started", waits for its
/// stdin to close, then runs its arguments (a wrapped part, if any) and
/// says how that ended.
fn stand_in(env: &TestEnv, name: &str) -> PathBuf {
    let path = env.path(&format!("bin/{name}"));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = "#!/bin/sh\necho started\nread _ || true\n\
                  if [ $# -gt 0 ]; then \"$@\"; echo \"inner=$?\"; fi\n";
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The stand-in `name` run with `args`, once it has said it started.
fn running(env: &TestEnv, name: &str, args: &[&str]) -> Bg {
    let mut cmd = hermetic(stand_in(env, name));
    cmd.args(args);
    let mut sync = Bg::spawn(cmd);
    sync.expect_stdout("started");
    sync
}

/// `program` run with `wrapped`'s program, arguments and environment as
/// its own arguments and environment.
fn wrapping(program: &PathBuf, wrapped: &Command) -> Command {
    let mut cmd = hermetic(program);
    cmd.arg(wrapped.get_program()).args(wrapped.get_args());
    cmd.envs(wrapped.get_envs().filter_map(|(k, v)| Some((k, v?))));
    cmd
}

/// synclock with no repositories of the host's.
fn synclock<const N: usize>(env: &TestEnv, args: [&str; N]) -> Command {
    let mut cmd = env.synclock(args);
    cmd.env("PORTAGE_REPOSITORIES", "");
    cmd
}

#[test]
fn an_outside_sync_whose_wrapped_part_comes_later_does_not_deadlock() {
    // An unwrapped eix-sync runs a wrapped emerge --sync only after our
    // synclock found it: waiting for it while holding the lock would wait
    // for ourselves.
    let env = TestEnv::exclusive();
    let eix_sync = stand_in(&env, "eix-sync");
    let mut outside =
        Bg::spawn(wrapping(&eix_sync, &synclock(&env, ["--wait", "10", "--", "true"])));
    outside.expect_stdout("started");
    let ran = env.path("ran");
    let mut ours =
        Bg::spawn(synclock(&env, ["--wait", "10", "--", "touch", ran.to_str().unwrap()]));
    ours.expect_stderr(&format!("waiting for PID {} (", outside.pid));
    outside.release();
    outside.expect_stdout("inner=0");
    assert_eq!(outside.finish().code(), Some(0));
    let out = ours.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(ran.exists());
}

#[test]
fn a_sync_that_starts_while_we_wait_is_waited_for_too() {
    let env = TestEnv::exclusive();
    let mut first = running(&env, "emerge", &["--sync"]);
    let ran = env.path("ran");
    let mut ours =
        Bg::spawn(synclock(&env, ["--wait", "20", "--", "touch", ran.to_str().unwrap()]));
    ours.expect_stderr(&format!("waiting for PID {} (", first.pid));
    let mut second = running(&env, "eix-sync", &[]);
    first.release();
    assert_eq!(first.finish().code(), Some(0));
    ours.expect_stderr(&format!("waiting for PID {} (", second.pid));
    assert!(!ran.exists(), "the command ran beside a sync outside the lock");
    second.release();
    assert_eq!(second.finish().code(), Some(0));
    let out = ours.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(ran.exists());
}

#[test]
fn a_nested_synclock_whose_descriptor_was_closed_runs_at_once() {
    let env = TestEnv::new();
    let inner = format!("'{BIN}' -v --wait 10 -- true");
    // Python's subprocess closes inherited descriptors by default.
    let python = format!(
        "import subprocess, sys; sys.exit(subprocess.run(['{BIN}', '-v', '--wait', '10', '--', \
         'true']).returncode)"
    );
    let shell = format!("eval \"exec $SYNCLOCK_FD>&-\"; {inner}");
    let commands: [&[&str]; 2] = [&["python3", "-c", &python], &["sh", "-c", &shell]];
    for command in commands {
        let mut cmd = env.synclock(["--"]);
        cmd.args(command);
        let out = run(cmd);
        assert_eq!(out.code(), Some(0), "{command:?}: {}", out.stderr);
        assert!(out.stderr.contains("is already held for us (ancestor PID"), "{}", out.stderr);
    }
}

#[test]
fn a_lockfile_that_another_user_could_rename_away_is_refused() {
    if skipped_unless_root("to give a directory to another user") {
        return;
    }
    let env = TestEnv::new();
    let nobody = nix::unistd::Uid::from_raw(65534);
    // The lockfile's own directory, and a directory further up.
    for (owned, lockfile) in [("theirs", "theirs/x.lock"), ("up", "up/ours/x.lock")] {
        let dir = env.path(owned);
        fs::create_dir_all(env.path(lockfile).parent().unwrap()).unwrap();
        nix::unistd::chown(&dir, Some(nobody), None).unwrap();
        let ran = env.path("ran");
        let mut cmd = hermetic(BIN);
        cmd.arg("--lockfile").arg(env.path(lockfile)).args(["--", "touch"]).arg(&ran);
        let out = run(cmd);
        assert_eq!(out.code(), Some(125), "{}", out.stderr);
        let want = format!("its directory {} is owned by uid 65534", dir.display());
        assert!(out.stderr.contains(&want), "{}", out.stderr);
        assert!(!ran.exists());
    }
}

#[test]
fn a_lockfile_renamed_while_waited_for_is_taken_again_at_its_path() {
    // The waiter opened the lockfile; it is renamed away before the waiter
    // gets it. Holding the renamed file excludes nobody who opens the path
    // afterwards, so the waiter takes the lock at the path again.
    let env = TestEnv::new();
    let mut holder = env.holder();
    let ran = env.path("ran");
    let mut waiter =
        Bg::spawn(env.synclock(["-v", "--wait", "20", "--", "touch", ran.to_str().unwrap()]));
    waiter.expect_stderr("is held by");
    fs::rename(env.lockfile(), env.path("moved.lock")).unwrap();
    holder.release();
    assert_eq!(holder.finish().code(), Some(0));
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("was replaced while we took it; taking it again"),
        "{}",
        out.stderr
    );
    assert!(ran.exists());
    assert!(env.lockfile().exists(), "a new lockfile at the path");
}
