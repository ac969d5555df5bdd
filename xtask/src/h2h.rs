//! `cargo xtask h2h`: sip-xdp against the hand-written nftables and iptables rules an operator
//! would use, on the same bounded REGISTER flood through veth, measured on the receiving side.
//! Writes bench/h2h/REPORT.md and bench/h2h/h2h.png.
//!
//! Every run gets fresh namespaces (so no rule, meter, hashlimit table or ban survives into the
//! next), and the runs interleave the setups, so slow drift on the machine hits all alike.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{self, BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use aya::maps::MapData;
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use sip_xdp::{
    loader::{PINNED_MAPS, PinDir},
    maps::SipMaps,
};
use sip_xdp_common::{MethodClass, Verdict};
use sip_xdp_tests::{
    netns::{
        CLIENT_IF, CLIENT_MAC, CLIENT_V4_A, CLIENT_V4_B, SERVER_IF, SERVER_MAC, SERVER_V4, VethPair,
    },
    packet,
};

use crate::H2hArgs;

/// The flooding source and the phone that keeps registering through the flood.
const FLOOD_SOURCE: Ipv4Addr = CLIENT_V4_A;
const PHONE_SOURCE: Ipv4Addr = CLIENT_V4_B;
/// In every setup's allowlist, never sends: the lookup costs what it costs in production.
const ALLOWLISTED: &str = "198.51.100.200/32";
const SIP_PORT: u16 = 5060;
const CLIENT_PORT: u16 = 5062;
/// The phone: one REGISTER this often, below the 5/s limit, so every one of them must arrive.
const PHONE_INTERVAL: Duration = Duration::from_millis(250);
/// The limits in all three filters (sip-xdp's defaults).
const REGISTER_RATE_PER_S: f64 = 5.0;
const REGISTER_BURST: u64 = 40;
const SIP_XDP_CONFIG: &str = "\
# cargo xtask h2h: the same limits as bench/h2h/nftables.nft and iptables.rules (the defaults)
[limits.register]
rate = \"5/s\"
burst = 40

[limits.invite]
rate = \"5/s\"
burst = 20
";
const SEND_BATCH: usize = 256;
const RECV_BATCH: usize = 256;
/// The receiver stops after this much silence once the senders are done.
const RECV_QUIET: Duration = Duration::from_millis(50);
/// A large buffer, so the unfiltered server loses as little as possible to overflow (counted
/// anyway: RcvbufErrors).
const SERVER_RCVBUF_BYTES: libc::c_int = 16 << 20;
/// Idle softirq is measured over this long before the runs (reported, not subtracted).
const IDLE_SAMPLE: Duration = Duration::from_secs(2);
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

static NEXT_INSTALL: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    NoFilter,
    Nftables,
    Iptables,
    SipXdp,
    /// References: the least each hook costs when it drops every packet to the SIP port.
    NftDropFloor,
    XdpDropFloor,
}

impl Setup {
    /// The head-to-head proper.
    const MAIN: [Setup; 4] = [
        Setup::NoFilter,
        Setup::Nftables,
        Setup::Iptables,
        Setup::SipXdp,
    ];
    const ALL: [Setup; 6] = [
        Setup::NoFilter,
        Setup::Nftables,
        Setup::Iptables,
        Setup::SipXdp,
        Setup::NftDropFloor,
        Setup::XdpDropFloor,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::NoFilter => "no filter",
            Setup::Nftables => "nftables",
            Setup::Iptables => "iptables",
            Setup::SipXdp => "sip-xdp",
            Setup::NftDropFloor => "floor: nft drop",
            Setup::XdpDropFloor => "floor: XDP_DROP",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Setup::NoFilter => "nothing between the veth and the socket",
            Setup::Nftables => {
                "[nftables.nft](nftables.nft): netdev ingress on the server veth, `udp dport 5060` \
                 to a chain with the allowlist set, `@th,64,64` REGISTER compare, per-source \
                 dynamic set `limit rate over 5/second burst 40 packets` → drop"
            }
            Setup::Iptables => {
                "[iptables.rules](iptables.rules): raw PREROUTING, `--dport 5060` to a chain with \
                 the allowlist, `u32` REGISTER compare, `hashlimit --hashlimit-above 5/sec \
                 --hashlimit-burst 40 --hashlimit-mode srcip` → DROP"
            }
            Setup::SipXdp => {
                "`sip-xdp attach --mode native` (own pin and state dirs), REGISTER 5/s burst 40 \
                 (the defaults), allowlist entry added with `sip-xdp allow add`"
            }
            Setup::NftDropFloor => {
                "reference, not a limiter: one nftables rule at the same netdev ingress hook, \
                 `udp dport 5060 drop` — the least any nftables filter there costs per drop"
            }
            Setup::XdpDropFloor => {
                "reference, not a limiter: a two-instruction XDP program (`return XDP_DROP`) \
                 attached natively to the same veth — the least any XDP program there costs per \
                 drop, veth's own XDP overhead included"
            }
        }
    }

    fn limits(self) -> bool {
        matches!(self, Setup::Nftables | Setup::Iptables | Setup::SipXdp)
    }

    fn is_floor(self) -> bool {
        matches!(self, Setup::NftDropFloor | Setup::XdpDropFloor)
    }
}

/// How the flood reaches the server's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// Pre-built frames handed to the client veth by XDP (BPF_PROG_TEST_RUN live frames):
    /// they reach the server side as XDP frames, with no socket buffer yet, as from a NIC.
    Frames,
    /// `sendmmsg` on a UDP socket: every packet is a socket buffer built by the client's stack
    /// before it crosses the veth.
    Socket,
}

impl Mode {
    const ALL: [Mode; 2] = [Mode::Frames, Mode::Socket];

    fn packets(self, ctx: &Context) -> u32 {
        match self {
            Mode::Frames => ctx.frame_packets,
            Mode::Socket => ctx.socket_packets,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Frames => "frames",
            Mode::Socket => "socket",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Mode::Frames => "NIC-like path: pre-built frames arrive as XDP frames",
            Mode::Socket => "socket path: packets arrive as socket buffers from a local UDP socket",
        }
    }
}

/// Workspace paths and the choices every run shares.
struct Context {
    root: PathBuf,
    bin: PathBuf,
    frame_packets: u32,
    socket_packets: u32,
    sender_cpu: usize,
    receiver_cpu: usize,
    user_hz: u64,
    ksoftirqd_pid: u32,
}

/// One run of one setup.
#[derive(Clone, Debug, Default)]
struct Sample {
    flood_sent: u64,
    phone_sent: u64,
    flood_delivered: u64,
    phone_delivered: u64,
    softirq_ns: u64,
    /// The part of softirq_ns on the sender's CPU, where veth runs the receive path.
    sender_cpu_softirq_ns: u64,
    receiver_cpu_ns: u64,
    /// The flood thread's CPU time plus its CPU's ksoftirqd's, both exact (scheduler clock).
    /// Without IRQ time accounting a softirq run on the back of a send is charged to the
    /// sending thread, so this is the send path (the same in every setup) plus the receive
    /// path that ran on that CPU.
    sender_cpu_ns: u64,
    send_wall: Duration,
    window: Duration,
    rcvbuf_errors: u64,
    /// Packets the client veth could not hand over (the server side's ring was full while its
    /// softirq waited for the CPU): they never reached a filter, so they are not counted as
    /// received.
    veth_dropped: u64,
    /// Packets the server veth received (flood, phone, and the odd neighbour message).
    server_rx_packets: u64,
    /// sip-xdp's own counters, sip-xdp runs only: (all verdicts, drop verdicts).
    xdp_counted: Option<(u64, u64)>,
}

