//! `sip-xdp check`: load the program and let the kernel verify it, attach nothing.
use anyhow::{Context as _, Result};

use super::require_privileges;
use crate::{
    config::Settings,
    loader::{self, LoadOptions},
    maps::SipMaps,
};

pub(super) fn check() -> Result<()> {
    require_privileges("check")?;
    let mut ebpf = loader::load(&LoadOptions::default()).context("sip-xdp check")?;
    let mut maps = SipMaps::take_from(&mut ebpf)?;
    maps.write_config(&Settings::default().kernel_config())?;
    // The verifier's processed-instruction count (its limit is 1,000,000): the kernel matrix
    // (scripts/kernel-matrix.sh) reports it per kernel.
    let count = |info: Option<aya::programs::ProgramInfo>| {
        info.and_then(|info| info.verified_instruction_count())
            .map_or_else(|| "unknown".to_string(), |n| n.to_string())
    };
    let verified = count(loader::xdp_program(&mut ebpf)?.info().ok());
    println!(
        "XDP program loaded and verified by the kernel (not attached); verified insns: {verified}."
    );
    let verified = count(loader::egress_program(&mut ebpf)?.info().ok());
    println!(
        "TC egress program loaded and verified by the kernel (not attached); verified insns: \
         {verified}."
    );
    let verified = count(loader::scan_program(&mut ebpf)?.info().ok());
    println!(
        "Scan program loaded and verified by the kernel (not attached); verified insns: \
         {verified}."
    );
    Ok(())
}
