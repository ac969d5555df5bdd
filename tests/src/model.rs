//! A host-side reference model of the XDP program: classification and policy in plain Rust.
//!
//! Written from the specification of the datapath, not from the kernel code: it reads a whole
//! frame as a `&[u8]`, keeps its own copy of every map the program consults (sources, fragments,
//! allowlist, denylist, counters) and decides each packet the way the program is specified to.
//! The differential test runs both on the same packets and compares them.
//!
//! Time is an input: [`Model::process`] takes `now_ns` (CLOCK_MONOTONIC_COARSE nanoseconds, the
//! program's clock). Nothing here reads a clock.
use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
pub use sip_xdp_common::MAX_L4_OFFSET;
use sip_xdp_common::{
    AnswerState, BAN_DURATION_CEILING_NS, BAN_EXTEND_GRANULARITY_NS, BanEvent, CONFIG_VERSION,
    Config, DurableBan, EventCounter, FlowState, LimitClass, MAX_IPV6_EXT_HEADERS,
    MAX_KEEPALIVE_LEN, MAX_PREFIXES, MAX_REQUEST_LINE_SCAN, MethodClass, PrefixKey, RATE_WINDOW_NS,
    RateLimit, SourceState, Verdict, VerifiedSource, ban_event_kind, ban_flags, flags, ipv4_mapped,
};

mod answers;
mod lru;
mod prefixes;
pub mod signatures;
mod tcp;
pub use answers::{AnswerOutcome, Answered, TC_ACT_OK, TC_ACT_SHOT};
pub use lru::Lru;
pub use prefixes::{prefix_key, prefix_keys};
pub use tcp::{TCP_ACK, TCP_HLEN, TCP_SYN};

/// XDP actions, as `BPF_PROG_TEST_RUN` reports them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Escalation factors are clamped to this.
pub const MAX_BAN_FACTOR: u64 = sip_xdp_common::MAX_BAN_FACTOR as u64;
/// Payloads shorter than this (that are not keep-alives) cannot hold a request line.
pub const MIN_CLASSIFIABLE: usize = 16;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const PROTO_UDP: u8 = 17;
const PROTO_TCP: u8 = 6;

/// Request methods with the class each one is, as they must start a request line.
pub const METHODS: [(&[u8], MethodClass); 14] = [
    (b"REGISTER", MethodClass::Register),
    (b"INVITE", MethodClass::Invite),
    (b"OPTIONS", MethodClass::Options),
    (b"ACK", MethodClass::Ack),
    (b"BYE", MethodClass::Bye),
    (b"CANCEL", MethodClass::Cancel),
    (b"SUBSCRIBE", MethodClass::Subscribe),
    (b"NOTIFY", MethodClass::Notify),
    (b"MESSAGE", MethodClass::Message),
    (b"PRACK", MethodClass::Prack),
    (b"UPDATE", MethodClass::Update),
    (b"INFO", MethodClass::Info),
    (b"REFER", MethodClass::Refer),
    (b"PUBLISH", MethodClass::Publish),
];

/// What the parser makes of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    NotSip,
    /// Not resolvable within the parser's bounds: dropped unless `PASS_UNPARSED`.
    Unparsed,
    /// A non-first fragment: `src` in 16-byte form, `id` the IP identification.
    Fragment {
        src: [u8; 16],
        id: u32,
    },
    Sip(Datagram),
}

/// The transport a [`Datagram`] came by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// UDP to one of `Config::sip_ports`.
    Udp,
    /// TCP to one of `Config::tcp_ports`.
    Tcp,
}

/// A UDP datagram to a SIP port, or a TCP segment to a SIP TCP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Source address, IPv4 mapped into IPv6.
    pub src: [u8; 16],
    /// Source port (with the address, the flow a phone ban names).
    pub port: u16,
    pub is_ipv4: bool,
    pub protocol: Protocol,
    /// What the payload (or, for TCP, the flags) make of it.
    pub class: MethodClass,
    /// The class counted when the packet is dropped on its addresses alone, before its payload
    /// is read: [`MethodClass::Unread`] for UDP, [`MethodClass::TcpSyn`] or
    /// [`MethodClass::Tcp`] from the TCP flags.
    pub early_class: MethodClass,
    /// The IP identification when this is the first fragment of a fragmented datagram.
    pub first_fragment_id: Option<u32>,
}

/// What the model decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub class: MethodClass,
    /// [`XDP_DROP`] or [`XDP_PASS`].
    pub action: u32,
}

pub(crate) fn byte(frame: &[u8], at: usize) -> Option<u8> {
    frame.get(at).copied()
}

pub(crate) fn u16_at(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([byte(frame, at)?, byte(frame, at + 1)?]))
}

