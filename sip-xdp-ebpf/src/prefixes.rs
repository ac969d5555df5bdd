//! Prefix aggregates: buckets per IPv4 /24 and IPv6 /64 and /48 (`Config::prefix_lens`) shared
//! by the unverified sources in them, on top of each source's own. A flood spread over a prefix,
//! each address under its own limit, runs the prefix's bucket dry and the prefix is banned as a
//! whole, with the usual escalation. Verified sources never draw from a prefix and are never
//! dropped by its ban, so an office does not pay for its neighbours' flood; allowlisted and
//! protected sources are not dropped by it either.
use sip_xdp_common::{
    Config, EventCounter, PREFIX_LEVEL_IPV4, PrefixKey, SourceState, Verdict, event_counter_index,
};

use crate::{
    bans::{
        BanKey, count_packet, drop_banned, impose_ban, is_banned, new_state, report_if_expired,
        restore_ban,
    },
    buckets::conforms,
    lists::{is_allowlisted, is_protected},
    maps::{bump, prefix_bans_until, raise_prefix_bans_until},
    parse::{Addr16, SipPacket},
    sources::{Known, is_verified, verified_until},
};

/// The source's prefix at `level` (a constant at every call), masked a word at a time.
#[inline(always)]
fn prefix_key(cfg: &Config, src: &Addr16, level: usize) -> PrefixKey {
    let [high, low] = src.words();
    // SAFETY: every mask of `Config` sits at an 8-byte offset of the 8-byte aligned config
    // (asserted at compile time in sip-xdp-common): two word loads, not sixteen byte loads.
    let [mask_high, mask_low] =
        unsafe { *(&cfg.prefix_masks[level] as *const [u8; 16] as *const [u64; 2]) };
    let mut key = PrefixKey {
        addr: [0; 16],
        prefix_len: cfg.prefix_lens[level],
        _pad: [0; 7],
    };
    // SAFETY: `PrefixKey` is 8-byte aligned and starts with its 16-byte address.
    unsafe {
        let words = &mut key as *mut PrefixKey as *mut u64;
        *words = high & mask_high;
        *words.add(1) = low & mask_low;
    }
    key
}

/// The IPv6 levels (the IPv4 one is `PREFIX_LEVEL_IPV4`).
const IPV6_FIRST: usize = 1;
const IPV6_SECOND: usize = 2;

/// Before the payload is read: is the source's prefix banned? Skipped for a tracked source
/// that is verified. Not inlined: it runs for sources not banned only, and its stack frame is
/// its own.
///
/// The states it finds are looked up again for the bucket draws rather than handed on: the
/// verifier would walk the rest of the policy once per combination of found and missing
/// pointers, past its instruction budget.
#[inline(never)]
pub fn early(cfg: &Config, packet: &SipPacket, known: &Known, now_ns: u64) -> Option<Verdict> {
    if let Some(state) = known.tracked.as_deref()
        && is_verified(cfg, state.verified_until_ns, now_ns)
    {
        return None;
    }
    // No prefix ban recorded lies ahead: none can hold the source, and the draw after the
    // payload looks the prefixes up (and restores them) anyway.
    if now_ns >= prefix_bans_until() {
        return None;
    }
    if packet.is_ipv4 {
        return early_level(cfg, packet, known, PREFIX_LEVEL_IPV4, now_ns);
    }
    if let Some(verdict) = early_level(cfg, packet, known, IPV6_FIRST, now_ns) {
        return Some(verdict);
    }
    early_level(cfg, packet, known, IPV6_SECOND, now_ns)
}

