//! What the program knows of a packet's source: its per-source key, its verification, its
//! buckets, and `Known`, the walk's handle on its state.
use sip_xdp_common::{Config, LimitClass, RateLimit, SourceKey, SourceState, flags};

use crate::{
    maps::{VERIFIED, opaque},
    parse::{Addr16, SipPacket},
};

/// Per-source key of an IPv6 source grouped by prefix: the address masked to it.
#[inline(always)]
pub fn masked_key(cfg: &Config, src: &[u8; 16]) -> SourceKey {
    let mut addr = *src;
    let mut i = 0;
    while i < 16 {
        addr[i] &= cfg.ipv6_source_mask[i];
        i += 1;
    }
    SourceKey { addr }
}

/// Whether the per-source key is the whole address: IPv4 (one source whatever the IPv6 mask
/// says), or IPv6 at /128. User space writes prefix masks only, so the last byte is all ones at
/// /128 alone.
#[inline(always)]
pub fn key_is_address(cfg: &Config, is_ipv4: bool) -> bool {
    is_ipv4 || cfg.ipv6_source_mask[15] == 0xff
}

/// Whether the source counts as verified now: only while the egress program is attached
/// (`ANSWERS`), so that a stale verification cannot loosen limits nobody refreshes.
#[inline(always)]
pub fn is_verified(cfg: &Config, verified_until_ns: u64, now_ns: u64) -> bool {
    cfg.has_flag(flags::ANSWERS) && now_ns < verified_until_ns
}

/// The buckets a source draws from: a verified source's looser ones, or the defaults.
#[inline(always)]
pub fn limits_for(cfg: &Config, verified: bool) -> &[RateLimit; LimitClass::COUNT] {
    if verified {
        &cfg.verified_limits
    } else {
        &cfg.limits
    }
}

/// Expiry of the source's verification in `VERIFIED`, 0 when it has none. Read when a source's
/// entry is made or rebuilt; the egress program keeps the entry's copy current after that.
#[inline(always)]
pub fn verified_until(cfg: &Config, key: &SourceKey) -> u64 {
    if !cfg.has_flag(flags::ANSWERS) {
        return 0;
    }
    // SAFETY: a plain read of a value the egress program replaces in place.
    match VERIFIED.get_ptr(key) {
        Some(verified) => unsafe { (*verified).verified_until_ns },
        None => 0,
    }
}

/// Sets `key` to the per-source key of the packet's source.
#[inline(always)]
pub fn set_source_key(cfg: &Config, packet: &SipPacket, key: &mut SourceKey) {
    if key_is_address(cfg, packet.is_ipv4) {
        key.addr = packet.src.0;
    } else {
        write_masked_key(cfg, &packet.src, key);
    }
}

/// [`masked_key`], written in place. Not inlined: its byte-wise work, which only a masked IPv6
/// source key needs, stays out of the program's own stack frame.
#[inline(never)]
fn write_masked_key(cfg: &Config, src: &Addr16, key: &mut SourceKey) {
    *key = masked_key(cfg, &src.0);
}

/// What the walk of one packet knows about its source before its payload is read.
/// Made once per packet and filled in place (never moved: a copy the verifier cannot follow
/// would turn its pointers into plain numbers).
pub struct Known {
    /// The per-source key: the address, or an IPv6 address masked to `ipv6_source_mask`.
    pub key: SourceKey,
    pub tracked: Option<&'static mut SourceState>,
    /// Set with a `Pass` verdict when the packet still draws from its prefixes' buckets (an
    /// unverified source's limited class): the caller draws them, from its own frame, so that
    /// the deepest call chain stays inside the 512-byte BPF stack.
    pub draw_prefixes: bool,
    /// The policy handed the request to the scan program (`signatures::offer`).
    pub scan: bool,
}

impl Known {
    /// The key's words laundered, for the reason and with the slots of `SipPacket::launder`.
    #[inline(always)]
    pub fn launder_key(&mut self) {
        let words = &mut self.key as *mut SourceKey as *mut u64;
        // SAFETY: `SourceKey` is 16 bytes, 8-byte aligned.
        unsafe {
            *words = opaque(4, *words as usize) as u64;
            *words.add(1) = opaque(5, *words.add(1) as usize) as u64;
        }
    }

    pub const EMPTY: Known = Known {
        key: SourceKey { addr: [0; 16] },
        tracked: None,
        draw_prefixes: false,
        scan: false,
    };
}
