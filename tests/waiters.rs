//! Waiters write a slot into the lockfile (see `src/waiters.rs`), so that
//! the holder's scan for outside syncs can pass over them; they clear it
//! when they stop waiting, and never write into a file that holds anything
//! else.

use std::fs;
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::signal::Signal;

use crate::support::notes::{HEADER, pid_in, slot_of};
use crate::support::*;

#[test]
fn a_waiter_writes_its_slot_and_clears_it_once_its_command_started() {
    let env = TestEnv::new();
    let mut holder = env.holder();
    let mut waiter = Bg::spawn(env.synclock(["--wait", "1m", "--", "echo", "ran"]));
    waiter.expect_stderr("is held by");
    let slot = slot_of(&env.lockfile(), waiter.pid.as_raw());
    assert_eq!(pid_in(&slot, 0), waiter.pid.as_raw(), "the waiter's PID");
    assert_eq!(pid_in(&slot, 4), std::process::id() as i32, "its parent's");
    holder.release();
    let out = waiter.finish();
    assert_eq!((out.code(), out.stdout.as_str()), (Some(0), "ran"));
    assert_eq!(slot_of(&env.lockfile(), waiter.pid.as_raw()), [0; 32]);
    assert_eq!(holder.finish().code(), Some(0));
    // An uncontended run writes no slot (only, on the second page, the
    // kernel threads, where /proc shows them).
    let fresh = TestEnv::new();
    assert_eq!(run(fresh.synclock(["--", "true"])).code(), Some(0));
    let contents = fs::read(fresh.lockfile()).unwrap();
    assert!(contents.is_empty() || contents.starts_with(HEADER));
    assert!(contents.iter().take(4096).skip(32).all(|b| *b == 0));
}

#[test]
fn a_waiter_that_gives_up_or_is_interrupted_clears_its_slot() {
    let env = TestEnv::new();
    let _holder = env.holder();
    for (args, signal, code) in [
        (["--wait", "500ms"], None, 75),
        (["--wait", "1m"], Some(Signal::SIGTERM), 143),
    ] {
        let mut waiter = Bg::spawn(env.synclock(args.iter().chain(&["--", "true"])));
        waiter.expect_stderr("is held by");
        assert_ne!(slot_of(&env.lockfile(), waiter.pid.as_raw()), [0; 32]);
        if let Some(signal) = signal {
            waiter.signal(signal);
        }
        assert_eq!(waiter.finish().code(), Some(code));
        assert_eq!(slot_of(&env.lockfile(), waiter.pid.as_raw()), [0; 32]);
    }
}

#[test]
fn a_lockfile_with_other_contents_is_never_written() {
    let env = TestEnv::new();
    let precious = b"someone else's data\n";
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(env.lockfile())
        .and_then(|mut file| std::io::Write::write_all(&mut file, precious))
        .unwrap();
    let mut holder = env.holder();
    let mut waiter = Bg::spawn(env.synclock(["--wait", "1m", "--", "true"]));
    waiter.expect_stderr("is held by");
    holder.release();
    assert_eq!(waiter.finish().code(), Some(0));
    assert_eq!(holder.finish().code(), Some(0));
    assert_eq!(fs::read(env.lockfile()).unwrap(), precious);
    assert_eq!(mode_of(&env.lockfile()), 0o600);
}
