//! Taking the lock: try at once; when it is busy, a helper thread waits in
//! a blocking flock(2) and writes one byte into a pipe when the kernel
//! grants it, while the main thread polls that pipe and the signalfd with
//! the `--wait` deadline as its only timeout: no CPU while waiting.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;

use crate::error::Error;
use crate::lock::Wait;
use crate::msg::Live;
use crate::signals::{Event, Signals};

/// How an attempt to take the lock ended.
#[derive(Debug)]
pub enum Outcome {
    /// The lock is ours, through this file, after waiting this long.
    Acquired(File, Duration),
    /// It stayed busy for the whole allowed wait (zero for `-n`).
    Busy(Duration),
    /// A signal ended the wait; the command must not run.
    Interrupted(Signal),
}

/// Takes an exclusive flock on `file` (the lockfile at `path`), waiting as
/// `wait` allows, counted from `start`; `busy` is called once when the lock
/// is held by someone else and we are going to wait, and says when it
/// expects the lock to be free.
pub fn acquire(
    file: File,
    path: &Path,
    wait: Wait,
    start: Instant,
    signals: &Signals,
    busy: impl FnOnce() -> Option<Instant>,
) -> Result<Outcome, Error> {
    match file.try_lock() {
        Ok(()) => return Ok(Outcome::Acquired(file, Duration::ZERO)),
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(err)) => return Err(lock_failed(path, &err)),
    }
    let limit = match wait {
        Wait::No => return Ok(Outcome::Busy(start.elapsed())),
        Wait::Upto(limit) => Some(limit),
        Wait::Forever => None,
    };
    let free_at = busy();
    let system = |action| move |errno| Error::System { action, errno };
    let (granted, tell) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(system("cannot create a pipe"))?;
    let waiter = std::thread::Builder::new()
        .name("flock".into())
        .spawn(move || {
            let locked = loop {
                match file.lock() {
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    other => break other.map(|()| file),
                }
            };
            let _ = nix::unistd::write(&tell, &[1]);
            locked
        })
        .map_err(|err| Error::System {
            action: "cannot start a thread",
            errno: Errno::from_raw(err.raw_os_error().unwrap_or(0)),
        })?;
    let deadline = limit.map(|limit| start + limit);
    let mut live = Live::new(start, limit).expecting(free_at);
    loop {
        match signals.wait(&[granted.as_fd()], deadline, &mut live)? {
            Event::Ready(_) => {
                let locked = waiter.join().unwrap_or_else(|_| Err(io::Error::other("panic")));
                return match locked {
                    Ok(file) => Ok(Outcome::Acquired(file, start.elapsed())),
                    Err(err) => Err(lock_failed(path, &err)),
                };
            }
            Event::TimedOut => return Ok(Outcome::Busy(start.elapsed())),
            Event::Signal(Signal::SIGCHLD) => {}
            Event::Signal(signal) => return Ok(Outcome::Interrupted(signal)),
        }
    }
}

fn lock_failed(path: &Path, err: &io::Error) -> Error {
    let errno = Errno::from_raw(err.raw_os_error().unwrap_or(0));
    let hint = match errno {
        Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS => {
            "its file system does not support flock; choose a local --lockfile such as /run/synclock.lock"
        }
        _ => "",
    };
    Error::Os { action: "cannot lock", path: path.to_path_buf(), errno, hint }
}