fn u32_at(frame: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

/// Whether `len` bytes starting at `at` are inside the frame.
pub(crate) fn present(frame: &[u8], at: usize, len: usize) -> bool {
    at.checked_add(len).is_some_and(|end| end <= frame.len())
}

/// Network-layer result: either nothing to inspect, a non-first fragment, or where UDP or TCP
/// starts.
pub(crate) enum Network {
    NotSip,
    Unparsed,
    Fragment { src: [u8; 16], id: u32 },
    L4(Transport),
}

pub(crate) struct Transport {
    /// [`PROTO_UDP`] or [`PROTO_TCP`].
    pub(crate) protocol: u8,
    /// The far end: the source of a packet received, the destination of one sent.
    pub(crate) src: [u8; 16],
    pub(crate) is_ipv4: bool,
    /// Offset of the UDP or TCP header in the frame.
    pub(crate) l4: usize,
    /// One past the end of the IP datagram, from its length field.
    pub(crate) ip_end: usize,
    pub(crate) first_fragment_id: Option<u32>,
}

/// Parses a frame the way the program is specified to, up to the class of its SIP payload.
pub fn parse(frame: &[u8], cfg: &Config) -> Parsed {
    parse_inner(frame, cfg).unwrap_or(Parsed::NotSip)
}

/// `None` anywhere means a header was cut short, i.e. [`Parsed::NotSip`].
/// Where the IP header starts and its ethertype, past up to two VLAN tags.
pub(crate) fn l3_of(frame: &[u8]) -> Option<(usize, u16)> {
    if !present(frame, 0, ETH_HLEN) {
        return None;
    }
    let mut ethertype = u16_at(frame, 12)?;
    let mut l3 = ETH_HLEN;
    let mut tags = 0;
    while tags < 2 && (ethertype == 0x8100 || ethertype == 0x88a8) {
        if !present(frame, l3, VLAN_HLEN) {
            return None;
        }
        ethertype = u16_at(frame, l3 + 2)?;
        l3 += VLAN_HLEN;
        tags += 1;
    }
    Some((l3, ethertype))
}

fn parse_inner(frame: &[u8], cfg: &Config) -> Option<Parsed> {
    let (l3, ethertype) = l3_of(frame)?;
    let network = match ethertype {
        0x0800 => ipv4(frame, l3)?,
        0x86dd => ipv6(frame, l3)?,
        _ => Network::NotSip,
    };
    let t = match network {
        Network::NotSip => return Some(Parsed::NotSip),
        Network::Unparsed => return Some(Parsed::Unparsed),
        Network::Fragment { src, id } => return Some(Parsed::Fragment { src, id }),
        Network::L4(t) => t,
    };
    if t.protocol == PROTO_TCP {
        return Some(tcp::segment(frame, cfg, &t));
    }
    if !present(frame, t.l4, UDP_HLEN) {
        // A first fragment that may hide a SIP port is not passed on trust; one whose
        // destination port is there and is not a SIP port is left alone.
        let shown_port = u16_at(frame, t.l4 + 2);
        let hides_sip = t.first_fragment_id.is_some()
            && shown_port.is_none_or(|port| port != 0 && cfg.sip_ports.contains(&port));
        return Some(if hides_sip {
            Parsed::Unparsed
        } else {
            Parsed::NotSip
        });
    }
    let dst_port = u16_at(frame, t.l4 + 2)?;
    if dst_port == 0 || !cfg.sip_ports.contains(&dst_port) {
        return Some(Parsed::NotSip);
    }
    // IPv4-mapped IPv6 sources never appear on the wire legitimately.
    if !t.is_ipv4 && t.src[..12] == ipv4_mapped([0; 4])[..12] {
        return Some(Parsed::Unparsed);
    }
    let udp_len = u16_at(frame, t.l4 + 4)? as usize;
    let mut class = datagram_class(frame, &t, udp_len);
    // Keep-alives are never fragmented: a first fragment that looks like one is an attack.
    if t.first_fragment_id.is_some() && class == MethodClass::KeepAlive {
        class = MethodClass::Malformed;
    }
    Some(Parsed::Sip(Datagram {
        src: t.src,
        port: u16_at(frame, t.l4)?,
        is_ipv4: t.is_ipv4,
        protocol: Protocol::Udp,
        class,
        early_class: MethodClass::Unread,
        first_fragment_id: t.first_fragment_id,
    }))
}

fn ipv4(frame: &[u8], l3: usize) -> Option<Network> {
    ipv4_far_end(frame, l3, false)
}

/// `sent`: a packet the host sends, whose far end is its destination.
pub(crate) fn ipv4_far_end(frame: &[u8], l3: usize, sent: bool) -> Option<Network> {
    if !present(frame, l3, IPV4_HLEN) {
        return None;
    }
    let version_ihl = frame[l3];
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let protocol = frame[l3 + 9];
    let total_len = usize::from(u16_at(frame, l3 + 2)?);
    if version_ihl >> 4 != 4
        || header_len < IPV4_HLEN
        || (protocol != PROTO_UDP && protocol != PROTO_TCP)
    {
        return Some(Network::NotSip);
    }
    if total_len < header_len {
        return Some(Network::NotSip);
    }
    let mut src4 = [0u8; 4];
    let at = if sent { l3 + 16 } else { l3 + 12 };
    src4.copy_from_slice(&frame[at..at + 4]);
    let src = ipv4_mapped(src4);
    let id = u32::from(u16_at(frame, l3 + 4)?);
    let fragment_field = u16_at(frame, l3 + 6)?;
    let fragment_offset = fragment_field & 0x1fff;
    let more_fragments = fragment_field & 0x2000 != 0;
    if fragment_offset != 0 {
        return Some(Network::Fragment { src, id });
    }
    Some(Network::L4(Transport {
        protocol,
        src,
        is_ipv4: true,
        l4: l3 + header_len,
        ip_end: l3 + total_len,
        first_fragment_id: more_fragments.then_some(id),
    }))
}

fn ipv6(frame: &[u8], l3: usize) -> Option<Network> {
    ipv6_far_end(frame, l3, false)
}

pub(crate) fn ipv6_far_end(frame: &[u8], l3: usize, sent: bool) -> Option<Network> {
    if !present(frame, l3, IPV6_HLEN) {
        return None;
    }
    if frame[l3] >> 4 != 6 {
        return Some(Network::NotSip);
    }
    let payload_len = usize::from(u16_at(frame, l3 + 4)?);
    let mut src = [0u8; 16];
    let at = if sent { l3 + 24 } else { l3 + 8 };
    src.copy_from_slice(&frame[at..at + 16]);
    let mut next = frame[l3 + 6];
    let mut offset = l3 + IPV6_HLEN;
    let mut first_fragment_id = None;
    let mut walked = 0;
    // Extension headers Linux walks on the way to UDP or TCP.
    let is_extension = |next: u8| matches!(next, 0 | 43 | 44 | 51 | 60);
    while next != PROTO_UDP && next != PROTO_TCP {
        if walked == MAX_IPV6_EXT_HEADERS {
            // Longer than the parser walks: Linux would go on, so it may be SIP.
            return Some(if is_extension(next) {
                Network::Unparsed
            } else {
                Network::NotSip
            });
        }
        // Cut short: Linux drops such a packet, except possibly a first fragment.
        let cut_short = |first: Option<u32>| {
            Some(if first.is_some() {
                Network::Unparsed
            } else {
                Network::NotSip
            })
        };
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, first 8
            // excluded; AH (51): in 4-byte units, first 8 excluded.
            0 | 43 | 51 | 60 => {
                if !present(frame, offset, 2) {
                    return cut_short(first_fragment_id);
                }
                let len = if next == 51 {
                    (usize::from(frame[offset + 1]) + 2) * 4
                } else {
                    (usize::from(frame[offset + 1]) + 1) * 8
                };
                next = frame[offset];
                offset += len;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                if !present(frame, offset, 8) {
                    return cut_short(first_fragment_id);
                }
                next = frame[offset];
                let offset_flags = u16_at(frame, offset + 2)?;
                let id = u32_at(frame, offset + 4)?;
                if offset_flags & 0xfff8 != 0 {
                    return Some(if next == PROTO_UDP || next == PROTO_TCP {
                        Network::Fragment { src, id }
                    } else {
                        Network::NotSip
                    });
                }
                if offset_flags & 1 != 0 {
                    first_fragment_id = Some(id);
                }
                offset += 8;
            }
            _ => return Some(Network::NotSip),
        }
        walked += 1;
        if offset > MAX_L4_OFFSET {
            return Some(Network::Unparsed);
        }
    }
    Some(Network::L4(Transport {
        protocol: next,
        src,
        is_ipv4: false,
        l4: offset,
        ip_end: l3 + IPV6_HLEN + payload_len,
        first_fragment_id,
    }))
}

