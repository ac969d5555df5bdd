//! Per-source policy: the ban read before the payload, then the allowlist, denylist, protected
//! list, the source's token buckets, the admission budget and its prefixes' buckets.
use aya_ebpf::maps::lpm_trie::Key;
use sip_xdp_common::{
    Config, EventCounter, FlowKey, FragmentFate, FragmentKey, LimitClass, MethodClass, RateLimit,
    SourceKey, SourceState, Verdict, allow_flags, event_counter_index, flags, list_presence,
};

use crate::{
    bans::{
        BanKey, count_packet, drop_banned, impose_ban, is_banned, new_state, report_if_expired,
        restore_ban,
    },
    buckets::{NO_LIMIT, draw, limit_index},
    maps::opaque,
    maps::{
        ALLOWLIST, DENYLIST, FLOWS, FRAGMENTS, GLOBAL_BUCKETS_ADMISSION, PROTECTED, VERIFIED, bump,
        global_bucket, list_may_have_entries,
    },
    parse::SipPacket,
    prefixes,
};

#[inline(always)]
fn list_key(src: &[u8; 16]) -> Key<[u8; 16]> {
    Key::new(128, *src)
}

/// An entry flagged as a hole (see `sip_xdp_common::MAPPED_HOLE_PREFIX`) lists nothing.
#[inline(always)]
pub fn is_allowlisted(src: &[u8; 16]) -> bool {
    list_may_have_entries(list_presence::ALLOWLIST)
        && ALLOWLIST
            .get(list_key(src))
            .is_some_and(|entry| entry.flags & allow_flags::HOLE == 0)
}

#[inline(always)]
pub fn is_protected(src: &[u8; 16]) -> bool {
    list_may_have_entries(list_presence::PROTECTED)
        && PROTECTED
            .get(list_key(src))
            .is_some_and(|entry| entry.flags & allow_flags::HOLE == 0)
}

/// A hole's expiry lies in the past, so it never denies.
#[inline(always)]
fn is_denylisted(src: &[u8; 16], now_ns: u64) -> bool {
    if !list_may_have_entries(list_presence::DENYLIST) {
        return false;
    }
    match DENYLIST.get(list_key(src)) {
        Some(entry) => entry.expires_at_ns == 0 || now_ns < entry.expires_at_ns,
        None => false,
    }
}

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

/// REGISTER and INVITE (class indices) from unverified sources draw from the admission budget.
#[inline(always)]
fn needs_admission(cfg: &Config, class: usize, verified: bool) -> bool {
    cfg.has_flag(flags::ANSWERS)
        && !verified
        && (class == MethodClass::Register as usize || class == MethodClass::Invite as usize)
}

/// One more unverified REGISTER or INVITE within the admission budget? A protected source (a
/// trunk authenticated by its address, which the server never challenges) is admitted anyway:
/// looked up only when the budget runs dry.
#[inline(always)]
fn admitted(cfg: &Config, src: &[u8; 16], now_ns: u64) -> bool {
    if cfg.admission.is_unlimited() {
        return true;
    }
    match global_bucket(GLOBAL_BUCKETS_ADMISSION) {
        Some(tat) => crate::buckets::conforms(tat, &cfg.admission, now_ns) || is_protected(src),
        None => true,
    }
}

/// Is the flow (address and port) banned by the egress program?
#[inline(always)]
fn flow_banned(src: &[u8; 16], port: u16, now_ns: u64) -> bool {
    let key = FlowKey {
        addr: *src,
        port,
        _pad: [0; 6],
    };
    // SAFETY: a plain read of a value the egress program replaces in place.
    match FLOWS.get_ptr(&key) {
        Some(flow) => now_ns < unsafe { (*flow).banned_until_ns },
        None => false,
    }
}

