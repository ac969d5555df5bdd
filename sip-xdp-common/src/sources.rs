//! Per-source state (`SOURCES`, an LRU hash) and the durable ban table (`BANS`), with the
//! constants that shape bans.

use crate::{LimitClass, NS_PER_SEC};

/// Counting window for the per-source packet rate reported in ban events.
pub const RATE_WINDOW_NS: u64 = NS_PER_SEC;
/// A ban that is extended while the source keeps sending is only rewritten once it would move
/// by at least this much, so a flood does not turn every dropped packet into a map write.
pub const BAN_EXTEND_GRANULARITY_NS: u64 = NS_PER_SEC;
/// Largest ban escalation factor: the program caps `Config::ban_factor` here (so that
/// `duration * factor` cannot overflow), and the config refuses a larger one rather than accept
/// it and silently not honour it.
pub const MAX_BAN_FACTOR: u32 = 16;
/// Escalated ban durations never exceed this, whatever the configuration says (about 10 years).
pub const BAN_DURATION_CEILING_NS: u64 = 10 * 365 * 24 * 3600 * NS_PER_SEC;

/// Key of per-source state: the source address, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so
/// one map and one lookup serve both families. Aligned to 8 (no change to its layout) so the
/// program copies it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

/// Key of a prefix's state (`PREFIXES`) and ban (`PREFIX_BANS`): the source address masked to
/// the prefix, in the 16-byte form of [`SourceKey`], and the prefix length in that form (an IPv4
/// /24 is 120, an IPv6 /64 is 64). Aligned to 8 (no change to its layout) so the program builds
/// it with word stores rather than byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PrefixKey {
    pub addr: [u8; 16],
    pub prefix_len: u8,
    pub _pad: [u8; 7],
}

/// Bits of [`SourceState::ban_flags`].
pub mod ban_flags {
    /// The ban was recorded in monitor mode: it is reported, never enforced.
    pub const MONITOR_ONLY: u8 = 1 << 0;
    /// The current ban (or would-be ban) has not been reported as expired yet: the first packet
    /// after it runs out clears this and sends a [`crate::ban_event_kind::EXPIRED`] event.
    pub const EXPIRY_PENDING: u8 = 1 << 1;
}

/// Per-source state in the `SOURCES` LRU hash, and per-prefix state in `PREFIXES` (where
/// `verified_until_ns` and `flow_bans_until_ns` stay 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SourceState {
    /// GCRA theoretical arrival time per [`LimitClass`].
    pub tat_ns: [u64; LimitClass::COUNT],
    /// Monotonic (CLOCK_MONOTONIC) time the current ban ends; 0 = never banned.
    pub banned_until_ns: u64,
    /// Length of the last ban, the base of the next escalation.
    pub ban_duration_ns: u64,
    /// Start of the current rate window (see [`RATE_WINDOW_NS`]).
    pub window_start_ns: u64,
    /// Packets from this source to SIP ports, all classes.
    pub packets: u64,
    /// Of those, dropped (or, in monitor mode, that would have been).
    pub dropped: u64,
    /// Packets in the current rate window.
    pub window_packets: u32,
    /// Bans so far, reset after `strike_decay_ns` without one.
    pub strikes: u32,
    /// [`LimitClass`] whose bucket ran dry for the current ban, or [`crate::BAN_CLASS_AUTH`]
    /// with the [`crate::AuthFailure`] that tipped an auth ban.
    pub ban_class: u8,
    /// Bits from [`ban_flags`].
    pub ban_flags: u8,
    pub _pad: [u8; 6],
    /// Copy of the source's `VERIFIED` expiry, so the program reads it with the rest of the
    /// state: set when the entry is made and by the egress program with each success.
    pub verified_until_ns: u64,
    /// Latest end of a ban of one of this address's flows (`FLOWS`); only while it lies ahead
    /// does a packet pay the flow lookup. Set by the egress program.
    pub flow_bans_until_ns: u64,
}

/// Value of the durable ban table `BANS`: a source's ban and strike history, kept out of reach
/// of the source table's LRU eviction until its strikes decay. The program writes it with every
/// ban and every extension, and reads it when a source missing from `SOURCES` comes back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DurableBan {
    /// Monotonic time the ban ends.
    pub banned_until_ns: u64,
    /// Length of the last ban, the base of the next escalation.
    pub ban_duration_ns: u64,
    pub strikes: u32,
    /// [`LimitClass`] whose bucket ran dry, or [`crate::BAN_CLASS_AUTH`] with the failure kind.
    pub ban_class: u8,
    /// Bits from [`ban_flags`].
    pub ban_flags: u8,
    pub _pad: [u8; 2],
}

/// Maps an IPv4 address to the 16-byte form used in keys.
pub const fn ipv4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

impl DurableBan {
    /// The ban part of a source's state, as the durable table keeps it.
    pub const fn of(state: &SourceState) -> Self {
        Self {
            banned_until_ns: state.banned_until_ns,
            ban_duration_ns: state.ban_duration_ns,
            strikes: state.strikes,
            ban_class: state.ban_class,
            ban_flags: state.ban_flags,
            _pad: [0; 2],
        }
    }
}
