//! `cargo xtask h2h`: sip-xdp against the hand-written nftables and iptables rules an operator
//! would use, on the same bounded REGISTER flood through veth, measured on the receiving side.
//! Writes bench/h2h/REPORT.md and bench/h2h/h2h.png.
//!
//! Every run gets fresh namespaces (so no rule, meter, hashlimit table or ban survives into the
//! next), and the runs interleave the setups, so slow drift on the machine hits all alike.
//!
//! `run` drives it: each run installs one [`setups`] filter, sends the [`traffic`] and reads the
//! kernel's [`counters`] around it ([`measurement`]); after the runs, sip-xdp's [`memory`], then
//! the [`report`] and the [`chart`]. [`bpf`] holds the raw BPF commands of the XDP_DROP floor
//! and the frame sender.
mod bpf;
mod chart;
mod counters;
mod measurement;
mod memory;
mod report;
mod setups;
mod traffic;

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use sip_xdp_tests::netns::{CLIENT_V4_A, CLIENT_V4_B};

use self::{
    counters::{CpuTimes, ksoftirqd_pid},
    measurement::{Sample, Summary, measure, summarize},
    setups::Setup,
};
use crate::H2hArgs;

/// The flooding source and the phone that keeps registering through the flood.
const FLOOD_SOURCE: Ipv4Addr = CLIENT_V4_A;
const PHONE_SOURCE: Ipv4Addr = CLIENT_V4_B;
const SIP_PORT: u16 = 5060;
const CLIENT_PORT: u16 = 5062;
/// Idle softirq is measured over this long before the runs (reported, not subtracted).
const IDLE_SAMPLE: Duration = Duration::from_secs(2);

/// How the flood reaches the server's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Mode {
    /// Pre-built frames handed to the client veth by XDP (BPF_PROG_TEST_RUN live frames):
    /// they reach the server side as XDP frames, with no socket buffer yet, as from a NIC.
    Frames,
    /// `sendmmsg` on a UDP socket: every packet is a socket buffer built by the client's stack
    /// before it crosses the veth.
    Socket,
}

impl Mode {
    pub(super) const ALL: [Mode; 2] = [Mode::Frames, Mode::Socket];

    pub(super) fn packets(self, ctx: &Context) -> u32 {
        match self {
            Mode::Frames => ctx.frame_packets,
            Mode::Socket => ctx.socket_packets,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Frames => "frames",
            Mode::Socket => "socket",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Mode::Frames => "NIC-like path: pre-built frames arrive as XDP frames",
            Mode::Socket => "socket path: packets arrive as socket buffers from a local UDP socket",
        }
    }
}

/// Workspace paths and the choices every run shares.
pub(super) struct Context {
    pub(super) root: PathBuf,
    pub(super) bin: PathBuf,
    pub(super) frame_packets: u32,
    pub(super) socket_packets: u32,
    pub(super) sender_cpu: usize,
    pub(super) receiver_cpu: usize,
    pub(super) user_hz: u64,
    pub(super) ksoftirqd_pid: u32,
}

