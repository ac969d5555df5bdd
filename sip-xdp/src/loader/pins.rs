//! The pin directory on bpffs: which maps are pinned there (with the layout this build
//! expects of each), the per-interface links, and the flocks that keep two writers apart.
use std::{
    ffi::CString,
    fs::File,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::MapError;
use sip_xdp_common::map_names;
use thiserror::Error;

use super::AttachMode;

/// Where sip-xdp pins its maps and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sip-xdp";
/// Where bpffs is conventionally mounted; sip-xdp mounts it there when it is missing.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const LINK_PREFIX: &str = "link_";
/// Prefix of the egress program's pin on a kernel without TCX (before 6.6): the netlink filter
/// the program is attached by is no BPF object and cannot be pinned, so the program stands for
/// it (and lets `status` name it).
const NETLINK_PREFIX: &str = "netlink_";

#[derive(Debug, Error)]
pub enum PinError {
    #[error(
        "{path} is not on a BPF filesystem; mount one (`mount -t bpf bpf {BPFFS_MOUNT}`) or pass \
         --pin-dir under a bpffs mount"
    )]
    NotBpffs { path: PathBuf },
    #[error(
        "{path} is not on a BPF filesystem that outlives this command: this process runs in a \
         private mount namespace (`ip netns exec`, `unshare`) or a container without the \
         host's bpffs, and a bpffs mounted here would vanish when the command (or its \
         container) exits, taking the filter with it; nothing was attached. Make the host's \
         bpffs reachable (a container: `-v /sys/fs/bpf:/sys/fs/bpf`; `ip netns exec`: \
         `mount -t bpf bpf {BPFFS_MOUNT}` on the host, which sip-xdp then uses through \
         {init_root} or /proc/2/root), or pass --pin-dir on a bpffs that outlives the command",
        init_root = crate::namespaces::INIT_ROOT
    )]
    Vanishing { path: PathBuf },
    #[error("cannot mount bpffs at {BPFFS_MOUNT}: {source} (are you root?)")]
    Mount {
        #[source]
        source: std::io::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the pinned map {path} does not match this sip-xdp ({what}); it was left by another \
         version. Run `sip-xdp detach --all --purge` (this drops bans and counters; allow/deny \
         lists and manual bans are restored from the state file) and attach again"
    )]
    Incompatible { path: PathBuf, what: String },
    #[error("cannot read the pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error(
        "another sip-xdp daemon{pid} is already running with pin directory {path}; two daemons \
         must not manage one pinned program: stop it first (`systemctl stop sip-xdp`), or give \
         this one its own --pin-dir and --state-dir",
        pid = holder(*.pid)
    )]
    DaemonRunning { path: PathBuf, pid: Option<u32> },
    #[error(
        "the config lock {path} is still held after {waited:?} by another sip-xdp{pid} writing \
         the config; retry when it has finished",
        pid = holder(*.pid)
    )]
    ConfigLockTimeout {
        path: PathBuf,
        waited: Duration,
        pid: Option<u32>,
    },
}

fn holder(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// The subdirectory of a pin directory whose flock serialises config writes (bpffs holds no
/// regular files, but a directory can be locked like one; nor names with a dot).
pub const CONFIG_LOCK_DIR: &str = "config_lock";
/// How long a config write waits for another writer.
pub const CONFIG_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// A flock on a directory of the pin directory; dropping it releases the lock.
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: a valid descriptor owned by `file`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(false),
        _ => Err(err),
    }
}

/// The pid holding a flock on `path`, from /proc/locks (as this pid namespace sees it).
pub fn lock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"; waiters have "->" after the id.
        if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&wanted.as_str()) {
            return None;
        }
        fields.get(4)?.parse().ok()
    })
}

/// The bpffs directory holding sip-xdp's pinned maps and per-interface links.
#[derive(Clone, Debug)]
pub struct PinDir {
    path: PathBuf,
}

/// One interface sip-xdp's program is attached to, as recorded by its pinned link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedAttachment {
    pub iface: String,
    /// Which hook the linked program sits on.
    pub hook: Hook,
    /// XDP's attach mode (native or skb); `Auto` for a hook that has none.
    pub mode: AttachMode,
    pub path: PathBuf,
}

