//! The state lock: one read-modify-write of the state file at a time, across processes.
use std::{
    fs::{File, OpenOptions},
    io,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{FILE_MODE, StateError, create_dir};

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "state.lock";
/// How long [`lock`] waits for another holder before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Held for a whole read-modify-write of the state file; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    // flock locks belong to the open file description: closing the file releases it.
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock on `<dir>/state.lock`, waiting up to [`LOCK_TIMEOUT`]. Creates the
/// directory if missing.
pub fn lock(dir: &Path) -> Result<StateLock, StateError> {
    lock_with_timeout(dir, LOCK_TIMEOUT)
}

/// [`lock`] with a chosen wait. Polls rather than blocking in `flock` so that the wait is bounded.
pub fn lock_with_timeout(dir: &Path, timeout: Duration) -> Result<StateLock, StateError> {
    create_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let lock_err = |source| StateError::Lock {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(lock_err)?;
    let started = Instant::now();
    loop {
        // SAFETY: a valid, open file descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(StateLock { _file: file, path });
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
            _ => return Err(lock_err(err)),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(StateError::LockTimeout { path, waited });
        }
        std::thread::sleep(LOCK_POLL_INTERVAL.min(timeout - waited));
    }
}
