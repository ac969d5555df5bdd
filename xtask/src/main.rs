//! Project chores: `cargo xtask <command>`.
mod bench;
mod deb;
mod demo;

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

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::Demo => demo::run(),
        Command::Deb => deb::run(),
    }
}