/// The kernel hook a sip-xdp program sits on; the name of its pinned link says which, so one
/// pin directory holds the links of every hook (`attachments` lists them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP on the interface's receive path: the filter. Links pinned as `link_<mode>_<iface>`.
    XdpIngress,
    /// TC on the transmit path (clsact egress): links pinned as `link_tc-egress_<iface>`.
    TcEgress,
}

impl Hook {
    /// The part of a link's pin name after `link_` and before `_<iface>`, for XDP its mode.
    const TC_EGRESS_TAG: &'static str = "tc-egress";

    pub const fn name(self) -> &'static str {
        match self {
            Hook::XdpIngress => "xdp",
            Hook::TcEgress => Self::TC_EGRESS_TAG,
        }
    }
}

/// How the egress program went on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressLink {
    /// A TCX link (Linux 6.6 and later), pinned.
    Tcx,
    /// A netlink filter on the clsact qdisc (older kernels); it lasts until removed.
    Netlink,
}

impl EgressLink {
    pub const fn name(self) -> &'static str {
        match self {
            EgressLink::Tcx => "tcx",
            EgressLink::Netlink => "netlink",
        }
    }
}

impl PinnedAttachment {
    /// How an egress attachment is kept, from its pin's name (meaningless for XDP).
    pub fn egress_link(&self) -> EgressLink {
        let netlink = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(NETLINK_PREFIX));
        if netlink {
            EgressLink::Netlink
        } else {
            EgressLink::Tcx
        }
    }
}

/// One pinned map's layout as this build's program declares it.
pub(super) struct Layout {
    pub(super) name: &'static str,
    pub(super) key_size: u32,
    pub(super) value_size: u32,
    /// Checked where the program indexes the map by constants (arrays).
    pub(super) max_entries: Option<u32>,
    /// Rebuilt at attach or migrated by [`PinDir::migrate_incompatible`] when it differs.
    pub(super) rebuildable: bool,
    /// False for the ring buffer of ban events, which has no key or value to compare.
    pub(super) checked: bool,
}

const fn layout<K, V>(name: &'static str, max_entries: Option<u32>, rebuildable: bool) -> Layout {
    Layout {
        name,
        key_size: size_of::<K>() as u32,
        value_size: size_of::<V>() as u32,
        max_entries,
        rebuildable,
        checked: true,
    }
}

/// A pinned ring buffer: its records are read and gone, so any layout is taken as it is.
const fn ring(name: &'static str) -> Layout {
    Layout {
        name,
        key_size: 0,
        value_size: 0,
        max_entries: None,
        rebuildable: true,
        checked: false,
    }
}

