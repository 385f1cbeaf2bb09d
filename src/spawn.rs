//! Starting a program the way posix_spawn does, minus its signal sweep.
//!
//! glibc's posix_spawnp starts the child with a vfork-style clone (the
//! parent takes no copy-on-write faults), but before exec the child asks
//! for and resets the disposition of every one of the 64 signals: about 120
//! system calls, 24 µs of the 63 µs a spawn of `true` takes on the
//! development VM, on every hand-off. The caller knows which signals it
//! ever gives a handler or ignores (see `child.rs`), so the child here sets
//! only those back to their default, as posix_spawn's SETSIGDEF does, and
//! otherwise does what synclock asked of posix_spawnp: the original signal
//! mask, one descriptor kept open across exec.
//!
//! The child shares our memory until it execs (`CLONE_VM | CLONE_VFORK`; we
//! are suspended meanwhile), so it runs only system calls and execvpe, on a
//! stack of its own, with every signal blocked until just before the exec;
//! its own copy of the signal handlers means no handler of ours can run in it.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// Room for the child's stack: execvpe needs a path buffer (at most
/// PATH_MAX) and, for a script without `#!`, a copy of argv.
const STACK: usize = 64 * 1024;

/// What the child needs, shared with it through `CLONE_VM`.
struct Request<'a> {
    program: &'a CStr,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    mask: libc::sigset_t,
    defaults: &'a [Signal],
    keep_fd: RawFd,
    /// Written by the child when exec fails.
    errno: c_int,
}

/// Runs `program` (searched in PATH, as execvp does) with `argv` and `envp`
/// (each NULL-terminated), signal mask `mask`, the signals in `defaults` at
/// their default disposition, and `keep_fd` open across exec. Returns the child's PID once it has exec'd;
/// when exec fails, the child is reaped and its errno returned.
pub fn spawn(
    program: &CStr,
    argv: &[*const c_char],
    envp: &[*const c_char],
    mask: &SigSet,
    defaults: &[Signal],
    keep_fd: RawFd,
) -> Result<Pid, Errno> {
    assert!(argv.last().is_some_and(|p| p.is_null()) && envp.last().is_some_and(|p| p.is_null()));
    let mut request = Request {
        program,
        argv,
        envp,
        mask: *mask.as_ref(),
        defaults,
        keep_fd,
        errno: 0,
    };
    let extra = std::mem::size_of_val(argv);
    let mut stack: Vec<MaybeUninit<u8>> = Vec::with_capacity(STACK + extra);
    // SAFETY: one past the end of the allocation, rounded down to the
    // 16-byte alignment the ABI wants for a stack top; the stack grows down
    // into the allocation.
    let top = unsafe {
        let end = stack.as_mut_ptr().add(stack.capacity());
        end.sub(end as usize % 16)
    };
    // The child starts with every signal blocked (it inherits our mask).
    let previous = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    // SAFETY: `child` only makes system calls and execvpe on its own stack
    // (`top`), reading `request`, which outlives it: with CLONE_VFORK this
    // thread is suspended until the child has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_mut(&mut request).cast(),
        )
    };
    let clone_errno = Errno::last();
    let _ = previous.thread_set_mask();
    drop(stack);
    if pid < 0 {
        return Err(clone_errno);
    }
    // SAFETY: a plain read of a field the child may have written through
    // the pointer it was given; it has exec'd or exited by now.
    let errno = unsafe { std::ptr::read_volatile(&raw const request.errno) };
    if errno != 0 {
        let mut status = 0;
        // SAFETY: reaps our own child, which has exited; writes `status`.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(Errno::from_raw(errno));
    }
    Ok(Pid::from_raw(pid))
}

/// The child's side: runs on its own stack, with every signal blocked.
extern "C" fn child(request: *mut c_void) -> c_int {
    // SAFETY: `spawn` passed a live `Request`, which it does not touch
    // until we have exec'd or exited.
    let request = unsafe { &mut *request.cast::<Request<'_>>() };
    // SAFETY: plain system calls on our own copy of the signal handlers and
    // our own descriptor table; execvpe gets NULL-terminated arrays of C
    // strings that outlive it.
    unsafe {
        for &signal in request.defaults {
            libc::signal(signal as c_int, libc::SIG_DFL);
        }
        let flags = libc::fcntl(request.keep_fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(request.keep_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return fail(request);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &request.mask, std::ptr::null_mut());
        libc::execvpe(
            request.program.as_ptr(),
            request.argv.as_ptr(),
            request.envp.as_ptr(),
        );
        fail(request)
    }
}

/// Reports errno to the parent and exits the child without running any
/// of the parent's exit code.
fn fail(request: &mut Request<'_>) -> c_int {
    request.errno = Errno::last_raw().max(1);
    // SAFETY: _exit runs no atexit handlers and flushes nothing shared.
    unsafe { libc::_exit(127) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use std::os::fd::AsRawFd;

    /// Runs `sh -c script` through [`spawn`] (SIGPIPE at its default) and
    /// returns its exit code.
    fn sh(script: &str, mask: &SigSet, keep_fd: RawFd) -> i32 {
        let script = std::ffi::CString::new(script).unwrap();
        let argv = [
            c"sh".as_ptr(),
            c"-c".as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        let envp = [c"PATH=/usr/bin:/bin".as_ptr(), std::ptr::null()];
        let pid = spawn(c"sh", &argv, &envp, mask, &[Signal::SIGPIPE], keep_fd).expect("spawn sh");
        match waitpid(pid, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_kept_descriptor_stays_open_and_others_close() {
        let (kept, closed) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let script = format!(
            "test -e /proc/self/fd/{} && ! test -e /proc/self/fd/{}",
            kept.as_raw_fd(),
            closed.as_raw_fd()
        );
        assert_eq!(sh(&script, &SigSet::empty(), kept.as_raw_fd()), 0);
    }

    /// The signal set field `name` (SigBlk, SigIgn) of a shell started
    /// through [`spawn`] with `mask`, as its `exec grep` sees it.
    fn child_signals(name: &str, mask: &SigSet) -> u64 {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let script = format!(
            "exec grep ^{name}: /proc/self/status >&{}",
            write.as_raw_fd()
        );
        assert_eq!(sh(&script, mask, write.as_raw_fd()), 0);
        drop(write);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut text).unwrap();
        let value = text.trim().rsplit('\t').next().unwrap();
        u64::from_str_radix(value, 16).unwrap()
    }

    #[test]
    fn the_child_gets_the_mask_asked_for_and_sigpipe_at_its_default() {
        let bit = |signal: Signal| 1u64 << (signal as i32 - 1);
        let mask: SigSet = [Signal::SIGUSR2].into_iter().collect();
        assert_eq!(child_signals("SigBlk", &mask), bit(Signal::SIGUSR2));
        // This test process ignores SIGPIPE (Rust's runtime does).
        assert_eq!(child_signals("SigIgn", &mask) & bit(Signal::SIGPIPE), 0);
    }

    #[test]
    fn a_failed_exec_is_its_errno() {
        let (fd, _other) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let run = |program: &CStr| {
            let argv = [program.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            spawn(program, &argv, &envp, &SigSet::empty(), &[], fd.as_raw_fd())
        };
        assert_eq!(run(c"/nonexistent/program"), Err(Errno::ENOENT));
        // Not executable (mode 0600), even for root.
        let plain = tempfile::NamedTempFile::new().unwrap();
        let path = std::ffi::CString::new(plain.path().as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(run(&path), Err(Errno::EACCES));
    }
}
