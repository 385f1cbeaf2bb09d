//! Test support: a private directory per test, the real binary, background
//! processes whose output lines can be awaited with a deadline, and bounded
//! waits. Nothing here sleeps to wait for a state: every wait is on a pipe
//! or a child's exit, with a deadline.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_synclock");

/// A generous bound for anything that should happen "at once"; scaled by
/// `SYNCLOCK_TEST_SLOW` on slow machines.
pub fn deadline() -> Duration {
    let factor =
        std::env::var("SYNCLOCK_TEST_SLOW").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(1);
    Duration::from_secs(20) * factor
}

/// Tests share the machine's /proc: a test that starts a stand-in for an
/// unwrapped `emerge --sync` would make every other test's synclock wait for
/// it (correctly). Such a test holds this lock for writing; all others for
/// reading.
static MACHINE: RwLock<()> = RwLock::new(());

/// A private directory with a lockfile path inside it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    _machine: Machine,
}

enum Machine {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl TestEnv {
    pub fn new() -> Self {
        let guard = MACHINE.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self::with(Machine::Shared(guard))
    }

    /// For a test that starts processes every synclock would wait for.
    pub fn exclusive() -> Self {
        let guard = MACHINE.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self::with(Machine::Exclusive(guard))
    }

    fn with(machine: Machine) -> Self {
        let dir = tempfile::Builder::new().prefix("synclock-test").tempdir().unwrap();
        TestEnv { dir, _machine: machine }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn lockfile(&self) -> PathBuf {
        self.path("sync.lock")
    }

    /// `synclock --lockfile <ours> ARGS...`, hermetic.
    pub fn synclock<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = hermetic(BIN);
        cmd.arg("--lockfile").arg(self.lockfile()).args(args);
        cmd
    }

    /// A synclock holding our lock while running `sh -c 'echo locked; read _'`:
    /// returns once "locked" was printed, i.e. once the lock is held.
    pub fn holder(&self) -> Bg {
        self.holder_running("echo locked; read _ || true")
    }

    /// A synclock holding our lock while running the script `sh_script`,
    /// which must print "locked" first.
    pub fn holder_running(&self, sh_script: &str) -> Bg {
        let mut holder = Bg::spawn(self.synclock(["--", "sh", "-c", sh_script]));
        holder.expect_stdout("locked");
        holder
    }
}

/// A command whose signal mask and dispositions do not depend on how the
/// test runner was started (an ignored SIGINT is inherited across exec).
pub fn hermetic(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("SYNCLOCK_FD").env_remove("SYNCLOCK_LOCKFILE").stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (sigaction, sigprocmask) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
                signal(sig, SigHandler::SigDfl)?;
            }
            SigSet::empty().thread_set_mask()?;
            Ok(())
        });
    }
    cmd
}

/// Starts `cmd` with SIGHUP ignored, as `nohup` does (after [`hermetic`]'s
/// own reset to the default).
pub fn ignoring_sighup(cmd: &mut Command) {
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            signal(Signal::SIGHUP, SigHandler::SigIgn)?;
            Ok(())
        });
    }
}

/// Runs `cmd` in the background with SIGHUP ignored (as under `nohup`)
/// until it says `waiting` on stderr, sends it SIGHUP, releases `blocker`
/// (what it waits for) and returns how it ended.
pub fn sighup_while_waiting_under_nohup(
    mut cmd: Command,
    waiting: &str,
    blocker: &mut Bg,
) -> Finished {
    ignoring_sighup(&mut cmd);
    let mut waiter = Bg::spawn(cmd);
    waiter.expect_stderr(waiting);
    waiter.signal(Signal::SIGHUP);
    blocker.release();
    waiter.finish()
}

/// A process running in the background, its output lines collected.
pub struct Bg {
    pub child: Option<Child>,
    pub pid: Pid,
    pub stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    pub stdout_seen: Vec<String>,
    pub stderr_seen: Vec<String>,
}

