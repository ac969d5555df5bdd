//! sip-xdp's XDP program: per-source SIP rate limiting at the NIC.
//!
//! One packet's walk: [`parse`] reads Ethernet/VLAN/IP and the UDP or TCP header of a packet to
//! a configured SIP port; [`policy`] drops a banned source (keyed by its whole address) or a
//! banned prefix ([`prefixes`]) right there, before any payload is read; for the others the
//! payload's first line is classified, then the allowlist, the denylist, the source's token
//! bucket, the admission budget and the prefixes' buckets decide; the verdict is counted in
//! `COUNTERS` and turned into XDP_PASS or XDP_DROP (always XDP_PASS in monitor mode).
//!
//! Its companion at TC egress, `sip_xdp_egress`, reads the server's answers ([`answers`]): it
//! verifies clients that authenticate, counts failed authentication and bans for it, and caps
//! challenges and errors to unverified clients. The two share every map.
#![no_std]
#![no_main]

mod answers;
mod bans;
mod buckets;
mod clock;
mod lists;
mod maps;
mod parse;
mod policy;
mod prefixes;
mod signatures;
mod sources;
mod trace;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sip_xdp_common::{
    CONFIG_VERSION, Config, EventCounter, LimitClass, MethodClass, SCAN_SLOT, Verdict,
    event_counter_index, flags, packet_counter_index,
};

use crate::{
    buckets::{NO_LIMIT, limit_index},
    maps::{ACTIVE_CONFIG, CONFIG, SCANNERS, bump, opaque},
    parse::{Parsed, SipPacket},
    signatures::SCAN_REQUEST,
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
    // Matched by reference: moving the packet out would copy it to another stack slot, and the
    // program's combined stack (this frame, the parser's, the policy's) is capped at 512 bytes.
    let mut parsed = parse::parse(&ctx, cfg);
    let outcome = match &mut parsed {
        Parsed::NotSip => outcome(Verdict::PassNotSip, MethodClass::NotSip),
        Parsed::Unparsed if cfg.has_flag(flags::PASS_UNPARSED) => {
            outcome(Verdict::PassNotSip, MethodClass::Unparsed)
        }
        Parsed::Unparsed => outcome(Verdict::DropUnparsed, MethodClass::Unparsed),
        Parsed::Fragment { src, id } => {
            let (verdict, class) = policy::fragment_verdict(cfg, src, *id);
            outcome(verdict, class)
        }
        Parsed::Sip(packet) => sip_outcome(&ctx, cfg, packet),
    };
    if outcome & SCAN_REQUEST != 0 {
        // The scan program counts the outcome and decides. Past the call only when the tail
        // call did not happen (no program in the slot): the request passes unscanned. Nothing
        // of this frame lives across the call (the config and the outcome are read again), so
        // the frame, whose stack with the parser's is at the 512-byte cap, needs no spill slot.
        // SAFETY: a tail call with this program's own context.
        unsafe { SCANNERS.tail_call(&ctx, SCAN_SLOT) };
        bump(event_counter_index(EventCounter::ScanFailures));
        return action(live_config(), signatures::pending_outcome());
    }
    action(cfg, outcome)
}

/// Counts the outcome and turns it into the XDP action.
#[inline(always)]
fn action(cfg: &Config, outcome: usize) -> u32 {
    bump(outcome as u32);
    if is_drop(outcome) && !cfg.has_flag(flags::MONITOR) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The scan program: signatures in a request's headers ([`signatures`]). Tail-called by
/// `sip_xdp` only, never attached.
#[xdp]
pub fn sip_xdp_scan(ctx: XdpContext) -> u32 {
    let cfg = live_config();
    let outcome = signatures::scan(&ctx, cfg);
    action(cfg, outcome)
}

/// A packet's fate as `COUNTERS` indexes it: its (verdict, class) slot.
#[inline(always)]
fn outcome(verdict: Verdict, class: MethodClass) -> usize {
    packet_counter_index(verdict, class) as usize
}

/// [`outcome`] with the class as an index.
#[inline(always)]
fn outcome_index(verdict: Verdict, class: usize) -> usize {
    verdict as usize * MethodClass::COUNT + (class & 0xff)
}

/// Whether an outcome's verdict drops, without turning the number back into a `Verdict`.
#[inline(always)]
fn is_drop(outcome: usize) -> bool {
    const DROPS: u64 = {
        let mut bits = 0u64;
        let mut i = 0;
        while i < Verdict::COUNT {
            if Verdict::ALL[i].is_drop() {
                bits |= 1 << i;
            }
            i += 1;
        }
        bits
    };
    let verdict = outcome / MethodClass::COUNT;
    verdict < 64 && (DROPS >> verdict) & 1 != 0
}

/// A UDP datagram to a SIP port or a TCP segment to a SIP TCP port.
#[inline(always)]
fn sip_outcome(ctx: &XdpContext, cfg: &Config, packet: &mut SipPacket) -> usize {
    let now_ns = clock::now_ns();
    // A banned source or prefix is dropped on its addresses alone; only the others' payloads
    // are read.
    let mut known = sources::Known::EMPTY;
    packet.launder();
    let outcome = match policy::early(cfg, packet, &mut known, now_ns) {
        Some(verdict) => outcome(verdict, packet.unread_class()),
        None => {
            known.launder_key();
            let class = parse::classify_packet(ctx, packet) as usize;
            packet.class_index = opaque(3, class) as u32;
            let verdict = policy::listed_or_limited(cfg, packet, &mut known, now_ns);
            let limit = if verdict == Verdict::Pass && known.draw_prefixes {
                limit_index(packet.class_index as usize)
            } else {
                NO_LIMIT
            };
            // Every verdict and class reaches the prefixes' draw as one unknown number, with the
            // packet's flags that the walk so far has branched on (the verifier narrows the
            // caller's copies too): it then walks the draw once, not once per combination.
            // The scan offer rides along as `SCAN_REQUEST` in the outcome's bits: a flag of its
            // own, live across the draw, would cost this frame a spill slot it does not have.
            let packed = opaque(
                2,
                outcome_index(verdict, packet.class_index as usize)
                    | limit << 16
                    | (packet.is_ipv4 as usize) << 24
                    | (packet.first_fragment as usize) << 25
                    | if known.scan { SCAN_REQUEST } else { 0 },
            );
            let (outcome, limit) = (packed & (0xffff | SCAN_REQUEST), (packed >> 16) & 0xff);
            packet.is_ipv4 = packed & (1 << 24) != 0;
            packet.first_fragment = packed & (1 << 25) != 0;
            if limit < LimitClass::COUNT && prefixes::draw(cfg, packet, limit, now_ns) {
                outcome_index(Verdict::DropPrefix, (outcome & 0xffff) % MethodClass::COUNT)
            } else {
                // Still a pass with the offer set: on to the scan program.
                outcome
            }
        }
    };
    // One compare while no trace runs.
    if cfg.trace_until_ns != 0 {
        trace::record(
            cfg,
            &packet.src.0,
            &known.key,
            trace::packed(outcome & !SCAN_REQUEST, packet.port, 0),
        );
    }
    if packet.first_fragment {
        policy::record_first_fragment(
            &packet.src.0,
            packet.fragment_id,
            is_drop(outcome & !SCAN_REQUEST),
        );
    }
    outcome
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
    let now_ns = clock::now_ns();
    let shot = answers::answer_verdict(cfg, &answer, status, method, now_ns);
    // One compare while no trace runs; a traced client's answers are reported too.
    if cfg.trace_until_ns != 0 {
        trace::record_answer(cfg, &answer.dst.0, answer.port, status as u32, shot);
    }
    if shot {
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