/// Bounds the UDP payload with the IP and UDP lengths, then classifies it.
fn datagram_class(frame: &[u8], t: &Transport, udp_len: usize) -> MethodClass {
    if udp_len < UDP_HLEN || t.ip_end > frame.len() {
        return MethodClass::Malformed;
    }
    let start = t.l4 + UDP_HLEN;
    let end = if t.first_fragment_id.is_some() {
        // Only the head of the datagram is here; the UDP length speaks for all of it.
        t.ip_end
    } else {
        if t.l4 + udp_len > t.ip_end {
            return MethodClass::Malformed;
        }
        t.l4 + udp_len
    };
    if end < start {
        return MethodClass::Malformed;
    }
    classify_payload(&frame[start..end])
}

fn is_keepalive_byte(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0)
}

/// Classifies a UDP payload sent to a SIP port by its first line.
pub fn classify_payload(payload: &[u8]) -> MethodClass {
    let len = payload.len();
    if len <= MAX_KEEPALIVE_LEN && payload.iter().all(|&b| is_keepalive_byte(b)) {
        return MethodClass::KeepAlive;
    }
    if len < MIN_CLASSIFIABLE {
        return MethodClass::Malformed;
    }
    // STUN binding keep-alive (RFC 5626 section 4.4.1): top two bits clear, magic cookie.
    if len >= 20 && payload[0] & 0xc0 == 0 && payload[4..8] == [0x21, 0x12, 0xa4, 0x42] {
        return MethodClass::KeepAlive;
    }
    if payload.starts_with(b"SIP/2.0 ") {
        let code_ok = (b'1'..=b'6').contains(&payload[8])
            && payload[9].is_ascii_digit()
            && payload[10].is_ascii_digit()
            && payload[11] == b' ';
        return if code_ok {
            MethodClass::Response
        } else {
            MethodClass::Malformed
        };
    }
    // Where the first line ends: Some(i) at a CR/LF, None when longer than the scan.
    let scan_end = MAX_REQUEST_LINE_SCAN.min(len);
    let line_end = payload[4..scan_end]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|i| i + 4);
    if line_end.is_none() && len < MAX_REQUEST_LINE_SCAN {
        // The payload ends inside the first line.
        return MethodClass::Malformed;
    }
    let Some((method_len, class)) = METHODS.iter().find_map(|&(name, class)| {
        (payload.len() > name.len() && payload.starts_with(name) && payload[name.len()] == b' ')
            .then_some((name.len() + 1, class))
    }) else {
        return MethodClass::Malformed;
    };
    let Some(line_end) = line_end else {
        // Too long to check its end: the method decides.
        return class;
    };
    // Method, space, at least one URI byte, then " SIP/2.0".
    if line_end < method_len + 1 + 8 {
        return MethodClass::Malformed;
    }
    if &payload[line_end - 8..line_end] == b" SIP/2.0" {
        class
    } else {
        MethodClass::Malformed
    }
}

/// The 16-byte key form of an address (IPv4 mapped into IPv6).
pub fn key_of(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A longest-prefix-match table over 16-byte keys, as the kernel's LPM trie behaves.
#[derive(Clone, Debug, Default)]
pub struct Lpm<V> {
    entries: Vec<([u8; 16], u32, V)>,
}

fn prefix_matches(addr: &[u8; 16], net: &[u8; 16], prefix_len: u32) -> bool {
    let prefix_len = prefix_len.min(128) as usize;
    let full = prefix_len / 8;
    if addr[..full] != net[..full] {
        return false;
    }
    let rest = prefix_len % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    addr[full] & mask == net[full] & mask
}

fn truncate(addr: [u8; 16], prefix_len: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        let bits = prefix_len.saturating_sub(8 * i as u32).min(8);
        let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        *b = addr[i] & mask;
    }
    out
}

