//! --coalesce, --min-interval, --force, and the run history behind them.

use std::fs;
use std::os::unix::fs::symlink;

use crate::support::*;

/// A command line that logs each run to `log` and waits for its stdin.
fn script(env: &TestEnv, exit: u8) -> Vec<String> {
    let log = env.path("runs");
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo locked; read _ || true; echo ran >> '{}'; exit {exit}", log.display()),
    ]
}

fn runs(env: &TestEnv) -> usize {
    fs::read_to_string(env.path("runs")).unwrap_or_default().lines().count()
}

/// A holder running `command`, and two `--coalesce` waiters of the same
/// command line blocked behind it.
fn holder_and_two_waiters(env: &TestEnv, command: &[String]) -> (Bg, Vec<Bg>) {
    let mut holder =
        Bg::spawn(env.synclock(std::iter::once("--").chain(command.iter().map(String::as_str))));
    holder.expect_stdout("locked");
    let waiters = (0..2)
        .map(|_| {
            let args = ["--coalesce", "--wait", "1m", "--"]
                .into_iter()
                .chain(command.iter().map(String::as_str));
            let mut waiter = Bg::spawn(env.synclock(args));
            waiter.expect_stderr("is held by");
            waiter.release(); // if it runs, its `read` returns at once
            waiter
        })
        .collect();
    (holder, waiters)
}

#[test]
fn coalesced_waiters_do_not_run_after_a_success() {
    let env = TestEnv::new();
    let command = script(&env, 0);
    let (mut holder, waiters) = holder_and_two_waiters(&env, &command);
    holder.release();
    assert_eq!(holder.finish().code(), Some(0));
    for mut waiter in waiters {
        let out = waiter.finish();
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        assert!(out.stderr.contains("while we waited; not run again"), "{}", out.stderr);
        assert!(out.stderr.contains(&format!("(PID {}, ", holder.pid)), "{}", out.stderr);
    }
    assert_eq!(runs(&env), 1, "the command ran again");
}

#[test]
fn a_failed_run_is_never_coalesced_with() {
    let env = TestEnv::new();
    let command = script(&env, 1);
    let (mut holder, waiters) = holder_and_two_waiters(&env, &command);
    holder.release();
    assert_eq!(holder.finish().code(), Some(1));
    for mut waiter in waiters {
        assert_eq!(waiter.finish().code(), Some(1), "each waiter runs in turn");
    }
    assert_eq!(runs(&env), 3);
}

#[test]
fn different_command_lines_never_coalesce() {
    let env = TestEnv::new();
    let mut holder = Bg::spawn(env.synclock(["--", "sh", "-c", "echo locked; read _ || true"]));
    holder.expect_stdout("locked");
    let mut other =
        Bg::spawn(env.synclock(["--coalesce", "--wait", "1m", "--", "sh", "-c", "echo other"]));
    other.expect_stderr("is held by");
    holder.release();
    holder.finish();
    let out = other.finish();
    assert_eq!(out.stdout, "other", "{}", out.stderr);
}

#[test]
fn min_interval_skips_after_success_only_and_force_runs() {
    let env = TestEnv::new();
    let ran = |out: &Finished| out.stdout.contains("hello");
    let first = run(env.synclock(["--min-interval", "1h", "--", "echo", "hello"]));
    assert!(ran(&first), "nothing ran before: {}", first.stderr);
    let skipped = run(env.synclock(["--min-interval", "1h", "--", "echo", "hello"]));
    assert_eq!(skipped.code(), Some(0));
    assert!(!ran(&skipped), "ran within the interval");
    assert!(skipped.stderr.contains("next run allowed after"), "{}", skipped.stderr);
    assert_eq!(skipped.stderr.lines().count(), 1, "{}", skipped.stderr);
    // The environment variable does the same (as the shims and units use it).
    let mut cmd = env.synclock(["--", "echo", "hello"]);
    cmd.env("SYNCLOCK_MIN_INTERVAL", "1h");
    assert!(!ran(&run(cmd)));
    let forced = run(env.synclock(["--min-interval", "1h", "--force", "--", "echo", "hello"]));
    assert!(ran(&forced), "--force must run: {}", forced.stderr);
    // After a failure of the same command line, it runs again.
    let failing = ["--min-interval", "1h", "--", "sh", "-c", "echo hello; exit 4"];
    assert_eq!(run(env.synclock(failing)).code(), Some(4));
    let again = run(env.synclock(failing));
    assert!(
        ran(&again) && again.code() == Some(4),
        "a failure must not be skipped: {}",
        again.stderr
    );
}

#[test]
fn bad_history_files_are_reported_and_never_fatal() {
    let env = TestEnv::new();
    let history = env.path("sync.lock.history");
    for (what, content) in [
        ("corrupt", &b"\x00\x01garbage\n"[..]),
        ("empty", &b""[..]),
        ("truncated", &b"synclock-history 2\n123\t45"[..]),
    ] {
        fs::write(&history, content).unwrap();
        let out = run(env.synclock(["--coalesce", "--min-interval", "1h", "--", "echo", what]));
        assert_eq!(out.code(), Some(0), "{what}: {}", out.stderr);
        assert_eq!(out.stdout, what, "{what}: the command must run");
        assert!(out.stderr.contains("ignoring history"), "{what}: {}", out.stderr);
        let rewritten = fs::read_to_string(&history).unwrap();
        assert!(rewritten.starts_with("synclock-history 2\n"), "{what}: history not rewritten");
        fs::remove_file(&history).unwrap();
    }
    // A symlink is not followed, and its target is untouched.
    let target = env.path("precious");
    fs::write(&target, "keep").unwrap();
    symlink(&target, &history).unwrap();
    let out = run(env.synclock(["--min-interval", "1h", "--", "echo", "linked"]));
    assert_eq!(out.stdout, "linked", "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    assert!(
        fs::symlink_metadata(&history).unwrap().is_file(),
        "history replaced by a regular file"
    );
}

#[test]
fn status_shows_the_last_runs() {
    let env = TestEnv::new();
    assert_eq!(run(env.synclock(["--", "sh", "-c", "exit 3"])).code(), Some(3));
    assert_eq!(run(env.synclock(["--", "true"])).code(), Some(0));
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(0));
    let history = json["history"].as_array().expect("history array");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["command"], serde_json::json!(["true"]));
    assert_eq!(history[0]["exit_code"], 0);
    assert_eq!(history[1]["command"], serde_json::json!(["sh", "-c", "exit 3"]));
    assert_eq!(history[1]["exit_code"], 3);
    for run in history {
        for field in ["start", "end"] {
            humantime::parse_rfc3339(run[field].as_str().unwrap()).expect("RFC 3339");
        }
        assert!(run["pid"].as_i64().is_some());
    }
    let text = run(env.synclock(["status"]));
    assert!(text.stdout.contains("last run: sh -c 'exit 3': exit 3"), "{}", text.stdout);
}
