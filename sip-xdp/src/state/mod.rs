//! The durable copy of the allowlist, the denylist and the bans.
//!
//! The pinned BPF maps are the live copy and vanish with a reboot or a detach; this file is what
//! the daemon rebuilds them from. Times in the file are wall-clock unix seconds, because the
//! kernel's clock (CLOCK_MONOTONIC_COARSE) restarts at boot: convert with [`Clocks`].
//!
//! Every read-modify-write holds [`lock`], so the CLI and the daemon never lose each other's
//! edits; [`StateFile::update`] does lock, load, edit and save in one call.
use std::{
    collections::{BTreeMap, HashSet},
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Write},
    net::IpAddr,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

pub use crate::time::now_wall_secs;
use crate::time::{NS_PER_SEC, monotonic_now_ns, now_wall_ns};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// Where the state lives unless the CLI is told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sip-xdp";
/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "state.lock";
/// The file format this build writes and the newest it reads.
pub const STATE_VERSION: u32 = 1;
/// How long [`lock`] waits for another holder before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);
const TMP_SUFFIX: &str = ".tmp";
/// The version of the state file that the last save replaced (a hard link, no copy): what
/// `attach` restores from when `state.json` cannot be read.
pub const PREV_FILE: &str = "state.json.prev";
/// Prefix of a state file `attach` could not use and moved aside (kept for the operator).
pub const REJECTED_PREFIX: &str = "state.json.rejected-";
/// The allowlist, the denylist and the bans are nobody else's business: owner only.
pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;
/// Restored bans are shortened only by more than this (rounding and clock drift are not skew).
const CLAMP_TOLERANCE_NS: u64 = 2 * NS_PER_SEC;

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

/// A CIDR allowed through without rate limiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRecord {
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Unix seconds.
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A CIDR denied for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRecord {
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Unix seconds.
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Who put a ban in the ban list. Bans of different origins on the same net are kept apart, so
/// that fail2ban's unban or a deleted CrowdSec decision never lifts the operator's own ban.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BanOrigin {
    /// `sip-xdp ban add` by an operator.
    #[default]
    Manual,
    /// fail2ban's action (contrib/fail2ban/action.d/sip-xdp.conf).
    Fail2ban,
    /// A decision from a CrowdSec Local API.
    Crowdsec,
}

impl BanOrigin {
    pub const ALL: [BanOrigin; 3] = [BanOrigin::Manual, BanOrigin::Fail2ban, BanOrigin::Crowdsec];

    pub const fn name(self) -> &'static str {
        match self {
            BanOrigin::Manual => "manual",
            BanOrigin::Fail2ban => "fail2ban",
            BanOrigin::Crowdsec => "crowdsec",
        }
    }
}

impl std::fmt::Display for BanOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A ban from the ban list (not the rate limiter); it lives in the kernel's denylist until
/// `expires_at`. One record per (net, origin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListBan {
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Older files have no origin: their bans were all made with `sip-xdp ban add`.
    #[serde(default)]
    pub origin: BanOrigin,
    /// Unix seconds; the ban no longer applies from this second on.
    pub expires_at: u64,
    /// Unix seconds.
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A rate-limit ban the program imposed, saved so that a source's escalation (strikes, last
/// duration) survives a reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoBanRecord {
    /// The `SOURCES` key as an address (IPv4-mapped keys as IPv4; IPv6 already masked).
    pub addr: IpAddr,
    /// Unix seconds the ban ends.
    pub banned_until: u64,
    pub ban_duration_ns: u64,
    pub strikes: u32,
    pub limit_class: u8,
    pub monitor_only: bool,
}

/// Contents of `state.json`.
#[derive(Clone, Debug, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    #[serde(default)]
    pub allow: Vec<AllowRecord>,
    #[serde(default)]
    pub deny: Vec<DenyRecord>,
    /// Rate-limited, never banned (trunks, registrar peers, monitoring hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<AllowRecord>,
    #[serde(default)]
    pub bans: Vec<ListBan>,
    /// Bans ever added per origin (renewals included); the exporter serves it as a counter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bans_added: BTreeMap<BanOrigin, u64>,
    #[serde(default)]
    pub auto_bans: Vec<AutoBanRecord>,
    /// The clocks when the file was saved (written by every save): lets a restore tell how much
    /// time can have passed since, whatever the wall clock says now (see
    /// [`StateFile::clamp_restored_bans`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedClock>,
}

/// Equal contents; when the file was last saved does not count (every save rewrites it).
impl PartialEq for StateFile {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.allow == other.allow
            && self.deny == other.deny
            && self.protected == other.protected
            && self.bans == other.bans
            && self.bans_added == other.bans_added
            && self.auto_bans == other.auto_bans
    }
}

/// The kernel's boot id and both clocks, read together at a save.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedClock {
    /// /proc/sys/kernel/random/boot_id; the monotonic clock only compares within one boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    pub wall_ns: u64,
    pub mono_ns: u64,
}

