//! Differential test: the real XDP program (through BPF_PROG_TEST_RUN) against the host-side
//! reference model (`sip_xdp_tests::model`) on generated and mutated packets.
//!
//! Every packet's XDP action, the (verdict, class) counter it bumps and the ban events it sends
//! (bans, would-be bans, expiries, of sources and of prefixes) must match the model; every few
//! thousand packets (and at the end) the whole counter matrix, every event counter, every
//! per-source state, the durable ban table, every prefix's state (`PREFIXES`), the durable prefix
//! bans (`PREFIX_BANS`) and the first-fragment table are compared too.
//!
//! The traffic: UDP and TCP (SYN floods, ACKs carrying a REGISTER, TLS records, RSTs, odd data
//! offsets) from a few core sources and from sources spread over two IPv4 /24s and a few IPv6
//! /64s and /48s, so that prefix buckets run dry, prefixes are banned, evicted and restored from
//! `PREFIX_BANS`, and aged (a ban record moved into the past on both sides) so that they expire
//! and decay; allowlisted, protected and verified sources sit inside the banned prefixes.
//! `catches_planted_bugs` plants each of the model's `Mutant`s and requires a mismatch.
//!
//! Time: the buckets refill one token per hour and bans last hours, so nothing the program
//! decides during a run (well under an hour) depends on how fast the packets go through. The
//! model runs on one `now` read before the first packet; timestamps the kernel stores (bucket
//! arrival times, ban ends) may only be later than the model's by at most the run's length.
//!
//! Knobs (environment):
//! - `SIP_XDP_DIFF_PACKETS`: packets per scenario (default 200000, three scenarios);
//! - `SIP_XDP_DIFF_SEED`: generator seed, decimal or 0x-hex (default below);
//! - `SIP_XDP_DIFF_MAX_MISMATCHES`: report up to this many mismatches before failing (default
//!   1; after the first, the model is resynchronised to the kernel for the packet's source, but
//!   later reports may still be consequences of the first).
use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::{
    Pod,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf},
};
use ipnet::IpNet;
use sip_xdp::{control::forget_sources_in, loader, maps::Counters, time::monotonic_now_ns};
use sip_xdp_common::{
    BanEvent, Config, DurableBan, EventCounter, FragmentFate, FragmentKey, LimitClass, MethodClass,
    PrefixKey, RATE_WINDOW_NS, RateLimit, SourceKey, SourceState, Verdict, VerifiedSource,
    ban_event_kind, ban_flags, flags, map_names, packet_counter_index, prefix_mask,
};
use sip_xdp_tests::{
    harness::Datapath,
    model::{self, Model, Mutant, Outcome, Parsed, Protocol, XDP_DROP, key_of},
    packet::{
        ETH_P_8021AD, ETH_P_8021Q, Frame, IPPROTO_ICMP, IPPROTO_TCP, Ipv6Ext, SYN_OPTIONS,
        register, request, response, stream_request, tcp_flags, tls_client_hello,
    },
    rng::{DEFAULT_SEED, Rng, env_u64},
};

const SECOND_NS: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3600 * SECOND_NS;
const DEFAULT_PACKETS: u64 = 200_000;
/// Full comparison (counters, sources, fragments) every this many packets.
const CHECK_EVERY: u64 = 5_000;
/// A random source's state is compared and then forgotten (on both sides) this often, so
/// banned sources come back and go through the whole bucket/ban cycle again.
const FORGET_EVERY: u64 = 97;
/// A random prefix is compared, then evicted, forgotten or aged (on both sides) this often.
const PREFIX_CHURN_EVERY: u64 = 61;
/// Above this many tracked entries, extra sources, prefixes or fragments are flushed on both
/// sides (after a comparison), far below the LRU capacities so the kernel never evicts on its
/// own.
const MAX_MODEL_SOURCES: usize = 20_000;
const MAX_MODEL_PREFIXES: usize = 2_000;
const MAX_MODEL_FRAGMENTS: usize = 2_000;
/// Slack for clock reads around the coarse clock's tick.
const CLOCK_SLACK_NS: u64 = 50_000_000;

// ---------------------------------------------------------------------------------------------
// Addresses and lists.

const V4_SOURCES: [&str; 8] = [
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.3",
    "198.51.100.4", // allowlisted
    "203.0.113.1",  // under an expired /30 deny that shadows a live /24 deny
    "203.0.113.2",
    "203.0.113.3", // protected: limited, never banned
    "203.0.113.4", // denylisted for good
];
const V6_SOURCES: [&str; 5] = [
    "2001:db8::1",
    "2001:db8::2",      // same /64 as ::1 (one source under a /64 mask)
    "2001:db8:0:1::1",  // protected /64
    "2001:db8:0:2::1",  // denylisted /64, expiring in hours
    "2001:db8:ffff::5", // allowlisted /48
];
const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, 0x10);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// (network, expiry) for the denylist; `None` expiry is filled in relative to `now`.
fn list_setup(now: u64) -> (Vec<IpNet>, Vec<(IpNet, u64)>) {
    let allow = vec![net("198.51.100.4/32"), net("2001:db8:ffff::/48")];
    let deny = vec![
        (net("203.0.113.4/32"), 0),
        (net("203.0.113.0/24"), now + 10 * HOUR_NS),
        // Longest match for .0-.3, and expired: those are not denied.
        (net("203.0.113.0/30"), now - 1),
        (net("2001:db8:0:2::/64"), now + 10 * HOUR_NS),
    ];
    (allow, deny)
}

/// Held to their buckets, never banned.
const PROTECTED: [&str; 2] = ["203.0.113.3/32", "2001:db8:0:1::/64"];
/// Verified (a `VERIFIED` entry on both sides, in force while `ANSWERS` is on): they draw from
/// no prefix bucket and pass their banned prefixes.
const VERIFIED: [&str; 2] = ["198.51.100.3", "2001:db8::1"];

/// Candidates to denylist for good mid-run: the first one whose ban applies then. Banned beats
/// denylisted, so its packets count `drop_banned` until its entry goes.
const EDITED_DENY: [&str; 4] = ["198.51.100.1", "198.51.100.3", "203.0.113.2", "203.0.113.3"];
/// Allowlisted mid-run with `forget_sources_in`, as `sip-xdp allow add` does. Under a /64 or
/// /48 mask, 2001:db8::2 shares its tracked source with ::1, which stays banned while ::2 passes.
const EDITED_ALLOW: [&str; 2] = ["198.51.100.2/32", "2001:db8::2/128"];
/// Fractions of a run at which the edits above are made, then undone.
const LIST_EDITS: [(f64, bool); 2] = [(0.45, true), (0.7, false)];

// ---------------------------------------------------------------------------------------------
// Packet generation.

const METHOD_NAMES: [&str; 14] = [
    "REGISTER",
    "INVITE",
    "OPTIONS",
    "ACK",
    "BYE",
    "CANCEL",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "PRACK",
    "UPDATE",
    "INFO",
    "REFER",
    "PUBLISH",
];
const BAD_METHODS: [&str; 10] = [
    "FOO",
    "register",
    "REGISTE",
    "REGISTERX",
    "INVITEX",
    "OPTION",
    "AC",
    "",
    "SIP/2.0",
    "Invite",
];

struct Gen {
    rng: Rng,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    seq: u32,
    /// Packets generated so far.
    count: u64,
}

