//! Packet-level tests (BPF_PROG_TEST_RUN) of issue 13's fingerprints and trap accounts in the
//! real programs: the XDP program tail-calls the scan program for passed requests, which bans
//! on a signature. Each crafts frames, runs them through the verified programs and checks the
//! action, the counters, the source's ban in `SOURCES`, the hit counts in `SIGNATURES` and the
//! ban events read back from the kernel.
use std::net::IpAddr;

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use sip_xdp::{loader::LoadOptions, maps::addr_key};
use sip_xdp_common::{
    BAN_CLASS_SIGNATURE, BanEvent, Config, EventCounter, LimitClass, MAX_SCAN_BYTES, MethodClass,
    RateLimit, SignatureEntry, SignatureKey, SignatureKind, SourceState, Verdict, VerifiedSource,
    ban_event_kind, flags, map_names,
};
use sip_xdp_tests::{
    harness::{Datapath, XDP_DROP, XDP_PASS},
    packet::{Frame, tcp_flags},
    rng::{DEFAULT_SEED, Rng, env_u64},
};

const SECOND_NS: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3600 * SECOND_NS;
const SERVER: &str = "203.0.113.1";
const SERVER6: &str = "2001:db8::1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Generous buckets (a test's requests never run one dry), one-hour rate bans, two-hour
/// signature bans, signatures on.
fn config() -> Config {
    let mut cfg = Config::DEFAULT;
    cfg.limits = [RateLimit::per_interval(1, HOUR_NS, 100); LimitClass::COUNT];
    cfg.prefix_limits = [RateLimit::UNLIMITED; LimitClass::COUNT];
    cfg.ban_base_ns = HOUR_NS;
    cfg.ban_max_ns = 8 * HOUR_NS;
    cfg.signature_ban_ns = 2 * HOUR_NS;
    cfg.flags |= flags::SIGNATURES;
    cfg
}