impl SavedClock {
    /// Now.
    pub fn now() -> Self {
        let clocks = Clocks::now();
        Self {
            boot_id: boot_id(),
            wall_ns: clocks.wall_ns,
            mono_ns: clocks.mono_ns,
        }
    }
}

/// This boot's id, if the kernel tells it.
pub fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

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
    saved: SavedClock,
}

/// What [`StateFile::load_or_recover`] had to do about an unusable state file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// One line each: what was wrong, where the file went, what was restored and what was not.
    pub warnings: Vec<String>,
}

impl Default for StateFile {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            allow: Vec::new(),
            deny: Vec::new(),
            protected: Vec::new(),
            bans: Vec::new(),
            bans_added: BTreeMap::new(),
            auto_bans: Vec::new(),
            saved: None,
        }
    }
}

/// Read first and alone, so that a newer file is reported as newer rather than as unparsable.
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

/// Hand-edited files may hold a bare address where a CIDR belongs.
fn de_net<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpNet, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is neither a CIDR (10.0.0.0/8) nor an address"
        ))
    })
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
    fn parse(path: &Path, text: &str) -> Result<StateFile, StateError> {
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
                        "restored {} allow, {} deny, {} ban and {} rate-ban entries from {} \
                        (the version saved before it, written at {when}); changes made after \
                        that were NOT restored",
                        state.allow.len(),
                        state.deny.len(),
                        state.bans.len(),
                        state.auto_bans.len(),
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

    /// Shortens restored bans to what they can have left. The file stores wall-clock ends, and
    /// a wall clock that is behind (an RTC without a battery, NTP not synced yet at boot) would
    /// lengthen every ban by the skew. Now is taken as the latest of: the wall clock; the time
    /// of the last save (time does not run backwards); and, on the same boot, the time of the
    /// last save plus the monotonic time elapsed since. No ban keeps more than its whole
    /// duration either. Returns how many bans were shortened. Bans are never lengthened.
    pub fn clamp_restored_bans(&mut self, now: &SavedClock) -> usize {
        let mut now_ns = now.wall_ns;
        if let Some(saved) = &self.saved {
            now_ns = now_ns.max(saved.wall_ns);
            let same_boot = saved.boot_id.is_some() && saved.boot_id == now.boot_id;
            if same_boot && now.mono_ns >= saved.mono_ns {
                now_ns = now_ns.max(saved.wall_ns.saturating_add(now.mono_ns - saved.mono_ns));
            }
        }
        // The wall-clock end (seconds, in today's possibly skewed clock) that leaves `left_ns`.
        let end_for = |left_ns: u64| now.wall_ns.saturating_add(left_ns).div_ceil(NS_PER_SEC);
        let mut shortened = 0;
        for ban in &mut self.bans {
            let end_ns = ban.expires_at.saturating_mul(NS_PER_SEC);
            let whole_ns = ban
                .expires_at
                .saturating_sub(ban.added_at)
                .saturating_mul(NS_PER_SEC);
            let left_ns = end_ns.saturating_sub(now_ns).min(whole_ns);
            let current_ns = end_ns.saturating_sub(now.wall_ns);
            if current_ns > left_ns.saturating_add(CLAMP_TOLERANCE_NS) {
                let end = end_for(left_ns);
                let cut = ban.expires_at - end;
                ban.added_at = ban.added_at.saturating_sub(cut);
                ban.expires_at = end;
                shortened += 1;
            }
        }
        for ban in &mut self.auto_bans {
            let end_ns = ban.banned_until.saturating_mul(NS_PER_SEC);
            let left_ns = end_ns.saturating_sub(now_ns).min(ban.ban_duration_ns);
            let current_ns = end_ns.saturating_sub(now.wall_ns);
            if current_ns > left_ns.saturating_add(CLAMP_TOLERANCE_NS) {
                ban.banned_until = end_for(left_ns);
                shortened += 1;
            }
        }
        shortened
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

    /// `false` if `net` was already allowed (its record is left as it was).
    pub fn add_allow(&mut self, net: IpNet, comment: Option<String>) -> bool {
        let net = net.trunc();
        if self.allow.iter().any(|r| r.net == net) {
            return false;
        }
        self.allow.push(AllowRecord {
            net,
            added_at: now_wall_secs(),
            comment,
        });
        true
    }

    pub fn remove_allow(&mut self, net: IpNet) -> bool {
        remove_net(&mut self.allow, net.trunc(), |r| r.net)
    }

    /// `false` if `net` was already protected (its record is left as it was).
    pub fn add_protected(&mut self, net: IpNet, comment: Option<String>) -> bool {
        let net = net.trunc();
        if self.protected.iter().any(|r| r.net == net) {
            return false;
        }
        self.protected.push(AllowRecord {
            net,
            added_at: now_wall_secs(),
            comment,
        });
        true
    }

    pub fn remove_protected(&mut self, net: IpNet) -> bool {
        remove_net(&mut self.protected, net.trunc(), |r| r.net)
    }

    /// `false` if `net` was already denied (its record is left as it was).
    pub fn add_deny(&mut self, net: IpNet, comment: Option<String>) -> bool {
        let net = net.trunc();
        if self.deny.iter().any(|r| r.net == net) {
            return false;
        }
        self.deny.push(DenyRecord {
            net,
            added_at: now_wall_secs(),
            comment,
        });
        true
    }

    pub fn remove_deny(&mut self, net: IpNet) -> bool {
        remove_net(&mut self.deny, net.trunc(), |r| r.net)
    }

    /// Bans `net` on behalf of `origin` until `expires_at` (unix seconds). An existing ban of the
    /// same net and origin is replaced, even by a shorter one: that origin's latest word wins.
    /// Bans of other origins are left alone.
    pub fn add_ban(
        &mut self,
        net: IpNet,
        origin: BanOrigin,
        expires_at: u64,
        reason: Option<String>,
    ) {
        let net = net.trunc();
        let ban = ListBan {
            net,
            origin,
            expires_at,
            added_at: now_wall_secs(),
            reason,
        };
        *self.bans_added.entry(origin).or_default() += 1;
        match self
            .bans
            .iter_mut()
            .find(|b| b.net == net && b.origin == origin)
        {
            Some(existing) => *existing = ban,
            None => self.bans.push(ban),
        }
    }

    /// Lifts `origin`'s ban of exactly `net`; `false` if it had none.
    pub fn remove_ban(&mut self, net: IpNet, origin: BanOrigin) -> bool {
        let net = net.trunc();
        let before = self.bans.len();
        self.bans.retain(|b| !(b.net == net && b.origin == origin));
        self.bans.len() != before
    }

    /// The live bans of `net` (any origin) at `now_wall`, longest first.
    pub fn bans_of(&self, net: IpNet, now_wall: u64) -> Vec<&ListBan> {
        let net = net.trunc();
        let mut bans: Vec<&ListBan> = self
            .bans
            .iter()
            .filter(|b| b.net == net && b.expires_at > now_wall)
            .collect();
        bans.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
        bans
    }

    /// Drops the bans that ended at or before `now_wall` (unix seconds); returns their nets.
    pub fn prune_expired_bans(&mut self, now_wall: u64) -> Vec<IpNet> {
        let mut pruned = Vec::new();
        self.bans.retain(|b| {
            let live = b.expires_at > now_wall;
            if !live {
                pruned.push(b.net);
            }
            live
        });
        pruned
    }

    pub fn set_auto_bans(&mut self, auto_bans: Vec<AutoBanRecord>) {
        self.auto_bans = auto_bans;
    }

    /// The kernel DENYLIST entry `net` must have: `Some(expires_at_ns)` (monotonic, 0 = never)
    /// or `None` for no entry. A permanent deny wins over a ban of the same net; a ban that ended
    /// at or before `now_wall` counts as absent.
    pub fn denylist_value(&self, net: &IpNet, now_wall: u64) -> Option<u64> {
        self.denylist_value_at(net, now_wall, Clocks::now())
    }

    fn denylist_value_at(&self, net: &IpNet, now_wall: u64, clocks: Clocks) -> Option<u64> {
        let net = net.trunc();
        if self.deny.iter().any(|r| r.net == net) {
            return Some(0);
        }
        // Bans of several origins on one net: the kernel entry lasts as long as the longest.
        let expires_at = self
            .bans
            .iter()
            .filter(|b| b.net == net && b.expires_at > now_wall)
            .map(|b| b.expires_at)
            .max()?;
        // 0 would mean "never" to the kernel.
        Some(clocks.wall_to_mono_ns(expires_at).max(1))
    }

    /// Every DENYLIST entry the kernel must have, deny and live bans merged as in
    /// [`StateFile::denylist_value`], converted with one clock reading.
    pub fn denylist_entries(&self, now_wall: u64) -> Vec<(IpNet, u64)> {
        let clocks = Clocks::now();
        // One pass, not one per net: this runs every reconcile, with feeds of many bans.
        let mut entries: BTreeMap<IpNet, u64> = BTreeMap::new();
        for ban in self.bans.iter().filter(|b| b.expires_at > now_wall) {
            let longest = entries.entry(ban.net).or_insert(0);
            *longest = (*longest).max(ban.expires_at);
        }
        for value in entries.values_mut() {
            // 0 would mean "never" to the kernel.
            *value = clocks.wall_to_mono_ns(*value).max(1);
        }
        for record in &self.deny {
            entries.insert(record.net, 0);
        }
        entries.into_iter().collect()
    }
}

fn remove_net<T>(records: &mut Vec<T>, net: IpNet, net_of: impl Fn(&T) -> IpNet) -> bool {
    let before = records.len();
    records.retain(|r| net_of(r) != net);
    records.len() != before
}

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

/// One reading of the wall clock and the kernel's monotonic clock, taken together, so that a
/// batch of conversions agrees with itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    pub wall_ns: u64,
    pub mono_ns: u64,
}

