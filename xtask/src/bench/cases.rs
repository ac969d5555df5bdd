//! The cases: which program runs on which frame under which config, the action and counter
//! each must show, the targets, and the figures each collects.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sip_xdp::reference::{REF_LRU_PROGRAM, REF_PASS_PROGRAM};
use sip_xdp_common::{Config, LimitClass, MethodClass, RateLimit, Verdict, flags};
use sip_xdp_tests::{
    harness::{TC_ACT_OK, XDP_DROP, XDP_PASS},
    packet::{self, Frame, tcp_flags},
};

pub(super) const SECOND_NS: u64 = sip_xdp_common::NS_PER_SEC;

/// Which program a case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Subject {
    SipXdp,
    /// The TC egress program, on a frame the server sends.
    SipXdpEgress,
    RefPass,
    RefLru,
}

impl Subject {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::SipXdp => "sip_xdp",
            Self::SipXdpEgress => sip_xdp_common::EGRESS_PROGRAM_NAME,
            Self::RefPass => REF_PASS_PROGRAM,
            Self::RefLru => REF_LRU_PROGRAM,
        }
    }
}

/// A target: the case's median at most `max_ratio` times the reference's median.
#[derive(Clone, Copy, Debug)]
pub(super) struct Target {
    pub(super) reference: Subject,
    pub(super) max_ratio: f64,
}

/// What a case needs from the maps besides its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lists {
    /// The allowlist holds the allowlisted bench source (a /32): the usual state.
    WithAllowEntry,
    /// Both tries empty.
    Empty,
}

pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) frame_desc: String,
    pub(super) subject: Subject,
    pub(super) frame: Vec<u8>,
    pub(super) config: Config,
    pub(super) lists: Lists,
    pub(super) action: u32,
    /// The (verdict, class) counter each run must bump (sip-xdp cases only).
    pub(super) counter: Option<(Verdict, MethodClass)>,
    pub(super) target: Option<Target>,
    /// Extra rows that explain where the cost goes; no target.
    pub(super) variant: bool,
    /// Whether the banned prefix's ban counts as in force for the program's check before the
    /// payload (`PREFIX_BANS_UNTIL` set to its end), or as if no prefix ban were (set to 0).
    pub(super) prefix_ban_in_force: bool,
    pub(super) samples: Vec<Sample>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Sample {
    /// Mean ns per run as the kernel timed it (an integer: the kernel divides and truncates).
    pub(super) kernel_ns: f64,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    pub(super) median: f64,
    pub(super) best: f64,
    pub(super) worst: f64,
}

fn stats(mut values: Vec<f64>) -> Stats {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return Stats::default();
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Stats {
        median,
        best: values[0],
        worst: values[n - 1],
    }
}

impl Case {
    pub(super) fn kernel(&self) -> Stats {
        stats(self.samples.iter().map(|s| s.kernel_ns).collect())
    }
}

// Sources, one per case family, so each case finds exactly the per-source state it expects.
const SRC_BUDGET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub(super) const SRC_ALLOWED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub(super) const SRC_BANNED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
const SRC_MALFORMED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 40);
const SRC_VLAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const SRC_STATELESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 60);
const SRC_LONG_URI: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 70);
pub(super) const SRC_SPENDER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 110);
pub(super) const SRC_VERIFIED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
pub(super) const SRC_GUESSER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 90);
const SRC_FORGED: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const SRC_HEADERS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 120);
const SRC_TCP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 130);
/// Sources of the banned prefix (203.0.113.0/24, banned in setup): the two that ban it, and the
/// untracked one each measured packet comes from.
pub(super) const SRC_PREFIX_FIRST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub(super) const SRC_PREFIX_SECOND: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
const SRC_IN_BANNED_PREFIX: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 0x10);
const DST_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 1);

/// Default config, except the buckets: ~4.3e9 packets/s (interval 1 ns) with a burst of 2^40.
/// Every packet still walks its bucket (lookup, GCRA check, TAT write), but no run of this
/// benchmark can drain it: each packet moves the TAT 1 ns, and 2^40 ns is about 18 minutes.
pub(super) fn budget_config() -> Config {
    let mut config = Config::DEFAULT;
    config.limits = [RateLimit::per_second(u32::MAX as u64, 1 << 40); LimitClass::COUNT];
    never_dry_prefixes(config)
}