/// One generated packet: the frame and how it was made.
struct Packet {
    bytes: Vec<u8>,
    tags: Vec<&'static str>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            v4: V4_SOURCES.iter().map(|s| s.parse().unwrap()).collect(),
            v6: V6_SOURCES.iter().map(|s| s.parse().unwrap()).collect(),
            seq: 0,
            count: 0,
        }
    }

    /// A source, with its index among the core sources when it is one.
    fn source(&mut self) -> (IpAddr, Option<usize>) {
        let v4 = self.v4.len();
        let addr = match self.rng.below(100) {
            0..52 => {
                let i = self.rng.below(v4);
                return (self.v4[i], Some(i));
            }
            52..78 => {
                let i = self.rng.below(self.v6.len());
                return (self.v6[i], Some(v4 + i));
            }
            78..87 => self.spread_v4(),
            87..96 => self.spread_v6(),
            96..98 => IpAddr::V4(Ipv4Addr::new(
                *self.rng.pick(&[198, 203]),
                *self.rng.pick(&[51, 0]),
                *self.rng.pick(&[100, 113]),
                self.rng.byte(),
            )),
            98 => {
                // IPv4-mapped source in an IPv6 header: keyed (and listed) like the IPv4
                // address it embeds.
                let v4 = match self.rng.below(3) {
                    0 => Ipv4Addr::new(198, 51, 100, 4),
                    1 => Ipv4Addr::new(203, 0, 113, 4),
                    _ => Ipv4Addr::new(198, 51, 100, 1),
                };
                IpAddr::V6(v4.to_ipv6_mapped())
            }
            _ => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                o[5] = self.rng.below(3) as u8;
                o[7] = self.rng.below(3) as u8;
                o[15] = self.rng.byte();
                IpAddr::V6(Ipv6Addr::from(o))
            }
        };
        (addr, None)
    }

    /// A flood spread over the core /24s, each address under its own limits: 198.51.100.0/24
    /// (with an allowlisted and a verified core source in it) and 203.0.113.0/24 (mostly
    /// denylisted, with a protected source; a banned prefix is dropped before the denylist).
    fn spread_v4(&mut self) -> IpAddr {
        match self.rng.below(100) {
            0..70 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 16 + self.rng.below(112) as u8)),
            70..85 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, self.rng.below(4) as u8)),
            _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, self.rng.byte())),
        }
    }

    /// /128 rotation inside the core sources' /64 and the protected /64, /64s of one /48, and
    /// the allowlisted /48.
    fn spread_v6(&mut self) -> IpAddr {
        let low = self.rng.next_u64();
        let (s2, s3) = match self.rng.below(100) {
            0..40 => (0, 0),
            40..60 => (0, 1),
            60..85 => (7, self.rng.below(4) as u16),
            _ => (0xffff, self.rng.below(3) as u16),
        };
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            s2,
            s3,
            (low >> 48) as u16,
            (low >> 32) as u16,
            (low >> 16) as u16,
            low as u16 | 1,
        ))
    }

    /// Makes `f` a TCP segment: to 5060 or 5061 mostly; a new connection, an ACK carrying a
    /// request (REGISTER the most), TLS records, responses, empty ACKs, RSTs and FINs, random
    /// flags; options and lying data offsets now and then.
    fn tcp(&mut self, f: &mut Frame, tags: &mut Vec<&'static str>) {
        tags.push("tcp");
        f.protocol = IPPROTO_TCP;
        f.src_port = 30_000 + self.rng.below(20_000) as u16;
        f.dst_port = match self.rng.below(100) {
            0..50 => 5060,
            50..85 => 5061,
            85..90 => {
                tags.push("tcp-5080");
                5080
            }
            _ => {
                tags.push("tcp-port-other");
                *self.rng.pick(&[80, 443, 5062, 5090, 0])
            }
        };
        use tcp_flags::*;
        let flags = match self.rng.below(100) {
            0..40 => SYN,
            40..48 => SYN | ACK,
            48..60 => ACK,
            60..80 => PSH | ACK,
            80..84 => RST,
            84..87 => RST | ACK,
            87..94 => FIN | ACK,
            _ => {
                tags.push("tcp-random-flags");
                self.rng.byte()
            }
        };
        f.tcp.flags = flags;
        f.tcp.seq = self.rng.next_u64() as u32;
        let seq = self.seq;
        if flags & SYN != 0 && flags & ACK == 0 {
            tags.push("syn");
            if self.rng.percent(10) {
                // Data on a SYN (TCP Fast Open): never read.
                tags.push("syn-data");
                f.payload = register("100", seq);
            } else {
                f.payload.clear();
            }
        } else {
            match self.rng.below(100) {
                0..20 => {
                    tags.push("tcp-register");
                    f.payload = stream_request("REGISTER", "sip:100@example.com", seq, "TCP");
                }
                20..35 => {
                    tags.push("tcp-request");
                    let method = self.method();
                    let transport = *self.rng.pick(&["TCP", "TLS", "WS"]);
                    f.payload = stream_request(method, "sip:100@example.com", seq, transport);
                }
                35..50 => tags.push("tcp-udp-payload"),
                50..65 => {
                    tags.push("tls");
                    let len = self.rng.range(20, 300);
                    f.payload = tls_client_hello(len);
                }
                65..72 => {
                    tags.push("tcp-response");
                    f.payload = response(200, "OK");
                }
                _ => {
                    tags.push("tcp-empty");
                    f.payload.clear();
                }
            }
        }
        match self.rng.below(100) {
            0..25 => f.tcp.options = SYN_OPTIONS.to_vec(),
            25..35 => {
                let n = 4 * self.rng.range(1, 10);
                f.tcp.options = self.rng.bytes(n);
            }
            _ => {}
        }
        if self.rng.percent(8) {
            tags.push("data-offset");
            f.tcp.data_offset = Some(self.rng.below(16) as u8);
        }
    }

    /// What a core source mostly floods with for a while (it changes every few thousand
    /// packets), so every bucket, not only REGISTER's, runs dry first now and then.
    fn favorite(&mut self, source: usize) -> Vec<u8> {
        let pick = (source * 5 + (self.count / 3_000) as usize) % (METHOD_NAMES.len() + 1);
        match METHOD_NAMES.get(pick) {
            Some(method) => request(method, "sip:200@example.com", self.seq),
            None => response(200, "OK"),
        }
    }

    fn method(&mut self) -> &'static str {
        if self.rng.percent(85) {
            METHOD_NAMES[self.rng.below(METHOD_NAMES.len())]
        } else {
            BAD_METHODS[self.rng.below(BAD_METHODS.len())]
        }
    }

    fn filler(&mut self, len: usize) -> Vec<u8> {
        let odd = self.rng.percent(10);
        (0..len)
            .map(|_| {
                if odd && self.rng.percent(5) {
                    *self.rng.pick(b" \r\n\t\0")
                } else {
                    b'a' + self.rng.below(26) as u8
                }
            })
            .collect()
    }

    /// A request line built to end at a chosen offset: around the minimum, in the middle, and
    /// around the 192-byte scan limit.
    fn request_line(&mut self) -> Vec<u8> {
        let method = self.method();
        let m = method.len() + 1;
        let line_end = match self.rng.below(6) {
            0 => m + 8 + self.rng.below(3), // URI of 0..2 bytes
            1 => self.rng.range(m + 9, 80),
            2 => self.rng.range(186, 198),
            3 => self.rng.range(189, 194),
            4 => self.rng.range(198, 400),
            _ => self.rng.range(4, 40),
        };
        let version: &[u8] = match self.rng.below(20) {
            0 => b" SIP/2.1",
            1 => b" sip/2.0",
            2 => b"SIP/2.0",
            3 => b" SIP/2.",
            _ => b" SIP/2.0",
        };
        let mut p = method.as_bytes().to_vec();
        p.push(b' ');
        let uri_len = line_end.saturating_sub(m + version.len());
        let uri = self.filler(uri_len);
        p.extend_from_slice(&uri);
        p.extend_from_slice(version);
        match self.rng.below(10) {
            0 => {}
            1 => p.push(b'\n'),
            2 => p.push(b'\r'),
            _ => p.extend_from_slice(b"\r\n"),
        }
        if self.rng.percent(50) {
            p.extend_from_slice(b"Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1\r\n\r\n");
        }
        p
    }

    fn keepalive(&mut self) -> Vec<u8> {
        let len = self.rng.range(0, 20);
        let mut p: Vec<u8> = (0..len).map(|_| *self.rng.pick(b"\r\n \t\0")).collect();
        if len > 0 && self.rng.percent(10) {
            let i = self.rng.below(len);
            p[i] = self.rng.byte();
        }
        p
    }

    fn stun(&mut self) -> Vec<u8> {
        let len = self.rng.range(16, 48);
        let mut p = self.rng.bytes(len);
        p[0] = if self.rng.percent(80) {
            self.rng.below(2) as u8
        } else {
            self.rng.byte()
        };
        if self.rng.percent(85) {
            p[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        }
        p
    }

    fn response(&mut self) -> Vec<u8> {
        if self.rng.percent(70) {
            let code = self.rng.range(100, 699) as u16;
            return response(code, "Whatever");
        }
        let mut p = b"SIP/2.0 ".to_vec();
        for _ in 0..4 {
            p.push(*self.rng.pick(b"0123456789 x7\r"));
        }
        let tail = self.rng.range(0, 30);
        p.extend_from_slice(&self.filler(tail));
        p
    }

    fn garbage(&mut self) -> Vec<u8> {
        let len = if self.rng.percent(50) {
            self.rng.range(0, 40)
        } else {
            self.rng.range(0, 400)
        };
        let mut p = Vec::new();
        match self.rng.below(4) {
            0 => p.extend_from_slice(b"SIP/2.0 "),
            1 => {
                p.extend_from_slice(self.method().as_bytes());
                p.push(b' ');
            }
            _ => {}
        }
        p.extend_from_slice(&self.rng.bytes(len));
        p
    }

    /// Short payloads around the 16-byte minimum.
    fn short(&mut self) -> Vec<u8> {
        let method = *self.rng.pick(&["ACK", "BYE", "INFO", "FOO"]);
        let uri = self.rng.range(0, 4);
        let mut p = format!("{method} {} SIP/2.0", "x".repeat(uri)).into_bytes();
        match self.rng.below(3) {
            0 => p.extend_from_slice(b"\r\n"),
            1 => p.push(b'\n'),
            _ => {}
        }
        if self.rng.percent(30) {
            let n = self.rng.range(0, 4);
            p.extend_from_slice(&b"\r\n\r\n"[..n]);
        }
        p
    }

    fn payload(&mut self, source: Option<usize>, tags: &mut Vec<&'static str>) -> Vec<u8> {
        self.seq += 1;
        let seq = self.seq;
        match self.rng.below(100) {
            0..25 if source.is_some() => {
                tags.push("favorite");
                self.favorite(source.unwrap_or(0))
            }
            0..30 => {
                tags.push("register");
                register("100", seq)
            }
            30..45 => {
                tags.push("request");
                let method = self.method();
                request(method, "sip:100@example.com", seq)
            }
            45..57 => {
                tags.push("request-line");
                self.request_line()
            }
            57..64 => {
                tags.push("response");
                self.response()
            }
            64..72 => {
                tags.push("keepalive");
                self.keepalive()
            }
            72..76 => {
                tags.push("stun");
                self.stun()
            }
            76..86 => {
                tags.push("garbage");
                self.garbage()
            }
            86..93 => {
                tags.push("short");
                self.short()
            }
            _ => {
                tags.push("mutated-request");
                let mut p = request(self.method(), "sip:1@h", seq);
                for _ in 0..self.rng.range(1, 3) {
                    let i = self.rng.below(p.len().min(40));
                    p[i] = *self.rng.pick(b" \r\nSIP/2.0\0x");
                }
                let keep = self.rng.range(0, p.len());
                if self.rng.percent(40) {
                    p.truncate(keep);
                }
                p
            }
        }
    }

    fn port(&mut self, tags: &mut Vec<&'static str>) -> u16 {
        match self.rng.below(100) {
            0..82 => 5060,
            82..88 => {
                tags.push("port-5080");
                5080
            }
            88..92 => {
                tags.push("port-5061");
                5061
            }
            92..94 => {
                tags.push("port-0");
                0
            }
            _ => {
                tags.push("port-other");
                let random = self.rng.byte() as u16 * 257;
                *self.rng.pick(&[53, 80, 443, 5062, 65535, random])
            }
        }
    }

    fn ext_header(&mut self) -> Ipv6Ext {
        let len_units = if self.rng.percent(5) {
            self.rng.range(10, 70) as u8
        } else {
            self.rng.range(0, 3) as u8
        };
        match self.rng.below(7) {
            0 | 1 => Ipv6Ext::HopByHop { len_units },
            2 | 3 => Ipv6Ext::Routing { len_units },
            4 => Ipv6Ext::Authentication {
                len_units: len_units.max(1),
            },
            _ => Ipv6Ext::DestinationOptions { len_units },
        }
    }

    fn frag_id(&mut self) -> u32 {
        if self.rng.percent(10) {
            self.rng.next_u64() as u32
        } else {
            self.rng.below(8) as u32
        }
    }

    fn next_packet(&mut self) -> Packet {
        let mut tags = Vec::new();
        self.count += 1;
        let (src, source_index) = self.source();
        let is_v4 = src.is_ipv4();
        let dst = if is_v4 {
            IpAddr::V4(V4_DST)
        } else {
            IpAddr::V6(V6_DST)
        };
        let payload = self.payload(source_index, &mut tags);
        let port = self.port(&mut tags);
        let mut f = Frame::udp(src, dst, port, &payload);
        if self.rng.percent(10) {
            f.src_port = *self.rng.pick(&[5060, 0, 5080, 40000]);
        }
        if self.rng.percent(14) {
            self.tcp(&mut f, &mut tags);
        }

        // Layer 2.
        match self.rng.below(100) {
            0..8 => {
                tags.push("vlan");
                f = f.vlan(self.rng.below(4096) as u16);
            }
            8..13 => {
                tags.push("qinq");
                f = f.qinq(100, 200);
            }
            13..15 => {
                tags.push("three-tags");
                f.vlans = vec![(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)];
            }
            15..17 => {
                tags.push("odd-tags");
                f.vlans = vec![(ETH_P_8021Q, 1), (ETH_P_8021AD, 2)];
            }
            _ => {}
        }

        // Layer 3 extras.
        if is_v4 && self.rng.percent(8) {
            tags.push("ipv4-options");
            let n = self.rng.range(1, 40);
            f.ipv4_options = self.rng.bytes(n);
        }
        if !is_v4 && self.rng.percent(15) {
            tags.push("ipv6-ext");
            // Chains past the parser's six headers are dropped as unparsed, not passed.
            let n = if self.rng.percent(80) {
                self.rng.range(1, 3)
            } else {
                self.rng.range(4, 10)
            };
            f.ipv6_ext = (0..n).map(|_| self.ext_header()).collect();
        }

        // Fragments.
        if self.rng.percent(12) {
            let id = self.frag_id();
            let first = self.rng.percent(50);
            if first {
                tags.push("first-fragment");
                if self.rng.percent(15) {
                    // Tiny first fragment: the request line comes in the followers.
                    tags.push("tiny");
                    let keep = self.rng.range(0, 6);
                    f.payload.truncate(keep);
                    f.udp_len_override = Some((payload.len() + 8) as u16);
                } else if self.rng.percent(60) {
                    let extra = self.rng.range(0, 1200);
                    f.udp_len_override = Some((payload.len() + 8 + extra).min(65535) as u16);
                }
            } else {
                tags.push("later-fragment");
                f.omit_l4_header = self.rng.percent(80);
            }
            let offset_units = if first {
                0
            } else {
                self.rng.range(1, 400) as u16
            };
            let more = if first {
                self.rng.percent(90) // else an atomic fragment (RFC 6946)
            } else {
                self.rng.percent(50)
            };
            if is_v4 {
                f.ipv4_fragment = Some((more, offset_units, id as u16));
            } else {
                let at = self.rng.range(0, f.ipv6_ext.len());
                f.ipv6_ext.insert(
                    at,
                    Ipv6Ext::Fragment {
                        offset_units,
                        more,
                        id,
                    },
                );
            }
        } else if is_v4 && self.rng.percent(3) {
            tags.push("ipv4-fragment-id");
            f.ipv4_fragment = Some((false, 0, self.frag_id() as u16));
        }

        // Layer 4.
        match self.rng.below(100) {
            0..1 if f.protocol != IPPROTO_TCP => {
                // A UDP payload behind a default TCP header (a SYN).
                tags.push("tcp-bare");
                f.protocol = IPPROTO_TCP;
            }
            3..5 => {
                tags.push("icmp");
                f.protocol = IPPROTO_ICMP;
            }
            5..6 => {
                tags.push("proto-random");
                f.protocol = self.rng.byte();
            }
            _ => {}
        }
        if self.rng.percent(5) {
            tags.push("udp-len");
            let real = payload.len() + 8;
            f.udp_len_override = Some(match self.rng.below(4) {
                0 => self.rng.range(0, 8) as u16,
                1 => real.saturating_sub(self.rng.range(1, 20)) as u16,
                2 => (real + self.rng.range(1, 20)) as u16,
                _ => self.rng.next_u64() as u16,
            });
        }

        let mut bytes = f.build();
        let l3 = 14 + 4 * f.vlans.len();

        // The reserved bits of an IPv6 fragment header (between the offset and the M flag).
        if let Some(at) = f
            .ipv6_ext
            .iter()
            .position(|h| matches!(h, Ipv6Ext::Fragment { .. }))
            && !f.src.is_ipv4()
            && self.rng.percent(20)
        {
            tags.push("frag-reserved-bits");
            let before: usize = f.ipv6_ext[..at].iter().map(Ipv6Ext::wire_len).sum();
            let flags_at = l3 + 40 + before + 3;
            bytes[flags_at] |= (1 + self.rng.below(3) as u8) << 1;
        }

        // Byte-level mutations.
        if self.rng.percent(4) && bytes.len() >= l3 + 6 {
            tags.push("ip-length");
            let at = if is_v4 { l3 + 2 } else { l3 + 4 };
            let old = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as i64;
            let new = match self.rng.below(3) {
                0 => old + self.rng.range(1, 16) as i64,
                1 => old - self.rng.range(1, 16) as i64,
                _ => self.rng.next_u64() as u16 as i64,
            };
            bytes[at..at + 2].copy_from_slice(&(new.clamp(0, 65535) as u16).to_be_bytes());
        }
        if self.rng.percent(12) {
            tags.push("flip");
            for _ in 0..self.rng.range(1, 4) {
                let span = if self.rng.percent(60) {
                    bytes.len().min(l3 + 80)
                } else {
                    bytes.len()
                };
                let i = self.rng.below(span);
                if self.rng.percent(50) {
                    bytes[i] ^= 1 << self.rng.below(8);
                } else {
                    bytes[i] = self.rng.byte();
                }
            }
        }
        if self.rng.percent(6) {
            tags.push("truncate");
            let len = self.rng.range(14, bytes.len());
            bytes.truncate(len);
        }
        if self.rng.percent(3) {
            tags.push("trailer");
            let n = self.rng.range(1, 64);
            bytes.extend_from_slice(&self.rng.bytes(n));
        }
        if self.rng.percent(1) && bytes.len() >= l3 {
            tags.push("ethertype");
            let at = l3 - 2;
            bytes[at] = self.rng.byte();
            bytes[at + 1] = self.rng.byte();
        }
        Packet { bytes, tags }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

fn slow(burst: u64) -> RateLimit {
    RateLimit::per_interval(1, HOUR_NS, burst)
}

/// Prefix levels `lens` (128-bit form, 0 = off) with their masks.
fn with_prefixes(mut cfg: Config, lens: [u8; 3]) -> Config {
    cfg.prefix_lens = lens;
    cfg.prefix_masks = lens.map(prefix_mask);
    cfg
}

fn base_config() -> Config {
    let mut cfg = Config::DEFAULT;
    cfg.flags = flags::DROP_MALFORMED | flags::EXTEND_WHILE_ACTIVE;
    cfg.sip_ports = [5060, 5080, 0, 0, 0, 0, 0, 0];
    cfg.tcp_ports = [5060, 5061, 0, 0, 0, 0, 0, 0];
    cfg.limits = [
        slow(5),
        slow(3),
        slow(10),
        slow(8),
        slow(12),
        slow(9),
        slow(15),
        slow(6),
        slow(4),
    ];
    // Several sources' worth: a spread flood runs them dry, a single source never does.
    cfg.prefix_limits = [
        slow(30),
        slow(16),
        slow(40),
        slow(40),
        slow(50),
        slow(40),
        RateLimit::UNLIMITED,
        slow(24),
        slow(10),
    ];
    cfg.verified_limits = [slow(40); LimitClass::COUNT];
    cfg.admission = slow(3_000);
    cfg.ban_factor = 2;
    cfg.ban_base_ns = 2 * HOUR_NS;
    cfg.ban_max_ns = 24 * HOUR_NS;
    cfg.strike_decay_ns = HOUR_NS;
    cfg.ban_extend_ns = 10 * HOUR_NS;
    cfg
}

fn mask(prefix: u32) -> [u8; 16] {
    (u128::MAX.checked_shl(128 - prefix).unwrap_or(0)).to_be_bytes()
}

/// Configurations applied in turn: (fraction of the run after which it takes over, config).
type Phases = Vec<(f64, Config)>;

/// Enforcing, then with `ANSWERS`: the verified sources get their buckets and skip their
/// prefixes', unverified REGISTER and INVITE meet the admission budget.
fn phases_enforcing() -> Phases {
    let mut answers = base_config();
    answers.flags |= flags::ANSWERS;
    vec![(0.0, base_config()), (0.6, answers)]
}

fn phases_permissive() -> Phases {
    let mut cfg = base_config();
    cfg.flags = flags::DROP_UNKNOWN_FRAGMENTS | flags::PASS_UNPARSED;
    cfg.sip_ports = [5060, 0, 0, 5061, 0, 0, 0, 5080];
    // TCP 5060 is not inspected here; 5090 is.
    cfg.tcp_ports = [0, 5061, 0, 0, 0, 0, 5090, 0];
    cfg.ipv6_source_mask = mask(64);
    cfg.limits = [
        slow(5),
        slow(4),
        RateLimit::UNLIMITED,
        slow(20),
        slow(10),
        RateLimit::UNLIMITED,
        slow(25),
        slow(7),
        RateLimit::UNLIMITED,
    ];
    // IPv4 /28s (sixteen prefixes in each /24), IPv6 /56s, no third level; an unlimited
    // per-source class (OPTIONS, connections) still draws from its prefixes.
    let mut cfg = with_prefixes(cfg, [124, 56, 0]);
    cfg.prefix_limits = [
        slow(12),
        slow(10),
        slow(30),
        slow(60),
        RateLimit::UNLIMITED,
        slow(30),
        slow(40),
        slow(10),
        slow(2),
    ];
    cfg.ban_factor = 3;
    vec![(0.0, cfg)]
}

fn phases_monitor_flips() -> Phases {
    let mut monitor = base_config();
    monitor.flags = flags::MONITOR | flags::DROP_MALFORMED | flags::EXTEND_WHILE_ACTIVE;
    monitor.sip_ports = [5060, 0, 0, 0, 0, 0, 0, 0];
    let mut enforce = base_config();
    enforce.flags = flags::DROP_MALFORMED | flags::DROP_UNKNOWN_FRAGMENTS | flags::PASS_UNPARSED;
    enforce.ban_factor = 40; // clamped to 16
    enforce.ban_max_ns = 40 * HOUR_NS;
    let mut monitor2 = with_prefixes(base_config(), [112, 64, 48]);
    monitor2.flags = flags::MONITOR | flags::DROP_UNKNOWN_FRAGMENTS;
    monitor2.ipv6_source_mask = mask(48);
    let mut capped = enforce;
    capped.ban_max_ns = 3 * HOUR_NS;
    // A zero factor makes every repeat ban zero-length: the source is banned again (DropRate,
    // one more strike) by each packet its empty bucket refuses.
    capped.ban_factor = 0;
    vec![
        (0.0, monitor),
        (0.3, enforce),
        (0.55, monitor2),
        (0.8, capped),
    ]
}

// ---------------------------------------------------------------------------------------------
// The comparison.

fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "    {:04x}:", row * 16);
        for b in chunk {
            let _ = write!(out, " {b:02x}");
        }
        out.push_str("   ");
        for &b in chunk {
            out.push(if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            });
        }
        out.push('\n');
    }
    let _ = write!(out, "    as one hex string: ");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn slot_name(slot: usize) -> String {
    let v = Verdict::from_index(slot / MethodClass::COUNT).unwrap();
    let c = MethodClass::from_index(slot % MethodClass::COUNT).unwrap();
    format!("({v:?}, {c:?})")
}

