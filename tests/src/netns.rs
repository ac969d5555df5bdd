//! Two network namespaces joined by a veth pair, for end-to-end tests that attach the real XDP
//! program to a real interface and send real datagrams through it.
//!
//! Layout (documentation ranges only, nothing routed off the machine, no default route):
//!
//! ```text
//!   client netns  sxdp-cli-<pid>-<n>            server netns  sxdp-srv-<pid>-<n>
//!   [CLIENT_IF] 198.51.100.10/24 (A)  <-veth->  [SERVER_IF] 203.0.113.1/24
//!               198.51.100.11/24 (B)                        2001:db8:cb00:7100::1/64
//!               2001:db8:c633:6400::10/64 (A)
//!               2001:db8:c633:6400::11/64 (B)
//! ```
//!
//! Each side has one on-link route to the other side's prefix and permanent neighbour entries
//! for the other side's addresses, so no ARP or neighbour discovery races the first datagrams
//! of a test. The client's routes name address A as the preferred source, so a plain
//! `TcpStream::connect` comes from A; bind a UDP socket to A or B to choose.
//!
//! Everything is removed on drop ([`Netns`] deletes its namespace, which takes the veth with
//! it), including when a test panics. Namespace names carry the process id and a per-process
//! counter, so tests running in parallel threads (or processes) never collide.
use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

/// Where `ip netns add` keeps its namespace handles.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Prefix of every namespace this module creates.
pub const NAME_PREFIX: &str = "sxdp-";

/// The server side's interface (inside the server namespace; the XDP program goes here).
pub const SERVER_IF: &str = "sxdp-srv";
/// The client side's interface (inside the client namespace).
pub const CLIENT_IF: &str = "sxdp-cli";
pub const SERVER_MAC: &str = "02:53:58:44:50:01";
pub const CLIENT_MAC: &str = "02:53:58:44:50:02";

pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Client source A: the preferred source of the client's routes.
pub const CLIENT_V4_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// Client source B: a secondary address on the same interface.
pub const CLIENT_V4_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xcb00, 0x7100, 0, 0, 0, 1);
pub const CLIENT_V6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc633, 0x6400, 0, 0, 0, 0x10);
pub const CLIENT_V6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc633, 0x6400, 0, 0, 0, 0x11);
const SERVER_V4_NET: &str = "203.0.113.0/24";
const CLIENT_V4_NET: &str = "198.51.100.0/24";
const SERVER_V6_NET: &str = "2001:db8:cb00:7100::/64";
const CLIENT_V6_NET: &str = "2001:db8:c633:6400::/64";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; the error names the command and carries its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running `ip {}` (is iproute2 installed?)", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` (replacing a leftover of the same name) and brings up its
    /// loopback interface.
    pub fn create(name: &str) -> Result<Self> {
        if Path::new(NETNS_DIR).join(name).exists() {
            // Only possible when an earlier process with our pid died without cleaning up.
            let _ = ip(&["netns", "del", name]);
        }
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle, for `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n <this namespace> args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result (a
    /// panic in `f` is resumed on the caller's thread).
    ///
    /// Sockets created inside `f` belong to this namespace for good, so they can be returned and
    /// used from any thread afterwards; interface names and indices resolve in this namespace,
    /// so this is also where to attach XDP.
    ///
    /// The thread also gets a private mount namespace with a fresh sysfs on `/sys` (what
    /// `ip netns exec` does): sysfs shows the network namespace it was *mounted* in, so without
    /// this `/sys/class/net/<if>` would still list the caller's interfaces, and
    /// `sip_xdp::loader::attach`, which checks that path, would report the interface missing.
    pub fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        let name = self.name.clone();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("in-{name}"))
                .spawn_scoped(scope, move || {
                    enter(&path).unwrap_or_else(|e| panic!("cannot enter netns {name}: {e:#}"));
                    f()
                })
                .expect("spawning a thread to enter a network namespace");
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces; the veth peer goes with them.
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "warning: cleaning up network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// Moves the calling thread into the network namespace at `path`, with a private mount
/// namespace whose `/sys` belongs to it. Only for threads that exit afterwards.
fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; setns only changes the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    // SAFETY: unshare affects the calling thread only (CLONE_NEWNS implies CLONE_FS, which a
    // thread of a multi-threaded process may unshare).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
    }
    // Keep the mounts below from propagating back to the host's mount namespace.
    // SAFETY: constant NUL-terminated strings; null data/fstype are allowed for a propagation
    // change.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error()).context("making / a slave mount");
    }
    // SAFETY: constant NUL-terminated path. Failure (nothing mounted there) is fine.
    unsafe { libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH) };
    // SAFETY: constant NUL-terminated strings.
    if unsafe {
        libc::mount(
            c"sysfs".as_ptr(),
            c"/sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error()).context("mounting this namespace's sysfs on /sys");
    }
    Ok(())
}

/// Deletes `sxdp-*-<pid>-<n>` namespaces whose process is gone (a test run that was killed).
/// Best effort; namespaces of live processes, including this one, are left alone.
pub fn cleanup_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        // rest = "<role>-<pid>-<n>"
        let mut parts = rest.split('-');
        let (Some(_role), Some(pid), Some(_n), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != me && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A server and a client namespace joined by a veth pair, addressed and up (see the module
/// docs for the layout). Dropping it deletes both namespaces.
#[derive(Debug)]
pub struct VethPair {
    pub server: Netns,
    pub client: Netns,
}

impl VethPair {
    pub fn new() -> Result<Self> {
        cleanup_stale();
        let pid = std::process::id();
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        // Each namespace is owned (and cleaned up) as soon as it exists.
        let server = Netns::create(&format!("{NAME_PREFIX}srv-{pid}-{n}"))?;
        let client = Netns::create(&format!("{NAME_PREFIX}cli-{pid}-{n}"))?;
        let pair = Self { server, client };
        pair.configure().with_context(|| {
            format!(
                "setting up veth between {} and {}",
                pair.server.name(),
                pair.client.name()
            )
        })?;
        Ok(pair)
    }

    fn configure(&self) -> Result<()> {
        let (srv, cli) = (&self.server, &self.client);
        // Created directly inside the two namespaces, so the fixed interface names never meet
        // in one namespace, whatever runs in parallel.
        ip(&[
            "link",
            "add",
            SERVER_IF,
            "netns",
            srv.name(),
            "address",
            SERVER_MAC,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            cli.name(),
            "address",
            CLIENT_MAC,
        ])?;
        let server_v4 = format!("{SERVER_V4}/24");
        let server_v6 = format!("{SERVER_V6}/64");
        srv.ip(&["addr", "add", &server_v4, "dev", SERVER_IF])?;
        srv.ip(&["addr", "add", &server_v6, "dev", SERVER_IF, "nodad"])?;
        for addr in [CLIENT_V4_A, CLIENT_V4_B] {
            cli.ip(&["addr", "add", &format!("{addr}/24"), "dev", CLIENT_IF])?;
        }
        for addr in [CLIENT_V6_A, CLIENT_V6_B] {
            cli.ip(&[
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                CLIENT_IF,
                "nodad",
            ])?;
        }
        srv.ip(&["link", "set", SERVER_IF, "up"])?;
        cli.ip(&["link", "set", CLIENT_IF, "up"])?;

        // On-link routes to the other side only: there is no default route anywhere.
        srv.ip(&[
            "route",
            "add",
            CLIENT_V4_NET,
            "dev",
            SERVER_IF,
            "src",
            &SERVER_V4.to_string(),
        ])?;
        srv.ip(&[
            "-6",
            "route",
            "add",
            CLIENT_V6_NET,
            "dev",
            SERVER_IF,
            "src",
            &SERVER_V6.to_string(),
        ])?;
        cli.ip(&[
            "route",
            "add",
            SERVER_V4_NET,
            "dev",
            CLIENT_IF,
            "src",
            &CLIENT_V4_A.to_string(),
        ])?;
        cli.ip(&[
            "-6",
            "route",
            "add",
            SERVER_V6_NET,
            "dev",
            CLIENT_IF,
            "src",
            &CLIENT_V6_A.to_string(),
        ])?;

        // Static neighbours: no ARP/ND in flight when a test starts counting datagrams.
        let neighbours: [(&Netns, IpAddr, &str, &str); 6] = [
            (srv, CLIENT_V4_A.into(), CLIENT_MAC, SERVER_IF),
            (srv, CLIENT_V4_B.into(), CLIENT_MAC, SERVER_IF),
            (srv, CLIENT_V6_A.into(), CLIENT_MAC, SERVER_IF),
            (srv, CLIENT_V6_B.into(), CLIENT_MAC, SERVER_IF),
            (cli, SERVER_V4.into(), SERVER_MAC, CLIENT_IF),
            (cli, SERVER_V6.into(), SERVER_MAC, CLIENT_IF),
        ];
        for (ns, addr, mac, dev) in neighbours {
            ns.ip(&[
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }
}