/// A request with the headers scanners fill in. `ua` None leaves User-Agent out.
fn request(method: &str, uri: &str, from: &str, to: &str, ua: Option<&str>, seq: u32) -> Vec<u8> {
    let ua = ua.map_or(String::new(), |ua| format!("User-Agent: {ua}\r\n"));
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.10:5062;branch=z9hG4bK{seq:08x}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag={seq}\r\n\
         To: {to}\r\n\
         Call-ID: {seq}@198.51.100.10\r\n\
         CSeq: {seq} {method}\r\n\
         {ua}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A REGISTER of user 200 with this User-Agent.
fn register_with_ua(ua: &str, seq: u32) -> Vec<u8> {
    request(
        "REGISTER",
        "sip:example.com",
        "<sip:200@example.com>",
        "<sip:200@example.com>",
        Some(ua),
        seq,
    )
}

fn udp(src: &str, payload: &[u8]) -> Vec<u8> {
    let dst = if src.contains(':') { SERVER6 } else { SERVER };
    Frame::udp(ip(src), ip(dst), 5060, payload).build()
}

struct Rig {
    dp: Datapath,
    events: RingBuf<MapData>,
    /// None without the scan program (the only user of the map).
    signatures: Option<BpfHashMap<MapData, SignatureKey, SignatureEntry>>,
}

fn rig_with(cfg: &Config, options: &LoadOptions) -> Rig {
    let mut dp = Datapath::load_with(cfg, options).expect("load the programs");
    let events = RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap();
    let signatures = options.scan.then(|| {
        BpfHashMap::try_from(
            dp.open_map(map_names::SIGNATURES)
                .expect("the scan program declares SIGNATURES"),
        )
        .unwrap()
    });
    Rig {
        dp,
        events,
        signatures,
    }
}

/// The programs with the default scanner tokens this file uses and trap user 100.
fn rig(cfg: &Config) -> Rig {
    let mut rig = rig_with(cfg, &LoadOptions::default());
    for token in [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "vaxsipuseragent",
    ] {
        rig.add(SignatureKind::Fingerprint, token);
    }
    rig.add(SignatureKind::Trap, "100");
    rig
}

impl Rig {
    fn add(&mut self, kind: SignatureKind, token: &str) {
        let key = SignatureKey::new(kind, token.as_bytes()).unwrap();
        self.signatures
            .as_mut()
            .unwrap()
            .insert(key, SignatureEntry::default(), 0)
            .unwrap();
    }

    fn hits(&self, kind: SignatureKind, token: &str) -> u64 {
        let key = SignatureKey::new(kind, token.as_bytes()).unwrap();
        let signatures = self.signatures.as_ref().unwrap();
        signatures.get(&key, 0).map_or(0, |entry| entry.hits)
    }

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

    /// Checks `src` holds a signature ban of `kind` of about `duration_ns`.
    #[track_caller]
    fn expect_signature_ban(&self, src: &str, kind: SignatureKind, duration_ns: u64) {
        let state = self.source(src).expect("the banned source has state");
        assert_eq!(state.ban_class, BAN_CLASS_SIGNATURE | kind as u8);
        assert_eq!(state.ban_duration_ns, duration_ns);
        assert_eq!(state.strikes, 1);
        let ban = self
            .dp
            .maps
            .bans()
            .unwrap()
            .into_iter()
            .find(|(key, _)| key.addr == addr_key(ip(src)))
            .expect("the ban is durable in BANS");
        assert_eq!(ban.1.ban_class, BAN_CLASS_SIGNATURE | kind as u8);
    }
}

#[test]
fn a_scanners_user_agent_bans_on_its_first_request() {
    let mut rig = rig(&config());
    let src = "198.51.100.20";
    rig.expect(
        &udp(src, &register_with_ua("friendly-scanner", 1)),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    rig.expect_signature_ban(src, SignatureKind::Fingerprint, 2 * HOUR_NS);
    assert_eq!(rig.event(EventCounter::FingerprintBans), 1);
    assert_eq!(rig.event(EventCounter::BansIssued), 1);
    assert_eq!(rig.event(EventCounter::Scans), 1);
    assert_eq!(rig.hits(SignatureKind::Fingerprint, "friendly-scanner"), 1);
    let events = rig.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, ban_event_kind::BAN);
    assert_eq!(events[0].limit_class, BAN_CLASS_SIGNATURE);
    assert_eq!(events[0].addr, addr_key(ip(src)));
    // From then on the source is dropped on its addresses, before its payload is read, on
    // every method and with any user agent.
    rig.expect(
        &udp(src, &register_with_ua("Yealink SIP-T46S 66.86.0.15", 2)),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    rig.expect(
        &Frame::tcp(ip(src), ip(SERVER), 5060, tcp_flags::SYN, &[]).build(),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::TcpSyn,
    );
    assert_eq!(
        rig.event(EventCounter::Scans),
        1,
        "banned packets are not scanned"
    );
}

#[test]
fn real_phones_and_pbxes_pass_and_tokens_match_whole() {
    let mut rig = rig(&config());
    let agents = [
        "Asterisk PBX 20.5.0",
        "FPBX-16.0.40(18.20.0)",
        "FreeSWITCH-mod_sofia/1.10.11-release~64bit",
        "Yealink SIP-T46S 66.86.0.15",
        "PolycomVVX-VVX_411-UA/6.4.3.5018",
        "Grandstream GXP2170 1.0.11.23",
        "Zoiper rv2.10.20.3",
        "MicroSIP/3.21.3",
        "Linphone/5.2.0 (belle-sip/5.2.0)",
        // Near misses of the listed tokens: longer tokens, split tokens.
        "sipclient/1.0",
        "friendly-scanners-are-not-here",
        "Friendly Scanner",
        "vaxsipuseragentx/3.1",
    ];
    for (seq, ua) in agents.iter().enumerate() {
        let src = format!("198.51.100.{}", 30 + seq);
        rig.expect(
            &udp(&src, &register_with_ua(ua, seq as u32)),
            XDP_PASS,
            Verdict::Pass,
            MethodClass::Register,
        );
        assert!(
            rig.source(&src).unwrap().banned_until_ns == 0,
            "{ua} is not banned"
        );
    }
    assert_eq!(rig.event(EventCounter::Scans), agents.len() as u64);
    assert_eq!(rig.event(EventCounter::BansIssued), 0);
    // Case, header-name case, a product version and a comment do not hide a scanner.
    for (i, ua) in ["SIPVicious/0.3.4", "sipcli/v1.8", "VaxSIPUserAgent/3.1 (x)"]
        .iter()
        .enumerate()
    {
        let src = format!("198.51.100.{}", 60 + i);
        let frame = String::from_utf8(register_with_ua(ua, 9))
            .unwrap()
            .replace("User-Agent:", "user-agent :");
        rig.expect(
            &udp(&src, frame.as_bytes()),
            XDP_DROP,
            Verdict::DropSignature,
            MethodClass::Register,
        );
    }
    assert_eq!(rig.hits(SignatureKind::Fingerprint, "sipvicious"), 1);
    assert_eq!(rig.hits(SignatureKind::Fingerprint, "sipcli"), 1);
    assert_eq!(rig.hits(SignatureKind::Fingerprint, "vaxsipuseragent"), 1);
}

#[test]
fn fingerprints_in_from_and_to_names_and_users() {
    let mut rig = rig(&config());
    // svmap's OPTIONS: the scanner's name as From's display name, no User-Agent.
    // (Its Request-URI user here is not the trap account this file lists.)
    let svmap = request(
        "OPTIONS",
        "sip:300@203.0.113.1",
        "\"sipvicious\"<sip:100@1.1.1.1>",
        "\"sipvicious\"<sip:100@1.1.1.1>",
        None,
        1,
    );
    rig.expect(
        &udp("198.51.100.40", &svmap),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Options,
    );
    // The name as From's user, in the compact form.
    let compact = String::from_utf8(request(
        "INVITE",
        "sip:300@example.com",
        "<sip:sipvicious@example.com>",
        "<sip:300@example.com>",
        None,
        2,
    ))
    .unwrap()
    .replace("From:", "f:");
    rig.expect(
        &udp("198.51.100.41", compact.as_bytes()),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Invite,
    );
    // After the display name, From's parameters are not names: a tag of that value passes.
    let tagged = request(
        "REGISTER",
        "sip:example.com",
        "\"Alice\" <sip:alice@example.com>;x=sipvicious",
        "<sip:alice@example.com>",
        None,
        3,
    );
    rig.expect(
        &udp("198.51.100.42", &tagged),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(rig.event(EventCounter::FingerprintBans), 2);
}

#[test]
fn trap_accounts_ban_register_invite_and_options_only() {
    let mut rig = rig(&config());
    // REGISTER for user 100 (the To user; REGISTER's Request-URI has none).
    rig.expect(
        &udp(
            "198.51.100.50",
            &request(
                "REGISTER",
                "sip:example.com",
                "<sip:100@example.com>",
                "<sip:100@example.com>",
                Some("Zoiper rv2.10"),
                1,
            ),
        ),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    rig.expect_signature_ban("198.51.100.50", SignatureKind::Trap, 2 * HOUR_NS);
    // INVITE to the trap by its Request-URI, To in the compact form elsewhere.
    let invite = String::from_utf8(request(
        "INVITE",
        "sip:100@203.0.113.1",
        "<sip:999@example.com>",
        "<sip:999@example.com>",
        None,
        2,
    ))
    .unwrap()
    .replace("To:", "t:");
    rig.expect(
        &udp("198.51.100.51", invite.as_bytes()),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Invite,
    );
    rig.expect(
        &udp(
            "198.51.100.52",
            &request(
                "OPTIONS",
                "sip:100@example.com",
                "<sip:999@example.com>",
                "<sip:100@example.com>",
                None,
                3,
            ),
        ),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Options,
    );
    assert_eq!(rig.event(EventCounter::TrapBans), 3);
    assert_eq!(rig.hits(SignatureKind::Trap, "100"), 3);
    // A MESSAGE to the trap, the trap as From (a caller's own number), 1000 and 100 as a host
    // or a parameter: no trap.
    let innocent = [
        request(
            "MESSAGE",
            "sip:100@example.com",
            "<sip:999@example.com>",
            "<sip:100@example.com>",
            None,
            4,
        ),
        request(
            "INVITE",
            "sip:300@example.com",
            "<sip:100@example.com>",
            "<sip:300@example.com>",
            None,
            5,
        ),
        request(
            "REGISTER",
            "sip:100",
            "<sip:1000@example.com>",
            "<sip:1000@100;user=100>",
            None,
            6,
        ),
    ];
    for (i, payload) in innocent.iter().enumerate() {
        let before = rig.event(EventCounter::BansIssued);
        let got = rig
            .dp
            .run(&udp(&format!("198.51.100.{}", 53 + i), payload))
            .unwrap();
        assert_eq!(got, XDP_PASS, "innocent request {i} passes");
        assert_eq!(rig.event(EventCounter::BansIssued), before);
    }
    assert_eq!(rig.event(EventCounter::TrapBans), 3);
}

#[test]
fn exempt_sources_and_monitor_mode() {
    let cfg = config();
    let mut rig = rig(&cfg);
    let scanner = register_with_ua("friendly-scanner", 1);
    // Allowlisted: never scanned.
    rig.dp
        .maps
        .allow("198.51.100.70/32".parse().unwrap())
        .unwrap();
    rig.expect(
        &udp("198.51.100.70", &scanner),
        XDP_PASS,
        Verdict::PassAllowlisted,
        MethodClass::Register,
    );
    // Verified (the server accepted its credentials): not scanned.
    let mut verified = cfg;
    verified.flags |= flags::ANSWERS;
    verified.admission = RateLimit::UNLIMITED;
    rig.dp.maps.write_config(&verified).unwrap();
    let mut verified_map: BpfHashMap<MapData, sip_xdp_common::SourceKey, VerifiedSource> =
        BpfHashMap::try_from(rig.dp.open_map(map_names::VERIFIED).unwrap()).unwrap();
    verified_map
        .insert(
            sip_xdp_common::SourceKey {
                addr: addr_key(ip("198.51.100.71")),
            },
            VerifiedSource {
                verified_until_ns: u64::MAX / 2,
                verified_since_ns: 1,
                successes: 1,
            },
            0,
        )
        .unwrap();
    let scans = rig.event(EventCounter::Scans);
    rig.expect(
        &udp("198.51.100.71", &scanner),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(
        rig.event(EventCounter::Scans),
        scans,
        "verified sources are not scanned"
    );
    rig.dp.maps.write_config(&cfg).unwrap();
    // Protected: the request is dropped, the source never banned.
    rig.dp
        .maps
        .protect("198.51.100.72/32".parse().unwrap())
        .unwrap();
    rig.expect(
        &udp("198.51.100.72", &scanner),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    assert_eq!(rig.source("198.51.100.72").unwrap().banned_until_ns, 0);
    assert_eq!(rig.event(EventCounter::BansIssued), 0);
    // Monitor mode: counted and recorded as a would-ban, passed.
    let mut monitor = cfg;
    monitor.flags |= flags::MONITOR;
    rig.dp.maps.write_config(&monitor).unwrap();
    rig.expect(
        &udp("198.51.100.73", &scanner),
        XDP_PASS,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    assert_eq!(rig.event(EventCounter::WouldBans), 1);
    assert_eq!(rig.event(EventCounter::BansIssued), 0);
    assert!(
        rig.events()
            .iter()
            .any(|e| e.kind == ban_event_kind::WOULD_BAN && e.limit_class == BAN_CLASS_SIGNATURE)
    );
    // Signatures off: nothing scanned.
    let mut off = cfg;
    off.flags &= !flags::SIGNATURES;
    rig.dp.maps.write_config(&off).unwrap();
    let scans = rig.event(EventCounter::Scans);
    rig.expect(
        &udp("198.51.100.74", &scanner),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(rig.event(EventCounter::Scans), scans);
}

#[test]
fn the_list_changes_at_runtime_without_a_reload() {
    let mut rig = rig(&config());
    let ua = register_with_ua("PPLSIP/1.0", 1);
    rig.expect(
        &udp("198.51.100.80", &ua),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    rig.add(SignatureKind::Fingerprint, "PPLSIP");
    rig.expect(
        &udp("198.51.100.81", &ua),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    let key = SignatureKey::new(SignatureKind::Fingerprint, b"pplsip").unwrap();
    rig.signatures.as_mut().unwrap().remove(&key).unwrap();
    rig.expect(
        &udp("198.51.100.82", &ua),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
}

#[test]
fn ipv6_vlan_tcp_and_folded_headers() {
    let mut rig = rig(&config());
    let scanner = register_with_ua("friendly-scanner", 1);
    rig.expect(
        &Frame::udp(ip("2001:db8:5::20"), ip(SERVER6), 5060, &scanner)
            .vlan(100)
            .build(),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    // Over TCP, behind keep-alive CRLFs; the ban then holds on UDP too.
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(&request(
        "REGISTER",
        "sip:example.com",
        "<sip:100@example.com>",
        "<sip:100@example.com>",
        None,
        2,
    ));
    rig.expect(
        &Frame::tcp(
            ip("198.51.100.90"),
            ip(SERVER),
            5060,
            tcp_flags::ACK | tcp_flags::PSH,
            &stream,
        )
        .build(),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    rig.expect(
        &udp("198.51.100.90", &register_with_ua("Zoiper", 3)),
        XDP_DROP,
        Verdict::DropBanned,
        MethodClass::Unread,
    );
    // A folded User-Agent line carries the scanner's name on its continuation.
    let folded = String::from_utf8(register_with_ua("Mozilla", 4))
        .unwrap()
        .replace(
            "User-Agent: Mozilla\r\n",
            "User-Agent: Mozilla\r\n  friendly-scanner\r\n",
        );
    rig.expect(
        &udp("198.51.100.91", folded.as_bytes()),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
}

#[test]
fn scan_limits_hostile_shapes_and_a_missing_scan_program() {
    let mut rig = rig(&config());
    // A User-Agent past the bytes scanned: not matched, counted as truncated.
    let padding = "X-Pad: ".to_string() + &"a".repeat(MAX_SCAN_BYTES) + "\r\n";
    let late = String::from_utf8(register_with_ua("friendly-scanner", 1))
        .unwrap()
        .replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{padding}"),
            1,
        );
    rig.expect(
        &udp("198.51.100.100", late.as_bytes()),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(rig.event(EventCounter::ScanTruncated), 1);
    // A token longer than any signature matches nothing, even when a signature starts it.
    let long = register_with_ua(&format!("friendly-scanner{}", "x".repeat(40)), 2);
    rig.expect(
        &udp("198.51.100.101", &long),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    // A UDP length claiming more than the frame holds never reaches the scan.
    let scanner = register_with_ua("friendly-scanner", 3);
    let mut lying = Frame::udp(ip("198.51.100.102"), ip(SERVER), 5060, &scanner).build();
    let udp_len_at = lying.len() - scanner.len() - 4;
    lying[udp_len_at..udp_len_at + 2].copy_from_slice(&4000u16.to_be_bytes());
    rig.expect(
        &lying,
        XDP_DROP,
        Verdict::DropMalformed,
        MethodClass::Malformed,
    );
    // A first fragment is scanned as far as it goes: the User-Agent it holds bans.
    rig.expect(
        &Frame::udp(ip("198.51.100.105"), ip(SERVER), 5060, &scanner)
            .fragment(0, true, 77)
            .build(),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    // A request cut inside its headers, a request line alone: scanned as far as they go.
    let cut = &register_with_ua("friendly-scan", 4)[..60];
    rig.expect(
        &udp("198.51.100.103", cut),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    rig.expect(
        &udp(
            "198.51.100.104",
            b"REGISTER sip:100@example.com SIP/2.0\r\n",
        ),
        XDP_DROP,
        Verdict::DropSignature,
        MethodClass::Register,
    );
    assert_eq!(rig.event(EventCounter::FingerprintBans), 1);
    assert_eq!(rig.event(EventCounter::TrapBans), 1);

    // The flag on without the scan program in its slot: requests pass unscanned and count.
    let mut bare = rig_with(
        &config(),
        &LoadOptions {
            scan: false,
            ..Default::default()
        },
    );
    bare.expect(
        &udp("198.51.100.110", &register_with_ua("friendly-scanner", 5)),
        XDP_PASS,
        Verdict::Pass,
        MethodClass::Register,
    );
    assert_eq!(bare.event(EventCounter::ScanFailures), 1);
    assert_eq!(bare.event(EventCounter::Scans), 0);
}

/// A random request of the shapes scanners and phones send, built from tokens that are
/// signatures, near misses of them and ordinary words, in headers of every form the scan reads
/// (any case, compact names, display names quoted or bare, folded lines, CRLF before the
/// request line, padding past the bytes scanned, lookups past the cap).
fn random_request(rng: &mut Rng, method: &str) -> Vec<u8> {
    const WORDS: [&str; 20] = [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "100",
        "admin",
        "Friendly-Scanner",
        "friendly-scanners",
        "sipclient",
        "1000",
        "admin1",
        "sip",
        "cli",
        "Yealink",
        "alice",
        "example.com",
        "SIP-T46S",
        "0.3.4",
        "x",
        "SIPVICIOUS",
        "friendly-scanneraaaaaaaaaaaaaaaaaa",
    ];
    const SEPARATORS: [&str; 8] = [" ", "/", "(", ") ", "; ", ",", "-", "\t"];
    let word = |rng: &mut Rng| rng.pick(&WORDS).to_string();
    let phrase = |rng: &mut Rng| {
        let mut text = word(rng);
        for _ in 0..rng.below(4) {
            let separator: &&str = rng.pick(&SEPARATORS);
            text.push_str(separator);
            text.push_str(&word(rng));
        }
        text
    };
    let uri = |rng: &mut Rng| {
        if rng.percent(30) {
            format!("sip:{}", word(rng))
        } else {
            format!("sip:{}@{}", word(rng), word(rng))
        }
    };
    let name_addr = |rng: &mut Rng| match rng.below(4) {
        0 => format!("<{}>", uri(rng)),
        1 => format!("\"{}\" <{}>", phrase(rng), uri(rng)),
        2 => format!("{}<{}>;tag={}", word(rng), uri(rng), word(rng)),
        _ => format!("{};tag={}", uri(rng), word(rng)),
    };
    let case = |rng: &mut Rng, name: &str| match rng.below(3) {
        0 => name.to_string(),
        1 => name.to_ascii_lowercase(),
        _ => name.to_ascii_uppercase(),
    };
    let mut headers = vec![
        "Via: SIP/2.0/UDP 198.51.100.10:5062;branch=z9hG4bK776".to_string(),
        "Call-ID: 1@198.51.100.10".to_string(),
        format!("CSeq: 1 {method}"),
    ];
    let from = if rng.percent(30) {
        "f".to_string()
    } else {
        case(rng, "From")
    };
    headers.push(format!("{from}: {}", name_addr(rng)));
    let to = if rng.percent(30) {
        "t".to_string()
    } else {
        case(rng, "To")
    };
    headers.push(format!(
        "{to}{}: {}",
        if rng.percent(10) { " " } else { "" },
        name_addr(rng)
    ));
    if rng.percent(70) {
        let mut ua = format!("{}: {}", case(rng, "User-Agent"), phrase(rng));
        if rng.percent(15) {
            ua.push_str(&format!("\r\n {}", phrase(rng)));
        }
        headers.push(ua);
    }
    if rng.percent(15) {
        headers.push(format!("X-Pad: {}", "p".repeat(rng.range(200, 1100))));
    }
    if rng.percent(10) {
        // Many tokens in one User-Agent: past the lookup cap.
        let many: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        headers.push(format!("User-Agent: {}", many.join(" ")));
    }
    // Shuffle (Fisher-Yates).
    for i in (1..headers.len()).rev() {
        headers.swap(i, rng.below(i + 1));
    }
    let prefix = if rng.percent(10) { "\r\n" } else { "" };
    let mut text = format!("{prefix}{method} {} SIP/2.0\r\n", uri(rng));
    for header in headers {
        text.push_str(&header);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    text.into_bytes()
}

#[test]
fn the_scan_agrees_with_the_model_on_generated_requests() {
    use sip_xdp_tests::model::signatures::{Scanned, Signatures, scan};
    let seed = env_u64("SIP_XDP_DIFF_SEED", DEFAULT_SEED);
    let count = env_u64("SIP_XDP_SIGNATURE_CASES", 1500) as usize;
    let mut rng = Rng::new(seed);
    let mut rig = rig(&config());
    let mut model = Signatures::default();
    for token in [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "vaxsipuseragent",
    ] {
        model.insert(SignatureKind::Fingerprint, token);
    }
    model.insert(SignatureKind::Trap, "100");
    rig.add(SignatureKind::Trap, "admin");
    model.insert(SignatureKind::Trap, "admin");
    let methods = [
        ("REGISTER", MethodClass::Register),
        ("INVITE", MethodClass::Invite),
        ("OPTIONS", MethodClass::Options),
        ("MESSAGE", MethodClass::Message),
        ("SUBSCRIBE", MethodClass::Subscribe),
    ];
    let mut seen = std::collections::HashMap::new();
    for i in 0..count {
        let (method, class) = *rng.pick(&methods);
        let payload = random_request(&mut rng, method);
        // A source of its own per request, so no ban of an earlier one decides this one.
        let src = format!("2001:db8:51::{:x}", i + 1);
        let expected = scan(&payload, class, &model);
        let before = rig.dp.maps.counters().unwrap();
        // Requests behind CRLF keep-alives go over TCP, as a stream carries them.
        let frame = if payload.starts_with(b"\r\n") {
            Frame::tcp(
                ip(&src),
                ip(SERVER6),
                5060,
                tcp_flags::ACK | tcp_flags::PSH,
                &payload,
            )
            .build()
        } else {
            udp(&src, &payload)
        };
        let action = rig.dp.run(&frame).unwrap();
        let after = rig.dp.maps.counters().unwrap();
        let delta = |c: EventCounter| after.event(c) - before.event(c);
        let got = if delta(EventCounter::FingerprintBans) == 1 {
            Scanned::Match(SignatureKind::Fingerprint)
        } else if delta(EventCounter::TrapBans) == 1 {
            Scanned::Match(SignatureKind::Trap)
        } else if delta(EventCounter::ScanTruncated) == 1 {
            Scanned::CutShort
        } else {
            Scanned::Nothing
        };
        assert_eq!(
            got,
            expected,
            "request {i} (seed {seed:#x}, SIP_XDP_DIFF_SEED reproduces it):\n{}",
            String::from_utf8_lossy(&payload)
        );
        let dropped = matches!(expected, Scanned::Match(_));
        let verdict = if dropped {
            Verdict::DropSignature
        } else {
            Verdict::Pass
        };
        assert_eq!(
            (
                action,
                after.packets(verdict, class) - before.packets(verdict, class)
            ),
            (if dropped { XDP_DROP } else { XDP_PASS }, 1),
            "request {i} counted as {verdict:?} {class:?}:\n{}",
            String::from_utf8_lossy(&payload)
        );
        assert_eq!(delta(EventCounter::Scans), 1, "request {i} was scanned");
        *seen.entry(format!("{expected:?}")).or_insert(0) += 1;
    }
    // Every outcome was generated, often enough to mean something.
    for outcome in ["Nothing", "CutShort", "Match(Fingerprint)", "Match(Trap)"] {
        let n = seen.get(outcome).copied().unwrap_or(0);
        assert!(n >= count / 50, "{outcome}: only {n} of {count} requests");
    }
}