/// The maps whose contents must survive a program reload, a daemon restart and a detach:
/// config, per-source state and bans, lists, counters, fragment fates and queued ban events,
/// with their layouts as this build's program declares them. The per-CPU scratch maps are left
/// out on purpose: they hold nothing between packets.
pub(super) const PINNED: &[Layout] = &[
    layout::<u32, sip_xdp_common::Config>(map_names::CONFIG, Some(2), true),
    layout::<u32, u32>(map_names::ACTIVE_CONFIG, Some(1), true),
    layout::<sip_xdp_common::SourceKey, sip_xdp_common::SourceState>(
        map_names::SOURCES,
        None,
        true,
    ),
    layout::<[u8; 20], sip_xdp_common::AllowEntry>(map_names::ALLOWLIST, None, false),
    layout::<[u8; 20], sip_xdp_common::DenyEntry>(map_names::DENYLIST, None, false),
    layout::<u32, u64>(
        map_names::COUNTERS,
        Some(sip_xdp_common::COUNTER_SLOTS),
        true,
    ),
    layout::<sip_xdp_common::FragmentKey, sip_xdp_common::FragmentFate>(
        map_names::FRAGMENTS,
        None,
        true,
    ),
    ring(map_names::BAN_EVENTS),
    layout::<u32, u32>(
        map_names::LIST_PRESENCE,
        Some(sip_xdp_common::list_presence::SLOTS),
        true,
    ),
    layout::<sip_xdp_common::SourceKey, sip_xdp_common::DurableBan>(map_names::BANS, None, false),
    layout::<[u8; 20], sip_xdp_common::AllowEntry>(map_names::PROTECTED, None, false),
    // What the egress program learnt from the answers: lost on a layout change (clients verify
    // again with their next registration), never on a restart.
    layout::<sip_xdp_common::SourceKey, sip_xdp_common::VerifiedSource>(
        map_names::VERIFIED,
        None,
        true,
    ),
    layout::<sip_xdp_common::SourceKey, sip_xdp_common::AnswerState>(
        map_names::ANSWERS,
        None,
        true,
    ),
    layout::<sip_xdp_common::FlowKey, sip_xdp_common::FlowState>(map_names::FLOWS, None, true),
    layout::<u32, u64>(
        map_names::GLOBAL_BUCKETS,
        Some(sip_xdp_common::global_buckets::SLOTS),
        true,
    ),
    // The prefix buckets are rebuilt from PREFIX_BANS (bans and strikes) at a prefix's next
    // packet, so a layout change loses nothing that matters; the ban records are kept like
    // BANS. An older pin set without them gets both created by the next load.
    layout::<sip_xdp_common::PrefixKey, sip_xdp_common::SourceState>(
        map_names::PREFIXES,
        None,
        true,
    ),
    layout::<sip_xdp_common::PrefixKey, sip_xdp_common::DurableBan>(
        map_names::PREFIX_BANS,
        None,
        false,
    ),
    // Rewritten from the config and the state file's runtime edits at every attach.
    layout::<sip_xdp_common::SignatureKey, sip_xdp_common::SignatureEntry>(
        map_names::SIGNATURES,
        None,
        true,
    ),
    // Pinned so that the kernel keeps the scan program in it when no process holds it (it
    // empties a program array whose last user reference goes); filled at every load.
    layout::<u32, u32>(map_names::SCANNERS, Some(1), true),
    // `sip-xdp trace`'s sources and events: pinned so the command reaches them from another
    // process than the one that attached.
    layout::<[u8; 20], u32>(map_names::TRACED, None, true),
    ring(map_names::TRACE_EVENTS),
];

/// The names of `PINNED`, in its order: the maps a load pins and a purge removes.
pub const PINNED_MAPS: &[&str] = &pinned_names::<{ PINNED.len() }>();

const fn pinned_names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = PINNED[i].name;
        i += 1;
    }
    names
}