impl Sample {
    fn sent(&self) -> u64 {
        self.flood_sent + self.phone_sent
    }
    /// Flood and phone packets that reached the server's interface: what the receiver's CPU
    /// figures are divided by.
    fn packets(&self) -> u64 {
        self.sent().saturating_sub(self.veth_dropped).max(1)
    }
    fn delivered(&self) -> u64 {
        self.flood_delivered + self.phone_delivered
    }
    fn dropped(&self) -> u64 {
        self.packets().saturating_sub(self.delivered())
    }
    fn softirq_ns_per_packet(&self) -> f64 {
        self.softirq_ns as f64 / self.packets() as f64
    }
    fn receiver_ns_per_packet(&self) -> f64 {
        self.receiver_cpu_ns as f64 / self.packets() as f64
    }
    fn sender_cpu_ns_per_packet(&self) -> f64 {
        self.sender_cpu_ns as f64 / self.packets() as f64
    }
    fn total_ns_per_packet(&self) -> f64 {
        self.softirq_ns_per_packet() + self.receiver_ns_per_packet()
    }
    /// Only for setups that filter: without one the few packets lost to a full socket
    /// buffer are no measure of anything.
    fn softirq_ns_per_dropped(&self, setup: Setup) -> Option<f64> {
        (setup != Setup::NoFilter && self.dropped() > 0)
            .then(|| self.softirq_ns as f64 / self.dropped() as f64)
    }
    fn drop_fraction(&self) -> f64 {
        self.dropped() as f64 / self.packets() as f64
    }
    fn send_rate_pps(&self) -> f64 {
        self.flood_sent as f64 / self.send_wall.as_secs_f64()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians over one setup's runs (each metric on its own).
struct Summary {
    mode: Mode,
    setup: Setup,
    softirq: f64,
    receiver: f64,
    total: f64,
    total_min: f64,
    total_max: f64,
    softirq_per_dropped: f64,
    sender_cpu: f64,
    flood_delivered: f64,
    phone_delivered: f64,
    phone_sent: f64,
    drop_fraction: f64,
    send_rate_pps: f64,
    rcvbuf_errors: f64,
}

fn summarize(mode: Mode, setup: Setup, samples: &[Sample]) -> Summary {
    let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let totals: Vec<f64> = samples.iter().map(Sample::total_ns_per_packet).collect();
    Summary {
        mode,
        setup,
        softirq: m(&Sample::softirq_ns_per_packet),
        receiver: m(&Sample::receiver_ns_per_packet),
        total: m(&Sample::total_ns_per_packet),
        total_min: totals.iter().copied().fold(f64::INFINITY, f64::min),
        total_max: totals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        softirq_per_dropped: m(&|s| s.softirq_ns_per_dropped(setup).unwrap_or(f64::NAN)),
        sender_cpu: m(&Sample::sender_cpu_ns_per_packet),
        flood_delivered: m(&|s| s.flood_delivered as f64),
        phone_delivered: m(&|s| s.phone_delivered as f64),
        phone_sent: m(&|s| s.phone_sent as f64),
        drop_fraction: m(&Sample::drop_fraction),
        send_rate_pps: m(&Sample::send_rate_pps),
        rcvbuf_errors: m(&|s| s.rcvbuf_errors as f64),
    }
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
    let env = environment(cpus);
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
    let memory = measure_memory(&ctx).context("measuring sip-xdp's memory")?;
    let elapsed = started.elapsed();

    let summaries: Vec<Summary> = samples
        .iter()
        .map(|(&(mode, setup), runs)| summarize(mode, setup, runs))
        .collect();
    let chart = output_dir.join("h2h.png");
    draw_chart(&chart, &summaries, &ctx).with_context(|| format!("drawing {}", chart.display()))?;
    let report = report(
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

/// Runs `program args` inside the namespace `netns` (`ip netns exec`), stdin from `stdin`.
fn netns_exec(netns: &str, program: &str, args: &[&str], stdin: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]).args(args);
    if let Some(path) = stdin {
        cmd.stdin(fs::File::open(path).with_context(|| format!("opening {}", path.display()))?);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running `ip netns exec {netns} {program}`"))?;
    ensure!(
        out.status.success(),
        "`ip netns exec {netns} {program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A sip-xdp installation of its own (pin dir, state dir, config file) driven through its CLI in
/// the server namespace; detached and purged on drop.
struct SipXdpInstall {
    bin: PathBuf,
    netns: PathBuf,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    config: PathBuf,
}

impl SipXdpInstall {
    fn new(ctx: &Context, net: &VethPair) -> Result<Self> {
        let tag = format!(
            "sxdp-h2h-{}-{}",
            std::process::id(),
            NEXT_INSTALL.fetch_add(1, Ordering::Relaxed)
        );
        let state_dir = std::env::temp_dir().join(&tag);
        let install = Self {
            bin: ctx.bin.clone(),
            netns: net.server.path(),
            pin_dir: Path::new("/sys/fs/bpf").join(&tag),
            config: state_dir.join("sip-xdp.toml"),
            state_dir,
        };
        fs::create_dir_all(&install.state_dir)
            .with_context(|| format!("creating {}", install.state_dir.display()))?;
        fs::write(&install.config, SIP_XDP_CONFIG)
            .with_context(|| format!("writing {}", install.config.display()))?;
        Ok(install)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(&self.bin)
            .args(args)
            .env("SIP_XDP_PIN_DIR", &self.pin_dir)
            .env("SIP_XDP_STATE_DIR", &self.state_dir)
            .env_remove("SIP_XDP_LOG_FORMAT");
        cmd
    }

    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {} {}", self.bin.display(), args.join(" ")))?;
        ensure!(
            out.status.success(),
            "`sip-xdp {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn attach(&self) -> Result<()> {
        self.ok(&["allow", "add", ALLOWLISTED, "--comment", "h2h"])?;
        let config = self.config.to_str().context("config path is not UTF-8")?;
        self.ok(&[
            "attach", "--iface", SERVER_IF, "--mode", "native", "--config", config,
        ])?;
        Ok(())
    }

    /// Packets the program saw and dropped (all verdicts and methods), from the pinned
    /// counters.
    fn counted(&self) -> Result<(u64, u64)> {
        let maps = SipMaps::open_pinned(&PinDir::new(&self.pin_dir))?;
        let counters = maps.counters()?;
        let sum = |drops_only: bool| -> u64 {
            Verdict::ALL
                .iter()
                .filter(|v| !drops_only || v.is_drop())
                .flat_map(|&v| MethodClass::ALL.map(|c| counters.packets(v, c)))
                .sum()
        };
        Ok((sum(false), sum(true)))
    }
}

impl Drop for SipXdpInstall {
    fn drop(&mut self) {
        // Also runs while an error unwinds: best effort, no panics.
        let _ = self.command(&["detach", "--all", "--purge"]).output();
        let _ = fs::remove_dir_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.state_dir);
    }
}

/// What a setup left in place that needs more than the namespace's deletion to go.
enum Installed {
    Nothing,
    SipXdp(SipXdpInstall),
    /// The program's and the link's fds: closing the link detaches the program.
    XdpFloor(#[allow(dead_code)] (OwnedFd, OwnedFd)),
}

/// Loads the setup's filter into the fresh server namespace. The netfilter rules go with the
/// namespace; the sip-xdp installation detaches and purges when dropped.
fn install(setup: Setup, ctx: &Context, net: &VethPair) -> Result<Installed> {
    let rules = ctx.root.join("bench/h2h");
    match setup {
        Setup::NoFilter => Ok(Installed::Nothing),
        Setup::Nftables => {
            let file = rules.join("nftables.nft");
            let file = file.to_str().context("path is not UTF-8")?;
            netns_exec(net.server.name(), "nft", &["-f", file], None)?;
            Ok(Installed::Nothing)
        }
        Setup::Iptables => {
            netns_exec(
                net.server.name(),
                "iptables-restore",
                &[],
                Some(&rules.join("iptables.rules")),
            )?;
            Ok(Installed::Nothing)
        }
        Setup::SipXdp => {
            let install = SipXdpInstall::new(ctx, net)?;
            install.attach()?;
            Ok(Installed::SipXdp(install))
        }
        Setup::NftDropFloor => {
            for command in [
                "add table netdev floor",
                "add chain netdev floor ingress { type filter hook ingress device \"sxdp-srv\" \
                 priority -500; policy accept; }",
                "add rule netdev floor ingress udp dport 5060 drop",
            ] {
                netns_exec(net.server.name(), "nft", &[command], None)?;
            }
            Ok(Installed::Nothing)
        }
        Setup::XdpDropFloor => Ok(Installed::XdpFloor(
            net.server
                .run(attach_xdp_drop)
                .context("attaching the XDP_DROP reference")?,
        )),
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a repr(C) prefix of union bpf_attr, its size passed alongside; the
    // kernel treats the rest as zero.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).with_context(|| what.to_owned());
    }
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `r0 = XDP_DROP; exit`, loaded and attached in native mode through a BPF link, on the server
/// interface of the calling thread's namespace. Closing the returned link fd detaches it.
fn attach_xdp_drop() -> Result<(OwnedFd, OwnedFd)> {
    const XDP_DROP: u64 = 1;
    // mov64 r0, XDP_DROP (opcode 0xb7, imm in the high 32 bits); exit (0x95).
    let insns: [u64; 2] = [0xb7 | (XDP_DROP << 32), 0x95];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"h2h_drop");
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    let prog = bpf(
        BPF_PROG_LOAD,
        &mut load,
        "loading the XDP_DROP program (BPF_PROG_LOAD)",
    )?;
    let iface = std::ffi::CString::new(SERVER_IF).expect("no NUL");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
    ensure!(
        ifindex != 0,
        "{SERVER_IF} not found in the server namespace"
    );
    let mut link = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    let link = bpf(
        BPF_LINK_CREATE,
        &mut link,
        "attaching the XDP_DROP program natively (BPF_LINK_CREATE)",
    )?;
    Ok((prog, link))
}

fn measure(mode: Mode, setup: Setup, ctx: &Context) -> Result<Sample> {
    let net = VethPair::new().context("creating the namespaces")?;
    // GRO on the server side, as on a NIC; on veth it also turns on the NAPI receive path that
    // takes XDP frames from the peer even when no XDP program runs here.
    net.server
        .run(|| set_gro(SERVER_IF))
        .context("enabling GRO on the server veth")?;
    let installed = install(setup, ctx, &net)?;
    let sip = SocketAddr::new(IpAddr::V4(SERVER_V4), SIP_PORT);
    let server = net.server.run(|| server_socket(sip))?;
    let flood = net.client.run(|| client_socket(FLOOD_SOURCE, sip))?;
    let phone = net.client.run(|| client_socket(PHONE_SOURCE, sip))?;
    let rcvbuf_before = net.server.run(udp_rcvbuf_errors)?;
    let veth_before = VethStats::read(&net)?;

    let flood_payload = flood_payload();
    let stop_receiver = AtomicBool::new(false);
    let before = CpuTimes::read()?;
    let started = Instant::now();
    let ksoftirqd_before = ksoftirqd_runtime_ns(ctx.ksoftirqd_pid)?;
    let (flood_sent, send_wall, sender_thread_ns, phone_sent, received) =
        std::thread::scope(|s| -> Result<_> {
            let receiver = s.spawn(|| receive(&server, &stop_receiver, ctx.receiver_cpu));
            let (stop_phone, phone_stop) = mpsc::channel::<()>();
            let phone_thread = s.spawn(move || run_phone(&phone, &phone_stop));
            let flood_thread = s.spawn(|| -> Result<(u64, Duration, u64)> {
                let timed = |send: &dyn Fn() -> Result<u64>| {
                    pin_to_cpu(ctx.sender_cpu)?;
                    let start = Instant::now();
                    let cpu_start = thread_cpu_ns();
                    let sent = send()?;
                    Ok((sent, start.elapsed(), thread_cpu_ns() - cpu_start))
                };
                match mode {
                    Mode::Socket => {
                        timed(&|| send_flood(&flood, &flood_payload, ctx.socket_packets))
                    }
                    Mode::Frames => net
                        .client
                        .run(|| timed(&|| send_frames(&flood_payload, ctx.frame_packets))),
                }
            });
            let flood_result = flood_thread.join().expect("the flood thread panicked");
            drop(stop_phone);
            let phone_sent = phone_thread.join().expect("the phone thread panicked");
            stop_receiver.store(true, Ordering::Relaxed);
            let received = receiver.join().expect("the receiver thread panicked");
            let (flood_sent, send_wall, sender_thread_ns) = flood_result?;
            Ok((
                flood_sent,
                send_wall,
                sender_thread_ns,
                phone_sent?,
                received?,
            ))
        })?;
    let ksoftirqd_after = ksoftirqd_runtime_ns(ctx.ksoftirqd_pid)?;
    let window = started.elapsed();
    let after = CpuTimes::read()?;
    let rcvbuf_after = net.server.run(udp_rcvbuf_errors)?;
    let veth_after = VethStats::read(&net)?;
    let veth = veth_after.minus(&veth_before);
    let xdp_counted = match &installed {
        Installed::SipXdp(install) => Some(install.counted()?),
        _ => None,
    };
    let sample = Sample {
        flood_sent,
        phone_sent,
        flood_delivered: received.flood,
        phone_delivered: received.phone,
        softirq_ns: (after.softirq - before.softirq) * 1_000_000_000 / ctx.user_hz,
        sender_cpu_softirq_ns: (after.per_cpu.get(ctx.sender_cpu).copied().unwrap_or(0)
            - before.per_cpu.get(ctx.sender_cpu).copied().unwrap_or(0))
            * 1_000_000_000
            / ctx.user_hz,
        receiver_cpu_ns: received.cpu_ns,
        sender_cpu_ns: sender_thread_ns + (ksoftirqd_after - ksoftirqd_before),
        send_wall,
        window,
        rcvbuf_errors: rcvbuf_after.saturating_sub(rcvbuf_before),
        veth_dropped: veth.client_tx_dropped,
        server_rx_packets: veth.server_rx_packets,
        xdp_counted,
    };
    check(setup, &sample)?;
    drop(installed);
    drop(net);
    Ok(sample)
}

const VETH_OTHER_SLACK: u64 = 16;

/// What every run must show, or its figures mean nothing.
fn check(setup: Setup, sample: &Sample) -> Result<()> {
    if let Some((seen, dropped)) = sample.xdp_counted {
        // The program sees every packet the server veth receives and drops all it does not
        // deliver: its counters and the socket must tell the same story, but for neighbour
        // messages that arrive between reading the veth's counter and the program's.
        ensure!(
            seen.abs_diff(sample.server_rx_packets) <= VETH_OTHER_SLACK,
            "sip-xdp counted {seen} packets but the server veth received {}",
            sample.server_rx_packets
        );
        // Exact but for packets veth refused that were neither flood nor phone (neighbour
        // messages: a handful per run at most).
        ensure!(
            (dropped + sample.delivered() + sample.rcvbuf_errors).abs_diff(sample.packets())
                <= VETH_OTHER_SLACK,
            "sip-xdp dropped {dropped}, the socket got {} and overflowed {} times, but {} \
             flood and phone packets reached the server veth",
            sample.delivered(),
            sample.rcvbuf_errors,
            sample.packets()
        );
    }
    if setup.is_floor() {
        ensure!(
            sample.delivered() == 0,
            "{} let {} packets through: it must drop everything to port {SIP_PORT}",
            setup.name(),
            sample.delivered()
        );
        return Ok(());
    }
    ensure!(
        sample.flood_delivered > 0,
        "no flood packet reached the server socket: the path through veth is broken"
    );
    if setup.limits() {
        // The burst, plus the rate over the whole window, plus slack for timer granularity.
        let allowed =
            REGISTER_BURST + (REGISTER_RATE_PER_S * sample.window.as_secs_f64()).ceil() as u64 + 5;
        ensure!(
            sample.flood_delivered <= allowed,
            "{} let {} of {} flood REGISTERs through (at most {allowed} expected): the filter \
             is not limiting",
            setup.name(),
            sample.flood_delivered,
            sample.flood_sent
        );
        // A phone packet veth refused for a full ring never met the filter.
        ensure!(
            sample.phone_sent.saturating_sub(sample.phone_delivered) <= sample.veth_dropped,
            "{} delivered {} of the phone's {} REGISTERs (sent below the limit): it dropped \
             legitimate traffic",
            setup.name(),
            sample.phone_delivered,
            sample.phone_sent
        );
    }
    Ok(())
}

/// Every flood packet: the same REGISTER.
fn flood_payload() -> Vec<u8> {
    packet::register("100", 1)
}

fn server_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    socket.set_read_timeout(Some(RECV_QUIET))?;
    let rcvbuf_bytes = SERVER_RCVBUF_BYTES;
    // SAFETY: a valid socket and a pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf_bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting SO_RCVBUFFORCE");
    }
    Ok(socket)
}

fn client_socket(source: Ipv4Addr, server: SocketAddr) -> Result<UdpSocket> {
    let local = SocketAddr::new(IpAddr::V4(source), CLIENT_PORT);
    let socket = UdpSocket::bind(local).with_context(|| format!("binding {local}"))?;
    socket
        .connect(server)
        .with_context(|| format!("connecting to {server}"))?;
    Ok(socket)
}

/// Turns GRO on for `iface` in the calling thread's namespace (ETHTOOL_SGRO; no ethtool binary
/// needed).
fn set_gro(iface: &str) -> Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 1,
    };
    let socket = UdpSocket::bind("0.0.0.0:0").context("a socket for the ethtool ioctl")?;
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(iface.len() < ifr.ifr_name.len(), "interface name too long");
    for (dst, src) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: a valid socket, an ifreq naming the interface and pointing at a live
    // ethtool_value.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("ETHTOOL_SGRO on {iface}"));
    }
    Ok(())
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per batch of the live-frames test run (the kernel's NAPI_POLL_WEIGHT).
const FRAME_BATCH: u32 = 64;
/// Kernel-side chunk of repeats per syscall, so a signal or a slow run never waits long.
const FRAME_CHUNK: u32 = 100_000;

#[repr(C)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// The kernel rejects non-zero bytes after batch_size: keep the tail padding explicit.
    pad: u32,
}

/// Loads `r0 = bpf_redirect(ifindex, 0); exit` as an XDP program.
fn load_redirect_program(ifindex: u32) -> Result<OwnedFd> {
    const BPF_FUNC_REDIRECT: u64 = 23;
    let insns: [u64; 4] = [
        0xb7 | (0x01 << 8) | (u64::from(ifindex) << 32), // mov64 r1, ifindex
        0xb7 | (0x02 << 8),                              // mov64 r2, 0
        0x85 | (BPF_FUNC_REDIRECT << 32),                // call bpf_redirect
        0x95,                                            // exit
    ];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"h2h_redirect");
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    bpf(
        BPF_PROG_LOAD,
        &mut load,
        "loading the frame sender's redirect program (BPF_PROG_LOAD)",
    )
}

