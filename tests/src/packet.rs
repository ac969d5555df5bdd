//! Builds Ethernet frames byte by byte, including the odd shapes a parser must survive: VLAN
//! and QinQ tags, IPv4 options, IPv6 extension headers, fragments, lying length fields.
use std::net::IpAddr;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;

/// An IPv6 extension header placed between the fixed header and UDP.
#[derive(Clone, Debug)]
pub enum Ipv6Ext {
    HopByHop {
        len_units: u8,
    },
    Routing {
        len_units: u8,
    },
    DestinationOptions {
        len_units: u8,
    },
    /// Authentication Header: `len_units` counts 4-byte words, minus 2 (12 bytes at 1).
    Authentication {
        len_units: u8,
    },
    Fragment {
        offset_units: u16,
        more: bool,
        id: u32,
    },
}

impl Ipv6Ext {
    fn proto(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => 0,
            Self::Routing { .. } => 43,
            Self::DestinationOptions { .. } => 60,
            Self::Authentication { .. } => 51,
            Self::Fragment { .. } => 44,
        }
    }

    /// Bytes this header takes on the wire.
    pub fn wire_len(&self) -> usize {
        match *self {
            Self::HopByHop { len_units }
            | Self::Routing { len_units }
            | Self::DestinationOptions { len_units } => (len_units as usize + 1) * 8,
            Self::Authentication { len_units } => (len_units as usize + 2) * 4,
            Self::Fragment { .. } => 8,
        }
    }

    fn bytes(&self, next: u8) -> Vec<u8> {
        match *self {
            Self::Authentication { len_units } => {
                let mut b = vec![0u8; (len_units as usize + 2) * 4];
                b[0] = next;
                b[1] = len_units;
                b[4..8].copy_from_slice(&0x5a5a_0001u32.to_be_bytes()); // SPI
                b
            }
            Self::HopByHop { len_units }
            | Self::Routing { len_units }
            | Self::DestinationOptions { len_units } => {
                let mut b = vec![0u8; (len_units as usize + 1) * 8];
                b[0] = next;
                b[1] = len_units;
                if matches!(
                    self,
                    Self::HopByHop { .. } | Self::DestinationOptions { .. }
                ) {
                    // Filled so a real stack accepts the header: Linux refuses more than 7
                    // bytes of padding in a row, so a long header carries experimental option
                    // 0x1e (RFC 4727; its "skip if unknown" action bits are 00), then padding.
                    let mut at = 2;
                    while b.len() - at > 7 {
                        let len = (b.len() - at - 2).min(255);
                        b[at] = 0x1e;
                        b[at + 1] = len as u8;
                        at += 2 + len;
                    }
                    if b.len() - at >= 2 {
                        b[at] = 1; // PadN
                        b[at + 1] = (b.len() - at - 2) as u8;
                    }
                    // One byte left: Pad1 (0), already zero.
                }
                b
            }
            Self::Fragment {
                offset_units,
                more,
                id,
            } => {
                let mut b = vec![0u8; 8];
                b[0] = next;
                let off = (offset_units << 3) | more as u16;
                b[2..4].copy_from_slice(&off.to_be_bytes());
                b[4..8].copy_from_slice(&id.to_be_bytes());
                b
            }
        }
    }
}

/// TCP flag bits (byte 13 of the TCP header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    /// The flag combinations a connection goes through: a new connection, its answer, its
    /// acknowledgements and data, and its two ends.
    pub const COMBINATIONS: [(&str, u8); 8] = [
        ("SYN", SYN),
        ("SYN+ACK", SYN | ACK),
        ("ACK", ACK),
        ("PSH+ACK", PSH | ACK),
        ("RST", RST),
        ("RST+ACK", RST | ACK),
        ("FIN+ACK", FIN | ACK),
        ("FIN", FIN),
    ];
}

/// The TCP header of a [`Frame`] whose `protocol` is [`IPPROTO_TCP`].
#[derive(Clone, Debug)]
pub struct TcpHeader {
    /// Bits from [`tcp_flags`].
    pub flags: u8,
    /// Options, padded with NOPs to 4 bytes.
    pub options: Vec<u8>,
    /// Overrides the data offset (in 4-byte words; 5 plus the options' words otherwise). Any
    /// value 0..=15, including ones that lie about where the payload starts.
    pub data_offset: Option<u8>,
    pub seq: u32,
    pub ack: u32,
}