/// [`budget_config`] with the scan program on (`flags::SIGNATURES`): every passed REGISTER is
/// scanned for the signatures `Bench::load` writes.
fn signatures_config() -> Config {
    let mut config = budget_config();
    config.flags |= sip_xdp_common::flags::SIGNATURES;
    config
}

/// [`budget_config`] with a trace running (its end far ahead): every SIP packet pays the trace's
/// source lookup (`Bench::load` traces 203.0.113.128/25, where no bench source is).
fn tracing_config() -> Config {
    let mut config = budget_config();
    config.trace_until_ns = u64::MAX;
    config
}

/// `config` with prefix buckets that no run can drain: every packet of an unverified source
/// still draws from its /24 (the prefix path), and no case's prefix gets banned by another's.
fn never_dry_prefixes(mut config: Config) -> Config {
    config.prefix_limits = [RateLimit::per_second(u32::MAX as u64, 1 << 40); LimitClass::COUNT];
    config
}

/// [`budget_config`] with the answers on: verification, admission budget and reflection guard
/// in play, none of them able to run dry (or ban) during a run.
pub(super) fn answers_config() -> Config {
    let mut config = budget_config();
    config.flags |= flags::ANSWERS;
    config.verified_limits = config.limits;
    // The shared buckets keep their arrival time between cases: 2^50 ns (13 days) of
    // tolerance stays above the hour the spent-budget case puts on the admission bucket.
    let never_dry = RateLimit::per_second(u32::MAX as u64, 1 << 50);
    config.admission = never_dry;
    config.reflection_per_destination = never_dry;
    config.reflection_total = never_dry;
    config.auth_max_failures = u32::MAX;
    config.auth_max_failures_verified = u32::MAX;
    config.auth_max_flow_failures = u32::MAX;
    config.auth_max_unanswered = u32::MAX;
    config
}

/// The answers on and an admission budget that is already spent (one packet an hour, burst 1):
/// every unverified new source's REGISTER is dropped before it makes state.
pub(super) fn spent_admission_config() -> Config {
    let mut config = answers_config();
    config.admission = RateLimit::per_interval(1, 3600 * SECOND_NS, 1);
    config
}

/// A response the registrar sends to `client`'s port 5062: `code`, answering `method`.
pub(super) fn answer_frame(client: Ipv4Addr, code: u16, reason: &str, method: &str) -> Vec<u8> {
    packet::answer_frame(
        v4(DST_V4),
        v4(client),
        5062,
        &packet::answer(code, reason, method, 1),
    )
}

/// REGISTER at 1/s with a burst of 1 and a one-hour first ban: the second REGISTER bans.
pub(super) fn ban_config() -> Config {
    let mut config = never_dry_prefixes(Config::DEFAULT);
    config.limits[LimitClass::Register as usize] = RateLimit::per_second(1, 1);
    config.ban_base_ns = 3600 * SECOND_NS;
    config.ban_max_ns = 24 * 3600 * SECOND_NS;
    config
}

/// [`ban_config`] for prefixes: a /24's REGISTER bucket of 1/s with a burst of 1 (sources
/// unlimited), so the second source's REGISTER bans the prefix, for an hour.
pub(super) fn prefix_ban_config() -> Config {
    let mut config = ban_config();
    config.limits[LimitClass::Register as usize] = RateLimit::UNLIMITED;
    config.prefix_limits[LimitClass::Register as usize] = RateLimit::per_second(1, 1);
    config
}

/// REGISTER not limited at all: the program keeps no per-source state for it.
fn unlimited_register_config() -> Config {
    let mut config = never_dry_prefixes(Config::DEFAULT);
    config.limits[LimitClass::Register as usize] = RateLimit::UNLIMITED;
    config
}

pub(super) fn v4(src: Ipv4Addr) -> IpAddr {
    IpAddr::V4(src)
}

pub(super) fn register_frame(src: Ipv4Addr) -> Vec<u8> {
    Frame::sip(v4(src), v4(DST_V4), &packet::register("100", 1)).build()
}

