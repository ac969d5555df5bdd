//! `sip-xdp explain`: the report of sources in each state, built through real packets run by the
//! real program (BPF_PROG_TEST_RUN), and its predicted verdicts compared with the verdict the
//! program then gives the packet (read back from `COUNTERS`). With `--features system`, the
//! command itself against an attached program on a veth, text and JSON.
use std::net::IpAddr;

use ipnet::IpNet;
use sip_xdp::{
    explain::{Explanation, explain},
    maps::addr_key,
    state::{BanOrigin, StateFile},
    time::{NS_PER_SEC, monotonic_now_ns, now_wall_secs},
};
use sip_xdp_common::{Config, LimitClass, MethodClass, RateLimit, Verdict, flags};
use sip_xdp_tests::{
    harness::{Datapath, TC_ACT_OK, XDP_PASS},
    packet::*,
};

const HOUR_NS: u64 = 3600 * NS_PER_SEC;
const SERVER: &str = "203.0.113.1";
const SERVER6: &str = "2001:db8::1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Buckets that do not refill during a test (one packet an hour), with a burst of `burst`.
fn slow(burst: u64) -> RateLimit {
    RateLimit::per_interval(1, HOUR_NS, burst)
}

fn config(burst: u64) -> Config {
    let mut cfg = Config::DEFAULT;
    cfg.limits = [slow(burst); LimitClass::COUNT];
    cfg.ban_base_ns = HOUR_NS;
    cfg
}

/// The four packets `explain` predicts, in its order: REGISTER, INVITE, OPTIONS (UDP to 5060)
/// and a TCP SYN to 5060.
fn frames(src: &str, seq: u32) -> [Vec<u8>; 4] {
    let dst = ip(if src.contains(':') { SERVER6 } else { SERVER });
    let src = ip(src);
    [
        Frame::sip(src, dst, &register("100", seq)).build(),
        Frame::sip(src, dst, &request("INVITE", "sip:200@example.com", seq)).build(),
        Frame::sip(src, dst, &request("OPTIONS", "sip:example.com", seq)).build(),
        Frame::tcp(src, dst, 5060, tcp_flags::SYN, &[]).build(),
    ]
}

/// Runs `frame` and returns the (verdict, class) slot of `COUNTERS` that moved: the kernel's
/// verdict and the class it counted the packet under.
fn kernel_verdict(dp: &mut Datapath, frame: &[u8]) -> (&'static str, &'static str) {
    let before = dp.maps.counters().unwrap();
    dp.run(frame).unwrap();
    let after = dp.maps.counters().unwrap();
    let mut moved = Vec::new();
    for verdict in Verdict::ALL {
        for class in MethodClass::ALL {
            if after.packets(verdict, class) != before.packets(verdict, class) {
                moved.push((verdict.name(), class.name()));
            }
        }
    }
    assert_eq!(moved.len(), 1, "one packet moved {moved:?}");
    moved[0]
}

fn explained(dp: &Datapath, state: &StateFile, addr: &str) -> Explanation {
    explain(&dp.maps, state, ip(addr)).expect("explaining")
}

/// For each of the four packets in turn: what `explain` predicts now, then what the program
/// does with the packet. The prediction must be the kernel's verdict, and `expected`.
fn check_predictions(dp: &mut Datapath, state: &StateFile, addr: &str, expected: [&str; 4]) {
    for (i, frame) in frames(addr, 7).iter().enumerate() {
        let report = explained(dp, state, addr);
        let predicted = &report.predictions[i];
        let actual = kernel_verdict(dp, frame);
        assert_eq!(
            (predicted.verdict, predicted.counted_as),
            actual,
            "{addr}: {} predicted {predicted:?}, the kernel said {actual:?}",
            predicted.packet
        );
        assert_eq!(
            predicted.verdict, expected[i],
            "{addr} {}",
            predicted.packet
        );
    }
}