impl Default for TcpHeader {
    /// A SYN without options, as a new connection starts.
    fn default() -> Self {
        Self {
            flags: tcp_flags::SYN,
            options: Vec::new(),
            data_offset: None,
            seq: 0x1000_0000,
            ack: 0,
        }
    }
}

/// One frame to build. Defaults give a well-formed IPv4 UDP datagram to port 5060.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// (TPID, VLAN id), outermost first.
    pub vlans: Vec<(u16, u16)>,
    /// IPv4 options (padded to 4 bytes).
    pub ipv4_options: Vec<u8>,
    /// IPv4: (more fragments, offset in 8-byte units, id).
    pub ipv4_fragment: Option<(bool, u16, u16)>,
    pub ipv6_ext: Vec<Ipv6Ext>,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
    /// Overrides the UDP length field.
    pub udp_len_override: Option<u16>,
    /// Leave out the transport header (non-first fragments).
    pub omit_l4_header: bool,
    /// The TCP header, when `protocol` is [`IPPROTO_TCP`] (a SYN without options by default).
    pub tcp: TcpHeader,
}

impl Frame {
    pub fn udp(src: IpAddr, dst: IpAddr, dst_port: u16, payload: &[u8]) -> Self {
        Self {
            src,
            dst,
            vlans: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_fragment: None,
            ipv6_ext: Vec::new(),
            protocol: IPPROTO_UDP,
            src_port: 5062,
            dst_port,
            payload: payload.to_vec(),
            udp_len_override: None,
            omit_l4_header: false,
            tcp: TcpHeader::default(),
        }
    }

    /// A TCP segment with `flags` (from [`tcp_flags`]) and `payload` to `dst_port`, from port
    /// 40000.
    pub fn tcp(src: IpAddr, dst: IpAddr, dst_port: u16, flags: u8, payload: &[u8]) -> Self {
        let mut frame = Self::udp(src, dst, dst_port, payload);
        frame.protocol = IPPROTO_TCP;
        frame.src_port = 40_000;
        frame.tcp.flags = flags;
        frame
    }

    /// TCP options (a real SYN carries MSS, SACK-permitted, timestamps, window scale: 20 bytes).
    pub fn tcp_options(mut self, options: &[u8]) -> Self {
        self.tcp.options = options.to_vec();
        self
    }

    /// A data offset that need not match the header (see [`TcpHeader::data_offset`]).
    pub fn data_offset(mut self, words: u8) -> Self {
        self.tcp.data_offset = Some(words);
        self
    }

    /// Makes the frame a fragment: `offset_units` (8-byte units) into its datagram, `more`
    /// fragments following, identification `id`. A non-first fragment carries no transport
    /// header, only (a piece of) the payload. IPv4 uses the header's fragment fields (`id`
    /// truncated to 16 bits), IPv6 a Fragment header after the other extension headers.
    pub fn fragment(mut self, offset_units: u16, more: bool, id: u32) -> Self {
        match self.src {
            IpAddr::V4(_) => self.ipv4_fragment = Some((more, offset_units, id as u16)),
            IpAddr::V6(_) => self.ipv6_ext.push(Ipv6Ext::Fragment {
                offset_units,
                more,
                id,
            }),
        }
        self.omit_l4_header = offset_units != 0;
        self
    }

    pub fn sip(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Self {
        Self::udp(src, dst, 5060, payload)
    }

    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlans.push((ETH_P_8021Q, vid));
        self
    }

