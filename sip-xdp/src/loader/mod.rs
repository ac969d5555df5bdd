//! Loads the embedded XDP object into the kernel.
use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapError, MapInfo},
    programs::{
        ProgramError, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use sip_xdp_common::{DEFAULT_MAX_SOURCES, PROGRAM_NAME, map_names};
use thiserror::Error;

/// The XDP program, built from `sip-xdp-ebpf` by build.rs. Empty when the eBPF toolchain was
/// missing at build time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-xdp-ebpf"));

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error(
        "this sip-xdp binary was built without its XDP program (the eBPF toolchain was missing at \
         build time); run scripts/setup-toolchain.sh as root, then rebuild"
    )]
    NoObject,
    #[error(
        "cannot load the sip-xdp eBPF object: {0} (are you root, or do you have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Object(#[from] aya::EbpfError),
    #[error(
        "the kernel rejected the sip-xdp XDP program: {0} (tested on Linux 6.1, 6.12 and 6.18 with XDP; `sip-xdp check` prints the verifier log)"
    )]
    Program(#[from] ProgramError),
    #[error("the sip-xdp eBPF object has no program named {PROGRAM_NAME}; rebuild sip-xdp")]
    MissingProgram,
    #[error("max_sources must be between 1 and {max}, got {got}")]
    BadMaxSources { got: u32, max: u32 },
}

/// What can be chosen before the program is loaded (map sizes are fixed at creation).
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Capacity of the per-source LRU map; the least recently seen source is evicted past it.
    pub max_sources: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

pub use sip_xdp_common::MAX_SOURCES_LIMIT;

impl LoadOptions {
    /// What every load checks before it touches the kernel: the object is embedded and the
    /// options are in range.
    fn check(&self) -> Result<(), LoaderError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoaderError::NoObject);
        }
        if self.max_sources == 0 || self.max_sources > MAX_SOURCES_LIMIT {
            return Err(LoaderError::BadMaxSources {
                got: self.max_sources,
                max: MAX_SOURCES_LIMIT,
            });
        }
        Ok(())
    }

    /// A loader for the embedded object with these options applied.
    fn loader<'a>(&self) -> EbpfLoader<'a> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map_names::SOURCES, self.max_sources);
        loader
    }
}

/// Loads the object and the XDP program into the kernel (running the verifier), unattached.
pub fn load(options: &LoadOptions) -> Result<Ebpf, LoaderError> {
    options.check()?;
    load_with(options.loader())
}

/// Loads the embedded object with `loader`, then the XDP program (running the verifier).
fn load_with(mut loader: EbpfLoader<'_>) -> Result<Ebpf, LoaderError> {
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    xdp_program(&mut ebpf)?.load()?;
    Ok(ebpf)
}

/// The sip-xdp XDP program inside a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(LoaderError::MissingProgram)?;
    Ok(program.try_into()?)
}

/// How to attach: native (driver) XDP, generic (skb) XDP, or native falling back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

#[derive(Debug, Error)]
pub enum AttachError {
    #[error("network interface {0} does not exist in this network namespace (see `ip link`)")]
    NoSuchInterface(String),
    #[error(
        "{iface} already has an XDP program that this sip-xdp did not attach (another tool, or \
         a sip-xdp with another --pin-dir); see `ip link show dev {iface}`, and remove it with \
         `ip link set dev {iface} xdp off` if it is not needed"
    )]
    Busy { iface: String },
    #[error("cannot attach XDP to {iface} in {mode} mode: {source}{hint}", hint = mode_hint(*.mode))]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error(
        "sip-xdp is already attached to {iface} in {existing} mode; run `sip-xdp detach --iface \
         {iface}` first to switch to {requested}"
    )]
    ModeMismatch {
        iface: String,
        existing: AttachMode,
        requested: AttachMode,
    },
    #[error(
        "the pinned link {path} is not a usable XDP link ({source}); remove it with `rm {path}` \
         and attach again"
    )]
    StaleLink {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error(
        "the kernel attached XDP to {iface} without a BPF link, which cannot be pinned; sip-xdp \
         needs Linux 5.9 or newer for daemonless operation"
    )]
    NoLinkSupport { iface: String },
    #[error("cannot pin the XDP link at {path}: {source}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("cannot detach sip-xdp from {iface}: {source}")]
    Detach {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pin(PinError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

fn mode_hint(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Native => {
            " (the driver may not support native XDP; try --mode skb or --mode auto)"
        }
        _ => "",
    }
}

fn is_busy(error: &ProgramError) -> bool {
    matches!(error, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EBUSY))
}