/// A REGISTER whose header block (everything after the request line) is `header_bytes` long,
/// as a desk phone's is: Via, From, To, Contact with instance id, Allow, Supported, User-Agent,
/// Expires, padded with an X- header to the exact size.
fn register_frame_with_headers(src: Ipv4Addr, header_bytes: usize) -> Vec<u8> {
    let line = "REGISTER sip:example.com SIP/2.0\r\n";
    let mut headers = String::from(
        "Via: SIP/2.0/UDP 198.51.100.120:5062;branch=z9hG4bK-524287-1---9bc1d2e3f4a5b6c7;rport\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:100@198.51.100.120:5062;transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-0004f2a1b2c3>\"\r\n\
         To: \"Front Desk\" <sip:100@example.com>\r\n\
         From: \"Front Desk\" <sip:100@example.com>;tag=8f2a91c4\r\n\
         Call-ID: 5b0a2c1e-9d7f4e3a@198.51.100.120\r\n\
         CSeq: 2 REGISTER\r\n\
         Expires: 3600\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
         Supported: replaces, path, timer, eventlist\r\n\
         User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
         Content-Length: 0\r\n",
    );
    let fixed = headers.len() + "X-Pad: \r\n\r\n".len();
    assert!(
        fixed <= header_bytes,
        "the header block is {fixed} B before padding"
    );
    headers.push_str(&format!(
        "X-Pad: {}\r\n\r\n",
        "x".repeat(header_bytes - fixed)
    ));
    let payload = format!("{line}{headers}");
    assert_eq!(payload.len() - line.len(), header_bytes);
    Frame::sip(v4(src), v4(DST_V4), payload.as_bytes()).build()
}

