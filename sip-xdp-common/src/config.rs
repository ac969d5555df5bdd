//! The runtime config the program reads on every packet, and its token buckets.

use crate::{DEFAULT_SIP_PORT, DEFAULT_SIP_TLS_PORT, LimitClass, MAX_SIP_PORTS, NS_PER_SEC};

/// Prefix levels of [`Config::prefix_lens`]: one for IPv4, two for IPv6.
pub const PREFIX_LEVELS: usize = 3;
/// The IPv4 level of [`Config::prefix_lens`]; the others are IPv6 levels.
pub const PREFIX_LEVEL_IPV4: usize = 0;

/// Bumped whenever [`Config`]'s layout or meaning changes; the program ignores a config map
/// entry with another version and falls back to [`Config::DEFAULT`].
pub const CONFIG_VERSION: u32 = 5;

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
    /// Pass what the parser cannot resolve ([`crate::MethodClass::Unparsed`]) instead of dropping
    /// it. Off by default: such a packet may be a SIP datagram hidden behind a long header chain.
    pub const PASS_UNPARSED: u32 = 1 << 6;
    /// The egress program reads the server's answers on this host: verified sources get
    /// `verified_limits`, and unverified REGISTER and INVITE draw from the admission budget.
    /// User space sets it only while the egress program is attached, so that without it every
    /// source is treated as it was before (nobody verified, no admission budget).
    pub const ANSWERS: u32 = 1 << 7;
    /// Requests the XDP program passes (from sources neither allowlisted nor verified) are
    /// handed to the scan program, which bans on a signature (`sip_xdp_common::SignatureKind`).
    /// User space sets it only while the scan program sits in `SCANNERS` and `SIGNATURES` has
    /// entries.
    pub const SIGNATURES: u32 = 1 << 8;
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
    /// Token buckets of verified sources (see [`crate::VerifiedSource`]), indexed by
    /// [`LimitClass`]: looser, never unlimited.
    pub verified_limits: [RateLimit; LimitClass::COUNT],
    /// Budget shared by every unverified source's REGISTER and INVITE, with `ANSWERS`.
    pub admission: RateLimit,
    /// Challenges and error responses to one unverified destination.
    pub reflection_per_destination: RateLimit,
    /// Challenges and error responses to all unverified destinations together.
    pub reflection_total: RateLimit,
    /// How long a success keeps its client verified.
    pub verified_for_ns: u64,
    /// Window failures are counted in.
    pub auth_window_ns: u64,
    /// Failures in the window that ban an unverified address.
    pub auth_max_failures: u32,
    /// Failures in the window that ban a verified address (all its flows together).
    pub auth_max_failures_verified: u32,
    /// Failures in the window that ban one flow (address and port) of a verified address.
    pub auth_max_flow_failures: u32,
    /// Open challenges an unverified address may hold before each further one is a failure.
    pub auth_max_unanswered: u32,
    /// Length of a flow's ban (doubled for each repeat, up to `ban_max_ns`).
    pub flow_ban_ns: u64,
    /// TCP destination ports inspected (SIP over TCP, TLS, WebSocket), host byte order; 0 marks
    /// an unused slot. New connections (SYNs) draw from [`LimitClass::Connection`]; every ban
    /// drops a source's segments to these ports.
    pub tcp_ports: [u16; MAX_SIP_PORTS],
    /// Prefix bucket levels, in the 128-bit form of keys ([`crate::PrefixKey`]): level
    /// [`PREFIX_LEVEL_IPV4`] applies to IPv4 sources (an IPv4 /24 is 120), the others to IPv6
    /// sources. 0 marks an unused level.
    pub prefix_lens: [u8; PREFIX_LEVELS],
    pub _pad1: [u8; 5],
    /// The mask of each level: `prefix_mask(prefix_lens[level])`, so the program masks with two
    /// ANDs.
    pub prefix_masks: [[u8; 16]; PREFIX_LEVELS],
    /// The buckets every prefix has, per [`LimitClass`], shared by the unverified sources in it.
    /// Unlimited means the class draws from no prefix bucket.
    pub prefix_limits: [RateLimit; LimitClass::COUNT],
    /// Shortest ban a signature match imposes; escalation for repeat offenders still applies.
    pub signature_ban_ns: u64,
    /// While the clock is below this, packets of the sources in `TRACED` are reported in
    /// `TRACE_EVENTS` (`sip-xdp trace`, which keeps moving it a few seconds ahead while it runs,
    /// so a trace whose process died stops by itself). 0: no trace, and the program pays one
    /// compare per SIP packet.
    pub trace_until_ns: u64,
}

// The program reads these masks a word at a time: they must sit at 8-byte offsets of the
// (8-byte aligned) config.
const _: () = assert!(core::mem::offset_of!(Config, ipv6_source_mask) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(Config, prefix_masks) % 8 == 0);
const _: () = assert!(core::mem::align_of::<Config>() == 8);

