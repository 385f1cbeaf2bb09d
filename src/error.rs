//! synclock's own failures, each printed once as one line with its exit code.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::exit;

/// Something went wrong in synclock itself (not in the wrapped command).
#[derive(Debug)]
pub enum Error {
    /// The lockfile is not safe to use; `reason` says why and what to do.
    UnsafeLockfile {
        /// The lockfile as given.
        path: PathBuf,
        /// What is wrong and the fix, e.g. "it is a symlink; remove it".
        reason: String,
    },
    /// A system call about `path` failed.
    Os {
        /// What synclock was doing, e.g. "cannot open lockfile".
        action: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
        /// What the user can do about it, or empty.
        hint: &'static str,
    },
    /// A system call that concerns no particular file failed.
    System {
        /// What synclock was doing.
        action: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The command could not be started.
    Spawn {
        /// The program as given.
        program: String,
        /// Why exec failed.
        source: io::Error,
    },
}

impl Error {
    /// The exit code this failure ends synclock with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                exit::NOT_FOUND
            }
            Error::Spawn { .. } => exit::CANNOT_EXECUTE,
            Error::UnsafeLockfile { .. } | Error::Os { .. } | Error::System { .. } => exit::FAILURE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsafeLockfile { path, reason } => {
                write!(f, "refusing lockfile {}: {reason}", path.display())
            }
            Error::Os { action, path, errno, hint } => {
                write!(f, "{action} {}: {}", path.display(), errno.desc())?;
                if !hint.is_empty() {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
            Error::System { action, errno } => write!(f, "{action}: {}", errno.desc()),
            Error::Spawn { program, source } => match source.kind() {
                io::ErrorKind::NotFound if program.contains('/') => {
                    write!(f, "cannot run {program}: no such file; check the path")
                }
                io::ErrorKind::NotFound => write!(
                    f,
                    "cannot run {program}: command not found; check PATH or give its full path"
                ),
                // flock(1) takes the lockfile first: `synclock /tmp/l.lock cmd`.
                io::ErrorKind::PermissionDenied if std::path::Path::new(program).is_file() => {
                    write!(
                        f,
                        "cannot run {program}: permission denied; to use it as the lockfile, \
                         give --lockfile {program}"
                    )
                }
                io::ErrorKind::PermissionDenied => {
                    write!(f, "cannot run {program}: permission denied; is it an executable file?")
                }
                _ => write!(f, "cannot run {program}: {source}"),
            },
        }
    }
}

impl std::error::Error for Error {}
