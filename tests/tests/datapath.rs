//! Packet-level tests of the real XDP program through BPF_PROG_TEST_RUN: each crafts a frame,
//! runs it through the verified program, and checks the verdict, the counters and the map
//! entries read back from the kernel.
use std::{net::IpAddr, path::PathBuf, thread::sleep, time::Duration};

use aya::maps::{Array, MapData, RingBuf};
use ipnet::IpNet;
use sip_xdp::{
    control::{Control, ListKind},
    loader::{self, PinDir},
    maps::addr_key,
};
use sip_xdp_common::{
    BanEvent, Config, EventCounter, LimitClass, MethodClass, RateLimit, Verdict, ban_event_kind,
    ban_flags, flags, map_names,
};
use sip_xdp_tests::{
    harness::{Datapath, XDP_DROP, XDP_PASS},
    packet::*,
};

const MS: u64 = 1_000_000;
const HOUR_NS: u64 = 3600 * 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const CLIENT: &str = "198.51.100.10";
const CLIENT2: &str = "198.51.100.11";
const SERVER: &str = "203.0.113.1";
const CLIENT6: &str = "2001:db8:1::10";
const SERVER6: &str = "2001:db8::1";

fn sip_from(src: &str, payload: &[u8]) -> Vec<u8> {
    let dst = if src.contains(':') { SERVER6 } else { SERVER };
    Frame::sip(ip(src), ip(dst), payload).build()
}

fn reg(src: &str) -> Vec<u8> {
    sip_from(src, &register("100", 1))
}

/// A config whose buckets never refill during a test (one token per hour), so verdicts do not
/// depend on how fast the test runs.
fn strict_config(register_burst: u64) -> Config {
    let mut cfg = Config::DEFAULT;
    let slow = |burst| RateLimit::per_interval(1, HOUR_NS, burst);
    cfg.limits = [slow(3); LimitClass::COUNT];
    cfg.limits[LimitClass::Register as usize] = slow(register_burst);
    cfg.ban_base_ns = HOUR_NS;
    cfg.ban_max_ns = 8 * HOUR_NS;
    cfg
}

fn load(cfg: &Config) -> Datapath {
    Datapath::load(cfg).expect("load the XDP program")
}

#[track_caller]
fn expect_verdict(
    dp: &mut Datapath,
    frame: &[u8],
    action: u32,
    verdict: Verdict,
    class: MethodClass,
) {
    let before = dp.maps.counters().unwrap();
    let got = dp.run(frame).unwrap();
    let after = dp.maps.counters().unwrap();
    assert_eq!(got, action, "XDP action for {verdict:?}/{class:?}");
    assert_eq!(
        after.packets(verdict, class) - before.packets(verdict, class),
        1,
        "counter ({verdict:?}, {class:?}) must grow by one"
    );
    assert_eq!(
        after.total() - before.total(),
        1,
        "exactly one counter per packet"
    );
}

#[test]
fn ipv4_register_passes_and_creates_source_state() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(5));
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let state = dp
        .maps
        .source(addr_key(ip(CLIENT)))
        .unwrap()
        .expect("source tracked");
    assert_eq!(state.packets, 1);
    assert_eq!(state.dropped, 0);
    assert_eq!(state.banned_until_ns, 0);
    assert!(state.tat_ns[LimitClass::Register as usize] > 0);
}

#[test]
fn every_request_method_is_classified() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(5));
    let methods = [
        ("REGISTER", MethodClass::Register),
        ("INVITE", MethodClass::Invite),
        ("OPTIONS", MethodClass::Options),
        ("SUBSCRIBE", MethodClass::Subscribe),
        ("NOTIFY", MethodClass::Notify),
        ("MESSAGE", MethodClass::Message),
        ("ACK", MethodClass::Ack),
        ("BYE", MethodClass::Bye),
        ("CANCEL", MethodClass::Cancel),
        ("PRACK", MethodClass::Prack),
        ("UPDATE", MethodClass::Update),
        ("INFO", MethodClass::Info),
        ("REFER", MethodClass::Refer),
        ("PUBLISH", MethodClass::Publish),
    ];
    for (i, (method, class)) in methods.into_iter().enumerate() {
        // One source per method so no bucket runs dry.
        let src = format!("198.51.100.{}", 100 + i);
        let frame = sip_from(&src, &request(method, "sip:200@example.com", 1));
        expect_verdict(&mut dp, &frame, XDP_PASS, Verdict::Pass, class);
    }
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT, &response(401, "Unauthorized")),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Response,
    );
}

