//! What the kernel counts for a run: softirq time (/proc/stat), ksoftirqd's and a thread's exact
//! CPU time, the veth ends' packet counters and UDP's socket-buffer drops.
use std::fs;

use anyhow::{Context as _, Result, bail};
use sip_xdp_tests::netns::{CLIENT_IF, SERVER_IF, VethPair};

pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Datagrams the namespace's UDP layer dropped for a full socket buffer (`Udp: RcvbufErrors` in
/// /proc/net/snmp). Runs on a thread inside the namespace: thread-self shows its netns.
pub(super) fn udp_rcvbuf_errors() -> Result<u64> {
    let snmp = fs::read_to_string("/proc/thread-self/net/snmp")
        .context("reading /proc/thread-self/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .context("no Udp RcvbufErrors in /proc/net/snmp")
}

/// Both veth ends' counters, each read in its own namespace (sysfs mounted there).
#[derive(Debug, Default)]
pub(super) struct VethStats {
    client_tx_packets: u64,
    pub(super) client_tx_dropped: u64,
    pub(super) server_rx_packets: u64,
    server_rx_dropped: u64,
}

impl VethStats {
    pub(super) fn read(net: &VethPair) -> Result<Self> {
        let stat = |iface: &str, name: &str| -> Result<u64> {
            let path = format!("/sys/class/net/{iface}/statistics/{name}");
            fs::read_to_string(&path)
                .with_context(|| format!("reading {path}"))?
                .trim()
                .parse()
                .with_context(|| format!("parsing {path}"))
        };
        let (client_tx_packets, client_tx_dropped) = net.client.run(|| -> Result<_> {
            Ok((
                stat(CLIENT_IF, "tx_packets")?,
                stat(CLIENT_IF, "tx_dropped")?,
            ))
        })?;
        let (server_rx_packets, server_rx_dropped) = net.server.run(|| -> Result<_> {
            Ok((
                stat(SERVER_IF, "rx_packets")?,
                stat(SERVER_IF, "rx_dropped")?,
            ))
        })?;
        Ok(Self {
            client_tx_packets,
            client_tx_dropped,
            server_rx_packets,
            server_rx_dropped,
        })
    }

    pub(super) fn minus(&self, before: &Self) -> Self {
        Self {
            client_tx_packets: self.client_tx_packets - before.client_tx_packets,
            client_tx_dropped: self.client_tx_dropped - before.client_tx_dropped,
            server_rx_packets: self.server_rx_packets - before.server_rx_packets,
            server_rx_dropped: self.server_rx_dropped - before.server_rx_dropped,
        }
    }
}

/// The pid of `ksoftirqd/<cpu>`, which takes over softirq work that overruns its budget.
pub(super) fn ksoftirqd_pid(cpu: usize) -> Result<u32> {
    let name = format!("ksoftirqd/{cpu}");
    for entry in fs::read_dir("/proc").context("listing /proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if fs::read_to_string(entry.path().join("comm")).is_ok_and(|c| c.trim() == name) {
            return Ok(pid);
        }
    }
    bail!("no {name} thread found in /proc")
}

/// Time a task has spent on a CPU, ns (first field of /proc/PID/schedstat).
pub(super) fn ksoftirqd_runtime_ns(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no run time in {path}"))
}

/// Softirq time from /proc/stat, in USER_HZ ticks: machine-wide and per CPU.
pub(super) struct CpuTimes {
    pub(super) softirq: u64,
    pub(super) per_cpu: Vec<u64>,
}

impl CpuTimes {
    pub(super) fn read() -> Result<Self> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        // cpu user nice system idle iowait irq softirq steal ...
        let softirq = |line: &str| -> Result<u64> {
            line.split_whitespace()
                .nth(7)
                .and_then(|v| v.parse().ok())
                .context("no softirq field in /proc/stat")
        };
        let mut times = Self {
            softirq: 0,
            per_cpu: Vec::new(),
        };
        for line in stat.lines() {
            if line.starts_with("cpu ") {
                times.softirq = softirq(line)?;
            } else if let Some(rest) = line.strip_prefix("cpu") {
                let cpu: usize = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("a cpuN line without a number in /proc/stat")?;
                if times.per_cpu.len() <= cpu {
                    times.per_cpu.resize(cpu + 1, 0);
                }
                times.per_cpu[cpu] = softirq(line)?;
            }
        }
        Ok(times)
    }
}
