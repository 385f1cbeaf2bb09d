//! What the process starts with: closed standard descriptors are reopened
//! (the Rust runtime does it), and SIGPIPE reaches the command at its
//! default while synclock itself survives a closed stderr.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Stdio;

use crate::support::*;

#[test]
fn closed_standard_descriptors_are_reopened_on_dev_null() {
    // Were 0, 1 and 2 left closed, the first files synclock opens would
    // take their numbers, and its messages could land in the lockfile.
    let env = TestEnv::new();
    let out = env.path("fds");
    // The shell's own descriptors ($$), passed on through a pipe so that no
    // redirection touches them.
    let script =
        format!("readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2 | tee '{}'", out.display());
    let mut cmd = env.synclock(["-v", "--", "sh", "-c", &script]);
    // SAFETY: close(2) is async-signal-safe; it runs after the stdio set-up.
    unsafe {
        cmd.pre_exec(|| {
            for fd in 0..=2 {
                nix::libc::close(fd);
            }
            Ok(())
        });
    }
    let status = wait_within(&mut cmd.spawn().expect("spawn"), deadline());
    assert_eq!(status.code(), Some(0));
    let fds = std::fs::read_to_string(&out).expect("the command ran");
    assert_eq!(fds, "/dev/null\n/dev/null\n/dev/null\n");
    // synclock never writes the lockfile: a message that went to a
    // descriptor it took for stderr would show here.
    let lockfile = std::fs::read(env.lockfile()).expect("lockfile");
    assert!(lockfile.is_empty(), "{:?}", String::from_utf8_lossy(&lockfile));
}

#[test]
fn a_closed_stderr_pipe_does_not_kill_synclock_but_the_command_gets_sigpipe() {
    let env = TestEnv::new();
    // Close-on-exec, so that no child another test starts meanwhile keeps
    // the read end open (then writes would not fail).
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    drop(read_end); // every write to the pipe now fails with EPIPE
    let mut cmd = env.synclock(["-v", "--", "sh", "-c", "echo x >&2; exit 7"]);
    cmd.stderr(Stdio::from(write_end));
    let status = wait_within(&mut cmd.spawn().expect("spawn"), deadline());
    // The command's write killed it (SIGPIPE at its default: 128+13); had
    // synclock not ignored SIGPIPE, its own -v lines would have killed it
    // first, by the signal and before running anything.
    assert_eq!(status.signal(), None, "synclock died by signal");
    assert_eq!(status.code(), Some(141));
}