/// Sends REGISTERs from `addr` until one is not passed; returns how many passed.
fn registers(dp: &mut Datapath, addr: &str, count: u32) -> u32 {
    let mut passed = 0;
    for seq in 0..count {
        if dp.run(&frames(addr, seq)[0]).unwrap() == XDP_PASS {
            passed += 1;
        }
    }
    passed
}

#[test]
fn lists_bans_and_buckets_are_explained_and_predicted_as_the_kernel_decides() {
    sip_xdp_tests::needs_root!();
    let mut dp = Datapath::load(&config(5)).expect("loading the program");
    let mut state = StateFile::default();
    let now_wall = now_wall_secs();
    let now_ns = monotonic_now_ns();

    // Lists, as `allow add` / `deny add` / `protect add` / `ban add` leave them: the kernel's
    // entry and the state file's record with its comment or reason.
    state.add_allow(net("198.51.100.0/28"), Some("office NAT".into()));
    dp.maps.allow(net("198.51.100.0/28")).unwrap();
    state.add_deny(net("203.0.113.64/26"), Some("scanners".into()));
    dp.maps.deny(net("203.0.113.64/26"), 0).unwrap();
    state.add_protected(net("203.0.113.40/32"), Some("carrier trunk".into()));
    dp.maps.protect(net("203.0.113.40/32")).unwrap();
    for (addr, origin, reason) in [
        ("203.0.113.9/32", BanOrigin::Manual, "password guessing"),
        ("203.0.113.10/32", BanOrigin::Fail2ban, "asterisk"),
        (
            "203.0.113.11/32",
            BanOrigin::Crowdsec,
            "crowdsecurity/sip-bf",
        ),
    ] {
        state.add_ban(net(addr), origin, now_wall + 3600, Some(reason.into()));
        dp.maps.deny(net(addr), now_ns + HOUR_NS).unwrap();
    }

    // Allowlisted.
    let office = explained(&dp, &state, "198.51.100.5");
    assert_eq!(office.allowlist.len(), 1);
    let entry = &office.allowlist[0];
    assert_eq!(entry.cidr, net("198.51.100.0/28"));
    assert!(entry.live && entry.saved && entry.effective);
    assert_eq!(entry.comment.as_deref(), Some("office NAT"));
    assert!(office.bans.is_empty() && office.denylist.is_empty());
    check_predictions(&mut dp, &state, "198.51.100.5", ["pass_allowlisted"; 4]);

    // Denylisted, with its comment.
    let denied = explained(&dp, &state, "203.0.113.70");
    assert_eq!(denied.denylist.len(), 1);
    assert_eq!(denied.denylist[0].origin, "deny");
    assert_eq!(denied.denylist[0].comment.as_deref(), Some("scanners"));
    assert!(denied.denylist[0].effective);
    check_predictions(&mut dp, &state, "203.0.113.70", ["drop_denylisted"; 4]);

    // Banned by hand and by fail2ban: each with its origin, reason and time left.
    for (addr, origin, reason) in [
        ("203.0.113.9", "manual", "password guessing"),
        ("203.0.113.10", "fail2ban", "asterisk"),
        ("203.0.113.11", "crowdsec", "crowdsecurity/sip-bf"),
    ] {
        let report = explained(&dp, &state, addr);
        assert_eq!(report.bans.len(), 1, "{addr}: {:?}", report.bans);
        let ban = &report.bans[0];
        assert_eq!((ban.origin.as_str(), ban.reason.as_str()), (origin, reason));
        assert!(
            ban.active && (3590..=3600).contains(&ban.remaining_s),
            "{ban:?}"
        );
        check_predictions(&mut dp, &state, addr, ["drop_denylisted"; 4]);
    }

    // Unknown: nothing known, every packet passes; its REGISTER then makes it a source.
    let unknown = explained(&dp, &state, "203.0.113.50");
    assert!(unknown.source.is_none() && unknown.bans.is_empty());
    assert!(unknown.allowlist.is_empty() && unknown.denylist.is_empty());
    check_predictions(&mut dp, &state, "203.0.113.50", ["pass"; 4]);
    let known = explained(&dp, &state, "203.0.113.50")
        .source
        .expect("tracked");
    assert_eq!(known.packets, 4);
    let fill = |class: &str| {
        known
            .buckets
            .iter()
            .find(|b| b.class == class)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (fill("register").tokens_left, fill("register").burst),
        (4, 5)
    );
    assert_eq!(fill("connection").tokens_left, 4);

    // Part of its bucket drawn: the fill says what is left.
    assert_eq!(registers(&mut dp, "203.0.113.30", 3), 3);
    let partly = explained(&dp, &state, "203.0.113.30").source.unwrap();
    let register = partly
        .buckets
        .iter()
        .find(|b| b.class == "register")
        .unwrap();
    assert_eq!(register.tokens_left, 2);
    assert_eq!(partly.packets, 3);

    // Banned by rate: its REGISTER bucket runs dry with the next REGISTER, which the prediction
    // says; from then on it is dropped before its payload is read.
    assert_eq!(registers(&mut dp, "203.0.113.20", 5), 5);
    check_predictions(
        &mut dp,
        &state,
        "203.0.113.20",
        ["drop_rate", "drop_banned", "drop_banned", "drop_banned"],
    );
    let banned = explained(&dp, &state, "203.0.113.20");
    assert_eq!(banned.bans.len(), 1, "{:?}", banned.bans);
    let ban = &banned.bans[0];
    assert_eq!(ban.origin, "rate");
    assert_eq!(ban.class.as_deref(), Some("register"));
    assert_eq!(ban.strikes, Some(1));
    assert!(ban.active && ban.remaining_s > 3500, "{ban:?}");
    assert!(
        banned.predictions.iter().all(|p| p.verdict == "drop_banned"
            && (p.counted_as == "unread" || p.counted_as == "tcp_syn")),
        "{:?}",
        banned.predictions
    );

    // Protected: held to its bucket, never banned.
    assert_eq!(registers(&mut dp, "203.0.113.40", 5), 5);
    let trunk = explained(&dp, &state, "203.0.113.40");
    assert_eq!(trunk.protected[0].comment.as_deref(), Some("carrier trunk"));
    check_predictions(
        &mut dp,
        &state,
        "203.0.113.40",
        ["drop_rate", "pass", "pass", "pass"],
    );
    assert!(explained(&dp, &state, "203.0.113.40").bans.is_empty());
}

