//! End to end: the real program attached in native mode to a veth in a network namespace, real
//! sockets on both sides, datagrams counted where they land.
//!
//! Each test builds its own pair of namespaces (unique names), loads its own copy of the program
//! and tears everything down on drop, so the tests run in parallel and clean up on panic.
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use aya::Ebpf;
use sip_xdp::{
    loader::{self, AttachMode, LoadOptions},
    maps::{Counters, SipMaps, addr_key},
};
use sip_xdp_common::{
    Config, EventCounter, LimitClass, MethodClass, RateLimit, SourceState, Verdict, ban_flags,
};
use sip_xdp_tests::{
    harness::require_root,
    netns::{
        CLIENT_V4_A, CLIENT_V4_B, CLIENT_V6_A, CLIENT_V6_B, SERVER_IF, SERVER_V4, SERVER_V6,
        VethPair,
    },
    packet,
};

const SECOND_NS: u64 = 1_000_000_000;
const BURST: u64 = 10;
const BAN_NS: u64 = 60 * SECOND_NS;
/// How long a socket waits for one more datagram once the program has seen them all.
const QUIET: Duration = Duration::from_millis(150);
/// Upper bound for the program to have seen what was sent.
const SETTLE: Duration = Duration::from_secs(3);

fn config() -> Config {
    let mut config = Config::DEFAULT;
    config.limits[LimitClass::Register as usize] = RateLimit::per_second(1, BURST);
    config.ban_base_ns = BAN_NS;
    config.ban_extend_ns = BAN_NS;
    config
}

/// The program attached to the server side of a fresh veth pair. Fields drop in order: maps,
/// then the program (detaching it), then the namespaces.
struct Rig {
    maps: SipMaps,
    _ebpf: Ebpf,
    net: VethPair,
}

impl Rig {
    fn new(config: &Config) -> Self {
        require_root();
        let net = VethPair::new().expect("creating the test network namespaces");
        let mut ebpf = loader::load(&LoadOptions::default()).expect("loading the XDP program");
        let mut maps = SipMaps::take_from(&mut ebpf).expect("taking the maps");
        maps.write_config(config).expect("writing the config");
        // Native XDP on the *receiving* veth is all it takes here (kernel 6.18): attaching it
        // puts that veth in NAPI mode, and every frame its peer transmits runs through the
        // program; nothing is needed on the peer (no pass program, no GRO; ethtool is not even
        // installed). The peer-needs-XDP-or-GRO rule is for XDP_TX/XDP_REDIRECT *into* a veth,
        // which sip-xdp never does. The kernel also strips software GSO from the peer while a
        // non-frags program is attached, so TCP arrives MTU-sized (a 200 kB TCP write was
        // counted as ~144 NotSip frames in a probe) instead of bypassing XDP as 64 kB
        // superframes. Attach has to run inside the namespace (see `Netns::run`).
        let mode = net.server.run(|| {
            loader::attach(&mut ebpf, SERVER_IF, AttachMode::Native)
                .expect("attaching in native mode to the server veth")
                .1
        });
        assert_eq!(mode, AttachMode::Native);
        // `ip link` says "xdp" for a driver-mode program ("xdpgeneric" for skb mode).
        let link = net.server.ip(&["link", "show", SERVER_IF]).unwrap();
        assert!(
            link.contains(" xdp ") || link.contains(" xdp/id:") || link.contains("prog/xdp "),
            "expected a native XDP program on {SERVER_IF}: {link}"
        );
        assert!(!link.contains("xdpgeneric"), "attached in skb mode: {link}");
        Self {
            maps,
            _ebpf: ebpf,
            net,
        }
    }

    fn counters(&self) -> Counters {
        self.maps.counters().expect("reading COUNTERS")
    }

