//! Types shared by the XDP program (`sip-xdp-ebpf`) and user space (`sip-xdp`).
//!
//! Everything here is `#[repr(C)]` with explicit padding, because the kernel and user space
//! exchange these structs as raw map keys and values: a layout difference is silent corruption.
//! With the `user` feature, each type also implements `aya::Pod`.
#![no_std]

/// The SIP port used when the configuration names none.
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// How many destination ports the XDP program inspects at most.
pub const MAX_SIP_PORTS: usize = 8;
/// Bumped whenever [`Config`]'s layout or meaning changes; the program ignores a config map
/// entry with another version and falls back to [`Config::DEFAULT`].
pub const CONFIG_VERSION: u32 = 2;

/// Longest prefix of a request line the program scans for its ` SIP/2.0` ending. A line that is
/// longer is classified by its method alone: it cannot be proven truncated, and dropping a valid
/// request with a long Request-URI would hurt more than passing one odd packet.
pub const MAX_REQUEST_LINE_SCAN: usize = 192;
/// Payloads of at most this many bytes made only of CR, LF, SP, TAB or NUL are keep-alives.
pub const MAX_KEEPALIVE_LEN: usize = 16;
/// How many IPv6 extension headers the parser walks. A chain that does not reach its
/// upper-layer header within this many (or within [`MAX_L4_OFFSET`] bytes) cannot be proven not
/// to be SIP: it is counted as [`MethodClass::Unparsed`] and dropped unless
/// [`flags::PASS_UNPARSED`] is set.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
/// Deepest offset (from the start of the frame) at which the parser reads a UDP header; it keeps
/// every packet offset provably small for the verifier. No real SIP packet needs more.
pub const MAX_L4_OFFSET: usize = 512;
/// Nanoseconds in a second: the unit of every `_ns` value the program and user space exchange.
pub const NS_PER_SEC: u64 = 1_000_000_000;
/// Counting window for the per-source packet rate reported in ban events.
pub const RATE_WINDOW_NS: u64 = NS_PER_SEC;
/// A ban that is extended while the source keeps sending is only rewritten once it would move
/// by at least this much, so a flood does not turn every dropped packet into a map write.
pub const BAN_EXTEND_GRANULARITY_NS: u64 = NS_PER_SEC;
/// Escalated ban durations never exceed this, whatever the configuration says (about 10 years).
pub const BAN_DURATION_CEILING_NS: u64 = 10 * 365 * 24 * 3600 * NS_PER_SEC;
/// Escalation factors above this are clamped (by the program) or refused (by the config), so
/// `duration * factor` cannot overflow.
pub const MAX_BAN_FACTOR: u32 = 16;

/// Map names, as the program declares them and user space looks them up.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const ACTIVE_CONFIG: &str = "ACTIVE_CONFIG";
    pub const SOURCES: &str = "SOURCES";
    pub const ALLOWLIST: &str = "ALLOWLIST";
    pub const DENYLIST: &str = "DENYLIST";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FRAGMENTS: &str = "FRAGMENTS";
    pub const BAN_EVENTS: &str = "BAN_EVENTS";
    pub const LIST_PRESENCE: &str = "LIST_PRESENCE";
    pub const BANS: &str = "BANS";
    pub const PROTECTED: &str = "PROTECTED";
}

/// Slots of `LIST_PRESENCE`: nonzero while the allowlist (or denylist) may hold entries, so the
/// program skips the trie lookup of an empty list. User space sets a slot before inserting and
/// clears it only after a removal left the trie empty: it is never clear while the list has
/// entries.
pub mod list_presence {
    pub const ALLOWLIST: u32 = 0;
    pub const DENYLIST: u32 = 1;
    pub const PROTECTED: u32 = 2;
    pub const SLOTS: u32 = 3;
}
/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "sip_xdp";

/// Default capacity of the per-source LRU map (`SOURCES`).
pub const DEFAULT_MAX_SOURCES: u32 = 131_072;
/// Upper bound for `max_sources`: about 1.4 GiB of kernel memory at 88+16 bytes per entry.
pub const MAX_SOURCES_LIMIT: u32 = 16 * 1024 * 1024;
/// Default capacity of the durable ban table (`BANS`): bans and their strikes live there until
/// their strikes decay, out of reach of the source table's LRU eviction.
pub const DEFAULT_MAX_BANS: u32 = 65_536;
/// Capacity of the allowlist, denylist and protected tries.
pub const MAX_LIST_ENTRIES: u32 = 16_384;
/// Capacity of the first-fragment tracking LRU map.
pub const MAX_TRACKED_FRAGMENTS: u32 = 8_192;
/// Size of the ban event ring buffer in bytes (a power of two, a multiple of the page size).
pub const BAN_EVENTS_BYTES: u32 = 256 * 1024;