#[test]
fn a_prefix_ban_is_explained_for_a_new_address_inside_it() {
    sip_xdp_tests::needs_root!();
    let mut cfg = config(5);
    cfg.prefix_limits = [slow(8); LimitClass::COUNT];
    cfg.prefix_limits[LimitClass::KeepAlive as usize] = RateLimit::UNLIMITED;
    let mut dp = Datapath::load(&cfg).expect("loading the program");
    let state = StateFile::default();
    // Eight /128s of one /64 spend its REGISTER bucket; the ninth is the prefix's drop.
    for host in 1..=8 {
        assert_eq!(registers(&mut dp, &format!("2001:db8:1::{host}"), 1), 1);
    }
    let ninth = explained(&dp, &state, "2001:db8:1::9");
    let prefix = ninth
        .prefixes
        .iter()
        .find(|p| p.prefix == net("2001:db8:1::/64"))
        .expect("the /64 level");
    assert!(prefix.tracked && prefix.packets == 8, "{prefix:?}");
    let register = prefix
        .buckets
        .iter()
        .find(|b| b.class == "register")
        .unwrap();
    assert_eq!((register.tokens_left, register.burst), (0, 8));
    check_predictions(
        &mut dp,
        &state,
        "2001:db8:1::9",
        ["drop_prefix", "drop_banned", "drop_banned", "drop_banned"],
    );

    // An address of the /64 never seen: held by its prefix's ban, before its payload is read.
    let fresh = explained(&dp, &state, "2001:db8:1::77");
    assert!(fresh.source.is_none());
    let ban = fresh
        .bans
        .iter()
        .find(|b| b.origin == "prefix")
        .expect("the prefix ban");
    assert_eq!(ban.target, "2001:db8:1::/64");
    assert_eq!(
        (ban.class.as_deref(), ban.strikes),
        (Some("register"), Some(1))
    );
    check_predictions(&mut dp, &state, "2001:db8:1::77", ["drop_banned"; 4]);
    // Another /48: unaffected.
    check_predictions(&mut dp, &state, "2001:db8:2::5", ["pass"; 4]);
}

