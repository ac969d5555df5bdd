//! Per-source policy: the ban read before the payload, then the allowlist, denylist, protected
//! list, the source's token buckets, the admission budget; the prefixes' buckets follow.
use sip_xdp_common::{
    Config, EventCounter, FlowKey, FragmentFate, FragmentKey, MethodClass, Verdict,
    event_counter_index, flags,
};

use crate::{
    bans::{
        BanKey, count_packet, drop_banned, impose_ban, is_banned, new_state, report_if_expired,
        restore_ban,
    },
    buckets::{NO_LIMIT, conforms, draw, limit_index},
    lists::{is_allowlisted, is_denylisted, is_protected},
    maps::{FLOWS, FRAGMENTS, GLOBAL_BUCKETS_ADMISSION, bump, global_bucket},
    parse::SipPacket,
    prefixes, signatures,
    sources::{Known, is_verified, key_is_address, limits_for, set_source_key, verified_until},
};

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
        Some(tat) => conforms(tat, &cfg.admission, now_ns) || is_protected(src),
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
    set_source_key(cfg, packet, &mut known.key);
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
/// admission budget; `known.draw_prefixes` says whether its prefixes' buckets are drawn next.
/// Not inlined: its stack frame is its own (inlining all of the policy took the program past
/// the 512-byte stack), and with the class an unknown index the verifier walks it once for
/// every class.
#[inline(never)]
pub fn listed_or_limited(
    cfg: &Config,
    packet: &SipPacket,
    known: &mut Known,
    now_ns: u64,
) -> Verdict {
    let verdict = limited(cfg, packet, known, now_ns);
    if verdict == Verdict::Pass {
        signatures::offer(cfg, packet, known, now_ns);
    }
    verdict
}

/// [`listed_or_limited`] up to its verdict.
#[inline(always)]
fn limited(cfg: &Config, packet: &SipPacket, known: &mut Known, now_ns: u64) -> Verdict {
    let src = &packet.src.0;
    // The class as an index the verifier does not know (`SipPacket::class_index`): one walk of
    // this function serves every class.
    let class = packet.class_index as usize;
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
        impose_ban(cfg, key, state, limit as u8, 0, now_ns);
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
    if packet.class_index == MethodClass::Malformed as u32 && cfg.has_flag(flags::DROP_MALFORMED) {
        return Verdict::DropMalformed;
    }
    if limit == NO_LIMIT {
        return Verdict::Pass;
    }
    let verified_until_ns = verified_until(cfg, &known.key);
    let verified = is_verified(cfg, verified_until_ns, now_ns);
    // Beyond the budget an unverified request makes no state: a forged flood with a new source
    // every packet cannot churn the source table faster than the budget admits. (Its prefixes'
    // buckets are drawn after the state is made, by the caller.)
    if needs_admission(cfg, packet.class_index as usize, verified)
        && !admitted(cfg, &packet.src.0, now_ns)
    {
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