impl<V: Clone> Lpm<V> {
    /// The 16-byte network and prefix length the kernel's trie keys `net` by.
    fn entry_key(net: IpNet) -> ([u8; 16], u32) {
        let (addr, prefix_len) = match net.trunc() {
            IpNet::V4(v4) => (
                ipv4_mapped(v4.addr().octets()),
                96 + u32::from(v4.prefix_len()),
            ),
            IpNet::V6(v6) => (v6.addr().octets(), u32::from(v6.prefix_len())),
        };
        (truncate(addr, prefix_len), prefix_len)
    }

    /// Adds or replaces the entry for `net`.
    pub fn insert(&mut self, net: IpNet, value: V) {
        let (addr, prefix_len) = Self::entry_key(net);
        self.entries
            .retain(|(a, p, _)| !(*a == addr && *p == prefix_len));
        self.entries.push((addr, prefix_len, value));
    }

    /// Removes the entry for exactly `net`, if any.
    pub fn remove(&mut self, net: IpNet) {
        let (addr, prefix_len) = Self::entry_key(net);
        self.entries
            .retain(|(a, p, _)| !(*a == addr && *p == prefix_len));
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: &[u8; 16]) -> Option<&V> {
        self.entries
            .iter()
            .filter(|(net, prefix_len, _)| prefix_matches(addr, net, *prefix_len))
            .max_by_key(|(_, prefix_len, _)| *prefix_len)
            .map(|(_, _, v)| v)
    }
}

/// GCRA: one more packet within `limit`? Updates the arrival time when it is.
pub(crate) fn gcra(tat_ns: &mut u64, limit: &RateLimit, now: u64) -> bool {
    let tat = (*tat_ns).max(now);
    if tat - now > limit.burst_tolerance_ns {
        return false;
    }
    *tat_ns = tat + limit.interval_ns;
    true
}

/// The model: configuration, lists, per-source and per-fragment state, counters.
#[derive(Clone, Debug)]
pub struct Model {
    /// The configuration as written to the `CONFIG` map (a wrong version means defaults).
    pub config: Config,
    pub allowlist: Lpm<()>,
    /// Value: expiry (monotonic ns), 0 = never.
    pub denylist: Lpm<u64>,
    /// Rate-limited, never banned.
    pub protected: Lpm<()>,
    /// Keyed like `SOURCES`: IPv4 mapped, IPv6 masked.
    pub sources: HashMap<[u8; 16], SourceState>,
    /// The durable ban table `BANS`, keyed like `sources`; never evicted.
    pub bans: HashMap<[u8; 16], DurableBan>,
    /// (unmasked source, IP id) → whether the first fragment was dropped.
    pub fragments: HashMap<([u8; 16], u32), bool>,
    /// What the program would have put in the `BAN_EVENTS` ring buffer, oldest first; the
    /// caller drains it.
    pub ban_events: Vec<BanEvent>,
    /// `VERIFIED`, keyed like `sources`.
    pub verified: HashMap<[u8; 16], VerifiedSource>,
    /// `ANSWERS`, keyed like `sources`.
    pub answers: HashMap<[u8; 16], AnswerState>,
    /// `FLOWS`: (whole address, port).
    pub flows: HashMap<([u8; 16], u16), FlowState>,
    /// `GLOBAL_BUCKETS`: the admission budget's and the total reflection cap's arrival times.
    pub global_tat_ns: [u64; 2],
    /// `PREFIXES`: the buckets (and bans) of each prefix level's prefixes, an LRU of
    /// `MAX_PREFIXES` entries.
    pub prefixes: Lru<PrefixKey, SourceState>,
    /// `PREFIX_BANS`: the durable prefix bans, never evicted.
    pub prefix_bans: HashMap<PrefixKey, DurableBan>,
    /// `GLOBAL_BUCKETS[PREFIX_BANS_UNTIL]`: the latest end of any prefix ban recorded; while
    /// it lies in the past the early prefix check is skipped.
    pub prefix_bans_until: u64,
    /// A deliberate bug, for the differential tests' check that they catch one.
    pub mutant: Mutant,
    packets: [[u64; MethodClass::COUNT]; Verdict::COUNT],
    events: [u64; EventCounter::COUNT],
}