#[test]
fn ipv6_vlan_qinq_and_ipv4_options_reach_the_classifier() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(50));
    expect_verdict(
        &mut dp,
        &reg(CLIENT6),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let vlan = Frame::sip(ip(CLIENT), ip(SERVER), &register("1", 1))
        .vlan(100)
        .build();
    expect_verdict(
        &mut dp,
        &vlan,
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let qinq = Frame::sip(ip(CLIENT6), ip(SERVER6), &register("1", 1))
        .qinq(200, 100)
        .build();
    expect_verdict(
        &mut dp,
        &qinq,
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    for option_len in [4usize, 8, 20, 40] {
        let mut frame = Frame::sip(ip(CLIENT), ip(SERVER), &register("1", 1));
        // NOP options: IHL from 6 up to 15.
        frame.ipv4_options = vec![1; option_len];
        expect_verdict(
            &mut dp,
            &frame.build(),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
    }
    let v6 = dp
        .maps
        .source(addr_key(ip(CLIENT6)))
        .unwrap()
        .expect("IPv6 source tracked");
    assert_eq!(v6.packets, 2);
    let v4 = dp
        .maps
        .source(addr_key(ip(CLIENT)))
        .unwrap()
        .expect("IPv4 source tracked");
    assert_eq!(v4.packets, 5);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(50));
    let chains = [
        vec![Ipv6Ext::HopByHop { len_units: 0 }],
        vec![Ipv6Ext::Routing { len_units: 2 }],
        vec![
            Ipv6Ext::HopByHop { len_units: 1 },
            Ipv6Ext::DestinationOptions { len_units: 0 },
            Ipv6Ext::Routing { len_units: 0 },
        ],
        vec![
            Ipv6Ext::DestinationOptions { len_units: 3 },
            Ipv6Ext::Fragment {
                offset_units: 0,
                more: false,
                id: 7,
            },
        ],
    ];
    for chain in chains {
        let mut frame = Frame::sip(ip(CLIENT6), ip(SERVER6), &register("1", 1));
        frame.ipv6_ext = chain.clone();
        expect_verdict(
            &mut dp,
            &frame.build(),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
        // The same chain to a non-SIP port is left alone.
        frame.dst_port = 5353;
        expect_verdict(
            &mut dp,
            &frame.build(),
            XDP_PASS,
            Verdict::PassNotSip,
            MethodClass::NotSip,
        );
    }
    // Garbage behind extension headers is still seen as what it is.
    let mut frame = Frame::sip(
        ip(CLIENT6),
        ip(SERVER6),
        b"\x16\x03\x01garbage-not-sip-at-all",
    );
    frame.ipv6_ext = vec![Ipv6Ext::HopByHop { len_units: 0 }];
    expect_verdict(
        &mut dp,
        &frame.build(),
        XDP_DROP,
        Verdict::DropMalformed,
        MethodClass::Malformed,
    );
}

#[test]
fn non_sip_traffic_is_never_touched() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(1));
    // Even from a source that is banned for SIP.
    dp.run(&reg(CLIENT)).unwrap();
    assert_eq!(dp.run(&reg(CLIENT)).unwrap(), XDP_DROP);
    // TCP to a port that is not a SIP TCP port (5060 and 5061 are: see tcp_prefix.rs).
    let tcp = Frame::tcp(
        ip(CLIENT),
        ip(SERVER),
        80,
        tcp_flags::PSH | tcp_flags::ACK,
        b"REGISTER sip:x SIP/2.0\r\n\r\n",
    );
    let mut icmp = Frame::sip(ip(CLIENT), ip(SERVER), &[8, 0, 0, 0, 0, 1, 0, 1]);
    icmp.protocol = IPPROTO_ICMP;
    let frames = [
        Frame::udp(ip(CLIENT), ip(SERVER), 53, b"\x12\x34\x01\x00").build(), // DNS
        Frame::udp(ip(CLIENT), ip(SERVER), 10000, &[0x80; 172]).build(),     // RTP
        Frame::udp(ip(CLIENT), ip(SERVER), 5061, &register("1", 1)).build(), // not configured
        tcp.build(),
        icmp.build(),
        arp_frame(),
        Frame::udp(ip(CLIENT6), ip(SERVER6), 22, b"SSH-2.0-OpenSSH_9.2").build(),
    ];
    for frame in frames {
        expect_verdict(
            &mut dp,
            &frame,
            XDP_PASS,
            Verdict::PassNotSip,
            MethodClass::NotSip,
        );
    }
}

#[test]
fn sip_ports_change_at_runtime() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(5);
    let mut dp = load(&cfg);
    let on_5080 = Frame::udp(ip(CLIENT), ip(SERVER), 5080, b"garbage garbage garbage").build();
    expect_verdict(
        &mut dp,
        &on_5080,
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    cfg.sip_ports = [5060, 5080, 0, 0, 0, 0, 0, 0];
    dp.maps.write_config(&cfg).unwrap();
    expect_verdict(
        &mut dp,
        &on_5080,
        XDP_DROP,
        Verdict::DropMalformed,
        MethodClass::Malformed,
    );
    cfg.sip_ports = [5070, 0, 0, 0, 0, 0, 0, 0];
    dp.maps.write_config(&cfg).unwrap();
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
}

#[test]
fn config_updates_switch_whole_slots() {
    sip_xdp_tests::needs_root!();
    let mut a = strict_config(5);
    a.sip_ports = [5080, 0, 0, 0, 0, 0, 0, 0];
    let mut b = a;
    b.sip_ports = [5060, 5070, 0, 0, 0, 0, 0, 0];
    let garbage = Frame::udp(ip(CLIENT), ip(SERVER), 5080, b"garbage garbage garbage").build();
    let mut dp = load(&a);
    let sip_on_5080 = |dp: &mut Datapath| {
        expect_verdict(
            dp,
            &garbage,
            XDP_DROP,
            Verdict::DropMalformed,
            MethodClass::Malformed,
        )
    };
    let not_sip = |dp: &mut Datapath| {
        expect_verdict(
            dp,
            &garbage,
            XDP_PASS,
            Verdict::PassNotSip,
            MethodClass::NotSip,
        )
    };
    assert_eq!(dp.maps.read_config().unwrap(), a);
    sip_on_5080(&mut dp);
    dp.maps.write_config(&b).unwrap();
    assert_eq!(dp.maps.read_config().unwrap(), b);
    not_sip(&mut dp);
    dp.maps.write_config(&a).unwrap();
    assert_eq!(dp.maps.read_config().unwrap(), a);
    sip_on_5080(&mut dp);

    let mut active: Array<MapData, u32> =
        Array::try_from(dp.open_map(map_names::ACTIVE_CONFIG).unwrap()).unwrap();
    let mut slots: Array<MapData, Config> =
        Array::try_from(dp.open_map(map_names::CONFIG).unwrap()).unwrap();
    let live = active.get(&0, 0).unwrap();
    assert!(live <= 1, "ACTIVE_CONFIG names slot {live}");
    assert_eq!(slots.get(&live, 0).unwrap(), a);
    assert_eq!(
        slots.get(&(live ^ 1), 0).unwrap(),
        b,
        "B stays in the idle slot"
    );

    // Writing the idle slot changes nothing until ACTIVE_CONFIG names it.
    let mut c = a;
    c.flags &= !flags::DROP_MALFORMED;
    slots.set(live ^ 1, c, 0).unwrap();
    sip_on_5080(&mut dp);
    active.set(0, live ^ 1, 0).unwrap();
    let malformed_passes = |dp: &mut Datapath| {
        expect_verdict(
            dp,
            &garbage,
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Malformed,
        )
    };
    malformed_passes(&mut dp);
    assert_eq!(dp.maps.read_config().unwrap(), c);
    // Only the low bit selects the slot (unmasked, 2 or 3 would miss and mean defaults).
    active.set(0, (live ^ 1) | 2, 0).unwrap();
    malformed_passes(&mut dp);
    // A slot never written (version 0) means the built-in defaults: 5060 only.
    slots.set(live ^ 1, Config { version: 0, ..c }, 0).unwrap();
    not_sip(&mut dp);
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
}

#[test]
fn keepalives_pass_and_garbage_is_dropped() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(5);
    cfg.limits[LimitClass::KeepAlive as usize] = RateLimit::per_interval(1, HOUR_NS, 10);
    let mut dp = load(&cfg);
    let keepalives: [&[u8]; 5] = [b"", b"\r\n", b"\r\n\r\n", b"\0\0\0\0", b" \r\n"];
    for payload in keepalives {
        expect_verdict(
            &mut dp,
            &sip_from(CLIENT, payload),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::KeepAlive,
        );
    }
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[0xab; 12]);
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT, &stun),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::KeepAlive,
    );

    let malformed: [&[u8]; 9] = [
        b"hello",                                       // short garbage
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", // another protocol
        &[
            0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
        ],
        b"REGISTER sip:100@example.com",         // truncated, no CRLF
        b"REGISTER sip:100@example.com SIP/2.0", // truncated before CRLF
        b"REGISTER sip:100@example.com HTTP/1.1\r\n\r\n", // wrong version
        b"REGISTER SIP/2.0\r\nVia: x\r\n\r\n",   // no Request-URI
        b"register sip:100@example.com SIP/2.0\r\n\r\n", // methods are case-sensitive
        b"SIP/2.0 9xx Nonsense\r\n\r\n",         // bad status code
    ];
    for payload in malformed {
        expect_verdict(
            &mut dp,
            &sip_from(CLIENT2, payload),
            XDP_DROP,
            Verdict::DropMalformed,
            MethodClass::Malformed,
        );
    }
    // A request line longer than the scan cannot be proven truncated: classified by its method.
    let long_uri = format!("sip:{}@example.com", "a".repeat(400));
    let long = request("INVITE", &long_uri, 1);
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT, &long),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Invite,
    );
}

#[test]
fn malformed_passes_when_configured() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(5);
    cfg.flags &= !flags::DROP_MALFORMED;
    let mut dp = load(&cfg);
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT, b"not a sip message at all"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Malformed,
    );
}