impl Clocks {
    pub fn now() -> Self {
        Self {
            wall_ns: now_wall_ns(),
            mono_ns: monotonic_now_ns(),
        }
    }

    /// The monotonic time of wall-clock second `unix_secs`; a time already past gives the
    /// monotonic now (callers decide whether that means "expired").
    pub fn wall_to_mono_ns(&self, unix_secs: u64) -> u64 {
        let target_ns = unix_secs.saturating_mul(NS_PER_SEC);
        self.mono_ns
            .saturating_add(target_ns.saturating_sub(self.wall_ns))
    }

    /// The wall-clock second of monotonic time `mono_ns`, rounded up so that a ban converted
    /// to the file and back never ends earlier than it did.
    pub fn mono_to_wall_secs(&self, mono_ns: u64) -> u64 {
        let wall_ns = if mono_ns >= self.mono_ns {
            self.wall_ns.saturating_add(mono_ns - self.mono_ns)
        } else {
            self.wall_ns.saturating_sub(self.mono_ns - mono_ns)
        };
        wall_ns.div_ceil(NS_PER_SEC)
    }
}

/// [`Clocks::wall_to_mono_ns`] with the clocks read now.
pub fn wall_to_mono_ns(unix_secs: u64) -> u64 {
    Clocks::now().wall_to_mono_ns(unix_secs)
}