impl Model {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            allowlist: Lpm::default(),
            denylist: Lpm::default(),
            protected: Lpm::default(),
            sources: HashMap::new(),
            bans: HashMap::new(),
            fragments: HashMap::new(),
            ban_events: Vec::new(),
            verified: HashMap::new(),
            answers: HashMap::new(),
            flows: HashMap::new(),
            global_tat_ns: [0; 2],
            prefixes: Lru::new(MAX_PREFIXES as usize),
            prefix_bans: HashMap::new(),
            prefix_bans_until: 0,
            mutant: Mutant::None,
            packets: [[0; MethodClass::COUNT]; Verdict::COUNT],
            events: [0; EventCounter::COUNT],
        }
    }

    /// Verified only while the egress program is on (`ANSWERS`).
    fn is_verified(cfg: &Config, verified_until_ns: u64, now: u64) -> bool {
        cfg.has_flag(flags::ANSWERS) && now < verified_until_ns
    }

    fn limits_for(cfg: &Config, verified: bool) -> [RateLimit; LimitClass::COUNT] {
        if verified {
            cfg.verified_limits
        } else {
            cfg.limits
        }
    }

    /// `VERIFIED`'s expiry for `key`, read only with `ANSWERS`.
    fn verified_until(&self, cfg: &Config, key: &[u8; 16]) -> u64 {
        if !cfg.has_flag(flags::ANSWERS) {
            return 0;
        }
        self.verified.get(key).map_or(0, |v| v.verified_until_ns)
    }

    fn needs_admission(cfg: &Config, class: MethodClass, verified: bool) -> bool {
        cfg.has_flag(flags::ANSWERS)
            && !verified
            && matches!(class, MethodClass::Register | MethodClass::Invite)
    }

    /// One more unverified REGISTER or INVITE in the shared budget; protected sources always.
    fn admitted(&mut self, cfg: &Config, src: &[u8; 16], now: u64) -> bool {
        if cfg.admission.interval_ns == 0 {
            return true;
        }
        gcra(&mut self.global_tat_ns[0], &cfg.admission, now)
            || self.protected.lookup(src).is_some()
    }

    fn flow_banned(&self, src: &[u8; 16], port: u16, now: u64) -> bool {
        self.flows
            .get(&(*src, port))
            .is_some_and(|flow| now < flow.banned_until_ns)
    }

    pub fn allow(&mut self, net: IpNet) {
        self.allowlist.insert(net, ());
    }

    pub fn protect(&mut self, net: IpNet) {
        self.protected.insert(net, ());
    }

    pub fn unprotect(&mut self, net: IpNet) {
        self.protected.remove(net);
    }

    /// What the LRU does to a source entry under pressure: it is gone from `SOURCES` (its ban
    /// record, if any, stays in `BANS`).
    pub fn evict(&mut self, key: &[u8; 16]) {
        self.sources.remove(key);
    }

    pub fn deny(&mut self, net: IpNet, expires_at_ns: u64) {
        self.denylist.insert(net, expires_at_ns);
    }

    /// Removes a list entry (exactly `net`), as `allow del`/`deny del` do.
    pub fn unallow(&mut self, net: IpNet) {
        self.allowlist.remove(net);
    }

    pub fn undeny(&mut self, net: IpNet) {
        self.denylist.remove(net);
    }

    /// What `sip-xdp allow add` does to the tracked sources: forgets those whose key lies in
    /// `net` (16-byte form).
    pub fn forget_sources_in(&mut self, net: IpNet) {
        let mut lpm = Lpm::default();
        lpm.insert(net, ());
        self.sources.retain(|key, _| lpm.lookup(key).is_none());
        self.bans.retain(|key, _| lpm.lookup(key).is_none());
    }

    /// The configuration the program acts on: the written one, or the defaults when its
    /// version is not the one the program knows.
    pub fn effective_config(&self) -> Config {
        if self.config.version == CONFIG_VERSION {
            self.config
        } else {
            Config::DEFAULT
        }
    }

    /// Packets counted under (verdict, class).
    pub fn packets(&self, verdict: Verdict, class: MethodClass) -> u64 {
        self.packets[verdict as usize][class as usize]
    }

    pub fn total_packets(&self) -> u64 {
        self.packets.iter().flatten().sum()
    }

    /// Bans issued (enforcing) or would-be bans (monitor) so far; the model never loses events
    /// nor fails to track a source.
    pub fn event(&self, counter: EventCounter) -> u64 {
        self.events[counter as usize]
    }

    /// The per-source key of `src` (16-byte form) under the current configuration.
    pub fn source_key(&self, src: &[u8; 16], is_ipv4: bool) -> [u8; 16] {
        let cfg = self.effective_config();
        if is_ipv4 {
            return *src;
        }
        let mut key = *src;
        for (b, m) in key.iter_mut().zip(cfg.ipv6_source_mask) {
            *b &= m;
        }
        key
    }

    /// One packet through the model at `now_ns`.
    pub fn process(&mut self, frame: &[u8], now_ns: u64) -> Outcome {
        let cfg = self.effective_config();
        let (verdict, class) = match parse(frame, &cfg) {
            Parsed::NotSip => (Verdict::PassNotSip, MethodClass::NotSip),
            Parsed::Unparsed if cfg.has_flag(flags::PASS_UNPARSED) => {
                (Verdict::PassNotSip, MethodClass::Unparsed)
            }
            Parsed::Unparsed => (Verdict::DropUnparsed, MethodClass::Unparsed),
            Parsed::Fragment { src, id } => {
                (self.fragment_verdict(&cfg, &src, id), MethodClass::Fragment)
            }
            Parsed::Sip(d) => {
                let (verdict, class) = self.sip_verdict(&cfg, &d, now_ns);
                if let Some(id) = d.first_fragment_id {
                    self.fragments.insert((d.src, id), verdict.is_drop());
                }
                (verdict, class)
            }
        };
        self.packets[verdict as usize][class as usize] += 1;
        let action = if verdict.is_drop() && !cfg.has_flag(flags::MONITOR) {
            XDP_DROP
        } else {
            XDP_PASS
        };
        Outcome {
            verdict,
            class,
            action,
        }
    }

    fn is_allowlisted(&self, src: &[u8; 16]) -> bool {
        self.allowlist.lookup(src).is_some()
    }

    fn fragment_verdict(&self, cfg: &Config, src: &[u8; 16], id: u32) -> Verdict {
        match self.fragments.get(&(*src, id)) {
            Some(false) => Verdict::Pass,
            Some(true) => Verdict::DropFragment,
            None if !cfg.has_flag(flags::DROP_UNKNOWN_FRAGMENTS) => Verdict::PassNotSip,
            None if self.is_allowlisted(src) => Verdict::PassAllowlisted,
            None => Verdict::DropFragment,
        }
    }

    /// The bucket a class draws from: every SIP class has one; a TCP segment that does not start
    /// a SIP message has none (it passes its source's checks), a SYN draws from `Connection`.
    pub fn limit_class(class: MethodClass) -> Option<LimitClass> {
        use MethodClass as M;
        match class {
            M::Register => Some(LimitClass::Register),
            M::Invite => Some(LimitClass::Invite),
            M::Options => Some(LimitClass::Options),
            M::Subscribe
            | M::Notify
            | M::Message
            | M::Prack
            | M::Update
            | M::Info
            | M::Refer
            | M::Publish => Some(LimitClass::Other),
            M::Ack | M::Bye | M::Cancel => Some(LimitClass::InDialog),
            M::Response => Some(LimitClass::Response),
            M::KeepAlive => Some(LimitClass::KeepAlive),
            M::Malformed => Some(LimitClass::Malformed),
            M::TcpSyn => Some(LimitClass::Connection),
            M::Fragment | M::NotSip | M::Unparsed | M::Tcp | M::Unread => None,
        }
    }

    /// The bucket a ban's packets draw from while it holds: the class that ran dry, or, for an
    /// auth ban (`BAN_CLASS_AUTH` with a failure kind), REGISTER's.
    pub fn ban_bucket(ban_class: u8) -> LimitClass {
        LimitClass::from_index(usize::from(ban_class)).unwrap_or(LimitClass::Register)
    }

    /// A banned source's or prefix's packet (`state` already counted it): dropped. With
    /// `EXTEND_WHILE_ACTIVE` it draws from the bucket of the ban's own class in `limits` (the
    /// packet's class may not be known yet); the ban is extended only while that bucket stays
    /// dry, and only when the extension moves its end by more than a second. True when the ban
    /// was extended (and must be persisted).
    pub(crate) fn drop_banned(
        cfg: &Config,
        state: &mut SourceState,
        limits: &[RateLimit; LimitClass::COUNT],
        now: u64,
        mutant: Mutant,
    ) -> bool {
        state.dropped += 1;
        if !cfg.has_flag(flags::EXTEND_WHILE_ACTIVE) {
            return false;
        }
        let limit = if mutant == Mutant::ExtendFromRegister {
            LimitClass::Register
        } else {
            Self::ban_bucket(state.ban_class)
        };
        let rate = limits[limit as usize];
        if rate.interval_ns == 0 || gcra(&mut state.tat_ns[limit as usize], &rate, now) {
            return false;
        }
        let extended = now + cfg.ban_extend_ns;
        if extended > state.banned_until_ns + BAN_EXTEND_GRANULARITY_NS {
            state.banned_until_ns = extended;
            return true;
        }
        false
    }

    /// Whether `state`'s ban holds now: a monitor-only ban holds in monitor mode only.
    pub(crate) fn ban_holds(cfg: &Config, state: &SourceState, now: u64) -> bool {
        now < state.banned_until_ns
            && (state.ban_flags & ban_flags::MONITOR_ONLY == 0 || cfg.has_flag(flags::MONITOR))
    }

    /// A banned source's packet, dropped: its ban may be extended (and persisted to `BANS`).
    fn drop_banned_source(&mut self, cfg: &Config, key: [u8; 16], now: u64) {
        let mutant = self.mutant;
        let state = self
            .sources
            .get_mut(&key)
            .expect("the banned source's state");
        let verified = Self::is_verified(cfg, state.verified_until_ns, now);
        let limits = Self::limits_for(cfg, verified);
        if Self::drop_banned(cfg, state, &limits, now, mutant) {
            let record = DurableBan::of(state);
            self.bans.insert(key, record);
        }
    }

    /// The program's verdict and counter class for a UDP datagram to a SIP port or a TCP
    /// segment to a SIP TCP port.
    fn sip_verdict(&mut self, cfg: &Config, d: &Datagram, now: u64) -> (Verdict, MethodClass) {
        let key = self.source_key(&d.src, d.is_ipv4);
        // 1. On the addresses alone, before the payload is read. A source whose key is its
        // whole address (IPv4, IPv6 at /128) and whose ban holds is dropped without consulting
        // the lists: banned beats denylisted, and an allowlisted address has no entry (user
        // space forgets those it allowlists). A masked IPv6 key is shared by its prefix, so the
        // lists come first for it (below).
        let key_is_address = d.is_ipv4 || cfg.ipv6_source_mask == [0xff; 16];
        if key_is_address
            && let Some(state) = self.sources.get_mut(&key)
            && Self::ban_holds(cfg, state, now)
        {
            count_packet(state, now);
            self.drop_banned_source(cfg, key, now);
            return (Verdict::DropBanned, d.early_class);
        }
        if self.prefix_banned(cfg, d, &key, now) {
            return (Verdict::DropBanned, d.early_class);
        }
        // 2. The payload's class, the lists and the source's own bucket; 3. the prefixes'.
        (self.listed_or_limited(cfg, d, key, now), d.class)
    }

    /// Lists, the source's state (restored from `BANS` when it was evicted) and its bucket,
    /// then admission and the prefix buckets.
    fn listed_or_limited(
        &mut self,
        cfg: &Config,
        d: &Datagram,
        key: [u8; 16],
        now: u64,
    ) -> Verdict {
        let (src, class) = (&d.src, d.class);
        if self.is_allowlisted(src) {
            return Verdict::PassAllowlisted;
        }
        if let Some(&expires) = self.denylist.lookup(src)
            && (expires == 0 || now < expires)
        {
            return Verdict::DropDenylisted;
        }
        let drop_malformed = cfg.has_flag(flags::DROP_MALFORMED);
        let limit = Self::limit_class(class);

        if !self.sources.contains_key(&key) && class == MethodClass::Malformed && drop_malformed {
            // Untracked garbage is dropped before the ban table is consulted.
            return Verdict::DropMalformed;
        }
        if !self.sources.contains_key(&key) {
            // Gone from SOURCES (new, or evicted): a ban or strikes kept in BANS come back.
            match self.bans.get(&key).copied() {
                Some(record)
                    if now > record.banned_until_ns
                        && now - record.banned_until_ns > cfg.strike_decay_ns =>
                {
                    self.bans.remove(&key);
                }
                Some(record) => {
                    let verified_until_ns = self.verified_until(cfg, &key);
                    self.sources.insert(
                        key,
                        SourceState {
                            verified_until_ns,
                            ..restored(&record, now)
                        },
                    );
                    self.events[EventCounter::BansRestored as usize] += 1;
                }
                None => {}
            }
        }

        if !self.sources.contains_key(&key) {
            return self.new_source(cfg, d, key, limit, now);
        }
        let flow_banned = d.protocol == Protocol::Udp && self.flow_banned(src, d.port, now);
        let protected = self.protected.lookup(src).is_some();
        let state = self.sources.get_mut(&key).expect("tracked, checked above");
        count_packet(state, now);

        if Self::ban_holds(cfg, state, now) {
            self.drop_banned_source(cfg, key, now);
            return Verdict::DropBanned;
        }
        // The first packet after a ban ran out (not one a monitor-only ban merely does not
        // apply to) reports its end, once, then goes on to the bucket like any other.
        if state.ban_flags & ban_flags::EXPIRY_PENDING != 0 && now >= state.banned_until_ns {
            state.ban_flags &= !ban_flags::EXPIRY_PENDING;
            if let Some(record) = self.bans.get_mut(&key) {
                record.ban_flags &= !ban_flags::EXPIRY_PENDING;
            }
            self.ban_events
                .push(ban_event(key, 0, state, ban_event_kind::EXPIRED, now));
        }
        if class == MethodClass::Malformed && drop_malformed {
            state.dropped += 1;
            return Verdict::DropMalformed;
        }
        // A phone of a verified address banned by the egress program, by its flow (UDP only:
        // the flow is a UDP port).
        if state.flow_bans_until_ns > now && flow_banned {
            state.dropped += 1;
            self.events[EventCounter::FlowBannedDrops as usize] += 1;
            return Verdict::DropBanned;
        }
        let Some(limit) = limit else {
            return Verdict::Pass;
        };
        let verified = Self::is_verified(cfg, state.verified_until_ns, now);
        let rate = Self::limits_for(cfg, verified)[limit as usize];
        if rate.interval_ns == 0 || gcra(&mut state.tat_ns[limit as usize], &rate, now) {
            if Self::needs_admission(cfg, class, verified) && !self.admitted(cfg, src, now) {
                self.sources.get_mut(&key).expect("tracked").dropped += 1;
                return Verdict::DropAdmission;
            }
            // A prefix's drop counts against the prefix, not the source.
            if !verified && self.prefix_buckets_dry(cfg, d, limit, now) {
                return Verdict::DropPrefix;
            }
            return Verdict::Pass;
        }
        state.dropped += 1;
        // Protected sources are held to their buckets and never banned.
        if protected {
            self.events[EventCounter::ProtectedDrops as usize] += 1;
            return Verdict::DropRate;
        }
        self.impose_ban(cfg, key, limit as u8, now);
        Verdict::DropRate
    }

    /// First packet from a source with no state and no saved ban: only a limited class that
    /// passes admission makes state; its prefixes' buckets are drawn after.
    fn new_source(
        &mut self,
        cfg: &Config,
        d: &Datagram,
        key: [u8; 16],
        limit: Option<LimitClass>,
        now: u64,
    ) -> Verdict {
        if d.class == MethodClass::Malformed && cfg.has_flag(flags::DROP_MALFORMED) {
            return Verdict::DropMalformed;
        }
        let Some(limit) = limit else {
            return Verdict::Pass;
        };
        let verified_until_ns = self.verified_until(cfg, &key);
        let verified = Self::is_verified(cfg, verified_until_ns, now);
        // Beyond the admission budget an unverified request makes no state.
        if Self::needs_admission(cfg, d.class, verified) && !self.admitted(cfg, &d.src, now) {
            return Verdict::DropAdmission;
        }
        // The prefixes' buckets are drawn after the source's state is made (the kernel draws
        // them from the program's own frame, after the policy's call returns): a new source
        // whose prefix runs dry keeps its entry.
        let rate = Self::limits_for(cfg, verified)[limit as usize];
        if rate.interval_ns == 0 {
            if !verified && self.prefix_buckets_dry(cfg, d, limit, now) {
                return Verdict::DropPrefix;
            }
            return Verdict::Pass;
        }
        let mut state = SourceState {
            window_start_ns: now,
            packets: 1,
            window_packets: 1,
            verified_until_ns,
            ..SourceState::default()
        };
        // A burst is at least one packet, so the first always conforms.
        state.tat_ns[limit as usize] = now + rate.interval_ns;
        self.sources.insert(key, state);
        if !verified && self.prefix_buckets_dry(cfg, d, limit, now) {
            return Verdict::DropPrefix;
        }
        Verdict::Pass
    }

    /// Bans the source keyed `key` (its state must exist), escalating for a repeat offender, and
    /// reports it. `ban_class`: the limit class that ran dry, or `BAN_CLASS_AUTH` with a failure
    /// kind.
    pub(crate) fn impose_ban(&mut self, cfg: &Config, key: [u8; 16], ban_class: u8, now: u64) {
        let state = self
            .sources
            .get_mut(&key)
            .expect("the banned source's state");
        let event = escalate(cfg, key, 0, state, ban_class, now);
        let record = DurableBan::of(state);
        self.count_ban(cfg);
        self.ban_events.push(event);
        self.bans.insert(key, record);
    }

    /// `BansIssued` (enforcing) or `WouldBans` (monitor) for one more ban.
    pub(crate) fn count_ban(&mut self, cfg: &Config) {
        let counter = if cfg.has_flag(flags::MONITOR) {
            EventCounter::WouldBans
        } else {
            EventCounter::BansIssued
        };
        self.events[counter as usize] += 1;
    }
}

