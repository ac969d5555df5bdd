//! Packet parsing: Ethernet, up to two VLAN tags, IPv4/IPv6 (with extension headers), UDP or
//! TCP, and the first line of a SIP message. Headers first ([`parse`]): the policy decides a
//! banned source's fate from its addresses before the payload is read ([`classify_packet`]).
//!
//! Every read goes through [`load`], which checks the read against `data_end` right before it,
//! in the shape the verifier tracks (packet pointer + bounded offset vs `data_end`). Offsets are
//! kept small and bounded on purpose: an unbounded offset makes the verifier reject the program.
use core::mem::size_of;

use aya_ebpf::programs::{TcContext, XdpContext};

use crate::maps::opaque;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    udp::UdpHdr,
    vlan::VlanHdr,
};
use sip_xdp_common::{
    Config, MAX_ANSWER_SCAN, MAX_IPV6_EXT_HEADERS, MAX_KEEPALIVE_LEN, MAX_L4_OFFSET,
    MAX_REQUEST_LINE_SCAN, MAX_SIP_PORTS, MAX_TCP_LEADING_CRLF, MethodClass, ipv4_mapped,
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// A packet's bytes as the parser sees them: where they start and end in memory. The XDP
/// ingress program and a TC program both have one (an `xdp_md` or the linear part of an
/// `__sk_buff`), so the same parser, monomorphized, serves both; the verifier sees the same
/// pointer checks either way.
pub trait PacketView {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl PacketView for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

/// A TC program's packet, with `data` and `data_end` read from the `__sk_buff` afresh for every
/// access (volatile reads). Plain reads let LLVM keep both in registers across the whole scan,
/// or pass them to a called function as zero-extended 32-bit values; the verifier then carries
/// each parse path's packet range into the scan (walking it once per path, past its budget) or
/// refuses the arithmetic on a widened packet pointer.
pub struct SkbView {
    skb: *mut aya_ebpf::bindings::__sk_buff,
}

impl SkbView {
    #[inline(always)]
    pub fn new(ctx: &TcContext) -> Self {
        Self { skb: ctx.skb.skb }
    }
}

impl PacketView for SkbView {
    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: the context pointer the kernel passed to the program.
        unsafe { core::ptr::read_volatile(&(*self.skb).data) as usize }
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&(*self.skb).data_end) as usize }
    }
}

/// What the parser found.
pub enum Parsed {
    /// Not a UDP datagram to a configured SIP port, or not parseable as IP: never touched.
    NotSip,
    /// Cannot be resolved within the parser's bounds, so it may be UDP to a SIP port that Linux
    /// would deliver (see `MethodClass::Unparsed`): fail closed.
    Unparsed,
    /// A non-first fragment of a UDP datagram or TCP segment: no ports to read, matched by
    /// (source, id).
    Fragment { src: [u8; 16], id: u32 },
    /// A UDP datagram to a SIP port, or a TCP segment to a SIP TCP port: its headers read.
    Sip(SipPacket),
}

/// What the headers say of the payload, and so how it is classified (`SipPacket::transport`):
/// plain integers, not an enum, so that [`SipPacket::launder`] can hide which one it is from
/// the verifier.
pub mod transport {
    /// UDP with a payload to classify.
    pub const UDP: u8 = 0;
    /// UDP whose lengths do not add up: malformed without reading the payload. Also what any
    /// value not listed here reads as (fail closed).
    pub const UDP_MALFORMED: u8 = 1;
    /// A TCP SYN without ACK: a new connection.
    pub const TCP_SYN: u8 = 2;
    /// Any other TCP segment with no payload to read.
    pub const TCP: u8 = 3;
    /// A TCP segment with a payload, which may start with a request line.
    pub const TCP_PAYLOAD: u8 = 4;
}

/// A 16-byte address, 8-byte aligned so the program reads and masks it a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Addr16(pub [u8; 16]);

impl Addr16 {
    #[inline(always)]
    pub fn from_words(high: u64, low: u64) -> Self {
        let mut addr = Addr16([0; 16]);
        // SAFETY: 16 bytes, 8-byte aligned.
        unsafe { *(&mut addr as *mut Addr16 as *mut [u64; 2]) = [high, low] };
        addr
    }

    #[inline(always)]
    pub fn words(&self) -> [u64; 2] {
        // SAFETY: 16 bytes, 8-byte aligned.
        unsafe { *(self as *const Addr16 as *const [u64; 2]) }
    }
}

pub struct SipPacket {
    /// Source address, IPv4 mapped into IPv6.
    pub src: Addr16,
    /// Payload offset and length ([`transport::UDP`] and [`transport::TCP_PAYLOAD`] only),
    /// bounded again by [`classify_packet`].
    pub payload: usize,
    pub len: usize,
    /// The IP identification of a first fragment (`first_fragment`).
    pub fragment_id: u32,
    /// Source port: with the address, the flow whose ban the egress program may have set (UDP).
    pub port: u16,
    pub is_ipv4: bool,
    /// The first fragment of a fragmented datagram or segment.
    pub first_fragment: bool,
    /// A [`transport`] value.
    pub transport: u8,
    /// The [`MethodClass`] index [`classify_packet`] found, laundered for the policy (see
    /// [`SipPacket::launder`]); [`MethodClass::Unread`] until then.
    pub class_index: u32,
}