    pub fn qinq(mut self, outer: u16, inner: u16) -> Self {
        self.vlans.push((ETH_P_8021AD, outer));
        self.vlans.push((ETH_P_8021Q, inner));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let mut frame = Vec::with_capacity(64 + l4.len());
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        for &(tpid, vid) in &self.vlans {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
                let mut options = self.ipv4_options.clone();
                while !options.len().is_multiple_of(4) {
                    options.push(0); // End of options list
                }
                let ihl = 5 + options.len() / 4;
                let total = ihl * 4 + l4.len();
                let mut ip = vec![0u8; 20];
                ip[0] = 0x40 | ihl as u8;
                ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                let (more, offset, id) = self.ipv4_fragment.unwrap_or((false, 0, 0x1234));
                ip[4..6].copy_from_slice(&id.to_be_bytes());
                let frags = ((more as u16) << 13) | (offset & 0x1fff);
                ip[6..8].copy_from_slice(&frags.to_be_bytes());
                ip[8] = 64;
                ip[9] = self.protocol;
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                ip.extend_from_slice(&options);
                let sum = checksum(&ip);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let mut ext = Vec::new();
                for (i, h) in self.ipv6_ext.iter().enumerate() {
                    let next = self
                        .ipv6_ext
                        .get(i + 1)
                        .map_or(self.protocol, Ipv6Ext::proto);
                    ext.extend_from_slice(&h.bytes(next));
                }
                let first = self.ipv6_ext.first().map_or(self.protocol, Ipv6Ext::proto);
                let mut ip = vec![0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
                ip[6] = first;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                frame.extend_from_slice(&ip);
                frame.extend_from_slice(&ext);
            }
            _ => panic!("source and destination must be the same IP version"),
        }
        frame.extend_from_slice(&l4);
        // Ethernet pads short frames to 60 bytes; the parser must use IP lengths, not the frame.
        while frame.len() < 60 {
            frame.push(0);
        }
        frame
    }

    fn l4_bytes(&self) -> Vec<u8> {
        if self.omit_l4_header {
            return self.payload.clone();
        }
        match self.protocol {
            IPPROTO_UDP => {
                let mut udp = Vec::with_capacity(8 + self.payload.len());
                udp.extend_from_slice(&self.src_port.to_be_bytes());
                udp.extend_from_slice(&self.dst_port.to_be_bytes());
                let len = self
                    .udp_len_override
                    .unwrap_or((8 + self.payload.len()) as u16);
                udp.extend_from_slice(&len.to_be_bytes());
                udp.extend_from_slice(&[0, 0]); // checksum optional on IPv4; unchecked by XDP
                udp.extend_from_slice(&self.payload);
                udp
            }
            IPPROTO_TCP => {
                let mut options = self.tcp.options.clone();
                while !options.len().is_multiple_of(4) {
                    options.push(1); // NOP
                }
                let words = self
                    .tcp
                    .data_offset
                    .unwrap_or((5 + options.len() / 4) as u8);
                let mut tcp = vec![0u8; 20];
                tcp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
                tcp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                tcp[4..8].copy_from_slice(&self.tcp.seq.to_be_bytes());
                tcp[8..12].copy_from_slice(&self.tcp.ack.to_be_bytes());
                tcp[12] = (words & 0x0f) << 4;
                tcp[13] = self.tcp.flags;
                tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes()); // window
                tcp.extend_from_slice(&options);
                tcp.extend_from_slice(&self.payload);
                tcp
            }
            _ => self.payload.clone(),
        }
    }
}

/// An ARP request frame: not IP at all.
pub fn arp_frame() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.resize(60, 0);
    frame
}

/// The UDP checksum of a whole (unfragmented) datagram `udp` (header with a zero checksum field,
/// then the payload) between `src` and `dst`: what a real stack checks before delivering. IPv6
/// requires it; 0 is sent as 0xffff.
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    match l4_checksum(src, dst, IPPROTO_UDP, udp) {
        0 => 0xffff,
        sum => sum,
    }
}

/// The checksum of a whole transport segment `l4` of `protocol` (with a zero checksum field)
/// over the pseudo header of `src` and `dst`.
fn l4_checksum(src: IpAddr, dst: IpAddr, protocol: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + l4.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
        _ => panic!("source and destination must be the same IP version"),
    }
    pseudo.extend_from_slice(l4);
    checksum(&pseudo)
}