/// One more packet of a source or prefix in its state: its total and its one-second window.
pub(crate) fn count_packet(state: &mut SourceState, now: u64) {
    state.packets += 1;
    if now.wrapping_sub(state.window_start_ns) >= RATE_WINDOW_NS {
        state.window_start_ns = now;
        state.window_packets = 0;
    }
    state.window_packets += 1;
}

/// A state rebuilt from its durable ban record: the ban and strikes, full buckets, no counts.
pub(crate) fn restored(record: &DurableBan, now: u64) -> SourceState {
    SourceState {
        banned_until_ns: record.banned_until_ns,
        ban_duration_ns: record.ban_duration_ns,
        window_start_ns: now,
        strikes: record.strikes,
        ban_class: record.ban_class,
        ban_flags: record.ban_flags,
        ..SourceState::default()
    }
}

/// A ban event about `state` (a source's when `prefix_len` is 0, else a prefix's).
pub(crate) fn ban_event(
    addr: [u8; 16],
    prefix_len: u8,
    state: &SourceState,
    kind: u8,
    now: u64,
) -> BanEvent {
    BanEvent {
        addr,
        now_ns: now,
        banned_until_ns: state.banned_until_ns,
        duration_ns: state.ban_duration_ns,
        window_ns: now.wrapping_sub(state.window_start_ns),
        window_packets: state.window_packets,
        strikes: state.strikes,
        kind,
        limit_class: state.ban_class,
        port: 0,
        prefix_len,
        _pad: [0; 3],
    }
}