/// The datapath, a second handle on its counters, and the model fed the same packets.
struct Run {
    name: &'static str,
    seed: u64,
    packets: u64,
    dp: Datapath,
    counters: PerCpuArray<MapData, u64>,
    /// `BAN_EVENTS`, drained after every packet so it never fills up.
    ban_events: RingBuf<MapData>,
    /// Events the kernel sent so far, by `ban_event_kind`.
    events_by_kind: [u64; 3],
    model: Model,
    /// The model's `now`; the kernel's clock reads are at or after it.
    now: u64,
    /// Kernel counter minus model counter per packet slot, from resynchronisations after a
    /// mismatch (all zero when nothing went wrong).
    adjust: Vec<i64>,
    mismatches: Vec<String>,
    max_mismatches: usize,
    /// Core sources in key form (unmasked), for forgetting.
    core_keys: Vec<([u8; 16], bool)>,
    /// The `EDITED_DENY` source denylisted while the `LIST_EDITS` are in force.
    edited_deny: Option<IpAddr>,
    /// Packets of that source the model dropped as banned while it was denylisted.
    banned_while_denied: u64,
    /// `PREFIXES` and `PREFIX_BANS`, second handles found through the program's map ids.
    prefixes: BpfHashMap<MapData, PrefixKey, SourceState>,
    prefix_bans: BpfHashMap<MapData, PrefixKey, DurableBan>,
    stats: Stats,
    /// Stop at the first mismatch and keep it rather than fail (the planted-bug check).
    expect_mismatch: bool,
}