/// A scanner's fingerprint and a trap account ban on the first request (the scan program):
/// `explain` names the origin, and predicts what the kernel then does.
#[test]
fn fingerprint_and_trap_bans_are_explained() {
    sip_xdp_tests::needs_root!();
    let mut cfg = config(50);
    cfg.flags |= flags::SIGNATURES;
    cfg.signature_ban_ns = 2 * HOUR_NS;
    let mut dp = Datapath::load(&cfg).expect("loading the program");
    for (kind, token) in [
        (
            sip_xdp_common::SignatureKind::Fingerprint,
            "friendly-scanner",
        ),
        (sip_xdp_common::SignatureKind::Trap, "100"),
    ] {
        dp.maps
            .add_signature(&sip_xdp_common::SignatureKey::new(kind, token.as_bytes()).unwrap())
            .unwrap();
    }
    let state = StateFile::default();
    let scanner = String::from_utf8(request("OPTIONS", "sip:300@example.com", 1))
        .unwrap()
        .replace(
            "Content-Length: 0",
            "User-Agent: friendly-scanner\r\nContent-Length: 0",
        )
        // Its From and To name user 300, not the trap account.
        .replace("sip:100@", "sip:300@");
    assert_eq!(
        kernel_verdict(
            &mut dp,
            &Frame::sip(ip("198.51.100.60"), ip(SERVER), scanner.as_bytes()).build()
        ),
        ("drop_signature", "options")
    );
    // REGISTER for user 100: its To user is the trap.
    assert_eq!(
        kernel_verdict(&mut dp, &frames("198.51.100.61", 1)[0]),
        ("drop_signature", "register")
    );
    for (addr, origin) in [("198.51.100.60", "fingerprint"), ("198.51.100.61", "trap")] {
        let report = explained(&dp, &state, addr);
        let ban = report
            .bans
            .iter()
            .find(|b| b.origin == origin)
            .unwrap_or_else(|| panic!("{addr}: a {origin} ban in {:?}", report.bans));
        assert!(ban.active, "{ban:?}");
        assert!(
            ban.remaining_s > HOUR_NS / NS_PER_SEC,
            "the signature ban's floor: {ban:?}"
        );
        assert_eq!(ban.strikes, Some(1));
        check_predictions(&mut dp, &state, addr, ["drop_banned"; 4]);
    }
}

