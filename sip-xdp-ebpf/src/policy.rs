//! Per-source policy: allowlist, denylist, bans, the protected list and token buckets.
use aya_ebpf::maps::lpm_trie::Key;
use sip_xdp_common::{
    BAN_DURATION_CEILING_NS, BAN_EXTEND_GRANULARITY_NS, BanEvent, Config, DurableBan, EventCounter,
    FragmentFate, FragmentKey, LimitClass, MethodClass, RATE_WINDOW_NS, RateLimit, SourceKey,
    SourceState, Verdict, allow_flags, ban_event_kind, ban_flags, event_counter_index, flags,
    list_presence,
};

use crate::{
    maps::{
        ALLOWLIST, BAN_EVENTS, BANS, DENYLIST, FLOWS, FRAGMENTS, GLOBAL_BUCKETS_ADMISSION,
        NEW_SOURCE, PROTECTED, SOURCES, VERIFIED, bump, global_bucket, list_may_have_entries,
    },
    parse::SipDatagram,
};
use sip_xdp_common::FlowKey;

/// Escalation factors above this are clamped so `duration * factor` cannot overflow.
const MAX_BAN_FACTOR: u64 = sip_xdp_common::MAX_BAN_FACTOR as u64;

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

/// Which bucket a class draws from: every SIP class has one, so no packet shape reaches the
/// server at line rate (a bucket whose rate is "unlimited" lets its class through).
#[inline(always)]
fn limit_class(class: MethodClass) -> Option<LimitClass> {
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
        MethodClass::Ack | MethodClass::Bye | MethodClass::Cancel => Some(LimitClass::InDialog),
        MethodClass::Response => Some(LimitClass::Response),
        MethodClass::KeepAlive => Some(LimitClass::KeepAlive),
        MethodClass::Malformed => Some(LimitClass::Malformed),
        MethodClass::TcpSyn => Some(LimitClass::Connection),
        MethodClass::Fragment
        | MethodClass::NotSip
        | MethodClass::Unparsed
        | MethodClass::Tcp
        | MethodClass::Unread => None,
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

// Constant indices only: an index the optimizer cannot bound becomes a panic branch, and the
// verifier rejects the program for it.
#[inline(always)]
fn bucket(limits: &[RateLimit; LimitClass::COUNT], limit: LimitClass) -> &RateLimit {
    match limit {
        LimitClass::Register => &limits[0],
        LimitClass::Invite => &limits[1],
        LimitClass::Options => &limits[2],
        LimitClass::Other => &limits[3],
        LimitClass::InDialog => &limits[4],
        LimitClass::Response => &limits[5],
        LimitClass::KeepAlive => &limits[6],
        LimitClass::Malformed => &limits[7],
        LimitClass::Connection => &limits[8],
    }
}

/// Whether the source counts as verified now: only while the egress program is attached
/// (`ANSWERS`), so that a stale verification cannot loosen limits nobody refreshes.
#[inline(always)]
fn is_verified(cfg: &Config, verified_until_ns: u64, now_ns: u64) -> bool {
    cfg.has_flag(flags::ANSWERS) && now_ns < verified_until_ns
}

/// The buckets a source draws from: a verified source's looser ones, or the defaults.
#[inline(always)]
fn limits_for(cfg: &Config, verified: bool) -> &[RateLimit; LimitClass::COUNT] {
    if verified {
        &cfg.verified_limits
    } else {
        &cfg.limits
    }
}

/// Expiry of the source's verification in `VERIFIED`, 0 when it has none. Read when a source's
/// entry is made or rebuilt; the egress program keeps the entry's copy current after that.
#[inline(always)]
fn verified_until(cfg: &Config, key: &SourceKey) -> u64 {
    if !cfg.has_flag(flags::ANSWERS) {
        return 0;
    }
    // SAFETY: a plain read of a value the egress program replaces in place.
    match VERIFIED.get_ptr(key) {
        Some(verified) => unsafe { (*verified).verified_until_ns },
        None => 0,
    }
}

/// REGISTER and INVITE from unverified sources draw from the admission budget.
#[inline(always)]
fn needs_admission(cfg: &Config, class: MethodClass, verified: bool) -> bool {
    cfg.has_flag(flags::ANSWERS)
        && !verified
        && matches!(class, MethodClass::Register | MethodClass::Invite)
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

#[inline(always)]
fn tat_mut(state: &mut SourceState, limit: LimitClass) -> &mut u64 {
    match limit {
        LimitClass::Register => &mut state.tat_ns[0],
        LimitClass::Invite => &mut state.tat_ns[1],
        LimitClass::Options => &mut state.tat_ns[2],
        LimitClass::Other => &mut state.tat_ns[3],
        LimitClass::InDialog => &mut state.tat_ns[4],
        LimitClass::Response => &mut state.tat_ns[5],
        LimitClass::KeepAlive => &mut state.tat_ns[6],
        LimitClass::Malformed => &mut state.tat_ns[7],
        LimitClass::Connection => &mut state.tat_ns[8],
    }
}

/// GCRA: does one more packet fit the bucket? Updates the bucket when it does.
#[inline(always)]
pub fn conforms(tat_ns: &mut u64, limit: &RateLimit, now_ns: u64) -> bool {
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

/// Writes the source's ban to the durable `BANS` table, where no flood of new sources can evict
/// it. Not inlined: it runs once per ban or extension, and its record stays off the caller's
/// stack.
#[inline(never)]
fn persist_ban(key: &SourceKey, state: &SourceState) {
    let record = DurableBan::of(state);
    // Replacing an existing key always succeeds in a preallocated hash; a new key fails only
    // when the table is full.
    if BANS.insert(key, &record, 0).is_err() {
        bump(event_counter_index(EventCounter::BanTableFull));
    }
}

/// Bans the source, escalating from its strikes, and reports it. `ban_class` is the
/// [`LimitClass`] that ran dry, or `BAN_CLASS_AUTH` with the failure kind (egress program).
#[inline(always)]
pub fn impose_ban(
    cfg: &Config,
    src: &SourceKey,
    state: &mut SourceState,
    ban_class: u8,
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
    state.ban_class = ban_class;
    // A new ban replaces the previous one, reported or not: user space hears of its end once.
    state.ban_flags = ban_flags::EXPIRY_PENDING | if monitor { ban_flags::MONITOR_ONLY } else { 0 };
    persist_ban(src, state);

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
        limit_class: ban_class,
        port: 0,
        prefix_len: 0,
        _pad: [0; 3],
    });
    entry.submit(0);
}

/// Reports the end of the source's last ban (or would-be ban), once. Not inlined: as a call of
/// its own, the verifier prunes its repeated walks of the ring-buffer code (about 1k verified
/// instructions for the whole feature, against 3k inlined).
#[inline(never)]
fn report_expiry(src: &SourceKey, state: &mut SourceState, now_ns: u64) {
    // Cleared before reserving: with the ring buffer full, retrying on every later packet of
    // the source would only count more lost events. Cleared in the durable copy too, or a
    // source evicted and restored would report the same end twice.
    state.ban_flags &= !ban_flags::EXPIRY_PENDING;
    if let Some(record) = BANS.get_ptr_mut(src) {
        // SAFETY: pointer from a successful lookup; a lost race only repeats one report.
        unsafe { (*record).ban_flags &= !ban_flags::EXPIRY_PENDING };
    }
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
        port: 0,
        prefix_len: 0,
        _pad: [0; 3],
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
        return drop_banned(cfg, key, state, datagram.class, now_ns);
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

/// A banned source's packet. The packet still meets its class's bucket: the ban is extended
/// only while the source keeps exceeding it, so a burst forged in a real peer's name cannot
/// keep that peer banned while it sends at its normal rate.
#[inline(always)]
fn drop_banned(
    cfg: &Config,
    key: &SourceKey,
    state: &mut SourceState,
    class: MethodClass,
    now_ns: u64,
) -> Verdict {
    state.dropped += 1;
    if !cfg.has_flag(flags::EXTEND_WHILE_ACTIVE) {
        return Verdict::DropBanned;
    }
    let Some(limit) = limit_class(class) else {
        return Verdict::DropBanned;
    };
    let verified = is_verified(cfg, state.verified_until_ns, now_ns);
    let bucket = bucket(limits_for(cfg, verified), limit);
    if bucket.is_unlimited() || conforms(tat_mut(state, limit), bucket, now_ns) {
        return Verdict::DropBanned;
    }
    let until = now_ns + cfg.ban_extend_ns;
    if until > state.banned_until_ns + BAN_EXTEND_GRANULARITY_NS {
        state.banned_until_ns = until;
        persist_ban(key, state);
    }
    Verdict::DropBanned
}

/// A source missing from `SOURCES` (new, or evicted by the LRU) whose ban or strikes are still
/// in `BANS`: its entry is rebuilt from the record, with full buckets, so the ban holds and the
/// next one escalates. A record whose strikes have decayed is removed instead.
#[inline(always)]
fn restore_ban(cfg: &Config, key: &SourceKey, now_ns: u64) -> Option<&'static mut SourceState> {
    // SAFETY: a plain copy out of a value that concurrent writers replace whole or in place.
    let record = unsafe { *BANS.get_ptr(key)? };
    if now_ns > record.banned_until_ns && now_ns - record.banned_until_ns > cfg.strike_decay_ns {
        let _ = BANS.remove(key);
        return None;
    }
    let staged = NEW_SOURCE.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch entry, used by this packet only.
    let staged = unsafe { &mut *staged };
    staged.tat_ns = [0; LimitClass::COUNT];
    staged.banned_until_ns = record.banned_until_ns;
    staged.ban_duration_ns = record.ban_duration_ns;
    staged.window_start_ns = now_ns;
    staged.packets = 0;
    staged.dropped = 0;
    staged.window_packets = 0;
    staged.strikes = record.strikes;
    staged.ban_class = record.ban_class;
    staged.ban_flags = record.ban_flags;
    staged.verified_until_ns = verified_until(cfg, key);
    staged.flow_bans_until_ns = 0;
    if SOURCES.insert(key, &*staged, 0).is_err() {
        bump(event_counter_index(EventCounter::TrackFailures));
        return None;
    }
    bump(event_counter_index(EventCounter::BansRestored));
    // SAFETY: as for every SOURCES lookup.
    SOURCES.get_ptr_mut(key).map(|state| unsafe { &mut *state })
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
    let drop_malformed = cfg.has_flag(flags::DROP_MALFORMED);
    let limit = limit_class(class);

    let state = match tracked {
        Some(state) => state,
        // A garbage flood from new sources is dropped before the ban table is read: dropped
        // either way, it need not pay the lookup.
        None if class == MethodClass::Malformed && drop_malformed => {
            return Verdict::DropMalformed;
        }
        None => match restore_ban(cfg, key, now_ns) {
            Some(state) => state,
            None => return new_source(cfg, key, src, class, limit, now_ns),
        },
    };

    count_packet(state, now_ns);
    // A masked key's ban, or a restored one, is read here, after the lists.
    if is_banned(cfg, state, now_ns) {
        return drop_banned(cfg, key, state, class, now_ns);
    }
    // Not `!is_banned`: a monitor-only ban that enforcing mode ignores has not run out yet.
    if state.ban_flags & ban_flags::EXPIRY_PENDING != 0 && now_ns >= state.banned_until_ns {
        report_expiry(key, state, now_ns);
    }
    if class == MethodClass::Malformed && drop_malformed {
        state.dropped += 1;
        return Verdict::DropMalformed;
    }
    // The egress program bans one phone of a verified address by its flow; only while such a
    // ban lies ahead does a packet pay the lookup.
    if state.flow_bans_until_ns > now_ns && flow_banned(src, datagram.port, now_ns) {
        state.dropped += 1;
        bump(event_counter_index(EventCounter::FlowBannedDrops));
        return Verdict::DropBanned;
    }
    let Some(limit) = limit else {
        return Verdict::Pass;
    };
    let verified = is_verified(cfg, state.verified_until_ns, now_ns);
    let bucket = bucket(limits_for(cfg, verified), limit);
    if bucket.is_unlimited() || conforms(tat_mut(state, limit), bucket, now_ns) {
        if needs_admission(cfg, class, verified) && !admitted(cfg, src, now_ns) {
            state.dropped += 1;
            return Verdict::DropAdmission;
        }
        return Verdict::Pass;
    }
    state.dropped += 1;
    // A protected source (a trunk, a registrar peer) is held to its buckets but never banned:
    // looked up here only, when a bucket runs dry, so it costs nothing on the common path.
    if is_protected(src) {
        bump(event_counter_index(EventCounter::ProtectedDrops));
        return Verdict::DropRate;
    }
    impose_ban(cfg, key, state, limit as u8, now_ns);
    Verdict::DropRate
}

/// First packet from a source with no state and no saved ban: only a limited class needs state.
#[inline(always)]
fn new_source(
    cfg: &Config,
    key: &SourceKey,
    src: &[u8; 16],
    class: MethodClass,
    limit: Option<LimitClass>,
    now_ns: u64,
) -> Verdict {
    if class == MethodClass::Malformed && cfg.has_flag(flags::DROP_MALFORMED) {
        return Verdict::DropMalformed;
    }
    let Some(limit) = limit else {
        return Verdict::Pass;
    };
    let verified_until_ns = verified_until(cfg, key);
    let verified = is_verified(cfg, verified_until_ns, now_ns);
    // Beyond the budget, an unverified request makes no state: a forged flood with a new
    // source every packet cannot churn the source table faster than the budget admits.
    if needs_admission(cfg, class, verified) && !admitted(cfg, src, now_ns) {
        return Verdict::DropAdmission;
    }
    let bucket = bucket(limits_for(cfg, verified), limit);
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
    staged.verified_until_ns = verified_until_ns;
    staged.flow_bans_until_ns = 0;
    if SOURCES.insert(key, &*staged, 0).is_err() {
        bump(event_counter_index(EventCounter::TrackFailures));
    }
    Verdict::Pass
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
