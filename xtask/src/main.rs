//! Project chores: `cargo xtask <command>`.
mod bench;
mod deb;
mod demo;
mod h2h;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "sip-xdp project chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks the XDP program with BPF_PROG_TEST_RUN against two reference programs and
    /// writes the table to BENCHMARKS.md (needs root).
    Bench(BenchArgs),
    /// Two network namespaces joined by veth, the program attached with the embedded default
    /// config, a phone and a REGISTER flood: prints what passed, what was dropped and the
    /// kernel counters, then cleans up (needs root).
    Demo,
    /// Builds target/debian/sip-xdp_VERSION_ARCH.deb (binary, units, config, man pages,
    /// completions) with dpkg-deb and prints its path.
    Deb,
    /// The head-to-head of issue 4: one bounded REGISTER flood through veth against no filter,
    /// hand-written nftables and iptables rules (bench/h2h/) and sip-xdp attached natively;
    /// receiver-side CPU per packet, packets delivered, sip-xdp's memory. Writes
    /// bench/h2h/REPORT.md and bench/h2h/h2h.png (needs root).
    H2h(H2hArgs),
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// BPF_PROG_TEST_RUN repeat count per measurement (at least 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Measurements per case; the table reports their median and best.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Where to write the markdown report (default: BENCHMARKS.md at the workspace root).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// CPU to pin the benchmark to (default: the CPU it starts on).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Do not raise the benchmark thread to SCHED_FIFO while measuring.
    #[arg(long)]
    pub no_realtime: bool,
    /// Allow repeat counts under 1,000,000 (quick checks; the report says so).
    #[arg(long)]
    pub allow_short: bool,
    /// Benchmark this build of the sip-xdp object instead of the one embedded in sip-xdp (for
    /// trying a change to the XDP program; the report names the file).
    #[arg(long)]
    pub object: Option<PathBuf>,
    /// After loading, print the program ids and keep them loaded this many seconds (for
    /// `bpftool prog dump xlated/jited id N`).
    #[arg(long, hide = true)]
    pub hold_secs: Option<u64>,
    /// Skip the action and verdict-counter checks (for experimental --object builds that skip
    /// work; their figures are not comparable verdict for verdict).
    #[arg(long, hide = true)]
    pub unchecked: bool,
}

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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::Demo => demo::run(),
        Command::Deb => deb::run(),
        Command::H2h(args) => h2h::run(&args),
    }
}