#[test]
fn an_ipv6_source_grouped_by_prefix_is_banned_as_its_key_after_the_lists() {
    sip_xdp_tests::needs_root!();
    // `sip.ipv6_source_prefix = 64`: the /64 is one source, keyed by its masked address.
    let mut cfg = config(5);
    cfg.ipv6_source_mask = sip_xdp_common::prefix_mask(64);
    let mut dp = Datapath::load(&cfg).expect("loading the program");
    let mut state = StateFile::default();
    assert_eq!(registers(&mut dp, "2001:db8:5::1", 5), 5);
    check_predictions(
        &mut dp,
        &state,
        "2001:db8:5::1",
        ["drop_rate", "drop_banned", "drop_banned", "drop_banned"],
    );
    // Another address of the /64: the same source, banned. A masked key's ban is read after
    // the lists, so the packet is classified first: counted under its own class.
    let neighbour = explained(&dp, &state, "2001:db8:5::2");
    let source = neighbour.source.as_ref().expect("the /64's entry");
    assert_eq!(source.key, "2001:db8:5::");
    assert_eq!(neighbour.bans[0].target, "2001:db8:5::");
    assert_eq!(neighbour.predictions[0].counted_as, "register");
    check_predictions(&mut dp, &state, "2001:db8:5::2", ["drop_banned"; 4]);
    // Allowlisted inside it: the lists come before that ban.
    state.add_allow(net("2001:db8:5::aa/128"), None);
    dp.maps.allow(net("2001:db8:5::aa/128")).unwrap();
    check_predictions(&mut dp, &state, "2001:db8:5::aa", ["pass_allowlisted"; 4]);
}

fn answers_config() -> Config {
    let mut cfg = config(3);
    cfg.flags |= flags::ANSWERS;
    cfg.verified_limits = [slow(50); LimitClass::COUNT];
    cfg.admission = RateLimit::UNLIMITED;
    cfg.reflection_per_destination = RateLimit::UNLIMITED;
    cfg.reflection_total = RateLimit::UNLIMITED;
    cfg.auth_window_ns = HOUR_NS;
    cfg.auth_max_failures = 4;
    cfg.auth_max_flow_failures = 3;
    cfg
}

#[test]
fn the_admission_budget_is_predicted_for_new_and_tracked_sources() {
    sip_xdp_tests::needs_root!();
    // Two unverified REGISTERs or INVITEs admitted, from anyone, then none.
    let mut cfg = answers_config();
    cfg.admission = slow(2);
    let mut dp = Datapath::load(&cfg).expect("loading both programs");
    let state = StateFile::default();
    assert_eq!(registers(&mut dp, "198.51.100.20", 1), 1);
    assert_eq!(registers(&mut dp, "198.51.100.21", 1), 1);
    // A new source: its REGISTER and INVITE beyond the budget; OPTIONS and SYNs are not
    // budgeted.
    check_predictions(
        &mut dp,
        &state,
        "198.51.100.22",
        ["drop_admission", "drop_admission", "pass", "pass"],
    );
    // A tracked one (within its own bucket): the same.
    check_predictions(
        &mut dp,
        &state,
        "198.51.100.20",
        ["drop_admission", "drop_admission", "pass", "pass"],
    );
}

fn answer_to(dp: &mut Datapath, client: &str, code: u16, reason: &str) {
    answer_to_port(dp, client, 5062, code, reason);
}

fn answer_to_port(dp: &mut Datapath, client: &str, port: u16, code: u16, reason: &str) {
    let payload = answer(code, reason, "REGISTER", 7);
    let frame = answer_frame(ip(SERVER), ip(client), port, &payload);
    assert_eq!(dp.run_egress(&frame).unwrap(), TC_ACT_OK);
}

