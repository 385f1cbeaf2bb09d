//! --coalesce, --min-interval, --force, and the run history behind them.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

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
        assert!(out.stderr.contains("succeeded while we waited (by PID"), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("(by PID {}, finished at ", holder.pid)),
            "{}",
            out.stderr
        );
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
        ("truncated", &b"synclock-history 3\n\t123\t45"[..]),
        ("older", &b"synclock-history 2\n1\t2\t0\t4\techo\n"[..]),
    ] {
        fs::write(&history, content).unwrap();
        let out = run(env.synclock(["--coalesce", "--min-interval", "1h", "--", "echo", what]));
        assert_eq!(out.code(), Some(0), "{what}: {}", out.stderr);
        assert_eq!(out.stdout, what, "{what}: the command must run");
        assert!(out.stderr.contains("ignoring history"), "{what}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{what}: {}", out.stderr);
        let older = out.stderr.contains("it is in another synclock's format; starting afresh");
        assert_eq!(older, what == "older", "{what}: {}", out.stderr);
        let rewritten = fs::read_to_string(&history).unwrap();
        assert!(rewritten.starts_with("synclock-history 3\n"), "{what}: history not rewritten");
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

// By repository: front ends stand in for emerge, emaint and emerge-webrsync
// in a private config root with gentoo (rsync), guru (git) and quiet (git,
// auto-sync off).

/// The config root, with stand-ins in `bin/` that print "locked", wait for
/// their stdin, log their command line to `runs` and exit with `$EXIT`.
fn front_ends() -> Portage {
    // The stand-ins are syncs to every other test's synclock.
    let portage = Portage::exclusive();
    portage.rsync_repo("gentoo", 0);
    portage.conf("guru.conf", "[guru]\nlocation = @/repos/guru\nsync-type = git\n");
    portage
        .conf("quiet.conf", "[quiet]\nlocation = @/repos/quiet\nsync-type = git\nauto-sync = no\n");
    let log = portage.path("runs");
    for name in ["emerge", "emaint", "emerge-webrsync"] {
        portage.script(
            &format!("bin/{name}"),
            &format!(
                "#!/bin/sh\necho locked\nread _ || true\necho \"$0 $*\" >> '{}'\nexit \"${{EXIT:-0}}\"\n",
                log.display()
            ),
        );
    }
    portage
}

/// synclock in the config root with `args`, the stand-ins first in PATH.
fn synclock_in(portage: &Portage, args: &[&str]) -> Command {
    let mut cmd = portage.synclock([]);
    cmd.args(args).env("PATH", format!("{}:/usr/bin:/bin", portage.path("bin").display()));
    cmd
}

fn logged(portage: &Portage) -> usize {
    fs::read_to_string(portage.path("runs")).unwrap_or_default().lines().count()
}

/// Runs `first` (exiting with `exit`) while `--coalesce` waiters of each of
/// `then` wait; returns what each waiter said.
fn while_running(portage: &Portage, first: &[&str], exit: u8, then: &[&[&str]]) -> Vec<Finished> {
    let first = synclock_in(portage, &[&["--"], first].concat());
    while_holding(portage, first, exit, then)
}

/// [`while_running`] with the holder started by `first`.
fn while_holding(
    portage: &Portage,
    mut first: Command,
    exit: u8,
    then: &[&[&str]],
) -> Vec<Finished> {
    let mut holder = Bg::spawn({
        first.env("EXIT", exit.to_string());
        first
    });
    holder.expect_stdout("locked");
    let mut waiters: Vec<Bg> = then
        .iter()
        .map(|words| {
            let args = [&["--coalesce", "--wait", "1m", "--"][..], words].concat();
            let mut waiter = Bg::spawn(synclock_in(portage, &args));
            waiter.expect_stderr("is held by");
            waiter.release(); // if it runs, its `read` returns at once
            waiter
        })
        .collect();
    holder.release();
    assert_eq!(holder.finish().code(), Some(i32::from(exit)));
    waiters.iter_mut().map(Bg::finish).collect()
}

/// `emerge --sync` as a user runs it with contrib/shims first in PATH: the
/// shim runs synclock with the real program's full path.
fn emerge_sync_through_the_shim(portage: &Portage) -> Command {
    let shims = portage.path("shims");
    fs::create_dir_all(&shims).unwrap();
    fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/shims/synclock-shim"),
        shims.join("synclock-shim"),
    )
    .unwrap();
    symlink("synclock-shim", shims.join("emerge")).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", shims.display(), portage.path("bin").display());
    let mut shim = hermetic(shims.join("emerge"));
    // synclock's environment in the config root, then the shim's own.
    for (key, value) in synclock_in(portage, &[]).get_envs() {
        match value {
            Some(value) => shim.env(key, value),
            None => shim.env_remove(key),
        };
    }
    shim.arg("--sync").env("PATH", path).env("SYNCLOCK", BIN);
    shim.env("SYNCLOCK_LOCKFILE", portage.env.lockfile());
    shim
}