#[test]
fn truncation_at_every_layer_is_safe() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(5));
    let full = reg(CLIENT);
    // Cut right after Ethernet, inside IPv4 and UDP headers: nothing to read a port from, so
    // untouched. (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, as no NIC
    // delivers them.)
    for len in [14usize, 20, 33, 34, 38, 41] {
        expect_verdict(
            &mut dp,
            &full[..len],
            XDP_PASS,
            Verdict::PassNotSip,
            MethodClass::NotSip,
        );
    }
    // Cut inside the payload: the IP length now lies about the frame.
    for len in [42usize, 50, 100] {
        expect_verdict(
            &mut dp,
            &full[..len],
            XDP_DROP,
            Verdict::DropMalformed,
            MethodClass::Malformed,
        );
    }
    // UDP length field larger than the datagram, or smaller than its own header.
    for udp_len in [8u16 + 2000, 4] {
        let mut frame = Frame::sip(ip(CLIENT), ip(SERVER), &register("1", 1));
        frame.udp_len_override = Some(udp_len);
        expect_verdict(
            &mut dp,
            &frame.build(),
            XDP_DROP,
            Verdict::DropMalformed,
            MethodClass::Malformed,
        );
    }
    // IPv6 cut inside its extension header chain.
    let mut frame = Frame::sip(ip(CLIENT6), ip(SERVER6), &register("1", 1));
    frame.ipv6_ext = vec![Ipv6Ext::Routing { len_units: 4 }];
    let bytes = frame.build();
    expect_verdict(
        &mut dp,
        &bytes[..14 + 40 + 10],
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    // A VLAN tag with nothing behind it.
    let vlan = Frame::sip(ip(CLIENT), ip(SERVER), b"").vlan(7).build();
    expect_verdict(
        &mut dp,
        &vlan[..16],
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
    assert!(
        dp.maps.source(addr_key(ip(CLIENT))).unwrap().is_none(),
        "no state for broken frames"
    );
}

#[test]
fn bucket_exhaustion_bans_and_reports() {
    sip_xdp_tests::needs_root!();
    let burst = 5;
    let mut dp = load(&strict_config(burst));
    let mut events = RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap();
    for _ in 0..burst {
        expect_verdict(
            &mut dp,
            &reg(CLIENT),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
    }
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    for _ in 0..3 {
        expect_verdict(
            &mut dp,
            &reg(CLIENT),
            XDP_DROP,
            Verdict::DropBanned,
            MethodClass::Unread,
        );
    }
    // A banned source's other SIP traffic is dropped too, even what is never rate limited.
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT, b"\r\n\r\n"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    // Another source is unaffected.
    expect_verdict(
        &mut dp,
        &reg(CLIENT2),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );

    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(state.strikes, 1);
    assert_eq!(state.ban_class, LimitClass::Register as u8);
    assert_eq!(state.ban_flags, ban_flags::EXPIRY_PENDING);
    assert_eq!(state.ban_duration_ns, HOUR_NS);
    assert!(state.banned_until_ns > sip_xdp::time::monotonic_now_ns() + HOUR_NS / 2);
    assert_eq!(state.packets, burst + 5);
    assert_eq!(state.dropped, 5);
    assert_eq!(
        dp.maps.counters().unwrap().event(EventCounter::BansIssued),
        1
    );

    let item = events.next().expect("a ban event in the ring buffer");
    let event: BanEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
    assert_eq!(event.kind, ban_event_kind::BAN);
    assert_eq!(event.addr, addr_key(ip(CLIENT)));
    assert_eq!(event.limit_class, LimitClass::Register as u8);
    assert_eq!(event.strikes, 1);
    assert_eq!(event.duration_ns, HOUR_NS);
    assert_eq!(event.window_packets as u64, burst + 1);
}

#[test]
fn each_method_has_its_own_bucket() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    // OPTIONS and INVITE buckets hold 3 each (strict_config), REGISTER 2.
    let options = sip_from(CLIENT, &request("OPTIONS", "sip:100@example.com", 1));
    for _ in 0..3 {
        expect_verdict(
            &mut dp,
            &options,
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Options,
        );
    }
    expect_verdict(
        &mut dp,
        &options,
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Options,
    );
    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(state.ban_class, LimitClass::Options as u8);
    // Responses, in-dialog requests, keep-alives and (when passed) malformed datagrams each
    // draw from a bucket of their own: no packet shape reaches the server at line rate.
    let mut cfg = strict_config(2);
    cfg.flags &= !flags::DROP_MALFORMED;
    let cases: [(&[u8], MethodClass, LimitClass); 5] = [
        (
            &response(200, "OK"),
            MethodClass::Response,
            LimitClass::Response,
        ),
        (
            &request("BYE", "sip:100@198.51.100.10:5062", 2),
            MethodClass::Bye,
            LimitClass::InDialog,
        ),
        (b"\r\n\r\n", MethodClass::KeepAlive, LimitClass::KeepAlive),
        (
            b"\x01\x02garbage that is not SIP",
            MethodClass::Malformed,
            LimitClass::Malformed,
        ),
        (
            &request("MESSAGE", "sip:100@example.com", 3),
            MethodClass::Message,
            LimitClass::Other,
        ),
    ];
    for (payload, class, limit) in cases {
        let mut dp = load(&cfg);
        let frame = sip_from(CLIENT, payload);
        for _ in 0..3 {
            expect_verdict(&mut dp, &frame, XDP_PASS, Verdict::Pass, class);
        }
        expect_verdict(&mut dp, &frame, XDP_DROP, Verdict::DropRate, class);
        let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
        assert_eq!(state.ban_class, limit as u8, "{class:?}");
    }
    // The ACK and CANCEL of a dialog share the BYE's bucket.
    let mut dp = load(&cfg);
    for method in ["ACK", "CANCEL", "BYE"] {
        let frame = sip_from(CLIENT, &request(method, "sip:100@198.51.100.10:5062", 2));
        let class = match method {
            "ACK" => MethodClass::Ack,
            "CANCEL" => MethodClass::Cancel,
            _ => MethodClass::Bye,
        };
        expect_verdict(&mut dp, &frame, XDP_PASS, Verdict::Pass, class);
    }
    let ack = sip_from(CLIENT, &request("ACK", "sip:100@198.51.100.10:5062", 2));
    expect_verdict(&mut dp, &ack, XDP_DROP, Verdict::DropRate, MethodClass::Ack);
}

/// Every class is finite by default, high where legitimate traffic needs it.
#[test]
fn every_class_has_a_finite_default_bucket() {
    sip_xdp_tests::needs_root!();
    for limit in LimitClass::ALL {
        let bucket = Config::DEFAULT.limits[limit as usize];
        assert!(!bucket.is_unlimited(), "{limit:?} is unlimited by default");
    }
    // A keep-alive flood from one source is cut after its burst under the defaults.
    let mut dp = load(&Config::DEFAULT);
    let ping = sip_from(CLIENT, b"\r\n\r\n");
    let burst = Config::DEFAULT.limits[LimitClass::KeepAlive as usize].burst();
    let mut passed = 0;
    for _ in 0..burst + 50 {
        if dp.run(&ping).unwrap() == XDP_PASS {
            passed += 1;
        }
    }
    // The burst, plus what refills while the test runs (50/s).
    assert!(
        passed >= burst && passed < burst + 10,
        "{passed} of {} keep-alives passed",
        burst + 50
    );
    let counters = dp.maps.counters().unwrap();
    assert!(counters.packets(Verdict::DropRate, MethodClass::KeepAlive) >= 1);
}

#[test]
fn allowlist_bypasses_limits_and_wins_over_denylist() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    dp.maps.allow(net("198.51.100.0/28")).unwrap();
    dp.maps.deny(net("198.51.100.10/32"), 0).unwrap();
    dp.maps.allow(net("2001:db8:1::/48")).unwrap();
    // An office of 100 phones behind one address registering at once.
    for seq in 0..100 {
        let frame = sip_from(CLIENT, &register(&format!("{}", 200 + seq), seq));
        expect_verdict(
            &mut dp,
            &frame,
            XDP_PASS,
            Verdict::PassAllowlisted,
            MethodClass::Register,
        );
    }
    expect_verdict(
        &mut dp,
        &reg(CLIENT6),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::Register,
    );
    // Allowlisted sources keep no state: nothing to ban.
    assert!(dp.maps.source(addr_key(ip(CLIENT))).unwrap().is_none());
    assert_eq!(dp.maps.allowlist().unwrap().len(), 2);
    // Outside the allowlisted /28, limits apply again.
    let outside = "198.51.100.20";
    for _ in 0..2 {
        expect_verdict(
            &mut dp,
            &reg(outside),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
    }
    expect_verdict(
        &mut dp,
        &reg(outside),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    assert!(dp.maps.unallow(net("198.51.100.0/28")).unwrap());
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
}

#[test]
fn a_banned_source_is_dropped_before_the_lists_are_read() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    assert_eq!(exhaust(&mut dp, CLIENT6), 2);
    expect_verdict(
        &mut dp,
        &reg(CLIENT2),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    // Allowlisted behind the control plane's back (it forgets the sources it allowlists): had
    // the program read the allowlist for them, the banned sources would pass.
    dp.maps.allow(net("198.51.100.0/24")).unwrap();
    dp.maps.allow(net("2001:db8:1::10/128")).unwrap();
    for src in [CLIENT, CLIENT6] {
        expect_verdict(
            &mut dp,
            &reg(src),
            XDP_DROP,
            Verdict::DropBanned,
            MethodClass::Unread,
        );
        let state = dp.maps.source(addr_key(ip(src))).unwrap().unwrap();
        // Two passed, one refused by the bucket (the ban), one dropped as banned.
        assert_eq!((state.packets, state.dropped, state.strikes), (4, 2, 1));
    }
    // A tracked source that is not banned meets the allowlist first, and its state stays as is.
    expect_verdict(
        &mut dp,
        &reg(CLIENT2),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::Register,
    );
    assert_eq!(
        dp.maps
            .source(addr_key(ip(CLIENT2)))
            .unwrap()
            .unwrap()
            .packets,
        1
    );
    // Banned and denylisted: counted as banned; denylisted alone: as denylisted.
    assert!(dp.maps.unallow(net("198.51.100.0/24")).unwrap());
    dp.maps.deny(net("198.51.100.0/24"), 0).unwrap();
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    expect_verdict(
        &mut dp,
        &reg(CLIENT2),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    assert_eq!(
        dp.maps
            .source(addr_key(ip(CLIENT)))
            .unwrap()
            .unwrap()
            .dropped,
        3,
        "the banned source's drops are still counted in its state"
    );
}

#[test]
fn a_prefix_grouped_ipv6_source_meets_the_allowlist_before_its_ban() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(2);
    let mut mask = [0u8; 16];
    mask[..8].fill(0xff);
    cfg.ipv6_source_mask = mask;
    let mut dp = load(&cfg);
    // Two addresses of one /64 exhaust the bucket they share; the /64 is banned.
    assert_eq!(exhaust(&mut dp, "2001:db8:1::1"), 2);
    let key = addr_key(ip("2001:db8:1::"));
    assert_eq!(dp.maps.source(key).unwrap().unwrap().strikes, 1);
    // One address of that /64 is allowlisted: the key it shares with the banned ones must not
    // decide for it.
    dp.maps.allow(net("2001:db8:1::2/128")).unwrap();
    expect_verdict(
        &mut dp,
        &reg("2001:db8:1::2"),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("2001:db8:1::3"),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Register,
    );
}

/// The datapath's maps pinned in a directory of their own, where `sip-xdp attach` would leave
/// them, so the control plane can edit them; unpinned on drop.
struct PinnedMaps {
    dir: PathBuf,
}

impl PinnedMaps {
    fn new(dp: &mut Datapath) -> Self {
        // One directory per use: tests of this file run in parallel threads of one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/sxdp-datapath-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a pin directory on bpffs");
        let pinned = Self { dir };
        for name in loader::PINNED_MAPS {
            let map = dp.open_map(name).expect("the program's map");
            map.pin(pinned.dir.join(name)).expect("pinning a map");
        }
        pinned
    }
}

impl Drop for PinnedMaps {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn allowlisting_a_banned_source_through_the_control_plane_lifts_its_ban() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    assert_eq!(exhaust(&mut dp, CLIENT2), 2);
    let pins = PinnedMaps::new(&mut dp);
    let state_dir = tempfile::tempdir().unwrap();
    let control = Control::new(PinDir::new(&pins.dir), state_dir.path().to_owned());
    let office = net("198.51.100.10/32");

    let report = control
        .list_add(ListKind::Allow, &[office], Some("office NAT".into()))
        .unwrap();
    assert!(report.live, "the edit reached the pinned maps");
    assert!(
        dp.maps.source(addr_key(ip(CLIENT))).unwrap().is_none(),
        "the allowlisted source's ban and strikes are forgotten"
    );
    // Far past its burst of 2: never limited again.
    for _ in 0..20 {
        expect_verdict(
            &mut dp,
            &reg(CLIENT),
            XDP_PASS,
            Verdict::PassAllowlisted,
            MethodClass::Register,
        );
    }
    assert!(dp.maps.source(addr_key(ip(CLIENT))).unwrap().is_none());
    // The neighbour outside the CIDR stays banned.
    expect_verdict(
        &mut dp,
        &reg(CLIENT2),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    assert_eq!(
        dp.maps
            .source(addr_key(ip(CLIENT2)))
            .unwrap()
            .unwrap()
            .strikes,
        1
    );

    // Taken off the allowlist, it starts over with a full bucket and no strikes.
    control.list_del(ListKind::Allow, &[office]).unwrap();
    for _ in 0..2 {
        expect_verdict(
            &mut dp,
            &reg(CLIENT),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
    }
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    assert_eq!(
        dp.maps
            .source(addr_key(ip(CLIENT)))
            .unwrap()
            .unwrap()
            .strikes,
        1
    );
}

#[test]
fn denylist_drops_and_expires_in_the_kernel() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(5));
    let now = sip_xdp::time::monotonic_now_ns();
    dp.maps.deny(net("203.0.113.128/25"), 0).unwrap();
    dp.maps
        .deny(net("198.51.100.10/32"), now + 300 * MS)
        .unwrap();
    dp.maps.deny(net("2001:db8:bad::/48"), 0).unwrap();
    expect_verdict(
        &mut dp,
        &reg("203.0.113.200"),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("2001:db8:bad::5"),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("203.0.113.5"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    sleep(Duration::from_millis(400));
    // The timed entry lapsed with no user space involved.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("203.0.113.200"),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    assert_eq!(
        dp.maps.denylist().unwrap().len(),
        3,
        "expired entries stay until user space removes them"
    );
}

fn short_ban_config() -> Config {
    let mut cfg = strict_config(2);
    cfg.ban_base_ns = 300 * MS;
    cfg.ban_max_ns = 1_000 * MS;
    cfg.ban_factor = 3;
    cfg.flags &= !flags::EXTEND_WHILE_ACTIVE;
    cfg
}

/// Sends REGISTERs until one is dropped for rate; returns how many passed first.
fn exhaust(dp: &mut Datapath, src: &str) -> usize {
    let mut passed = 0;
    while dp.run(&reg(src)).unwrap() == XDP_PASS {
        passed += 1;
        assert!(passed < 1000, "the bucket never ran dry");
    }
    passed
}

#[test]
fn bans_expire_escalate_and_cap() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&short_ban_config());
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    let first = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!((first.strikes, first.ban_duration_ns), (1, 300 * MS));
    assert_eq!(dp.run(&reg(CLIENT)).unwrap(), XDP_DROP);
    sleep(Duration::from_millis(400));
    // Expired in the kernel; the bucket (one token per hour) is still empty, so the next
    // REGISTER is a repeat offence: strike two, three times as long.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    let second = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!((second.strikes, second.ban_duration_ns), (2, 900 * MS));
    sleep(Duration::from_millis(1_000));
    dp.run(&reg(CLIENT)).unwrap();
    let third = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(
        (third.strikes, third.ban_duration_ns),
        (3, 1_000 * MS),
        "capped at ban_max"
    );
}

#[test]
fn ban_expiry_lets_a_refilled_source_back_in() {
    sip_xdp_tests::needs_root!();
    let mut cfg = short_ban_config();
    // Fast refill: 20 tokens/s, burst 2.
    cfg.limits[LimitClass::Register as usize] = RateLimit::per_second(20, 2);
    let mut dp = load(&cfg);
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    sleep(Duration::from_millis(400));
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
}

fn ban_events(dp: &mut Datapath) -> RingBuf<MapData> {
    RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap()
}

/// Everything in the ring buffer now.
fn drain(events: &mut RingBuf<MapData>) -> Vec<BanEvent> {
    let mut out = Vec::new();
    while let Some(item) = events.next() {
        assert_eq!(item.len(), std::mem::size_of::<BanEvent>());
        // SAFETY: the program submits whole `BanEvent`s, checked by size just above.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    out
}

#[test]
fn ban_expiry_is_reported_once() {
    sip_xdp_tests::needs_root!();
    let mut cfg = short_ban_config();
    cfg.limits[LimitClass::Register as usize] = RateLimit::per_second(20, 2);
    let mut dp = load(&cfg);
    let mut events = ban_events(&mut dp);
    let key = addr_key(ip(CLIENT));
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    let banned = dp.maps.source(key).unwrap().unwrap();
    assert_eq!(banned.ban_flags, ban_flags::EXPIRY_PENDING);
    let sent = drain(&mut events);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, ban_event_kind::BAN);
    // Still banned: nothing to report.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    assert!(drain(&mut events).is_empty());

    sleep(Duration::from_millis(400));
    // The bucket refilled meanwhile: the packet that finds the ban over goes on and passes.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let sent = drain(&mut events);
    assert_eq!(sent.len(), 1, "one expiry event: {sent:?}");
    let expired = sent[0];
    assert_eq!(expired.kind, ban_event_kind::EXPIRED);
    assert_eq!(expired.addr, key);
    assert_eq!(expired.limit_class, LimitClass::Register as u8);
    assert_eq!(expired.strikes, 1);
    assert_eq!(expired.duration_ns, 300 * MS);
    assert_eq!(expired.banned_until_ns, banned.banned_until_ns);
    assert!(expired.now_ns >= expired.banned_until_ns);
    assert!(expired.window_packets >= 1);
    let after = dp.maps.source(key).unwrap().unwrap();
    assert_eq!(after.ban_flags, 0, "expiry reported");
    assert_eq!(
        (after.strikes, after.banned_until_ns),
        (1, banned.banned_until_ns),
        "the ban's record stays for escalation"
    );

    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert!(drain(&mut events).is_empty(), "reported once");
    assert_eq!(
        dp.maps.counters().unwrap().event(EventCounter::EventsLost),
        0
    );
}

#[test]
fn would_ban_expires_when_it_runs_out_not_when_enforcing_ignores_it() {
    sip_xdp_tests::needs_root!();
    let mut cfg = short_ban_config();
    cfg.limits[LimitClass::Register as usize] = RateLimit::per_second(20, 2);
    cfg.flags |= flags::MONITOR;
    let mut dp = load(&cfg);
    let mut events = ban_events(&mut dp);
    let key = addr_key(ip(CLIENT));
    for verdict in [Verdict::Pass, Verdict::Pass, Verdict::DropRate] {
        expect_verdict(
            &mut dp,
            &reg(CLIENT),
            XDP_PASS,
            verdict,
            MethodClass::Register,
        );
    }
    let sent = drain(&mut events);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, ban_event_kind::WOULD_BAN);

    // Enforcing ignores the monitor-only ban, but it has not run out: no expiry yet.
    cfg.flags &= !flags::MONITOR;
    dp.maps.write_config(&cfg).unwrap();
    sleep(Duration::from_millis(100));
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert!(drain(&mut events).is_empty());
    let state = dp.maps.source(key).unwrap().unwrap();
    assert_eq!(
        state.ban_flags,
        ban_flags::MONITOR_ONLY | ban_flags::EXPIRY_PENDING
    );

    sleep(Duration::from_millis(300));
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let sent = drain(&mut events);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].kind, ban_event_kind::EXPIRED);
    assert_eq!(sent[0].banned_until_ns, state.banned_until_ns);
    let state = dp.maps.source(key).unwrap().unwrap();
    assert_eq!(state.ban_flags, ban_flags::MONITOR_ONLY);
}