#[test]
fn verified_and_auth_banned_sources_are_explained_from_the_answers() {
    sip_xdp_tests::needs_root!();
    let mut dp = Datapath::load(&answers_config()).expect("loading both programs");
    let state = StateFile::default();
    // Verified: a REGISTER, a challenge, a REGISTER with credentials, a 200.
    let phone = "198.51.100.10";
    assert_eq!(registers(&mut dp, phone, 1), 1);
    answer_to(&mut dp, phone, 401, "Unauthorized");
    assert_eq!(registers(&mut dp, phone, 1), 1);
    answer_to(&mut dp, phone, 200, "OK");
    let report = explained(&dp, &state, phone);
    assert!(report.answers.verified && report.answers.answers_enabled);
    assert_eq!(report.answers.successes, Some(1));
    assert!(report.answers.verified_remaining_s.unwrap() > 3600);
    let source = report.source.expect("tracked");
    assert_eq!(source.limits, "verified");
    let register = source
        .buckets
        .iter()
        .find(|b| b.class == "register")
        .unwrap();
    assert_eq!((register.tokens_left, register.burst), (48, 50));
    check_predictions(&mut dp, &state, phone, ["pass"; 4]);

    // One phone behind it (its own port) challenged again and again: that phone is banned,
    // the address is not.
    for seq in 0..4 {
        let mut frame = Frame::sip(
            ip(phone),
            ip(SERVER),
            &sip_xdp_tests::packet::register("100", seq),
        );
        frame.src_port = 6100;
        dp.run(&frame.build()).unwrap();
        answer_to_port(&mut dp, phone, 6100, 401, "Unauthorized");
    }
    let report = explained(&dp, &state, phone);
    let ban = report
        .bans
        .iter()
        .find(|b| b.target == format!("{phone}:6100"))
        .expect("the phone's ban");
    assert_eq!(
        (ban.origin.as_str(), ban.class.as_deref()),
        ("auth", Some("phone"))
    );
    assert!(ban.active, "{ban:?}");
    assert_eq!(report.bans.len(), 1, "{:?}", report.bans);
    check_predictions(&mut dp, &state, phone, ["pass"; 4]);

    // Banned for failed authentication: each guess challenged again (the bucket kept full, as
    // it refills between guesses in real life).
    let guesser = "198.51.100.66";
    for _ in 0..5 {
        if registers(&mut dp, guesser, 1) == 1 {
            answer_to(&mut dp, guesser, 401, "Unauthorized");
        }
        let key = addr_key(ip(guesser));
        let mut s = dp.maps.source(key).unwrap().unwrap();
        s.tat_ns = [0; LimitClass::COUNT];
        dp.maps.set_source(key, &s).unwrap();
    }
    let report = explained(&dp, &state, guesser);
    let ban = report.bans.first().expect("an auth ban");
    assert_eq!(ban.origin, "auth", "{ban:?}");
    assert!(
        ban.active && ban.reason.contains("failed authentication"),
        "{ban:?}"
    );
    assert_eq!(
        (ban.class.as_deref(), ban.strikes),
        (Some("rechallenged"), Some(1)),
        "{ban:?}"
    );
    // The failures were counted from its answers (the ban starts a new window).
    assert!(report.answers.failures.is_some(), "{:?}", report.answers);
    assert!(!report.answers.verified);
    check_predictions(&mut dp, &state, guesser, ["drop_banned"; 4]);
}

/// The command itself, on a veth: text and JSON, packets through the real attached program,
/// and its errors.
#[cfg(feature = "system")]
mod command {
    use std::net::{IpAddr, UdpSocket};

    use serde_json::Value;
    use sip_xdp_tests::{
        host::{Daemon, Host, TEST_CONFIG, packets},
        netns::{CLIENT_V4_A, CLIENT_V4_B},
    };

    fn explain_json(host: &Host, addr: &str) -> Value {
        serde_json::from_str(&host.ok(&["explain", addr, "--output", "json"])).expect("JSON")
    }

    /// Sends one REGISTER from `source` through the veth and returns the (verdict, class) the
    /// attached program counted it under.
    fn sent_register(host: &Host, server: &UdpSocket, source: IpAddr) -> (String, String) {
        let before = host.status();
        host.registers_through(server, source, 1);
        let after = host.status();
        let mut moved = Vec::new();
        for (verdict, classes) in after["packets"].as_object().unwrap() {
            for (class, n) in classes.as_object().unwrap() {
                // The namespace's own traffic (neighbour discovery) is not SIP.
                if class == "not_sip" {
                    continue;
                }
                if n.as_u64() != Some(packets(&before, verdict, class)) {
                    moved.push((verdict.clone(), class.clone()));
                }
            }
        }
        assert_eq!(moved.len(), 1, "{moved:?}");
        moved.remove(0)
    }

