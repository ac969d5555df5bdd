//! TCP segments to the SIP TCP ports (`Config::tcp_ports`): SIP over TCP, TLS and WebSocket.
//!
//! The program reads the 20-byte header. A SYN without ACK is a new connection
//! ([`MethodClass::TcpSyn`]), whose payload is never read; any other segment is classified by
//! the UDP classifier on the bytes between its data offset and the end of the IP packet, and
//! keeps that class only when it is a request or a response (a segment that starts a SIP
//! message); everything else (TLS records, WebSocket frames, a message's continuation, empty
//! ACKs, RSTs, a data offset that points nowhere) is [`MethodClass::Tcp`].
use sip_xdp_common::{Config, MethodClass, ipv4_mapped};

use super::{Datagram, Parsed, Protocol, Transport, byte, classify_payload, present, u16_at};
use sip_xdp_common::MAX_TCP_LEADING_CRLF;

/// Bytes of a TCP header without options.
pub const TCP_HLEN: usize = 20;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

fn is_tcp_port(cfg: &Config, port: u16) -> bool {
    port != 0 && cfg.tcp_ports.contains(&port)
}

/// A TCP segment at `t.l4`, as the program is specified to read it.
pub(crate) fn segment(frame: &[u8], cfg: &Config, t: &Transport) -> Parsed {
    if !present(frame, t.l4, TCP_HLEN) {
        // As for UDP: a first fragment that may hide a SIP TCP port (its ports are not there,
        // or show one) fails closed; anything else cut short is not ours.
        let hides_sip = t.first_fragment_id.is_some()
            && u16_at(frame, t.l4 + 2).is_none_or(|port| is_tcp_port(cfg, port));
        return if hides_sip {
            Parsed::Unparsed
        } else {
            Parsed::NotSip
        };
    }
    let dst_port = u16_at(frame, t.l4 + 2).expect("header present");
    if !is_tcp_port(cfg, dst_port) {
        return Parsed::NotSip;
    }
    if !t.is_ipv4 && t.src[..12] == ipv4_mapped([0; 4])[..12] {
        return Parsed::Unparsed;
    }
    let data_offset = usize::from(byte(frame, t.l4 + 12).expect("header present") >> 4);
    let flags = byte(frame, t.l4 + 13).expect("header present");
    let early_class = if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        MethodClass::TcpSyn
    } else {
        MethodClass::Tcp
    };
    let class = if early_class == MethodClass::TcpSyn {
        MethodClass::TcpSyn
    } else {
        payload_class(frame, t, data_offset)
    };
    Parsed::Sip(Datagram {
        src: t.src,
        port: u16_at(frame, t.l4).expect("header present"),
        is_ipv4: t.is_ipv4,
        protocol: Protocol::Tcp,
        class,
        early_class,
        first_fragment_id: t.first_fragment_id,
    })
}

