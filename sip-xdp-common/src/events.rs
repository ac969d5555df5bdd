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

/// Bits of [`TraceEvent::lists`].
pub mod trace_lists {
    pub const ALLOWLISTED: u8 = 1 << 0;
    pub const DENYLISTED: u8 = 1 << 1;
    pub const PROTECTED: u8 = 1 << 2;
    /// The source has state in `SOURCES` (the fields after `lists` are read from it).
    pub const TRACKED: u8 = 1 << 3;
    /// The source is verified (its state's `verified_until_ns` lies ahead, answers on).
    pub const VERIFIED: u8 = 1 << 4;
    /// Sent by the scan program after it read the request's headers.
    pub const SCANNED: u8 = 1 << 5;
    /// An answer the server sent to the traced source (TC egress): `status` is its code.
    pub const ANSWER: u8 = 1 << 6;
    /// That answer was dropped (the reflection guard).
    pub const ANSWER_DROPPED: u8 = 1 << 7;
}

/// One packet of a traced source (`sip-xdp trace`), sent through `TRACE_EVENTS` with the
/// program's decision and the source's state after it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceEvent {
    pub addr: [u8; 16],
    pub now_ns: u64,
    /// The bucket the class draws from, after the packet: its GCRA arrival time (0 untracked).
    pub tat_ns: u64,
    pub banned_until_ns: u64,
    /// The source's port (UDP or TCP).
    pub port: u16,
    /// A [`Verdict`](crate::Verdict) index.
    pub verdict: u8,
    /// A [`MethodClass`](crate::MethodClass) index.
    pub class: u8,
    /// The [`LimitClass`](crate::LimitClass) index of the class's bucket; 0xff for none.
    pub limit: u8,
    /// Bits from [`trace_lists`].
    pub lists: u8,
    /// The current ban's `ban_class` (see `BanCause`).
    pub ban_class: u8,
    pub strikes: u8,
    /// For an answer ([`trace_lists::ANSWER`]), its status code.
    pub status: u16,
    pub _pad: [u8; 6],
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
