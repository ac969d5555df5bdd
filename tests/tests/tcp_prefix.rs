//! Packet-level tests (BPF_PROG_TEST_RUN) of issue 13's parts A, B and C in the real program:
//! bans decided before the payload is read, SIP over TCP and TLS (SYN limits, every ban on
//! every transport) and prefix aggregates (/24, /64, /48 buckets and bans). Each crafts frames,
//! runs them through the verified program and checks the action, the counters, the map entries
//! (`SOURCES`, `PREFIXES`, `PREFIX_BANS`) and the ban events read back from the kernel.
use std::net::IpAddr;

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use ipnet::IpNet;
use sip_xdp::maps::addr_key;
use sip_xdp_common::{
    BAN_CLASS_AUTH, BanEvent, Config, DurableBan, EventCounter, LimitClass, MethodClass,
    PREFIX_LEVEL_IPV4, PrefixKey, RateLimit, SourceKey, SourceState, Verdict, VerifiedSource,
    ban_event_kind, ban_flags, flags, map_names,
};
use sip_xdp_tests::{
    harness::{Datapath, XDP_DROP, XDP_PASS},
    model::{Model, prefix_key},
    packet::{
        Frame, Ipv6Ext, SYN_OPTIONS, register, request, stream_request, tcp_flags, tls_client_hello,
    },
};

const SECOND_NS: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3600 * SECOND_NS;
const SERVER: &str = "203.0.113.1";
const SERVER6: &str = "2001:db8::1";
/// Per-source burst of every class in [`config`]; the prefixes' is [`PREFIX_BURST`].
const SOURCE_BURST: u64 = 4;
const PREFIX_BURST: u64 = 10;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn slow(burst: u64) -> RateLimit {
    RateLimit::per_interval(1, HOUR_NS, burst)
}

/// Buckets that never refill during a test (one token per hour): every class `SOURCE_BURST`
/// per source, `PREFIX_BURST` per prefix (keep-alives unlimited there, as by default).
fn config() -> Config {
    let mut cfg = Config::DEFAULT;
    cfg.limits = [slow(SOURCE_BURST); LimitClass::COUNT];
    cfg.verified_limits = [slow(10 * SOURCE_BURST); LimitClass::COUNT];
    cfg.prefix_limits = [slow(PREFIX_BURST); LimitClass::COUNT];
    cfg.prefix_limits[LimitClass::KeepAlive as usize] = RateLimit::UNLIMITED;
    cfg.ban_base_ns = HOUR_NS;
    cfg.ban_max_ns = 8 * HOUR_NS;
    cfg.ban_extend_ns = 2 * HOUR_NS;
    cfg
}

/// The program with its maps, the ring buffer of ban events, and second handles on the prefix
/// tables.
struct Rig {
    dp: Datapath,
    events: RingBuf<MapData>,
    prefixes: BpfHashMap<MapData, PrefixKey, SourceState>,
    prefix_bans: BpfHashMap<MapData, PrefixKey, DurableBan>,
}

fn rig(cfg: &Config) -> Rig {
    let mut dp = Datapath::load(cfg).expect("load the XDP program");
    let events = RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap();
    let prefixes = BpfHashMap::try_from(
        dp.open_map(map_names::PREFIXES)
            .expect("the program declares PREFIXES"),
    )
    .unwrap();
    let prefix_bans = BpfHashMap::try_from(
        dp.open_map(map_names::PREFIX_BANS)
            .expect("the program declares PREFIX_BANS"),
    )
    .unwrap();
    Rig {
        dp,
        events,
        prefixes,
        prefix_bans,
    }
}

impl Rig {
    /// Runs `frame` once and checks its action and that exactly the (verdict, class) counter
    /// moved, by one.
    #[track_caller]
    fn expect(&mut self, frame: &[u8], action: u32, verdict: Verdict, class: MethodClass) {
        let before = self.dp.maps.counters().unwrap();
        let got = self.dp.run(frame).unwrap();
        let after = self.dp.maps.counters().unwrap();
        assert_eq!(
            (
                got,
                after.packets(verdict, class) - before.packets(verdict, class)
            ),
            (action, 1),
            "action and counter ({verdict:?}, {class:?}) for this frame"
        );
        assert_eq!(after.total() - before.total(), 1, "one counter per packet");
    }

    fn event(&self, counter: EventCounter) -> u64 {
        self.dp.maps.counters().unwrap().event(counter)
    }

    fn packets(&self, verdict: Verdict, class: MethodClass) -> u64 {
        self.dp.maps.counters().unwrap().packets(verdict, class)
    }