impl SipPacket {
    /// The class known from the headers alone: what a packet dropped before its payload is
    /// read is counted as.
    #[inline(always)]
    pub fn unread_class(&self) -> MethodClass {
        match self.transport {
            transport::TCP_SYN => MethodClass::TcpSyn,
            transport::TCP | transport::TCP_PAYLOAD => MethodClass::Tcp,
            _ => MethodClass::Unread,
        }
    }

    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.transport >= transport::TCP_SYN && self.transport <= transport::TCP_PAYLOAD
    }

    /// Replaces every field the header paths set to a different constant or bound with the same
    /// value laundered through [`opaque`]. Each parse path (IP version, transport, fragment,
    /// extension headers) then reaches the payload classifier in one state, and the verifier
    /// walks it once rather than once per path, past its instruction budget.
    #[inline(always)]
    pub fn launder(&mut self) {
        let shape = (self.is_ipv4 as usize)
            | (self.first_fragment as usize) << 1
            | (self.transport as usize) << 2;
        let shape = opaque(2, shape);
        self.is_ipv4 = shape & 1 != 0;
        self.first_fragment = shape & 2 != 0;
        self.transport = ((shape >> 2) & 7) as u8;
        self.payload = opaque(0, self.payload);
        self.len = opaque(1, self.len);
        self.fragment_id = opaque(3, self.fragment_id as usize) as u32;
        // An IPv4 source's first 12 bytes are constants (the mapped prefix): another state.
        let [high, low] = self.src.words();
        self.src = Addr16::from_words(
            opaque(4, high as usize) as u64,
            opaque(5, low as usize) as u64,
        );
    }
}

#[inline(always)]
fn load<T: Copy>(ctx: &impl PacketView, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked just above; T is a plain byte-array struct, any alignment.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

/// Bound of every payload read's offset: the payload starts at most `MAX_L4_OFFSET + 8` bytes
/// in, and no read starts more than `MAX_REQUEST_LINE_SCAN + 8` bytes into a request, or
/// `MAX_ANSWER_SCAN + 72` into a response (its CSeq header and the method after it).
const MAX_PAYLOAD_READ_OFFSET: usize = MAX_L4_OFFSET
    + TCP_MAX_HEADER_LEN
    + MAX_TCP_LEADING_CRLF
    + if MAX_REQUEST_LINE_SCAN > MAX_ANSWER_SCAN + 64 {
        MAX_REQUEST_LINE_SCAN
    } else {
        MAX_ANSWER_SCAN + 64
    }
    + 8;

/// `offset`, opaque to LLVM and bounded in the register it is returned in, for the pointer add
/// that follows it. The payload offset comes laundered through [`opaque`] and is bounded once in
/// `classify_datagram`, but LLVM spills it and fills it again for each read: Linux 6.1's
/// verifier learns the bound on one fill only (newer ones link the fills of a stack slot), so
/// the next fill added to the packet pointer is unbounded and the program is rejected ("math
/// between pkt pointer and register with unbounded min value"). Checked here, on the value
/// added, no verifier needs to carry a bound across a spill; opaque, LLVM cannot drop the check
/// as implied by the earlier one. Never taken for a real offset (they are all smaller).
#[inline(always)]
fn bounded_payload_offset(offset: usize) -> Option<usize> {
    let offset = core::hint::black_box(offset);
    if offset > MAX_PAYLOAD_READ_OFFSET {
        return None;
    }
    Some(offset)
}

/// [`load`] for offsets into the payload (the first bytes and scanned positions): LLVM would
/// otherwise check the end of the read and address it with negative offsets, which the verifier
/// refuses.
#[inline(always)]
pub(crate) fn load_opaque<T: Copy>(ctx: &impl PacketView, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    // The offset, not the pointer, is opaque: a constant folded into the pointer (as in
    // `offset + line_end - 8`) becomes a negative fixed offset that the verifier refuses.
    let ptr = start + bounded_payload_offset(offset)?;
    if ptr + size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked just above; T is a plain byte array, any alignment.
    Some(unsafe { core::ptr::read_unaligned(ptr as *const T) })
}

/// One byte at `offset`. LLVM rewrites `p + 1 > end` as `p >= end`, a form from which the
/// verifier learns no packet range; hiding the 1 from the optimizer keeps the check verifiable.
#[inline(always)]
pub(crate) fn load_byte(ctx: &impl PacketView, offset: usize) -> Option<u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Both opaque, or LLVM folds them back together.
    let ptr = core::hint::black_box(start + bounded_payload_offset(offset)?);
    if ptr + core::hint::black_box(1usize) > end {
        return None;
    }
    // SAFETY: bounds checked just above.
    Some(unsafe { *(ptr as *const u8) })
}