#[test]
fn entry_points_of_one_sync_coalesce() {
    let portage = front_ends();
    let emerge = portage.path("bin/emerge").display().to_string();
    let then: [&[&str]; 3] =
        [&["emerge", "--sync"], &["emaint", "sync", "-a"], &["emaint", "--auto", "sync"]];
    for out in while_holding(&portage, emerge_sync_through_the_shim(&portage), 0, &then) {
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        assert!(
            out.stderr.contains("gentoo, guru synced while we waited (by PID"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(&format!("{emerge} --sync, finished at")), "{}", out.stderr);
    }
    assert_eq!(logged(&portage), 1, "a waiter ran the sync again");
    // And the other way round.
    let out = while_running(&portage, &["emaint", "--auto", "sync"], 0, &[&[&emerge, "--sync"]]);
    assert!(out[0].stderr.contains("gentoo, guru synced while we waited"), "{}", out[0].stderr);
    assert_eq!(logged(&portage), 2, "the shim's form ran again");
}

#[test]
fn a_sync_covers_the_repositories_it_synced_and_no_others() {
    let portage = front_ends();
    // A superset covers a subset; webrsync covers the main repository.
    for (first, then) in [
        (&["emerge", "--sync", "guru", "gentoo"][..], &["emaint", "sync", "-r", "guru"][..]),
        (&["emerge-webrsync"], &["emaint", "sync", "-r", "gentoo"]),
        (&["emerge", "--sync"], &["emerge", "--sync", "gentoo"]),
    ] {
        let before = logged(&portage);
        let out = while_running(&portage, first, 0, &[then]).remove(0);
        assert!(
            out.stderr.contains("synced while we waited"),
            "{first:?} {then:?}: {}",
            out.stderr
        );
        assert_eq!(logged(&portage), before + 1, "{then:?} ran after {first:?}");
    }
    // A subset does not cover a superset, nor auto-sync repositories all.
    for (first, then) in [
        (&["emaint", "sync", "-r", "guru"][..], &["emerge", "--sync", "guru", "gentoo"][..]),
        (&["emerge", "--sync"], &["emaint", "sync", "-A"]),
        (&["emerge-webrsync"], &["emerge", "--sync"]),
    ] {
        let before = logged(&portage);
        let out = while_running(&portage, first, 0, &[then]).remove(0);
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        assert!(!out.stderr.contains("not run again"), "{first:?} {then:?}: {}", out.stderr);
        assert_eq!(logged(&portage), before + 2, "{then:?} did not run after {first:?}");
    }
}

#[test]
fn failed_and_partial_syncs_cover_nothing() {
    let portage = front_ends();
    for (first, then) in [
        (&["emerge", "--sync"][..], &["emaint", "sync", "-a"][..]),
        (&["emerge", "--sync", "gentoo", "guru"], &["emaint", "sync", "-r", "guru"]),
    ] {
        let before = logged(&portage);
        let out = while_running(&portage, first, 1, &[then]).remove(0);
        assert!(!out.stderr.contains("not run"), "{first:?} failed: {}", out.stderr);
        assert_eq!(logged(&portage), before + 2, "{then:?} did not run after a failure");
    }
    // --min-interval too: only successes count, and every repository must.
    fs::remove_file(portage.env.path("sync.lock.history")).unwrap();
    let skipped = |words: &[&str], exit: &str| {
        let mut cmd = synclock_in(&portage, &[&["--min-interval", "1h", "--"], words].concat());
        cmd.env("EXIT", exit);
        run(cmd).stderr.contains("next run allowed after")
    };
    assert!(!skipped(&["emerge", "--sync"], "1"), "nothing synced yet");
    assert!(!skipped(&["emaint", "sync", "-r", "guru"], "0"), "the failure counted");
    assert!(!skipped(&["emerge", "--sync", "gentoo", "guru"], "0"), "gentoo never synced");
    assert!(skipped(&["emaint", "sync", "-a"], "0"), "both synced a moment ago");
    assert!(!skipped(&["emaint", "sync", "-A"], "0"), "quiet never synced");
    assert_eq!(logged(&portage), 8);
}

#[test]
fn the_wait_says_how_long_such_a_sync_takes() {
    let portage = front_ends();
    let status = || {
        let out = run(synclock_in(&portage, &["status", "--json"]));
        serde_json::from_str::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let held_line = || {
        let mut holder = Bg::spawn(synclock_in(&portage, &["--", "emerge", "--sync"]));
        holder.expect_stdout("locked");
        let mut waiter = Bg::spawn(synclock_in(&portage, &["--wait", "1m", "--", "true"]));
        let line = waiter.expect_stderr("is held by");
        let json = status();
        let text = run(synclock_in(&portage, &["status"])).stdout;
        holder.release();
        assert_eq!(holder.finish().code(), Some(0));
        assert_eq!(waiter.finish().code(), Some(0));
        (line, json, text)
    };
    let (line, json, text) = held_line();
    assert!(line.ends_with("; waiting up to 1m"), "{line}");
    assert!(!line.contains("took") && !line.contains("takes"), "no history yet: {line}");
    assert_eq!(json["holder"].get("typical_secs"), Some(&serde_json::Value::Null), "{json}");
    assert!(!text.contains("expected:"), "{text}");
    let (line, json, text) = held_line();
    assert!(line.contains(") for ") && line.contains("; it took "), "{line}");
    assert!(line.contains(" last time; waiting up to 1m"), "{line}");
    assert!(json["holder"]["typical_secs"].is_u64(), "{json}");
    assert!(text.contains("expected: it took "), "{text}");
    let (line, ..) = held_line();
    assert!(line.contains("; it usually takes about "), "{line}");
    assert!(line.contains(" (median of the last 2); waiting up to 1m"), "{line}");

    // Each repository with its last success, null for one never synced.
    let json = status();
    let repos = json["repositories"].as_array().expect("repositories");
    let names: Vec<&str> = repos.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gentoo", "guru", "quiet"]);
    for repo in &repos[..2] {
        humantime::parse_rfc3339(repo["last_success"].as_str().unwrap()).expect("RFC 3339");
        assert!(repo["duration_secs"].is_u64(), "{repo}");
        assert_eq!(repo["command"], serde_json::json!(["emerge", "--sync"]));
    }
    for field in ["last_success", "duration_secs", "command"] {
        assert_eq!(repos[2].get(field), Some(&serde_json::Value::Null), "{}", repos[2]);
    }
    let text = run(synclock_in(&portage, &["status"])).stdout;
    assert!(text.contains("repository gentoo: last synced at "), "{text}");
    assert!(text.contains("repository quiet: never synced under synclock"), "{text}");
}