/// Bans `state` (a source's or a prefix's), escalating from its strikes: the first ban after a
/// quiet `strike_decay_ns` lasts `ban_base_ns`, each repeat the last one times `ban_factor`
/// (clamped), capped by `ban_max_ns` and the ceiling. Returns the event reporting it.
pub(crate) fn escalate(
    cfg: &Config,
    addr: [u8; 16],
    prefix_len: u8,
    state: &mut SourceState,
    ban_class: u8,
    now: u64,
) -> BanEvent {
    let monitor = cfg.has_flag(flags::MONITOR);
    if state.banned_until_ns == 0 || now.saturating_sub(state.banned_until_ns) > cfg.strike_decay_ns
    {
        state.strikes = 0;
    }
    let duration = if state.strikes == 0 {
        cfg.ban_base_ns
    } else {
        state
            .ban_duration_ns
            .saturating_mul(u64::from(cfg.ban_factor).min(MAX_BAN_FACTOR))
    }
    .min(cfg.ban_max_ns)
    .min(BAN_DURATION_CEILING_NS);
    state.strikes += 1;
    state.ban_duration_ns = duration;
    state.banned_until_ns = now + duration;
    state.ban_class = ban_class;
    state.ban_flags = ban_flags::EXPIRY_PENDING | if monitor { ban_flags::MONITOR_ONLY } else { 0 };
    let kind = if monitor {
        ban_event_kind::WOULD_BAN
    } else {
        ban_event_kind::BAN
    };
    ban_event(addr, prefix_len, state, kind, now)
}