impl Bg {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let pid = Pid::from_raw(child.id() as i32);
        let stdin = child.stdin.take();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Bg {
            child: Some(child),
            pid,
            stdin,
            stdout,
            stderr,
            stdout_seen: Vec::new(),
            stderr_seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`.
    pub fn expect_stdout(&mut self, needle: &str) -> String {
        expect_line(&self.stdout, &mut self.stdout_seen, needle, "stdout")
    }

    /// Waits for a stderr line containing `needle`.
    pub fn expect_stderr(&mut self, needle: &str) -> String {
        expect_line(&self.stderr, &mut self.stderr_seen, needle, "stderr")
    }

    /// Closes its stdin (a `read _` in the script returns).
    pub fn release(&mut self) {
        drop(self.stdin.take());
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid, sig).expect("kill");
    }

    /// Waits for the exit (bounded) without reading the rest of the output,
    /// for when an orphaned descendant still holds the pipes.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_within(self.child.as_mut().unwrap(), deadline());
        self.child = None;
        status
    }

    /// Waits for the exit (bounded) and collects the rest of the output.
    pub fn finish(&mut self) -> Finished {
        self.finish_within(deadline())
    }

    /// [`Bg::finish`], failing the test (and killing it) past `limit`.
    pub fn finish_within(&mut self, limit: Duration) -> Finished {
        let status = wait_within(self.child.as_mut().unwrap(), limit);
        self.child = None;
        drain(&self.stdout, &mut self.stdout_seen);
        drain(&self.stderr, &mut self.stderr_seen);
        Finished {
            status,
            stdout: self.stdout_seen.join("\n"),
            stderr: self.stderr_seen.join("\n"),
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a background process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(rx: &Receiver<String>, seen: &mut Vec<String>, needle: &str, what: &str) -> String {
    let end = Instant::now() + deadline();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "no {what} line containing {needle:?} within {:?}; saw {seen:#?}",
                    deadline()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{what} closed without a line containing {needle:?}; saw {seen:#?}")
            }
        }
    }
}

fn drain(rx: &Receiver<String>, seen: &mut Vec<String>) {
    // The writer has exited; the reader thread ends at EOF (bounded wait).
    while let Ok(line) = rx.recv_timeout(deadline()) {
        seen.push(line);
    }
}

/// Waits for `child` to exit, killing it and failing the test after `limit`.
pub fn wait_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let pid = child.id();
    let (tx, rx) = channel();
    let watchdog = thread::spawn(move || {
        if rx.recv_timeout(limit) == Err(RecvTimeoutError::Timeout) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return true;
        }
        false
    });
    let status = child.wait().expect("wait");
    let _ = tx.send(());
    assert!(!watchdog.join().unwrap(), "process {pid} did not exit within {limit:?}");
    status
}

/// Runs `cmd` to completion within the deadline.
pub fn run(cmd: Command) -> Finished {
    let mut bg = Bg::spawn(cmd);
    bg.release();
    bg.finish()
}

/// Whether the tests run as root (some need to chown).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs the synclock `cmd` on a terminal of type `term`: script(1) gives it
/// a pty as stdin, stdout and stderr (both come out on stdout).
pub fn on_a_terminal(cmd: Command, term: &str) -> Finished {
    let mut inner = format!("'{BIN}'");
    for arg in cmd.get_args() {
        inner.push_str(&format!(" '{}'", arg.to_str().unwrap()));
    }
    let mut script = hermetic("script");
    script.args(["-q", "-e", "-c", &inner, "/dev/null"]).env("TERM", term);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    run(script)
}

/// Whether a test that needs root (`why`: "to chown") must be skipped
/// here; says so in the test's output.
pub fn skipped_unless_root(why: &str) -> bool {
    let skipped = !is_root();
    if skipped {
        eprintln!("skipped: needs root {why}");
    }
    skipped
}

/// Whether a test that runs `program` must be skipped because it is not
/// installed; says so in the test's output.
pub fn skipped_unless_installed(program: &str) -> bool {
    let skipped = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if skipped {
        eprintln!("skipped: {program} is not installed (bash tests/need.sh installs it)");
    }
    skipped
}

/// Whether a test that starts a PID namespace must be skipped here; says
/// so in the test's output.
pub fn skipped_unless_containers() -> bool {
    let skipped = !is_root() || run(in_container(&["true"])).code() != Some(0);
    if skipped {
        eprintln!("skipped: unshare --pid --fork --mount-proc is not permitted here");
    }
    skipped
}

/// The mode bits of `path`, not following a symlink.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `args` run as PID 1 of a new PID namespace with its own /proc.
pub fn in_container<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut cmd = hermetic("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"]).args(args);
    cmd
}

/// Re-checks `condition` (which reads /proc or a file) until it holds,
/// failing the test after the deadline. For states that no pipe announces,
/// such as a waiter having entered its blocking flock.
pub fn eventually<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline();
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < end, "{what}: not reached within {:?}", deadline());
        thread::yield_now();
        thread::sleep(Duration::from_millis(5));
    }
}

/// `synclock --lockfile <ours> status --json`, parsed, with its exit code.
pub fn status_json(env: &TestEnv) -> (Option<i32>, serde_json::Value) {
    let out = run(env.synclock(["status", "--json"]));
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|err| panic!("status --json printed no JSON ({err}): {out:?}"));
    (out.code(), json)
}

/// The parent PID of `pid`, from /proc.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The direct children of `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|t| t.split_whitespace().filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

pub const QUARANTINE: &str = ".tmp-unverified-download-quarantine";

/// A stand-in for a sync program: says it started, then runs until its
/// stdin closes.
pub const STAND_IN: &str = "#!/bin/sh\necho started\nread _ || true\n";

/// A private Portage configuration root with several repositories and the
/// leftovers of killed syncs in each.
pub struct Portage {
    pub env: TestEnv,
}

impl Portage {
    pub fn new() -> Self {
        Self::with(TestEnv::new())
    }

    /// For a test whose stand-in syncs others must not see.
    pub fn exclusive() -> Self {
        Self::with(TestEnv::exclusive())
    }

    pub fn with(env: TestEnv) -> Self {
        let portage = Portage { env };
        for dir in ["root/etc/portage/repos.conf", "prefix", "repos", "tmp/portage"] {
            fs::create_dir_all(portage.path(dir)).unwrap();
        }
        portage
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.env.path(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    pub fn conf(&self, name: &str, text: &str) {
        let text = text.replace("@", self.env.dir.path().to_str().unwrap());
        self.write(&format!("root/etc/portage/repos.conf/{name}"), &text);
    }

    /// synclock with this config root (and nothing from the host).
    pub fn synclock<const N: usize>(&self, args: [&str; N]) -> Command {
        let mut cmd = self.env.synclock(args);
        cmd.env_remove("PORTAGE_REPOSITORIES")
            .env("PORTAGE_CONFIGROOT", self.path("root"))
            .env("EPREFIX", self.path("prefix"))
            .env("PORTAGE_TMPDIR", self.path("tmp"));
        cmd
    }

    /// Writes an executable script `rel` holding `text`.
    pub fn script(&self, rel: &str, text: &str) {
        self.write(rel, text);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A running stand-in whose command line looks like `emerge --sync`
    /// (outside any lock) until its stdin is closed.
    pub fn unwrapped_emerge_sync(&self) -> Bg {
        self.running("emerge", &["--sync"])
    }

    /// A stand-in `bin/NAME` run with `args` outside any lock, once it has
    /// said it started; it runs until its stdin is closed.
    pub fn running(&self, name: &str, args: &[&str]) -> Bg {
        self.script(&format!("bin/{name}"), STAND_IN);
        let mut cmd = hermetic(self.path(&format!("bin/{name}")));
        cmd.args(args);
        let mut sync = Bg::spawn(cmd);
        sync.expect_stdout("started");
        sync
    }

    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.path(rel)).is_ok()
    }

    /// An rsync repository with a stale quarantine of `files` files.
    pub fn rsync_repo(&self, name: &str, files: usize) {
        self.conf(
            &format!("{name}.conf"),
            &format!("[{name}]\nlocation = @/repos/{name}\nsync-type = rsync\n"),
        );
        self.write(
            &format!("repos/{name}/metadata/timestamp.chk"),
            "Mon, 01 Jan 2026 00:00:00 +0000\n",
        );
        self.write(&format!("repos/{name}/profiles/repo_name"), &format!("{name}\n"));
        for i in 0..files {
            self.write(
                &format!("repos/{name}/{QUARANTINE}/cat-{}/pkg-{i}/pkg-{i}.ebuild", i % 7),
                "EAPI=8\n",
            );
        }
    }
}
