//! Exit status: the command's own, signals as 128+N, 126/127, usage 2.

use crate::support::*;

fn code_of(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let out = run(env.synclock(args));
    (out.code(), out.stderr)
}

#[test]
fn command_exit_codes_pass_through() {
    let env = TestEnv::new();
    assert_eq!(code_of(&env, &["--", "true"]).0, Some(0));
    assert_eq!(code_of(&env, &["--", "sh", "-c", "exit 3"]).0, Some(3));
    assert_eq!(code_of(&env, &["--", "sh", "-c", "exit 255"]).0, Some(255));
}

#[test]
fn signal_death_is_128_plus_n_and_named() {
    let env = TestEnv::new();
    let (code, stderr) = code_of(&env, &["--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(code, Some(137));
    assert!(stderr.contains("was killed by SIGKILL"), "{stderr}");
}

#[test]
fn missing_command_is_127_and_one_line() {
    let env = TestEnv::new();
    let (code, stderr) = code_of(&env, &["--", "synclock-no-such-command"]);
    assert_eq!(code, Some(127));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("synclock: cannot run synclock-no-such-command: command not found"));
}

#[test]
fn unexecutable_command_is_126() {
    let env = TestEnv::new();
    let script = env.path("not-executable");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let (code, stderr) = code_of(&env, &["--", script.to_str().unwrap()]);
    assert_eq!(code, Some(126), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert_eq!(code_of(&env, &["--", "/"]).0, Some(126));
}

#[test]
fn usage_errors_are_2_and_one_line() {
    let env = TestEnv::new();
    for args in [&["--wait", "soon", "--", "true"][..], &[][..], &["--no-such-option"][..]] {
        let (code, stderr) = code_of(&env, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("synclock: "), "{stderr}");
    }
    let (_, stderr) = code_of(&env, &[]);
    assert!(stderr.contains("no command given"), "{stderr}");
}

#[test]
fn help_and_version_exit_0() {
    let out = run({
        let mut cmd = hermetic(BIN);
        cmd.arg("--version");
        cmd
    });
    assert_eq!(out.code(), Some(0));
    assert!(out.stdout.starts_with("synclock "), "{}", out.stdout);
    let out = run({
        let mut cmd = hermetic(BIN);
        cmd.arg("--help");
        cmd
    });
    assert_eq!(out.code(), Some(0));
    for option in
        ["--lockfile", "--wait", "--nonblock", "--conflict-exit-code", "--quiet", "--verbose"]
    {
        assert!(out.stdout.contains(option), "help lacks {option}");
    }
}

#[test]
fn the_command_line_reads_as_a_user_expects() {
    let env = TestEnv::new();
    // Help fits 80 columns and says where options end.
    let mut help = hermetic(BIN);
    help.arg("--help");
    let out = run(help);
    let long: Vec<&str> = out.stdout.lines().filter(|l| l.chars().count() > 80).collect();
    assert!(long.is_empty(), "lines over 80 columns: {long:#?}");
    assert!(out.stdout.contains("-- ends them"), "{}", out.stdout);
    // Global options after the subcommand, as git and cargo take them.
    let mut status = hermetic(BIN);
    status.args(["status", "--lockfile"]).arg(env.lockfile());
    assert_eq!(run(status).code(), Some(0));
    let mut clean = env.synclock(["clean", "--repo"]);
    clean.arg(env.dir.path()).args(["-n", "--dry-run"]);
    let out = run(clean);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // clap's suggestions kept; a bad value from the environment names it;
    // a negative duration is an invalid value.
    let (_, stderr) = code_of(&env, &["--wiat", "5", "--", "true"]);
    assert!(stderr.contains("tip: a similar argument exists: '--wait'"), "{stderr}");
    let mut coalesce = env.synclock(["--", "true"]);
    coalesce.env("SYNCLOCK_COALESCE", "maybe");
    let out = run(coalesce);
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.starts_with("synclock: SYNCLOCK_COALESCE: invalid value 'maybe'"),
        "{}",
        out.stderr
    );
    let (code, stderr) = code_of(&env, &["--wait", "-5", "--", "true"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("invalid value '-5'"), "{stderr}");
    // A full path that does not exist; flock(1)'s argument order.
    let (code, stderr) = code_of(&env, &["--", "/nonexistent/emaint", "sync"]);
    assert_eq!(code, Some(127));
    assert!(stderr.contains("/nonexistent/emaint: no such file"), "{stderr}");
    let lock = env.path("l.lock");
    std::fs::write(&lock, "").unwrap();
    let (code, stderr) = code_of(&env, &[lock.to_str().unwrap(), "echo", "hi"]);
    assert_eq!(code, Some(126));
    assert!(stderr.contains(&format!("give --lockfile {}", lock.display())), "{stderr}");
    // -v says when the lock was had at once.
    let out = run(env.synclock(["-v", "--", "true"]));
    assert!(out.stderr.contains("at once"), "{}", out.stderr);
}
