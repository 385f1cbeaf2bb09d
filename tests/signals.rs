//! Signals while waiting and while the command runs; SIGKILL of synclock.

use nix::sys::signal::Signal;

use crate::support::*;

#[test]
fn sigterm_while_waiting_ends_with_143_and_never_runs() {
    let env = TestEnv::new();
    let _holder = env.holder();
    let ran = env.path("ran");
    let mut waiter = Bg::spawn(env.synclock(["--", "touch", ran.to_str().unwrap()]));
    waiter.expect_stderr("is held by");
    waiter.signal(Signal::SIGTERM);
    let out = waiter.finish();
    assert_eq!(out.code(), Some(143), "{}", out.stderr);
    assert!(out.stderr.contains("interrupted by SIGTERM"), "{}", out.stderr);
    assert!(!ran.exists(), "command ran after SIGTERM");
}

#[test]
fn sigint_and_sighup_while_waiting() {
    let env = TestEnv::new();
    let _holder = env.holder();
    let mut waiter = Bg::spawn(env.synclock(["--wait", "1h", "--", "true"]));
    waiter.expect_stderr("is held by");
    waiter.signal(Signal::SIGHUP);
    assert_eq!(waiter.finish().code(), Some(129));
    // SIGINT: after its line, synclock dies by it, as a shell loop expects;
    // the shell still reports 130.
    let mut script = hermetic("sh");
    script.arg("-c").arg(format!(
        "'{BIN}' --lockfile '{}' --wait 1h -- true; echo \"status=$?\"",
        env.lockfile().display()
    ));
    let mut waiter = Bg::spawn(env.synclock(["--wait", "1h", "--", "true"]));
    waiter.expect_stderr("is held by");
    waiter.signal(Signal::SIGINT);
    let out = waiter.finish();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("interrupted by SIGINT"), "{}", out.stderr);
    let mut shell = Bg::spawn(script);
    shell.expect_stderr("is held by");
    let child = children_of(shell.pid.as_raw())[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child), Signal::SIGINT).unwrap();
    shell.expect_stdout("status=130");
}

#[test]
fn a_stray_sigurg_while_waiting_changes_nothing() {
    // SIGURG (ignored by default) must not end a wait: only INT, TERM, HUP
    // and QUIT do.
    let env = TestEnv::new();
    let mut holder = env.holder();
    let ran = env.path("ran");
    let mut waiter =
        Bg::spawn(env.synclock(["--wait", "1m", "--", "touch", ran.to_str().unwrap()]));
    waiter.expect_stderr("is held by");
    let pid = i64::from(waiter.pid.as_raw());
    let blocked = || {
        let (_, json) = status_json(&env);
        let waiters = json["waiters"].as_array()?.clone();
        waiters.iter().any(|w| w["pid"] == pid).then_some(())
    };
    eventually("the waiter blocked in flock", blocked);
    for _ in 0..3 {
        waiter.signal(Signal::SIGURG);
    }
    eventually("the waiter blocked in flock again", blocked);
    assert!(!ran.exists(), "the command ran while the lock was held");
    holder.release();
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(ran.exists());
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn a_signal_inherited_as_ignored_does_not_end_the_wait() {
    // Under nohup SIGHUP is ignored; the wait must not turn it back on.
    let env = TestEnv::new();
    let mut holder = env.holder();
    let ran = env.path("ran");
    let cmd = env.synclock(["--wait", "1m", "--", "touch", ran.to_str().unwrap()]);
    let out = sighup_while_waiting_under_nohup(cmd, "is held by", &mut holder);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(ran.exists(), "the command did not run");
}

#[test]
fn the_command_gets_a_clean_signal_state_after_a_wait() {
    // While waiting, synclock handles INT/TERM/HUP/QUIT/URG and blocks
    // more; the command (cat, which changes nothing itself) must start
    // with nothing blocked and only what synclock's parent ignored (SIGHUP
    // under nohup: bit 0) ignored; SIGPIPE, which synclock ignores, at
    // its default.
    let env = TestEnv::new();
    let mut holder = env.holder();
    let mut cmd = env.synclock(["--", "cat", "/proc/self/status"]);
    ignoring_sighup(&mut cmd);
    let mut waiter = Bg::spawn(cmd);
    waiter.expect_stderr("is held by");
    holder.release();
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let field = |name: &str| {
        let line = out.stdout.lines().find_map(|l| l.strip_prefix(name));
        u64::from_str_radix(line.expect(name).trim(), 16).unwrap()
    };
    let bit = |signal: Signal| 1u64 << (signal as i32 - 1);
    assert_eq!(field("SigBlk:"), 0, "{}", out.stdout);
    let ignored = field("SigIgn:");
    assert_eq!(ignored & bit(Signal::SIGHUP), bit(Signal::SIGHUP), "{ignored:x}");
    assert_eq!(ignored & bit(Signal::SIGPIPE), 0, "{ignored:x}");
}

#[test]
fn sigterm_while_running_is_forwarded_and_status_returned() {
    let env = TestEnv::new();
    // The command traps TERM and exits 7: synclock must forward the signal
    // and then exit with the command's own status.
    let mut run = Bg::spawn(env.synclock([
        "--",
        "sh",
        "-c",
        "trap 'kill $! 2>/dev/null; exit 7' TERM; sleep 60 >/dev/null 2>&1 & echo ready; wait",
    ]));
    run.expect_stdout("ready");
    run.signal(Signal::SIGTERM);
    let out = run.finish();
    assert_eq!(out.code(), Some(7), "{}", out.stderr);
}

#[test]
fn forwarded_sighup_killing_the_command_gives_129() {
    let env = TestEnv::new();
    let mut run = Bg::spawn(env.synclock(["--", "sh", "-c", "echo ready; exec sleep 60"]));
    run.expect_stdout("ready");
    run.signal(Signal::SIGHUP);
    let out = run.finish();
    assert_eq!(out.code(), Some(129), "{}", out.stderr);
    assert!(out.stderr.contains("killed by SIGHUP"), "{}", out.stderr);
}

#[test]
fn sigint_to_synclock_alone_is_ignored_while_running() {
    let env = TestEnv::new();
    // SIGINT aimed at synclock only (not the process group): synclock keeps
    // supervising and the command keeps running to its own end.
    let mut run = env.holder_running("echo locked; read _ || true; echo finished");
    run.signal(Signal::SIGINT);
    run.signal(Signal::SIGQUIT);
    run.release();
    let out = run.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("finished"));
}

#[test]
fn sigkill_of_synclock_keeps_the_lock_until_the_command_exits() {
    let env = TestEnv::new();
    let mut holder = env.holder();
    holder.signal(Signal::SIGKILL);
    let status = holder.wait_exit();
    assert_eq!(status.code(), None, "synclock should have died by SIGKILL");
    // The orphaned `sh` still has the locked descriptor.
    let busy = run(env.synclock(["-n", "--", "true"]));
    assert_eq!(busy.code(), Some(75), "lock was released with the command still running");
    // Closing the pipe lets the orphan's `read` return; the lock follows.
    holder.release();
    let after = run(env.synclock(["--wait", "1m", "--", "true"]));
    assert_eq!(after.code(), Some(0), "{}", after.stderr);
}
