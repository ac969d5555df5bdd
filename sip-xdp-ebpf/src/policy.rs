//! Per-source policy: allowlist, denylist, bans and token buckets.
use aya_ebpf::maps::lpm_trie::Key;
use sip_xdp_common::{
    BAN_DURATION_CEILING_NS, BAN_EXTEND_GRANULARITY_NS, BanEvent, Config, EventCounter,
    FragmentFate, FragmentKey, LimitClass, MethodClass, RATE_WINDOW_NS, RateLimit, SourceKey,
    SourceState, Verdict, ban_event_kind, ban_flags, event_counter_index, flags, list_presence,
};

use crate::{
    maps::{
        ALLOWLIST, BAN_EVENTS, DENYLIST, FRAGMENTS, NEW_SOURCE, SOURCES, bump,
        list_may_have_entries,
    },
    parse::SipDatagram,
};

/// Escalation factors above this are clamped so `duration * factor` cannot overflow.
const MAX_BAN_FACTOR: u64 = 16;

#[inline(always)]
fn list_key(src: &[u8; 16]) -> Key<[u8; 16]> {
    Key::new(128, *src)
}

#[inline(always)]
fn is_allowlisted(src: &[u8; 16]) -> bool {
    list_may_have_entries(list_presence::ALLOWLIST) && ALLOWLIST.get(list_key(src)).is_some()
}

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

/// Which bucket a method draws from, if any.
#[inline(always)]
fn limit_class(cfg: &Config, class: MethodClass) -> Option<LimitClass> {
    match class {
        MethodClass::Register => Some(LimitClass::Register),
        MethodClass::Invite => Some(LimitClass::Invite),
        MethodClass::Options => Some(LimitClass::Options),
        MethodClass::Subscribe
        | MethodClass::Notify
        | MethodClass::Message
        | MethodClass::Prack
        | MethodClass::Update
        | MethodClass::Info
        | MethodClass::Refer
        | MethodClass::Publish => Some(LimitClass::Other),
        MethodClass::Ack | MethodClass::Bye | MethodClass::Cancel
            if cfg.has_flag(flags::LIMIT_IN_DIALOG) =>
        {
            Some(LimitClass::Other)
        }
        MethodClass::Response if cfg.has_flag(flags::LIMIT_RESPONSES) => Some(LimitClass::Other),
        _ => None,
    }
}

