//! Ban events, sent through the `BAN_EVENTS` ring buffer.

/// Kinds of [`BanEvent`].
pub mod ban_event_kind {
    pub const BAN: u8 = 0;
    pub const WOULD_BAN: u8 = 1;
    /// The first packet from a source after its ban (or would-be ban) ran out.
    pub const EXPIRED: u8 = 2;
    /// One flow (address and `port`) of a verified address banned for failed authentication.
    pub const FLOW_BAN: u8 = 3;
    /// A flow ban recorded in monitor mode.
    pub const WOULD_FLOW_BAN: u8 = 4;
}

/// Sent through the `BAN_EVENTS` ring buffer each time a source is (or would be) banned, and
/// when the first packet after such a ban arrives once it ran out (`kind` tells which). An
/// expiry event carries the ban that ended: its end, duration, strikes and class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BanEvent {
    pub addr: [u8; 16],
    pub now_ns: u64,
    pub banned_until_ns: u64,
    pub duration_ns: u64,
    /// Length of the rate window `window_packets` was counted in.
    pub window_ns: u64,
    pub window_packets: u32,
    pub strikes: u32,
    /// A [`ban_event_kind`] value.
    pub kind: u8,
    /// The [`LimitClass`](crate::LimitClass) that ran dry, or
    /// [`BAN_CLASS_AUTH`](crate::BAN_CLASS_AUTH) with the failure kind of an auth ban.
    pub limit_class: u8,
    /// The client's port, for flow bans; 0 otherwise.
    pub port: u16,
    /// 0 for the ban of one source (its `SOURCES` key); for a prefix ban, the prefix length in
    /// the key's 128-bit form (see [`PrefixKey`](crate::PrefixKey)): an IPv4 /24 is 120.
    pub prefix_len: u8,
    pub _pad: [u8; 3],
}