/// What the run reached, for the coverage assertions.
#[derive(Debug, Default)]
struct Stats {
    /// Prefix bans (and would-be bans) the kernel reported, by prefix length.
    prefix_bans_by_len: BTreeMap<u8, u64>,
    /// Ends of prefix bans the kernel reported.
    prefix_expiries: u64,
    /// Source bans of class `connection` (a SYN flood) the kernel reported.
    connection_bans: u64,
    /// Prefix bans of class `connection` (a SYN flood spread over a prefix).
    prefix_connection_bans: u64,
    /// Prefixes brought back from `PREFIX_BANS` after an eviction.
    prefix_restores: u64,
    /// Prefix ban records removed because their strikes had decayed.
    prefix_decays: u64,
    /// Packets of allowlisted, protected and verified sources inside a banned prefix that its
    /// ban did not drop.
    allowlisted_in_banned_prefix: u64,
    protected_in_banned_prefix: u64,
    verified_in_banned_prefix: u64,
    /// Banned sources' (or prefixes') garbage, dropped unread instead of as malformed.
    garbage_unread: u64,
    /// REGISTERs in TCP segments that passed or met a bucket.
    tcp_registers: u64,
}

impl Stats {
    /// Counts what the kernel's events for one packet show.
    fn events(&mut self, events: &[BanEvent]) {
        for e in events {
            match e.kind {
                ban_event_kind::BAN | ban_event_kind::WOULD_BAN if e.prefix_len != 0 => {
                    *self.prefix_bans_by_len.entry(e.prefix_len).or_default() += 1;
                    if e.limit_class == LimitClass::Connection as u8 {
                        self.prefix_connection_bans += 1;
                    }
                }
                ban_event_kind::BAN | ban_event_kind::WOULD_BAN
                    if e.limit_class == LimitClass::Connection as u8 =>
                {
                    self.connection_bans += 1;
                }
                ban_event_kind::EXPIRED if e.prefix_len != 0 => self.prefix_expiries += 1,
                _ => {}
            }
        }
    }
}

/// Facts about one packet read from the model before it decides, for [`Stats`].
struct Before {
    datagram: Option<model::Datagram>,
    in_banned_prefix: bool,
    allowlisted: bool,
    protected: bool,
    verified: bool,
    /// The packet's prefixes that only `PREFIX_BANS` holds (a restore, or a decayed record).
    restorable: Vec<PrefixKey>,
}

impl Before {
    fn of(model: &Model, parsed: &Parsed, now: u64) -> Self {
        let Parsed::Sip(d) = *parsed else {
            return Self {
                datagram: None,
                in_banned_prefix: false,
                allowlisted: false,
                protected: false,
                verified: false,
                restorable: Vec::new(),
            };
        };
        let cfg = model.effective_config();
        let key = model.source_key(&d.src, d.is_ipv4);
        let verified_until = match model.sources.get(&key) {
            Some(state) => state.verified_until_ns,
            None => model.verified.get(&key).map_or(0, |v| v.verified_until_ns),
        };
        Self {
            datagram: Some(d),
            in_banned_prefix: model.in_banned_prefix(&d.src, d.is_ipv4, now),
            allowlisted: model.allowlist.lookup(&d.src).is_some(),
            protected: model.protected.lookup(&d.src).is_some(),
            verified: cfg.has_flag(flags::ANSWERS) && now < verified_until,
            restorable: model::prefix_keys(&cfg, &d.src, d.is_ipv4)
                .into_iter()
                .filter(|k| !model.prefixes.contains_key(k) && model.prefix_bans.contains_key(k))
                .collect(),
        }
    }

    fn count(&self, model: &Model, outcome: &Outcome, stats: &mut Stats) {
        let Some(d) = self.datagram else {
            return;
        };
        for key in &self.restorable {
            if model.prefixes.contains_key(key) {
                stats.prefix_restores += 1;
            } else if !model.prefix_bans.contains_key(key) {
                stats.prefix_decays += 1;
            }
        }
        if self.in_banned_prefix && outcome.verdict != Verdict::DropBanned {
            if self.allowlisted {
                stats.allowlisted_in_banned_prefix += 1;
            } else if self.protected {
                stats.protected_in_banned_prefix += 1;
            } else if self.verified {
                stats.verified_in_banned_prefix += 1;
            }
        }
        if d.class == MethodClass::Malformed && outcome.class == MethodClass::Unread {
            stats.garbage_unread += 1;
        }
        if d.protocol == Protocol::Tcp && outcome.class == MethodClass::Register {
            stats.tcp_registers += 1;
        }
    }
}

/// A typed second handle on one of the program's hash maps (plain or LRU).
fn hash_map<K: Pod, V: Pod>(dp: &mut Datapath, name: &str) -> BpfHashMap<MapData, K, V> {
    let map = dp
        .open_map(name)
        .unwrap_or_else(|e| panic!("opening {name}: {e:#}"));
    BpfHashMap::try_from(map).unwrap_or_else(|e| panic!("{name} is not a hash map: {e}"))
}

/// What a prefix churn does to one prefix (on both sides).
#[derive(Clone, Copy, Debug)]
enum Churn {
    /// Gone from `PREFIXES`, as the LRU evicts; its ban record stays.
    Evict,
    /// Gone from both tables, as lifting its ban does.
    Forget,
    /// Its ban record moved to `banned_until_ns` and the prefix evicted: it comes back with
    /// its ban over (expired, strikes kept) or decayed (the record goes).
    Age(u64),
}

/// The churn for a prefix picked by `rng`: an age only for a prefix with a ban record, and only
/// when `now` is far enough from boot for the record's end to lie that far back.
fn plan_churn(rng: &mut Rng, model: &Model, now: u64) -> Option<(PrefixKey, Churn)> {
    let mut keys: Vec<PrefixKey> = model
        .prefixes
        .keys()
        .chain(model.prefix_bans.keys())
        .copied()
        .collect();
    keys.sort_by_key(|k| (k.addr, k.prefix_len));
    keys.dedup();
    if keys.is_empty() {
        return None;
    }
    let key = *rng.pick(&keys);
    let decay = model.effective_config().strike_decay_ns;
    let churn = match rng.below(100) {
        0..40 => Churn::Evict,
        40..55 => Churn::Forget,
        55..85 if model.prefix_bans.contains_key(&key) && now > 10 * SECOND_NS => {
            Churn::Age(now - SECOND_NS)
        }
        _ if model.prefix_bans.contains_key(&key) && now > decay + 20 * SECOND_NS => {
            Churn::Age(now - decay - 10 * SECOND_NS)
        }
        _ => Churn::Evict,
    };
    Some((key, churn))
}

/// [`Churn`] on the model's side; returns the record written, for an age.
fn churn_model(model: &mut Model, key: &PrefixKey, churn: Churn) -> Option<DurableBan> {
    match churn {
        Churn::Evict => {
            model.evict_prefix(key);
            None
        }
        Churn::Forget => {
            model.forget_prefix(key);
            None
        }
        Churn::Age(until) => {
            model.evict_prefix(key);
            let record = model.prefix_bans.get_mut(key)?;
            record.banned_until_ns = until;
            Some(*record)
        }
    }
}

/// A handle on the datapath's `COUNTERS` map of its own, found through the program's map ids:
/// `SipMaps` reads the whole matrix, and one slot per packet is all this test needs.
fn counters_handle(dp: &mut Datapath) -> PerCpuArray<MapData, u64> {
    let program = loader::xdp_program(dp.ebpf()).expect("the XDP program");
    let info = program.info().expect("program info");
    let ids = info
        .map_ids()
        .expect("program map ids")
        .expect("kernel reports map ids");
    for id in ids {
        let data = MapData::from_id(id).expect("open map by id");
        let name = data
            .info()
            .expect("map info")
            .name_as_str()
            .map(str::to_owned);
        if name.as_deref() == Some(map_names::COUNTERS) {
            return PerCpuArray::try_from(Map::from_map_data(data).expect("map type"))
                .expect("COUNTERS is a per-CPU array");
        }
    }
    panic!("the program has no COUNTERS map");
}

impl Run {
    fn new(name: &'static str, first: &Config, seed: u64, packets: u64, mutant: Mutant) -> Self {
        let mut dp = Datapath::load(first).expect("load the XDP program");
        let counters = counters_handle(&mut dp);
        let prefixes = hash_map(&mut dp, map_names::PREFIXES);
        let prefix_bans = hash_map(&mut dp, map_names::PREFIX_BANS);
        let mut verified: BpfHashMap<MapData, SourceKey, VerifiedSource> =
            hash_map(&mut dp, map_names::VERIFIED);
        let ban_events = RingBuf::try_from(
            dp.ebpf()
                .take_map(map_names::BAN_EVENTS)
                .expect("BAN_EVENTS map"),
        )
        .expect("BAN_EVENTS is a ring buffer");
        let now = monotonic_now_ns();
        let mut model = Model::new(*first);
        let (allow, deny) = list_setup(now);
        for n in allow {
            dp.maps.allow(n).unwrap();
            model.allow(n);
        }
        for (n, expires) in deny {
            dp.maps.deny(n, expires).unwrap();
            model.deny(n, expires);
        }
        for n in PROTECTED {
            dp.maps.protect(net(n)).unwrap();
            model.protect(net(n));
        }
        for a in VERIFIED {
            let key = key_of(a.parse().unwrap());
            let record = VerifiedSource {
                verified_until_ns: now + 10 * HOUR_NS,
                verified_since_ns: now,
                successes: 1,
            };
            verified
                .insert(SourceKey { addr: key }, record, 0)
                .expect("write VERIFIED");
            model.verified.insert(key, record);
        }
        model.mutant = mutant;
        let core_keys = V4_SOURCES
            .iter()
            .chain(V6_SOURCES.iter())
            .map(|s| {
                let a: IpAddr = s.parse().unwrap();
                (key_of(a), a.is_ipv4())
            })
            .collect();
        Self {
            name,
            seed,
            packets,
            dp,
            counters,
            ban_events,
            events_by_kind: [0; 3],
            model,
            now,
            adjust: vec![0; Verdict::COUNT * MethodClass::COUNT],
            mismatches: Vec::new(),
            max_mismatches: env_u64("SIP_XDP_DIFF_MAX_MISMATCHES", 1).max(1) as usize,
            core_keys,
            edited_deny: None,
            banned_while_denied: 0,
            prefixes,
            prefix_bans,
            stats: Stats::default(),
            expect_mismatch: mutant != Mutant::None,
        }
    }

    /// Makes (`add`) or undoes the `LIST_EDITS` on both sides.
    fn edit_lists(&mut self, add: bool) {
        let allow: Vec<IpNet> = EDITED_ALLOW.iter().map(|s| net(s)).collect();
        if add {
            let cfg = self.model.effective_config();
            let monitor = cfg.has_flag(flags::MONITOR);
            let banned = |m: &Model, addr: &IpAddr| {
                m.sources.get(&key_of(*addr)).is_some_and(|s| {
                    self.now < s.banned_until_ns
                        && (s.ban_flags & ban_flags::MONITOR_ONLY == 0 || monitor)
                })
            };
            let candidates: Vec<IpAddr> = EDITED_DENY.iter().map(|s| s.parse().unwrap()).collect();
            let addr = *candidates
                .iter()
                .find(|a| banned(&self.model, a))
                .unwrap_or(&candidates[0]);
            let deny = IpNet::from(addr);
            self.edited_deny = Some(addr);
            self.dp.maps.deny(deny, 0).unwrap();
            self.model.deny(deny, 0);
            for &n in &allow {
                self.dp.maps.allow(n).unwrap();
                self.model.allow(n);
                self.model.forget_sources_in(n);
            }
            forget_sources_in(&mut self.dp.maps, &allow).unwrap();
        } else {
            let deny = IpNet::from(self.edited_deny.take().expect("edits in force"));
            assert!(self.dp.maps.undeny(deny).unwrap());
            self.model.undeny(deny);
            for &n in &allow {
                assert!(self.dp.maps.unallow(n).unwrap());
                self.model.unallow(n);
            }
        }
    }