/// Deliberate bugs the differential tests plant in the model to prove that a wrong model (or a
/// kernel that differs from it the same way) is caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mutant {
    /// The model as specified.
    #[default]
    None,
    /// A ban's packets draw from REGISTER's bucket whatever the ban's class.
    ExtendFromRegister,
    /// A banned prefix drops its allowlisted sources too.
    PrefixBanIgnoresAllowlist,
    /// A prefix's repeat ban does not escalate (its strikes start over every time).
    PrefixBansDoNotEscalate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_first_lines() {
        let c = classify_payload;
        assert_eq!(c(b""), MethodClass::KeepAlive);
        assert_eq!(c(b"\r\n\r\n"), MethodClass::KeepAlive);
        assert_eq!(c(&[0u8; 16]), MethodClass::KeepAlive);
        assert_eq!(c(&[0u8; 17]), MethodClass::Malformed);
        assert_eq!(c(b"hello"), MethodClass::Malformed);
        assert_eq!(c(b"ACK s SIP/2.0\r\n\r\n"), MethodClass::Ack);
        assert_eq!(c(b"ACK  SIP/2.0\r\n\r\n\r\n"), MethodClass::Malformed);
        assert_eq!(c(b"REGISTER sip:a SIP/2.0\r\n"), MethodClass::Register);
        assert_eq!(c(b"REGISTER sip:a SIP/2.1\r\n"), MethodClass::Malformed);
        assert_eq!(c(b"REGISTERX sip:a SIP/2.0\r\n"), MethodClass::Malformed);
        assert_eq!(c(b"REGISTER sip:a SIP/2.0"), MethodClass::Malformed);
        assert_eq!(c(b"SIP/2.0 200 OK\r\n\r\n"), MethodClass::Response);
        assert_eq!(c(b"SIP/2.0 700 OK\r\n\r\n"), MethodClass::Malformed);
        let mut long = b"INVITE sip:".to_vec();
        long.resize(300, b'a');
        assert_eq!(c(&long), MethodClass::Invite);
        long.truncate(191);
        assert_eq!(c(&long), MethodClass::Malformed);
        let mut stun = vec![0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(c(&stun), MethodClass::KeepAlive);
    }

    #[test]
    fn lpm_prefers_longest_prefix() {
        let mut lpm = Lpm::default();
        lpm.insert("203.0.113.0/24".parse().unwrap(), 1u64);
        lpm.insert("203.0.113.0/30".parse().unwrap(), 2u64);
        let key = |s: &str| key_of(s.parse().unwrap());
        assert_eq!(lpm.lookup(&key("203.0.113.2")), Some(&2));
        assert_eq!(lpm.lookup(&key("203.0.113.9")), Some(&1));
        assert_eq!(lpm.lookup(&key("198.51.100.1")), None);
        assert_eq!(lpm.lookup(&key("2001:db8::1")), None);
    }
}