/// What a UDP datagram to a SIP port is, read from its first line.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodClass {
    Register = 0,
    Invite,
    Options,
    Subscribe,
    Notify,
    Message,
    Ack,
    Bye,
    Cancel,
    Prack,
    Update,
    Info,
    Refer,
    Publish,
    /// `SIP/2.0 NNN ...`
    Response,
    /// RFC 5626 CRLF ping/pong, STUN binding keep-alive, or an empty datagram.
    KeepAlive,
    /// Anything else sent to a SIP port: garbage, binary, truncated request lines.
    Malformed,
    /// A non-first IP fragment: it carries no UDP header, so nothing can be read from it.
    Fragment,
    /// Not UDP to a SIP port: never inspected further.
    NotSip,
    /// What the parser cannot resolve within its bounds, so it cannot prove the packet is not
    /// UDP to a SIP port: IPv6 extension-header chains longer than [`MAX_IPV6_EXT_HEADERS`] or
    /// past [`MAX_L4_OFFSET`], a first fragment that does not hold its UDP header, an IPv6
    /// source in the IPv4-mapped range (`::ffff:0:0/96`, never valid on the wire).
    Unparsed,
}

impl MethodClass {
    pub const COUNT: usize = 20;
    pub const ALL: [MethodClass; Self::COUNT] = [
        Self::Register,
        Self::Invite,
        Self::Options,
        Self::Subscribe,
        Self::Notify,
        Self::Message,
        Self::Ack,
        Self::Bye,
        Self::Cancel,
        Self::Prack,
        Self::Update,
        Self::Info,
        Self::Refer,
        Self::Publish,
        Self::Response,
        Self::KeepAlive,
        Self::Malformed,
        Self::Fragment,
        Self::NotSip,
        Self::Unparsed,
    ];

    /// Label used in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Invite => "invite",
            Self::Options => "options",
            Self::Subscribe => "subscribe",
            Self::Notify => "notify",
            Self::Message => "message",
            Self::Ack => "ack",
            Self::Bye => "bye",
            Self::Cancel => "cancel",
            Self::Prack => "prack",
            Self::Update => "update",
            Self::Info => "info",
            Self::Refer => "refer",
            Self::Publish => "publish",
            Self::Response => "response",
            Self::KeepAlive => "keepalive",
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::NotSip => "not_sip",
            Self::Unparsed => "unparsed",
        }
    }

    pub const fn from_index(index: usize) -> Option<Self> {
        if index < Self::COUNT {
            Some(Self::ALL[index])
        } else {
            None
        }
    }
}

/// The token buckets a source has: each limited method class draws from one of them.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitClass {
    Register = 0,
    Invite,
    Options,
    /// Every other request method: SUBSCRIBE, NOTIFY, MESSAGE, PRACK, UPDATE, INFO, REFER,
    /// PUBLISH.
    Other,
    /// ACK, BYE and CANCEL: requests inside dialogs the server accepted (high default).
    InDialog,
    /// Responses (`SIP/2.0 NNN`): answers to the server's own requests (high default).
    Response,
    /// CRLF and STUN keep-alives and empty datagrams.
    KeepAlive,
    /// Malformed datagrams, when `DROP_MALFORMED` is off.
    Malformed,
}

impl LimitClass {
    pub const COUNT: usize = 8;
    pub const ALL: [LimitClass; Self::COUNT] = [
        Self::Register,
        Self::Invite,
        Self::Options,
        Self::Other,
        Self::InDialog,
        Self::Response,
        Self::KeepAlive,
        Self::Malformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Invite => "invite",
            Self::Options => "options",
            Self::Other => "other",
            Self::InDialog => "in_dialog",
            Self::Response => "response",
            Self::KeepAlive => "keepalive",
            Self::Malformed => "malformed",
        }
    }

    pub const fn from_index(index: usize) -> Option<Self> {
        if index < Self::COUNT {
            Some(Self::ALL[index])
        } else {
            None
        }
    }
}

