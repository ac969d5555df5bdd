//! Bans, of one source (`SOURCES`, durable in `BANS`) or of a prefix (`PREFIXES`, durable in
//! `PREFIX_BANS`): imposing and escalating them, keeping them out of reach of LRU eviction,
//! extending them while the banned keep sending, restoring them, and reporting their end. Both
//! kinds share the state layout (`SourceState`) and this code, monomorphized per key.
use sip_xdp_common::{
    BAN_DURATION_CEILING_NS, BAN_EXTEND_GRANULARITY_NS, BanEvent, Config, DurableBan, EventCounter,
    LimitClass, PrefixKey, RATE_WINDOW_NS, RateLimit, SourceKey, SourceState, Verdict,
    ban_event_kind, ban_flags, event_counter_index, flags,
};

use crate::{
    buckets::{draw, extension_limit},
    maps::{
        BAN_EVENTS, BANS, NEW_SOURCE, PREFIX_BANS, PREFIXES, SOURCES, bump, raise_prefix_bans_until,
    },
};

/// Escalation factors above this are clamped so `duration * factor` cannot overflow.
const MAX_BAN_FACTOR: u64 = sip_xdp_common::MAX_BAN_FACTOR as u64;

/// What can be banned: its state table, its durable table, and how its events name it.
pub trait BanKey {
    fn state(&self) -> Option<&'static mut SourceState>;
    /// Makes the key's state; false when the table refused it.
    fn insert_state(&self, state: &SourceState) -> bool;
    fn durable(&self) -> Option<DurableBan>;
    /// Writes the durable record; false when the table is full.
    fn persist(&self, record: &DurableBan) -> bool;
    fn forget_durable(&self);
    fn clear_durable_expiry(&self);
    fn addr(&self) -> [u8; 16];
    /// 0 for a source; the prefix length (128-bit form) for a prefix.
    fn prefix_len(&self) -> u8;
}

impl BanKey for SourceKey {
    #[inline(always)]
    fn state(&self) -> Option<&'static mut SourceState> {
        // SAFETY: a pointer from a successful lookup; concurrent updates from other CPUs can at
        // worst lose an increment, which a rate limiter tolerates.
        SOURCES
            .get_ptr_mut(self)
            .map(|state| unsafe { &mut *state })
    }
    #[inline(always)]
    fn insert_state(&self, state: &SourceState) -> bool {
        SOURCES.insert(self, state, 0).is_ok()
    }
    #[inline(always)]
    fn durable(&self) -> Option<DurableBan> {
        // SAFETY: a plain copy out of a value that concurrent writers replace whole or in place.
        BANS.get_ptr(self).map(|record| unsafe { *record })
    }
    #[inline(always)]
    fn persist(&self, record: &DurableBan) -> bool {
        BANS.insert(self, record, 0).is_ok()
    }
    #[inline(always)]
    fn forget_durable(&self) {
        let _ = BANS.remove(self);
    }
    #[inline(always)]
    fn clear_durable_expiry(&self) {
        if let Some(record) = BANS.get_ptr_mut(self) {
            // SAFETY: pointer from a successful lookup; a lost race only repeats one report.
            unsafe { (*record).ban_flags &= !ban_flags::EXPIRY_PENDING };
        }
    }
    #[inline(always)]
    fn addr(&self) -> [u8; 16] {
        self.addr
    }
    #[inline(always)]
    fn prefix_len(&self) -> u8 {
        0
    }
}

