//! Mutual exclusion, -n, --wait and the conflict code.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn nonblock_against_held_lock_gives_conflict_code() {
    let env = TestEnv::new();
    let mut holder = env.holder();
    let out = run(env.synclock(["-n", "--", "touch", env.path("ran").to_str().unwrap()]));
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert!(out.stderr.contains("is held by"), "{}", out.stderr);
    assert!(!env.path("ran").exists(), "command ran without the lock");
    let out = run(env.synclock(["-n", "-E", "42", "--", "true"]));
    assert_eq!(out.code(), Some(42));
    let out = run(env.synclock(["--wait", "0", "-q", "--", "true"]));
    assert_eq!(out.code(), Some(75));
    assert_eq!(out.stderr, "", "-q must silence the conflict line");
    holder.release();
    assert_eq!(holder.finish().code(), Some(0));
    assert_eq!(run(env.synclock(["-n", "--", "true"])).code(), Some(0));
}

#[test]
fn wait_gives_up_after_the_limit() {
    let env = TestEnv::new();
    let _holder = env.holder();
    let start = Instant::now();
    let out = run(env.synclock(["--wait", "300ms", "--", "true"]));
    let elapsed = start.elapsed();
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert!(elapsed >= Duration::from_millis(300), "gave up early: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "gave up late: {elapsed:?}");
    assert!(out.stderr.contains("gave up after 300ms"), "{}", out.stderr);
    assert!(out.stderr.contains("waiting up to 300ms"), "{}", out.stderr);
}

#[test]
fn waiter_runs_when_the_holder_releases() {
    let env = TestEnv::new();
    let mut holder = env.holder();
    let mut waiter = Bg::spawn(env.synclock(["--wait", "1m", "-v", "--", "echo", "ran"]));
    waiter.expect_stderr("is held by");
    assert!(waiter.stdout_seen.is_empty());
    holder.release();
    let out = waiter.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ran");
    assert!(out.stderr.contains("acquired"), "{}", out.stderr);
    assert!(out.stderr.contains("released"), "{}", out.stderr);
    assert_eq!(holder.finish().code(), Some(0));
}

/// 16 workers x 20 rounds of a locked section that detects overlap (an
/// atomic mkdir marker) and lost updates (a read-modify-write counter).
#[test]
fn stress_mutual_exclusion() {
    const WORKERS: usize = 16;
    const ROUNDS: usize = 20;
    let env = TestEnv::new();
    std::fs::write(env.path("counter"), "0\n").unwrap();
    let section = format!(
        r#"d={dir}; mkdir "$d/inside" || {{ echo overlap >> "$d/errors"; exit 1; }}
           n=$(cat "$d/counter"); n=$((n + 1)); echo "$n" > "$d/counter.tmp"
           mv "$d/counter.tmp" "$d/counter"; rmdir "$d/inside""#,
        dir = env.dir.path().display()
    );
    let worker = format!(
        r#"i=0; while [ $i -lt {ROUNDS} ]; do
             "{bin}" --lockfile "{lock}" --wait 2m -- sh -c '{section}' || exit 1
             i=$((i + 1)); done"#,
        bin = BIN,
        lock = env.lockfile().display(),
    );
    let mut workers: Vec<Bg> = (0..WORKERS)
        .map(|_| {
            let mut cmd = hermetic("sh");
            cmd.args(["-c", &worker]);
            Bg::spawn(cmd)
        })
        .collect();
    for w in &mut workers {
        w.release();
    }
    for w in &mut workers {
        let out = w.finish();
        assert_eq!(out.code(), Some(0), "worker failed: {}", out.stderr);
    }
    assert!(!env.path("errors").exists(), "sections overlapped");
    let count = std::fs::read_to_string(env.path("counter")).unwrap();
    assert_eq!(count.trim(), (WORKERS * ROUNDS).to_string(), "lost updates");
}
