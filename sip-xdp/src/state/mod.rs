//! The durable copy of the allowlist, the denylist and the bans.
//!
//! The pinned BPF maps are the live copy and vanish with a reboot or a detach; this file is what
//! the daemon rebuilds them from. Times in the file are wall-clock unix seconds, because the
//! kernel's clock (CLOCK_MONOTONIC_COARSE) restarts at boot: convert with [`Clocks`].
//!
//! Every read-modify-write holds [`lock()`], so the CLI and the daemon never lose each other's
//! edits; [`StateFile::update`] does lock, load, edit and save in one call.
mod clock;
mod lock;
mod records;
mod signatures;
mod store;
#[cfg(test)]
mod tests;

use std::{
    fs::DirBuilder,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

pub use crate::time::now_wall_secs;
pub use clock::{Clocks, SavedClock, boot_id, mono_to_wall_secs, wall_to_mono_ns};
pub use lock::{LOCK_FILE, LOCK_TIMEOUT, StateLock, lock, lock_with_timeout};
pub use records::{
    AllowRecord, AutoBanRecord, BanOrigin, DenyRecord, ListBan, PrefixBanRecord, StateFile,
};
pub use signatures::{AppliedSignatures, SignatureChange, SignatureEdit, SignatureState};
pub use store::{Recovery, rejected_files};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Where the state lives unless the CLI is told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sip-xdp";
/// The file format this build writes and the newest it reads.
pub const STATE_VERSION: u32 = 1;
/// The version of the state file that the last save replaced (a hard link, no copy): what
/// `attach` restores from when `state.json` cannot be read.
pub const PREV_FILE: &str = "state.json.prev";
/// Prefix of a state file `attach` could not use and moved aside (kept for the operator).
pub const REJECTED_PREFIX: &str = "state.json.rejected-";
/// The allowlist, the denylist and the bans are nobody else's business: owner only.
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

#[derive(Debug, Error)]
pub enum StateError {
    #[error(
        "cannot create state directory {path}: {source}; create it by hand or pass another \
         state directory"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot read state file {path}: {source}; check its permissions (sip-xdp normally runs \
         as root)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "state file {path} is not valid at line {line}, column {column}: {message}; fix it, or \
         move it aside to start empty (`sip-xdp attach` does that, restoring the previous \
         version); nothing was changed"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "state file {path} has version {version}, newer than the version {supported} this \
         sip-xdp reads; upgrade sip-xdp, or move the file aside to start empty (`sip-xdp \
         attach` does that, restoring the previous version); nothing was \
         changed"
    )]
    TooNew {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    #[error(
        "state file {path} has version {version}, which no sip-xdp writes; fix the version \
         (this sip-xdp writes {supported}), or move the file aside to start empty; nothing was \
         changed"
    )]
    UnknownVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    #[error(
        "cannot write state file {path}: {source}; check free space and permissions of the \
         state directory; the previous state file is unchanged"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the state as JSON: {0}; this is a sip-xdp bug, please report it")]
    Encode(#[source] serde_json::Error),
    #[error(
        "cannot lock {path}: {source}; check the permissions of the state directory (sip-xdp \
         normally runs as root)"
    )]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "lock file {path} is still held after {waited:?}: another sip-xdp command holds it; \
         wait for it to finish and retry"
    )]
    LockTimeout { path: PathBuf, waited: Duration },
}

/// Creates the state directory (and its parents), owner only, if missing.
fn create_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}