    fn set_config(&mut self, cfg: &Config) {
        self.dp.maps.write_config(cfg).unwrap();
        self.model.config = *cfg;
    }

    fn repro(&self) -> String {
        format!(
            "reproduce: SIP_XDP_DIFF_SEED={:#x} SIP_XDP_DIFF_PACKETS={} cargo test -p sip-xdp-tests --test differential {}",
            self.seed, self.packets, self.name
        )
    }

    fn record(&mut self, report: String) {
        self.mismatches.push(report);
        if self.expect_mismatch {
            return;
        }
        if self.mismatches.len() >= self.max_mismatches {
            self.fail();
        }
        eprintln!("{}\n", self.mismatches.last().unwrap());
    }

    fn fail(&self) -> ! {
        panic!(
            "[{}] {} mismatch(es) between the XDP program and the model; the first:\n{}\n{}",
            self.name,
            self.mismatches.len(),
            self.mismatches[0],
            self.repro()
        );
    }

    fn kernel_slot(&self, slot: usize) -> i64 {
        let values = self
            .counters
            .get(&(slot as u32), 0)
            .expect("read a counter");
        values.iter().sum::<u64>() as i64
    }

    fn kernel_counters(&self) -> Counters {
        self.dp.maps.counters().expect("read counters")
    }

    fn model_slot(&self, slot: usize) -> i64 {
        let v = Verdict::from_index(slot / MethodClass::COUNT).unwrap();
        let c = MethodClass::from_index(slot % MethodClass::COUNT).unwrap();
        self.model.packets(v, c) as i64
    }

    /// Everything the kernel put in `BAN_EVENTS` since the last call.
    fn drain_kernel_events(&mut self) -> Vec<BanEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ban_events.next() {
            assert_eq!(item.len(), size_of::<BanEvent>(), "ban event size");
            // SAFETY: the program submits whole `BanEvent`s, checked by size just above.
            let event: BanEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if let Some(n) = self.events_by_kind.get_mut(event.kind as usize) {
                *n += 1;
            }
            out.push(event);
        }
        out
    }

    /// One packet through both.
    fn step(&mut self, index: u64, packet: &Packet) {
        assert!(
            (14..=3000).contains(&packet.bytes.len()),
            "generator made a frame of {} bytes",
            packet.bytes.len()
        );
        let cfg = self.model.effective_config();
        let parsed = model::parse(&packet.bytes, &cfg);
        let before =
            parsed_key(&self.model, &parsed).and_then(|k| self.model.sources.get(&k).copied());
        let facts = Before::of(&self.model, &parsed, self.now);
        let expected = self.model.process(&packet.bytes, self.now);
        facts.count(&self.model, &expected, &mut self.stats);
        if expected.verdict == Verdict::DropBanned
            && matches!(parsed, Parsed::Sip(d)
                if Some(IpAddr::from(d.src).to_canonical()) == self.edited_deny)
        {
            self.banned_while_denied += 1;
        }
        let action = self.dp.run(&packet.bytes).expect("BPF_PROG_TEST_RUN");
        let slot = packet_counter_index(expected.verdict, expected.class) as usize;
        let counted = self.kernel_slot(slot) == self.model_slot(slot) + self.adjust[slot];
        let model_events = std::mem::take(&mut self.model.ban_events);
        let kernel_events = self.drain_kernel_events();
        self.stats.events(&kernel_events);
        let events = if model_events.is_empty() && kernel_events.is_empty() {
            None
        } else {
            let elapsed = monotonic_now_ns() - self.now + CLOCK_SLACK_NS;
            events_diff(&model_events, &kernel_events, elapsed)
        };
        if action == expected.action && counted && events.is_none() {
            return;
        }

        // Mismatch: find which counter the kernel bumped, describe everything, resynchronise.
        let kernel = self.kernel_counters();
        let mut bumped = Vec::new();
        for s in 0..self.adjust.len() {
            let v = Verdict::from_index(s / MethodClass::COUNT).unwrap();
            let c = MethodClass::from_index(s % MethodClass::COUNT).unwrap();
            let mut model_before = self.model_slot(s) + self.adjust[s];
            if s == slot {
                model_before -= 1;
            }
            let k = kernel.packets(v, c) as i64;
            if k != model_before {
                bumped.push(format!("{} {:+}", slot_name(s), k - model_before));
            }
            self.adjust[s] = k - self.model_slot(s);
        }
        let key = parsed_key(&self.model, &parsed);
        let kernel_state = key.and_then(|k| self.dp.maps.source(k).expect("read source"));
        let mut report = String::new();
        let _ = writeln!(
            report,
            "[{}] MISMATCH at packet #{index} (phase config flags {:#x}), made as: {}",
            self.name,
            cfg.flags,
            packet.tags.join(" + ")
        );
        let _ = writeln!(
            report,
            "  expected: action={} verdict={:?} class={:?}",
            action_name(expected.action),
            expected.verdict,
            expected.class
        );
        let _ = writeln!(
            report,
            "  kernel:   action={} counter change(s) vs model-before: [{}]",
            action_name(action),
            bumped.join(", ")
        );
        if let Some(events) = events {
            let _ = writeln!(report, "  ban events differ: {events}");
        }
        let _ = writeln!(report, "  model parse: {parsed:?}");
        if let Some(k) = key {
            let _ = writeln!(report, "  source key {}:", fmt_key(&k));
            let _ = writeln!(report, "    model before: {}", fmt_state(before.as_ref()));
            let _ = writeln!(
                report,
                "    model after:  {}",
                fmt_state(self.model.sources.get(&k))
            );
            let _ = writeln!(
                report,
                "    kernel after: {}",
                fmt_state(kernel_state.as_ref())
            );
            // Resynchronise the model's view of this source to the kernel's.
            match kernel_state {
                Some(s) => {
                    self.model.sources.insert(k, s);
                }
                None => {
                    self.model.sources.remove(&k);
                }
            }
        }
        if let Parsed::Sip(d) = parsed {
            let cfg = self.model.effective_config();
            for prefix in model::prefix_keys(&cfg, &d.src, d.is_ipv4) {
                let kernel_state = self.prefixes.get(&prefix, 0).ok();
                let kernel_record = self.prefix_bans.get(&prefix, 0).ok();
                let model_state = self.model.prefixes.peek(&prefix).copied();
                if model_state != kernel_state
                    || self.model.prefix_bans.get(&prefix) != kernel_record.as_ref()
                {
                    let _ = writeln!(report, "  prefix {}:", fmt_prefix(&prefix));
                    let _ = writeln!(
                        report,
                        "    model after:  {}",
                        fmt_state(model_state.as_ref())
                    );
                    let _ = writeln!(
                        report,
                        "    kernel after: {}",
                        fmt_state(kernel_state.as_ref())
                    );
                    let _ = writeln!(
                        report,
                        "    ban records: model {:?}, kernel {kernel_record:?}",
                        self.model.prefix_bans.get(&prefix)
                    );
                }
                match kernel_state {
                    Some(s) => {
                        self.model.prefixes.insert(prefix, s);
                    }
                    None => {
                        self.model.prefixes.remove(&prefix);
                    }
                }
                match kernel_record {
                    Some(r) => {
                        self.model.prefix_bans.insert(prefix, r);
                    }
                    None => {
                        self.model.prefix_bans.remove(&prefix);
                    }
                }
            }
        }
        if let Parsed::Sip(model::Datagram {
            src,
            first_fragment_id: Some(id),
            ..
        }) = parsed
        {
            match self.kernel_fragment(src, id) {
                Some(dropped) => {
                    self.model.fragments.insert((src, id), dropped);
                }
                None => {
                    self.model.fragments.remove(&(src, id));
                }
            }
        }
        let _ = writeln!(report, "  frame ({} bytes):", packet.bytes.len());
        let _ = write!(report, "{}", hex_dump(&packet.bytes));
        self.record(report);
    }

    fn fragments_map(&mut self) -> BpfHashMap<&mut MapData, FragmentKey, FragmentFate> {
        let map = self
            .dp
            .ebpf()
            .map_mut(map_names::FRAGMENTS)
            .expect("FRAGMENTS map");
        BpfHashMap::try_from(map).expect("FRAGMENTS is a hash map")
    }

    fn kernel_fragment(&mut self, src: [u8; 16], id: u32) -> Option<bool> {
        let key = FragmentKey { src, id, _pad: 0 };
        self.fragments_map()
            .get(&key, 0)
            .ok()
            .map(|f| f.dropped != 0)
    }

    /// Compares one source's state; `None` when equal.
    fn compare_source(&self, key: &[u8; 16], elapsed: u64) -> Option<String> {
        let kernel = self.dp.maps.source(*key).expect("read source");
        let model = self.model.sources.get(key);
        let diff = match (model, kernel.as_ref()) {
            (None, None) => return None,
            (Some(m), Some(k)) => state_diff(m, k, elapsed),
            _ => Some("present on one side only".to_owned()),
        }?;
        Some(format!(
            "source {}: {diff}\n    model:  {}\n    kernel: {}",
            fmt_key(key),
            fmt_state(model),
            fmt_state(kernel.as_ref())
        ))
    }

    /// Full comparison: every counter, the ban counters, every source, every fragment entry.
    fn check_all(&mut self, index: u64) {
        let elapsed = monotonic_now_ns() - self.now + CLOCK_SLACK_NS;
        let mut problems = Vec::new();
        let kernel = self.kernel_counters();
        for s in 0..self.adjust.len() {
            let v = Verdict::from_index(s / MethodClass::COUNT).unwrap();
            let c = MethodClass::from_index(s % MethodClass::COUNT).unwrap();
            let k = kernel.packets(v, c) as i64;
            let m = self.model_slot(s) + self.adjust[s];
            if k != m {
                problems.push(format!("counter {}: kernel {k}, model {m}", slot_name(s)));
            }
        }
        let ktotal = kernel.total();
        if ktotal as i64 != self.model.total_packets() as i64 + self.adjust.iter().sum::<i64>() {
            problems.push(format!(
                "packet total: kernel {ktotal}, model {}",
                self.model.total_packets()
            ));
        }
        let lost = kernel.event(EventCounter::EventsLost);
        if lost != 0 {
            problems.push(format!(
                "{lost} ban event(s) lost although the ring buffer is drained after every packet"
            ));
        }
        if self.mismatches.is_empty() {
            // Every event counter (lost events are checked above: none may be lost).
            for e in EventCounter::ALL
                .into_iter()
                .filter(|&e| e != EventCounter::EventsLost)
            {
                let (k, m) = (kernel.event(e), self.model.event(e));
                if k != m {
                    problems.push(format!("event counter {e:?}: kernel {k}, model {m}"));
                }
            }
        }

        let kernel_sources = self.dp.maps.sources().expect("read sources");
        let mut keys: BTreeSet<[u8; 16]> = kernel_sources.iter().map(|(k, _)| k.addr).collect();
        keys.extend(self.model.sources.keys().copied());
        for key in &keys {
            if let Some(p) = self.compare_source(key, elapsed) {
                problems.push(p);
            }
        }

        let kernel_bans: BTreeMap<[u8; 16], DurableBan> = self
            .dp
            .maps
            .bans()
            .expect("read bans")
            .into_iter()
            .map(|(k, r)| (k.addr, r))
            .collect();
        let mut ban_keys: BTreeSet<[u8; 16]> = kernel_bans.keys().copied().collect();
        ban_keys.extend(self.model.bans.keys().copied());
        for key in &ban_keys {
            let (m, k) = (self.model.bans.get(key), kernel_bans.get(key));
            if !records_agree(m, k, elapsed) {
                problems.push(format!(
                    "ban record {}: kernel {k:?}, model {m:?}",
                    fmt_key(key)
                ));
            }
        }

        let kernel_prefixes: BTreeMap<([u8; 16], u8), (PrefixKey, SourceState)> = self
            .prefixes
            .iter()
            .map(|kv| {
                let (k, v) = kv.expect("read PREFIXES");
                ((k.addr, k.prefix_len), (k, v))
            })
            .collect();
        let mut prefix_keys: BTreeSet<([u8; 16], u8)> = kernel_prefixes.keys().copied().collect();
        prefix_keys.extend(self.model.prefixes.keys().map(|k| (k.addr, k.prefix_len)));
        for (addr, prefix_len) in &prefix_keys {
            let key = prefix_key(*addr, *prefix_len);
            let model = self.model.prefixes.peek(&key);
            let kernel = kernel_prefixes.get(&(*addr, *prefix_len)).map(|(_, s)| s);
            let diff = match (model, kernel) {
                (Some(m), Some(k)) => state_diff(m, k, elapsed),
                (None, None) => None,
                _ => Some("present on one side only".to_owned()),
            };
            if let Some(diff) = diff {
                problems.push(format!(
                    "prefix {}: {diff}\n    model:  {}\n    kernel: {}",
                    fmt_prefix(&key),
                    fmt_state(model),
                    fmt_state(kernel)
                ));
            }
        }
        let kernel_prefix_bans: BTreeMap<([u8; 16], u8), DurableBan> = self
            .prefix_bans
            .iter()
            .map(|kv| {
                let (k, v) = kv.expect("read PREFIX_BANS");
                ((k.addr, k.prefix_len), v)
            })
            .collect();
        let mut record_keys: BTreeSet<([u8; 16], u8)> =
            kernel_prefix_bans.keys().copied().collect();
        record_keys.extend(
            self.model
                .prefix_bans
                .keys()
                .map(|k| (k.addr, k.prefix_len)),
        );
        for (addr, prefix_len) in &record_keys {
            let key = prefix_key(*addr, *prefix_len);
            let (m, k) = (
                self.model.prefix_bans.get(&key),
                kernel_prefix_bans.get(&(*addr, *prefix_len)),
            );
            if !records_agree(m, k, elapsed) {
                problems.push(format!(
                    "prefix ban record {}: kernel {k:?}, model {m:?}",
                    fmt_prefix(&key)
                ));
            }
        }

        let kernel_fragments: Vec<(FragmentKey, FragmentFate)> = self
            .fragments_map()
            .iter()
            .map(|kv| kv.expect("read fragments"))
            .collect();
        let kernel_fragment_keys: HashSet<([u8; 16], u32)> = kernel_fragments
            .iter()
            .map(|(k, _)| (k.src, k.id))
            .collect();
        for (k, fate) in &kernel_fragments {
            match self.model.fragments.get(&(k.src, k.id)) {
                Some(&dropped) if dropped == (fate.dropped != 0) => {}
                other => problems.push(format!(
                    "fragment ({}, id {:#x}): kernel dropped={}, model {:?}",
                    fmt_key(&k.src),
                    k.id,
                    fate.dropped,
                    other
                )),
            }
        }
        for (src, id) in self.model.fragments.keys() {
            if !kernel_fragment_keys.contains(&(*src, *id)) {
                problems.push(format!(
                    "fragment ({}, id {id:#x}): only in the model",
                    fmt_key(src)
                ));
            }
        }

        if !problems.is_empty() {
            let shown = problems.len().min(20);
            let report = format!(
                "[{}] STATE MISMATCH after packet #{index} ({} problem(s), first {shown}):\n  {}",
                self.name,
                problems.len(),
                problems[..shown].join("\n  ")
            );
            // No single packet to blame: resynchronise everything and go on (or stop).
            for (k, s) in &kernel_sources {
                self.model.sources.insert(k.addr, *s);
            }
            let kernel_keys: HashSet<[u8; 16]> =
                kernel_sources.iter().map(|(k, _)| k.addr).collect();
            self.model.sources.retain(|k, _| kernel_keys.contains(k));
            self.model.bans = kernel_bans.clone().into_iter().collect();
            self.model.prefixes.clear();
            for (k, s) in kernel_prefixes.values() {
                self.model.prefixes.insert(*k, *s);
            }
            self.model.prefix_bans = kernel_prefix_bans
                .iter()
                .map(|(&(addr, len), r)| (prefix_key(addr, len), *r))
                .collect();
            self.model.fragments = kernel_fragments
                .iter()
                .map(|(k, f)| ((k.src, k.id), f.dropped != 0))
                .collect();
            self.record(report);
        }

        // Keep both tables far from their LRU capacities.
        if self.model.sources.len() > MAX_MODEL_SOURCES {
            let core: HashSet<[u8; 16]> = self.core_source_keys().into_iter().collect();
            let extra: Vec<[u8; 16]> = self
                .model
                .sources
                .keys()
                .filter(|k| !core.contains(*k))
                .copied()
                .collect();
            for k in extra {
                self.dp.maps.forget_source(k).expect("forget source");
                self.model.sources.remove(&k);
                self.model.bans.remove(&k);
            }
        }
        if self.model.prefixes.len() > MAX_MODEL_PREFIXES {
            let keys: Vec<PrefixKey> = self.model.prefixes.keys().copied().collect();
            for k in keys {
                let _ = self.prefixes.remove(&k);
                self.model.evict_prefix(&k);
            }
        }
        if self.model.fragments.len() > MAX_MODEL_FRAGMENTS {
            let keys: Vec<([u8; 16], u32)> = self.model.fragments.keys().copied().collect();
            let mut map = self.fragments_map();
            for (src, id) in keys {
                let _ = map.remove(&FragmentKey { src, id, _pad: 0 });
            }
            self.model.fragments.clear();
        }
    }

    fn core_source_keys(&self) -> Vec<[u8; 16]> {
        self.core_keys
            .iter()
            .map(|(k, v4)| self.model.source_key(k, *v4))
            .collect()
    }

    /// Compares a random core source, then forgets it on both sides: as the LRU evicts it (its
    /// ban record stays and brings the ban back), or wholly, as `ban del` does.
    fn forget_one(&mut self, rng: &mut Rng, index: u64) {
        let keys = self.core_source_keys();
        let key = *rng.pick(&keys);
        let elapsed = monotonic_now_ns() - self.now + CLOCK_SLACK_NS;
        if let Some(p) = self.compare_source(&key, elapsed) {
            let report = format!(
                "[{}] STATE MISMATCH before forgetting, packet #{index}: {p}",
                self.name
            );
            self.record(report);
        }
        if rng.percent(60) {
            self.dp.maps.forget_tracked(key).expect("evict source");
            self.model.evict(&key);
        } else {
            self.dp.maps.forget_source(key).expect("forget source");
            self.model.sources.remove(&key);
            self.model.bans.remove(&key);
        }
    }
}