#[test]
fn expiry_lost_to_a_full_ring_buffer_is_counted_and_not_retried() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(1);
    cfg.limits[LimitClass::Register as usize] = RateLimit::per_second(20, 2);
    // Every ban is over by the next packet: a source whose bucket stays empty sends an expiry
    // and a ban with each packet.
    cfg.ban_base_ns = 0;
    cfg.flags &= !flags::EXTEND_WHILE_ACTIVE;
    let mut dp = load(&cfg);
    let mut events = ban_events(&mut dp);
    let lost = |dp: &mut Datapath| dp.maps.counters().unwrap().event(EventCounter::EventsLost);
    let key = addr_key(ip(CLIENT));
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    assert_eq!(
        dp.maps.source(key).unwrap().unwrap().ban_flags,
        ban_flags::EXPIRY_PENDING
    );
    assert_eq!(drain(&mut events).len(), 1, "the ban itself");

    // Fill the ring buffer with another source's bans (OPTIONS: one token per hour).
    let options = sip_from(CLIENT2, &request("OPTIONS", "sip:100@example.com", 1));
    let capacity = sip_xdp_common::BAN_EVENTS_BYTES as usize / std::mem::size_of::<BanEvent>();
    dp.run_repeat(&options, capacity as u32).unwrap();
    assert!(lost(&mut dp) > 0, "the ring buffer filled up");

    sleep(Duration::from_millis(150));
    let before = lost(&mut dp);
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(lost(&mut dp), before + 1, "the expiry was lost and counted");
    assert_eq!(dp.maps.source(key).unwrap().unwrap().ban_flags, 0);

    let drained = drain(&mut events);
    assert!(
        drained.iter().all(|e| e.addr == addr_key(ip(CLIENT2))),
        "only the flood's events made it"
    );
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert!(drain(&mut events).is_empty(), "no retry once room is back");
    assert_eq!(lost(&mut dp), before + 1);
}