    fn events(&mut self) -> Vec<BanEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(item.len(), size_of::<BanEvent>());
            // SAFETY: the program submits whole `BanEvent`s (size checked above).
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
        out
    }

    fn source(&self, src: &str) -> Option<SourceState> {
        self.dp.maps.source(addr_key(ip(src))).unwrap()
    }

    fn prefix(&self, key: &PrefixKey) -> Option<SourceState> {
        self.prefixes.get(key, 0).ok()
    }

    fn prefix_ban(&self, key: &PrefixKey) -> Option<DurableBan> {
        self.prefix_bans.get(key, 0).ok()
    }

    /// Runs `frame` until the program drops it as `verdict`; returns how many passed first.
    fn until(&mut self, frame: &[u8], verdict: Verdict, limit: usize) -> usize {
        for passed in 0..limit {
            let before = self.dp.maps.counters().unwrap().by_verdict(verdict);
            self.dp.run(frame).unwrap();
            if self.dp.maps.counters().unwrap().by_verdict(verdict) > before {
                return passed;
            }
        }
        panic!("no {verdict:?} within {limit} packets");
    }
}

fn server_of(src: &str) -> &'static str {
    if src.contains(':') { SERVER6 } else { SERVER }
}

fn udp(src: &str, payload: &[u8]) -> Vec<u8> {
    Frame::sip(ip(src), ip(server_of(src)), payload).build()
}

fn reg(src: &str) -> Vec<u8> {
    udp(src, &register("100", 1))
}

fn tcp(src: &str, port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    Frame::tcp(ip(src), ip(server_of(src)), port, flags, payload).build()
}

fn syn(src: &str, port: u16) -> Vec<u8> {
    Frame::tcp(ip(src), ip(server_of(src)), port, tcp_flags::SYN, b"")
        .tcp_options(&SYN_OPTIONS)
        .build()
}

/// The class the program counts a TCP segment with `flags` under when it is dropped on its
/// addresses alone.
fn flags_class(flags: u8) -> MethodClass {
    if flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0 {
        MethodClass::TcpSyn
    } else {
        MethodClass::Tcp
    }
}

fn key24(cfg: &Config, src: &str) -> PrefixKey {
    prefix_key(cfg, &addr_key(ip(src)), PREFIX_LEVEL_IPV4)
}

#[test]
fn a_syn_flood_from_one_source_is_banned_with_class_connection() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    let src = "198.51.100.10";
    for _ in 0..SOURCE_BURST {
        r.expect(
            &syn(src, 5060),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::TcpSyn,
        );
    }
    r.expect(
        &syn(src, 5061),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::TcpSyn,
    );
    let state = r.source(src).expect("the flooder is tracked");
    assert_eq!(state.ban_class, LimitClass::Connection as u8);
    assert_eq!((state.strikes, state.packets, state.dropped), (1, 5, 1));
    let events = r.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0].kind,
            events[0].addr,
            events[0].limit_class,
            events[0].prefix_len
        ),
        (
            ban_event_kind::BAN,
            addr_key(ip(src)),
            LimitClass::Connection as u8,
            0
        )
    );
    // The next SYN is dropped on its addresses, counted as a SYN.
    r.expect(
        &syn(src, 5060),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::TcpSyn,
    );
    // Its connection bucket stays dry, so the flood keeps the ban going: extended.
    let extended = r.source(src).unwrap();
    assert!(
        extended.banned_until_ns > state.banned_until_ns + HOUR_NS / 2,
        "a SYN flood extends its connection ban: {} then {}",
        state.banned_until_ns,
        extended.banned_until_ns
    );
    // Another source's connections are not concerned.
    r.expect(
        &syn("198.51.100.11", 5060),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::TcpSyn,
    );
}

