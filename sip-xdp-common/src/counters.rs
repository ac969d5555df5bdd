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