#[test]
fn strikes_decay_after_a_quiet_period() {
    sip_xdp_tests::needs_root!();
    let mut cfg = short_ban_config();
    cfg.limits[LimitClass::Register as usize] = RateLimit::per_second(20, 2);
    cfg.strike_decay_ns = 200 * MS;
    let mut dp = load(&cfg);
    exhaust(&mut dp, CLIENT);
    sleep(Duration::from_millis(300 + 250));
    exhaust(&mut dp, CLIENT);
    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(
        (state.strikes, state.ban_duration_ns),
        (1, 300 * MS),
        "strikes reset after quiet"
    );
}

#[test]
fn ban_is_extended_while_the_source_keeps_sending() {
    sip_xdp_tests::needs_root!();
    let mut cfg = short_ban_config();
    cfg.flags |= flags::EXTEND_WHILE_ACTIVE;
    cfg.ban_extend_ns = 2 * HOUR_NS;
    let mut dp = load(&cfg);
    exhaust(&mut dp, CLIENT);
    let before = dp
        .maps
        .source(addr_key(ip(CLIENT)))
        .unwrap()
        .unwrap()
        .banned_until_ns;
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    let after = dp
        .maps
        .source(addr_key(ip(CLIENT)))
        .unwrap()
        .unwrap()
        .banned_until_ns;
    assert!(
        after >= before + HOUR_NS,
        "ban extended: {before} -> {after}"
    );
}

