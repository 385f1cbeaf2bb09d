//! Holder inspection: status, the waiting line and the give-up line.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::*;

const HOLDER_SCRIPT: [&str; 3] = ["sh", "-c", "echo locked; read _ || true"];

fn command_of(json: &Value) -> Vec<String> {
    json["holder"]["command"]
        .as_array()
        .expect("command array")
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn status_of_a_free_lock() {
    let env = TestEnv::new();
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(0), "missing lockfile means free");
    assert_eq!(json["held"], Value::Bool(false));
    assert_eq!(json["holder"], Value::Null);
    assert_eq!(json["lockfile"], env.lockfile().to_str().unwrap());
    assert_eq!(run(env.synclock(["--", "true"])).code(), Some(0));
    let out = run(env.synclock(["status"]));
    assert_eq!(out.code(), Some(0));
    assert!(out.stdout.contains("state: free"), "{}", out.stdout);
}

#[test]
fn status_names_synclock_pid_and_wrapped_command() {
    let env = TestEnv::new();
    let mut holder = env.holder();
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(1));
    assert_eq!(json["held"], Value::Bool(true));
    assert_eq!(json["holder"]["pid"], holder.pid.as_raw());
    assert_eq!(command_of(&json), HOLDER_SCRIPT);
    let child = json["holder"]["command_pid"].as_i64().expect("command_pid") as i32;
    assert_eq!(parent_of(child), Some(holder.pid.as_raw()));
    assert_eq!(json["holder"]["source"], "kernel");
    assert!(json["holder"]["age_secs"].as_u64().is_some());
    assert!(!json["holder"]["host"].as_str().unwrap().is_empty());
    let since = json["holder"]["since"].as_str().unwrap();
    humantime::parse_rfc3339(since).expect("since is RFC 3339");
    assert_eq!(json["waiters"], Value::Array(vec![]));
    let text = run(env.synclock(["status"]));
    assert!(text.stdout.contains(&format!("holder: PID {} (sh -c", holder.pid)), "{}", text.stdout);
    holder.release();
    holder.finish();
    let (code, _) = status_json(&env);
    assert_eq!(code, Some(0));
    assert!(!holder_record(&env).exists(), "record not removed on release");
}

fn holder_record(env: &TestEnv) -> std::path::PathBuf {
    env.path("sync.lock.holder")
}

#[test]
fn status_sees_a_plain_flock_holder() {
    let env = TestEnv::new();
    assert_eq!(run(env.synclock(["--", "true"])).code(), Some(0));
    let mut cmd = hermetic("flock");
    cmd.arg(env.lockfile()).args(HOLDER_SCRIPT);
    let mut flock = Bg::spawn(cmd);
    flock.expect_stdout("locked");
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(1));
    assert_eq!(json["holder"]["pid"], flock.pid.as_raw());
    assert_eq!(command_of(&json)[0], "flock");
    let out = run(env.synclock(["-n", "--", "true"]));
    assert_eq!(out.code(), Some(75));
    assert!(out.stderr.contains(&format!("held by PID {} (flock ", flock.pid)), "{}", out.stderr);
}

#[test]
fn status_lists_waiters() {
    let env = TestEnv::new();
    let _holder = env.holder();
    let mut waiters: Vec<Bg> =
        (0..2).map(|_| Bg::spawn(env.synclock(["--wait", "1m", "--", "true"]))).collect();
    let mut expected: Vec<i64> = waiters.iter().map(|w| w.pid.as_raw() as i64).collect();
    expected.sort_unstable();
    for w in &mut waiters {
        w.expect_stderr("is held by");
    }
    let json = eventually("both waiters blocked in flock", || {
        let (_, json) = status_json(&env);
        let mut pids: Vec<i64> =
            json["waiters"].as_array()?.iter().filter_map(|w| w["pid"].as_i64()).collect();
        pids.sort_unstable();
        (pids == expected).then_some(json)
    });
    let first = &json["waiters"][0]["command"];
    assert!(first[0].as_str().unwrap().ends_with("synclock"), "{first}");
}