#[test]
fn a_source_banned_on_udp_is_dropped_on_every_tcp_port_and_flag() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    for src in ["198.51.100.20", "2001:db8:20::1"] {
        assert_eq!(
            r.until(&reg(src), Verdict::DropRate, 10),
            SOURCE_BURST as usize
        );
        assert_eq!(r.source(src).unwrap().ban_class, LimitClass::Register as u8);
        for port in [5060, 5061] {
            for (name, flags) in tcp_flags::COMBINATIONS {
                let payloads: [&[u8]; 3] = [
                    b"",
                    &stream_request("REGISTER", "sip:100@example.com", 1, "TCP"),
                    &tls_client_hello(120),
                ];
                for payload in payloads {
                    let before = r.packets(Verdict::DropBanned, flags_class(flags));
                    let got = r.dp.run(&tcp(src, port, flags, payload)).unwrap();
                    assert_eq!(got, XDP_DROP, "{src} {name} to {port}");
                    assert_eq!(
                        r.packets(Verdict::DropBanned, flags_class(flags)),
                        before + 1,
                        "{src} {name} to {port} counts as {:?}",
                        flags_class(flags)
                    );
                }
            }
        }
        // And its UDP, whatever the payload: unread.
        r.expect(
            &udp(src, b"\r\n\r\n"),
            XDP_DROP,
            Verdict::DropBanned,
            MethodClass::Unread,
        );
    }
    // TCP to other ports is never touched.
    r.expect(
        &tcp("198.51.100.20", 443, tcp_flags::SYN, b""),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    // Nor to a SIP UDP port that is not a SIP TCP port.
    let mut cfg = cfg;
    cfg.tcp_ports = [5061, 0, 0, 0, 0, 0, 0, 0];
    r.dp.maps.write_config(&cfg).unwrap();
    r.expect(
        &tcp("198.51.100.20", 5060, tcp_flags::SYN, b""),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    r.expect(
        &tcp("198.51.100.20", 5061, tcp_flags::SYN, b""),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::TcpSyn,
    );
}

#[test]
fn an_auth_ban_holds_on_tcp_and_is_extended_from_registers_bucket() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    let src = "198.51.100.30";
    r.expect(&reg(src), XDP_PASS, Verdict::Pass, MethodClass::Register);
    // An auth ban as the egress program writes one (origin auth, failure kind rechallenged).
    let mut state = r.source(src).unwrap();
    state.banned_until_ns = sip_xdp::time::monotonic_now_ns() + HOUR_NS;
    state.ban_class = BAN_CLASS_AUTH | 2;
    state.strikes = 1;
    r.dp.maps.set_source(addr_key(ip(src)), &state).unwrap();
    // Its SYNs, TLS records and REGISTERs over TCP are dropped; each draws from the REGISTER
    // bucket (the ban's own), which has SOURCE_BURST - 1 tokens left.
    let tls = tcp(
        src,
        5061,
        tcp_flags::PSH | tcp_flags::ACK,
        &tls_client_hello(64),
    );
    for i in 0..SOURCE_BURST - 1 {
        let frame = if i % 2 == 0 {
            syn(src, 5061)
        } else {
            tls.clone()
        };
        assert_eq!(r.dp.run(&frame).unwrap(), XDP_DROP);
        assert_eq!(
            r.source(src).unwrap().banned_until_ns,
            state.banned_until_ns,
            "a conforming packet does not extend the ban"
        );
    }
    r.expect(&tls, XDP_DROP, Verdict::DropBanned, MethodClass::Tcp);
    let after = r.source(src).unwrap();
    assert!(
        after.banned_until_ns > state.banned_until_ns,
        "REGISTER's bucket ran dry: the ban is extended"
    );
    assert_eq!(after.tat_ns[LimitClass::Connection as usize], 0);
}