/// What the program did with a packet. In monitor mode the counters record what it would have
/// done, while every packet passes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass = 0,
    PassAllowlisted,
    PassNotSip,
    DropBanned,
    DropRate,
    DropDenylisted,
    DropMalformed,
    DropFragment,
    /// The parser could not resolve the packet within its bounds ([`MethodClass::Unparsed`]).
    DropUnparsed,
}

impl Verdict {
    pub const COUNT: usize = 9;
    pub const ALL: [Verdict; Self::COUNT] = [
        Self::Pass,
        Self::PassAllowlisted,
        Self::PassNotSip,
        Self::DropBanned,
        Self::DropRate,
        Self::DropDenylisted,
        Self::DropMalformed,
        Self::DropFragment,
        Self::DropUnparsed,
    ];

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Self::DropBanned
                | Self::DropRate
                | Self::DropDenylisted
                | Self::DropMalformed
                | Self::DropFragment
                | Self::DropUnparsed
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::PassAllowlisted => "pass_allowlisted",
            Self::PassNotSip => "pass_not_sip",
            Self::DropBanned => "drop_banned",
            Self::DropRate => "drop_rate",
            Self::DropDenylisted => "drop_denylisted",
            Self::DropMalformed => "drop_malformed",
            Self::DropFragment => "drop_fragment",
            Self::DropUnparsed => "drop_unparsed",
        }
    }

    pub const fn from_index(index: usize) -> Option<Self> {
        if index < Self::COUNT {
            Some(Self::ALL[index])
        } else {
            None
        }
    }
}

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

/// Config flag bits.
pub mod flags {
    /// Count and record would-be bans, drop nothing.
    pub const MONITOR: u32 = 1 << 0;
    /// Drop datagrams to SIP ports that are not SIP (default on).
    pub const DROP_MALFORMED: u32 = 1 << 1;
    /// Drop non-first fragments whose first fragment was not seen going to a SIP port. Off by
    /// default: such a fragment may belong to any UDP or other IP traffic (DNS, VPN), and without
    /// its first fragment the stack cannot reassemble it into a SIP message anyway.
    pub const DROP_UNKNOWN_FRAGMENTS: u32 = 1 << 2;
    // Bits 3 and 4 were LIMIT_IN_DIALOG and LIMIT_RESPONSES (config version 1): every class now
    // has a bucket of its own. Not reused, so a stale reader cannot misread them.
    /// Keep extending a ban while the banned source keeps exceeding its bucket.
    pub const EXTEND_WHILE_ACTIVE: u32 = 1 << 5;
    /// Pass what the parser cannot resolve ([`super::MethodClass::Unparsed`]) instead of dropping
    /// it. Off by default: such a packet may be a SIP datagram hidden behind a long header chain.
    pub const PASS_UNPARSED: u32 = 1 << 6;
}

/// A token bucket in GCRA form, so the program needs one `u64` of state per bucket and no
/// division per packet: a packet conforms when the bucket's theoretical arrival time is at most
/// `burst_tolerance_ns` ahead of now, and each conforming packet moves it `interval_ns` further.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// 1e9 / rate. Zero means this class is not limited.
    pub interval_ns: u64,
    /// (burst - 1) * interval_ns: `burst` back-to-back packets conform, the next does not.
    pub burst_tolerance_ns: u64,
}

impl RateLimit {
    pub const UNLIMITED: RateLimit = RateLimit {
        interval_ns: 0,
        burst_tolerance_ns: 0,
    };

    /// `per_sec` packets per second on average, `burst` at once. `burst` is at least 1.
    pub const fn per_second(per_sec: u64, burst: u64) -> Self {
        Self::per_interval(per_sec, NS_PER_SEC, burst)
    }

    /// `count` packets per `period_ns` on average, `burst` at once.
    pub const fn per_interval(count: u64, period_ns: u64, burst: u64) -> Self {
        if count == 0 {
            return Self::UNLIMITED;
        }
        let interval_ns = if period_ns / count == 0 {
            1
        } else {
            period_ns / count
        };
        let burst = if burst == 0 { 1 } else { burst };
        RateLimit {
            interval_ns,
            burst_tolerance_ns: (burst - 1).saturating_mul(interval_ns),
        }
    }

    pub const fn is_unlimited(&self) -> bool {
        self.interval_ns == 0
    }

    /// The burst this bucket admits back to back.
    pub const fn burst(&self) -> u64 {
        match self.burst_tolerance_ns.checked_div(self.interval_ns) {
            Some(extra) => extra + 1,
            None => 0,
        }
    }
}

