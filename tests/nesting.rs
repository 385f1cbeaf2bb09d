//! Nested synclock reuses the inherited lock; forged SYNCLOCK_FD does not.

use crate::support::*;

#[test]
fn nested_synclock_runs_at_once() {
    let env = TestEnv::new();
    // The inner synclock gets the lockfile from SYNCLOCK_LOCKFILE, which the
    // outer one exports; a self-deadlock would hit the test deadline.
    let out = run(env.synclock(["--", BIN, "-v", "--", "sh", "-c", "echo inner $SYNCLOCK_FD"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("inner "), "{}", out.stdout);
    assert!(out.stderr.contains("already held for us"), "{}", out.stderr);
    let out = run(env.synclock(["--", BIN, "--", BIN, "-n", "--", "sh", "-c", "exit 5"]));
    assert_eq!(out.code(), Some(5), "{}", out.stderr);
}

#[test]
fn forged_or_stale_synclock_fd_does_not_skip_the_lock() {
    let env = TestEnv::new();
    let _holder = env.holder();
    let lock = env.lockfile();
    let lock = lock.to_str().unwrap();
    let ran = env.path("ran");
    let ran = ran.to_str().unwrap();
    for fd in ["0", "1", "99", "-1", "x"] {
        let mut cmd = env.synclock(["-n", "--", "touch", ran]);
        cmd.env("SYNCLOCK_FD", fd);
        let out = run(cmd);
        assert_eq!(out.code(), Some(75), "SYNCLOCK_FD={fd}: {}", out.stderr);
    }
    // An open but unlocked descriptor of the very same file.
    let mut cmd = hermetic("sh");
    cmd.args([
        "-c",
        r#"exec 7<"$1"; SYNCLOCK_FD=7 exec "$2" --lockfile "$1" -n -- touch "$3""#,
        "sh",
        lock,
        BIN,
        ran,
    ]);
    let out = run(cmd);
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert!(!std::path::Path::new(ran).exists(), "a forged SYNCLOCK_FD skipped the lock");
}