/// `count` copies of a pre-built REGISTER frame, redirected by XDP to the client veth of the
/// calling thread's namespace with BPF_PROG_TEST_RUN in live-frames mode (what xdp-trafficgen
/// does): the peer receives them as XDP frames, with no socket buffer built on the way.
fn send_frames(payload: &[u8], count: u32) -> Result<u64> {
    let mut frame = packet::Frame::udp(
        IpAddr::V4(FLOOD_SOURCE),
        IpAddr::V4(SERVER_V4),
        SIP_PORT,
        payload,
    );
    frame.src_port = CLIENT_PORT;
    let mut frame = frame.build();
    frame[0..6].copy_from_slice(&mac_bytes(SERVER_MAC)?);
    frame[6..12].copy_from_slice(&mac_bytes(CLIENT_MAC)?);
    let iface = std::ffi::CString::new(CLIENT_IF).expect("no NUL");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
    ensure!(
        ifindex != 0,
        "{CLIENT_IF} not found in the client namespace"
    );
    let prog = load_redirect_program(ifindex)?;
    let mut sent = 0u64;
    while sent < u64::from(count) {
        let repeat = (u64::from(count) - sent).min(u64::from(FRAME_CHUNK)) as u32;
        // SAFETY: all-zero is a valid attr (padding included); fields set below.
        let mut attr: TestRunAttr = unsafe { std::mem::zeroed() };
        attr.prog_fd = prog.as_raw_fd() as u32;
        attr.data_size_in = frame.len() as u32;
        attr.data_in = frame.as_ptr() as u64;
        attr.repeat = repeat;
        attr.flags = BPF_F_TEST_XDP_LIVE_FRAMES;
        attr.batch_size = FRAME_BATCH;
        // SAFETY: a repr(C) prefix of bpf_attr's test member with its size; data_in points at
        // `frame`, alive across the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                size_of::<TestRunAttr>() as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .context("BPF_PROG_TEST_RUN in live-frames mode (the frame sender)");
        }
        sent += u64::from(repeat);
    }
    Ok(sent)
}

fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut bytes {
        *byte = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .with_context(|| format!("bad MAC address {mac}"))?;
    }
    Ok(bytes)
}

/// `count` copies of `payload` through `sendmmsg`, as fast as one thread goes.
fn send_flood(socket: &UdpSocket, payload: &[u8], count: u32) -> Result<u64> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let iov_ptr = &raw mut iov;
    let mut msgs: Vec<libc::mmsghdr> = (0..SEND_BATCH)
        .map(|_| {
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov_ptr;
            msg.msg_hdr.msg_iovlen = 1;
            msg
        })
        .collect();
    let mut sent = 0u64;
    let mut retries = 0u64;
    while sent < u64::from(count) {
        let batch = (u64::from(count) - sent).min(SEND_BATCH as u64) as libc::c_uint;
        // SAFETY: `msgs` holds SEND_BATCH valid headers, each pointing at `iov`, which points at
        // `payload`; all outlive the call. The socket is connected, so no msg_name is needed.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), batch, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                    retries += 1;
                    ensure!(
                        retries < 1_000_000,
                        "sendmmsg keeps failing with {err}: the client side is stuck"
                    );
                    std::thread::yield_now();
                    continue;
                }
                _ => return Err(err).context("sendmmsg (the flood)"),
            }
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// One REGISTER every PHONE_INTERVAL until `stop` is dropped; returns how many it sent.
fn run_phone(socket: &UdpSocket, stop: &mpsc::Receiver<()>) -> Result<u64> {
    let mut sent = 0u64;
    loop {
        socket
            .send(&packet::register("alice", sent as u32 + 1))
            .context("sending the phone's REGISTER")?;
        sent += 1;
        match stop.recv_timeout(PHONE_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return Ok(sent),
        }
    }
}