/// Runtime configuration, read by the program on every packet, so limits change without
/// reloading the program. `CONFIG` holds two of these: the program reads the one `ACTIVE_CONFIG`
/// names while user space fills the other, then flips `ACTIVE_CONFIG`, so a packet never sees
/// half of an update.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// [`CONFIG_VERSION`]; any other value (a zeroed, never written entry) means "use defaults".
    pub version: u32,
    /// Bits from [`flags`].
    pub flags: u32,
    /// Destination ports inspected, host byte order; 0 marks an unused slot.
    pub sip_ports: [u16; MAX_SIP_PORTS],
    /// Multiplier applied to the previous ban duration for a repeat offender.
    pub ban_factor: u32,
    pub _pad0: u32,
    /// Mask applied to IPv6 source addresses before they key per-source state: /128 by default;
    /// /64 makes a whole customer prefix one source.
    pub ipv6_source_mask: [u8; 16],
    /// Token buckets, indexed by [`LimitClass`].
    pub limits: [RateLimit; LimitClass::COUNT],
    /// First ban duration.
    pub ban_base_ns: u64,
    /// Cap for escalated bans.
    pub ban_max_ns: u64,
    /// A source quiet (not banned) for this long starts again at strike zero.
    pub strike_decay_ns: u64,
    /// With `EXTEND_WHILE_ACTIVE`: a banned source that keeps exceeding its bucket stays banned
    /// at least this long after its last packet over the limit.
    pub ban_extend_ns: u64,
}

impl Config {
    /// The defaults the program and the daemon share. Chosen for a SIP edge: a phone registers
    /// every few minutes (two REGISTERs with the digest challenge), so 5/s with a burst of 40
    /// never touches a normal office behind one address refreshing on schedule, while a scanner
    /// guessing passwords at hundreds per second is banned within its first 41 tries.
    pub const DEFAULT: Config = Config {
        version: CONFIG_VERSION,
        flags: flags::DROP_MALFORMED | flags::EXTEND_WHILE_ACTIVE,
        sip_ports: [DEFAULT_SIP_PORT, 0, 0, 0, 0, 0, 0, 0],
        ban_factor: 2,
        _pad0: 0,
        ipv6_source_mask: [0xff; 16],
        limits: [
            RateLimit::per_second(5, 40),    // REGISTER
            RateLimit::per_second(5, 20),    // INVITE
            RateLimit::per_second(5, 30),    // OPTIONS
            RateLimit::per_second(50, 100),  // other requests
            RateLimit::per_second(100, 200), // ACK, BYE, CANCEL
            RateLimit::per_second(100, 200), // responses
            RateLimit::per_second(50, 100),  // keep-alives
            RateLimit::per_second(10, 20),   // malformed, when passed
        ],
        ban_base_ns: 60 * NS_PER_SEC,
        ban_max_ns: 24 * 3600 * NS_PER_SEC,
        strike_decay_ns: 3600 * NS_PER_SEC,
        ban_extend_ns: 60 * NS_PER_SEC,
    };

    pub const fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Key of per-source state: the source address, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so
/// one map and one lookup serve both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourceKey {
    pub addr: [u8; 16],
}

/// Bits of [`SourceState::ban_flags`].
pub mod ban_flags {
    /// The ban was recorded in monitor mode: it is reported, never enforced.
    pub const MONITOR_ONLY: u8 = 1 << 0;
    /// The current ban (or would-be ban) has not been reported as expired yet: the first packet
    /// after it runs out clears this and sends a [`super::ban_event_kind::EXPIRED`] event.
    pub const EXPIRY_PENDING: u8 = 1 << 1;
}

/// Per-source state in the `SOURCES` LRU hash.
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
    /// [`LimitClass`] whose bucket ran dry for the current ban.
    pub ban_class: u8,
    /// Bits from [`ban_flags`].
    pub ban_flags: u8,
    pub _pad: [u8; 6],
}

/// Value of a denylist entry. The denylist also holds manual bans, which expire in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DenyEntry {
    /// Monotonic time the entry stops applying; 0 = never.
    pub expires_at_ns: u64,
}

/// Value of an allowlist or protected-list entry (present = listed, unless it is a hole).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllowEntry {
    /// Bits from [`allow_flags`].
    pub flags: u32,
}

/// Bits of [`AllowEntry::flags`].
pub mod allow_flags {
    /// Not a listing: the entry for `::ffff:0:0/96` (IPv4 keys) that keeps an IPv6 CIDR such
    /// as `::/0` or `::/8` from matching every IPv4 source. See [`super::MAPPED_HOLE_PREFIX`].
    pub const HOLE: u32 = 1 << 0;
}

