//! Where this process runs compared with PID 1: its mount namespace (is the bpffs it sees the
//! one that outlives the command?) and its network namespace (whose interfaces, and so whose
//! default pin and state directories?).
//!
//! `ip netns exec NS cmd` gives `cmd` a private mount namespace with a fresh sysfs on /sys and
//! so no bpffs on /sys/fs/bpf; anything mounted or pinned there goes when `cmd` exits. PID 1's
//! view of the file system stays reachable as /proc/1/root, and its bpffs is where pins must go
//! for the filter to stay. Two network namespaces may each have an `eth0`, so outside PID 1's
//! network namespace the default directories carry the namespace's name.
//!
//! "PID 1" is PID 1 where this process may look at it; where PID 1 hides its /proc entries
//! (a sandbox's init), kthreadd (PID 2), which always runs in the initial namespaces.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// PID 1's root directory, as this process can reach it (for messages; see [`init_root`]).
pub const INIT_ROOT: &str = "/proc/1/root";

/// The process whose namespaces count as the host's: PID 1, or kthreadd where PID 1's
/// namespaces cannot be read.
fn init_pid() -> Option<u32> {
    [1, 2]
        .into_iter()
        .find(|pid| std::fs::metadata(format!("/proc/{pid}/ns/mnt")).is_ok())
}

/// The host's root directory as this process reaches it: `/proc/<init>/root`.
pub fn init_root() -> Option<PathBuf> {
    init_pid().map(|pid| PathBuf::from(format!("/proc/{pid}/root")))
}
/// Where `ip netns add` keeps its named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

fn ns_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether this process shares namespace `kind` ("mnt", "net") with PID 1; None when that
/// cannot be told (no /proc, or no permission to look at PID 1).
pub fn same_as_init(kind: &str) -> Option<bool> {
    let mine = ns_id(&Path::new("/proc/self/ns").join(kind))?;
    let init = ns_id(&Path::new(&format!("/proc/{}/ns", init_pid()?)).join(kind))?;
    Some(mine == init)
}

/// Whether a file system mounted now outlives this command: only in the host's mount namespace,
/// i.e. PID 1's, and only when that PID 1 is the host's init (this is the initial PID namespace,
/// where PID 2 is kthreadd). A container's PID 1 (`docker run ... sip-xdp attach` is one) takes
/// its mount namespace with it when it exits, and `ip netns exec` or `unshare` give a private
/// one.
pub fn mounts_outlive_command() -> bool {
    let initial_pid_ns = std::fs::read_to_string("/proc/2/comm")
        .is_ok_and(|c| c.trim() == "kthreadd")
        && std::process::id() != 1;
    initial_pid_ns && same_as_init("mnt") == Some(true)
}

/// The name `ip netns` knows this process's network namespace by, if any.
pub fn netns_name() -> Option<String> {
    let mine = ns_id(Path::new("/proc/self/ns/net"))?;
    std::fs::read_dir(NETNS_RUN_DIR)
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| ns_id(&entry.path()) == Some(mine))
        .and_then(|entry| entry.file_name().into_string().ok())
}

/// A label for this process's network namespace when it is not PID 1's: its `ip netns` name,
/// else `ino<inode>`. None in PID 1's network namespace (or when that cannot be told), where
/// the plain default directories apply.
pub fn netns_label() -> Option<String> {
    if same_as_init("net") != Some(false) {
        return None;
    }
    netns_name()
        .filter(|name| !name.is_empty() && !name.contains('.') && !name.contains('/'))
        .or_else(|| {
            let (_, ino) = ns_id(Path::new("/proc/self/ns/net"))?;
            Some(format!("ino{ino}"))
        })
}

/// The default pin directory for network namespace `label`: `/sys/fs/bpf/sip-xdp-netns-<label>`
/// (a sibling of the plain default, like a `sip-xdp@IFACE` instance's).
pub fn netns_pin_dir(default: &Path, label: &str) -> PathBuf {
    let name = default
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sip-xdp".to_owned());
    default.with_file_name(format!("{name}-netns-{label}"))
}

/// The default state directory for network namespace `label`: `/var/lib/sip-xdp/netns-<label>`
/// (where the package's scripts look for an instance's state).
pub fn netns_state_dir(default: &Path, label: &str) -> PathBuf {
    default.join(format!("netns-{label}"))
}

/// `path` as PID 1 sees it, reached from here (`/proc/1/root/<path>`).
pub fn in_init_root(path: &Path) -> Option<PathBuf> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    Some(init_root()?.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_netns_defaults_and_paths() {
        assert_eq!(
            netns_pin_dir(Path::new("/sys/fs/bpf/sip-xdp"), "blue"),
            Path::new("/sys/fs/bpf/sip-xdp-netns-blue")
        );
        assert_eq!(
            netns_state_dir(Path::new("/var/lib/sip-xdp"), "ino4026532000"),
            Path::new("/var/lib/sip-xdp/netns-ino4026532000")
        );
        if let Some(root) = init_root() {
            assert_eq!(
                in_init_root(Path::new("/sys/fs/bpf/sip-xdp")),
                Some(root.join("sys/fs/bpf/sip-xdp"))
            );
        }
        // The test runs where PID 1 runs (or it cannot tell): the plain defaults.
        if same_as_init("net") == Some(true) {
            assert_eq!(netns_label(), None);
        }
    }
}