#[test]
fn a_register_over_tcp_draws_from_the_register_bucket() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    let src = "198.51.100.40";
    let over_tcp = tcp(
        src,
        5060,
        tcp_flags::PSH | tcp_flags::ACK,
        &stream_request("REGISTER", "sip:100@example.com", 1, "TCP"),
    );
    r.expect(&over_tcp, XDP_PASS, Verdict::Pass, MethodClass::Register);
    let state = r.source(src).expect("a REGISTER makes state");
    assert!(state.tat_ns[LimitClass::Register as usize] > 0);
    assert_eq!(state.tat_ns[LimitClass::Connection as usize], 0);
    // Behind options and over IPv4 options and a VLAN, and over UDP: one bucket.
    let mut optioned = Frame::tcp(
        ip(src),
        ip(SERVER),
        5061,
        tcp_flags::ACK,
        &stream_request("REGISTER", "sip:100@example.com", 2, "TLS"),
    )
    .tcp_options(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2])
    .vlan(7);
    optioned.ipv4_options = vec![0x94, 4, 0, 0];
    r.expect(
        &optioned.build(),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    r.expect(&reg(src), XDP_PASS, Verdict::Pass, MethodClass::Register);
    r.expect(&over_tcp, XDP_PASS, Verdict::Pass, MethodClass::Register);
    r.expect(
        &over_tcp,
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    assert_eq!(r.source(src).unwrap().ban_class, LimitClass::Register as u8);
    // A segment that starts no SIP message (TLS, an empty ACK, a continuation, a lying data
    // offset) is `tcp`: it passes an unbanned source and makes no state.
    let other = "198.51.100.41";
    let shapes = [
        tcp(
            other,
            5061,
            tcp_flags::PSH | tcp_flags::ACK,
            &tls_client_hello(200),
        ),
        tcp(other, 5060, tcp_flags::ACK, b""),
        tcp(
            other,
            5060,
            tcp_flags::PSH | tcp_flags::ACK,
            b"Via: SIP/2.0/TCP x\r\n\r\n",
        ),
        Frame::tcp(
            ip(other),
            ip(SERVER),
            5060,
            tcp_flags::PSH | tcp_flags::ACK,
            &register("100", 3),
        )
        .data_offset(7)
        .build(),
        tcp(other, 5060, tcp_flags::RST, b""),
        tcp(other, 5060, tcp_flags::SYN | tcp_flags::ACK, b""),
    ];
    for frame in shapes {
        r.expect(&frame, XDP_PASS, Verdict::Pass, MethodClass::Tcp);
    }
    assert!(r.source(other).is_none());
    // A response over TCP is counted as one.
    r.expect(
        &tcp(
            other,
            5060,
            tcp_flags::PSH | tcp_flags::ACK,
            &sip_xdp_tests::packet::response(200, "OK"),
        ),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Response,
    );
    // CR/LF in front of a request (keep-alive pings a stream reader skips) does not hide it:
    // up to 16 bytes of it are skipped; a segment with more is not read as a request.
    let pinger = "198.51.100.42";
    for (leading, class) in [
        (2, MethodClass::Register),
        (4, MethodClass::Register),
        (16, MethodClass::Register),
        (17, MethodClass::Tcp),
    ] {
        let mut payload = b"\r\n".repeat(leading / 2);
        if leading % 2 == 1 {
            payload.push(b'\n');
        }
        payload.extend_from_slice(&stream_request("REGISTER", "sip:100@example.com", 9, "TCP"));
        r.expect(
            &tcp(pinger, 5060, tcp_flags::PSH | tcp_flags::ACK, &payload),
            XDP_PASS,
            Verdict::Pass,
            class,
        );
    }
    // Three REGISTERs and the unread segment, all counted on the source.
    assert_eq!(
        r.source(pinger).expect("its REGISTERs make state").packets,
        4
    );
}

#[test]
fn a_spread_flood_below_per_source_limits_bans_its_24() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    // PREFIX_BURST sources of one /24, one REGISTER each: far below their own limits.
    for i in 0..PREFIX_BURST {
        let src = format!("198.51.100.{}", 100 + i);
        r.expect(&reg(&src), XDP_PASS, Verdict::Pass, MethodClass::Register);
    }
    let key = key24(&cfg, "198.51.100.1");
    assert_eq!(
        r.prefix(&key).expect("the /24 is tracked").packets,
        PREFIX_BURST
    );
    r.expect(
        &reg("198.51.100.199"),
        XDP_DROP,
        Verdict::DropPrefix,
        MethodClass::Register,
    );
    // The prefixes are drawn after the source's own state is made: the new source keeps its
    // entry, and the drop counts against the prefix, not the source.
    let newcomer = r
        .source("198.51.100.199")
        .expect("the new source is tracked");
    assert_eq!((newcomer.packets, newcomer.dropped), (1, 0));
    let state = r.prefix(&key).unwrap();
    assert_eq!(
        (state.strikes, state.ban_class, state.dropped),
        (1, LimitClass::Register as u8, 1)
    );
    assert_eq!(state.verified_until_ns, 0);
    let record = r
        .prefix_ban(&key)
        .expect("the ban is durable in PREFIX_BANS");
    assert_eq!(record, DurableBan::of(&state));
    assert_eq!(r.event(EventCounter::PrefixBans), 1);
    assert_eq!(r.event(EventCounter::BansIssued), 1);
    let events = r.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = events[0];
    assert_eq!(
        (e.kind, e.addr, e.prefix_len, e.limit_class, e.port),
        (
            ban_event_kind::BAN,
            sip_xdp_common::ipv4_mapped([198, 51, 100, 0]),
            120,
            LimitClass::Register as u8,
            0
        )
    );
    assert_eq!(e.banned_until_ns, state.banned_until_ns);
    // Now the whole /24 is dropped before its payload is read, on every transport.
    r.expect(
        &reg("198.51.100.100"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    r.expect(
        &syn("198.51.100.250", 5061),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::TcpSyn,
    );
    r.expect(
        &tcp("198.51.100.251", 5060, tcp_flags::ACK, b""),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Tcp,
    );
    assert_eq!(r.event(EventCounter::PrefixBannedDrops), 3);
    assert_eq!(r.prefix(&key).unwrap().dropped, 4);
    // Banned beats denylisted, for prefixes too.
    r.dp.maps.deny(net("198.51.100.252/32"), 0).unwrap();
    r.expect(
        &reg("198.51.100.252"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    // The neighbouring /24 is not concerned.
    r.expect(
        &reg("203.0.113.7"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
}

#[test]
fn allowlisted_protected_and_verified_sources_pass_their_banned_prefix() {
    sip_xdp_tests::needs_root!();
    let mut cfg = config();
    cfg.flags |= flags::ANSWERS;
    cfg.admission = RateLimit::UNLIMITED;
    let mut r = rig(&cfg);
    let (allowed, protected, verified) = ("198.51.100.60", "198.51.100.61", "198.51.100.62");
    r.dp.maps.allow(net(&format!("{allowed}/32"))).unwrap();
    r.dp.maps.protect(net(&format!("{protected}/32"))).unwrap();
    let mut table: BpfHashMap<MapData, SourceKey, VerifiedSource> =
        BpfHashMap::try_from(r.dp.open_map(map_names::VERIFIED).unwrap()).unwrap();
    let now = sip_xdp::time::monotonic_now_ns();
    table
        .insert(
            SourceKey {
                addr: addr_key(ip(verified)),
            },
            VerifiedSource {
                verified_until_ns: now + HOUR_NS,
                verified_since_ns: now,
                successes: 1,
            },
            0,
        )
        .unwrap();
    for i in 0..=PREFIX_BURST {
        r.dp.run(&reg(&format!("198.51.100.{}", 100 + i))).unwrap();
    }
    let key = key24(&cfg, allowed);
    assert_eq!(r.prefix(&key).unwrap().strikes, 1, "the /24 is banned");
    let drawn = r.prefix(&key).unwrap().packets;
    r.expect(
        &reg(allowed),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::Register,
    );
    r.expect(
        &syn(allowed, 5060),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::TcpSyn,
    );
    // The verified source draws from its own (looser) buckets, never from its prefix's.
    for _ in 0..2 * PREFIX_BURST {
        r.expect(
            &reg(verified),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
    }
    assert!(r.source(verified).unwrap().verified_until_ns > now);
    assert_eq!(r.prefix(&key).unwrap().packets, drawn);
    // The protected source meets the dry prefix bucket and passes, neither banned nor counted
    // as a protected drop.
    r.expect(
        &reg(protected),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let after = r.prefix(&key).unwrap();
    assert_eq!(after.packets, drawn + 1);
    assert_eq!(after.strikes, 1);
    assert_eq!(r.event(EventCounter::ProtectedDrops), 0);
    assert_eq!(r.event(EventCounter::PrefixBans), 1);
    // An ordinary neighbour is dropped.
    r.expect(
        &reg("198.51.100.63"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    // A verified source passes its banned prefix even untracked; its packet brings an evicted
    // prefix back from PREFIX_BANS like any other (only a tracked verified source skips the
    // lookups), and is exempt from the ban it holds.
    r.dp.maps.forget_tracked(addr_key(ip(verified))).unwrap();
    r.prefixes.remove(&key).unwrap();
    let restores = r.event(EventCounter::BansRestored);
    r.expect(
        &reg(verified),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(r.event(EventCounter::BansRestored), restores + 1);
    assert!(r.prefix(&key).is_some_and(|p| p.banned_until_ns > 0));
    r.expect(
        &reg("198.51.100.64"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    assert_eq!(r.event(EventCounter::BansRestored), restores + 1);
}

#[test]
fn a_128_rotation_inside_a_64_is_banned_as_the_64() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    // A new /128 of 2001:db8:64:1::/64 for every REGISTER.
    let mut dropped_at = None;
    for i in 1..=3 * PREFIX_BURST {
        let src = format!("2001:db8:64:1:{:x}::{:x}", (i * 7919) & 0xffff, i);
        let before = r.packets(Verdict::DropPrefix, MethodClass::Register);
        r.dp.run(&reg(&src)).unwrap();
        if r.packets(Verdict::DropPrefix, MethodClass::Register) > before {
            dropped_at = Some(i);
            break;
        }
    }
    assert_eq!(dropped_at, Some(PREFIX_BURST + 1));
    let events = r.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].prefix_len, 64);
    assert_eq!(
        events[0].addr,
        addr_key(ip("2001:db8:64:1::")),
        "the event names the masked /64"
    );
    let key64 = prefix_key(&cfg, &addr_key(ip("2001:db8:64:1::5")), 1);
    assert!(r.prefix_ban(&key64).is_some());
    // The /48 drew what the /64 let through, and is not banned.
    let key48 = prefix_key(&cfg, &addr_key(ip("2001:db8:64:1::5")), 2);
    assert_eq!(key48.prefix_len, 48);
    let state48 = r.prefix(&key48).unwrap();
    assert_eq!((state48.packets, state48.strikes), (PREFIX_BURST, 0));
    // Every /128 of the /64 is dropped unread; the first packet of another /64 of the /48
    // runs the /48 dry (its own /64 draws one), which bans the /48.
    r.expect(
        &reg("2001:db8:64:1:ffff::1"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    r.expect(
        &reg("2001:db8:64:2::1"),
        XDP_DROP,
        Verdict::DropPrefix,
        MethodClass::Register,
    );
    let events = r.events();
    assert_eq!((events.len(), events[0].prefix_len), (1, 48));
    r.expect(
        &reg("2001:db8:64:3::1"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    // Behind extension headers too.
    let mut behind = Frame::sip(ip("2001:db8:64:4::1"), ip(SERVER6), &register("1", 1));
    behind.ipv6_ext = vec![
        Ipv6Ext::HopByHop { len_units: 0 },
        Ipv6Ext::DestinationOptions { len_units: 1 },
    ];
    r.expect(
        &behind.build(),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
}

#[test]
fn a_banned_sources_datagram_is_dropped_before_its_payload_is_read() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    let src = "198.51.100.70";
    // Garbage from an unbanned source is malformed...
    let garbage = udp(
        src,
        b"\x00\x01\x02\x03 not SIP at all, binary junk \xff\xfe",
    );
    r.expect(
        &garbage,
        XDP_DROP,
        Verdict::DropMalformed,
        MethodClass::Malformed,
    );
    r.until(&reg(src), Verdict::DropRate, 10);
    // ...and from a banned one it is never read: unread, not malformed.
    let malformed_before = r.packets(Verdict::DropMalformed, MethodClass::Malformed);
    for frame in [
        garbage.clone(),
        udp(src, b""),
        udp(src, &request("OPTIONS", "sip:x", 1)),
    ] {
        r.expect(&frame, XDP_DROP, Verdict::DropBanned, MethodClass::Unread);
    }
    assert_eq!(
        r.packets(Verdict::DropMalformed, MethodClass::Malformed),
        malformed_before
    );
    // Its first fragment too, and the follower shares the first's fate.
    let first = Frame::sip(ip(src), ip(SERVER), &register("1", 1))
        .fragment(0, true, 0x4242)
        .build();
    r.expect(&first, XDP_DROP, Verdict::DropBanned, MethodClass::Unread);
    let follower = Frame::sip(ip(src), ip(SERVER), b"more of it")
        .fragment(20, false, 0x4242)
        .build();
    r.expect(
        &follower,
        XDP_DROP,
        Verdict::DropFragment,
        MethodClass::Fragment,
    );
    // The same for TCP: a banned source's first fragment, its follower.
    let first = Frame::tcp(
        ip(src),
        ip(SERVER),
        5060,
        tcp_flags::PSH | tcp_flags::ACK,
        &stream_request("REGISTER", "sip:1@x", 1, "TCP"),
    )
    .fragment(0, true, 0x4343)
    .build();
    r.expect(&first, XDP_DROP, Verdict::DropBanned, MethodClass::Tcp);
    let follower = Frame::tcp(ip(src), ip(SERVER), 5060, tcp_flags::ACK, b"more")
        .fragment(30, false, 0x4343)
        .build();
    r.expect(
        &follower,
        XDP_DROP,
        Verdict::DropFragment,
        MethodClass::Fragment,
    );
    // An unbanned source's TCP first fragment passes, and its follower with it.
    let ok = "198.51.100.71";
    let first = Frame::tcp(
        ip(ok),
        ip(SERVER),
        5060,
        tcp_flags::PSH | tcp_flags::ACK,
        &stream_request("REGISTER", "sip:1@x", 1, "TCP"),
    )
    .fragment(0, true, 0x4444)
    .build();
    r.expect(&first, XDP_PASS, Verdict::Pass, MethodClass::Register);
    let follower = Frame::tcp(ip(ok), ip(SERVER), 5060, tcp_flags::ACK, b"more")
        .fragment(30, false, 0x4444)
        .build();
    r.expect(&follower, XDP_PASS, Verdict::Pass, MethodClass::Fragment);
}

#[test]
fn tcp_headers_the_parser_cannot_read_fail_closed() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    let (c6, s6) = (ip("2001:db8:99::1"), ip(SERVER6));
    // A first fragment holding 12 bytes of its TCP header: its ports show 5061.
    let cut = |dst_port: u16, first: bool| {
        let mut f = Frame::tcp(c6, s6, dst_port, tcp_flags::SYN, b"");
        if first {
            f = f.fragment(0, true, 77);
        }
        f.omit_l4_header = true;
        let mut header = 40_000u16.to_be_bytes().to_vec();
        header.extend_from_slice(&dst_port.to_be_bytes());
        header.resize(12, 0);
        f.payload = header;
        f.build()
    };
    r.expect(
        &cut(5061, true),
        XDP_DROP,
        Verdict::DropUnparsed,
        MethodClass::Unparsed,
    );
    r.expect(
        &cut(443, true),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    r.expect(
        &cut(5061, false),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    // An IPv4-mapped IPv6 source.
    r.expect(
        &tcp("::ffff:198.51.100.1", 5060, tcp_flags::SYN, b""),
        XDP_DROP,
        Verdict::DropUnparsed,
        MethodClass::Unparsed,
    );
}

#[test]
fn prefix_bans_survive_eviction_expire_and_escalate() {
    sip_xdp_tests::needs_root!();
    let mut cfg = config();
    cfg.ban_factor = 3;
    // Short, so a record can be aged past it without reaching back before boot.
    cfg.strike_decay_ns = 60 * SECOND_NS;
    let mut r = rig(&cfg);
    for i in 0..=PREFIX_BURST {
        r.dp.run(&reg(&format!("198.51.100.{}", 100 + i))).unwrap();
    }
    let key = key24(&cfg, "198.51.100.1");
    let banned = r.prefix(&key).unwrap();
    assert_eq!(banned.strikes, 1);
    r.events();
    // Evicted from PREFIXES (as the LRU would): the ban comes back from PREFIX_BANS.
    r.prefixes.remove(&key).unwrap();
    r.expect(
        &reg("198.51.100.5"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    assert_eq!(r.event(EventCounter::BansRestored), 1);
    let restored = r.prefix(&key).unwrap();
    assert_eq!(
        (restored.strikes, restored.banned_until_ns, restored.packets),
        (1, banned.banned_until_ns, 1)
    );
    // Its end moved into the past (as time would): the prefix comes back unbanned, the first
    // packet to draw reports the end, and the next ban escalates.
    let now = sip_xdp::time::monotonic_now_ns();
    let mut record = r.prefix_ban(&key).unwrap();
    record.banned_until_ns = now - SECOND_NS;
    r.prefix_bans.insert(key, record, 0).unwrap();
    r.prefixes.remove(&key).unwrap();
    r.expect(
        &reg("198.51.100.6"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let events = r.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].kind, events[0].prefix_len, events[0].strikes),
        (ban_event_kind::EXPIRED, 120, 1)
    );
    assert_eq!(
        r.prefix_ban(&key).unwrap().ban_flags & ban_flags::EXPIRY_PENDING,
        0
    );
    for i in 1..PREFIX_BURST {
        r.dp.run(&reg(&format!("198.51.100.{}", 150 + i))).unwrap();
    }
    r.expect(
        &reg("198.51.100.200"),
        XDP_DROP,
        Verdict::DropPrefix,
        MethodClass::Register,
    );
    let again = r.prefix(&key).unwrap();
    assert_eq!((again.strikes, again.ban_duration_ns), (2, 3 * HOUR_NS));
    assert_eq!(r.events()[0].strikes, 2);
    // Decayed (quiet for longer than strike_decay): the record goes, nothing is restored.
    let mut record = r.prefix_ban(&key).unwrap();
    record.banned_until_ns = now - cfg.strike_decay_ns - 10 * SECOND_NS;
    r.prefix_bans.insert(key, record, 0).unwrap();
    r.prefixes.remove(&key).unwrap();
    let restores = r.event(EventCounter::BansRestored);
    r.expect(
        &reg("198.51.100.201"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert!(r.prefix_ban(&key).is_none(), "a decayed record is removed");
    assert_eq!(r.event(EventCounter::BansRestored), restores);
    assert_eq!(r.prefix(&key).unwrap().strikes, 0);
}

#[test]
fn monitor_mode_records_prefix_bans_and_drops_nothing() {
    sip_xdp_tests::needs_root!();
    let mut cfg = config();
    cfg.flags |= flags::MONITOR;
    let mut r = rig(&cfg);
    for i in 0..PREFIX_BURST {
        r.dp.run(&reg(&format!("198.51.100.{}", 100 + i))).unwrap();
    }
    r.expect(
        &reg("198.51.100.199"),
        XDP_PASS,
        Verdict::DropPrefix,
        MethodClass::Register,
    );
    let events = r.events();
    assert_eq!(
        (events.len(), events[0].kind, events[0].prefix_len),
        (1, ban_event_kind::WOULD_BAN, 120)
    );
    assert_eq!(r.event(EventCounter::WouldBans), 1);
    assert_eq!(r.event(EventCounter::PrefixBans), 1);
    r.expect(
        &reg("198.51.100.1"),
        XDP_PASS,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    // Enforcing again: a monitor-only ban is not enforced.
    cfg.flags &= !flags::MONITOR;
    r.dp.maps.write_config(&cfg).unwrap();
    assert_eq!(
        r.prefix(&key24(&cfg, "198.51.100.1")).unwrap().ban_flags & ban_flags::MONITOR_ONLY,
        ban_flags::MONITOR_ONLY
    );
    r.expect(
        &syn("198.51.100.2", 5060),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::TcpSyn,
    );
}

/// The model and the program agree on a spread flood mixing SYNs, REGISTERs over TLS and UDP
/// and TLS records: the same frames through both, compared packet by packet, then the /24's
/// state (the differential test does this at scale, on generated traffic).
#[test]
fn the_model_agrees_on_a_spread_flood_over_tcp_and_udp() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    let mut m = Model::new(cfg);
    let now = sip_xdp::time::monotonic_now_ns();
    let mut frames = Vec::new();
    for i in 0..40u32 {
        let src = format!("198.51.100.{}", 10 + i % 20);
        frames.push(match i % 4 {
            0 => syn(&src, 5060),
            1 => tcp(
                &src,
                5061,
                tcp_flags::PSH | tcp_flags::ACK,
                &stream_request("REGISTER", "sip:1@x", i, "TLS"),
            ),
            2 => reg(&src),
            _ => tcp(&src, 5060, tcp_flags::ACK, &tls_client_hello(50)),
        });
    }
    for (i, frame) in frames.iter().enumerate() {
        let expected = m.process(frame, now);
        let before = r.packets(expected.verdict, expected.class);
        let got = r.dp.run(frame).unwrap();
        assert_eq!(
            (got, r.packets(expected.verdict, expected.class) - before),
            (expected.action, 1),
            "frame #{i}: the model says {expected:?}"
        );
    }
    let key = key24(&cfg, "198.51.100.1");
    let (k, mm) = (r.prefix(&key).unwrap(), *m.prefixes.peek(&key).unwrap());
    assert_eq!(
        (k.packets, k.dropped, k.strikes, k.ban_class),
        (mm.packets, mm.dropped, mm.strikes, mm.ban_class)
    );
    assert_eq!(mm.strikes, 1, "the REGISTERs ran the /24 dry");
}

#[test]
fn a_prefix_ban_user_space_writes_is_enforced_before_the_payload() {
    sip_xdp_tests::needs_root!();
    let cfg = config();
    let mut r = rig(&cfg);
    // No prefix was ever banned: the program skips the early prefix lookups.
    assert_eq!(r.dp.maps.prefix_bans_until().unwrap(), 0);
    r.expect(
        &reg("198.51.100.70"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    // A saved prefix ban put back (as `attach` restores the state file): the record alone,
    // written through the library, which raises the latest prefix-ban end with it.
    let key = key24(&cfg, "198.51.100.1");
    let until = sip_xdp::time::monotonic_now_ns() + HOUR_NS;
    let record = DurableBan {
        banned_until_ns: until,
        ban_duration_ns: HOUR_NS,
        strikes: 1,
        ban_class: LimitClass::Register as u8,
        ban_flags: ban_flags::EXPIRY_PENDING,
        _pad: [0; 2],
    };
    // (At attach the prefix buckets are new, as here after the forget.)
    r.dp.maps.forget_prefix_tracked(&key).unwrap();
    r.dp.maps.set_prefix_ban(&key, &record).unwrap();
    assert_eq!(r.dp.maps.prefix_bans_until().unwrap(), until);
    // A new source of the /24 and the tracked one are both dropped on their addresses.
    for src in ["198.51.100.71", "198.51.100.70"] {
        r.expect(
            &reg(src),
            XDP_DROP,
            Verdict::DropBanned,
            MethodClass::Unread,
        );
    }
    assert_eq!(r.event(EventCounter::BansRestored), 1);
    r.dp.maps.raise_prefix_bans_until(until - 1).unwrap();
    assert_eq!(
        r.dp.maps.prefix_bans_until().unwrap(),
        until,
        "never lowered"
    );
}