impl BanKey for PrefixKey {
    #[inline(always)]
    fn state(&self) -> Option<&'static mut SourceState> {
        // SAFETY: as for `SOURCES`.
        PREFIXES
            .get_ptr_mut(self)
            .map(|state| unsafe { &mut *state })
    }
    #[inline(always)]
    fn insert_state(&self, state: &SourceState) -> bool {
        PREFIXES.insert(self, state, 0).is_ok()
    }
    #[inline(always)]
    fn durable(&self) -> Option<DurableBan> {
        // SAFETY: as for `BANS`.
        PREFIX_BANS.get_ptr(self).map(|record| unsafe { *record })
    }
    #[inline(always)]
    fn persist(&self, record: &DurableBan) -> bool {
        // Raised first: a packet that reads the new end in PREFIX_BANS must not find the
        // early check switched off.
        raise_prefix_bans_until(record.banned_until_ns);
        PREFIX_BANS.insert(self, record, 0).is_ok()
    }
    #[inline(always)]
    fn forget_durable(&self) {
        let _ = PREFIX_BANS.remove(self);
    }
    #[inline(always)]
    fn clear_durable_expiry(&self) {
        if let Some(record) = PREFIX_BANS.get_ptr_mut(self) {
            // SAFETY: as for `BANS`.
            unsafe { (*record).ban_flags &= !ban_flags::EXPIRY_PENDING };
        }
    }
    #[inline(always)]
    fn addr(&self) -> [u8; 16] {
        self.addr
    }
    #[inline(always)]
    fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

#[inline(always)]
pub fn is_banned(cfg: &Config, state: &SourceState, now_ns: u64) -> bool {
    now_ns < state.banned_until_ns
        && (state.ban_flags & ban_flags::MONITOR_ONLY == 0 || cfg.has_flag(flags::MONITOR))
}

#[inline(always)]
pub fn count_packet(state: &mut SourceState, now_ns: u64) {
    state.packets += 1;
    if now_ns.wrapping_sub(state.window_start_ns) >= RATE_WINDOW_NS {
        state.window_start_ns = now_ns;
        state.window_packets = 0;
    }
    state.window_packets += 1;
}

/// Writes the ban to its durable table, where no flood of new sources can evict it. Not
/// inlined: it runs once per ban or extension, and its record stays off the caller's stack.
#[inline(never)]
fn persist_ban<K: BanKey>(key: &K, state: &SourceState) {
    let record = DurableBan::of(state);
    // Replacing an existing key always succeeds in a preallocated hash; a new key fails only
    // when the table is full.
    if !key.persist(&record) {
        bump(event_counter_index(EventCounter::BanTableFull));
    }
}

/// Bans the key, escalating from its strikes, and reports it. `ban_class` is the
/// [`LimitClass`] that ran dry, `BAN_CLASS_AUTH` with the failure kind (egress program), or
/// `BAN_CLASS_SIGNATURE` with the signature's kind (scan program). The ban lasts at least
/// `min_duration_ns` (0 for the rate and auth bans: a constant the inlined code drops), still
/// within `ban_max_ns`.
#[inline(always)]
pub fn impose_ban<K: BanKey>(
    cfg: &Config,
    key: &K,
    state: &mut SourceState,
    ban_class: u8,
    min_duration_ns: u64,
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
    if duration_ns < min_duration_ns {
        duration_ns = min_duration_ns;
    }
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
    persist_ban(key, state);

    bump(event_counter_index(if monitor {
        EventCounter::WouldBans
    } else {
        EventCounter::BansIssued
    }));
    let prefix_len = key.prefix_len();
    if prefix_len != 0 {
        bump(event_counter_index(EventCounter::PrefixBans));
    }
    let Some(mut entry) = BAN_EVENTS.reserve::<BanEvent>(0) else {
        bump(event_counter_index(EventCounter::EventsLost));
        return;
    };
    // Written in place in the ring buffer: no stack copy of the event.
    entry.write(BanEvent {
        addr: key.addr(),
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
        prefix_len,
        _pad: [0; 3],
    });
    entry.submit(0);
}