/// One level: the verdict of its ban, if it holds the source.
#[inline(always)]
fn early_level(
    cfg: &Config,
    packet: &SipPacket,
    known: &Known,
    level: usize,
    now_ns: u64,
) -> Option<Verdict> {
    if cfg.prefix_lens[level] == 0 {
        return None;
    }
    let key = prefix_key(cfg, &packet.src, level);
    let state = match key.state() {
        Some(state) => state,
        None => restore_ban(cfg, &key, || 0, now_ns)?,
    };
    if is_banned(cfg, state, now_ns) && !exempt(cfg, packet, known, now_ns) {
        count_packet(state, now_ns);
        bump(event_counter_index(EventCounter::PrefixBannedDrops));
        return Some(drop_banned(cfg, &key, state, &cfg.prefix_limits, now_ns));
    }
    None
}

/// A source a prefix ban does not drop: verified, allowlisted or protected. Looked up only when
/// the prefix is banned.
#[inline(never)]
fn exempt(cfg: &Config, packet: &SipPacket, known: &Known, now_ns: u64) -> bool {
    let verified_until_ns = match known.tracked.as_deref() {
        Some(state) => state.verified_until_ns,
        None => verified_until(cfg, &known.key),
    };
    is_verified(cfg, verified_until_ns, now_ns)
        || is_allowlisted(&packet.src.0)
        || is_protected(&packet.src.0)
}

/// After the source's own bucket and the admission budget let an unverified source's packet
/// through: its prefixes' buckets. True when one ran dry and the packet is dropped (its prefix
/// banned, unless the source is protected, which a prefix holds to nothing). `limit` is the
/// [`LimitClass`] index, below `LimitClass::COUNT`. Not inlined: its stack frame is its own.
///
/// The limit is an index, not a `LimitClass` matched to constant slots: the caller hands it
/// over as a number the verifier does not know, and indexing the bucket and arrival time with
/// it (bounded) walks this code once for every class.
#[inline(never)]
pub fn draw(cfg: &Config, packet: &SipPacket, limit: usize, now_ns: u64) -> bool {
    if packet.is_ipv4 {
        return draw_level(cfg, packet, limit, PREFIX_LEVEL_IPV4, now_ns);
    }
    draw_level(cfg, packet, limit, IPV6_FIRST, now_ns)
        || draw_level(cfg, packet, limit, IPV6_SECOND, now_ns)
}

#[inline(always)]
fn draw_level(cfg: &Config, packet: &SipPacket, limit: usize, level: usize, now_ns: u64) -> bool {
    if cfg.prefix_lens[level] == 0 {
        return false;
    }
    let Some(bucket) = cfg.prefix_limits.get(limit) else {
        return false;
    };
    if bucket.is_unlimited() {
        return false;
    }
    let key = prefix_key(cfg, &packet.src, level);
    // A prefix the LRU lost comes back with its strikes (its ban, if any, has ended: one in
    // force would have been found before the payload); a new one starts afresh.
    let found = match key.state() {
        Some(state) => Some(state),
        None => {
            let restored = restore_ban(cfg, &key, || 0, now_ns);
            // A ban in force restored here means the early check was off while it should not
            // have been (a record written without raising the end): raise it, so the next
            // packet is checked.
            if let Some(state) = restored.as_deref() {
                raise_prefix_bans_until(state.banned_until_ns);
            }
            restored
        }
    };
    let Some(state) = found else {
        if !new_state(&key, limit, bucket.interval_ns, 0, now_ns) {
            bump(event_counter_index(EventCounter::PrefixTrackFailures));
        }
        return false;
    };
    count_packet(state, now_ns);
    report_if_expired(&key, state, now_ns);
    let Some(tat_ns) = state.tat_ns.get_mut(limit) else {
        return false;
    };
    if conforms(tat_ns, bucket, now_ns) || is_protected(&packet.src.0) {
        return false;
    }
    state.dropped += 1;
    ban_prefix(cfg, &key, state, limit as u8, now_ns);
    true
}

/// Not inlined: a prefix ban is rare, and its event code would otherwise be walked per level.
#[inline(never)]
fn ban_prefix(cfg: &Config, key: &PrefixKey, state: &mut SourceState, ban_class: u8, now_ns: u64) {
    impose_ban(cfg, key, state, ban_class, 0, now_ns);
}