impl Frame {
    /// [`Frame::build`] with a correct UDP or TCP checksum (an unfragmented frame whose
    /// transport header and payload end the IP packet, as Frame builds them).
    pub fn build_checksummed(&self) -> Vec<u8> {
        let mut frame = self.build();
        let l4_len = self.l4_bytes().len();
        let ip_end = frame.len() - padding_of(&frame, l4_len, self);
        let start = ip_end - l4_len;
        let (sum, at) = if self.protocol == IPPROTO_TCP {
            let sum = l4_checksum(self.src, self.dst, IPPROTO_TCP, &frame[start..ip_end]);
            (sum, start + 16)
        } else {
            (
                udp_checksum(self.src, self.dst, &frame[start..ip_end]),
                start + 6,
            )
        };
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        frame
    }
}

/// How many bytes of Ethernet padding `build` appended after the IP packet.
fn padding_of(frame: &[u8], udp_len: usize, f: &Frame) -> usize {
    let l3 = 14 + 4 * f.vlans.len();
    let ip_len = match f.src {
        IpAddr::V4(_) => u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize,
        IpAddr::V6(_) => 40 + u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize,
    };
    debug_assert!(ip_len >= udp_len);
    frame.len() - (l3 + ip_len)
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A REGISTER as a phone sends it (first of the digest exchange).
pub fn register(user: &str, seq: u32) -> Vec<u8> {
    request("REGISTER", &format!("sip:{user}@example.com"), seq)
}

/// A minimal, well-formed SIP request.
pub fn request(method: &str, uri: &str, seq: u32) -> Vec<u8> {
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.10:5062;branch=z9hG4bK{seq:08x}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@example.com>;tag={seq}\r\n\
         To: <sip:100@example.com>\r\n\
         Call-ID: {seq}@198.51.100.10\r\n\
         CSeq: {seq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A SIP request as a phone sends it over TCP or TLS (`transport` is `TCP` or `TLS`, as its
/// Via names it).
pub fn stream_request(method: &str, uri: &str, seq: u32, transport: &str) -> Vec<u8> {
    let text = String::from_utf8(request(method, uri, seq)).expect("requests are text");
    text.replacen("SIP/2.0/UDP", &format!("SIP/2.0/{transport}"), 1)
        .into_bytes()
}

/// The first bytes a TLS client sends on port 5061: a ClientHello record (content type 22,
/// version 3.1, a handshake of type 1), with `len` bytes of body. Never a SIP first line.
pub fn tls_client_hello(len: usize) -> Vec<u8> {
    let body = len.max(4);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(body as u16).to_be_bytes());
    record.push(0x01); // ClientHello
    let hello = body - 4;
    record.extend_from_slice(&[(hello >> 16) as u8, (hello >> 8) as u8, hello as u8]);
    record.extend_from_slice(&[0x03, 0x03]); // TLS 1.2 in the hello
    record.extend((0..body.saturating_sub(6)).map(|i| (i * 37 + 11) as u8));
    record
}

/// The TCP options of a Linux SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
pub const SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
];

/// A SIP response.
pub fn response(code: u16, reason: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} {reason}\r\n\
         Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK1\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A response as a registrar sends it: `code reason`, answering `method` with CSeq `seq`, with
/// the headers Kamailio and Asterisk put before CSeq (and a challenge for 401/407).
pub fn answer(code: u16, reason: &str, method: &str, seq: u32) -> Vec<u8> {
    let challenge = match code {
        401 => "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc123\"\r\n",
        407 => "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"abc123\"\r\n",
        _ => "",
    };
    format!(
        "SIP/2.0 {code} {reason}\r\n\
         Via: SIP/2.0/UDP 198.51.100.10:5062;rport=5062;branch=z9hG4bK{seq:08x};received=198.51.100.10\r\n\
         From: <sip:100@example.com>;tag={seq}\r\n\
         To: <sip:100@example.com>;tag=srv{seq}\r\n\
         Call-ID: {seq}@198.51.100.10\r\n\
         CSeq: {seq} {method}\r\n\
         {challenge}\
         Server: test registrar\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A frame the server sends from its SIP port 5060 to `client:port`.
pub fn answer_frame(server: IpAddr, client: IpAddr, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Frame::udp(server, client, port, payload);
    frame.src_port = 5060;
    frame.build()
}