#[test]
fn stale_record_with_free_lock_is_not_reported() {
    let env = TestEnv::new();
    assert_eq!(run(env.synclock(["--", "true"])).code(), Some(0));
    let stale = "synclock-holder 1\npid 4242\nstart_ticks 1\nhost ghost\nsince 1.000\narg emerge\narg --sync\n";
    std::fs::write(holder_record(&env), stale).unwrap();
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(0));
    assert_eq!(json["holder"], Value::Null);
    // Held by flock(1) now: the stale record must not lend it its command.
    let mut cmd = hermetic("flock");
    cmd.arg(env.lockfile()).args(HOLDER_SCRIPT);
    let mut flock = Bg::spawn(cmd);
    flock.expect_stdout("locked");
    let (_, json) = status_json(&env);
    assert_eq!(command_of(&json)[0], "flock");
    assert_ne!(json["holder"]["host"], "ghost");
}

#[test]
fn holder_that_inherited_the_lock_is_reported_not_the_dead_acquirer() {
    let env = TestEnv::new();
    let mut holder = env.holder();
    let synclock_pid = holder.pid.as_raw();
    let sh_pid = children_of(synclock_pid)[0];
    holder.signal(Signal::SIGKILL);
    holder.wait_exit();
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(1));
    assert_eq!(json["holder"]["pid"], sh_pid);
    assert_eq!(json["holder"]["acquired_by"], synclock_pid);
    let out = run(env.synclock(["-n", "--", "true"]));
    let expected = format!(
        "PID {sh_pid} (sh -c 'echo locked; read _ || true'), inherited from PID {synclock_pid} which is gone"
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    holder.release();
}

#[test]
fn status_works_for_nobody() {
    if skipped_unless_root("to switch to nobody") {
        return;
    }
    let env = TestEnv::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy nobody can execute, wherever the build tree lives.
    let bin = env.path("synclock");
    std::fs::copy(BIN, &bin).unwrap();
    let holder = env.holder();
    let mut cmd = hermetic("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(&bin)
        .arg("--lockfile")
        .arg(env.lockfile())
        .args(["status", "--json"]);
    let out = run(cmd);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["holder"]["pid"], holder.pid.as_raw());
    assert_eq!(command_of(&json), HOLDER_SCRIPT);
    // And nobody really cannot open (and so hold hostage) the lockfile.
    let mut cmd = hermetic("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c"])
        .arg(format!(": < '{}'", env.lockfile().display()));
    assert_ne!(run(cmd).code(), Some(0));
}

#[test]
fn holder_in_a_container_seen_from_the_host() {
    if skipped_unless_root("for unshare") {
        return;
    }
    let env = TestEnv::new();
    let lock = env.lockfile();
    let mut args: Vec<&std::ffi::OsStr> =
        vec![BIN.as_ref(), "--lockfile".as_ref(), lock.as_os_str(), "--".as_ref()];
    args.extend(HOLDER_SCRIPT.iter().map(|w| std::ffi::OsStr::new(*w)));
    let mut holder = Bg::spawn(in_container(&args));
    holder.expect_stdout("locked");
    let inner_synclock = children_of(holder.pid.as_raw())[0];
    let (code, json) = status_json(&env);
    assert_eq!(code, Some(1));
    assert_eq!(json["holder"]["pid"], inner_synclock, "the kernel gives the host PID");
    assert_eq!(json["holder"]["namespace_pid"], 1, "the record adds the container's PID");
    assert_eq!(command_of(&json), HOLDER_SCRIPT);
}

#[test]
fn holder_on_the_host_seen_from_a_container() {
    if skipped_unless_root("for unshare") {
        return;
    }
    let env = TestEnv::new();
    let holder = env.holder();
    let lock = env.lockfile();
    let args: Vec<&std::ffi::OsStr> = vec![
        BIN.as_ref(),
        "--lockfile".as_ref(),
        lock.as_os_str(),
        "status".as_ref(),
        "--json".as_ref(),
    ];
    let out = run(in_container(&args));
    assert_eq!(out.code(), Some(1), "hidden from /proc/locks but still held: {out:?}");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["held"], Value::Bool(true));
    assert_eq!(json["holder"]["source"], "record");
    assert_eq!(json["holder"]["pid"], Value::Null);
    assert_eq!(json["holder"]["namespace_pid"], holder.pid.as_raw());
    assert_eq!(command_of(&json), HOLDER_SCRIPT);
}