/// Where the IP header of the packet starts and which protocol it is.
#[inline(always)]
fn l3_offset(ctx: &impl PacketView) -> Option<(usize, u16)> {
    let eth: EthHdr = load(ctx, 0)?;
    let mut ether_type = u16::from_be(eth.ether_type);
    let mut offset = EthHdr::LEN;
    // Up to two tags: 802.1Q, or 802.1ad (QinQ) outer + 802.1Q inner.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let vlan: VlanHdr = load(ctx, offset)?;
        ether_type = u16::from_be(vlan.ether_type);
        offset += VlanHdr::LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let vlan: VlanHdr = load(ctx, offset)?;
            ether_type = u16::from_be(vlan.ether_type);
            offset += VlanHdr::LEN;
        }
    }
    Some((offset, ether_type))
}

/// Transport-level facts common to both IP versions.
struct L4 {
    /// `IPPROTO_UDP` or `IPPROTO_TCP`.
    proto: u8,
    /// The far end's address: the source of a packet received, the destination of one sent.
    src: [u8; 16],
    is_ipv4: bool,
    /// Offset of the UDP or TCP header.
    offset: usize,
    /// Offset one past the IP payload (from the IP length field, not the frame: frames are padded).
    ip_end: usize,
    /// `Some(id)` for the first fragment of a fragmented datagram.
    first_fragment_id: Option<u32>,
}

enum L3 {
    NotSip,
    Unparsed,
    Fragment { src: [u8; 16], id: u32 },
    Transport(L4),
}

/// `EGRESS` parses a packet the host sends: the far end is its destination.
#[inline(always)]
fn parse_ipv4<const EGRESS: bool>(ctx: &impl PacketView, offset: usize) -> L3 {
    let Some(ip) = load::<Ipv4Hdr>(ctx, offset) else {
        return L3::NotSip;
    };
    let header_len = ((ip.vihl & 0x0f) as usize) * 4;
    // The egress program reads UDP only.
    let tcp = !EGRESS && ip.proto == IPPROTO_TCP;
    if ip.vihl >> 4 != 4 || header_len < Ipv4Hdr::LEN || (ip.proto != IPPROTO_UDP && !tcp) {
        return L3::NotSip;
    }
    let total_len = u16::from_be_bytes(ip.tot_len) as usize;
    if total_len < header_len {
        return L3::NotSip;
    }
    let src = ipv4_mapped(if EGRESS { ip.dst_addr } else { ip.src_addr });
    let frags = u16::from_be_bytes(ip.frags);
    let id = u16::from_be_bytes(ip.id) as u32;
    if frags & 0x1fff != 0 {
        return L3::Fragment { src, id };
    }
    let more_fragments = frags & 0x2000 != 0;
    L3::Transport(L4 {
        proto: ip.proto,
        src,
        is_ipv4: true,
        offset: offset + header_len,
        ip_end: offset + total_len,
        first_fragment_id: if more_fragments { Some(id) } else { None },
    })
}

#[inline(always)]
fn parse_ipv6<const EGRESS: bool>(ctx: &impl PacketView, offset: usize) -> L3 {
    let Some(ip) = load::<Ipv6Hdr>(ctx, offset) else {
        return L3::NotSip;
    };
    if ip.vcf[0] >> 4 != 6 {
        return L3::NotSip;
    }
    let src = if EGRESS { ip.dst_addr } else { ip.src_addr };
    let ip_end = offset + Ipv6Hdr::LEN + u16::from_be_bytes(ip.payload_len) as usize;
    let mut next = ip.next_hdr;
    let mut l4 = offset + Ipv6Hdr::LEN;
    let mut first_fragment_id = None;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let ext_len = match next {
            IPPROTO_UDP => break,
            IPPROTO_TCP if !EGRESS => break,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                // A first fragment must hold the whole chain (RFC 8200 4.5); one that does not
                // may still be reassembled by an older kernel: fail closed. Any other cut-short
                // chain is dropped by Linux itself.
                let Some(ext) = load::<[u8; 2]>(ctx, l4) else {
                    return cut_short(first_fragment_id);
                };
                // AH counts its length in 4-byte units, minus 2; the others in 8-byte units,
                // minus 1.
                let len = if next == IPPROTO_AH {
                    (ext[1] as usize + 2) * 4
                } else {
                    (ext[1] as usize + 1) * 8
                };
                next = ext[0];
                len
            }
            IPPROTO_FRAGMENT => {
                let Some(frag) = load::<[u8; 8]>(ctx, l4) else {
                    return cut_short(first_fragment_id);
                };
                next = frag[0];
                let offset_and_flags = u16::from_be_bytes([frag[2], frag[3]]);
                let id = u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]);
                if offset_and_flags & 0xfff8 != 0 {
                    return if next == IPPROTO_UDP || (!EGRESS && next == IPPROTO_TCP) {
                        L3::Fragment { src, id }
                    } else {
                        L3::NotSip
                    };
                }
                if offset_and_flags & 1 != 0 {
                    first_fragment_id = Some(id);
                }
                8
            }
            _ => return L3::NotSip,
        };
        l4 += ext_len;
        if l4 > MAX_L4_OFFSET {
            return L3::Unparsed;
        }
    }
    match next {
        IPPROTO_UDP => {}
        IPPROTO_TCP if !EGRESS => {}
        // The chain goes on past the headers walked: Linux walks it to the end.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
            return L3::Unparsed;
        }
        _ => return L3::NotSip,
    }
    L3::Transport(L4 {
        proto: next,
        src,
        is_ipv4: false,
        offset: l4,
        ip_end,
        first_fragment_id,
    })
}