pub fn run(args: &H2hArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "cargo xtask h2h creates network namespaces, loads nftables/iptables rules in them and \
         attaches XDP: run it as root"
    );
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        args.frame_packets >= 10_000 && args.socket_packets >= 10_000,
        "--frame-packets and --socket-packets must be at least 10000 (the softirq figures come \
         from 4 ms scheduler ticks)"
    );
    for tool in ["nft", "iptables-restore", "nsenter", "ip"] {
        which(tool).with_context(|| {
            format!("`{tool}` is not installed: run scripts/setup-toolchain.sh (as root)")
        })?;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_owned();
    let output_dir = args
        .output_dir
        .clone()
        .unwrap_or_else(|| root.join("bench/h2h"));
    fs::create_dir_all(&output_dir)
        .with_context(|| format!("creating {}", output_dir.display()))?;
    // SAFETY: no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    ensure!(
        args.sender_cpu < cpus && args.receiver_cpu < cpus,
        "--sender-cpu {} / --receiver-cpu {}: this machine has CPUs 0..{}",
        args.sender_cpu,
        args.receiver_cpu,
        cpus - 1
    );
    let bin = match &args.sip_xdp_bin {
        Some(bin) => bin.clone(),
        None => build_sip_xdp(&root)?,
    };
    ensure!(
        bin.exists(),
        "{} does not exist: build it (`cargo build --release -p sip-xdp --bin sip-xdp`) or pass \
         another --sip-xdp-bin",
        bin.display()
    );
    // SAFETY: no preconditions.
    let user_hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ctx = Context {
        root,
        bin,
        frame_packets: args.frame_packets,
        socket_packets: args.socket_packets,
        sender_cpu: args.sender_cpu,
        receiver_cpu: args.receiver_cpu,
        user_hz,
        ksoftirqd_pid: ksoftirqd_pid(args.sender_cpu)?,
    };
    let env = report::environment(cpus);
    let started = Instant::now();

    let idle_before = CpuTimes::read()?;
    std::thread::sleep(IDLE_SAMPLE);
    let idle_after = CpuTimes::read()?;
    let idle_softirq_ms_per_s = (idle_after.softirq - idle_before.softirq) as f64 * 1e3
        / user_hz as f64
        / IDLE_SAMPLE.as_secs_f64();

    let mut samples: BTreeMap<(Mode, Setup), Vec<Sample>> = BTreeMap::new();
    let selected = |mode: Mode, setup: Setup| {
        args.only.is_empty()
            || args.only.iter().any(|o| {
                o == mode.name() || o == setup.name() || o == &format!("{mode:?}/{setup:?}")
            })
    };
    for mode in Mode::ALL {
        for round in 1..=args.runs {
            for setup in Setup::ALL {
                if !selected(mode, setup) {
                    continue;
                }
                let sample = measure(mode, setup, &ctx).with_context(|| {
                    format!(
                        "{} {} (run {round} of {})",
                        mode.name(),
                        setup.name(),
                        args.runs
                    )
                })?;
                eprintln!(
                    "{} run {round}/{} {:<15}: {:>7.0} pkt/s sent, softirq {:>5.0} ns/pkt, server \
                 thread {:>5.0} ns/pkt, sending CPU {:>5.0} ns/pkt, {} flood + {}/{} phone \
                 delivered",
                    mode.name(),
                    args.runs,
                    setup.name(),
                    sample.send_rate_pps(),
                    sample.softirq_ns_per_packet(),
                    sample.receiver_ns_per_packet(),
                    sample.sender_cpu_ns_per_packet(),
                    sample.flood_delivered,
                    sample.phone_delivered,
                    sample.phone_sent
                );
                samples.entry((mode, setup)).or_default().push(sample);
            }
        }
    }
    if !args.only.is_empty() {
        eprintln!("--only: no report");
        return Ok(());
    }
    eprintln!("measuring sip-xdp's memory (maps, daemon)");
    let memory = memory::measure_memory(&ctx).context("measuring sip-xdp's memory")?;
    let elapsed = started.elapsed();

    let summaries: Vec<Summary> = samples
        .iter()
        .map(|(&(mode, setup), runs)| summarize(mode, setup, runs))
        .collect();
    let chart = output_dir.join("h2h.png");
    chart::draw_chart(&chart, &summaries, &ctx)
        .with_context(|| format!("drawing {}", chart.display()))?;
    let report = report::report(
        &env,
        args,
        &ctx,
        &samples,
        &summaries,
        &memory,
        idle_softirq_ms_per_s,
        elapsed,
    );
    let report_path = output_dir.join("REPORT.md");
    fs::write(&report_path, &report)
        .with_context(|| format!("writing {}", report_path.display()))?;
    print!("{report}");
    eprintln!(
        "wrote {} and {} in {:.0} s",
        report_path.display(),
        chart.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn which(tool: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
        .ok_or_else(|| anyhow!("{tool} not found in PATH"))
}

/// The release build of the binary, as operators run it (the RSS figure depends on it).
fn build_sip_xdp(root: &Path) -> Result<PathBuf> {
    eprintln!("building the sip-xdp binary (cargo build --release -p sip-xdp --bin sip-xdp)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "sip-xdp", "--bin", "sip-xdp"])
        .current_dir(root)
        .status()
        .context("running cargo build for the sip-xdp binary")?;
    ensure!(
        status.success(),
        "building the sip-xdp binary failed ({status}); fix the build or pass --sip-xdp-bin"
    );
    // This program runs from <target>/debug/xtask.
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the xtask binary is not in a cargo target directory")?;
    Ok(target.join("release/sip-xdp"))
}
