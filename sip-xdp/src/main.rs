//! `sip-xdp`: command-line entry point.
use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use sip_xdp::{
    loader::{self, LoadOptions},
    maps::SipMaps,
};
use sip_xdp_common::{Config, LimitClass};

#[derive(Parser)]
#[command(name = "sip-xdp", version, about = "XDP rate limiter for SIP edges")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program into the kernel (running the verifier) without attaching it, and
    /// print the built-in default limits.
    ///
    /// Example: sudo sip-xdp check
    Check,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Check => check(),
    }
}

fn check() -> Result<()> {
    let mut ebpf = loader::load(&LoadOptions::default()).context("sip-xdp check")?;
    let mut maps = SipMaps::take_from(&mut ebpf)?;
    maps.write_config(&Config::DEFAULT)?;
    println!("XDP program loaded and verified by the kernel (not attached).");
    println!("default limits per source:");
    for class in LimitClass::ALL {
        let limit = Config::DEFAULT.limits[class as usize];
        println!(
            "  {:<9} {:>6.2}/s, burst {}",
            class.name(),
            1e9 / limit.interval_ns as f64,
            limit.burst()
        );
    }
    Ok(())
}