/// A header the chain needs is cut short: fail closed only inside a first fragment.
#[inline(always)]
fn cut_short(first_fragment_id: Option<u32>) -> L3 {
    if first_fragment_id.is_some() {
        L3::Unparsed
    } else {
        L3::NotSip
    }
}

/// IPv4-mapped IPv6 (`::ffff:0:0/96`) is never a valid source on the wire (RFC 4291 2.5.5.2),
/// and sources of that form would share the keys of the IPv4 addresses they name.
#[inline(always)]
fn is_ipv4_mapped(src: &[u8; 16]) -> bool {
    u64::from_ne_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]) == 0
        && src[8] == 0
        && src[9] == 0
        && src[10] == 0xff
        && src[11] == 0xff
}

/// The common untagged, option-less IPv4 frame that is plainly not UDP to a SIP port (TCP, ARP,
/// DNS, RTP). Answered inline, because the full parser is a BPF-to-BPF call that alone costs
/// more than the rest of the non-SIP path. `false` means "parse it properly", never "it is SIP".
#[inline(always)]
pub fn quick_not_sip(ctx: &impl PacketView, cfg: &Config) -> bool {
    // One bounds check for everything read, and single bytes read straight from the packet:
    // header copies would sit in the program's own stack frame, which the parser's and the
    // policy's share (512 bytes in all).
    const PORTS_END: usize = EthHdr::LEN + Ipv4Hdr::LEN + 4;
    let start = ctx.data();
    if start + PORTS_END > ctx.data_end() {
        return false;
    }
    // SAFETY: every offset read is below PORTS_END, checked just above.
    let byte = |offset: usize| unsafe { *((start + offset) as *const u8) };
    match u16::from_be_bytes([byte(12), byte(13)]) {
        ETH_P_IPV4 => {}
        ETH_P_IPV6 | ETH_P_8021Q | ETH_P_8021AD => return false,
        _ => return true,
    }
    let ip = EthHdr::LEN;
    // Version 4, no options, not a later fragment (fragment offset 0).
    if byte(ip) != 0x45 || (byte(ip + 6) & 0x1f) != 0 || byte(ip + 7) != 0 {
        return false;
    }
    let ports = match byte(ip + 9) {
        IPPROTO_UDP => &cfg.sip_ports,
        IPPROTO_TCP => &cfg.tcp_ports,
        _ => return true,
    };
    let l4 = ip + Ipv4Hdr::LEN;
    !is_port_in(ports, u16::from_be_bytes([byte(l4 + 2), byte(l4 + 3)]))
}

/// The context pointer, as a called function must receive it. Without this LLVM may pass the
/// `data` and `data_end` it reads through it instead (argument promotion), as 32-bit values the
/// function widens again, and the verifier refuses arithmetic on a widened packet pointer.
#[inline(always)]
fn keep_context<C>(ctx: &C) -> &C {
    core::hint::black_box(ctx)
}

/// Parses a frame's headers up to UDP or TCP. Not inlined: its stack frame (header copies) is
/// gone by the time the policy runs, which keeps the combined BPF stack under 512 bytes.
#[inline(never)]
pub fn parse<C: PacketView>(ctx: &C, cfg: &Config) -> Parsed {
    let ctx = keep_context(ctx);
    let Some((l3, ether_type)) = l3_offset(ctx) else {
        return Parsed::NotSip;
    };
    let l4 = match ether_type {
        ETH_P_IPV4 => parse_ipv4::<false>(ctx, l3),
        ETH_P_IPV6 => parse_ipv6::<false>(ctx, l3),
        _ => return Parsed::NotSip,
    };
    let l4 = match l4 {
        L3::NotSip => return Parsed::NotSip,
        L3::Unparsed => return Parsed::Unparsed,
        L3::Fragment { src, id } => return Parsed::Fragment { src, id },
        L3::Transport(l4) => l4,
    };
    if l4.proto == IPPROTO_TCP {
        return parse_tcp(ctx, cfg, &l4);
    }
    let ports = &cfg.sip_ports;
    let Some(udp) = load::<[u8; 8]>(ctx, l4.offset) else {
        return cut_short_header(ctx, ports, l4.offset, l4.first_fragment_id.is_some());
    };
    if !is_port_in(ports, u16::from_be_bytes([udp[2], udp[3]])) {
        return Parsed::NotSip;
    }
    if !l4.is_ipv4 && is_ipv4_mapped(&l4.src) {
        return Parsed::Unparsed;
    }
    let (transport, payload, len) =
        udp_payload(ctx, &l4, u16::from_be_bytes([udp[4], udp[5]]) as usize);
    Parsed::Sip(SipPacket {
        src: Addr16(l4.src),
        payload,
        len,
        fragment_id: l4.first_fragment_id.unwrap_or(0),
        port: u16::from_be_bytes([udp[0], udp[1]]),
        is_ipv4: l4.is_ipv4,
        first_fragment: l4.first_fragment_id.is_some(),
        transport,
        class_index: MethodClass::Unread as u32,
    })
}

