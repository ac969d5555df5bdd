//! Reading and writing the state file: atomic saves (temporary file, fsync, rename), the
//! previous version kept beside it, and the recovery `attach` makes from a file it cannot use.
use std::{
    collections::{BTreeMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    AllowRecord, AutoBanRecord, BanOrigin, DenyRecord, FILE_MODE, ListBan, PREV_FILE,
    PrefixBanRecord, REJECTED_PREFIX, STATE_FILE, STATE_VERSION, SavedClock, SignatureState,
    StateError, StateFile, create_dir, lock,
};
use crate::time::now_wall_secs;

pub(super) const TMP_SUFFIX: &str = ".tmp";

/// What `save` writes: the state as it is plus the clocks of this save, without cloning it.
#[derive(Serialize)]
struct SaveView<'a> {
    version: u32,
    allow: &'a [AllowRecord],
    deny: &'a [DenyRecord],
    #[serde(skip_serializing_if = "<[AllowRecord]>::is_empty")]
    protected: &'a [AllowRecord],
    bans: &'a [ListBan],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    bans_added: &'a BTreeMap<BanOrigin, u64>,
    auto_bans: &'a [AutoBanRecord],
    #[serde(skip_serializing_if = "<[PrefixBanRecord]>::is_empty")]
    prefix_bans: &'a [PrefixBanRecord],
    #[serde(skip_serializing_if = "SignatureState::is_empty")]
    signatures: &'a SignatureState,
    saved: SavedClock,
}

/// What [`StateFile::load_or_recover`] had to do about an unusable state file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// One line each: what was wrong, where the file went, what was restored and what was not.
    pub warnings: Vec<String>,
}

/// Read first and alone, so that a newer file is reported as newer rather than as unparsable.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

fn corrupt(path: &Path, err: &serde_json::Error) -> StateError {
    let (line, column) = (err.line(), err.column());
    let full = err.to_string();
    let message = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full)
        .to_owned();
    StateError::Corrupt {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

impl StateFile {
    /// Reads `<dir>/state.json`; a missing file is an empty state. Hold [`lock`] if you intend to
    /// save changes.
    pub fn load(dir: &Path) -> Result<StateFile, StateError> {
        Self::load_file(&dir.join(STATE_FILE))
    }

    fn load_file(path: &Path) -> Result<StateFile, StateError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StateFile::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse_bytes(path, &bytes)
    }

    #[cfg(test)]
    pub(super) fn parse(path: &Path, text: &str) -> Result<StateFile, StateError> {
        Self::parse_bytes(path, text.as_bytes())
    }

    /// Bytes rather than text: a file with invalid UTF-8 in it is corrupt like any other.
    fn parse_bytes(path: &Path, text: &[u8]) -> Result<StateFile, StateError> {
        let probe: VersionProbe = serde_json::from_slice(text).map_err(|e| corrupt(path, &e))?;
        if probe.version > STATE_VERSION {
            return Err(StateError::TooNew {
                path: path.to_owned(),
                version: probe.version,
                supported: STATE_VERSION,
            });
        }
        if probe.version < STATE_VERSION {
            return Err(StateError::UnknownVersion {
                path: path.to_owned(),
                version: probe.version,
                supported: STATE_VERSION,
            });
        }
        let mut state: StateFile = serde_json::from_slice(text).map_err(|e| corrupt(path, &e))?;
        state.normalise();
        Ok(state)
    }

    /// [`StateFile::load`] for `attach` and `run`, which must not leave the host unfiltered
    /// because of a bad file: a corrupt file, or one of a version this sip-xdp cannot read, is
    /// moved aside (renamed `state.json.rejected-<unix time>`, never overwritten or deleted) and
    /// the state is taken from the version the last save replaced (`state.json.prev`) if that
    /// one is readable, else it starts empty. The returned warnings say what happened and what
    /// was not restored. Other errors (permissions, I/O) are returned as they are. Hold [`lock`].
    pub fn load_or_recover(dir: &Path) -> Result<(StateFile, Recovery), StateError> {
        let path = dir.join(STATE_FILE);
        let problem = match Self::load_file(&path) {
            Ok(state) => return Ok((state, Recovery::default())),
            Err(
                e @ (StateError::Corrupt { .. }
                | StateError::TooNew { .. }
                | StateError::UnknownVersion { .. }),
            ) => e,
            Err(e) => return Err(e),
        };
        let mut recovery = Recovery::default();
        let aside = move_aside(dir, &path, "")?;
        recovery.warnings.push(format!(
            "{problem_line}; moved it aside to {aside} (kept for you to inspect)",
            problem_line = problem_summary(&problem),
            aside = aside.display()
        ));
        let prev_path = dir.join(PREV_FILE);
        let state = match fs::symlink_metadata(&prev_path) {
            Err(_) => {
                recovery.warnings.push(format!(
                    "no earlier version ({}) to restore from: the saved allow/deny lists, bans \
                    and rate-ban history were NOT restored (only what the pinned maps still \
                    hold, if anything); re-add them or repair {} and attach again",
                    prev_path.display(),
                    aside.display()
                ));
                StateFile::default()
            }
            Ok(meta) => match Self::load_file(&prev_path) {
                Ok(state) => {
                    let when = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| humantime::format_rfc3339_seconds(UNIX_EPOCH + d).to_string())
                        .unwrap_or_else(|| "an unknown time".to_owned());
                    recovery.warnings.push(format!(
                        "restored {} allow, {} deny, {} ban, {} rate-ban and {} prefix-ban \
                         entries from {} \
                        (the version saved before it, written at {when}); changes made after \
                        that were NOT restored",
                        state.allow.len(),
                        state.deny.len(),
                        state.bans.len(),
                        state.auto_bans.len(),
                        state.prefix_bans.len(),
                        prev_path.display()
                    ));
                    state
                }
                Err(prev_problem) => {
                    let prev_aside = move_aside(dir, &prev_path, "prev-")?;
                    recovery.warnings.push(format!(
                        "the earlier version is unusable too ({}); moved it aside to {}: the \
                        saved allow/deny lists, bans and rate-ban history were NOT restored \
                        (only what the pinned maps still hold, if anything)",
                        problem_summary(&prev_problem),
                        prev_aside.display()
                    ));
                    StateFile::default()
                }
            },
        };
        Ok((state, recovery))
    }

    /// Host bits cleared and duplicates dropped (first one kept), as the add operations keep it;
    /// only a hand-edited file needs this.
    fn normalise(&mut self) {
        // Sets, not scans: a CrowdSec feed can leave tens of thousands of bans in the file.
        fn dedup<T, K: std::hash::Hash + Eq>(
            records: &mut Vec<T>,
            key: impl Fn(&mut T) -> K,
            net: impl Fn(&mut T) -> &mut IpNet,
        ) {
            let mut seen = HashSet::with_capacity(records.len());
            records.retain_mut(|r| {
                let n = net(r);
                *n = n.trunc();
                seen.insert(key(r))
            });
        }
        dedup(&mut self.allow, |r| r.net, |r| &mut r.net);
        dedup(&mut self.deny, |r| r.net, |r| &mut r.net);
        dedup(&mut self.protected, |r| r.net, |r| &mut r.net);
        dedup(&mut self.bans, |b| (b.net, b.origin), |b| &mut b.net);
    }

    /// Replaces `<dir>/state.json` atomically (temporary file, fsync, rename, fsync of the
    /// directory), creating the directory if needed. Hold [`lock`] around load and save.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        create_dir(dir)?;
        let view = SaveView {
            version: self.version,
            allow: &self.allow,
            deny: &self.deny,
            protected: &self.protected,
            bans: &self.bans,
            bans_added: &self.bans_added,
            auto_bans: &self.auto_bans,
            prefix_bans: &self.prefix_bans,
            signatures: &self.signatures,
            saved: SavedClock::now(),
        };
        let mut json = serde_json::to_string_pretty(&view).map_err(StateError::Encode)?;
        json.push('\n');

        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}{TMP_SUFFIX}"));
        let write_err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let written = write_synced(&tmp, json.as_bytes()).and_then(|()| {
            keep_previous(dir, &path);
            fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            // A stale temporary file is harmless (the next save truncates it) but confusing.
            let _ = fs::remove_file(&tmp);
            return Err(write_err(e));
        }
        // Without this the rename itself may not survive a power cut.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)
    }

    /// Locks the directory, loads, applies `edit`, and saves if `edit` changed anything.
    pub fn update<T>(dir: &Path, edit: impl FnOnce(&mut StateFile) -> T) -> Result<T, StateError> {
        let _lock = lock(dir)?;
        let mut state = StateFile::load(dir)?;
        let before = state.clone();
        let result = edit(&mut state);
        if state != before {
            state.save(dir)?;
        }
        Ok(result)
    }
}