#[test]
fn monitor_mode_counts_but_never_drops() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(2);
    cfg.flags |= flags::MONITOR;
    let mut dp = load(&cfg);
    dp.maps.deny(net("203.0.113.66/32"), 0).unwrap();
    for _ in 0..2 {
        expect_verdict(
            &mut dp,
            &reg(CLIENT),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
    }
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::DropRate,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    expect_verdict(
        &mut dp,
        &reg("203.0.113.66"),
        XDP_PASS,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT2, b"garbage garbage garbage"),
        XDP_PASS,
        Verdict::DropMalformed,
        MethodClass::Malformed,
    );
    let counters = dp.maps.counters().unwrap();
    assert_eq!(counters.event(EventCounter::WouldBans), 1);
    assert_eq!(counters.event(EventCounter::BansIssued), 0);
    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(
        state.ban_flags & ban_flags::MONITOR_ONLY,
        ban_flags::MONITOR_ONLY
    );

    // Switching to enforcing does not turn recorded would-bans into real ones...
    cfg.flags &= !flags::MONITOR;
    dp.maps.write_config(&cfg).unwrap();
    // ...but the source's bucket is still empty, so it is banned for real on its next REGISTER.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(state.ban_flags & ban_flags::MONITOR_ONLY, 0);
    assert_eq!(
        dp.maps.counters().unwrap().event(EventCounter::BansIssued),
        1
    );
}

#[test]
fn fragments_follow_their_first_fragment() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(5));
    dp.maps.deny(net("198.51.100.66/32"), 0).unwrap();
    let big_invite = request("INVITE", "sip:200@example.com", 1);
    for (src, id, first_action, first_verdict, rest_action, rest_verdict) in [
        (
            CLIENT,
            0x4242u16,
            XDP_PASS,
            Verdict::Pass,
            XDP_PASS,
            Verdict::Pass,
        ),
        (
            "198.51.100.66",
            0x4343,
            XDP_DROP,
            Verdict::DropDenylisted,
            XDP_DROP,
            Verdict::DropFragment,
        ),
    ] {
        let mut first = Frame::sip(ip(src), ip(SERVER), &big_invite);
        first.ipv4_fragment = Some((true, 0, id));
        expect_verdict(
            &mut dp,
            &first.build(),
            first_action,
            first_verdict,
            MethodClass::Invite,
        );
        let mut rest = Frame::sip(
            ip(src),
            ip(SERVER),
            b"v=0\r\no=- 1 1 IN IP4 198.51.100.10\r\n",
        );
        rest.ipv4_fragment = Some((false, 100, id));
        rest.omit_l4_header = true;
        expect_verdict(
            &mut dp,
            &rest.build(),
            rest_action,
            rest_verdict,
            MethodClass::Fragment,
        );
    }
    // IPv6 fragments, matched by the 32-bit identification.
    let mut first = Frame::sip(ip(CLIENT6), ip(SERVER6), &big_invite);
    first.ipv6_ext = vec![Ipv6Ext::Fragment {
        offset_units: 0,
        more: true,
        id: 0xfeed,
    }];
    expect_verdict(
        &mut dp,
        &first.build(),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Invite,
    );
    let mut rest = Frame::sip(ip(CLIENT6), ip(SERVER6), b"a=rtpmap:0 PCMU/8000\r\n");
    rest.ipv6_ext = vec![Ipv6Ext::Fragment {
        offset_units: 150,
        more: false,
        id: 0xfeed,
    }];
    rest.omit_l4_header = true;
    expect_verdict(
        &mut dp,
        &rest.build(),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Fragment,
    );

    // A fragment whose head was never seen may be anyone's (DNS, VPN): passed by default...
    let mut orphan = Frame::sip(ip(CLIENT2), ip(SERVER), b"tail of something");
    orphan.ipv4_fragment = Some((false, 185, 0x9999));
    orphan.omit_l4_header = true;
    expect_verdict(
        &mut dp,
        &orphan.build(),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::Fragment,
    );
    // ...dropped when the operator asks for it.
    let mut cfg = strict_config(5);
    cfg.flags |= flags::DROP_UNKNOWN_FRAGMENTS;
    dp.maps.write_config(&cfg).unwrap();
    expect_verdict(
        &mut dp,
        &orphan.build(),
        XDP_DROP,
        Verdict::DropFragment,
        MethodClass::Fragment,
    );
}