/// A first fragment without its whole UDP or TCP header may hide a SIP port, and its followers
/// would be reassembled behind it: fail closed, unless the port it shows is not one.
#[inline(always)]
fn cut_short_header(
    ctx: &impl PacketView,
    ports: &[u16; MAX_SIP_PORTS],
    offset: usize,
    first_fragment: bool,
) -> Parsed {
    let hides_sip = first_fragment
        && match load_opaque::<[u8; 4]>(ctx, offset) {
            Some(p) => is_port_in(ports, u16::from_be_bytes([p[2], p[3]])),
            None => true,
        };
    if hides_sip {
        Parsed::Unparsed
    } else {
        Parsed::NotSip
    }
}

/// [`parse`] from a TCP header on. The header paths (VLAN tags, IPv4 options, IPv6 extension
/// chains) reach it at differently bounded offsets; laundered, they walk it in one state:
/// without this, Linux 6.1's verifier walked it once per path, 400k instructions.
#[inline(always)]
fn parse_tcp(ctx: &impl PacketView, cfg: &Config, l4: &L4) -> Parsed {
    let offset = opaque(0, l4.offset);
    let ip_end = opaque(1, l4.ip_end);
    // Never taken for a real offset: the bounds the laundering hid, restated.
    if offset > MAX_L4_OFFSET || ip_end > MAX_L4_OFFSET + u16::MAX as usize {
        return Parsed::NotSip;
    }
    let ports = &cfg.tcp_ports;
    let first_fragment = l4.first_fragment_id.is_some();
    let Some(tcp) = load_opaque::<[u8; TCP_HEADER_LEN]>(ctx, offset) else {
        return cut_short_header(ctx, ports, offset, first_fragment);
    };
    if !is_port_in(ports, u16::from_be_bytes([tcp[2], tcp[3]])) {
        return Parsed::NotSip;
    }
    if !l4.is_ipv4 && is_ipv4_mapped(&l4.src) {
        return Parsed::Unparsed;
    }
    let (transport, payload, len) = tcp_payload(ctx, offset, ip_end, tcp[12], tcp[13]);
    Parsed::Sip(SipPacket {
        src: Addr16(l4.src),
        payload,
        len,
        fragment_id: l4.first_fragment_id.unwrap_or(0),
        port: u16::from_be_bytes([tcp[0], tcp[1]]),
        is_ipv4: l4.is_ipv4,
        first_fragment,
        transport,
        class_index: MethodClass::Unread as u32,
    })
}

/// The fixed TCP header.
const TCP_HEADER_LEN: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A UDP datagram's payload; [`transport::UDP_MALFORMED`] when the UDP and IP lengths do not
/// add up.
#[inline(always)]
fn udp_payload(ctx: &impl PacketView, l4: &L4, udp_len: usize) -> (u8, usize, usize) {
    let payload = l4.offset + UdpHdr::LEN;
    if udp_len < UdpHdr::LEN || l4.ip_end > ctx.data_end() - ctx.data() {
        return (transport::UDP_MALFORMED, 0, 0);
    }
    let payload_end = if l4.first_fragment_id.is_some() {
        // The UDP length covers the whole datagram; this fragment holds its head only.
        l4.ip_end
    } else {
        let datagram_end = l4.offset + udp_len;
        if datagram_end > l4.ip_end {
            return (transport::UDP_MALFORMED, 0, 0);
        }
        datagram_end
    };
    if payload_end < payload {
        return (transport::UDP_MALFORMED, 0, 0);
    }
    (transport::UDP, payload, payload_end - payload)
}

/// A TCP segment's class from its flags, and its payload when it has one to classify.
#[inline(always)]
fn tcp_payload(
    ctx: &impl PacketView,
    offset: usize,
    ip_end: usize,
    data_offset: u8,
    flags: u8,
) -> (u8, usize, usize) {
    if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        return (transport::TCP_SYN, 0, 0);
    }
    let header_len = ((data_offset >> 4) as usize) * 4;
    let payload = offset + header_len;
    if header_len < TCP_HEADER_LEN || ip_end > ctx.data_end() - ctx.data() || payload >= ip_end {
        return (transport::TCP, 0, 0);
    }
    (transport::TCP_PAYLOAD, payload, ip_end - payload)
}