#[test]
fn give_up_line_names_the_holder() {
    let env = TestEnv::new();
    let holder = env.holder();
    let out = run(env.synclock(["--wait", "300ms", "--", "true"]));
    assert_eq!(out.code(), Some(75));
    let lines: Vec<&str> = out.stderr.lines().collect();
    let expected =
        format!("is held by PID {} (sh -c 'echo locked; read _ || true') for ", holder.pid);
    assert!(
        lines[0].contains(&expected) && lines[0].ends_with("; waiting up to 300ms"),
        "{lines:?}"
    );
    let expected = format!(
        "gave up after 300ms; {} is still held by PID {}",
        env.lockfile().display(),
        holder.pid
    );
    assert!(lines[1].starts_with(&format!("synclock: {expected}")), "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(!out.stderr.contains('\r'), "no redrawing when stderr is not a terminal");
}

/// A synclock of `env`'s lock waiting for `wait` on a terminal of type
/// `term`, and giving up.
fn waiting_on_a_terminal(env: &TestEnv, wait: &str, term: &str) -> Finished {
    let out = on_a_terminal(env.synclock(["--wait", wait, "--", "true"]), term);
    assert_eq!(out.code(), Some(75), "{out:?}");
    out
}

#[test]
fn waiting_line_is_redrawn_on_a_terminal() {
    let env = TestEnv::new();
    let _holder = env.holder();
    let start = Instant::now();
    let out = waiting_on_a_terminal(&env, "2500ms", "xterm");
    assert!(start.elapsed() >= Duration::from_millis(2500));
    assert!(out.stdout.contains("\rsynclock: waited 1s of 2s 500ms\x1b[K"), "{:?}", out.stdout);
    assert!(out.stdout.contains("\rsynclock: waited 2s of 2s 500ms\x1b[K"), "{:?}", out.stdout);
    assert!(!out.stdout.contains("waited 3s"), "redrawn more than once a second: {:?}", out.stdout);
    assert!(out.stdout.contains("\r\x1b[Ksynclock: gave up after 2s 500ms"), "{:?}", out.stdout);
    // A terminal that cannot erase a line gets plain lines only.
    let out = waiting_on_a_terminal(&env, "1500ms", "dumb");
    assert!(!out.stdout.contains('\x1b') && !out.stdout.contains("waited"), "{:?}", out.stdout);
}

#[test]
fn the_live_line_says_when_the_lock_should_be_free() {
    let env = TestEnv::new();
    let _holder = env.holder();
    // The holder's command line usually takes a minute.
    let entry = "\t1\t2\t0\t7\t60000,61000,59000\tsh\t-c\techo locked; read _ || true";
    std::fs::write(env.path("sync.lock.history"), format!("synclock-history 3\n{entry}\n"))
        .unwrap();
    let out = waiting_on_a_terminal(&env, "1500ms", "xterm");
    let said = "; it usually takes about 1m (median of the last 3); waiting up to 1s 500ms";
    assert!(out.stdout.contains(said), "{:?}", out.stdout);
    let live = "\rsynclock: waited 1s of 1s 500ms; free in about 5";
    assert!(out.stdout.contains(live), "{:?}", out.stdout);
}

#[test]
fn status_refuses_what_a_run_would_refuse() {
    let env = TestEnv::new();
    let mode = |path: &std::path::Path, m| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap()
    };
    std::fs::create_dir(env.path("dir.lock")).unwrap();
    std::fs::write(env.path("open.lock"), "").unwrap();
    mode(&env.path("open.lock"), 0o644);
    for (lock, why) in [
        ("missing/x.lock", "cannot open the directory of lockfile"),
        ("dir.lock", "is a directory"),
        ("open.lock", "chmod 600"),
    ] {
        let mut cmd = hermetic(BIN);
        cmd.arg("--lockfile").arg(env.path(lock)).arg("status");
        let out = run(cmd);
        assert_eq!(out.code(), Some(125), "{lock}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(why), "{lock}: {}", out.stderr);
    }
}
