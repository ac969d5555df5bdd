//! sip-xdp's memory: the pinned maps' kernel memory and the daemon's resident set.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::fd::{AsFd as _, AsRawFd as _},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::maps::MapData;
use sip_xdp::loader::{PINNED_MAPS, PinDir};
use sip_xdp_tests::netns::{SERVER_IF, VethPair};

use super::{context::Context, setups::SipXdpInstall};

pub(super) struct MapMemory {
    pub(super) name: &'static str,
    pub(super) map_type: String,
    pub(super) max_entries: u64,
    pub(super) memlock_bytes: u64,
}

pub(super) struct Memory {
    pub(super) maps: Vec<MapMemory>,
    pub(super) daemon_rss_kib: u64,
    pub(super) daemon_hwm_kib: u64,
}

/// sip-xdp attached once more: the pinned maps' kernel memory, then a daemon started on the
/// attachment, its resident memory read once it runs, then SIGTERM.
pub(super) fn measure_memory(ctx: &Context) -> Result<Memory> {
    let net = VethPair::new().context("creating the namespaces")?;
    let install = SipXdpInstall::new(ctx, &net)?;
    install.attach()?;
    let pins = PinDir::new(&install.pin_dir);
    let mut maps = Vec::new();
    for &name in PINNED_MAPS {
        let path = pins.map_path(name);
        let map = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        let fd = map.fd().as_fd().as_raw_fd();
        let fdinfo = fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .with_context(|| format!("reading the fdinfo of {name}"))?;
        let field = |key: &str| {
            fdinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
        };
        let number = |key: &str| -> Result<u64> {
            field(key)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {key} in the fdinfo of {name}"))
        };
        maps.push(MapMemory {
            name,
            map_type: map_type_name(field("map_type").as_deref()),
            max_entries: number("max_entries")?,
            memlock_bytes: number("memlock")?,
        });
    }
    let (daemon_rss_kib, daemon_hwm_kib) = daemon_rss(&install)?;
    drop(install);
    drop(net);
    Ok(Memory {
        maps,
        daemon_rss_kib,
        daemon_hwm_kib,
    })
}

fn map_type_name(number: Option<&str>) -> String {
    match number.and_then(|n| n.parse::<u32>().ok()) {
        Some(1) => "hash".into(),
        Some(2) => "array".into(),
        Some(6) => "per-CPU array".into(),
        Some(9) => "LRU hash".into(),
        Some(11) => "LPM trie".into(),
        Some(27) => "ring buffer".into(),
        Some(n) => format!("type {n}"),
        None => "?".into(),
    }
}

/// Kills the child on drop unless it has exited.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `sip-xdp run` on the attachment: VmRSS and VmHWM (KiB) two seconds after it says it runs,
/// then SIGTERM, which detaches.
fn daemon_rss(install: &SipXdpInstall) -> Result<(u64, u64)> {
    let config = install
        .config
        .to_str()
        .context("config path is not UTF-8")?;
    let mut child = install
        .command(&[
            "run",
            "--iface",
            SERVER_IF,
            "--mode",
            "native",
            "--config",
            config,
            "--no-metrics",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `sip-xdp run`")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut child = ChildGuard(child);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("log lines").push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if lines
            .lock()
            .expect("log lines")
            .iter()
            .any(|l| l.contains("sip-xdp running"))
        {
            break;
        }
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "`sip-xdp run` exited ({status}) before running: {}",
                lines.lock().expect("log lines").join("\n")
            );
        }
        ensure!(
            Instant::now() < deadline,
            "`sip-xdp run` did not log `sip-xdp running` within 15 s: {}",
            lines.lock().expect("log lines").join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past start-up: the first ticks of its maintenance loop have run.
    std::thread::sleep(Duration::from_secs(2));
    // nsenter execs sip-xdp in place: the child's pid is the daemon's.
    let pid = child.0.id();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    let rss = kib("VmRSS:")?;
    let hwm = kib("VmHWM:")?;
    // SAFETY: a pid we started and still own (not yet reaped).
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.0.try_wait()? {
            ensure!(
                status.success(),
                "`sip-xdp run` exited with {status} on SIGTERM"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "`sip-xdp run` did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((rss, hwm))
}