    fn predicted_register(report: &Value) -> (String, String) {
        let p = &report["predictions"][0];
        assert_eq!(p["packet"], "register");
        (
            p["verdict"].as_str().unwrap().to_owned(),
            p["counted_as"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn explain_reports_and_predicts_for_an_attached_program() {
        sip_xdp_tests::needs_root!();
        let host = Host::new(TEST_CONFIG);
        let err = host.fails(&["explain", "198.51.100.10"]);
        assert!(
            err.contains("nothing to explain") && err.contains("attach"),
            "{err}"
        );
        host.attach();
        let err = host.fails(&["explain", "198.51.100.0/24"]);
        assert!(err.contains("not an IP address"), "{err}");

        let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
        let server = host.server_socket();
        host.ok(&["allow", "add", &b.to_string(), "--comment", "office NAT"]);
        let text = host.ok(&["explain", &b.to_string()]);
        assert!(
            text.contains(&format!("allowlist   {b}/32  allow  \"office NAT\"")),
            "{text}"
        );
        assert!(text.contains("register  pass_allowlisted"), "{text}");
        let report = explain_json(&host, &b.to_string());
        assert_eq!(report["allowlist"][0]["comment"], "office NAT");
        assert_eq!(
            predicted_register(&report),
            sent_register(&host, &server, b)
        );

        // Unknown, then flooded past its burst of 10: banned by rate.
        let report = explain_json(&host, &a.to_string());
        assert!(report["source"].is_null());
        assert_eq!(
            predicted_register(&report),
            sent_register(&host, &server, a)
        );
        assert_eq!(host.registers_through(&server, a, 20), 9);
        let report = explain_json(&host, &a.to_string());
        assert_eq!(report["bans"][0]["origin"], "rate");
        assert_eq!(report["bans"][0]["class"], "register");
        assert_eq!(report["bans"][0]["strikes"], 1);
        assert_eq!(report["source"]["dropped"], 11);
        let predicted = predicted_register(&report);
        assert_eq!(predicted, ("drop_banned".to_owned(), "unread".to_owned()));
        assert_eq!(predicted, sent_register(&host, &server, a));

        // A manual ban on top: both listed, the manual one with its reason.
        host.ok(&[
            "ban",
            "add",
            &a.to_string(),
            "--for",
            "2h",
            "--reason",
            "scanner",
        ]);
        let text = host.ok(&["explain", &a.to_string()]);
        eprintln!("sip-xdp explain {a}:\n{text}");
        assert!(
            text.contains("manual ban of 198.51.100.10/32: scanner"),
            "{text}"
        );
        assert!(
            text.contains("rate ban of 198.51.100.10: its register bucket ran dry"),
            "{text}"
        );
        assert!(
            text.contains("register  drop_banned       as unread"),
            "{text}"
        );
        let report = explain_json(&host, &a.to_string());
        assert_eq!(report["attached"], true);
        assert_eq!(report["denylist"][0]["origin"], "manual");
        assert_eq!(report["denylist"][0]["reason"], "scanner");

        // With the daemon (it adopts the pinned attachment): the same maps, the same answer.
        let daemon = Daemon::start(&host, &[]);
        daemon.wait_for(&["sip-xdp running"]);
        let with_daemon = explain_json(&host, &a.to_string());
        assert_eq!(with_daemon["bans"][0]["origin"], "manual");
        assert_eq!(with_daemon["bans"][1]["origin"], "rate");
        assert_eq!(
            predicted_register(&with_daemon),
            sent_register(&host, &server, a)
        );
        drop(daemon);

        // Detached, maps kept: explained, with the warning that nothing is filtered now.
        host.ok(&["detach", "--all"]);
        let text = host.ok(&["explain", &a.to_string()]);
        assert!(
            text.contains("WARNING     sip-xdp is not attached"),
            "{text}"
        );
        assert_eq!(explain_json(&host, &a.to_string())["attached"], false);
    }
}