/// The class of a segment's payload: `[l4 + 4 * data_offset, ip_end)`, when the data offset is
/// valid (at least 5 words), the IP packet lies within the frame and the payload is not empty.
fn payload_class(frame: &[u8], t: &Transport, data_offset: usize) -> MethodClass {
    let payload = t.l4 + 4 * data_offset;
    if data_offset < 5 || t.ip_end > frame.len() || payload >= t.ip_end {
        return MethodClass::Tcp;
    }
    // Up to MAX_TCP_LEADING_CRLF CR/LF bytes before a request are skipped, as a stream reader
    // skips them.
    let bytes = &frame[payload..t.ip_end];
    let skip = bytes
        .iter()
        .take(MAX_TCP_LEADING_CRLF)
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    match classify_payload(&bytes[skip..]) {
        class if class <= MethodClass::Publish || class == MethodClass::Response => class,
        _ => MethodClass::Tcp,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        model::parse,
        packet::{Frame, Ipv6Ext, SYN_OPTIONS, register, tcp_flags, tls_client_hello},
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn class_of(frame: &[u8]) -> Option<(MethodClass, MethodClass)> {
        match parse(frame, &Config::DEFAULT) {
            Parsed::Sip(d) => {
                assert_eq!(d.protocol, Protocol::Tcp);
                Some((d.early_class, d.class))
            }
            _ => None,
        }
    }

    #[test]
    fn classifies_segments() {
        let (c, s) = (ip("198.51.100.1"), ip("203.0.113.1"));
        let reg = register("1", 1);
        let seg = |flags, payload: &[u8]| Frame::tcp(c, s, 5060, flags, payload);
        use MethodClass as M;
        use tcp_flags::*;
        assert_eq!(
            class_of(&seg(SYN, b"").tcp_options(&SYN_OPTIONS).build()),
            Some((M::TcpSyn, M::TcpSyn))
        );
        // A SYN's payload is never read.
        assert_eq!(
            class_of(&seg(SYN, &reg).build()),
            Some((M::TcpSyn, M::TcpSyn))
        );
        assert_eq!(
            class_of(&seg(SYN | ACK, b"").build()),
            Some((M::Tcp, M::Tcp))
        );
        assert_eq!(class_of(&seg(ACK, b"").build()), Some((M::Tcp, M::Tcp)));
        assert_eq!(
            class_of(&seg(PSH | ACK, &reg).build()),
            Some((M::Tcp, M::Register))
        );
        assert_eq!(
            class_of(
                &seg(PSH | ACK, &reg)
                    .tcp_options(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
                    .build()
            ),
            Some((M::Tcp, M::Register))
        );
        // A data offset past the options misreads the payload; one below 5 is invalid.
        assert_eq!(
            class_of(&seg(PSH | ACK, &reg).data_offset(6).build()),
            Some((M::Tcp, M::Tcp))
        );
        assert_eq!(
            class_of(&seg(PSH | ACK, &reg).data_offset(4).build()),
            Some((M::Tcp, M::Tcp))
        );
        let tls = Frame::tcp(c, s, 5061, PSH | ACK, &tls_client_hello(200)).build();
        assert_eq!(class_of(&tls), Some((M::Tcp, M::Tcp)));
        assert_eq!(
            class_of(&seg(PSH | ACK, b"\r\n\r\n").build()),
            Some((M::Tcp, M::Tcp))
        );
        // Not a SIP TCP port; a SIP UDP port that is not a TCP one.
        assert_eq!(class_of(&Frame::tcp(c, s, 80, SYN, b"").build()), None);
        let mut cfg = Config::DEFAULT;
        cfg.sip_ports[1] = 5080;
        assert_eq!(
            parse(&Frame::tcp(c, s, 5080, SYN, b"").build(), &cfg),
            Parsed::NotSip
        );
        // IPv6 behind extension headers.
        let mut v6 = Frame::tcp(ip("2001:db8::1"), ip("2001:db8::2"), 5060, PSH | ACK, &reg);
        v6.ipv6_ext = vec![
            Ipv6Ext::HopByHop { len_units: 0 },
            Ipv6Ext::DestinationOptions { len_units: 1 },
        ];
        assert_eq!(class_of(&v6.build()), Some((M::Tcp, M::Register)));
    }

    #[test]
    fn fragments_and_cut_headers() {
        let (c, s) = (ip("198.51.100.1"), ip("203.0.113.1"));
        let cfg = Config::DEFAULT;
        let reg = register("1", 1);
        let later = Frame::tcp(c, s, 5060, tcp_flags::ACK, &reg)
            .fragment(10, false, 7)
            .build();
        assert!(matches!(
            parse(&later, &cfg),
            Parsed::Fragment { id: 7, .. }
        ));
        let v6 = Frame::tcp(
            ip("2001:db8::1"),
            ip("2001:db8::2"),
            5060,
            tcp_flags::ACK,
            &reg,
        )
        .fragment(3, true, 9)
        .build();
        assert!(matches!(parse(&v6, &cfg), Parsed::Fragment { id: 9, .. }));
        let first = Frame::tcp(c, s, 5060, tcp_flags::PSH | tcp_flags::ACK, &reg)
            .fragment(0, true, 8)
            .build();
        assert!(matches!(
            parse(&first, &cfg),
            Parsed::Sip(Datagram {
                class: MethodClass::Register,
                first_fragment_id: Some(8),
                ..
            })
        ));
        // A first fragment holding 12 bytes of the TCP header: ports show 5060, or port 80.
        // (IPv6: an IPv4 frame this short would be padded to 60 bytes, header and all.)
        let (c6, s6) = (ip("2001:db8::1"), ip("2001:db8::2"));
        let cut = |port: u16, keep: usize, first: bool| {
            let mut f = Frame::tcp(c6, s6, port, tcp_flags::SYN, b"");
            if first {
                f = f.fragment(0, true, 5);
            }
            f.omit_l4_header = true;
            let mut header = port_bytes(port);
            header.resize(keep, 0);
            f.payload = header;
            f.build()
        };
        assert_eq!(parse(&cut(5060, 12, true), &cfg), Parsed::Unparsed);
        assert_eq!(parse(&cut(80, 12, true), &cfg), Parsed::NotSip);
        assert_eq!(parse(&cut(5060, 2, true), &cfg), Parsed::Unparsed);
        // Not a fragment: cut short is not SIP.
        assert_eq!(parse(&cut(5060, 12, false), &cfg), Parsed::NotSip);
        // An IPv4-mapped IPv6 source.
        let mapped = Frame::tcp(
            ip("::ffff:198.51.100.1"),
            ip("2001:db8::2"),
            5061,
            tcp_flags::SYN,
            b"",
        )
        .build();
        assert_eq!(parse(&mapped, &cfg), Parsed::Unparsed);
    }

    fn port_bytes(dst: u16) -> Vec<u8> {
        let mut b = 40_000u16.to_be_bytes().to_vec();
        b.extend_from_slice(&dst.to_be_bytes());
        b
    }
}
