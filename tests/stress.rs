//! Fault stress: synclock processes run overlap-detecting sections while a
//! killer SIGKILLs random wrappers, commands and waiters, for a bounded
//! time, first alone, then mixed with syncs outside the lock and nested
//! runs. No two sections may ever overlap, no section may run beside a
//! sync outside the lock that its synclock should have seen, every run ends
//! within a bound, and afterwards the lock is free.

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

/// What one run of the random schedule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `synclock -- SECTION`.
    Wrapped,
    /// A sync outside the lock (`emerge-webrsync`, a stand-in).
    Outside,
    /// An unwrapped `eix-sync` whose wrapped part is `synclock -- SECTION`.
    OutsideWrapping,
    /// `synclock -- python3 ...`, whose subprocess (descriptors closed)
    /// runs `synclock -- SECTION`.
    NestedPython,
}

/// How one run ended: its kind, exit code and time.
type Outcome = (Kind, Option<i32>, Duration);

#[test]
fn a_random_schedule_keeps_the_promise() {
    const RUNS: usize = 300;
    const WORKERS: usize = 6;
    let env = TestEnv::exclusive();
    let dir = env.dir.path().display().to_string();
    let record = format!("{}.holder", env.lockfile().display());
    // A wrapped section first looks for syncs outside the lock that
    // already ran when its synclock put the holder record in place (before
    // its last scan) and still run: each is an overlap the scan missed.
    // Not counted: its own ancestors, zombies (killed, not yet reaped).
    // Then it checks that no other section runs beside it.
    let section = format!(
        r#"d='{dir}'; rec='{record}'
           anc=" "; p=$$
           while [ "$p" -gt 1 ]; do anc="$anc$p "; p=$(cut -d' ' -f4 /proc/$p/stat); done
           r=$(stat -c %.9Y "$rec" 2>/dev/null || echo 0)
           for m in "$d"/out.*; do
             [ -e "$m" ] || continue
             pid=${{m##*.}}
             case "$anc" in *" $pid "*) continue;; esac
             t=$(stat -c %.9Y "$m" 2>/dev/null) || continue
             s=$(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null) || continue
             [ -n "$s" ] && [ "$s" != Z ] || continue
             [ "$(awk -v a="$t" -v b="$r" 'BEGIN {{ print (a < b) }}')" = 1 ] &&
               echo "outside sync $pid beside section $$" >> "$d/errors"
           done
           echo $$ > "$d/owner"; i=0
           while [ $i -lt 30 ]; do
             read o < "$d/owner"; [ "$o" = "$$" ] || {{ echo "overlap $$ $o" >> "$d/errors"; exit 1; }}
             i=$((i + 1))
           done
           echo x >> "$d/sections""#
    );
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let outside = script(
        "emerge-webrsync",
        &format!(
            "touch '{dir}/out.'$$; i=0; while [ $i -lt 400 ]; do i=$((i + 1)); done; rm -f '{dir}/out.'$$"
        ),
    );
    let wrapping = script("eix-sync", r#"exec "$@""#);
    let wrapped = |extra: &[&str]| {
        let mut cmd = env.synclock(["-q", "--wait", "20"]);
        cmd.env("PORTAGE_REPOSITORIES", "").arg("--").args(extra);
        cmd
    };
    let python = format!(
        "import subprocess, sys; sys.exit(subprocess.run(['{BIN}', '-q', '--wait', '20', '--', \
         'sh', '-c', sys.argv[1]]).returncode)"
    );
    let command = |kind: Kind| match kind {
        Kind::Wrapped => wrapped(&["sh", "-c", &section]),
        Kind::Outside => hermetic(&outside),
        Kind::OutsideWrapping => {
            let inner = wrapped(&["sh", "-c", &section]);
            let mut cmd = hermetic(&wrapping);
            cmd.arg(inner.get_program()).args(inner.get_args());
            cmd.envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))));
            cmd
        }
        Kind::NestedPython => wrapped(&["python3", "-c", &python, &section]),
    };
    let kinds = [Kind::Wrapped, Kind::Outside, Kind::OutsideWrapping, Kind::NestedPython];

    let live: Arc<Mutex<Vec<i32>>> = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let seed0 = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (live, done, outcomes) = (live.clone(), done.clone(), outcomes.clone());
            let command = &command;
            scope.spawn(move || {
                let mut seed = seed0 ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while done.fetch_add(1, Ordering::Relaxed) < RUNS {
                    let kind = kinds[next(&mut seed) as usize % kinds.len()];
                    let mut cmd = command(kind);
                    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
                    let began = Instant::now();
                    let mut child = cmd.spawn().expect("spawn");
                    let pid = child.id() as i32;
                    live.lock().unwrap().push(pid);
                    // The bound on every run: wait_within fails the test past it.
                    let status = wait_within(&mut child, deadline());
                    live.lock().unwrap().retain(|p| *p != pid);
                    outcomes.lock().unwrap().push((kind, status.code(), began.elapsed()));
                }
            });
        }
        // The killer: now and then a random process of a run, or one of its
        // children (a command, a wrapped part), gets SIGKILL.
        let mut seed = seed0 | 1;
        let mut kills = 0;
        while done.load(Ordering::Relaxed) < RUNS + WORKERS {
            thread::sleep(Duration::from_millis(15 + next(&mut seed) % 30));
            let runs = live.lock().unwrap().clone();
            let pool: Vec<i32> =
                runs.iter().flat_map(|r| [*r].into_iter().chain(children_of(*r))).collect();
            if !pool.is_empty() && next(&mut seed).is_multiple_of(3) {
                let victim = pool[next(&mut seed) as usize % pool.len()];
                kills += usize::from(kill(Pid::from_raw(victim), Signal::SIGKILL).is_ok());
            }
            if live.lock().unwrap().is_empty() && done.load(Ordering::Relaxed) >= RUNS {
                break;
            }
        }
        eprintln!("random schedule: {kills} SIGKILLs");
    });

    let errors = std::fs::read_to_string(env.path("errors")).unwrap_or_default();
    assert_eq!(errors, "", "overlaps");
    let outcomes = outcomes.lock().unwrap();
    let sections =
        std::fs::read_to_string(env.path("sections")).unwrap_or_default().lines().count();
    let longest = outcomes.iter().map(|o| o.2).max().unwrap_or_default();
    let gave_up: Vec<_> = outcomes.iter().filter(|o| o.1 == Some(75)).collect();
    eprintln!(
        "random schedule: {} runs ({} wrapped, {} outside, {} outside wrapping, {} nested), \
         {sections} sections completed, longest run {longest:?}, 0 overlaps",
        outcomes.len(),
        outcomes.iter().filter(|o| o.0 == Kind::Wrapped).count(),
        outcomes.iter().filter(|o| o.0 == Kind::Outside).count(),
        outcomes.iter().filter(|o| o.0 == Kind::OutsideWrapping).count(),
        outcomes.iter().filter(|o| o.0 == Kind::NestedPython).count(),
    );
    assert!(gave_up.is_empty(), "runs that waited past --wait 20: {gave_up:?}");
    assert!(sections > RUNS / 4, "only {sections} sections completed");
}
