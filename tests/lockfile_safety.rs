//! The lockfile is created 0600; anything unsafe is refused before use.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::support::*;

/// Runs `synclock --lockfile <path> -- touch ran` and expects a refusal.
fn refused(env: &TestEnv, lock: &Path, needle: &str) {
    let ran = env.path("ran");
    let mut cmd = hermetic(BIN);
    cmd.arg("--lockfile").arg(lock).args(["-n", "--", "touch"]).arg(&ran);
    let out = run(cmd);
    assert_eq!(out.code(), Some(125), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(&lock.display().to_string()), "{}", out.stderr);
    assert!(out.stderr.contains(needle), "want {needle:?}: {}", out.stderr);
    assert!(!ran.exists(), "command ran despite an unsafe lockfile");
}

#[test]
fn created_lockfile_is_private() {
    let env = TestEnv::new();
    assert_eq!(run(env.synclock(["--", "true"])).code(), Some(0));
    assert_eq!(mode_of(&env.lockfile()), 0o600);
    assert!(std::fs::symlink_metadata(env.lockfile()).unwrap().is_file());
}

#[test]
fn symlink_is_refused_and_target_untouched() {
    let env = TestEnv::new();
    let target = env.path("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&target, env.lockfile()).unwrap();
    refused(&env, &env.lockfile(), "symbolic link");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    assert_eq!(mode_of(&target), 0o644);
    // A dangling symlink must not make synclock create its target either.
    let dangling = env.path("dangling");
    std::os::unix::fs::symlink(env.path("created-by-attack"), &dangling).unwrap();
    refused(&env, &dangling, "symbolic link");
    assert!(!env.path("created-by-attack").exists());
}

#[test]
fn directory_fifo_and_device_are_refused() {
    let env = TestEnv::new();
    std::fs::create_dir(env.lockfile()).unwrap();
    refused(&env, &env.lockfile(), "is a directory");
    let fifo = env.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
        .unwrap();
    refused(&env, &fifo, "fifo");
    refused(&env, Path::new("/dev/null"), "device");
}

#[test]
fn group_or_world_access_is_refused() {
    let env = TestEnv::new();
    std::fs::write(env.lockfile(), "").unwrap();
    std::fs::set_permissions(env.lockfile(), std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(&env, &env.lockfile(), "chmod 600");
    refused(&env, &env.lockfile(), &format!("fuser -v {}", env.lockfile().display()));
}

#[test]
fn hard_link_is_refused() {
    let env = TestEnv::new();
    let other = env.path("other");
    std::fs::write(&other, "").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&other, env.lockfile()).unwrap();
    refused(&env, &env.lockfile(), "hard links");
}

#[test]
fn foreign_owner_is_refused() {
    if skipped_unless_root("to chown") {
        return;
    }
    let env = TestEnv::new();
    std::fs::write(env.lockfile(), "").unwrap();
    std::fs::set_permissions(env.lockfile(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(env.lockfile(), Some(65534), Some(65534)).unwrap();
    refused(&env, &env.lockfile(), "owned by uid 65534");
    assert_eq!(std::fs::metadata(env.lockfile()).unwrap().uid(), 65534);
}

#[test]
fn unsafe_or_missing_directory_is_refused() {
    let env = TestEnv::new();
    let open_dir = env.path("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(&env, &open_dir.join("sync.lock"), "sticky bit");
    // The same directory with the sticky bit (like /tmp) is acceptable.
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut cmd = hermetic(BIN);
    cmd.arg("--lockfile").arg(open_dir.join("sync.lock")).args(["--", "true"]);
    assert_eq!(run(cmd).code(), Some(0));
    let missing = env.path("missing");
    refused(&env, &missing.join("sync.lock"), "does not create directories");
    assert!(!missing.exists());
}

#[test]
fn a_lockfile_with_old_notes_is_used_and_never_written() {
    // Earlier versions wrote notes into the lockfile; they are never read
    // or trusted now, and the file is never written.
    let env = TestEnv::new();
    let mut old = b"synclock notes 1\n".to_vec();
    old.resize(16 * 1024, 0xa5);
    std::fs::write(env.lockfile(), &old).unwrap();
    std::fs::set_permissions(env.lockfile(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut holder = env.holder();
    let mut waiter = Bg::spawn(env.synclock(["--", "true"]));
    waiter.expect_stderr("is held by");
    holder.release();
    assert_eq!(holder.finish().code(), Some(0));
    assert_eq!(waiter.finish().code(), Some(0));
    assert_eq!(std::fs::read(env.lockfile()).unwrap(), old);
}