impl Run {
    /// Compares one prefix's state and ban record; `None` when they agree.
    fn compare_prefix(&self, key: &PrefixKey, elapsed: u64) -> Option<String> {
        let kernel = self.prefixes.get(key, 0).ok();
        let model = self.model.prefixes.peek(key);
        let state = match (model, kernel.as_ref()) {
            (None, None) => None,
            (Some(m), Some(k)) => state_diff(m, k, elapsed),
            _ => Some("present on one side only".to_owned()),
        };
        let kernel_record = self.prefix_bans.get(key, 0).ok();
        let model_record = self.model.prefix_bans.get(key);
        let record = (!records_agree(model_record, kernel_record.as_ref(), elapsed))
            .then(|| format!("ban record: model {model_record:?}, kernel {kernel_record:?}"));
        if state.is_none() && record.is_none() {
            return None;
        }
        Some(format!(
            "prefix {}: {}\n    model:  {}\n    kernel: {}",
            fmt_prefix(key),
            [state, record]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
            fmt_state(model),
            fmt_state(kernel.as_ref())
        ))
    }

    /// Compares a random prefix, then evicts, forgets or ages it on both sides.
    fn churn_prefix(&mut self, rng: &mut Rng, index: u64) {
        let Some((key, churn)) = plan_churn(rng, &self.model, self.now) else {
            return;
        };
        let elapsed = monotonic_now_ns() - self.now + CLOCK_SLACK_NS;
        if let Some(p) = self.compare_prefix(&key, elapsed) {
            let report = format!(
                "[{}] STATE MISMATCH before {churn:?} of a prefix, packet #{index}: {p}",
                self.name
            );
            self.record(report);
        }
        let record = churn_model(&mut self.model, &key, churn);
        let _ = self.prefixes.remove(&key);
        match churn {
            Churn::Evict => {}
            Churn::Forget => {
                let _ = self.prefix_bans.remove(&key);
            }
            Churn::Age(_) => {
                let record = record.expect("aged prefixes have a record");
                self.prefix_bans
                    .insert(key, record, 0)
                    .expect("rewrite a PREFIX_BANS record");
            }
        }
    }
}

fn prefix_key(addr: [u8; 16], prefix_len: u8) -> PrefixKey {
    PrefixKey {
        addr,
        prefix_len,
        _pad: [0; 7],
    }
}

/// Two durable ban records (of a source or a prefix) agree: facts equal, ends close.
fn records_agree(m: Option<&DurableBan>, k: Option<&DurableBan>, elapsed: u64) -> bool {
    match (m, k) {
        (Some(m), Some(k)) => {
            timestamps_close(m.banned_until_ns, k.banned_until_ns, elapsed)
                && (m.ban_duration_ns, m.strikes, m.ban_class, m.ban_flags)
                    == (k.ban_duration_ns, k.strikes, k.ban_class, k.ban_flags)
        }
        (None, None) => true,
        _ => false,
    }
}

/// A prefix as `ban list` names it: IPv4 `a.b.c.0/24`, IPv6 `2001:db8::/64`.
fn fmt_prefix(key: &PrefixKey) -> String {
    match IpAddr::from(key.addr).to_canonical() {
        IpAddr::V4(v4) if key.prefix_len >= 96 => format!("{v4}/{}", key.prefix_len - 96),
        _ => format!("{}/{}", Ipv6Addr::from(key.addr), key.prefix_len),
    }
}