    /// Waits until the program has counted `total` REGISTERs (whatever the verdict): read and
    /// classified, or dropped unread (a banned source's datagrams are dropped on their addresses
    /// alone, counted as `unread`).
    fn wait_for_registers(&self, total: u64) -> Counters {
        let class = MethodClass::Register;
        let deadline = Instant::now() + SETTLE;
        loop {
            let counters = self.counters();
            let seen = registers_seen(&counters);
            if seen >= total {
                assert_eq!(
                    seen, total,
                    "the program saw more {class:?} packets than sent"
                );
                return counters;
            }
            assert!(
                Instant::now() < deadline,
                "the program saw {seen} of {total} {class:?} packets within {SETTLE:?}; \
                 counters: {counters:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn source(&self, addr: IpAddr) -> Option<SourceState> {
        self.maps.source(addr_key(addr)).expect("reading SOURCES")
    }

    fn server_udp(&self, addr: SocketAddr) -> UdpSocket {
        self.net.server.run(|| {
            let socket = UdpSocket::bind(addr).expect("binding the server socket");
            socket.set_read_timeout(Some(QUIET)).unwrap();
            socket
        })
    }

    fn client_udp(&self, source: IpAddr) -> UdpSocket {
        self.net.client.run(|| {
            let socket = UdpSocket::bind(SocketAddr::new(source, 0)).expect("binding a client");
            socket.set_read_timeout(Some(QUIET)).unwrap();
            socket.set_write_timeout(Some(SETTLE)).unwrap();
            socket
        })
    }
}

/// Receives until the socket stays quiet for its read timeout: the senders of what arrived.
fn drain(socket: &UdpSocket) -> Vec<SocketAddr> {
    let mut from = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => from.push(peer),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            // A signal (the test's child processes exiting) interrupted the wait: wait again.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("receiving: {e}"),
        }
    }
    from
}

/// The REGISTERs the program counted: read, or (from a banned source) dropped unread. Only
/// REGISTERs are sent to the SIP port in these tests.
fn registers_seen(counters: &Counters) -> u64 {
    counters.by_class(MethodClass::Register) + counters.by_class(MethodClass::Unread)
}

fn count_from(received: &[SocketAddr], source: IpAddr) -> usize {
    received.iter().filter(|peer| peer.ip() == source).count()
}

/// Sends `count` REGISTERs (distinct CSeq from `first_seq`) as fast as the socket takes them.
fn send_registers(socket: &UdpSocket, to: SocketAddr, first_seq: u32, count: u32) {
    for seq in first_seq..first_seq + count {
        socket
            .send_to(&packet::register("100", seq), to)
            .expect("sending a REGISTER");
    }
}