/// Classifies the payload [`parse`] found. Not inlined: every parse path reaches it with its
/// offsets laundered through [`opaque`], in one state, and a banned source's packet never
/// gets here.
#[inline(never)]
pub fn classify_packet<C: PacketView>(ctx: &C, packet: &SipPacket) -> MethodClass {
    let ctx = keep_context(ctx);
    let kind = packet.transport;
    match kind {
        transport::UDP | transport::TCP_PAYLOAD => {}
        transport::TCP_SYN => return MethodClass::TcpSyn,
        transport::TCP => return MethodClass::Tcp,
        _ => return MethodClass::Malformed,
    }
    // Laundered already (`SipPacket::launder`, before the early ban): bounded again here.
    let (payload, len) = (packet.payload, packet.len);
    let bad = payload > MAX_L4_OFFSET + TCP_MAX_HEADER_LEN || len > u16::MAX as usize;
    if kind == transport::TCP_PAYLOAD {
        if bad {
            return MethodClass::Tcp;
        }
        // Only a segment that starts with a request or status line is counted as one: TLS,
        // WebSocket frames and the rest of a message are just TCP. CR/LF before a request is
        // skipped, as a SIP server's stream reader skips it (RFC 3261 7.5; RFC 5626 pings):
        // otherwise a CRLF in front of each REGISTER would carry them all past the bucket.
        let mut skip = 0;
        while skip < MAX_TCP_LEADING_CRLF && skip < len {
            match load_byte(ctx, payload + skip) {
                Some(b'\r' | b'\n') => skip += 1,
                _ => break,
            }
        }
        // Laundered again, so the classifier is walked once, not once per count skipped.
        let start = opaque(0, payload + skip);
        let rest = opaque(1, len - skip);
        if start > MAX_L4_OFFSET + TCP_MAX_HEADER_LEN + MAX_TCP_LEADING_CRLF
            || rest > u16::MAX as usize
        {
            return MethodClass::Tcp;
        }
        return match classify(ctx, start, rest) {
            MethodClass::Malformed | MethodClass::KeepAlive => MethodClass::Tcp,
            class => class,
        };
    }
    if bad {
        return MethodClass::Malformed;
    }
    let class = classify(ctx, payload, len);
    // Keep-alives are never fragmented: a first fragment that reads as one (no payload, a few
    // CR/LF) is a tiny-fragment attack whose request line comes in the followers.
    if packet.first_fragment && class == MethodClass::KeepAlive {
        return MethodClass::Malformed;
    }
    class
}

/// Longest TCP header (data offset 15): the payload starts at most this far past the TCP offset.
const TCP_MAX_HEADER_LEN: usize = 60;

/// A UDP datagram the host sends from a SIP port: where its payload is and whom it goes to.
pub struct Answer {
    /// Destination address (the client), IPv4 mapped into IPv6.
    pub dst: Addr16,
    /// Destination port.
    pub port: u16,
    /// Non-zero for IPv4. Laundered through `opaque`, not a `bool`: every value the answer
    /// carries across the scan must be one the verifier does not know, or it walks the scan once
    /// per header path.
    pub ipv4: usize,
    /// Payload offset and length, bounded as for the ingress classifier.
    pub payload: usize,
    pub len: usize,
}

/// Parses a frame the host sends, up to the payload of a UDP datagram from a SIP port. What it
/// cannot resolve is none of its business: the egress program only learns from what it reads,
/// and never drops what it cannot read.
///
/// Not inlined, and the status line and CSeq are read in a call of their own too
/// (`answers::read_answer`): each starts with no packet range from the paths before it.
#[inline(never)]
pub fn parse_answer(ctx: &impl PacketView, cfg: &Config) -> Option<Answer> {
    let (l3, ether_type) = l3_offset(ctx)?;
    let l4 = match ether_type {
        ETH_P_IPV4 => parse_ipv4::<true>(ctx, l3),
        ETH_P_IPV6 => parse_ipv6::<true>(ctx, l3),
        _ => return None,
    };
    let L3::Transport(l4) = l4 else {
        return None;
    };
    let udp = load::<UdpHdr>(ctx, l4.offset)?;
    if !is_port_in(&cfg.sip_ports, u16::from_be_bytes(udp.src)) {
        return None;
    }
    let udp_len = u16::from_be_bytes(udp.len) as usize;
    let payload = l4.offset + UdpHdr::LEN;
    if udp_len < UdpHdr::LEN || l4.ip_end > ctx.data_end() - ctx.data() {
        return None;
    }
    let payload_end = if l4.first_fragment_id.is_some() {
        l4.ip_end
    } else {
        let datagram_end = l4.offset + udp_len;
        if datagram_end > l4.ip_end {
            return None;
        }
        datagram_end
    };
    if payload_end < payload {
        return None;
    }
    // As for requests (`classify_datagram`): every header path reaches the payload at a
    // differently bounded offset; laundered and clamped, they all enter the scan in one state.
    let payload = opaque(0, payload);
    let len = opaque(1, payload_end - payload);
    if payload > MAX_L4_OFFSET + UdpHdr::LEN || len > u16::MAX as usize {
        return None;
    }
    Some(Answer {
        dst: Addr16(l4.src),
        port: u16::from_be_bytes(udp.dst),
        ipv4: opaque(2, l4.is_ipv4 as usize),
        payload,
        len,
    })
}