fn parsed_key(model: &Model, parsed: &Parsed) -> Option<[u8; 16]> {
    match parsed {
        Parsed::Sip(d) => Some(model.source_key(&d.src, d.is_ipv4)),
        _ => None,
    }
}

fn action_name(action: u32) -> &'static str {
    if action == XDP_DROP { "DROP" } else { "PASS" }
}

fn fmt_key(key: &[u8; 16]) -> String {
    sip_xdp::maps::key_addr(*key).to_string()
}

fn fmt_state(state: Option<&SourceState>) -> String {
    match state {
        None => "absent".to_owned(),
        Some(s) => format!(
            "packets={} dropped={} strikes={} ban_class={} ban_flags={:#x} ban_duration={}s banned_until={} tat={:?}",
            s.packets,
            s.dropped,
            s.strikes,
            LimitClass::from_index(s.ban_class as usize).map_or("?", LimitClass::name),
            s.ban_flags,
            s.ban_duration_ns / SECOND_NS,
            s.banned_until_ns,
            s.tat_ns
        ),
    }
}

/// Differences between the model's and the kernel's state of one source. Counts and ban facts
/// must be equal; timestamps only as close as the run's length allows.
fn state_diff(model: &SourceState, kernel: &SourceState, elapsed: u64) -> Option<String> {
    let mut d = Vec::new();
    let mut eq = |name: &str, m: u64, k: u64| {
        if m != k {
            d.push(format!("{name}: model {m}, kernel {k}"));
        }
    };
    eq("packets", model.packets, kernel.packets);
    eq("dropped", model.dropped, kernel.dropped);
    eq("strikes", model.strikes.into(), kernel.strikes.into());
    eq("ban_class", model.ban_class.into(), kernel.ban_class.into());
    eq("ban_flags", model.ban_flags.into(), kernel.ban_flags.into());
    eq(
        "ban_duration_ns",
        model.ban_duration_ns,
        kernel.ban_duration_ns,
    );
    let mut close = |name: String, m: u64, k: u64| {
        if !timestamps_close(m, k, elapsed) {
            d.push(format!(
                "{name}: model {m}, kernel {k} (allowed drift {elapsed} ns)"
            ));
        }
    };
    close(
        "banned_until_ns".into(),
        model.banned_until_ns,
        kernel.banned_until_ns,
    );
    for (i, (m, k)) in model.tat_ns.iter().zip(kernel.tat_ns).enumerate() {
        close(format!("tat_ns[{}]", LimitClass::ALL[i].name()), *m, k);
    }
    close(
        "verified_until_ns".into(),
        model.verified_until_ns,
        kernel.verified_until_ns,
    );
    close(
        "flow_bans_until_ns".into(),
        model.flow_bans_until_ns,
        kernel.flow_bans_until_ns,
    );
    (!d.is_empty()).then(|| d.join("; "))
}

/// Whether a kernel timestamp `k` can be the model's `m` taken up to `elapsed` later (0 means
/// "never" and must match exactly).
fn timestamps_close(m: u64, k: u64, elapsed: u64) -> bool {
    if m == 0 || k == 0 {
        m == k
    } else {
        k + CLOCK_SLACK_NS >= m && k <= m + elapsed
    }
}

fn fmt_event(e: &BanEvent) -> String {
    let kind = match e.kind {
        ban_event_kind::BAN => "ban",
        ban_event_kind::WOULD_BAN => "would_ban",
        ban_event_kind::EXPIRED => "expired",
        _ => "?",
    };
    let who = if e.prefix_len == 0 {
        fmt_key(&e.addr)
    } else {
        fmt_prefix(&prefix_key(e.addr, e.prefix_len))
    };
    format!(
        "{kind} {who} class={} strikes={} duration={}s banned_until={} now={} window={}ns/{} packets",
        LimitClass::from_index(e.limit_class as usize).map_or("?", LimitClass::name),
        e.strikes,
        e.duration_ns / SECOND_NS,
        e.banned_until_ns,
        e.now_ns,
        e.window_ns,
        e.window_packets
    )
}

/// Differences between the ban events the model and the kernel sent for one packet. Facts must
/// be equal, timestamps close; the kernel's one-second rate window restarts in real time while
/// the model's clock stands still, so its window can only be shorter.
fn events_diff(model: &[BanEvent], kernel: &[BanEvent], elapsed: u64) -> Option<String> {
    let mut d = Vec::new();
    if model.len() != kernel.len() {
        d.push(format!(
            "model sent {} event(s), kernel {}",
            model.len(),
            kernel.len()
        ));
    }
    for (i, (m, k)) in model.iter().zip(kernel).enumerate() {
        let same_facts = (
            m.addr,
            m.prefix_len,
            m.kind,
            m.limit_class,
            m.strikes,
            m.duration_ns,
            m.port,
            m._pad,
        ) == (
            k.addr,
            k.prefix_len,
            k.kind,
            k.limit_class,
            k.strikes,
            k.duration_ns,
            k.port,
            k._pad,
        );
        let window_ok = k.window_ns < RATE_WINDOW_NS
            && k.window_ns <= m.window_ns + elapsed
            && (1..=m.window_packets).contains(&k.window_packets);
        if !same_facts
            || !window_ok
            || !timestamps_close(m.now_ns, k.now_ns, elapsed)
            || !timestamps_close(m.banned_until_ns, k.banned_until_ns, elapsed)
        {
            d.push(format!("event #{i} differs"));
        }
    }
    if d.is_empty() {
        return None;
    }
    for m in model {
        d.push(format!("model:  {}", fmt_event(m)));
    }
    for k in kernel {
        d.push(format!("kernel: {}", fmt_event(k)));
    }
    Some(d.join("\n    "))
}

/// The scenario's generator seed.
fn scenario_seed(index: u64) -> u64 {
    env_u64("SIP_XDP_DIFF_SEED", DEFAULT_SEED) ^ index.wrapping_mul(0xa076_1d64_78bd_642f)
}

/// Feeds `packets` generated packets to the kernel and the model, with the phase changes, list
/// edits, forgets and prefix churns of a run. With a mutant planted, stops at the first
/// mismatch.
fn drive(name: &'static str, index: u64, phases: &Phases, packets: u64, mutant: Mutant) -> Run {
    let seed = env_u64("SIP_XDP_DIFF_SEED", DEFAULT_SEED);
    let scenario_seed = scenario_seed(index);
    let mut run = Run::new(name, &phases[0].1, seed, packets, mutant);
    let mut generator = Gen::new(scenario_seed);
    let mut side = Rng::new(scenario_seed ^ 0xf0f0_f0f0);
    let mut churn = Rng::new(scenario_seed ^ 0x0f0f_0f0f);
    let mut next_phase = 1;
    let mut next_edit = 0;
    for i in 0..packets {
        if next_phase < phases.len() && i as f64 >= phases[next_phase].0 * packets as f64 {
            run.check_all(i);
            run.set_config(&phases[next_phase].1);
            next_phase += 1;
        }
        if next_edit < LIST_EDITS.len() && i as f64 >= LIST_EDITS[next_edit].0 * packets as f64 {
            run.edit_lists(LIST_EDITS[next_edit].1);
            // Compares every source right after the control plane forgot some.
            run.check_all(i);
            next_edit += 1;
        }
        let packet = generator.next_packet();
        run.step(i, &packet);
        if (i + 1) % FORGET_EVERY == 0 {
            run.forget_one(&mut side, i);
        }
        if (i + 1) % PREFIX_CHURN_EVERY == 0 {
            run.churn_prefix(&mut churn, i);
        }
        if (i + 1) % CHECK_EVERY == 0 {
            run.check_all(i);
        }
        if run.expect_mismatch && !run.mismatches.is_empty() {
            return run;
        }
    }
    run.check_all(packets);
    run
}

/// The model alone on the same generated traffic, with the same side actions on its own
/// tables (what `drive` does to both): for the rootless coverage check.
fn drive_model(index: u64, phases: &Phases, packets: u64) -> (Model, Stats) {
    let scenario_seed = scenario_seed(index);
    let now = 10 * HOUR_NS;
    let mut model = Model::new(phases[0].1);
    let (allow, deny) = list_setup(now);
    allow.into_iter().for_each(|n| model.allow(n));
    deny.into_iter().for_each(|(n, e)| model.deny(n, e));
    PROTECTED.iter().for_each(|n| model.protect(net(n)));
    for a in VERIFIED {
        model.verified.insert(
            key_of(a.parse().unwrap()),
            VerifiedSource {
                verified_until_ns: now + 10 * HOUR_NS,
                verified_since_ns: now,
                successes: 1,
            },
        );
    }
    let core: Vec<([u8; 16], bool)> = V4_SOURCES
        .iter()
        .chain(V6_SOURCES.iter())
        .map(|s| {
            let a: IpAddr = s.parse().unwrap();
            (key_of(a), a.is_ipv4())
        })
        .collect();
    let mut stats = Stats::default();
    let mut generator = Gen::new(scenario_seed);
    let mut side = Rng::new(scenario_seed ^ 0xf0f0_f0f0);
    let mut churn = Rng::new(scenario_seed ^ 0x0f0f_0f0f);
    let mut next_phase = 1;
    let mut next_edit = 0;
    for i in 0..packets {
        if next_phase < phases.len() && i as f64 >= phases[next_phase].0 * packets as f64 {
            model.config = phases[next_phase].1;
            next_phase += 1;
        }
        if next_edit < LIST_EDITS.len() && i as f64 >= LIST_EDITS[next_edit].0 * packets as f64 {
            for n in EDITED_ALLOW.map(net) {
                if LIST_EDITS[next_edit].1 {
                    model.allow(n);
                    model.forget_sources_in(n);
                } else {
                    model.unallow(n);
                }
            }
            next_edit += 1;
        }
        let packet = generator.next_packet();
        let parsed = model::parse(&packet.bytes, &model.effective_config());
        let facts = Before::of(&model, &parsed, now);
        let outcome = model.process(&packet.bytes, now);
        facts.count(&model, &outcome, &mut stats);
        stats.events(&std::mem::take(&mut model.ban_events));
        if (i + 1) % FORGET_EVERY == 0 {
            let (k, v4) = *side.pick(&core);
            let key = model.source_key(&k, v4);
            if side.percent(60) {
                model.evict(&key);
            } else {
                model.sources.remove(&key);
                model.bans.remove(&key);
            }
        }
        if (i + 1) % PREFIX_CHURN_EVERY == 0
            && let Some((key, what)) = plan_churn(&mut churn, &model, now)
        {
            churn_model(&mut model, &key, what);
        }
    }
    (model, stats)
}

/// Whether any phase turns `flag` on.
fn any_phase(phases: &Phases, flag: u32) -> bool {
    phases.iter().any(|(_, cfg)| cfg.has_flag(flag))
}