#[test]
fn ipv6_sources_can_be_grouped_by_prefix() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(2);
    let mut mask = [0u8; 16];
    mask[..8].fill(0xff);
    cfg.ipv6_source_mask = mask;
    let mut dp = load(&cfg);
    // Two addresses of one /64 share one bucket.
    expect_verdict(
        &mut dp,
        &reg("2001:db8:1::1"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("2001:db8:1::2"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("2001:db8:1::3"),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg("2001:db8:2::1"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let key = addr_key(ip("2001:db8:1::"));
    assert_eq!(dp.maps.source(key).unwrap().unwrap().strikes, 1);
    // IPv4 sources are never grouped.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &reg(CLIENT2),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
}

#[test]
fn unconfigured_program_uses_safe_defaults() {
    sip_xdp_tests::needs_root!();
    let mut cfg = Config::DEFAULT;
    cfg.version = 0; // as if user space never wrote the map
    let mut dp = load(&cfg);
    let burst = Config::DEFAULT.limits[LimitClass::Register as usize].burst() as usize;
    for _ in 0..burst {
        assert_eq!(dp.run(&reg(CLIENT)).unwrap(), XDP_PASS);
    }
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &Frame::udp(ip(CLIENT), ip(SERVER), 53, b"dns").build(),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
}

#[test]
fn lru_keeps_memory_bounded_under_spoofed_sources() {
    sip_xdp_tests::needs_root!();
    let options = sip_xdp::loader::LoadOptions {
        max_sources: 256,
        ..Default::default()
    };
    let mut dp = Datapath::load_with(&strict_config(5), &options).unwrap();
    for i in 0..2_000u32 {
        let src = format!("203.0.113.{}", i % 250);
        let src6 = format!("2001:db8:ffff::{:x}", i);
        dp.run(&reg(&src)).unwrap();
        dp.run(&reg(&src6)).unwrap();
    }
    let tracked = dp.maps.sources().unwrap().len();
    assert!(
        tracked <= 256,
        "LRU holds at most its capacity, got {tracked}"
    );
    assert!(tracked > 0);
}

// ---------------------------------------------------------------------------------------------
// Hostile packet shapes and ban durability (issue 10).

fn counted(dp: &Datapath, verdict: Verdict, class: MethodClass) -> u64 {
    dp.maps.counters().unwrap().packets(verdict, class)
}

/// A REGISTER behind `n` Destination Options headers of `len_units` each.
fn behind_dstopts(src: &str, n: usize, len_units: u8) -> Vec<u8> {
    let mut f = Frame::sip(ip(src), ip(SERVER6), &register("100", 1));
    f.ipv6_ext = (0..n)
        .map(|_| Ipv6Ext::DestinationOptions { len_units })
        .collect();
    f.build()
}

#[test]
fn ipv6_chains_past_the_parser_are_dropped_not_passed() {
    sip_xdp_tests::needs_root!();
    let mut cfg = strict_config(2);
    let mut dp = load(&cfg);
    // Seven 8-byte Destination Options headers: one more than the parser walks.
    let seven = behind_dstopts(CLIENT6, 7, 0);
    // One 528-byte Destination Options header: the UDP header lies past the parser's bound.
    let long = behind_dstopts(CLIENT6, 1, 65);
    for frame in [&seven, &long] {
        for _ in 0..5 {
            expect_verdict(
                &mut dp,
                frame,
                XDP_DROP,
                Verdict::DropUnparsed,
                MethodClass::Unparsed,
            );
        }
    }
    // Six headers still reach the classifier, and so does an Authentication Header.
    expect_verdict(
        &mut dp,
        &behind_dstopts(CLIENT6, 6, 0),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    let mut f = Frame::sip(ip("2001:db8:1::11"), ip(SERVER6), &register("100", 1));
    f.ipv6_ext = vec![
        Ipv6Ext::Authentication { len_units: 4 },
        Ipv6Ext::DestinationOptions { len_units: 1 },
    ];
    expect_verdict(
        &mut dp,
        &f.build(),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    // A denylisted source or a banned one gains nothing from the trick.
    dp.maps.deny(net("2001:db8:bad::/48"), 0).unwrap();
    let denied = behind_dstopts("2001:db8:bad::1", 7, 0);
    assert_eq!(dp.run(&denied).unwrap(), XDP_DROP);
    exhaust(&mut dp, CLIENT);
    let banned = behind_dstopts("2001:db8:2::10", 1, 0);
    while dp.run(&banned).unwrap() == XDP_PASS {}
    assert_eq!(
        dp.run(&behind_dstopts("2001:db8:2::10", 7, 0)).unwrap(),
        XDP_DROP
    );
    assert_eq!(
        counted(&dp, Verdict::DropUnparsed, MethodClass::Unparsed),
        12
    );
    // The switch passes them (still counted apart), for a network that needs such chains.
    cfg.flags |= flags::PASS_UNPARSED;
    dp.maps.write_config(&cfg).unwrap();
    expect_verdict(
        &mut dp,
        &seven,
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::Unparsed,
    );
    // Non-SIP traffic behind a short chain is still untouched.
    let mut tcp = Frame::tcp(ip(CLIENT6), ip(SERVER6), 443, tcp_flags::SYN, b"");
    tcp.ipv6_ext = vec![Ipv6Ext::HopByHop { len_units: 0 }];
    expect_verdict(
        &mut dp,
        &tcp.build(),
        XDP_PASS,
        Verdict::PassNotSip,
        MethodClass::NotSip,
    );
}

#[test]
fn tiny_first_fragments_are_not_keepalives() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    let full = register("100", 7);
    // IPv4: a first fragment carrying only the UDP header (the UDP length covers the whole
    // REGISTER that follows), then its follower.
    for (src, v6) in [(CLIENT, false), (CLIENT6, true)] {
        let dst = if v6 { SERVER6 } else { SERVER };
        let mut first = Frame::sip(ip(src), ip(dst), b"");
        first.udp_len_override = Some((8 + full.len()) as u16);
        let mut later = Frame::sip(ip(src), ip(dst), &full);
        later.omit_l4_header = true;
        if v6 {
            first.ipv6_ext = vec![Ipv6Ext::Fragment {
                offset_units: 0,
                more: true,
                id: 77,
            }];
            later.ipv6_ext = vec![Ipv6Ext::Fragment {
                offset_units: 1,
                more: false,
                id: 77,
            }];
        } else {
            first.ipv4_fragment = Some((true, 0, 77));
            later.ipv4_fragment = Some((false, 1, 77));
        }
        expect_verdict(
            &mut dp,
            &first.build(),
            XDP_DROP,
            Verdict::DropMalformed,
            MethodClass::Malformed,
        );
        expect_verdict(
            &mut dp,
            &later.build(),
            XDP_DROP,
            Verdict::DropFragment,
            MethodClass::Fragment,
        );
    }
    // A first fragment cut inside its UDP header hides its port: unparsed, dropped. (IPv4
    // options move the cut past Ethernet's 60-byte padding, which would otherwise be read.)
    let mut cut = Frame::udp(ip(CLIENT2), ip(SERVER), 5060, &[0x13, 0xc4, 0x13, 0xc4]);
    cut.omit_l4_header = true;
    cut.ipv4_options = vec![1; 40];
    cut.ipv4_fragment = Some((true, 0, 78));
    expect_verdict(
        &mut dp,
        &cut.build(),
        XDP_DROP,
        Verdict::DropUnparsed,
        MethodClass::Unparsed,
    );
    // A real first fragment that holds the request line is classified as before.
    let mut head = Frame::sip(ip(CLIENT2), ip(SERVER), &full[..64]);
    head.udp_len_override = Some((8 + full.len()) as u16);
    head.ipv4_fragment = Some((true, 0, 79));
    expect_verdict(
        &mut dp,
        &head.build(),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
}

#[test]
fn ipv4_mapped_ipv6_sources_neither_share_nor_inherit_ipv4_state() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    dp.maps.allow(net("198.51.100.40/32")).unwrap();
    // Inherits nothing from the IPv4 allowlist entry: dropped as never valid on the wire.
    let mapped = sip_from("::ffff:198.51.100.40", &register("100", 1));
    expect_verdict(
        &mut dp,
        &mapped,
        XDP_DROP,
        Verdict::DropUnparsed,
        MethodClass::Unparsed,
    );
    // Cannot get an IPv4 address banned either.
    let mapped41 = sip_from("::ffff:198.51.100.41", &register("100", 1));
    for _ in 0..10 {
        assert_eq!(dp.run(&mapped41).unwrap(), XDP_DROP);
    }
    assert!(
        dp.maps
            .source(addr_key(ip("198.51.100.41")))
            .unwrap()
            .is_none()
    );
    expect_verdict(
        &mut dp,
        &reg("198.51.100.41"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    // A bogon list's `::/8` and an IPv6 `::/0` do not cover the IPv4 keys: a hole stops them.
    dp.maps.deny(net("::/8"), 0).unwrap();
    expect_verdict(
        &mut dp,
        &reg("198.51.100.42"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    expect_verdict(
        &mut dp,
        &sip_from("::1:2", &register("100", 1)),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    dp.maps.allow(net("::/0")).unwrap();
    // ::/0 allows IPv6 sources (longer ::/8 deny still loses to it? no: LPM, /8 is longer)...
    expect_verdict(
        &mut dp,
        &sip_from("2001:db8:9::1", &register("100", 1)),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::Register,
    );
    // ...but no IPv4 source.
    exhaust(&mut dp, "198.51.100.43");
    // The hole is not a listing: neither list shows it.
    assert_eq!(
        dp.maps.allowlist().unwrap().len(),
        2,
        "{:?}",
        dp.maps.allowlist()
    );
    assert_eq!(dp.maps.denylist().unwrap().len(), 1);
    // IPv4 0.0.0.0/0 takes the hole's key and denies every IPv4 source; removing it puts the
    // hole back.
    dp.maps.deny(net("0.0.0.0/0"), 0).unwrap();
    expect_verdict(
        &mut dp,
        &reg("198.51.100.44"),
        XDP_DROP,
        Verdict::DropDenylisted,
        MethodClass::Register,
    );
    assert!(dp.maps.undeny(net("0.0.0.0/0")).unwrap());
    expect_verdict(
        &mut dp,
        &reg("198.51.100.44"),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert!(dp.maps.undeny(net("::/8")).unwrap());
    assert!(dp.maps.unallow(net("::/0")).unwrap());
    assert!(dp.maps.denylist().unwrap().is_empty());
    // An IPv4-mapped range is refused with the IPv4 form to write instead.
    let err = dp.maps.deny(net("::ffff:198.51.100.0/120"), 0).unwrap_err();
    assert!(err.to_string().contains("198.51.100.0/24"), "{err}");
}

#[test]
fn protected_sources_are_limited_but_never_banned() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&strict_config(2));
    dp.maps.protect(net("198.51.100.0/28")).unwrap();
    assert_eq!(exhaust(&mut dp, CLIENT), 2);
    // Dropped for rate, never banned: no ban, no strike, no ban record, no ban event.
    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!((state.banned_until_ns, state.strikes), (0, 0));
    assert!(dp.maps.bans().unwrap().is_empty());
    let counters = dp.maps.counters().unwrap();
    assert_eq!(counters.event(EventCounter::BansIssued), 0);
    assert_eq!(counters.event(EventCounter::ProtectedDrops), 1);
    let events = take_ring(&mut dp);
    assert!(events.is_empty(), "{events:?}");
    // Every further REGISTER meets the empty bucket again: still limited.
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropRate,
        MethodClass::Register,
    );
    // Its other classes still pass.
    expect_verdict(
        &mut dp,
        &sip_from(CLIENT, &request("INVITE", "sip:200@example.com", 2)),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Invite,
    );
    // Outside the protected CIDR a source is banned as usual.
    exhaust(&mut dp, "198.51.100.20");
    assert_eq!(dp.maps.bans().unwrap().len(), 1);
    // `sip-xdp protect add` lifts the ban a source had before, saves the entry, and from then
    // on the source is limited but not banned.
    let pins = PinnedMaps::new(&mut dp);
    let state_dir = tempfile::tempdir().unwrap();
    let control = Control::new(PinDir::new(&pins.dir), state_dir.path().to_owned());
    let trunk = net("198.51.100.20/32");
    let report = control
        .list_add(ListKind::Protect, &[trunk], Some("carrier trunk".into()))
        .unwrap();
    assert!(report.live);
    assert!(dp.maps.bans().unwrap().is_empty(), "its ban is lifted");
    assert_eq!(dp.maps.protected().unwrap().len(), 2);
    let entries = control.list_entries(ListKind::Protect).unwrap();
    assert!(
        entries.iter().any(|e| e.cidr == trunk && e.live && e.saved),
        "{entries:?}"
    );
    assert_eq!(exhaust(&mut dp, "198.51.100.20"), 2);
    assert!(dp.maps.bans().unwrap().is_empty(), "never banned again");
    assert!(
        control
            .list_del(ListKind::Protect, &[trunk])
            .unwrap()
            .missing
            .is_empty()
    );
    assert_eq!(dp.maps.protected().unwrap().len(), 1);
}

/// Drains the ban event ring buffer.
fn take_ring(dp: &mut Datapath) -> Vec<BanEvent> {
    let mut ring = RingBuf::try_from(dp.ebpf().map_mut(map_names::BAN_EVENTS).unwrap()).unwrap();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        events.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const BanEvent) });
    }
    events
}

#[test]
fn a_ban_is_extended_only_while_the_source_exceeds_its_limit() {
    sip_xdp_tests::needs_root!();
    // REGISTER 20/s, burst 2; a first ban of 2 s, extended by 2 s while abused.
    let mut cfg = Config::DEFAULT;
    cfg.limits[LimitClass::Register as usize] = RateLimit::per_second(20, 2);
    cfg.ban_base_ns = 2_000 * MS;
    cfg.ban_extend_ns = 2_000 * MS;
    cfg.flags |= flags::EXTEND_WHILE_ACTIVE;
    let mut dp = load(&cfg);
    // A forged burst in the peer's name bans it.
    exhaust(&mut dp, CLIENT);
    let banned_until = dp
        .maps
        .source(addr_key(ip(CLIENT)))
        .unwrap()
        .unwrap()
        .banned_until_ns;
    // The real peer sends within its limit (4/s): dropped while banned, never extended.
    for _ in 0..6 {
        sleep(Duration::from_millis(250));
        let _ = dp.run(&reg(CLIENT)).unwrap();
    }
    let state = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(
        state.banned_until_ns, banned_until,
        "extended without abuse"
    );
    // The ban ends on schedule and the peer's REGISTERs pass again.
    sleep(Duration::from_millis(700));
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    // A source that keeps flooding while banned is extended.
    exhaust(&mut dp, CLIENT2);
    let first = dp
        .maps
        .source(addr_key(ip(CLIENT2)))
        .unwrap()
        .unwrap()
        .banned_until_ns;
    sleep(Duration::from_millis(1_100));
    for _ in 0..20 {
        assert_eq!(dp.run(&reg(CLIENT2)).unwrap(), XDP_DROP);
    }
    let after = dp.maps.source(addr_key(ip(CLIENT2))).unwrap().unwrap();
    assert!(
        after.banned_until_ns > first,
        "flood while banned extends: {first} -> {}",
        after.banned_until_ns
    );
    // ...and the durable copy follows the extension.
    let record = dp
        .maps
        .bans()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.addr == addr_key(ip(CLIENT2)))
        .unwrap()
        .1;
    assert_eq!(record.banned_until_ns, after.banned_until_ns);
}

#[test]
fn bans_and_strikes_survive_a_flood_that_churns_the_source_table() {
    sip_xdp_tests::needs_root!();
    const CAPACITY: u32 = 1_024;
    let options = sip_xdp::loader::LoadOptions {
        max_sources: CAPACITY,
        ..Default::default()
    };
    let mut cfg = strict_config(2);
    cfg.ban_base_ns = HOUR_NS;
    // The spoofed sources share one /64: without this its prefix bucket would ban it long
    // before the flood churns the source table (tcp_prefix.rs tests that).
    cfg.prefix_limits = [RateLimit::UNLIMITED; LimitClass::COUNT];
    let mut dp = Datapath::load_with(&cfg, &options).unwrap();
    // Two strikes for the attacker: banned, ban lifted by time (simulated by a short first
    // ban would need sleeping; instead ban twice through the control plane's view: one ban).
    exhaust(&mut dp, CLIENT);
    let before = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(before.strikes, 1);
    // 10x the table's capacity of spoofed sources, two packets each.
    let sources = 10 * CAPACITY + 240;
    for i in 0..sources {
        let frame = sip_from(
            &format!("2001:db8:f::{:x}:{:x}", i >> 16, i & 0xffff),
            &register("100", i),
        );
        dp.run(&frame).unwrap();
        dp.run(&frame).unwrap();
    }
    assert!(
        dp.maps.source(addr_key(ip(CLIENT))).unwrap().is_none(),
        "the churn was meant to evict the attacker's entry"
    );
    // The ban is still in the kernel's durable table, with its strikes...
    let bans = dp.maps.bans().unwrap();
    let record = bans
        .iter()
        .find(|(k, _)| k.addr == addr_key(ip(CLIENT)))
        .expect("ban record kept")
        .1;
    assert_eq!(record.strikes, 1);
    assert_eq!(record.banned_until_ns, before.banned_until_ns);
    // ...the attacker's next packet is dropped as banned (no fresh burst)...
    expect_verdict(
        &mut dp,
        &reg(CLIENT),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Register,
    );
    let restored = dp.maps.source(addr_key(ip(CLIENT))).unwrap().unwrap();
    assert_eq!(
        (restored.strikes, restored.banned_until_ns),
        (1, before.banned_until_ns)
    );
    assert!(
        dp.maps
            .counters()
            .unwrap()
            .event(EventCounter::BansRestored)
            >= 1
    );
    // ...and the daemon's save keeps it in the state file, strikes and all.
    let state_dir = tempfile::tempdir().unwrap();
    let control = Control::new(
        PinDir::new(state_dir.path().join("no-pins")),
        state_dir.path().to_path_buf(),
    );
    control.save_auto_bans(&dp.maps).unwrap();
    let saved = sip_xdp::state::StateFile::load(state_dir.path()).unwrap();
    let auto = saved
        .auto_bans
        .iter()
        .find(|b| b.addr == ip(CLIENT))
        .expect("saved with the other automatic bans");
    assert_eq!(auto.strikes, 1);
}
