//! The per-CPU `COUNTERS` array: one slot per (verdict, class), then the event counters.

use crate::{MethodClass, Verdict};

/// Counters that are not a (verdict, method) pair; they follow the packet matrix in `COUNTERS`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventCounter {
    /// Bans the program imposed (enforcing mode).
    BansIssued = 0,
    /// Bans it would have imposed (monitor mode).
    WouldBans,
    /// Ban events lost because the ring buffer was full (user space not reading).
    EventsLost,
    /// New sources that could not be tracked (LRU insert failed); their packets passed.
    TrackFailures,
    /// Bans that could not be written to the durable `BANS` table because it was full: they
    /// hold in the source table only, where a flood of new sources can evict them.
    BanTableFull,
    /// Bans restored from `BANS` after the source table had evicted the source.
    BansRestored,
    /// Packets of protected sources dropped by their bucket, which never bans them.
    ProtectedDrops,
}

impl EventCounter {
    pub const COUNT: usize = 7;
    pub const ALL: [EventCounter; Self::COUNT] = [
        Self::BansIssued,
        Self::WouldBans,
        Self::EventsLost,
        Self::TrackFailures,
        Self::BanTableFull,
        Self::BansRestored,
        Self::ProtectedDrops,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::BansIssued => "bans_issued",
            Self::WouldBans => "would_bans",
            Self::EventsLost => "events_lost",
            Self::TrackFailures => "track_failures",
            Self::BanTableFull => "ban_table_full",
            Self::BansRestored => "bans_restored",
            Self::ProtectedDrops => "protected_drops",
        }
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