/// The mask of a prefix of `prefix_len` bits (128-bit form): ones then zeros.
pub const fn prefix_mask(prefix_len: u8) -> [u8; 16] {
    let mut mask = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let bits = prefix_len as i32 - (i as i32) * 8;
        mask[i] = if bits >= 8 {
            0xff
        } else if bits <= 0 {
            0
        } else {
            0xffu8 << (8 - bits)
        };
        i += 1;
    }
    mask
}

/// The default prefix levels: /24 for IPv4 (120 in keys), /64 and /48 for IPv6.
pub const DEFAULT_PREFIX_LENS: [u8; PREFIX_LEVELS] = [96 + 24, 64, 48];

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
            RateLimit::per_second(5, 50),    // TCP connections (SYNs)
        ],
        ban_base_ns: 60 * NS_PER_SEC,
        ban_max_ns: 24 * 3600 * NS_PER_SEC,
        strike_decay_ns: 3600 * NS_PER_SEC,
        ban_extend_ns: 60 * NS_PER_SEC,
        // Sized for an office of 200 phones behind one address after a power cut: each sends
        // two REGISTERs (challenge, then credentials) and a SUBSCRIBE per busy-lamp key within
        // the same minute.
        verified_limits: [
            RateLimit::per_second(50, 600),   // REGISTER
            RateLimit::per_second(20, 200),   // INVITE
            RateLimit::per_second(50, 400),   // OPTIONS
            RateLimit::per_second(200, 2000), // other requests
            RateLimit::per_second(500, 2000), // ACK, BYE, CANCEL
            RateLimit::per_second(500, 2000), // responses
            RateLimit::per_second(200, 1000), // keep-alives
            RateLimit::per_second(10, 20),    // malformed, when passed
            RateLimit::per_second(50, 500),   // TCP connections (SYNs)
        ],
        // A registrar answers thousands of REGISTERs a second; 200/s from sources it has not
        // seen succeed is the untrusted queue: new phones and phones back after two quiet hours
        // fit (50,000 phones all unverified get through in about four minutes), a forged flood
        // reaches the registrar at this rate at most, whatever its width.
        admission: RateLimit::per_second(200, 400),
        // A phone needs one or two challenges per registration or call.
        reflection_per_destination: RateLimit::per_second(5, 10),
        // Every admitted request gets one answer: the reflection guard caps what the budget does
        // not already bound (OPTIONS and other requests answered with errors).
        reflection_total: RateLimit::per_second(200, 400),
        // Phones re-register every hour or less: two hours survive one missed refresh.
        verified_for_ns: 2 * 3600 * NS_PER_SEC,
        // fail2ban's asterisk jail: 5 failures in 10 minutes.
        auth_window_ns: 600 * NS_PER_SEC,
        auth_max_failures: 5,
        auth_max_failures_verified: 50,
        auth_max_flow_failures: 5,
        auth_max_unanswered: 10,
        flow_ban_ns: 600 * NS_PER_SEC,
        tcp_ports: [DEFAULT_SIP_PORT, DEFAULT_SIP_TLS_PORT, 0, 0, 0, 0, 0, 0],
        prefix_lens: DEFAULT_PREFIX_LENS,
        _pad1: [0; 5],
        prefix_masks: [
            prefix_mask(DEFAULT_PREFIX_LENS[0]),
            prefix_mask(DEFAULT_PREFIX_LENS[1]),
            prefix_mask(DEFAULT_PREFIX_LENS[2]),
        ],
        // What the unverified sources of one /24 (or IPv6 /64, or /48) may send together:
        // four sources' worth sustained, five sources' bursts. A flood spread over a prefix,
        // each address under its own limit, is banned as that prefix within its burst; verified
        // sources (a customer's office) never draw from it.
        prefix_limits: [
            RateLimit::per_second(20, 200),   // REGISTER
            RateLimit::per_second(10, 100),   // INVITE
            RateLimit::per_second(20, 200),   // OPTIONS
            RateLimit::per_second(100, 500),  // other requests
            RateLimit::per_second(500, 2000), // ACK, BYE, CANCEL
            RateLimit::per_second(500, 2000), // responses
            RateLimit::UNLIMITED,             // keep-alives: every NAT'd phone sends them
            RateLimit::per_second(50, 100),   // malformed, when passed
            RateLimit::per_second(20, 200),   // TCP connections (SYNs)
        ],
        // A scanner's name or a decoy account is proof, not a rate: an hour, doubled for each
        // repeat up to `ban_max_ns`.
        signature_ban_ns: crate::DEFAULT_SIGNATURE_BAN_NS,
        trace_until_ns: 0,
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
