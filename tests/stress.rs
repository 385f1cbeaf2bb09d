//! Fault stress: 32 synclock processes run overlap-detecting sections while
//! a killer SIGKILLs random wrappers, commands and waiters, for a bounded
//! time. No two sections may ever overlap, and afterwards the lock is free.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

const WORKERS: usize = 32;
const RUN_FOR: Duration = Duration::from_secs(6);

/// xorshift: enough randomness to pick victims, no crate needed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn no_overlap_under_random_sigkills() {
    let env = TestEnv::new();
    let dir = env.dir.path().display().to_string();
    // Each section writes its PID to `owner` and checks 50 times that it is
    // still there; any other section inside at the same time overwrites it.
    let section = format!(
        r#"d='{dir}'; echo $$ > "$d/owner"; i=0
           while [ $i -lt 50 ]; do
             read o < "$d/owner"; [ "$o" = "$$" ] || {{ echo "overlap $$ $o" >> "$d/errors"; exit 1; }}
             i=$((i + 1))
           done
           echo x >> "$d/sections""#
    );
    let live: Arc<Mutex<Vec<i32>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (live, stop, started) = (live.clone(), stop.clone(), started.clone());
            let (lock, section) = (env.lockfile(), section.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut cmd = hermetic(BIN);
                    cmd.arg("--lockfile")
                        .arg(&lock)
                        .args(["-q", "--wait", "30s", "--", "sh", "-c", &section]);
                    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                    let mut child = cmd.spawn().expect("spawn synclock");
                    started.fetch_add(1, Ordering::Relaxed);
                    let pid = child.id() as i32;
                    live.lock().unwrap().push(pid);
                    wait_within(&mut child, deadline());
                    live.lock().unwrap().retain(|p| *p != pid);
                }
            })
        })
        .collect();

    let mut seed =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    // Kills by kind: a waiting wrapper, a wrapper whose command runs (the
    // command keeps the lock), the command itself (the wrapper releases).
    let mut kills = [0usize; 3];
    let end = Instant::now() + RUN_FOR;
    while Instant::now() < end {
        let wrappers = live.lock().unwrap().clone();
        let (holding, waiting): (Vec<i32>, Vec<i32>) =
            wrappers.iter().partition(|w| !children_of(**w).is_empty());
        let commands: Vec<i32> = holding.iter().flat_map(|w| children_of(*w)).collect();
        let kind = (next(&mut seed) % 3) as usize;
        let pool = [&waiting, &holding, &commands][kind];
        if !pool.is_empty() {
            let victim = pool[next(&mut seed) as usize % pool.len()];
            if kill(Pid::from_raw(victim), Signal::SIGKILL).is_ok() {
                kills[kind] += 1;
            }
        }
        // Pace the killer so that sections also complete.
        thread::sleep(Duration::from_millis(10 + next(&mut seed) % 20));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }

    let errors = std::fs::read_to_string(env.path("errors")).unwrap_or_default();
    assert_eq!(errors, "", "sections overlapped");
    let sections =
        std::fs::read_to_string(env.path("sections")).unwrap_or_default().lines().count();
    eprintln!(
        "stress: {} synclock runs, {sections} sections completed; SIGKILLed {} waiters, {} holding wrappers, {} commands; 0 overlaps",
        started.load(Ordering::Relaxed),
        kills[0],
        kills[1],
        kills[2]
    );
    assert!(
        sections > 0 && kills.iter().all(|k| *k > 0),
        "the stress did not exercise every kind of kill: {kills:?}"
    );
    // Orphaned commands of killed wrappers still hold the lock until they
    // end (bounded: a section is short); then it must be free.
    assert_eq!(run(env.synclock(["--wait", "20s", "--", "true"])).code(), Some(0));
    assert_eq!(run(env.synclock(["-n", "--", "true"])).code(), Some(0), "lock not free afterwards");
}