struct Received {
    flood: u64,
    phone: u64,
    cpu_ns: u64,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The SIP server's reading loop: `recvmmsg` until `stop` is set and the socket has been quiet
/// for RECV_QUIET. Counts datagrams by source; its own CPU time is the server thread's cost.
fn receive(socket: &UdpSocket, stop: &AtomicBool, cpu: usize) -> Result<Received> {
    pin_to_cpu(cpu)?;
    let mut buffers = vec![[0u8; 2048]; RECV_BATCH];
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
    let mut iovs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(addrs.iter_mut())
        .map(|(iov, addr)| {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
            msg
        })
        .collect();
    let flood = u32::from(FLOOD_SOURCE).to_be();
    let phone = u32::from(PHONE_SOURCE).to_be();
    let mut received = Received {
        flood: 0,
        phone: 0,
        cpu_ns: 0,
    };
    let start = thread_cpu_ns();
    loop {
        for msg in &mut msgs {
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        // SAFETY: every header points at its own live buffer and address slot; MSG_WAITFORONE
        // blocks (up to SO_RCVTIMEO) for the first datagram only.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                _ => return Err(err).context("recvmmsg (the server)"),
            }
        }
        // The kernel filled `addrs` through the raw pointers in `msgs`.
        for addr in &addrs[..n as usize] {
            let source = std::hint::black_box(addr.sin_addr.s_addr);
            if source == flood {
                received.flood += 1;
            } else if source == phone {
                received.phone += 1;
            }
        }
    }
    received.cpu_ns = thread_cpu_ns() - start;
    Ok(received)
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get valid
    // pointers to it. Only the calling thread is affected.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin a thread to CPU {cpu}: {}",
                io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Datagrams the namespace's UDP layer dropped for a full socket buffer (`Udp: RcvbufErrors` in
/// /proc/net/snmp). Runs on a thread inside the namespace: thread-self shows its netns.
fn udp_rcvbuf_errors() -> Result<u64> {
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
struct VethStats {
    client_tx_packets: u64,
    client_tx_dropped: u64,
    server_rx_packets: u64,
    server_rx_dropped: u64,
}

impl VethStats {
    fn read(net: &VethPair) -> Result<Self> {
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

    fn minus(&self, before: &Self) -> Self {
        Self {
            client_tx_packets: self.client_tx_packets - before.client_tx_packets,
            client_tx_dropped: self.client_tx_dropped - before.client_tx_dropped,
            server_rx_packets: self.server_rx_packets - before.server_rx_packets,
            server_rx_dropped: self.server_rx_dropped - before.server_rx_dropped,
        }
    }
}

/// The pid of `ksoftirqd/<cpu>`, which takes over softirq work that overruns its budget.
fn ksoftirqd_pid(cpu: usize) -> Result<u32> {
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
fn ksoftirqd_runtime_ns(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/schedstat");
    fs::read_to_string(&path)
        .with_context(|| format!("reading {path}"))?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no run time in {path}"))
}

/// Softirq time from /proc/stat, in USER_HZ ticks: machine-wide and per CPU.
struct CpuTimes {
    softirq: u64,
    per_cpu: Vec<u64>,
}

impl CpuTimes {
    fn read() -> Result<Self> {
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

struct MapMemory {
    name: &'static str,
    map_type: String,
    max_entries: u64,
    memlock_bytes: u64,
}

struct Memory {
    maps: Vec<MapMemory>,
    daemon_rss_kib: u64,
    daemon_hwm_kib: u64,
}

/// sip-xdp attached once more: the pinned maps' kernel memory, then a daemon started on the
/// attachment, its resident memory read once it runs, then SIGTERM.
fn measure_memory(ctx: &Context) -> Result<Memory> {
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

struct Environment {
    date: String,
    kernel: String,
    cpu_model: String,
    cpus: usize,
    loadavg: String,
    commit: String,
    nft: String,
    iptables: String,
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn environment(cpus: usize) -> Environment {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let mut cpu_model = field("model name").unwrap_or_else(|| "unknown".to_owned());
    if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
        let _ = write!(cpu_model, " (family {family}, model {model})");
    }
    let commit = match command_output("git", &["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} + uncommitted changes")
            } else {
                rev
            }
        }
        None => "unknown".to_owned(),
    };
    let unknown = || "unknown".to_owned();
    Environment {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(unknown),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpu_model,
        cpus,
        loadavg: read_trimmed("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        commit,
        nft: command_output("nft", &["-v"]).unwrap_or_else(unknown),
        iptables: command_output("iptables", &["-V"]).unwrap_or_else(unknown),
    }
}

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(value: f64, reference: f64) -> String {
    if value.is_finite() && reference.is_finite() && reference > 0.0 {
        format!("{:.2}", value / reference)
    } else {
        "n/a".to_owned()
    }
}

fn ns(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        "n/a".to_owned()
    }
}

/// The summary of `setup` in `mode`.
fn find(summaries: &[Summary], mode: Mode, setup: Setup) -> &Summary {
    summaries
        .iter()
        .find(|s| s.mode == mode && s.setup == setup)
        .expect("a summary per mode and setup")
}

/// sip-xdp's kernel CPU per dropped packet over nftables'.
fn target_ratio(summaries: &[Summary], mode: Mode) -> f64 {
    find(summaries, mode, Setup::SipXdp).softirq_per_dropped
        / find(summaries, mode, Setup::Nftables).softirq_per_dropped
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= 0.25 { "met" } else { "not met" }
}

fn mode_section(w: &mut String, mode: Mode, summaries: &[Summary], packets: u32) {
    let get = |setup| find(summaries, mode, setup);
    let (nft, ipt, xdp) = (
        get(Setup::Nftables),
        get(Setup::Iptables),
        get(Setup::SipXdp),
    );
    let (unfiltered, nft_floor, xdp_floor) = (
        get(Setup::NoFilter),
        get(Setup::NftDropFloor),
        get(Setup::XdpDropFloor),
    );
    let _ = writeln!(w, "\n### {}\n", mode.title());
    let _ = writeln!(
        w,
        "| Setup | kernel softirq | server thread | total | total, min–max | × nftables (total) \
         | flood delivered to the socket | phone delivered | dropped | softirq per dropped \
         packet, ns | × nftables (per dropped) | sending CPU, exact | flood sent at |"
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for setup in Setup::ALL {
        let s = get(setup);
        let _ = writeln!(
            w,
            "| {} | {} | {} | **{}** | {}–{} | {} | {} of {} | {:.0} of {:.0} | {:.4} % | {} | {} \
             | {} | {} pkt/s |",
            setup.name(),
            ns(s.softirq),
            ns(s.receiver),
            ns(s.total),
            ns(s.total_min),
            ns(s.total_max),
            ratio(s.total, nft.total),
            thousands(s.flood_delivered as u64),
            thousands(u64::from(packets)),
            s.phone_delivered,
            s.phone_sent,
            s.drop_fraction * 100.0,
            ns(s.softirq_per_dropped),
            ratio(s.softirq_per_dropped, nft.softirq_per_dropped),
            ns(s.sender_cpu),
            thousands(s.send_rate_pps as u64),
        );
    }
    let target = target_ratio(summaries, mode);
    let _ = writeln!(
        w,
        "\n**Kernel CPU per dropped packet, sip-xdp vs nftables: {} ns vs {} ns = {}×** (target \
         ≤ 0.25×: {}). Against iptables: {}×. Total receiver-side CPU per packet: {}× nftables, \
         {}× iptables, {}× the unfiltered server.",
        ns(xdp.softirq_per_dropped),
        ns(nft.softirq_per_dropped),
        ratio(xdp.softirq_per_dropped, nft.softirq_per_dropped),
        verdict(target),
        ratio(xdp.softirq_per_dropped, ipt.softirq_per_dropped),
        ratio(xdp.total, nft.total),
        ratio(xdp.total, ipt.total),
        ratio(xdp.total, unfiltered.total),
    );
    let _ = writeln!(
        w,
        "\nWithout a filter the server's socket took {} of {} flood REGISTERs ({:.0} lost to a \
         full socket buffer, median) and the thread reading it spent {} ns per packet — before \
         any SIP parsing, which a real server adds.",
        thousands(unfiltered.flood_delivered as u64),
        thousands(u64::from(packets)),
        unfiltered.rcvbuf_errors,
        ns(unfiltered.receiver),
    );
    let nft_above = nft.softirq_per_dropped - nft_floor.softirq_per_dropped;
    let xdp_above = xdp.softirq_per_dropped - xdp_floor.softirq_per_dropped;
    let _ = writeln!(
        w,
        "\nThe floors drop every packet at the same hooks with no logic: {} ns per drop at \
         nftables' netdev ingress, {} ns for an XDP program (XDP_DROP floor ÷ nft drop floor = \
         {}×). Above its own floor the nftables ruleset adds {} ns per drop and sip-xdp {} ns.",
        ns(nft_floor.softirq_per_dropped),
        ns(xdp_floor.softirq_per_dropped),
        ratio(xdp_floor.softirq_per_dropped, nft_floor.softirq_per_dropped),
        ns(nft_above),
        ns(xdp_above),
    );
    let _ = writeln!(
        w,
        "\nExact-clock cross-check (*sending CPU*, differences only): sip-xdp − nftables = {} ns \
         per packet (softirq figures: {} ns); sip-xdp − iptables = {} ns ({} ns); sip-xdp − \
         XDP_DROP floor = {} ns ({} ns); nftables − nft drop floor = {} ns ({} ns).",
        ns(xdp.sender_cpu - nft.sender_cpu),
        ns(xdp.softirq - nft.softirq),
        ns(xdp.sender_cpu - ipt.sender_cpu),
        ns(xdp.softirq - ipt.softirq),
        ns(xdp.sender_cpu - xdp_floor.sender_cpu),
        ns(xdp.softirq - xdp_floor.softirq),
        ns(nft.sender_cpu - nft_floor.sender_cpu),
        ns(nft.softirq - nft_floor.softirq),
    );
}

#[allow(clippy::too_many_arguments)]
fn report(
    env: &Environment,
    args: &H2hArgs,
    ctx: &Context,
    samples: &BTreeMap<(Mode, Setup), Vec<Sample>>,
    summaries: &[Summary],
    memory: &Memory,
    idle_softirq_ms_per_s: f64,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Head to head: sip-xdp, nftables and iptables on one REGISTER flood\n"
    );
    let _ = writeln!(
        w,
        "Generated by `cargo xtask h2h` (xtask/src/h2h.rs); rerun it to refresh this file and \
         [h2h.png](h2h.png).\n"
    );
    let _ = writeln!(
        w,
        "![receiver-side CPU per packet and packets delivered, per setup](h2h.png)\n"
    );
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Date | {} |", env.date);
    let _ = writeln!(
        w,
        "| Command | `sudo cargo xtask h2h --frame-packets {} --socket-packets {} --runs {}` (as \
         root; {:.0} s, not counting the sip-xdp release build) |",
        args.frame_packets,
        args.socket_packets,
        args.runs,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(w, "| Kernel | {} |", env.kernel);
    let _ = writeln!(w, "| CPU | {}, {} cores online |", env.cpu_model, env.cpus);
    let _ = writeln!(
        w,
        "| Load average at start | {} (other work shared the machine's CPUs) |",
        env.loadavg
    );
    let _ = writeln!(w, "| Commit | {} |", env.commit);
    let _ = writeln!(w, "| Tools | {}; {} |", env.nft, env.iptables);
    let _ = writeln!(w, "| sip-xdp binary | `{}` |", ctx.bin.display());

    let _ = writeln!(w, "\n## Summary\n");
    let frames = target_ratio(summaries, Mode::Frames);
    let socket = target_ratio(summaries, Mode::Socket);
    let _ = writeln!(
        w,
        "Issue 4's target: sip-xdp spends at most a quarter of nftables' kernel CPU per dropped \
         packet. Measured (median of {} runs of {} packets in frames mode, {} in socket \
         mode):\n",
        args.runs,
        thousands(u64::from(args.frame_packets)),
        thousands(u64::from(args.socket_packets)),
    );
    let _ = writeln!(
        w,
        "* **{}: {}×** nftables' — target {}.",
        Mode::Frames.title(),
        ratio(frames, 1.0),
        verdict(frames)
    );
    let _ = writeln!(
        w,
        "* **{}: {}×** nftables' — target {}.",
        Mode::Socket.title(),
        ratio(socket, 1.0),
        verdict(socket)
    );
    let limiter_runs = || {
        samples
            .iter()
            .filter(|((_, setup), _)| setup.limits())
            .flat_map(|(_, runs)| runs)
    };
    let phone_sent: u64 = limiter_runs().map(|s| s.phone_sent).sum();
    let phone_delivered: u64 = limiter_runs().map(|s| s.phone_delivered).sum();
    let max_flood: u64 = limiter_runs().map(|s| s.flood_delivered).max().unwrap_or(0);
    let _ = writeln!(
        w,
        "\nEvery limiter run cut the flood to its burst plus 5/s (at most {max_flood} flood \
         REGISTERs reached the socket in any run) and the phone below the limit got {} of its \
         {} REGISTERs through{}. Every setup of a mode was sent the same number of packets.",
        phone_delivered,
        phone_sent,
        if phone_delivered == phone_sent {
            ""
        } else {
            " (the rest were refused by veth for a full ring, before any filter)"
        }
    );

    let _ = writeln!(w, "\n## Setups\n");
    let _ = writeln!(w, "| Setup | What filters the flood |\n|---|---|");
    for setup in Setup::ALL {
        let _ = writeln!(w, "| {} | {} |", setup.name(), setup.what());
    }

    let _ = writeln!(w, "\n## Results (median of {} runs)", args.runs);
    let _ = writeln!(
        w,
        "\nCPU figures are receiver-side CPU time per packet that reached the server's veth, in \
         ns (the same number is ms per million packets). *Kernel softirq* is machine-wide softirq time from /proc/stat over \
         the run; *server thread* is the CPU time of the thread reading the SIP socket; *total* \
         is the two together. The sender's own CPU is not counted in them. *Sending CPU* is the \
         exact CPU time of the sending thread plus its CPU's ksoftirqd: it holds the sender's \
         own work (the same in every setup of a mode) and the receive path that runs on its \
         back, so its differences between setups are exact where the softirq figures are \
         tick-sampled."
    );
    for mode in Mode::ALL {
        mode_section(w, mode, summaries, mode.packets(ctx));
    }

    let _ = writeln!(w, "\n## sip-xdp's memory\n");
    let total_memlock: u64 = memory.maps.iter().map(|m| m.memlock_bytes).sum();
    let _ = writeln!(
        w,
        "Daemon (`sip-xdp run --iface {SERVER_IF} --mode native --no-metrics`, release build, \
         adopting the attachment, read 2 s after it logged `sip-xdp running`): **VmRSS {} KiB** \
         (VmHWM {} KiB).\n",
        thousands(memory.daemon_rss_kib),
        thousands(memory.daemon_hwm_kib)
    );
    let _ = writeln!(
        w,
        "Kernel memory of the pinned maps at the configured sizes (`memlock:` in the fdinfo of \
         each map opened from the pin directory; preallocated maps are charged in full whether \
         used or not): **{:.1} MiB** in all.\n",
        total_memlock as f64 / (1 << 20) as f64
    );
    let _ = writeln!(
        w,
        "| Map | type | max entries | memlock |\n|---|---|---:|---:|"
    );
    for m in &memory.maps {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} KiB |",
            m.name,
            m.map_type,
            thousands(m.max_entries),
            thousands(m.memlock_bytes.div_ceil(1024))
        );
    }
    let _ = writeln!(
        w,
        "\nThe nftables meter and the hashlimit table allocate a small entry per source as \
         sources appear (one source here), so they have no comparable fixed cost."
    );

    let _ = writeln!(w, "\n## Every run\n");
    let _ = writeln!(
        w,
        "| Mode | Setup | run | softirq ms | of it on the sender's CPU, ms | server thread ms | \
         sending CPU ms | window s | flood sent at | not handed over by veth | flood \
         delivered | phone | socket-buffer drops | sip-xdp drop counters |"
    );
    let _ = writeln!(
        w,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((mode, setup), runs) in samples {
        for (i, s) in runs.iter().enumerate() {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {} pkt/s | {} | {} | \
                 {}/{} | {} | {} |",
                mode.name(),
                setup.name(),
                i + 1,
                s.softirq_ns as f64 / 1e6,
                s.sender_cpu_softirq_ns as f64 / 1e6,
                s.receiver_cpu_ns as f64 / 1e6,
                s.sender_cpu_ns as f64 / 1e6,
                s.window.as_secs_f64(),
                thousands(s.send_rate_pps() as u64),
                thousands(s.veth_dropped),
                thousands(s.flood_delivered),
                s.phone_delivered,
                s.phone_sent,
                thousands(s.rcvbuf_errors),
                s.xdp_counted
                    .map_or_else(|| "–".to_owned(), |(_, dropped)| thousands(dropped)),
            );
        }
    }

    let _ = writeln!(w, "\n## Method\n");
    let _ = writeln!(
        w,
        "* Each run builds fresh namespaces with `sip_xdp_tests::netns::VethPair` (client \
         {FLOOD_SOURCE} and {PHONE_SOURCE}, server {SERVER_V4}, joined by veth), turns GRO on \
         for the server's veth (as on a NIC; on veth this also gives it the NAPI receive path), \
         loads one setup's filter in the server namespace only (`ip netns exec SRV nft -f \
         bench/h2h/nftables.nft`, `ip netns exec SRV iptables-restore < \
         bench/h2h/iptables.rules`, or the `sip-xdp` binary through `nsenter --net` with its own \
         pin directory under /sys/fs/bpf and its own state directory, detached and purged after \
         the run), and deletes the namespaces afterwards, so no meter, hashlimit entry or ban \
         carries over. Runs interleave the setups (round 1: every setup, round 2: every setup, \
         ...), first in frames mode, then in socket mode."
    );
    let _ = writeln!(
        w,
        "* The flood: {} (frames mode) or {} (socket mode) identical REGISTERs from {FLOOD_SOURCE} ({} bytes of UDP payload, \
         `sip_xdp_tests::packet::register`), sent as fast as one thread pinned to CPU {} goes. \
         **Frames mode**: the full frame is built once (`sip_xdp_tests::packet::Frame`) and a \
         four-instruction XDP program (`return bpf_redirect(client veth)`) runs on it with \
         BPF_PROG_TEST_RUN in live-frames mode (the xdp-trafficgen technique), {FRAME_BATCH} \
         frames per batch: veth hands each frame to the server side as an XDP frame, so the \
         server's XDP program runs before any socket buffer exists, and without one the kernel \
         builds the socket buffer from the frame — as a NIC driver does. **Socket mode**: \
         `sendmmsg` ({SEND_BATCH} per call) on a connected UDP socket, so each packet is a \
         socket buffer built by the client's stack before it crosses the veth.",
        thousands(u64::from(args.frame_packets)),
        thousands(u64::from(args.socket_packets)),
        flood_payload().len(),
        ctx.sender_cpu,
    );
    let _ = writeln!(
        w,
        "* The phone: one REGISTER every {} ms from {PHONE_SOURCE} (below the 5/s limit) on a \
         UDP socket while the flood runs. Every limiter must deliver all of them and cut the \
         flood to its burst plus 5/s, the floors must deliver nothing, or the run fails. Every \
         allowlist holds {ALLOWLISTED}, which never sends.",
        PHONE_INTERVAL.as_millis()
    );
    let _ = writeln!(
        w,
        "* The server: a thread pinned to CPU {} reading a UDP socket bound to \
         {SERVER_V4}:{SIP_PORT} in the server namespace with `recvmmsg` ({RECV_BATCH} per call, \
         SO_RCVBUF forced to {} MiB), counting datagrams by source, until the senders are done \
         and the socket has been quiet for {} ms. Its CPU time is CLOCK_THREAD_CPUTIME_ID over \
         its loop.",
        ctx.receiver_cpu,
        SERVER_RCVBUF_BYTES >> 20,
        RECV_QUIET.as_millis()
    );
    let _ = writeln!(
        w,
        "* Kernel CPU: the softirq column of the `cpu` line of /proc/stat, read before the \
         senders start and after the server thread stops. The whole receive path runs in \
         softirq here — veth's NAPI poll with the XDP program, netfilter's ingress and \
         PREROUTING hooks, IP and UDP receive, queueing on the socket — and on veth it runs on \
         the sending CPU, right after each batch is handed over (the *of it on the sender's CPU* \
         column). *Per packet* means per packet that reached the server's veth: when the \
         server side's ring is full because its softirq is waiting for the CPU, veth refuses \
         the packet at the sender (the *not handed over by veth* column, at most {:.1} % of a \
         run here; no filter ever saw those). *Per dropped packet* divides the softirq time by the \
         packets that reached the veth but not the socket; the few delivered ones cost more, \
         so this slightly overstates the cost of a drop, alike for every setup. In sip-xdp \
         runs the program's own counters must account for every packet the server veth \
         received, or the run fails.",
        samples
            .values()
            .flatten()
            .map(|s| s.veth_dropped as f64 * 100.0 / s.sent() as f64)
            .fold(0.0, f64::max)
    );
    let _ = writeln!(w, "\n## Caveats\n");
    let _ = writeln!(
        w,
        "* **Machine-wide, tick-sampled softirq.** The VM has {} CPUs and the kernel has no \
         CONFIG_IRQ_TIME_ACCOUNTING, so /proc/stat's softirq is sampled by the {} Hz scheduler \
         tick and printed in 1/{} s units: several percent of noise per run (the min–max \
         column), more on the shorter frames-mode runs. It also counts every other softirq on \
         the machine in the window: idle, that ran at {:.1} ms per second over {} s before the \
         runs (not subtracted). The load average above says how busy the rest of the machine \
         was. The *sending CPU* column is exact and backs the differences.",
        env.cpus,
        kernel_hz().map_or_else(|| "?".to_owned(), |hz| hz.to_string()),
        ctx.user_hz,
        idle_softirq_ms_per_s,
        IDLE_SAMPLE.as_secs()
    );
    let _ = writeln!(
        w,
        "* **veth is not a NIC.** Frames mode is the closer model: the frame arrives without a \
         socket buffer and sip-xdp drops it before one is built, while nftables and iptables \
         see the socket buffer the kernel builds for them, as from a NIC. What frames mode lacks \
         is the driver's own work (DMA, descriptor rings, interrupts), the same for every setup. \
         In socket mode the packet already is a socket buffer when it reaches the server's veth, \
         and veth copies it into an XDP frame (its headroom is smaller than XDP's 256 bytes) \
         before an XDP program can run: sip-xdp pays an allocation and a copy per packet there \
         that it would not pay on hardware, which is why the two modes disagree."
    );
    let _ = writeln!(
        w,
        "* **The sender shares the softirq CPU.** A cheaper receive path lets the sender go \
         faster (the *flood sent at* column); every setup still sends the same count, and the \
         CPU figures are per packet."
    );
    let _ = writeln!(
        w,
        "* **iptables is iptables-nft** (Debian's default): `iptables-restore` turns the rules \
         into an nftables table of family `ip` at the raw PREROUTING hook; `hashlimit` becomes \
         a native nftables meter, `u32` runs as an xtables match inside nftables. \
         iptables-legacy is not measured."
    );
    let _ = writeln!(
        w,
        "* **What sip-xdp does with the flood:** the 41st REGISTER empties the bucket and bans \
         the source (first ban 60 s, extended while it keeps sending), so every later packet \
         takes the banned path; nftables and iptables keep passing 5 per second after the \
         burst. Both show in the *flood delivered* column. The banned path reads the source's \
         entry before the lists, so a banned source costs sip-xdp no allowlist lookup (`allow \
         add` forgets the entries of the sources it allowlists), while the nftables and \
         iptables rulesets look the allowlist set up first for every packet, as a ruleset must."
    );
    let _ = writeln!(
        w,
        "* Every packet here is IPv4 and a REGISTER from one source; a flood from many sources \
         grows the meters and sip-xdp's LRU table alike, which this run does not measure."
    );
    out
}

/// CONFIG_HZ, from /proc/config.gz if the kernel exposes it.
fn kernel_hz() -> Option<u64> {
    let out = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep '^CONFIG_HZ='",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("CONFIG_HZ=")?
        .parse()
        .ok()
}

const SOFTIRQ_COLOR: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const SERVER_COLOR: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const DELIVERED_COLOR: RGBColor = RGBColor(0x55, 0xa8, 0x68);

fn bar<Y: Copy>(i: u32, from: Y, to: Y, color: RGBColor) -> Rectangle<(SegmentValue<u32>, Y)> {
    let mut rect = Rectangle::new(
        [
            (SegmentValue::Exact(i), from),
            (SegmentValue::Exact(i + 1), to),
        ],
        color.filled(),
    );
    rect.set_margin(0, 0, 18, 18);
    rect
}

fn setup_label(v: &SegmentValue<u32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => Setup::ALL
            .get(*i as usize)
            .map_or_else(String::new, |s| s.name().to_owned()),
        _ => String::new(),
    }
}

fn draw_chart(path: &Path, summaries: &[Summary], ctx: &Context) -> Result<()> {
    let font = fs::read(FONT).with_context(|| {
        format!("reading {FONT} (install fonts-dejavu-core: scripts/setup-toolchain.sh)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable TrueType font"))?;

    let root = BitMapBackend::new(path, (1600, 1040)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(44);
    title.draw_text(
        &format!(
            "A REGISTER flood from one source through veth ({} frames / {} socket packets per \
             run), median of the runs (cargo xtask h2h)",
            thousands(u64::from(ctx.frame_packets)),
            thousands(u64::from(ctx.socket_packets))
        ),
        &TextStyle::from(("sans-serif", 20).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        (800, 24),
    )?;
    // One column per mode: CPU on top, delivered packets below; one CPU scale for both.
    let cpu_top = summaries
        .iter()
        .map(|s| s.total)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let (top, bottom) = body.split_vertically(560);
    let columns = [top.split_horizontally(800), bottom.split_horizontally(800)];
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let of_mode = |setups: &[Setup]| -> Vec<&Summary> {
            setups
                .iter()
                .map(|&setup| find(summaries, mode, setup))
                .collect()
        };
        let (cpu_area, delivered_area) = if i == 0 {
            (&columns[0].0, &columns[1].0)
        } else {
            (&columns[0].1, &columns[1].1)
        };
        draw_cpu_panel(cpu_area, &of_mode(&Setup::ALL), mode, cpu_top)?;
        draw_delivered_panel(
            delivered_area,
            &of_mode(&Setup::MAIN),
            mode,
            mode.packets(ctx),
        )?;
    }
    root.present()?;
    Ok(())
}

fn draw_cpu_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    summaries: &[&Summary],
    mode: Mode,
    top: f64,
) -> Result<()> {
    let n = summaries.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} mode: receiver-side CPU per packet, ns", mode.name()),
            ("sans-serif", 17),
        )
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(72)
        // A u32 range includes its end: 0..n-1 gives exactly n segments.
        .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&setup_label)
        .x_label_style(("sans-serif", 13))
        .y_desc("CPU ns per packet received")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .y_label_style(("sans-serif", 13))
        .draw()?;
    chart
        .draw_series(
            summaries
                .iter()
                .enumerate()
                .map(|(i, s)| bar(i as u32, 0.0, s.softirq, SOFTIRQ_COLOR)),
        )?
        .label("kernel softirq (machine-wide)")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], SOFTIRQ_COLOR.filled()));
    chart
        .draw_series(
            summaries
                .iter()
                .enumerate()
                .map(|(i, s)| bar(i as u32, s.softirq, s.softirq + s.receiver, SERVER_COLOR)),
        )?
        .label("server thread reading the socket")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], SERVER_COLOR.filled()));
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(summaries.iter().enumerate().map(|(i, s)| {
        Text::new(
            format!("{:.0}", s.total),
            (SegmentValue::CenterOf(i as u32), s.total + top * 0.01),
            label_style.clone(),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_delivered_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    summaries: &[&Summary],
    mode: Mode,
    packets: u32,
) -> Result<()> {
    let n = summaries.len() as u32;
    let top = f64::from(packets) * 4.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} mode: flood packets that reached the server socket (log scale)",
                mode.name()
            ),
            ("sans-serif", 17),
        )
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d((0u32..n - 1).into_segmented(), (1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&setup_label)
        .x_label_style(("sans-serif", 15))
        .y_desc("packets delivered")
        .y_label_formatter(&|v| thousands(*v as u64))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .y_label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(
        summaries
            .iter()
            .enumerate()
            .map(|(i, s)| bar(i as u32, 1.0, s.flood_delivered.max(1.0), DELIVERED_COLOR)),
    )?;
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(summaries.iter().enumerate().map(|(i, s)| {
        Text::new(
            format!(
                "{} of {}",
                thousands(s.flood_delivered as u64),
                thousands(u64::from(packets))
            ),
            (
                SegmentValue::CenterOf(i as u32),
                s.flood_delivered.max(1.0) * 1.25,
            ),
            label_style.clone(),
        )
    }))?;
    Ok(())
}
