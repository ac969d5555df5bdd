//! Project chores: `cargo xtask <command>`.
mod bench;
mod deb;
mod demo;
mod h2h;
mod host;

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
    Bench(bench::BenchArgs),
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
    H2h(h2h::H2hArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::Demo => demo::run(),
        Command::Deb => deb::run(),
        Command::H2h(args) => h2h::run(&args),
    }
}