/// Is `port` one of `ports` (UDP `sip_ports` or `tcp_ports`)?
#[inline(always)]
fn is_port_in(ports: &[u16; MAX_SIP_PORTS], port: u16) -> bool {
    // Unused slots hold 0, which no real datagram or segment is addressed to.
    if port == 0 {
        return false;
    }
    let mut i = 0;
    while i < ports.len() {
        if ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// `needle` as a little-endian word with its mask, for comparing up to 8 bytes in one go.
const fn word(bytes: &[u8], from: usize) -> (u64, u64) {
    let mut value = 0u64;
    let mut mask = 0u64;
    let mut i = 0;
    while i < 8 && from + i < bytes.len() {
        value |= (bytes[from + i] as u64) << (8 * i);
        mask |= 0xff << (8 * i);
        i += 1;
    }
    (value, mask)
}

struct MethodPattern {
    w0: (u64, u64),
    w1: (u64, u64),
    /// Method length including the space after it.
    len: usize,
    class: MethodClass,
}

const fn method(text: &[u8], class: MethodClass) -> MethodPattern {
    MethodPattern {
        w0: word(text, 0),
        w1: word(text, 8),
        len: text.len(),
        class,
    }
}

/// Most frequent first: a scanner's REGISTER flood matches on the first try.
const METHODS: [MethodPattern; 14] = [
    method(b"REGISTER ", MethodClass::Register),
    method(b"INVITE ", MethodClass::Invite),
    method(b"OPTIONS ", MethodClass::Options),
    method(b"ACK ", MethodClass::Ack),
    method(b"BYE ", MethodClass::Bye),
    method(b"CANCEL ", MethodClass::Cancel),
    method(b"SUBSCRIBE ", MethodClass::Subscribe),
    method(b"NOTIFY ", MethodClass::Notify),
    method(b"MESSAGE ", MethodClass::Message),
    method(b"PRACK ", MethodClass::Prack),
    method(b"UPDATE ", MethodClass::Update),
    method(b"INFO ", MethodClass::Info),
    method(b"REFER ", MethodClass::Refer),
    method(b"PUBLISH ", MethodClass::Publish),
];

const SIP_VERSION_PREFIX: (u64, u64) = word(b"SIP/2.0 ", 0);
const SIP_VERSION_SUFFIX: (u64, u64) = word(b" SIP/2.0", 0);
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// Shortest request line: "ACK " + a one-character URI + " SIP/2.0" + CR.
const MIN_CLASSIFIABLE: usize = 16;

/// Classifies a SIP payload of `len` bytes at `offset` from its first line.
///
/// Inlined into [`parse`]: as a BPF-to-BPF call of its own it cost about 10 ns per packet in call
/// and return alone (BENCHMARKS.md's host), while every parse path reaches it through `opaque`
/// in one state, so the verifier walks its loops about once either way (+4k verified
/// instructions inlined).
#[inline(always)]
pub fn classify(ctx: &impl PacketView, offset: usize, len: usize) -> MethodClass {
    if len <= MAX_KEEPALIVE_LEN && is_keepalive(ctx, offset, len) {
        return MethodClass::KeepAlive;
    }
    if len < MIN_CLASSIFIABLE {
        return MethodClass::Malformed;
    }
    let Some(head) = load_opaque::<[u8; 16]>(ctx, offset) else {
        return MethodClass::Malformed;
    };
    let w0 = u64::from_le_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    let w1 = u64::from_le_bytes([
        head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
    ]);

    // RFC 5626 allows STUN binding requests as keep-alives on the SIP port.
    if len >= 20 && head[0] & 0xc0 == 0 && [head[4], head[5], head[6], head[7]] == STUN_MAGIC_COOKIE
    {
        return MethodClass::KeepAlive;
    }

    if w0 == SIP_VERSION_PREFIX.0 {
        let status_ok = (b'1'..=b'6').contains(&head[8])
            && head[9].is_ascii_digit()
            && head[10].is_ascii_digit()
            && head[11] == b' ';
        return if status_ok {
            MethodClass::Response
        } else {
            MethodClass::Malformed
        };
    }

    // Scan before matching the method: the scan then starts in one state whatever the method,
    // and its result is laundered so the method checks below are not walked once per position.
    let line_end = opaque(0, find_line_end(ctx, offset, len));
    if line_end == LINE_TRUNCATED {
        return MethodClass::Malformed;
    }

    let mut i = 0;
    let mut found: Option<(MethodClass, usize)> = None;
    while i < METHODS.len() {
        let m = &METHODS[i];
        if w0 & m.w0.1 == m.w0.0 && w1 & m.w1.1 == m.w1.0 {
            found = Some((m.class, m.len));
            break;
        }
        i += 1;
    }
    let Some((class, method_len)) = found else {
        return MethodClass::Malformed;
    };
    if line_end >= MAX_REQUEST_LINE_SCAN {
        return class;
    }
    // The line must hold the method, a non-empty Request-URI and " SIP/2.0".
    if line_end < method_len + 1 + 8 {
        return MethodClass::Malformed;
    }
    match load_opaque::<[u8; 8]>(ctx, offset + line_end - 8) {
        Some(version) if u64::from_le_bytes(version) == SIP_VERSION_SUFFIX.0 => class,
        _ => MethodClass::Malformed,
    }
}

/// [`find_line_end`]: the payload ends before any CR or LF.
const LINE_TRUNCATED: usize = 0;

/// Offset of the first CR or LF of the payload; [`LINE_TRUNCATED`] when the payload ends first;
/// [`MAX_REQUEST_LINE_SCAN`] when the line is longer than the scan.
///
/// Eight bytes per step (SWAR): a byte loop costs a bounds check and two compares per byte, and
/// a typical request line is 50 to 100 bytes long.
#[inline(always)]
fn find_line_end(ctx: &impl PacketView, offset: usize, len: usize) -> usize {
    // No method is shorter than three letters and a space, so the scan starts after that.
    let mut i = 4;
    while i < MAX_REQUEST_LINE_SCAN {
        if i + 8 > len {
            break;
        }
        let Some(chunk) = load_opaque::<[u8; 8]>(ctx, offset + i) else {
            return LINE_TRUNCATED;
        };
        if let Some(at) = first_cr_or_lf(u64::from_le_bytes(chunk)) {
            return capped_line_end(i + at);
        }
        i += 8;
    }
    if i >= MAX_REQUEST_LINE_SCAN {
        return MAX_REQUEST_LINE_SCAN;
    }
    // Fewer than 8 payload bytes left from `i`. The last 8 bytes of the payload cover them, and
    // those before `i` were already found free of CR and LF. `len >= MIN_CLASSIFIABLE` here, so
    // the window starts inside the payload; the explicit bound (implied by `i + 8 > len`) is for
    // the verifier, which must see a small offset.
    if len < 8 || len >= MAX_REQUEST_LINE_SCAN + 8 {
        return LINE_TRUNCATED;
    }
    let Some(chunk) = load_opaque::<[u8; 8]>(ctx, offset + len - 8) else {
        return LINE_TRUNCATED;
    };
    match first_cr_or_lf(u64::from_le_bytes(chunk)) {
        Some(at) => capped_line_end(len - 8 + at),
        None if len >= MAX_REQUEST_LINE_SCAN => MAX_REQUEST_LINE_SCAN,
        None => LINE_TRUNCATED,
    }
}

/// A line end found past the scan limit reads as a line longer than the scan, as the byte scan
/// would have reported it.
#[inline(always)]
fn capped_line_end(at: usize) -> usize {
    if at >= MAX_REQUEST_LINE_SCAN {
        MAX_REQUEST_LINE_SCAN
    } else {
        at
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Index of the first (lowest-addressed) CR or LF byte of a little-endian word.
///
/// `(x - ONES) & !x & HIGHS` flags the zero bytes of `x`, exactly up to its first zero byte
/// (a borrow can only flag bytes above a real zero), so the lowest flag of the union is exact.
#[inline(always)]
pub(crate) fn first_cr_or_lf(word: u64) -> Option<usize> {
    let flags = byte_flags(word, b'\r') | byte_flags(word, b'\n');
    if flags == 0 {
        return None;
    }
    Some(lowest_flag_index(flags))
}

/// Flags (bit 8k+7) the bytes of `word` equal to `byte`: exact up to the first such byte, and
/// never missing one; above it, a borrow may flag a byte that is not.
#[inline(always)]
pub(crate) fn byte_flags(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * byte as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Index of the lowest flagged byte of non-zero `flags`.
#[inline(always)]
pub(crate) fn lowest_flag_index(flags: u64) -> usize {
    // The lowest flag is bit 8k+7; BPF has no count-trailing-zeros, so a multiply moves k into
    // the top byte: (1 << 8k) * 0x0001020304050607 has byte 7-k of the constant, k, on top.
    let lowest = flags & flags.wrapping_neg();
    ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// Empty datagrams and short runs of CR/LF (RFC 5626 ping "\r\n\r\n", pong "\r\n"), with the
/// NUL and space padding some phones send, keep NAT bindings open: they must pass.
#[inline(always)]
fn is_keepalive(ctx: &impl PacketView, offset: usize, len: usize) -> bool {
    let mut i = 0;
    while i < MAX_KEEPALIVE_LEN {
        if i >= len {
            return true;
        }
        match load_byte(ctx, offset + i) {
            Some(b'\r' | b'\n' | b' ' | b'\t' | 0) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}