/// [`Clocks::mono_to_wall_secs`] with the clocks read now.
pub fn mono_to_wall_secs(mono_ns: u64) -> u64 {
    Clocks::now().mono_to_wall_secs(mono_ns)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, sync::mpsc, thread};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn sample() -> StateFile {
        let mut state = StateFile::default();
        state.add_allow(net("192.0.2.0/24"), Some("carrier".into()));
        state.add_allow(net("2001:db8::/32"), None);
        state.add_deny(net("198.51.100.7/32"), Some("scanner".into()));
        state.add_protected(net("198.51.100.200/32"), Some("trunk".into()));
        state.add_ban(
            net("203.0.113.0/24"),
            BanOrigin::Manual,
            4_000_000_000,
            Some("brute force".into()),
        );
        state.set_auto_bans(vec![AutoBanRecord {
            addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            banned_until: 1_900_000_000,
            ban_duration_ns: 120 * NS_PER_SEC,
            strikes: 2,
            limit_class: 1,
            monitor_only: false,
        }]);
        state
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("nested/state");
        let state = sample();
        state.save(&state_dir).expect("save");
        assert_eq!(StateFile::load(&state_dir).expect("load"), state);

        let path = state_dir.join(STATE_FILE);
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!state_dir.join("state.json.tmp").exists());
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"version\": 1"), "{text}");
        assert!(text.contains("\"203.0.113.0/24\""), "{text}");

        // A second save replaces, not appends.
        let mut smaller = state.clone();
        assert!(smaller.remove_allow(net("192.0.2.0/24")));
        smaller.save(&state_dir).expect("save again");
        assert_eq!(StateFile::load(&state_dir).expect("load"), smaller);
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn state_dirs_and_files_are_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("var/lib/sip-xdp");
        // Whatever the caller's umask lets through.
        let old = unsafe { libc::umask(0o022) };
        let _lock = lock(&state_dir).expect("lock");
        sample().save(&state_dir).expect("save");
        sample()
            .save(&state_dir)
            .expect("save again (keeps state.json.prev)");
        unsafe { libc::umask(old) };
        assert_eq!(mode_of(&state_dir), 0o700, "state directory");
        assert_eq!(
            mode_of(&dir.path().join("var/lib")),
            0o700,
            "created parents"
        );
        assert_eq!(mode_of(&state_dir.join(STATE_FILE)), 0o600, "state file");
        assert_eq!(mode_of(&state_dir.join(LOCK_FILE)), 0o600, "lock file");
        assert_eq!(
            mode_of(&state_dir.join(PREV_FILE)),
            0o600,
            "previous version"
        );
    }

    #[test]
    fn a_symlink_at_the_temporary_path_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious\n").expect("write");
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).unwrap();
        let tmp = state_dir.join(format!("{STATE_FILE}{TMP_SUFFIX}"));
        std::os::unix::fs::symlink(&victim, &tmp).expect("plant symlink");
        sample()
            .save(&state_dir)
            .expect("save past a planted symlink");
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"precious\n",
            "target written through"
        );
        assert!(
            fs::symlink_metadata(&tmp).is_err(),
            "temporary name left behind"
        );
        assert_eq!(StateFile::load(&state_dir).unwrap(), sample());
        assert!(
            !fs::symlink_metadata(state_dir.join(STATE_FILE))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // A stale regular temporary file (a crash between write and rename) is replaced.
        fs::write(&tmp, b"half a file").unwrap();
        StateFile::default()
            .save(&state_dir)
            .expect("save past a stale temp file");
        assert_eq!(StateFile::load(&state_dir).unwrap(), StateFile::default());
        assert!(fs::symlink_metadata(&tmp).is_err());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_the_previous_version_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = sample();
        first.save(dir.path()).unwrap();
        let mut second = first.clone();
        second.add_deny(net("203.0.113.99/32"), None);
        second.save(dir.path()).unwrap();
        let path = dir.path().join(STATE_FILE);
        let garbage = b"{\"version\": 1, \"allow\": [\xff oops";
        fs::write(&path, garbage).unwrap();

        let (state, recovery) = StateFile::load_or_recover(dir.path()).expect("recovers");
        assert_eq!(state, first, "the version the last save replaced");
        let text = recovery.warnings.join("\n");
        assert!(text.contains("not valid"), "{text}");
        assert!(text.contains("moved it aside"), "{text}");
        assert!(
            text.contains("changes made after that were NOT restored"),
            "{text}"
        );
        let rejected = rejected_files(dir.path());
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(fs::read(&rejected[0]).unwrap(), garbage, "kept as it was");
        assert!(!path.exists(), "moved, not copied");
        // A good file loads as before, with no warnings.
        state.save(dir.path()).unwrap();
        let (again, recovery) = StateFile::load_or_recover(dir.path()).unwrap();
        assert_eq!(again, first);
        assert!(recovery.warnings.is_empty());
    }

    #[test]
    fn a_newer_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        let newer = br#"{"version": 2, "allow": "something new"}"#;
        fs::write(&path, newer).unwrap();
        let (state, recovery) = StateFile::load_or_recover(dir.path()).expect("recovers");
        assert_eq!(state, StateFile::default());
        let text = recovery.warnings.join("\n");
        assert!(text.contains("version 2"), "{text}");
        assert!(text.contains("were NOT restored"), "{text}");
        state.save(dir.path()).unwrap();
        let rejected = rejected_files(dir.path());
        assert_eq!(rejected.len(), 1);
        assert_eq!(fs::read(&rejected[0]).unwrap(), newer);
        // Permissions and I/O errors are not "corrupt": nothing is moved.
        let unreadable = tempfile::tempdir().unwrap();
        fs::create_dir(unreadable.path().join(STATE_FILE)).unwrap();
        assert!(matches!(
            StateFile::load_or_recover(unreadable.path()),
            Err(StateError::Read { .. })
        ));
        assert!(rejected_files(unreadable.path()).is_empty());
    }

    #[test]
    fn restored_bans_are_clamped_to_what_they_can_have_left() {
        let hour = 3_600;
        let mut state = StateFile::default();
        state.add_ban(net("198.51.100.1/32"), BanOrigin::Fail2ban, 0, None);
        state.bans[0].added_at = 10_000;
        state.bans[0].expires_at = 10_000 + hour;
        state.set_auto_bans(vec![AutoBanRecord {
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
            banned_until: 10_000 + 600,
            ban_duration_ns: 600 * NS_PER_SEC,
            strikes: 1,
            limit_class: 1,
            monitor_only: false,
        }]);
        state.saved = Some(SavedClock {
            boot_id: Some("boot-a".into()),
            wall_ns: 10_000 * NS_PER_SEC,
            mono_ns: 50 * NS_PER_SEC,
        });
        let at = |boot: &str, wall_s: u64, mono_s: u64| SavedClock {
            boot_id: Some(boot.into()),
            wall_ns: wall_s * NS_PER_SEC,
            mono_ns: mono_s * NS_PER_SEC,
        };
        let left = |s: &StateFile, now: &SavedClock| {
            let now_s = now.wall_ns / NS_PER_SEC;
            (
                s.bans[0].expires_at.saturating_sub(now_s),
                s.auto_bans[0].banned_until.saturating_sub(now_s),
            )
        };

        // Another boot, the wall clock 900 s behind the last save: at most what was left then.
        let mut s = state.clone();
        let now = at("boot-b", 9_100, 5);
        assert_eq!(s.clamp_restored_bans(&now), 2);
        assert_eq!(left(&s, &now), (hour, 600));
        assert_eq!(
            s.bans[0].expires_at - s.bans[0].added_at,
            hour,
            "duration kept"
        );

        // Another boot, no save time known, the clock 9000 s behind: never more than the ban.
        let mut s = state.clone();
        s.saved = None;
        let now = at("boot-b", 10_000 - 9_000, 5);
        assert_eq!(s.clamp_restored_bans(&now), 2);
        assert_eq!(left(&s, &now), (hour, 600));

        // The same boot, the wall clock stepped back 2000 s, 100 s after the save: the
        // monotonic clock knows 100 s passed.
        let mut s = state.clone();
        let now = at("boot-a", 10_000 + 100 - 2_000, 150);
        assert_eq!(s.clamp_restored_bans(&now), 2);
        assert_eq!(left(&s, &now), (hour - 100, 500));

        // A right clock changes nothing; nor does one that is ahead (bans are never lengthened).
        for now in [
            at("boot-a", 10_100, 150),
            at("boot-b", 10_100, 5),
            at("boot-b", 20_000, 5),
        ] {
            let mut s = state.clone();
            assert_eq!(s.clamp_restored_bans(&now), 0, "{now:?}");
            assert_eq!(s, state);
        }

        // Saved with its clocks, loaded back: the save time is in the file.
        let dir = tempfile::tempdir().unwrap();
        state.save(dir.path()).unwrap();
        let loaded = StateFile::load(dir.path()).unwrap();
        let saved = loaded.saved.expect("save time written");
        assert!(saved.wall_ns.abs_diff(now_wall_ns()) < 5 * NS_PER_SEC);
        assert_eq!(saved.boot_id, boot_id());
    }

    #[test]
    fn missing_file_is_empty_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateFile::load(dir.path()).expect("load");
        assert_eq!(state, StateFile::default());
        assert_eq!(state.version, STATE_VERSION);
        assert!(state.allow.is_empty() && state.bans.is_empty());
        assert!(
            !dir.path().join(STATE_FILE).exists(),
            "load must not create"
        );
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        let garbage = b"{\n  \"version\": 1,\n  \"allow\": [ oops ]\n}\n";
        fs::write(&path, garbage).expect("write");

        let err = StateFile::load(dir.path()).expect_err("corrupt file must not load");
        let StateError::Corrupt { line, .. } = &err else {
            panic!("expected Corrupt, got {err:?}");
        };
        assert_eq!(*line, 3);
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("move it aside"), "{message}");

        // The locked update path must not overwrite it either.
        let edited = StateFile::update(dir.path(), |s| s.add_allow(net("10.0.0.0/8"), None));
        assert!(matches!(edited, Err(StateError::Corrupt { .. })));
        assert_eq!(fs::read(&path).expect("read"), garbage);
    }

    #[test]
    fn bad_field_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"{"version": 1, "deny": [{"net": "300.1.1.1/8", "added_at": 0}]}"#;
        fs::write(dir.path().join(STATE_FILE), text).expect("write");
        let err = StateFile::load(dir.path()).expect_err("bad CIDR");
        assert!(err.to_string().contains("300.1.1.1/8"), "{err}");
    }

    #[test]
    fn newer_version_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(STATE_FILE);
        // A newer format may change fields freely; the version must be reported, not the fields.
        let text = br#"{"version": 2, "allow": "something new"}"#;
        fs::write(&path, text).expect("write");
        let err = StateFile::load(dir.path()).expect_err("newer version");
        assert!(
            matches!(err, StateError::TooNew { version: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("upgrade sip-xdp"), "{err}");
        assert_eq!(fs::read(&path).expect("read"), text);

        fs::write(&path, br#"{"version": 0}"#).expect("write");
        let err = StateFile::load(dir.path()).expect_err("version 0");
        assert!(
            matches!(err, StateError::UnknownVersion { version: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn hand_edited_file_is_normalised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"{"version": 1,
            "allow": [{"net": "10.1.2.3/8", "added_at": 5}, {"net": "10.0.0.0/8", "added_at": 6}],
            "bans": [{"net": "192.0.2.1", "expires_at": 9, "added_at": 1}]}"#;
        fs::write(dir.path().join(STATE_FILE), text).expect("write");
        let state = StateFile::load(dir.path()).expect("load");
        assert_eq!(state.allow.len(), 1);
        assert_eq!(state.allow[0].net, net("10.0.0.0/8"));
        assert_eq!(state.allow[0].added_at, 5);
        assert_eq!(state.bans[0].net, net("192.0.2.1/32"));
    }

    #[test]
    fn lock_excludes_a_second_locker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        let first = lock(&state_dir).expect("first lock");

        let path = state_dir.clone();
        let err = thread::spawn(move || lock_with_timeout(&path, Duration::from_millis(200)))
            .join()
            .expect("thread")
            .expect_err("second lock must time out");
        assert!(matches!(err, StateError::LockTimeout { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("state.lock"), "{message}");
        assert!(message.contains("another sip-xdp command"), "{message}");

        // A waiter gets the lock once the holder lets go.
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = state_dir.clone();
        let waiter = thread::spawn(move || {
            ready_tx.send(()).expect("send");
            let started = Instant::now();
            let lock = lock_with_timeout(&path, Duration::from_secs(5));
            (lock, started.elapsed())
        });
        ready_rx.recv().expect("recv");
        thread::sleep(Duration::from_millis(300));
        drop(first);
        let (second, waited) = waiter.join().expect("thread");
        second.expect("lock after release");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
    }

    #[test]
    fn allow_and_deny_add_remove() {
        let mut state = StateFile::default();
        assert!(state.add_allow(net("10.1.2.3/8"), Some("office".into())));
        assert_eq!(state.allow[0].net, net("10.0.0.0/8"));
        assert_eq!(state.allow[0].comment.as_deref(), Some("office"));
        assert!(!state.add_allow(net("10.0.0.0/8"), None), "already present");
        assert!(
            !state.add_allow(net("10.9.9.9/8"), None),
            "same net, other host bits"
        );
        assert_eq!(state.allow.len(), 1);
        assert_eq!(state.allow[0].comment.as_deref(), Some("office"));
        assert!(state.add_allow(net("10.0.0.0/16"), None), "other prefix");
        assert!(state.remove_allow(net("10.200.0.0/8")));
        assert!(!state.remove_allow(net("10.0.0.0/8")));
        assert_eq!(state.allow.len(), 1);
        let now = now_wall_secs();
        assert!(state.allow[0].added_at.abs_diff(now) <= 1);

        assert!(state.add_deny(net("2001:db8::1/32"), None));
        assert_eq!(state.deny[0].net, net("2001:db8::/32"));
        assert!(!state.add_deny(net("2001:db8::/32"), None));
        assert!(state.remove_deny(net("2001:db8::/32")));
        assert!(!state.remove_deny(net("2001:db8::/32")));
        assert!(state.deny.is_empty());
    }

    #[test]
    fn latest_ban_wins_and_bans_are_removed() {
        let mut state = StateFile::default();
        state.add_ban(
            net("192.0.2.55/24"),
            BanOrigin::Manual,
            2_000,
            Some("first".into()),
        );
        state.add_ban(
            net("192.0.2.0/24"),
            BanOrigin::Manual,
            1_000,
            Some("second".into()),
        );
        assert_eq!(state.bans.len(), 1);
        assert_eq!(state.bans[0].net, net("192.0.2.0/24"));
        assert_eq!(
            state.bans[0].expires_at, 1_000,
            "shorter ban replaces longer"
        );
        assert_eq!(state.bans[0].reason.as_deref(), Some("second"));
        assert!(state.remove_ban(net("192.0.2.1/24"), BanOrigin::Manual));
        assert!(!state.remove_ban(net("192.0.2.0/24"), BanOrigin::Manual));
    }

    #[test]
    fn origins_are_kept_apart() {
        let mut state = StateFile::default();
        let n = net("198.51.100.9/32");
        state.add_ban(n, BanOrigin::Fail2ban, 2_000, Some("asterisk".into()));
        state.add_ban(n, BanOrigin::Crowdsec, 5_000, None);
        state.add_ban(n, BanOrigin::Crowdsec, 3_000, None);
        assert_eq!(state.bans.len(), 2, "one record per (net, origin)");
        assert_eq!(state.bans_added[&BanOrigin::Crowdsec], 2);
        let clocks = Clocks {
            wall_ns: 1_000 * NS_PER_SEC,
            mono_ns: 50 * NS_PER_SEC,
        };
        // The longest origin sets the kernel entry.
        assert_eq!(
            state.denylist_value_at(&n, 1_000, clocks),
            Some(clocks.wall_to_mono_ns(3_000))
        );
        assert!(state.remove_ban(n, BanOrigin::Crowdsec));
        assert!(!state.remove_ban(n, BanOrigin::Manual));
        assert_eq!(
            state.denylist_value_at(&n, 1_000, clocks),
            Some(clocks.wall_to_mono_ns(2_000)),
            "fail2ban's ban survives the CrowdSec lift"
        );
        assert_eq!(state.bans_of(n, 1_000).len(), 1);
        assert!(state.remove_ban(n, BanOrigin::Fail2ban));
        assert_eq!(state.denylist_value_at(&n, 1_000, clocks), None);
    }

    #[test]
    fn ban_without_origin_reads_as_manual() {
        let text = r#"{"version":1,"bans":[{"net":"203.0.113.4","expires_at":9,"added_at":1}]}"#;
        let state = StateFile::parse(Path::new("state.json"), text).expect("parses");
        assert_eq!(state.bans[0].origin, BanOrigin::Manual);
    }

    #[test]
    fn prune_removes_only_ended_bans() {
        let mut state = StateFile::default();
        state.add_ban(net("192.0.2.1/32"), BanOrigin::Manual, 100, None);
        state.add_ban(net("192.0.2.2/32"), BanOrigin::Manual, 150, None);
        state.add_ban(net("192.0.2.3/32"), BanOrigin::Manual, 151, None);
        let mut pruned = state.prune_expired_bans(150);
        pruned.sort();
        assert_eq!(pruned, vec![net("192.0.2.1/32"), net("192.0.2.2/32")]);
        assert_eq!(state.bans.len(), 1);
        assert_eq!(state.bans[0].net, net("192.0.2.3/32"));
        assert!(state.prune_expired_bans(150).is_empty());
    }

    #[test]
    fn denylist_value_merges_deny_and_bans() {
        let clocks = Clocks {
            wall_ns: 1_000 * NS_PER_SEC,
            mono_ns: 50 * NS_PER_SEC,
        };
        let now_wall = 1_000;
        let mut state = StateFile::default();
        let n = net("198.51.100.0/24");

        assert_eq!(state.denylist_value_at(&n, now_wall, clocks), None);

        state.add_ban(n, BanOrigin::Manual, 1_010, None);
        assert_eq!(
            state.denylist_value_at(&n, now_wall, clocks),
            Some(60 * NS_PER_SEC),
            "live ban: its end in monotonic time"
        );
        assert_eq!(
            state.denylist_value_at(&net("198.51.100.9/24"), now_wall, clocks),
            Some(60 * NS_PER_SEC),
            "lookup normalises"
        );
        assert_eq!(
            state.denylist_value_at(&n, 1_010, clocks),
            None,
            "ended ban"
        );

        state.add_deny(n, None);
        assert_eq!(state.denylist_value_at(&n, now_wall, clocks), Some(0));
        assert_eq!(
            state.denylist_value_at(&n, 1_010, clocks),
            Some(0),
            "deny outlives the ban"
        );
        state.remove_ban(n, BanOrigin::Manual);
        assert_eq!(state.denylist_value_at(&n, now_wall, clocks), Some(0));
        assert_eq!(
            state.denylist_value_at(&net("198.51.100.0/25"), now_wall, clocks),
            None,
            "exact net only"
        );

        // The public form reads the real clocks.
        let mut live = StateFile::default();
        let now = now_wall_secs();
        live.add_ban(n, BanOrigin::Manual, now + 3_600, None);
        let value = live.denylist_value(&n, now).expect("live ban");
        let expected = monotonic_now_ns() + 3_600 * NS_PER_SEC;
        assert!(
            value.abs_diff(expected) <= 2 * NS_PER_SEC,
            "{value} vs {expected}"
        );

        let entries = {
            let mut s = live.clone();
            s.add_deny(net("192.0.2.0/24"), None);
            s.add_ban(
                net("203.0.113.0/24"),
                BanOrigin::Manual,
                now.saturating_sub(1),
                None,
            );
            s.denylist_entries(now)
        };
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert!(entries.contains(&(net("192.0.2.0/24"), 0)));
        let (_, ban_value) = entries
            .iter()
            .find(|&&(e, _)| e == n)
            .expect("the live ban");
        assert!(
            ban_value.abs_diff(value) <= NS_PER_SEC,
            "{ban_value} vs {value}"
        );
    }

    #[test]
    fn clock_conversions() {
        let clocks = Clocks {
            wall_ns: 1_000 * NS_PER_SEC + 400_000_000,
            mono_ns: 7 * NS_PER_SEC,
        };
        assert_eq!(clocks.wall_to_mono_ns(1_010), 16 * NS_PER_SEC + 600_000_000);
        assert_eq!(
            clocks.wall_to_mono_ns(900),
            clocks.mono_ns,
            "past saturates to now"
        );
        assert_eq!(
            clocks.mono_to_wall_secs(17 * NS_PER_SEC),
            1_011,
            "rounded up"
        );
        assert_eq!(clocks.mono_to_wall_secs(2 * NS_PER_SEC), 996);
        assert_eq!(
            Clocks {
                wall_ns: 3,
                mono_ns: 10 * NS_PER_SEC
            }
            .mono_to_wall_secs(0),
            0,
            "before the epoch saturates"
        );
        // A ban written to the file and read back never ends earlier.
        let banned_until_ns = 123 * NS_PER_SEC + 1;
        let back = clocks.wall_to_mono_ns(clocks.mono_to_wall_secs(banned_until_ns));
        assert!(back >= banned_until_ns && back - banned_until_ns < NS_PER_SEC);

        // The free functions agree with the real clocks within a second.
        let wall = now_wall_secs();
        let mono = monotonic_now_ns();
        let in_an_hour = wall_to_mono_ns(wall + 3_600);
        assert!(in_an_hour.abs_diff(mono + 3_600 * NS_PER_SEC) <= NS_PER_SEC);
        assert!(mono_to_wall_secs(mono + 60 * NS_PER_SEC).abs_diff(wall + 60) <= 1);
        assert!(wall_to_mono_ns(wall.saturating_sub(10)) >= mono);
    }
}