/// What the walk of one packet knows about its source before its payload is read.
/// The per-source key of the packet's source.
///
/// Byte by byte, as `masked_key` builds it: the verifier then holds the key's stack bytes as
/// plain data, the same on every path, where word copies would carry each path's known bits
/// (an IPv4 source's constant prefix) and split the walk of everything after it in two.
#[inline(always)]
fn source_key(cfg: &Config, packet: &SipPacket) -> SourceKey {
    if key_is_address(cfg, packet.is_ipv4) {
        SourceKey { addr: packet.src.0 }
    } else {
        masked_key(cfg, &packet.src.0)
    }
}

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
    };
}

/// The ban, decided from the addresses alone, before the payload is read: a flood from a banned
/// source, which a flood makes the common case, costs a header parse and one lookup. Inlined
/// into the program: a BPF-to-BPF call and its return cost more than the rest of this path.
///
/// Reading the ban before the lists is sound only where the key is the address itself: an
/// allowlisted address never gets an entry of its own (it passes before one is made, and user
/// space forgets the entries inside a CIDR it allowlists), while a masked IPv6 key is shared
/// with the other addresses of its prefix, one of which may be allowlisted. A banned prefix
/// checks the lists itself (`prefixes::early`).
#[inline(always)]
pub fn early(cfg: &Config, packet: &SipPacket, known: &mut Known, now_ns: u64) -> Option<Verdict> {
    let whole = key_is_address(cfg, packet.is_ipv4);
    known.key = source_key(cfg, packet);
    known.tracked = known.key.state();
    if whole
        && let Some(state) = known.tracked.as_deref_mut()
        && is_banned(cfg, state, now_ns)
    {
        count_packet(state, now_ns);
        let verified = is_verified(cfg, state.verified_until_ns, now_ns);
        return Some(drop_banned(
            cfg,
            &known.key,
            state,
            limits_for(cfg, verified),
            now_ns,
        ));
    }
    prefixes::early(cfg, packet, known, now_ns)
}

/// The classified packet of a source not known to be banned: lists, then its bucket and the
/// admission budget; `known.draw_prefixes` says whether its prefixes' buckets are drawn next. Not inlined: the verifier then walks it once per
/// class rather than once per combination of the caller's registers, and its stack frame is its
/// own (inlining all of the policy took the program past the 512-byte stack).
#[inline(never)]
pub fn listed_or_limited(
    cfg: &Config,
    packet: &SipPacket,
    known: &mut Known,
    now_ns: u64,
) -> Verdict {
    let src = &packet.src.0;
    // The class as an index the verifier does not know (`SipPacket::class_index`): one walk of
    // this function serves every class.
    let class = packet.class_index;
    if is_allowlisted(src) {
        return Verdict::PassAllowlisted;
    }
    if is_denylisted(src, now_ns) {
        return Verdict::DropDenylisted;
    }
    let drop_malformed = cfg.has_flag(flags::DROP_MALFORMED);
    let malformed = class == MethodClass::Malformed as usize;
    let limit = limit_index(class);

    let state = match known.tracked.take() {
        Some(state) => state,
        // A garbage flood from new sources is dropped before the ban table is read: dropped
        // either way, it need not pay the lookup.
        None if malformed && drop_malformed => {
            return Verdict::DropMalformed;
        }
        None => match restore_ban(cfg, &known.key, || verified_until(cfg, &known.key), now_ns) {
            Some(state) => state,
            None => return new_source(cfg, packet, known, limit, now_ns),
        },
    };
    let key = &known.key;

    count_packet(state, now_ns);
    // A masked key's ban, or a restored one, is read here, after the lists.
    if is_banned(cfg, state, now_ns) {
        let verified = is_verified(cfg, state.verified_until_ns, now_ns);
        return drop_banned(cfg, key, state, limits_for(cfg, verified), now_ns);
    }
    report_if_expired(key, state, now_ns);
    if malformed && drop_malformed {
        state.dropped += 1;
        return Verdict::DropMalformed;
    }
    // The egress program bans one phone of a verified address by its UDP flow; only while such
    // a ban lies ahead does a packet pay the lookup.
    if !packet.is_tcp()
        && state.flow_bans_until_ns > now_ns
        && flow_banned(src, packet.port, now_ns)
    {
        state.dropped += 1;
        bump(event_counter_index(EventCounter::FlowBannedDrops));
        return Verdict::DropBanned;
    }
    if limit == NO_LIMIT {
        return Verdict::Pass;
    }
    let verified = is_verified(cfg, state.verified_until_ns, now_ns);
    if !draw(state, limits_for(cfg, verified), limit, now_ns) {
        state.dropped += 1;
        // A protected source (a trunk, a registrar peer) is held to its buckets but never
        // banned: looked up here only, when a bucket runs dry, so it costs nothing on the common
        // path.
        if is_protected(src) {
            bump(event_counter_index(EventCounter::ProtectedDrops));
            return Verdict::DropRate;
        }
        impose_ban(cfg, key, state, limit as u8, now_ns);
        return Verdict::DropRate;
    }
    if needs_admission(cfg, class, verified) && !admitted(cfg, src, now_ns) {
        state.dropped += 1;
        return Verdict::DropAdmission;
    }
    known.draw_prefixes = !verified;
    Verdict::Pass
}