/// The whole story, for one address family:
/// 1. a legitimate client (B) registers a few times, well under the burst: all arrive;
/// 2. source A floods: exactly `BURST` arrive, A is banned, the rest are counted as banned drops;
/// 3. while A is banned, B still registers fine;
/// 4. A's non-SIP UDP (even SIP-looking, to other ports) and its TCP to a port that is not a
///    SIP TCP port still pass; its TCP to port 5060 (a SIP TCP port) is dropped.
fn flood_scenario(server: IpAddr, source_a: IpAddr, source_b: IpAddr) {
    let started = Instant::now();
    let rig = Rig::new(&config());
    let sip = SocketAddr::new(server, 5060);
    let server_sip = rig.server_udp(sip);
    let client_a = rig.client_udp(source_a);
    let client_b = rig.client_udp(source_b);
    let mut registers_sent = 0u64;

    // 1. A legitimate client, well under the burst.
    const LEGIT: u32 = 3;
    send_registers(&client_b, sip, 1, LEGIT);
    registers_sent += u64::from(LEGIT);
    rig.wait_for_registers(registers_sent);
    let received = drain(&server_sip);
    assert_eq!(
        count_from(&received, source_b),
        LEGIT as usize,
        "legitimate REGISTERs lost: {received:?}"
    );
    assert_eq!(received.len(), LEGIT as usize);

    // 2. A flood from A: bounded in count, sent back to back.
    const FLOOD: u32 = 200;
    let flood_started = Instant::now();
    send_registers(&client_a, sip, 1000, FLOOD);
    registers_sent += u64::from(FLOOD);
    let counters = rig.wait_for_registers(registers_sent);
    let flood_took = flood_started.elapsed();
    let received = drain(&server_sip);
    let from_a = count_from(&received, source_a) as u64;
    assert!(
        (BURST..=BURST + 1).contains(&from_a),
        "expected the burst ({BURST}) of A's {FLOOD} REGISTERs to arrive, got {from_a} \
         (flood took {flood_took:?})"
    );
    assert_eq!(
        received.len() as u64,
        from_a,
        "only A was sending: {received:?}"
    );
    let reg = |v| counters.packets(v, MethodClass::Register);
    assert_eq!(
        reg(Verdict::Pass),
        u64::from(LEGIT) + from_a,
        "{counters:?}"
    );
    assert_eq!(reg(Verdict::DropRate), 1, "one packet trips the bucket");
    assert_eq!(
        counters.packets(Verdict::DropBanned, MethodClass::Unread),
        u64::from(FLOOD) - from_a - 1,
        "the rest meet the ban, before their payload is read"
    );
    assert_eq!(counters.event(EventCounter::BansIssued), 1);
    assert_eq!(counters.event(EventCounter::TrackFailures), 0);

    // The program's own clock (CLOCK_MONOTONIC_COARSE).
    let now = sip_xdp::time::monotonic_now_ns();
    let a = rig.source(source_a).expect("A is tracked in SOURCES");
    assert!(
        a.banned_until_ns > now + BAN_NS - 10 * SECOND_NS && a.banned_until_ns <= now + BAN_NS,
        "A should be banned for about {}s from now: banned_until {} now {now}",
        BAN_NS / SECOND_NS,
        a.banned_until_ns
    );
    assert_eq!(a.strikes, 1);
    assert_eq!(a.ban_class, LimitClass::Register as u8);
    assert_eq!(
        a.ban_flags,
        ban_flags::EXPIRY_PENDING,
        "an enforced ban (not a monitor-mode one), its end not reported yet"
    );
    assert_eq!(a.packets, u64::from(FLOOD));
    assert_eq!(a.dropped, u64::from(FLOOD) - from_a);
    let b = rig.source(source_b).expect("B is tracked in SOURCES");
    assert_eq!(b.banned_until_ns, 0, "B was never banned");
    assert_eq!(b.packets, u64::from(LEGIT));

    // 3. While A is banned, B registers fine.
    send_registers(&client_b, sip, 100, LEGIT);
    registers_sent += u64::from(LEGIT);
    let counters = rig.wait_for_registers(registers_sent);
    let received = drain(&server_sip);
    assert_eq!(
        count_from(&received, source_b),
        LEGIT as usize,
        "{received:?}"
    );
    assert_eq!(received.len(), LEGIT as usize);
    assert_eq!(
        counters.packets(Verdict::Pass, MethodClass::Register),
        u64::from(2 * LEGIT) + from_a
    );
    // And A is still shut out on the SIP port.
    send_registers(&client_a, sip, 2000, 1);
    registers_sent += 1;
    let counters = rig.wait_for_registers(registers_sent);
    assert!(drain(&server_sip).is_empty(), "a banned source got through");
    assert_eq!(
        counters.packets(Verdict::DropBanned, MethodClass::Unread),
        u64::from(FLOOD) - from_a
    );

    // 4. Non-SIP traffic from the banned source is never touched: UDP to other ports (even
    // carrying a REGISTER), and TCP to a port that is not a SIP TCP port. Its TCP to 5060 is
    // dropped: a ban holds on every transport.
    const OTHER: u32 = 20;
    let not_sip_before = rig.counters().by_class(MethodClass::NotSip);
    for port in [5353u16, 10000] {
        let to = SocketAddr::new(server, port);
        let server_other = rig.server_udp(to);
        send_registers(&client_a, to, 3000, OTHER);
        let received = drain(&server_other);
        assert_eq!(
            count_from(&received, source_a),
            OTHER as usize,
            "UDP to port {port} from the banned source was touched: {received:?}"
        );
    }
    let counters = rig.counters();
    assert_eq!(
        registers_seen(&counters),
        registers_sent,
        "datagrams to non-SIP ports must not be classified"
    );
    assert!(
        counters.by_class(MethodClass::NotSip) >= not_sip_before + 2 * u64::from(OTHER),
        "{counters:?}"
    );

    let sip_listener = rig
        .net
        .server
        .run(|| TcpListener::bind(sip).expect("binding TCP 5060"));
    let syns_before = counters.packets(Verdict::DropBanned, MethodClass::TcpSyn);
    let refused = rig.net.client.run(|| {
        // The client's routes prefer A as source (see netns.rs).
        TcpStream::connect_timeout(&sip, Duration::from_millis(700))
    });
    assert!(
        refused.is_err(),
        "a TCP connection to 5060 from the banned source was made"
    );
    assert!(
        rig.counters()
            .packets(Verdict::DropBanned, MethodClass::TcpSyn)
            > syns_before,
        "the banned source's SYN to 5060 was not counted as a banned drop"
    );
    drop(sip_listener);
    let other_tcp = SocketAddr::new(server, 5062);
    let listener = rig.net.server.run(|| {
        let listener = TcpListener::bind(other_tcp).expect("binding the TCP listener");
        listener.set_nonblocking(true).unwrap();
        listener
    });
    let mut stream = rig.net.client.run(|| {
        // The client's routes prefer A as source (see netns.rs); checked below.
        TcpStream::connect_timeout(&other_tcp, SETTLE)
            .expect("TCP connect from the banned source to a port that is not SIP's")
    });
    stream.set_write_timeout(Some(SETTLE)).unwrap();
    assert_eq!(stream.local_addr().unwrap().ip(), source_a);
    stream.write_all(b"OPTIONS over TCP\r\n").unwrap();
    let deadline = Instant::now() + SETTLE;
    let (mut accepted, peer) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accepting the TCP connection from A: {e}"),
        }
    };
    assert_eq!(peer.ip(), source_a);
    accepted.set_nonblocking(false).unwrap();
    accepted.set_read_timeout(Some(SETTLE)).unwrap();
    let mut got = [0u8; 18];
    accepted.read_exact(&mut got).expect("reading over TCP");
    assert_eq!(&got, b"OPTIONS over TCP\r\n");
    accepted.write_all(b"ok").unwrap();
    stream.set_read_timeout(Some(SETTLE)).unwrap();
    let mut reply = [0u8; 2];
    stream
        .read_exact(&mut reply)
        .expect("reading the TCP reply");
    assert_eq!(&reply, b"ok");

    let counters = rig.counters();
    assert_eq!(registers_seen(&counters), registers_sent);
    assert_eq!(counters.event(EventCounter::BansIssued), 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn ipv4_flood_bans_only_the_flooding_source() {
    sip_xdp_tests::needs_root!();
    flood_scenario(SERVER_V4.into(), CLIENT_V4_A.into(), CLIENT_V4_B.into());
}

#[test]
fn ipv6_flood_bans_only_the_flooding_source() {
    sip_xdp_tests::needs_root!();
    flood_scenario(SERVER_V6.into(), CLIENT_V6_A.into(), CLIENT_V6_B.into());
}

/// The shapes a red-team review got past the filter (issue 10): each is first sent with no
/// program attached, where Linux delivers every one to the UDP socket on port 5060 (so the test
/// can tell), then with the program attached in native mode, where none arrives.
/// - IPv6: seven 8-byte Destination Options headers before UDP (one more than the parser walks);
/// - IPv6: one 528-byte Destination Options header (UDP past the parser's offset bound);
/// - IPv4: a tiny first fragment carrying only the UDP header, the REGISTER in its follower.
#[test]
fn hostile_shapes_that_linux_delivers_are_dropped() {
    sip_xdp_tests::needs_root!();
    use sip_xdp_tests::{
        packet::{Frame, Ipv6Ext},
        raw::RawSender,
    };
    require_root();
    const EACH: u32 = 30;
    let net = VethPair::new().expect("creating the test network namespaces");
    let bind = |addr: SocketAddr| {
        net.server.run(|| {
            let socket = UdpSocket::bind(addr).expect("binding the server socket");
            socket.set_read_timeout(Some(QUIET)).unwrap();
            socket
        })
    };
    let server4 = bind(SocketAddr::new(IpAddr::V4(SERVER_V4), 5060));
    let server6 = bind(SocketAddr::new(IpAddr::V6(SERVER_V6), 5060));
    let sender = RawSender::on(&net.client);
    let (a4, a6) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V6(CLIENT_V6_A));
    let (s4, s6) = (IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6));

    let behind = |seq: u32, n: usize, len_units: u8| {
        let mut f = packet::Frame::sip(a6, s6, &packet::register("100", seq));
        f.ipv6_ext = (0..n)
            .map(|_| Ipv6Ext::DestinationOptions { len_units })
            .collect();
        f.build_checksummed()
    };
    let tiny_fragments = |seq: u32| {
        let register = packet::register("100", seq);
        let id = 0x4000 + seq as u16;
        let mut first = Frame::sip(a4, s4, b"");
        first.udp_len_override = Some((8 + register.len()) as u16);
        first.ipv4_fragment = Some((true, 0, id));
        let mut rest = Frame::sip(a4, s4, &register);
        rest.omit_l4_header = true;
        rest.ipv4_fragment = Some((false, 1, id));
        [first.build(), rest.build()]
    };
    let send_all = |round: u32| {
        for i in 0..EACH {
            let seq = round * 1000 + i;
            sender.send_addressed(&behind(seq, 7, 0));
            sender.send_addressed(&behind(seq + 500, 1, 65));
            for frame in tiny_fragments(seq) {
                sender.send_addressed(&frame);
            }
        }
    };

    // Without the filter, Linux walks the chains, reassembles the fragments and delivers.
    send_all(1);
    let (got6, got4) = (drain(&server6).len(), drain(&server4).len());
    assert_eq!(
        (got6, got4),
        (2 * EACH as usize, EACH as usize),
        "the kernel delivers each hostile shape when nothing filters"
    );

    // With the program attached, none of them reaches the socket.
    let mut ebpf = loader::load(&LoadOptions::default()).expect("loading the XDP program");
    let mut maps = SipMaps::take_from(&mut ebpf).expect("taking the maps");
    maps.write_config(&Config::DEFAULT)
        .expect("writing the config");
    net.server.run(|| {
        loader::attach(&mut ebpf, SERVER_IF, AttachMode::Native).expect("attaching natively")
    });
    send_all(2);
    let (got6, got4) = (drain(&server6).len(), drain(&server4).len());
    assert_eq!(
        (got6, got4),
        (0, 0),
        "hostile shapes got through the filter"
    );
    let counters = maps.counters().unwrap();
    assert_eq!(
        counters.packets(Verdict::DropUnparsed, MethodClass::Unparsed),
        2 * u64::from(EACH)
    );
    assert_eq!(
        counters.packets(Verdict::DropMalformed, MethodClass::Malformed),
        u64::from(EACH)
    );
    assert_eq!(
        counters.packets(Verdict::DropFragment, MethodClass::Fragment),
        u64::from(EACH)
    );
    drop(maps);
    drop(ebpf);
}