pub(super) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PinError {
    let path = path.to_owned();
    move |source| PinError::Io {
        action,
        path,
        source,
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out value; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    rc == 0 && buf.f_type as i64 == BPF_FS_MAGIC
}

impl PinDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Where the link of `hook` on `iface` is pinned (`mode`: XDP's attach mode; ignored for
    /// other hooks).
    pub fn link_path(&self, hook: Hook, iface: &str, mode: AttachMode) -> PathBuf {
        let tag = match hook {
            Hook::XdpIngress => mode.name(),
            Hook::TcEgress => Hook::TC_EGRESS_TAG,
        };
        self.path.join(format!("{LINK_PREFIX}{tag}_{iface}"))
    }

    /// Where the egress program stands for its netlink filter on `iface` (kernels before 6.6).
    pub fn netlink_egress_path(&self, iface: &str) -> PathBuf {
        self.path
            .join(format!("{NETLINK_PREFIX}{}_{iface}", Hook::TC_EGRESS_TAG))
    }

    /// The egress program's attachment to `iface`, if pinned.
    pub fn egress_attachment(&self, iface: &str) -> Result<Option<PinnedAttachment>, PinError> {
        Ok(self
            .attachments()?
            .into_iter()
            .find(|a| a.iface == iface && a.hook == Hook::TcEgress))
    }

    /// Whether the maps are pinned, i.e. sip-xdp state exists on this host.
    pub fn has_maps(&self) -> bool {
        PINNED_MAPS.iter().all(|name| self.map_path(name).exists())
    }

    /// Makes sure the directory exists on a bpffs, mounting bpffs at /sys/fs/bpf when the pin
    /// directory lives there and nothing is mounted (a minimal host), but only in the host's
    /// mount namespace: elsewhere (`ip netns exec`, a container) the mount, the pins
    /// and so the attachment would vanish with the command or the container, and this refuses
    /// instead ([`PinError::Vanishing`];
    /// see [`reachable_pin_dir`] for how the host's bpffs is found from there).
    pub fn ensure(&self) -> Result<(), PinError> {
        let lasting_mount_ns = crate::namespaces::mounts_outlive_command();
        if self.path.exists() {
            return if is_bpffs(&self.path) {
                Ok(())
            } else {
                Err(PinError::NotBpffs {
                    path: self.path.clone(),
                })
            };
        }
        let mount = Path::new(BPFFS_MOUNT);
        if self.path.starts_with(mount) && !is_bpffs(mount) {
            if !lasting_mount_ns {
                return Err(PinError::Vanishing {
                    path: self.path.clone(),
                });
            }
            let source = CString::new("bpf").expect("no NUL");
            let target = CString::new(BPFFS_MOUNT).expect("no NUL");
            let options = CString::new("mode=0700").expect("no NUL");
            // SAFETY: NUL-terminated strings; the kernel copies them.
            let rc = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    source.as_ptr(),
                    0,
                    options.as_ptr().cast(),
                )
            };
            if rc != 0 {
                return Err(PinError::Mount {
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) {
            let path = self.path.clone();
            return Err(if lasting_mount_ns {
                PinError::NotBpffs { path }
            } else {
                PinError::Vanishing { path }
            });
        }
        std::fs::create_dir_all(&self.path).map_err(io_err("cannot create", &self.path))
    }

    /// The interfaces with a pinned sip-xdp link.
    pub fn attachments(&self) -> Result<Vec<PinnedAttachment>, PinError> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("cannot list", &self.path)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("cannot list", &self.path))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if let Some(iface) = name
                .strip_prefix(NETLINK_PREFIX)
                .and_then(|rest| rest.strip_prefix(Hook::TC_EGRESS_TAG))
                .and_then(|rest| rest.strip_prefix('_'))
            {
                found.push(PinnedAttachment {
                    iface: iface.to_owned(),
                    hook: Hook::TcEgress,
                    mode: AttachMode::Auto,
                    path: entry.path(),
                });
                continue;
            }
            let Some(rest) = name.strip_prefix(LINK_PREFIX) else {
                continue;
            };
            let Some((tag, iface)) = rest.split_once('_') else {
                continue;
            };
            let (hook, mode) = if tag == Hook::TC_EGRESS_TAG {
                (Hook::TcEgress, AttachMode::Auto)
            } else {
                match AttachMode::from_name(tag) {
                    Some(mode) => (Hook::XdpIngress, mode),
                    None => continue,
                }
            };
            found.push(PinnedAttachment {
                iface: iface.to_owned(),
                hook,
                mode,
                path: entry.path(),
            });
        }
        // The filter before its egress companion on each interface.
        found.sort_by_key(|a| (a.iface.clone(), a.hook == Hook::TcEgress));
        Ok(found)
    }

    /// The XDP filter's attachment to `iface`, if pinned.
    pub fn attachment(&self, iface: &str) -> Result<Option<PinnedAttachment>, PinError> {
        Ok(self
            .attachments()?
            .into_iter()
            .find(|a| a.iface == iface && a.hook == Hook::XdpIngress))
    }

    /// Removes every pinned map (not the links; detach those first). Used by `--purge`.
    pub fn remove_maps(&self) -> Result<Vec<&'static str>, PinError> {
        let mut removed = Vec::new();
        for &name in PINNED_MAPS {
            let path = self.map_path(name);
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("cannot remove", &path)(e)),
            }
        }
        Ok(removed)
    }

    /// Removes the directory when nothing is left in it (but its config lock).
    pub fn remove_if_empty(&self) {
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        let lock = self.path.join(CONFIG_LOCK_DIR);
        if std::fs::remove_dir(&lock).is_ok() && std::fs::remove_dir(&self.path).is_err() {
            // Something else is in there after all: keep the lock where writers expect it.
            let _ = std::fs::create_dir(&lock);
        }
    }

    /// Taken by `sip-xdp run` for its whole life (a flock on the pin directory itself): one
    /// daemon per pinned program, whatever state directories they were given. Fails at once,
    /// naming the other daemon's pid, when one holds it.
    pub fn lock_daemon(&self) -> Result<PinLock, PinError> {
        let dir = File::open(&self.path).map_err(io_err("cannot open", &self.path))?;
        match try_flock(&dir) {
            Ok(true) => Ok(PinLock { _dir: dir }),
            Ok(false) => Err(PinError::DaemonRunning {
                path: self.path.clone(),
                pid: lock_holder(&self.path),
            }),
            Err(e) => Err(io_err("cannot lock", &self.path)(e)),
        }
    }

    /// Held around every config write (the idle CONFIG slot, then the ACTIVE_CONFIG flip), by
    /// `attach`, `run` and a reload alike, so two writers never take the same idle slot and one
    /// of them rewrites the slot the program is reading. Waits up to [`CONFIG_LOCK_TIMEOUT`].
    pub fn lock_config(&self) -> Result<PinLock, PinError> {
        self.lock_config_with_timeout(CONFIG_LOCK_TIMEOUT)
    }

    pub fn lock_config_with_timeout(&self, timeout: Duration) -> Result<PinLock, PinError> {
        let path = self.path.join(CONFIG_LOCK_DIR);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot create", &path)(e)),
        }
        let dir = File::open(&path).map_err(io_err("cannot open", &path))?;
        let started = Instant::now();
        loop {
            if try_flock(&dir).map_err(io_err("cannot lock", &path))? {
                return Ok(PinLock { _dir: dir });
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(PinError::ConfigLockTimeout {
                    pid: lock_holder(&path),
                    path,
                    waited,
                });
            }
            std::thread::sleep(Duration::from_millis(20).min(timeout - waited));
        }
    }
}