/// First packet from a source with no state and no saved ban: only a limited class needs state.
#[inline(always)]
fn new_source(
    cfg: &Config,
    packet: &SipPacket,
    known: &mut Known,
    limit: usize,
    now_ns: u64,
) -> Verdict {
    if packet.class_index == MethodClass::Malformed as usize && cfg.has_flag(flags::DROP_MALFORMED)
    {
        return Verdict::DropMalformed;
    }
    let Some(bucket) = limits_for(cfg, false).get(limit) else {
        return Verdict::Pass;
    };
    let _ = bucket;
    let verified_until_ns = verified_until(cfg, &known.key);
    let verified = is_verified(cfg, verified_until_ns, now_ns);
    // Beyond the budget, or its prefix's, an unverified request makes no state: a forged flood
    // with a new source every packet cannot churn the source table faster than they admit.
    if needs_admission(cfg, packet.class_index, verified) && !admitted(cfg, &packet.src.0, now_ns) {
        return Verdict::DropAdmission;
    }
    known.draw_prefixes = !verified;
    let Some(bucket) = limits_for(cfg, verified).get(limit) else {
        return Verdict::Pass;
    };
    if bucket.is_unlimited() {
        return Verdict::Pass;
    }
    if !new_state(
        &known.key,
        limit,
        bucket.interval_ns,
        verified_until_ns,
        now_ns,
    ) {
        bump(event_counter_index(EventCounter::TrackFailures));
    }
    Verdict::Pass
}

/// Remembers what happened to a first fragment so its followers share its fate.
#[inline(always)]
pub fn record_first_fragment(src: &[u8; 16], id: u32, dropped: bool) {
    let key = FragmentKey {
        src: *src,
        id,
        _pad: 0,
    };
    let fate = FragmentFate {
        dropped: dropped as u32,
        _pad: 0,
    };
    // Losing this entry only means a follower is treated as unknown: nothing to count.
    let _ = FRAGMENTS.insert(&key, &fate, 0);
}

/// Verdict and class for a non-first fragment.
#[inline(always)]
pub fn fragment_verdict(cfg: &Config, src: &[u8; 16], id: u32) -> (Verdict, MethodClass) {
    let key = FragmentKey {
        src: *src,
        id,
        _pad: 0,
    };
    // SAFETY: a plain read of a value that user space never writes.
    let dropped = FRAGMENTS
        .get_ptr(&key)
        .map(|fate| unsafe { (*fate).dropped });
    match dropped {
        Some(0) => (Verdict::Pass, MethodClass::Fragment),
        Some(_) => (Verdict::DropFragment, MethodClass::Fragment),
        None if cfg.has_flag(flags::DROP_UNKNOWN_FRAGMENTS) => {
            if is_allowlisted(src) {
                (Verdict::PassAllowlisted, MethodClass::Fragment)
            } else {
                (Verdict::DropFragment, MethodClass::Fragment)
            }
        }
        None => (Verdict::PassNotSip, MethodClass::Fragment),
    }
}
