//! sip-xdp's XDP program: per-source SIP rate limiting at the NIC.
//!
//! One packet's walk: [`parse`] reads Ethernet/VLAN/IP/UDP and, for UDP to a configured SIP
//! port, classifies the first line of the payload; [`policy`] then checks the source's ban (first
//! where the source is keyed by its whole address), the allowlist, the denylist and the source's
//! token bucket; the verdict is counted in `COUNTERS` and turned into XDP_PASS or XDP_DROP
//! (always XDP_PASS in monitor mode).
#![no_std]
#![no_main]

mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, macros::xdp, programs::XdpContext,
};
use sip_xdp_common::{CONFIG_VERSION, Config, MethodClass, Verdict, flags, packet_counter_index};

use crate::{
    maps::{ACTIVE_CONFIG, CONFIG, bump},
    parse::Parsed,
};

/// Used until user space writes `CONFIG`, so a program loaded by hand is still safe to attach.
static DEFAULT_CONFIG: Config = Config::DEFAULT;

#[xdp]
pub fn sip_xdp(ctx: XdpContext) -> u32 {
    // Both lookups are array lookups, which the verifier inlines: a load and a bounds check each.
    let slot = match ACTIVE_CONFIG.get(0) {
        Some(slot) => *slot & 1,
        None => 0,
    };
    let cfg = match CONFIG.get(slot) {
        Some(cfg) if cfg.version == CONFIG_VERSION => cfg,
        _ => &DEFAULT_CONFIG,
    };
    if parse::quick_not_sip(&ctx, cfg) {
        bump(packet_counter_index(
            Verdict::PassNotSip,
            MethodClass::NotSip,
        ));
        return xdp_action::XDP_PASS;
    }
    let (verdict, class) = match parse::parse(&ctx, cfg) {
        Parsed::NotSip => (Verdict::PassNotSip, MethodClass::NotSip),
        Parsed::Unparsed if cfg.has_flag(flags::PASS_UNPARSED) => {
            (Verdict::PassNotSip, MethodClass::Unparsed)
        }
        Parsed::Unparsed => (Verdict::DropUnparsed, MethodClass::Unparsed),
        Parsed::Fragment { src, id } => policy::fragment_verdict(cfg, &src, id),
        Parsed::Sip(datagram) => {
            // Coarse time (jiffies resolution) costs a memory read, not a clock read; bans and
            // buckets work in milliseconds and up, so the resolution is plenty.
            // SAFETY: helper without arguments.
            let now_ns = unsafe { bpf_ktime_get_coarse_ns() };
            let verdict = policy::sip_verdict(cfg, &datagram, now_ns);
            if let Some(id) = datagram.first_fragment_id {
                policy::record_first_fragment(&datagram.src, id, verdict);
            }
            (verdict, datagram.class)
        }
    };
    bump(packet_counter_index(verdict, class));
    if verdict.is_drop() && !cfg.has_flag(flags::MONITOR) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