/// Whether `path`, or the nearest of its ancestors that exists, is on a bpffs.
fn on_bpffs(path: &Path) -> bool {
    let mut at = path;
    loop {
        if at.exists() {
            return is_bpffs(at);
        }
        match at.parent() {
            Some(parent) => at = parent,
            None => return false,
        }
    }
}

/// The pin directory as this process must use it. Normally `path` itself. In a private mount
/// namespace without a bpffs at `path` (`ip netns exec`, which remounts /sys, or `unshare`),
/// the same path in PID 1's view (`/proc/1/root/<path>`) when that is on a bpffs: the host's
/// bpffs, where pins outlive the command, and where every later command (from any mount
/// namespace) finds them.
pub fn reachable_pin_dir(path: &Path) -> PathBuf {
    if on_bpffs(path) || crate::namespaces::same_as_init("mnt") != Some(false) {
        return path.to_owned();
    }
    match crate::namespaces::in_init_root(path) {
        Some(there) if on_bpffs(&there) => there,
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_their_hook() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinDir::new(dir.path());
        let xdp = pins.link_path(Hook::XdpIngress, "eth0", AttachMode::Native);
        let tc = pins.link_path(Hook::TcEgress, "eth0", AttachMode::Auto);
        assert!(xdp.ends_with("link_native_eth0"), "{xdp:?}");
        assert!(tc.ends_with("link_tc-egress_eth0"), "{tc:?}");
        for path in [&xdp, &tc, &dir.path().join("link_bogus_eth1")] {
            std::fs::write(path, b"").unwrap();
        }
        let mut found: Vec<(String, Hook, AttachMode)> = pins
            .attachments()
            .unwrap()
            .into_iter()
            .map(|a| (a.iface, a.hook, a.mode))
            .collect();
        found.sort_by_key(|(_, hook, _)| hook.name());
        assert_eq!(
            found,
            [
                ("eth0".to_owned(), Hook::TcEgress, AttachMode::Auto),
                ("eth0".to_owned(), Hook::XdpIngress, AttachMode::Native),
            ]
        );
        // The filter's attachment is the XDP one.
        assert_eq!(
            pins.attachment("eth0").unwrap().unwrap().hook,
            Hook::XdpIngress
        );
    }

    #[test]
    fn the_pin_list_is_the_layout_table() {
        assert_eq!(PINNED_MAPS.len(), PINNED.len());
        for (name, layout) in PINNED_MAPS.iter().zip(PINNED) {
            assert_eq!(*name, layout.name);
        }
        let mut names = PINNED_MAPS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PINNED_MAPS.len(), "a map is pinned twice");
        // Only the ring buffers go unchecked: every other map is compared at each load.
        let unchecked: Vec<&str> = PINNED
            .iter()
            .filter(|layout| !layout.checked)
            .map(|layout| layout.name)
            .collect();
        assert_eq!(unchecked, [map_names::BAN_EVENTS, map_names::TRACE_EVENTS]);
    }
}