/// Per-source key of an IPv6 source grouped by prefix: the address masked to it.
#[inline(always)]
fn masked_key(cfg: &Config, src: &[u8; 16]) -> SourceKey {
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
fn key_is_address(cfg: &Config, is_ipv4: bool) -> bool {
    is_ipv4 || cfg.ipv6_source_mask[15] == 0xff
}

// Constant indices only: an index the optimizer cannot bound becomes a panic branch, and the
// verifier rejects the program for it.
#[inline(always)]
fn bucket(cfg: &Config, limit: LimitClass) -> &RateLimit {
    match limit {
        LimitClass::Register => &cfg.limits[0],
        LimitClass::Invite => &cfg.limits[1],
        LimitClass::Options => &cfg.limits[2],
        LimitClass::Other => &cfg.limits[3],
    }
}

#[inline(always)]
fn tat_mut(state: &mut SourceState, limit: LimitClass) -> &mut u64 {
    match limit {
        LimitClass::Register => &mut state.tat_ns[0],
        LimitClass::Invite => &mut state.tat_ns[1],
        LimitClass::Options => &mut state.tat_ns[2],
        LimitClass::Other => &mut state.tat_ns[3],
    }
}

/// GCRA: does one more packet fit the bucket? Updates the bucket when it does.
#[inline(always)]
fn conforms(tat_ns: &mut u64, limit: &RateLimit, now_ns: u64) -> bool {
    let tat = if *tat_ns > now_ns { *tat_ns } else { now_ns };
    if tat - now_ns > limit.burst_tolerance_ns {
        return false;
    }
    *tat_ns = tat + limit.interval_ns;
    true
}

#[inline(always)]
fn is_banned(cfg: &Config, state: &SourceState, now_ns: u64) -> bool {
    now_ns < state.banned_until_ns
        && (state.ban_flags & ban_flags::MONITOR_ONLY == 0 || cfg.has_flag(flags::MONITOR))
}

#[inline(always)]
fn impose_ban(
    cfg: &Config,
    src: &SourceKey,
    state: &mut SourceState,
    limit: LimitClass,
    now_ns: u64,
) {
    let quiet_since_last = state.banned_until_ns == 0
        || now_ns.saturating_sub(state.banned_until_ns) > cfg.strike_decay_ns;
    if quiet_since_last {
        state.strikes = 0;
    }
    let factor = if (cfg.ban_factor as u64) < MAX_BAN_FACTOR {
        cfg.ban_factor as u64
    } else {
        MAX_BAN_FACTOR
    };
    let mut duration_ns = if state.strikes == 0 {
        cfg.ban_base_ns
    } else {
        state.ban_duration_ns * factor
    };
    if duration_ns > cfg.ban_max_ns {
        duration_ns = cfg.ban_max_ns;
    }
    if duration_ns > BAN_DURATION_CEILING_NS {
        duration_ns = BAN_DURATION_CEILING_NS;
    }
    let monitor = cfg.has_flag(flags::MONITOR);
    state.strikes += 1;
    state.ban_duration_ns = duration_ns;
    state.banned_until_ns = now_ns + duration_ns;
    state.ban_class = limit as u8;
    // A new ban replaces the previous one, reported or not: user space hears of its end once.
    state.ban_flags = ban_flags::EXPIRY_PENDING | if monitor { ban_flags::MONITOR_ONLY } else { 0 };

    bump(event_counter_index(if monitor {
        EventCounter::WouldBans
    } else {
        EventCounter::BansIssued
    }));
    let Some(mut entry) = BAN_EVENTS.reserve::<BanEvent>(0) else {
        bump(event_counter_index(EventCounter::EventsLost));
        return;
    };
    // Written in place in the ring buffer: no stack copy of the event.
    entry.write(BanEvent {
        addr: src.addr,
        now_ns,
        banned_until_ns: state.banned_until_ns,
        duration_ns,
        window_ns: now_ns - state.window_start_ns,
        window_packets: state.window_packets,
        strikes: state.strikes,
        kind: if monitor {
            ban_event_kind::WOULD_BAN
        } else {
            ban_event_kind::BAN
        },
        limit_class: limit as u8,
        _pad: [0; 6],
    });
    entry.submit(0);
}

/// Reports the end of the source's last ban (or would-be ban), once. Not inlined: as a call of
/// its own, the verifier prunes its repeated walks of the ring-buffer code (about 1k verified
/// instructions for the whole feature, against 3k inlined).
#[inline(never)]
fn report_expiry(src: &SourceKey, state: &mut SourceState, now_ns: u64) {
    // Cleared before reserving: with the ring buffer full, retrying on every later packet of
    // the source would only count more lost events.
    state.ban_flags &= !ban_flags::EXPIRY_PENDING;
    let Some(mut entry) = BAN_EVENTS.reserve::<BanEvent>(0) else {
        bump(event_counter_index(EventCounter::EventsLost));
        return;
    };
    entry.write(BanEvent {
        addr: src.addr,
        now_ns,
        banned_until_ns: state.banned_until_ns,
        duration_ns: state.ban_duration_ns,
        window_ns: now_ns.wrapping_sub(state.window_start_ns),
        window_packets: state.window_packets,
        strikes: state.strikes,
        kind: ban_event_kind::EXPIRED,
        limit_class: state.ban_class,
        _pad: [0; 6],
    });
    entry.submit(0);
}

/// Decides the fate of a datagram to a SIP port. Inlined into the program, so that a banned
/// source, which a flood makes the common case, is dropped without a BPF-to-BPF call (a call
/// and a return cost more than the rest of this path) and without either list lookup (a trie
/// walk each).
///
/// Reading the ban before the lists is sound only where the key is the address itself: an
/// allowlisted address never gets an entry of its own (it passes before one is made, and user
/// space forgets the entries inside a CIDR it allowlists), while a masked IPv6 key is shared
/// with the other addresses of its prefix, one of which may be allowlisted.
#[inline(always)]
pub fn sip_verdict(cfg: &Config, datagram: &SipDatagram, now_ns: u64) -> Verdict {
    let whole = key_is_address(cfg, datagram.is_ipv4);
    let masked;
    let key = if whole {
        // SAFETY: `SourceKey` is `repr(C)` around exactly this `[u8; 16]`: no copy needed.
        unsafe { &*(&datagram.src as *const [u8; 16] as *const SourceKey) }
    } else {
        masked = masked_key(cfg, &datagram.src);
        &masked
    };
    // SAFETY: the pointer comes from a successful lookup; concurrent updates from other CPUs can
    // at worst lose an increment, which a rate limiter tolerates.
    let mut tracked = SOURCES.get_ptr_mut(key).map(|state| unsafe { &mut *state });
    if whole
        && let Some(state) = tracked.as_deref_mut()
        && is_banned(cfg, state, now_ns)
    {
        count_packet(state, now_ns);
        return drop_banned(cfg, state, now_ns);
    }
    listed_or_limited(cfg, datagram, key, tracked, now_ns)
}

#[inline(always)]
fn count_packet(state: &mut SourceState, now_ns: u64) {
    state.packets += 1;
    if now_ns.wrapping_sub(state.window_start_ns) >= RATE_WINDOW_NS {
        state.window_start_ns = now_ns;
        state.window_packets = 0;
    }
    state.window_packets += 1;
}

#[inline(always)]
fn drop_banned(cfg: &Config, state: &mut SourceState, now_ns: u64) -> Verdict {
    if cfg.has_flag(flags::EXTEND_WHILE_ACTIVE) {
        let until = now_ns + cfg.ban_extend_ns;
        if until > state.banned_until_ns + BAN_EXTEND_GRANULARITY_NS {
            state.banned_until_ns = until;
        }
    }
    state.dropped += 1;
    Verdict::DropBanned
}

/// [`sip_verdict`] for a source not known to be banned: lists, then its bucket. Not inlined: the
/// verifier then walks it once per class rather than once per combination of the caller's
/// registers, and its stack frame is its own (inlining all of the policy took the program past
/// the 512-byte stack).
#[inline(never)]
fn listed_or_limited(
    cfg: &Config,
    datagram: &SipDatagram,
    key: &SourceKey,
    tracked: Option<&mut SourceState>,
    now_ns: u64,
) -> Verdict {
    let src = &datagram.src;
    let class = datagram.class;
    if is_allowlisted(src) {
        return Verdict::PassAllowlisted;
    }
    if is_denylisted(src, now_ns) {
        return Verdict::DropDenylisted;
    }
    let malformed_verdict = if cfg.has_flag(flags::DROP_MALFORMED) {
        Verdict::DropMalformed
    } else {
        Verdict::Pass
    };
    let limit = limit_class(cfg, class);

    let Some(state) = tracked else {
        // First packet from this source (or it was evicted): only a limited class needs state.
        if class == MethodClass::Malformed {
            return malformed_verdict;
        }
        let Some(limit) = limit else {
            return Verdict::Pass;
        };
        let bucket = bucket(cfg, limit);
        if bucket.is_unlimited() {
            return Verdict::Pass;
        }
        let Some(staged) = NEW_SOURCE.get_ptr_mut(0) else {
            return Verdict::Pass;
        };
        // SAFETY: per-CPU scratch entry, used by this packet only.
        let staged = unsafe { &mut *staged };
        staged.tat_ns = [0; LimitClass::COUNT];
        // A burst is at least one packet, so the first always conforms.
        *tat_mut(staged, limit) = now_ns + bucket.interval_ns;
        staged.banned_until_ns = 0;
        staged.ban_duration_ns = 0;
        staged.window_start_ns = now_ns;
        staged.packets = 1;
        staged.dropped = 0;
        staged.window_packets = 1;
        staged.strikes = 0;
        staged.ban_class = 0;
        staged.ban_flags = 0;
        if SOURCES.insert(key, &*staged, 0).is_err() {
            bump(event_counter_index(EventCounter::TrackFailures));
        }
        return Verdict::Pass;
    };

    count_packet(state, now_ns);
    // A masked key's ban is read here, after the lists.
    if is_banned(cfg, state, now_ns) {
        return drop_banned(cfg, state, now_ns);
    }
    // Not `!is_banned`: a monitor-only ban that enforcing mode ignores has not run out yet.
    if state.ban_flags & ban_flags::EXPIRY_PENDING != 0 && now_ns >= state.banned_until_ns {
        report_expiry(key, state, now_ns);
    }
    if class == MethodClass::Malformed {
        if malformed_verdict.is_drop() {
            state.dropped += 1;
        }
        return malformed_verdict;
    }
    let Some(limit) = limit else {
        return Verdict::Pass;
    };
    let bucket = bucket(cfg, limit);
    if bucket.is_unlimited() || conforms(tat_mut(state, limit), bucket, now_ns) {
        return Verdict::Pass;
    }
    impose_ban(cfg, key, state, limit, now_ns);
    state.dropped += 1;
    Verdict::DropRate
}

/// Remembers what happened to a first fragment so its followers share its fate.
#[inline(always)]
pub fn record_first_fragment(src: &[u8; 16], id: u32, verdict: Verdict) {
    let key = FragmentKey {
        src: *src,
        id,
        _pad: 0,
    };
    let fate = FragmentFate {
        dropped: verdict.is_drop() as u32,
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