/// The prefix mechanisms a scenario must reach, from the model's counters and the run's
/// statistics.
fn prefix_coverage(name: &str, model: &Model, stats: &Stats, phases: &Phases) {
    let bans_v4 = stats
        .prefix_bans_by_len
        .iter()
        .filter(|(len, _)| **len > 96)
        .map(|(_, n)| n)
        .sum::<u64>();
    let bans_v6 = stats
        .prefix_bans_by_len
        .iter()
        .filter(|(len, _)| **len <= 96)
        .map(|(_, n)| n)
        .sum::<u64>();
    let drop_prefix: u64 = MethodClass::ALL
        .iter()
        .map(|&c| model.packets(Verdict::DropPrefix, c))
        .sum();
    let mut reached = vec![
        ("drop_prefix verdicts", drop_prefix),
        ("prefix_bans counter", model.event(EventCounter::PrefixBans)),
        (
            "prefix_banned_drops counter",
            model.event(EventCounter::PrefixBannedDrops),
        ),
        ("IPv4 prefix bans", bans_v4),
        ("IPv6 prefix bans", bans_v6),
        ("prefix ban expiries", stats.prefix_expiries),
        ("prefixes restored from PREFIX_BANS", stats.prefix_restores),
        ("decayed prefix records removed", stats.prefix_decays),
        ("garbage dropped unread", stats.garbage_unread),
        ("REGISTERs over TCP", stats.tcp_registers),
        (
            "allowlisted sources passing a banned prefix",
            stats.allowlisted_in_banned_prefix,
        ),
        (
            "protected sources passing a banned prefix",
            stats.protected_in_banned_prefix,
        ),
    ];
    let connections_limited = phases
        .iter()
        .any(|(_, cfg)| !cfg.limits[LimitClass::Connection as usize].is_unlimited());
    if connections_limited {
        reached.push(("connection (SYN flood) bans", stats.connection_bans));
    }
    let prefix_connections_limited = phases
        .iter()
        .any(|(_, cfg)| !cfg.prefix_limits[LimitClass::Connection as usize].is_unlimited());
    if prefix_connections_limited {
        reached.push((
            "prefix bans of class connection",
            stats.prefix_connection_bans,
        ));
    }
    if any_phase(phases, flags::ANSWERS) {
        reached.push((
            "verified sources passing a banned prefix",
            stats.verified_in_banned_prefix,
        ));
    }
    eprintln!(
        "  [{name}] prefix and TCP mechanisms: {reached:?}; prefix bans by length {:?}",
        stats.prefix_bans_by_len
    );
    for (what, n) in reached {
        assert!(
            n > 0,
            "[{name}] the run never reached {what}: the generator misses it"
        );
    }
}

/// Runs one scenario; returns how many ban events of each `ban_event_kind` the kernel sent.
fn run_scenario(name: &'static str, index: u64, phases: Phases) -> [u64; 3] {
    let packets = env_u64("SIP_XDP_DIFF_PACKETS", DEFAULT_PACKETS);
    let seed = env_u64("SIP_XDP_DIFF_SEED", DEFAULT_SEED);
    let started = Instant::now();
    let run = drive(name, index, &phases, packets, Mutant::None);
    if !run.mismatches.is_empty() {
        run.fail();
    }

    let elapsed = started.elapsed();
    let k = run.kernel_counters();
    assert_eq!(k.total(), packets, "one counter per packet");
    let mut summary = String::new();
    for v in Verdict::ALL {
        for c in MethodClass::ALL {
            let n = run.model.packets(v, c);
            if n > 0 {
                let _ = write!(summary, " {}/{}={n}", v.name(), c.name());
            }
        }
    }
    eprintln!(
        "[{name}] {packets} packets, seed {seed:#x}, {:.1}s; bans {} would-bans {}; ban events {:?} (ban, would-ban, expired); sources {}; fragments {}\n  {summary}",
        elapsed.as_secs_f64(),
        run.model.event(EventCounter::BansIssued),
        run.model.event(EventCounter::WouldBans),
        run.events_by_kind,
        run.model.sources.len(),
        run.model.fragments.len(),
    );
    // The generator must actually reach the interesting paths.
    for v in [
        Verdict::Pass,
        Verdict::PassNotSip,
        Verdict::PassAllowlisted,
        Verdict::DropDenylisted,
        Verdict::DropRate,
        Verdict::DropBanned,
        Verdict::DropFragment,
    ] {
        assert!(k.by_verdict(v) > 0, "[{name}] no packet got {v:?}");
    }
    for c in MethodClass::ALL {
        assert!(
            k.by_class(c) > 0 || packets < DEFAULT_PACKETS,
            "[{name}] no packet classified {c:?}"
        );
    }
    // Evicted bans come back from BANS, protected sources run dry without a ban.
    for e in [EventCounter::BansRestored, EventCounter::ProtectedDrops] {
        assert!(
            k.event(e) > 0 || packets < DEFAULT_PACKETS,
            "[{name}] the run never reached {e:?}"
        );
    }
    eprintln!(
        "  bans restored after eviction {}, protected drops {}",
        k.event(EventCounter::BansRestored),
        k.event(EventCounter::ProtectedDrops)
    );
    assert!(
        run.banned_while_denied > 0 || packets < DEFAULT_PACKETS,
        "[{name}] no banned source was denylisted: banned-before-denylisted went untested"
    );
    if packets >= DEFAULT_PACKETS {
        prefix_coverage(name, &run.model, &run.stats, &phases);
    }
    run.events_by_kind
}

/// Enforcing, default-like flags, two SIP ports, /128 IPv6 sources.
#[test]
fn enforcing() {
    sip_xdp_tests::needs_root!();
    run_scenario("enforcing", 0, phases_enforcing());
}

/// No malformed drops, in-dialog and responses limited, unknown fragments dropped, /64 sources.
#[test]
fn permissive() {
    sip_xdp_tests::needs_root!();
    run_scenario("permissive", 1, phases_permissive());
}

/// Monitor mode, then enforcing (monitor-only bans escalate), monitor again with a /48 mask,
/// then enforcing with capped bans (zero-length repeat bans, which expire at the next packet).
#[test]
fn monitor_flips() {
    sip_xdp_tests::needs_root!();
    let events = run_scenario("monitor_flips", 2, phases_monitor_flips());
    assert!(
        events[ban_event_kind::EXPIRED as usize] > 0
            || env_u64("SIP_XDP_DIFF_PACKETS", DEFAULT_PACKETS) < DEFAULT_PACKETS,
        "no ban expired during monitor_flips: the expiry path went untested"
    );
}

/// The model itself, on hand-made frames (no BPF needed).
#[test]
fn model_sanity() {
    let cfg = base_config();
    let src: IpAddr = "198.51.100.1".parse().unwrap();
    let dst = IpAddr::V4(V4_DST);
    let reg = Frame::sip(src, dst, &register("1", 1)).build();
    let mut m = Model::new(cfg);
    let now = 1_000 * SECOND_NS;
    for _ in 0..5 {
        assert_eq!(m.process(&reg, now).verdict, Verdict::Pass);
    }
    let o: Outcome = m.process(&reg, now);
    assert_eq!(
        (o.verdict, o.class, o.action),
        (Verdict::DropRate, MethodClass::Register, XDP_DROP)
    );
    assert_eq!(m.process(&reg, now).verdict, Verdict::DropBanned);
    let s = m.sources[&key_of(src)];
    assert_eq!((s.packets, s.dropped, s.strikes), (7, 2, 1));
    assert_eq!(
        s.banned_until_ns,
        now + 10 * HOUR_NS,
        "extended while active"
    );
    assert_eq!(s.ban_flags, ban_flags::EXPIRY_PENDING);
    let sent = std::mem::take(&mut m.ban_events);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].kind, sent[0].strikes), (ban_event_kind::BAN, 1));
    // The first packet after the (extended) ban reports its end once, then meets its bucket,
    // refilled by then.
    let later = s.banned_until_ns;
    assert_eq!(m.process(&reg, later).verdict, Verdict::Pass);
    assert_eq!(m.process(&reg, later).verdict, Verdict::Pass);
    let sent = std::mem::take(&mut m.ban_events);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let e = sent[0];
    assert_eq!(
        (e.kind, e.addr, e.limit_class, e.strikes),
        (
            ban_event_kind::EXPIRED,
            key_of(src),
            LimitClass::Register as u8,
            1
        )
    );
    assert_eq!(
        (e.banned_until_ns, e.duration_ns, e.now_ns),
        (later, 2 * HOUR_NS, later)
    );
    assert_eq!(m.sources[&key_of(src)].ban_flags, 0);
    // TCP to a SIP TCP port from the banned source: dropped on its flags alone.
    let syn = Frame::tcp(src, dst, 5061, tcp_flags::SYN, b"").build();
    let o = m.process(&syn, now);
    assert_eq!(
        (o.verdict, o.class),
        (Verdict::DropBanned, MethodClass::TcpSyn)
    );
    let other = Frame::tcp(src, dst, 443, tcp_flags::SYN, b"").build();
    assert_eq!(m.process(&other, now).class, MethodClass::NotSip);
}

/// The model alone reaches every prefix and TCP mechanism on the generated traffic of each
/// scenario (no BPF needed): a generator that stopped reaching one fails here first.
#[test]
fn model_reaches_every_prefix_mechanism() {
    let packets = env_u64("SIP_XDP_DIFF_MODEL_PACKETS", DEFAULT_PACKETS);
    for (name, index, phases) in [
        ("enforcing", 0, phases_enforcing()),
        ("permissive", 1, phases_permissive()),
        ("monitor_flips", 2, phases_monitor_flips()),
    ] {
        let (model, stats) = drive_model(index, &phases, packets);
        let mut summary = String::new();
        for v in Verdict::ALL {
            for c in MethodClass::ALL {
                let n = model.packets(v, c);
                if n > 0 {
                    let _ = write!(summary, " {}/{}={n}", v.name(), c.name());
                }
            }
        }
        eprintln!("[{name}] model alone, {packets} packets:{summary}");
        for v in [
            Verdict::Pass,
            Verdict::PassNotSip,
            Verdict::PassAllowlisted,
            Verdict::DropDenylisted,
            Verdict::DropRate,
            Verdict::DropBanned,
            Verdict::DropFragment,
            Verdict::DropPrefix,
        ] {
            let n: u64 = MethodClass::ALL.iter().map(|&c| model.packets(v, c)).sum();
            assert!(n > 0, "[{name}] no packet got {v:?} in the model");
        }
        for e in [EventCounter::BansRestored, EventCounter::ProtectedDrops] {
            assert!(
                model.event(e) > 0 || packets < DEFAULT_PACKETS,
                "[{name}] the model never reached {e:?}"
            );
        }
        for c in MethodClass::ALL {
            let n: u64 = Verdict::ALL.iter().map(|&v| model.packets(v, c)).sum();
            assert!(
                n > 0 || packets < DEFAULT_PACKETS,
                "[{name}] no packet classified {c:?}"
            );
        }
        prefix_coverage(name, &model, &stats, &phases);
    }
}

/// Each of the model's deliberate bugs makes the comparison fail: the differential test can tell
/// a wrong model (or a kernel that differs from it the same way) from a right one.
#[test]
fn catches_planted_bugs() {
    sip_xdp_tests::needs_root!();
    let packets = env_u64("SIP_XDP_DIFF_PACKETS", DEFAULT_PACKETS).min(60_000);
    for mutant in [
        Mutant::ExtendFromRegister,
        Mutant::PrefixBanIgnoresAllowlist,
        Mutant::PrefixBansDoNotEscalate,
    ] {
        let run = drive("planted_bug", 0, &phases_enforcing(), packets, mutant);
        assert!(
            !run.mismatches.is_empty(),
            "{mutant:?} planted in the model went unnoticed in {packets} packets"
        );
        eprintln!(
            "{mutant:?} caught:\n{}",
            run.mismatches[0]
                .lines()
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