/// Keeps the file about to be replaced as `state.json.prev` (a hard link: no copy, and a
/// different file from the one the rename puts in place). Best effort: a file system without
/// hard links only loses the fallback.
fn keep_previous(dir: &Path, path: &Path) {
    let prev = dir.join(PREV_FILE);
    let prev_tmp = dir.join(format!("{PREV_FILE}{TMP_SUFFIX}"));
    let _ = fs::remove_file(&prev_tmp);
    if fs::hard_link(path, &prev_tmp).is_ok() && fs::rename(&prev_tmp, &prev).is_err() {
        let _ = fs::remove_file(&prev_tmp);
    }
}

/// Renames an unusable state file to `state.json.rejected-<what><unix time>[.N]`, never over
/// an existing file.
fn move_aside(dir: &Path, path: &Path, what: &str) -> Result<PathBuf, StateError> {
    let stamp = now_wall_secs();
    for n in 0..100u32 {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!(".{n}")
        };
        let aside = dir.join(format!("{REJECTED_PREFIX}{what}{stamp}{suffix}"));
        if fs::symlink_metadata(&aside).is_ok() {
            continue;
        }
        // Not rename(2), which would replace a file created meanwhile: link, then unlink.
        return match fs::hard_link(path, &aside) {
            Ok(()) => fs::remove_file(path)
                .map(|()| aside)
                .map_err(|source| StateError::Write {
                    path: path.to_owned(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => Err(StateError::Write {
                path: aside,
                source,
            }),
        };
    }
    Err(StateError::Write {
        path: path.to_owned(),
        source: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

/// The first part of a load error's message (without its advice to move the file aside).
fn problem_summary(e: &StateError) -> String {
    let text = e.to_string();
    text.split("; ").next().unwrap_or(&text).to_owned()
}

/// The files `attach` moved aside and nobody has dealt with yet (`status` warns about them).
pub fn rejected_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(REJECTED_PREFIX))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Creates the temporary file afresh: never through a symlink someone planted at its name
/// (O_NOFOLLOW | O_EXCL), and a stale one left by a crash is removed first (unlink removes a
/// symlink itself, not its target). The caller holds the state lock, so no other save is using
/// the name.
fn create_temp(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        other => other,
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_temp(path)?;
    // `mode` is filtered by the umask; owner read/write exactly, whatever the umask.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}