/// Attaches the loaded program to `iface` (a link owned by `ebpf`). Returns the mode that took
/// effect: Auto tries native first and falls back to generic (skb) XDP.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
) -> Result<(XdpLinkId, AttachMode), AttachError> {
    use aya::programs::XdpMode;
    // Resolved in the caller's network namespace (unlike /sys/class/net, which shows the
    // namespace sysfs was mounted in).
    if_index(iface)?;
    let program = xdp_program(ebpf)?;
    let attached = match mode {
        AttachMode::Native => program.attach(iface, XdpMode::Driver).map(|id| (id, mode)),
        AttachMode::Skb => program.attach(iface, XdpMode::Skb).map(|id| (id, mode)),
        AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
            Ok(id) => Ok((id, AttachMode::Native)),
            // Another program on the interface refuses both modes alike: say so, not "skb failed".
            Err(e) if is_busy(&e) => Err(e),
            Err(_) => program
                .attach(iface, XdpMode::Skb)
                .map(|id| (id, AttachMode::Skb)),
        },
    };
    attached.map_err(|source| {
        if is_busy(&source) {
            AttachError::Busy {
                iface: iface.to_owned(),
            }
        } else {
            AttachError::Attach {
                iface: iface.to_owned(),
                mode,
                source,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Pinned operation: program state that outlives the process.
// ---------------------------------------------------------------------------------------------

/// Where sip-xdp pins its maps and links unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sip-xdp";
/// Where bpffs is conventionally mounted; sip-xdp mounts it there when it is missing.
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const LINK_PREFIX: &str = "link_";

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
    pub mode: AttachMode,
    pub path: PathBuf,
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "native" => Some(AttachMode::Native),
            "skb" => Some(AttachMode::Skb),
            "auto" => Some(AttachMode::Auto),
            _ => None,
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttachMode::from_name(s)
            .ok_or_else(|| format!("unknown XDP mode {s:?}: use auto, native or skb"))
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PinError {
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

    pub fn link_path(&self, iface: &str, mode: AttachMode) -> PathBuf {
        self.path
            .join(format!("{LINK_PREFIX}{}_{iface}", mode.name()))
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
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(LINK_PREFIX)) else {
                continue;
            };
            let Some((mode, iface)) = rest.split_once('_') else {
                continue;
            };
            let Some(mode) = AttachMode::from_name(mode) else {
                continue;
            };
            found.push(PinnedAttachment {
                iface: iface.to_owned(),
                mode,
                path: entry.path(),
            });
        }
        found.sort_by(|a, b| a.iface.cmp(&b.iface));
        Ok(found)
    }

    pub fn attachment(&self, iface: &str) -> Result<Option<PinnedAttachment>, PinError> {
        Ok(self.attachments()?.into_iter().find(|a| a.iface == iface))
    }

    /// Checks that maps pinned by an earlier run have the layout this binary's program expects,
    /// so a program never runs against maps whose values it would misread. A map whose contents
    /// are rebuilt at every attach (config, counters, presence flags, fragment fates) or carried
    /// over here (the bans of an older source table) is unpinned, to be created anew; the lists
    /// must match.
    fn migrate_incompatible(&self) -> Result<Migration, PinError> {
        let mut migration = Migration::default();
        for layout in PINNED.iter().filter(|layout| layout.checked) {
            let path = self.map_path(layout.name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|source| PinError::Map {
                path: path.clone(),
                source,
            })?;
            let entries_differ = layout
                .max_entries
                .is_some_and(|max| info.max_entries() != max);
            if info.key_size() == layout.key_size
                && info.value_size() == layout.value_size
                && !entries_differ
            {
                continue;
            }
            let what = format!(
                "key/value size {}/{} and {} entries, expected {}/{}",
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                layout.key_size,
                layout.value_size
            );
            if !layout.rebuildable {
                return Err(PinError::Incompatible { path, what });
            }
            if layout.name == map_names::SOURCES {
                migration.bans =
                    read_v1_bans(&path, info.value_size()).map_err(|source| PinError::Map {
                        path: path.clone(),
                        source,
                    })?;
            }
            std::fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
            migration.replaced.push(layout.name);
        }
        Ok(migration)
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

/// One pinned map's layout as this build's program declares it.
struct Layout {
    name: &'static str,
    key_size: u32,
    value_size: u32,
    /// Checked where the program indexes the map by constants (arrays).
    max_entries: Option<u32>,
    /// Rebuilt at attach or migrated by [`PinDir::migrate_incompatible`] when it differs.
    rebuildable: bool,
    /// False for the ring buffer of ban events, which has no key or value to compare.
    checked: bool,
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
const PINNED: &[Layout] = &[
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
    layout::<sip_xdp_common::SourceKey, sip_xdp_common::BanRecord>(map_names::BANS, None, false),
    layout::<[u8; 20], sip_xdp_common::AllowEntry>(map_names::PROTECTED, None, false),
];

/// The names of [`PINNED`], in its order: the maps a load pins and a purge removes.
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

/// What [`PinDir::migrate_incompatible`] carried over from maps pinned by an older build.
#[derive(Debug, Default)]
pub struct Migration {
    /// Maps unpinned because their layout changed; the load creates them anew.
    pub replaced: Vec<&'static str>,
    /// Bans (with strikes) read out of an older source table, for the new `BANS` table.
    pub bans: Vec<(sip_xdp_common::SourceKey, sip_xdp_common::BanRecord)>,
}

/// Value size of `SourceState` in sip-xdp 0.1 (four buckets), whose bans a new build keeps.
const SOURCE_STATE_V1_SIZE: u32 = 88;

/// The bans and strike histories of a sip-xdp 0.1 source table (`SourceState` with four
/// buckets: `tat_ns[4]`, then `banned_until_ns`, `ban_duration_ns` at bytes 32 and 40,
/// `strikes` at 76, `ban_class` at 80, `ban_flags` at 81). Any other layout carries nothing.
fn read_v1_bans(
    path: &Path,
    value_size: u32,
) -> Result<Vec<(sip_xdp_common::SourceKey, sip_xdp_common::BanRecord)>, MapError> {
    if value_size != SOURCE_STATE_V1_SIZE {
        return Ok(Vec::new());
    }
    let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(path)?)?;
    let table: aya::maps::HashMap<_, sip_xdp_common::SourceKey, [u8; 88]> =
        aya::maps::HashMap::try_from(map)?;
    let u64_at = |v: &[u8; 88], at: usize| u64::from_ne_bytes(v[at..at + 8].try_into().unwrap());
    let mut bans = Vec::new();
    for entry in table.iter() {
        let (key, v) = entry?;
        let banned_until_ns = u64_at(&v, 32);
        if banned_until_ns == 0 {
            continue;
        }
        bans.push((
            key,
            sip_xdp_common::BanRecord {
                banned_until_ns,
                ban_duration_ns: u64_at(&v, 40),
                strikes: u32::from_ne_bytes(v[76..80].try_into().unwrap()),
                ban_class: v[80],
                ban_flags: v[81],
                _pad: [0; 2],
            },
        ));
    }
    Ok(bans)
}

/// A program loaded against the pinned maps.
pub struct PinnedLoad {
    pub ebpf: Ebpf,
    /// True when the maps already existed: counters, bans and lists carried over.
    pub adopted_maps: bool,
    /// What was carried over from maps an older build pinned.
    pub migration: Migration,
    /// True when this load created the ban table: saved automatic bans go back into it.
    pub created_bans: bool,
    created_pins: Vec<PathBuf>,
}

impl PinnedLoad {
    /// Undoes what this load created (pins of maps that did not exist before), so a failed
    /// attach leaves the host as it found it.
    pub fn rollback(self, pins: &PinDir) {
        for path in &self.created_pins {
            let _ = std::fs::remove_file(path);
        }
        pins.remove_if_empty();
    }
}

#[derive(Debug, Error)]
pub enum PinnedLoadError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// Loads the program so that it uses the maps pinned in `pins`, creating and pinning any that
/// are missing. A program loaded this way shares counters, bans and lists with every earlier
/// and later load against the same directory.
pub fn load_pinned(options: &LoadOptions, pins: &PinDir) -> Result<PinnedLoad, PinnedLoadError> {
    options.check()?;
    pins.ensure()?;
    let migration = pins.migrate_incompatible()?;
    let created_bans = !pins.map_path(map_names::BANS).exists();
    let adopted_maps =
        pins.map_path(map_names::SOURCES).exists() && pins.map_path(map_names::ALLOWLIST).exists();
    let created_pins: Vec<PathBuf> = PINNED_MAPS
        .iter()
        .map(|name| pins.map_path(name))
        .filter(|path| !path.exists())
        .collect();
    let paths: Vec<(&str, PathBuf)> = PINNED_MAPS
        .iter()
        .map(|&name| (name, pins.map_path(name)))
        .collect();
    let mut loader = options.loader();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    match load_with(loader) {
        Ok(ebpf) => Ok(PinnedLoad {
            ebpf,
            adopted_maps,
            migration,
            created_bans,
            created_pins,
        }),
        Err(e) => {
            for path in &created_pins {
                let _ = std::fs::remove_file(path);
            }
            pins.remove_if_empty();
            Err(e.into())
        }
    }
}

/// What `attach_pinned` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachOutcome {
    /// The mode in effect (never Auto).
    pub mode: AttachMode,
    /// True when the interface already had a sip-xdp link whose program was replaced in place
    /// (no moment without filtering); false for a new attachment.
    pub replaced: bool,
    /// True when Auto fell back to generic (skb) XDP because the driver refused native mode.
    pub fell_back: bool,
}

/// Attaches `ebpf`'s program to `iface` through a link pinned in `pins`, so it stays attached
/// after this process exits. An interface that already has a sip-xdp link gets the new program
/// atomically (`bpf_link_update`).
pub fn attach_pinned(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    iface: &str,
    mode: AttachMode,
) -> Result<AttachOutcome, AttachError> {
    if_index(iface)?;
    if let Some(existing) = pins.attachment(iface).map_err(AttachError::Pin)? {
        if mode != AttachMode::Auto && mode != existing.mode {
            return Err(AttachError::ModeMismatch {
                iface: iface.to_owned(),
                existing: existing.mode,
                requested: mode,
            });
        }
        let pinned =
            PinnedLink::from_pin(&existing.path).map_err(|source| AttachError::StaleLink {
                path: existing.path.clone(),
                source,
            })?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|source| AttachError::StaleLink {
                path: existing.path.clone(),
                source,
            })?;
        let program = xdp_program(ebpf)?;
        let id = program
            .attach_to_link(link)
            .map_err(|source| AttachError::Attach {
                iface: iface.to_owned(),
                mode: existing.mode,
                source,
            })?;
        // The pin keeps the link; this process's handle goes when the program is dropped.
        let _ = program.take_link(id);
        return Ok(AttachOutcome {
            mode: existing.mode,
            replaced: true,
            fell_back: false,
        });
    }
    let (id, effective) = attach(ebpf, iface, mode)?;
    let program = xdp_program(ebpf)?;
    let link = program
        .take_link(id)
        .map_err(|source| AttachError::Attach {
            iface: iface.to_owned(),
            mode,
            source,
        })?;
    let fd_link = FdLink::try_from(link).map_err(|_| AttachError::NoLinkSupport {
        iface: iface.to_owned(),
    })?;
    let path = pins.link_path(iface, effective);
    fd_link.pin(&path).map_err(|source| AttachError::PinLink {
        path: path.clone(),
        source,
    })?;
    Ok(AttachOutcome {
        mode: effective,
        replaced: false,
        fell_back: mode == AttachMode::Auto && effective == AttachMode::Skb,
    })
}

/// Detaches sip-xdp from `iface`: the link is detached in the kernel (even if some process
/// still holds it open) and its pin removed. Returns false when it was not attached.
pub fn detach_pinned(pins: &PinDir, iface: &str) -> Result<bool, AttachError> {
    let Some(existing) = pins.attachment(iface).map_err(AttachError::Pin)? else {
        return Ok(false);
    };
    if let Ok(fd) = obj_get(&existing.path) {
        link_detach(fd.as_fd()).map_err(|source| AttachError::Detach {
            iface: iface.to_owned(),
            source,
        })?;
    }
    std::fs::remove_file(&existing.path)
        .map_err(|e| AttachError::Pin(io_err("cannot remove", &existing.path)(e)))?;
    Ok(true)
}

/// Program id and link id of a pinned attachment, for status output.
pub fn attachment_ids(attachment: &PinnedAttachment) -> Option<(u32, u32)> {
    let pinned = PinnedLink::from_pin(&attachment.path).ok()?;
    let info = FdLink::from(pinned).info().ok()?;
    Some((info.program_id(), info.id()))
}

/// The index of `iface` in the caller's network namespace (unlike /sys/class/net, which shows
/// the namespace sysfs was mounted in).
pub fn if_index(iface: &str) -> Result<u32, AttachError> {
    let name = CString::new(iface).map_err(|_| AttachError::NoSuchInterface(iface.to_owned()))?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(AttachError::NoSuchInterface(iface.to_owned())),
        index => Ok(index),
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, zero-padded union bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of_val(attr) as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// BPF_OBJ_GET: opens a pinned object (aya's link types keep their descriptor private).
fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // obj_pin/obj_get form: { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; }
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_LINK_DETACH: ends the attachment now, whoever else holds the link.
fn link_detach(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    const BPF_LINK_DETACH: libc::c_long = 34;
    // union bpf_attr, link_detach form: { __u32 link_fd; }; the rest must be zero.
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u32 as u64;
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}