/// Reports the end of the key's last ban (or would-be ban), once, when its first packet after
/// the end arrives. Not inlined: as a call of its own, the verifier prunes its repeated walks of
/// the ring-buffer code (about 1k verified instructions for the whole feature, against 3k
/// inlined).
#[inline(never)]
pub fn report_expiry<K: BanKey>(key: &K, state: &mut SourceState, now_ns: u64) {
    // Cleared before reserving: with the ring buffer full, retrying on every later packet
    // would only count more lost events. Cleared in the durable copy too, or a key evicted and
    // restored would report the same end twice.
    state.ban_flags &= !ban_flags::EXPIRY_PENDING;
    key.clear_durable_expiry();
    let Some(mut entry) = BAN_EVENTS.reserve::<BanEvent>(0) else {
        bump(event_counter_index(EventCounter::EventsLost));
        return;
    };
    entry.write(BanEvent {
        addr: key.addr(),
        now_ns,
        banned_until_ns: state.banned_until_ns,
        duration_ns: state.ban_duration_ns,
        window_ns: now_ns.wrapping_sub(state.window_start_ns),
        window_packets: state.window_packets,
        strikes: state.strikes,
        kind: ban_event_kind::EXPIRED,
        limit_class: state.ban_class,
        port: 0,
        prefix_len: key.prefix_len(),
        _pad: [0; 3],
    });
    entry.submit(0);
}

/// Reports the end of a ban that ran out, if not reported yet. Not `!is_banned`: a monitor-only
/// ban that enforcing mode ignores has not run out yet.
#[inline(always)]
pub fn report_if_expired<K: BanKey>(key: &K, state: &mut SourceState, now_ns: u64) {
    if state.ban_flags & ban_flags::EXPIRY_PENDING != 0 && now_ns >= state.banned_until_ns {
        report_expiry(key, state, now_ns);
    }
}

/// A banned key's packet: dropped. It still meets the bucket that banned it (its class is not
/// read): the ban is extended only while the banned keep exceeding it, so a burst forged in a
/// real peer's name cannot keep that peer banned while it sends at its normal rate.
#[inline(always)]
pub fn drop_banned<K: BanKey>(
    cfg: &Config,
    key: &K,
    state: &mut SourceState,
    limits: &[RateLimit; LimitClass::COUNT],
    now_ns: u64,
) -> Verdict {
    state.dropped += 1;
    if !cfg.has_flag(flags::EXTEND_WHILE_ACTIVE) {
        return Verdict::DropBanned;
    }
    if draw(state, limits, extension_limit(state.ban_class), now_ns) {
        return Verdict::DropBanned;
    }
    let until = now_ns + cfg.ban_extend_ns;
    if until > state.banned_until_ns + BAN_EXTEND_GRANULARITY_NS {
        state.banned_until_ns = until;
        persist_ban(key, state);
    }
    Verdict::DropBanned
}

/// A key missing from its state table (new, or evicted by the LRU) whose ban or strikes are
/// still in its durable table: its state is rebuilt from the record, with full buckets, so the
/// ban holds and the next one escalates. A record whose strikes have decayed is removed
/// instead. `verified_until` reads the source's verification (0 for a prefix), only when a
/// record is restored.
#[inline(always)]
pub fn restore_ban<K: BanKey>(
    cfg: &Config,
    key: &K,
    verified_until: impl FnOnce() -> u64,
    now_ns: u64,
) -> Option<&'static mut SourceState> {
    let record = key.durable()?;
    if now_ns > record.banned_until_ns && now_ns - record.banned_until_ns > cfg.strike_decay_ns {
        key.forget_durable();
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
    staged.verified_until_ns = verified_until();
    staged.flow_bans_until_ns = 0;
    if !key.insert_state(staged) {
        bump(event_counter_index(if key.prefix_len() != 0 {
            EventCounter::PrefixTrackFailures
        } else {
            EventCounter::TrackFailures
        }));
        return None;
    }
    bump(event_counter_index(EventCounter::BansRestored));
    key.state()
}

/// A fresh state for a key's first packet of the class `limit` indexes: that bucket drawn once
/// (a burst is at least one packet, so the first always conforms), no ban. False when the
/// table refused it.
#[inline(always)]
pub fn new_state<K: BanKey>(
    key: &K,
    limit: usize,
    interval_ns: u64,
    verified_until_ns: u64,
    now_ns: u64,
) -> bool {
    let Some(staged) = NEW_SOURCE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU scratch entry, used by this packet only.
    let staged = unsafe { &mut *staged };
    staged.tat_ns = [0; LimitClass::COUNT];
    if let Some(tat_ns) = staged.tat_ns.get_mut(limit) {
        *tat_ns = now_ns + interval_ns;
    }
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
    key.insert_state(staged)
}
