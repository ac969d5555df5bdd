//! sip-xdp's XDP program: per-source SIP rate limiting at the NIC.
//!
//! One packet's walk: [`parse`] reads Ethernet/VLAN/IP/UDP and, for UDP to a configured SIP
//! port, classifies the first line of the payload; [`policy`] then checks the source's ban (first
//! where the source is keyed by its whole address), the allowlist, the denylist and the source's
//! token bucket; the verdict is counted in `COUNTERS` and turned into XDP_PASS or XDP_DROP
//! (always XDP_PASS in monitor mode).
//!
//! Its companion at TC egress, `sip_xdp_egress`, reads the server's answers ([`answers`]): it
//! verifies clients that authenticate, counts failed authentication and bans for it, and caps
//! challenges and errors to unverified clients. The two share every map.
#![no_std]
#![no_main]

mod answers;
mod maps;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sip_xdp_common::{CONFIG_VERSION, Config, MethodClass, Verdict, flags, packet_counter_index};

use crate::{
    maps::{ACTIVE_CONFIG, CONFIG, bump},
    parse::Parsed,
};

/// Used until user space writes `CONFIG`, so a program loaded by hand is still safe to attach.
static DEFAULT_CONFIG: Config = Config::DEFAULT;

/// The live config. Both lookups are array lookups, which the verifier inlines: a load and a
/// bounds check each.
#[inline(always)]
fn live_config() -> &'static Config {
    let slot = match ACTIVE_CONFIG.get(0) {
        Some(slot) => *slot & 1,
        None => 0,
    };
    match CONFIG.get(slot) {
        Some(cfg) if cfg.version == CONFIG_VERSION => cfg,
        _ => &DEFAULT_CONFIG,
    }
}

#[xdp]
pub fn sip_xdp(ctx: XdpContext) -> u32 {
    let cfg = live_config();
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

/// The server's answers, at TC egress. It never drops what it cannot read: only the reflection
/// guard drops, and only responses it has read (never in monitor mode).
#[classifier]
pub fn sip_xdp_egress(ctx: TcContext) -> i32 {
    let cfg = live_config();
    let view = parse::SkbView::new(&ctx);
    let Some(answer) = parse::parse_answer(&view, cfg) else {
        return TC_ACT_OK as i32;
    };
    let Some((status, method)) = answers::read_answer(&ctx, answer.payload, answer.len) else {
        return TC_ACT_OK as i32;
    };
    // SAFETY: helper without arguments.
    let now_ns = unsafe { bpf_ktime_get_coarse_ns() };
    if answers::answer_verdict(cfg, &answer, status, method, now_ns) {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