/// IPv4 sources are keyed as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so an IPv6 CIDR that covers
/// `::ffff:0:0/96` (`::/0`, `::/8`) would match every IPv4 source. User space then writes a
/// hole at this prefix: the longest match for every IPv4 key, which reads as "not listed" (an
/// allowlist entry with [`allow_flags::HOLE`], a deny entry with [`DENY_HOLE_EXPIRES_AT_NS`]).
/// IPv4 `0.0.0.0/0` has the same key and replaces the hole with a real entry.
pub const MAPPED_HOLE_PREFIX: u32 = 96;
/// `expires_at_ns` of a denylist hole: long past on the monotonic clock, so never in force.
pub const DENY_HOLE_EXPIRES_AT_NS: u64 = 1;

/// Value of the durable ban table `BANS`: a source's ban and strike history, kept out of reach
/// of the source table's LRU eviction until its strikes decay. The program writes it with every
/// ban and every extension, and reads it when a source missing from `SOURCES` comes back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BanRecord {
    /// Monotonic time the ban ends.
    pub banned_until_ns: u64,
    /// Length of the last ban, the base of the next escalation.
    pub ban_duration_ns: u64,
    pub strikes: u32,
    /// [`LimitClass`] whose bucket ran dry.
    pub ban_class: u8,
    /// Bits from [`ban_flags`].
    pub ban_flags: u8,
    pub _pad: [u8; 2],
}

/// Key of the first-fragment table: a non-first fragment is matched to its first fragment by
/// source address and IP identification.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentKey {
    pub src: [u8; 16],
    pub id: u32,
    pub _pad: u32,
}

/// What happened to a first fragment; its followers get the same fate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentFate {
    /// Non-zero when the first fragment was dropped.
    pub dropped: u32,
    pub _pad: u32,
}

/// Kinds of [`BanEvent`].
pub mod ban_event_kind {
    pub const BAN: u8 = 0;
    pub const WOULD_BAN: u8 = 1;
    /// The first packet from a source after its ban (or would-be ban) ran out.
    pub const EXPIRED: u8 = 2;
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
    /// The [`LimitClass`] that ran dry.
    pub limit_class: u8,
    pub _pad: [u8; 6],
}

/// Maps an IPv4 address to the 16-byte form used in keys.
pub const fn ipv4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for SourceKey {}
    unsafe impl aya::Pod for SourceState {}
    unsafe impl aya::Pod for DenyEntry {}
    unsafe impl aya::Pod for AllowEntry {}
    unsafe impl aya::Pod for FragmentKey {}
    unsafe impl aya::Pod for FragmentFate {}
    unsafe impl aya::Pod for BanEvent {}
    unsafe impl aya::Pod for BanRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(
            size_of::<Config>(),
            4 + 4 + 16 + 4 + 4 + 16 + 16 * LimitClass::COUNT + 8 * 4
        );
        assert_eq!(
            size_of::<SourceState>(),
            8 * LimitClass::COUNT + 8 * 5 + 4 + 4 + 1 + 1 + 6
        );
        assert_eq!(size_of::<BanRecord>(), 8 + 8 + 4 + 1 + 1 + 2);
        assert_eq!(size_of::<BanEvent>(), 16 + 8 * 4 + 4 + 4 + 1 + 1 + 6);
        assert_eq!(size_of::<FragmentKey>(), 24);
    }

    #[test]
    fn gcra_burst_round_trips() {
        let limit = RateLimit::per_second(5, 40);
        assert_eq!(limit.interval_ns, 200_000_000);
        assert_eq!(limit.burst(), 40);
        assert_eq!(RateLimit::per_second(0, 10).burst(), 0);
        assert_eq!(RateLimit::per_second(3, 0).burst(), 1);
    }

    #[test]
    fn counter_indices_are_dense_and_in_range() {
        assert_eq!(
            packet_counter_index(Verdict::Pass, MethodClass::Register),
            0
        );
        let last = packet_counter_index(Verdict::ALL[Verdict::COUNT - 1], MethodClass::Unparsed);
        assert_eq!(last + 1, event_counter_index(EventCounter::BansIssued));
        assert_eq!(
            event_counter_index(EventCounter::ALL[EventCounter::COUNT - 1]) + 1,
            COUNTER_SLOTS
        );
    }
}
