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
mod context;
mod counters;
mod measurement;
mod memory;
mod report;
mod setups;
mod traffic;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, ensure};

use self::{
    context::{Context, IDLE_SAMPLE, Mode},
    counters::{CpuTimes, ksoftirqd_pid},
    measurement::{Sample, Summary, measure, summarize},
    setups::Setup,
};
use crate::host;

#[derive(clap::Args, Debug)]
pub struct H2hArgs {
    /// Flood REGISTERs per run in frames mode (pre-built frames; every setup sends the same
    /// count).
    #[arg(long, default_value_t = 4_000_000)]
    pub frame_packets: u32,
    /// Flood REGISTERs per run in socket mode (sendmmsg on a UDP socket; a slower sender).
    #[arg(long, default_value_t = 1_000_000)]
    pub socket_packets: u32,
    /// Runs per setup, interleaved; the report gives their median.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where REPORT.md and h2h.png go (default: bench/h2h at the workspace root).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Use this sip-xdp binary instead of building the release one.
    #[arg(long)]
    pub sip_xdp_bin: Option<PathBuf>,
    /// CPU the flood sender is pinned to (veth's receive softirq runs there too).
    #[arg(long, default_value_t = 1)]
    pub sender_cpu: usize,
    /// CPU the server's socket-reading thread is pinned to.
    #[arg(long, default_value_t = 0)]
    pub receiver_cpu: usize,
    /// Quick checks: run only these modes or setups (`frames`, `nftables`, `Frames/SipXdp`),
    /// print the runs and write no report.
    #[arg(long, hide = true, value_delimiter = ',')]
    pub only: Vec<String>,
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
    let cpus = host::online_cpus();
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
        runs: args.runs,
        sender_cpu: args.sender_cpu,
        receiver_cpu: args.receiver_cpu,
        user_hz,
        ksoftirqd_pid: ksoftirqd_pid(args.sender_cpu)?,
    };
    let env = report::environment();
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