pub(super) fn cases() -> Vec<Case> {
    let register = packet::register("100", 1);
    let register_v4 = register_frame(SRC_BUDGET);
    let register_desc = format!("IPv4/UDP 5060, REGISTER, {} B frame", register_v4.len());
    let dns = Frame::udp(v4(SRC_BUDGET), v4(DST_V4), 53, &[0x5a; 40]).build();
    let https_syn = Frame::tcp(v4(SRC_BUDGET), v4(DST_V4), 443, tcp_flags::SYN, &[]).build();
    let sip_syn = Frame::tcp(v4(SRC_TCP), v4(DST_V4), 5060, tcp_flags::SYN, &[]).build();
    let banned_syn = Frame::tcp(v4(SRC_BANNED), v4(DST_V4), 5060, tcp_flags::SYN, &[]).build();
    let register_tcp = Frame::tcp(
        v4(SRC_TCP),
        v4(DST_V4),
        5060,
        tcp_flags::PSH | tcp_flags::ACK,
        &packet::stream_request("REGISTER", "sip:example.com", 1, "TCP"),
    )
    .build();
    let register_headers = register_frame_with_headers(SRC_HEADERS, 600);
    let malformed_payload = b"XYZZY sip:100@example.com SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n\r\n";
    let malformed = Frame::sip(v4(SRC_MALFORMED), v4(DST_V4), malformed_payload).build();
    let binary: Vec<u8> = (0..200u32).map(|i| (i * 7 + 0x41) as u8 | 0x80).collect();
    let malformed_binary = Frame::sip(v4(SRC_MALFORMED), v4(DST_V4), &binary).build();
    let register_v6 = Frame::sip(IpAddr::V6(SRC_V6), IpAddr::V6(DST_V6), &register).build();
    let register_vlan = Frame::sip(v4(SRC_VLAN), v4(DST_V4), &register)
        .vlan(100)
        .build();
    let long_user = "1".repeat(150);
    let register_long = Frame::sip(
        v4(SRC_LONG_URI),
        v4(DST_V4),
        &packet::register(&long_user, 1),
    )
    .build();
    let response = Frame::sip(v4(SRC_STATELESS), v4(DST_V4), &packet::response(200, "OK")).build();
    let mut dns_reply = Frame::udp(v4(DST_V4), v4(SRC_GUESSER), 40_000, &[0x5a; 60]);
    dns_reply.src_port = 53;
    let dns_reply = dns_reply.build();

    let vs_pass = |max_ratio| {
        Some(Target {
            reference: Subject::RefPass,
            max_ratio,
        })
    };
    let vs_lru = |max_ratio| {
        Some(Target {
            reference: Subject::RefLru,
            max_ratio,
        })
    };
    let case = |name: &'static str,
                frame_desc: String,
                frame: Vec<u8>,
                config: Config,
                action: u32,
                counter: (Verdict, MethodClass),
                target: Option<Target>| Case {
        name,
        frame_desc,
        subject: Subject::SipXdp,
        frame,
        config,
        lists: Lists::WithAllowEntry,
        action,
        counter: Some(counter),
        target,
        variant: false,
        prefix_ban_in_force: false,
        samples: Vec::new(),
    };
    let variant = |name, frame_desc, frame, config, action, counter| Case {
        variant: true,
        ..case(name, frame_desc, frame, config, action, counter, None)
    };
    let egress = |name: &'static str, frame_desc: &str, frame: Vec<u8>, target| Case {
        name,
        frame_desc: format!("{frame_desc}, {} B frame", frame.len()),
        subject: Subject::SipXdpEgress,
        frame,
        config: answers_config(),
        lists: Lists::WithAllowEntry,
        action: TC_ACT_OK,
        counter: None,
        target,
        variant: false,
        prefix_ban_in_force: false,
        samples: Vec::new(),
    };
    let reference = |subject: Subject, name: &'static str| Case {
        name,
        frame_desc: register_desc.clone(),
        subject,
        frame: register_v4.clone(),
        config: budget_config(),
        lists: Lists::WithAllowEntry,
        action: XDP_PASS,
        counter: None,
        target: None,
        variant: false,
        prefix_ban_in_force: false,
        samples: Vec::new(),
    };

    vec![
        reference(Subject::RefPass, "ref_pass (bare XDP_PASS)"),
        reference(Subject::RefLru, "ref_lru (1 LRU lookup + 1 update)"),
        case(
            "non-SIP pass",
            format!("IPv4/UDP to port 53, {} B frame", dns.len()),
            dns,
            budget_config(),
            XDP_PASS,
            (Verdict::PassNotSip, MethodClass::NotSip),
            vs_pass(1.3),
        ),
        case(
            "allowlisted REGISTER",
            "as ref frame, source in ALLOWLIST (/32)".to_owned(),
            register_frame(SRC_ALLOWED),
            budget_config(),
            XDP_PASS,
            (Verdict::PassAllowlisted, MethodClass::Register),
            None,
        ),
        case(
            "REGISTER within budget",
            format!("the ref frame ({} B), tracked source", register_v4.len()),
            register_v4.clone(),
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            vs_lru(1.5),
        ),
        case(
            "banned drop",
            "as ref frame, source banned for 1 h: dropped on its addresses, payload unread"
                .to_owned(),
            register_frame(SRC_BANNED),
            ban_config(),
            XDP_DROP,
            (Verdict::DropBanned, MethodClass::Unread),
            vs_pass(2.5),
        ),
        case(
            "REGISTER within budget, 600 B header block",
            format!(
                "a desk phone's REGISTER, 600 B of headers after the request line, {} B frame, \
                 tracked source",
                register_headers.len()
            ),
            register_headers,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            vs_pass(6.5),
        ),
        case(
            "REGISTER within budget, 600 B header block, signatures on",
            "as above, with the scan program reading its headers for the default fingerprints \
             and a trap account (none match)"
                .to_owned(),
            register_frame_with_headers(SRC_HEADERS, 600),
            signatures_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            None,
        ),
        case(
            "REGISTER within budget, a trace running for another source",
            format!(
                "the ref frame ({} B), tracked source, `sip-xdp trace` on for a /24 it is not in",
                register_v4.len()
            ),
            register_v4.clone(),
            tracing_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            None,
        ),
        case(
            "TCP SYN to 5060 (connection bucket)",
            format!(
                "IPv4/TCP SYN to port 5060, tracked source, {} B frame",
                sip_syn.len()
            ),
            sip_syn,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::TcpSyn),
            vs_lru(1.5),
        ),
        Case {
            prefix_ban_in_force: true,
            ..case(
                "forged-source flood inside a banned /24",
                "as ref frame, a source never seen in a prefix banned for 1 h: dropped by the \
                 prefix's ban before the payload"
                    .to_owned(),
                register_frame(SRC_IN_BANNED_PREFIX),
                prefix_ban_config(),
                XDP_DROP,
                (Verdict::DropBanned, MethodClass::Unread),
                vs_lru(1.0),
            )
        },
        case(
            "malformed drop",
            format!(
                "IPv4/UDP 5060, unknown method `XYZZY`, {} B frame",
                malformed.len()
            ),
            malformed,
            budget_config(),
            XDP_DROP,
            (Verdict::DropMalformed, MethodClass::Malformed),
            None,
        ),
        case(
            "IPv6 REGISTER",
            format!(
                "IPv6/UDP 5060, REGISTER, {} B frame, tracked",
                register_v6.len()
            ),
            register_v6,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            None,
        ),
        case(
            "VLAN REGISTER",
            format!(
                "802.1Q + IPv4/UDP 5060, REGISTER, {} B frame, tracked",
                register_vlan.len()
            ),
            register_vlan,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            None,
        ),
        case(
            "REGISTER, answers on, unverified (admission budget)",
            "the ref frame, tracked source; the budget shared by unverified sources".to_owned(),
            register_v4.clone(),
            answers_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            vs_lru(1.6),
        ),
        case(
            "REGISTER, answers on, verified source",
            "as ref frame, source verified (its own buckets)".to_owned(),
            register_frame(SRC_VERIFIED),
            answers_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
            vs_lru(1.5),
        ),
        case(
            "forged-source flood beyond the admission budget",
            "as ref frame, a new unverified source every packet (untracked, its /24 not \
             banned), budget spent: no state made"
                .to_owned(),
            register_frame(SRC_FORGED),
            spent_admission_config(),
            XDP_DROP,
            (Verdict::DropAdmission, MethodClass::Register),
            vs_lru(1.5),
        ),
        egress(
            "egress: 401 to an unverified client",
            "401 answering REGISTER, its flow's challenge still open: a failure counted, \
             reflection guard",
            answer_frame(SRC_GUESSER, 401, "Unauthorized", "REGISTER"),
            vs_lru(2.0),
        ),
        egress(
            "egress: 200 to a verified client",
            "200 answering REGISTER: the verification renewed",
            answer_frame(SRC_VERIFIED, 200, "OK", "REGISTER"),
            vs_lru(2.0),
        ),
        egress(
            "egress: not from a SIP port",
            "a DNS reply the host sends: parsed to the UDP ports only",
            dns_reply,
            vs_pass(5.0),
        ),
        Case {
            prefix_ban_in_force: true,
            ..variant(
                "REGISTER within budget, a prefix ban in force elsewhere",
                "the ref frame; its /24 is looked up before the payload too, as while any \
                 prefix ban lies ahead"
                    .to_owned(),
                register_v4.clone(),
                budget_config(),
                XDP_PASS,
                (Verdict::Pass, MethodClass::Register),
            )
        },
        variant(
            "non-SIP TCP",
            format!("IPv4/TCP SYN to port 443, {} B frame", https_syn.len()),
            https_syn,
            budget_config(),
            XDP_PASS,
            (Verdict::PassNotSip, MethodClass::NotSip),
        ),
        variant(
            "banned source's TCP SYN",
            format!(
                "IPv4/TCP SYN to port 5060 from the banned source, {} B frame",
                banned_syn.len()
            ),
            banned_syn,
            ban_config(),
            XDP_DROP,
            (Verdict::DropBanned, MethodClass::TcpSyn),
        ),
        variant(
            "REGISTER over TCP",
            format!(
                "IPv4/TCP 5060, a segment starting with a REGISTER, tracked source, {} B frame",
                register_tcp.len()
            ),
            register_tcp,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
        ),
        variant(
            "non-IP (ARP)",
            "ARP request, 60 B frame".to_owned(),
            packet::arp_frame(),
            budget_config(),
            XDP_PASS,
            (Verdict::PassNotSip, MethodClass::NotSip),
        ),
        variant(
            "SIP response (its own bucket)",
            "IPv4/UDP 5060, `SIP/2.0 200 OK`, tracked source".to_owned(),
            response,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Response),
        ),
        variant(
            "REGISTER, class unlimited",
            "as ref frame, REGISTER not limited: no bucket, untracked".to_owned(),
            register_frame(SRC_STATELESS),
            unlimited_register_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
        ),
        Case {
            lists: Lists::Empty,
            ..variant(
                "REGISTER within budget, empty ALLOWLIST",
                "the ref frame; both LPM tries empty".to_owned(),
                register_v4.clone(),
                budget_config(),
                XDP_PASS,
                (Verdict::Pass, MethodClass::Register),
            )
        },
        variant(
            "REGISTER within budget, 150-char user",
            format!(
                "REGISTER sip:1…1@example.com, request line {} B, {} B frame",
                "REGISTER sip:@example.com SIP/2.0".len() + long_user.len(),
                register_long.len()
            ),
            register_long,
            budget_config(),
            XDP_PASS,
            (Verdict::Pass, MethodClass::Register),
        ),
        variant(
            "malformed drop, 200 B binary",
            "IPv4/UDP 5060, 200 B without CR/LF (full 192 B line scan)".to_owned(),
            malformed_binary,
            budget_config(),
            XDP_DROP,
            (Verdict::DropMalformed, MethodClass::Malformed),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_give_median_best_and_worst() {
        let s = stats(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.best, s.worst), (3.0, 1.0, 5.0));
        assert_eq!(stats(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(stats(Vec::new()).median, 0.0);
    }
}
