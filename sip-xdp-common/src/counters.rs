//! The per-CPU `COUNTERS` array: one slot per (verdict, class), then the event counters.

use crate::{MethodClass, Verdict};

crate::classes::labelled_enum! {
    /// Counters that are not a (verdict, method) pair; they follow the packet matrix in
    /// `COUNTERS`.
    pub enum EventCounter {
        /// Bans the program imposed (enforcing mode).
        BansIssued => "bans_issued",
        /// Bans it would have imposed (monitor mode).
        WouldBans => "would_bans",
        /// Ban events lost because the ring buffer was full (user space not reading).
        EventsLost => "events_lost",
        /// New sources that could not be tracked (LRU insert failed); their packets passed.
        TrackFailures => "track_failures",
        /// Bans that could not be written to the durable `BANS` table because it was full: they
        /// hold in the source table only, where a flood of new sources can evict them.
        BanTableFull => "ban_table_full",
        /// Bans restored from `BANS` after the source table had evicted the source.
        BansRestored => "bans_restored",
        /// Packets of protected sources dropped by their bucket, which never bans them.
        ProtectedDrops => "protected_drops",
        /// Responses the egress program read (UDP from a SIP port, a status line).
        Answers => "answers",
        /// Successes (2xx to REGISTER or INVITE) that verified their client or renewed it.
        Verifications => "verifications",
        /// Verifications lost because `VERIFIED` was full.
        VerifiedTableFull => "verified_table_full",
        /// Failures counted, by [`AuthFailure`](crate::AuthFailure) (same order).
        FailuresForbidden => "failures_forbidden",
        FailuresNotFound => "failures_not_found",
        FailuresRechallenged => "failures_rechallenged",
        FailuresUnanswered => "failures_unanswered",
        /// Addresses banned (or, in monitor mode, that would be) for failed authentication.
        AuthBans => "auth_bans",
        /// Flows of verified addresses banned (or that would be) for failed authentication.
        FlowBans => "flow_bans",
        /// Packets of banned flows dropped at ingress.
        FlowBannedDrops => "flow_banned_drops",
        /// Answers to one unverified destination beyond its reflection bucket, dropped.
        ReflectionDestinationDrops => "reflection_destination_drops",
        /// Answers to unverified destinations beyond the total reflection bucket, dropped.
        ReflectionTotalDrops => "reflection_total_drops",
        /// Prefixes banned (or, in monitor mode, that would be) because their bucket ran dry.
        PrefixBans => "prefix_bans",
        /// Packets dropped because their source's prefix was banned.
        PrefixBannedDrops => "prefix_banned_drops",
        /// Prefix buckets that could not be tracked (LRU insert failed); their packets passed.
        PrefixTrackFailures => "prefix_track_failures",
        /// Sources banned (or, in monitor mode, that would be) for a scanner fingerprint.
        FingerprintBans => "fingerprint_bans",
        /// Sources banned (or that would be) for a request to a trap account.
        TrapBans => "trap_bans",
        /// Requests handed to the scan program (`Config` flag `SIGNATURES`).
        Scans => "scans",
        /// Requests that passed unscanned although signatures were on: the scan program was
        /// missing from `SCANNERS` or the payload could not be read.
        ScanFailures => "scan_failures",
        /// Requests whose headers ran past `MAX_SCAN_BYTES` or `MAX_SCAN_LOOKUPS`: the rest was
        /// not scanned.
        ScanTruncated => "scan_truncated",
        /// Trace events not sent: past `TRACE_EVENTS_PER_SEC`, or the trace ring buffer full.
        TraceDropped => "trace_dropped",
    }
}

/// The event counter of a signature kind's bans.
pub const fn signature_counter(kind: crate::SignatureKind) -> EventCounter {
    match kind {
        crate::SignatureKind::Fingerprint => EventCounter::FingerprintBans,
        crate::SignatureKind::Trap => EventCounter::TrapBans,
    }
}

/// The event counter of a failure kind.
pub const fn failure_counter(kind: crate::AuthFailure) -> EventCounter {
    match kind {
        crate::AuthFailure::Forbidden => EventCounter::FailuresForbidden,
        crate::AuthFailure::NotFound => EventCounter::FailuresNotFound,
        crate::AuthFailure::Rechallenged => EventCounter::FailuresRechallenged,
        crate::AuthFailure::Unanswered => EventCounter::FailuresUnanswered,
    }
}

/// Index into `COUNTERS` of the packet counter for (verdict, class).
pub const fn packet_counter_index(verdict: Verdict, class: MethodClass) -> u32 {
    (verdict as u32) * (MethodClass::COUNT as u32) + class as u32
}

/// Index into `COUNTERS` of an event counter.
pub const fn event_counter_index(counter: EventCounter) -> u32 {
    (Verdict::COUNT * MethodClass::COUNT) as u32 + counter as u32
}

/// Number of `u64` slots in the per-CPU `COUNTERS` array.
pub const COUNTER_SLOTS: u32 = (Verdict::COUNT * MethodClass::COUNT + EventCounter::COUNT) as u32;
