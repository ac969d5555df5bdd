//! One daemon per state directory: the lock `sip-xdp run` holds for its whole life, and the pid
//! `sip-xdp status` reads from it.
use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    },
    path::Path,
};

use anyhow::{Context as _, Result, bail};

const DAEMON_LOCK_FILE: &str = "daemon.lock";
/// Held while the daemon runs: one daemon per state directory (and so per pinned program).
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    pub fn acquire(state_dir: &Path) -> Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::state::DIR_MODE)
            .create(state_dir)
            .with_context(|| {
                format!("cannot create the state directory {}", state_dir.display())
            })?;
        let path = state_dir.join(DAEMON_LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::state::FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .with_context(|| format!("cannot open the daemon lock {}", path.display()))?;
        // SAFETY: a valid descriptor owned by `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = read_pid(&mut file)
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            bail!(
                "another sip-xdp daemon{pid} is already running with state directory {}; stop \
                 it first (`systemctl stop sip-xdp`), or give this one its own --state-dir and \
                 --pin-dir",
                state_dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(Self { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The pid of the daemon running with `state_dir`, if one is.
pub fn running_pid(state_dir: &Path) -> Option<u32> {
    let mut file = File::open(state_dir.join(DAEMON_LOCK_FILE)).ok()?;
    // SAFETY: a valid descriptor owned by `file`.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        return None;
    }
    read_pid(&mut file)
}
