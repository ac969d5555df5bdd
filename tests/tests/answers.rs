//! Packet-level tests of the egress program (the server's answers) with the XDP program, both
//! real and verified, through BPF_PROG_TEST_RUN: requests go in at XDP, answers out at TC, and
//! the verdicts, counters and map entries both programs share are read back from the kernel.
use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use sip_xdp::maps::addr_key;
use sip_xdp_common::{
    AuthFailure, BAN_CLASS_AUTH, BanEvent, Config, EventCounter, LimitClass, MethodClass,
    RateLimit, Verdict, auth_ban_kind, ban_event_kind, flags, map_names,
};
use sip_xdp_tests::{
    harness::{Datapath, TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS},
    packet::*,
};

const HOUR_NS: u64 = 3600 * 1_000_000_000;
const SERVER: &str = "203.0.113.1";
const PHONE: &str = "198.51.100.10";
const GUESSER: &str = "198.51.100.66";
const SERVER6: &str = "2001:db8::1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Answers on, buckets that never refill during a test, thresholds small enough to reach.
fn answers_config() -> Config {
    let slow = |burst| RateLimit::per_interval(1, HOUR_NS, burst);
    let mut cfg = Config::DEFAULT;
    cfg.flags |= flags::ANSWERS;
    cfg.limits = [slow(3); LimitClass::COUNT];
    cfg.verified_limits = [slow(50); LimitClass::COUNT];
    cfg.admission = RateLimit::UNLIMITED;
    cfg.reflection_per_destination = RateLimit::UNLIMITED;
    cfg.reflection_total = RateLimit::UNLIMITED;
    cfg.ban_base_ns = HOUR_NS;
    cfg.auth_window_ns = HOUR_NS;
    cfg.auth_max_failures = 4;
    cfg.auth_max_flow_failures = 3;
    cfg.auth_max_failures_verified = 40;
    cfg
}

fn load(cfg: &Config) -> Datapath {
    Datapath::load(cfg).expect("load both programs")
}

/// A REGISTER from `client:port` to the server, at XDP.
fn register_from(dp: &mut Datapath, client: &str, port: u16, seq: u32) -> u32 {
    let mut frame = Frame::sip(ip(client), ip(server_of(client)), &register("100", seq));
    frame.src_port = port;
    dp.run(&frame.build()).unwrap()
}

fn server_of(client: &str) -> &'static str {
    if client.contains(':') {
        SERVER6
    } else {
        SERVER
    }
}

/// The server's answer to `client:port`, at TC egress.
fn answer_to(dp: &mut Datapath, client: &str, port: u16, code: u16, method: &str) -> u32 {
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        _ => "Other",
    };
    let payload = answer(code, reason, method, 7);
    let frame = answer_frame(ip(server_of(client)), ip(client), port, &payload);
    dp.run_egress(&frame).unwrap()
}

/// One digest exchange as a phone does it: REGISTER, 401, REGISTER with credentials, 200.
fn log_in(dp: &mut Datapath, client: &str, port: u16) {
    assert_eq!(register_from(dp, client, port, 1), XDP_PASS);
    assert_eq!(answer_to(dp, client, port, 401, "REGISTER"), TC_ACT_OK);
    assert_eq!(register_from(dp, client, port, 2), XDP_PASS);
    assert_eq!(answer_to(dp, client, port, 200, "REGISTER"), TC_ACT_OK);
}

fn event(dp: &Datapath, counter: EventCounter) -> u64 {
    dp.maps.counters().unwrap().event(counter)
}

fn key(addr: &str) -> [u8; 16] {
    addr_key(ip(addr))
}

fn drain(events: &mut RingBuf<MapData>) -> Vec<BanEvent> {
    let mut out = Vec::new();
    while let Some(item) = events.next() {
        // SAFETY: the programs submit whole `BanEvent`s.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
    }
    out
}

#[test]
fn a_success_after_a_challenge_verifies_and_nothing_else_does() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&answers_config());
    log_in(&mut dp, PHONE, 5062);
    let verified = dp
        .maps
        .verified_source(key(PHONE))
        .unwrap()
        .expect("verified");
    assert!(verified.verified_until_ns > verified.verified_since_ns);
    assert_eq!(verified.successes, 1);
    // The XDP program's copy, which it reads with the rest of the source's state.
    let state = dp.maps.source(key(PHONE)).unwrap().unwrap();
    assert_eq!(state.verified_until_ns, verified.verified_until_ns);
    assert_eq!(event(&dp, EventCounter::Verifications), 1);

    // A 200 that answers no challenge (a forged REGISTER to a server that accepts it, a 200 to
    // OPTIONS, a 200 to an unreadable CSeq) verifies nobody.
    let other = "198.51.100.20";
    assert_eq!(answer_to(&mut dp, other, 5062, 200, "REGISTER"), TC_ACT_OK);
    assert_eq!(answer_to(&mut dp, other, 5062, 401, "OPTIONS"), TC_ACT_OK);
    assert_eq!(answer_to(&mut dp, other, 5062, 200, "OPTIONS"), TC_ACT_OK);
    assert_eq!(dp.maps.verified_source(key(other)).unwrap(), None);
    // A success to the challenged port of another address does not verify this one either.
    assert_eq!(answer_to(&mut dp, other, 5070, 200, "INVITE"), TC_ACT_OK);
    assert_eq!(dp.maps.verified_source(key(other)).unwrap(), None);
    // INVITE: 407 then 200 verifies.
    assert_eq!(answer_to(&mut dp, other, 5080, 407, "INVITE"), TC_ACT_OK);
    assert_eq!(answer_to(&mut dp, other, 5080, 200, "INVITE"), TC_ACT_OK);
    assert!(dp.maps.verified_source(key(other)).unwrap().is_some());
    assert_eq!(event(&dp, EventCounter::Verifications), 2);
    // Every answer read, none of the failures counted.
    assert_eq!(event(&dp, EventCounter::Answers), 2 + 3 + 1 + 2);
    for kind in AuthFailure::ALL {
        assert_eq!(
            event(&dp, sip_xdp_common::failure_counter(kind)),
            0,
            "{kind:?}"
        );
    }
}

#[test]
fn verified_sources_draw_from_their_own_buckets() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&answers_config());
    // Unverified: a burst of 3, the fourth REGISTER is over and bans.
    let stranger = "198.51.100.30";
    for seq in 0..3 {
        assert_eq!(register_from(&mut dp, stranger, 5062, seq), XDP_PASS);
    }
    assert_eq!(register_from(&mut dp, stranger, 5062, 9), XDP_DROP);
    // Verified (two REGISTERs spent logging in): 48 more pass, then the verified bucket too
    // runs dry: looser, never unlimited.
    log_in(&mut dp, PHONE, 5062);
    for seq in 0..48 {
        assert_eq!(
            register_from(&mut dp, PHONE, 6000 + seq as u16, seq),
            XDP_PASS,
            "REGISTER {seq}"
        );
    }
    assert_eq!(register_from(&mut dp, PHONE, 7000, 99), XDP_DROP);
    let counters = dp.maps.counters().unwrap();
    assert_eq!(
        counters.packets(Verdict::Pass, MethodClass::Register),
        3 + 2 + 48
    );
    assert_eq!(
        counters.packets(Verdict::DropRate, MethodClass::Register),
        2
    );
}

#[test]
fn repeated_challenges_ban_a_guesser_with_origin_auth() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&answers_config());
    let mut events = RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap();
    // A guesser below every rate limit: one REGISTER, one 401 per guess (Asterisk's
    // alwaysauthreject answers a wrong password with another challenge).
    let mut passed = 0;
    for guess in 0..10 {
        if register_from(&mut dp, GUESSER, 5099, guess) == XDP_PASS {
            passed += 1;
            answer_to(&mut dp, GUESSER, 5099, 401, "REGISTER");
        }
        // The bucket refills between guesses in real life: keep it full here.
        let mut state = dp.maps.source(key(GUESSER)).unwrap().unwrap();
        state.tat_ns = [0; LimitClass::COUNT];
        dp.maps.set_source(key(GUESSER), &state).unwrap();
    }
    // The first challenge is a normal one; the next four are failures, and the fourth bans.
    assert_eq!(passed, 5, "guesses that reached the registrar");
    assert_eq!(event(&dp, EventCounter::FailuresRechallenged), 4);
    assert_eq!(event(&dp, EventCounter::AuthBans), 1);
    let state = dp.maps.source(key(GUESSER)).unwrap().unwrap();
    assert!(state.banned_until_ns > 0);
    assert_eq!(
        state.ban_class,
        BAN_CLASS_AUTH | AuthFailure::Rechallenged as u8
    );
    assert_eq!(
        auth_ban_kind(state.ban_class),
        Some(AuthFailure::Rechallenged)
    );
    assert_eq!(state.strikes, 1);
    // In the durable table too, where no flood of new sources can evict it.
    let bans = dp.maps.bans().unwrap();
    assert!(
        bans.iter()
            .any(|(k, b)| k.addr == key(GUESSER) && b.ban_class == state.ban_class)
    );
    let bans: Vec<BanEvent> = drain(&mut events);
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].kind, ban_event_kind::BAN);
    assert_eq!(bans[0].addr, key(GUESSER));
    assert_eq!(
        auth_ban_kind(bans[0].limit_class),
        Some(AuthFailure::Rechallenged)
    );
    // Dropped on the addresses alone, before the REGISTER was read.
    let counters = dp.maps.counters().unwrap();
    assert_eq!(
        counters.packets(Verdict::DropBanned, MethodClass::Unread),
        5
    );
}

#[test]
fn a_phone_that_logs_in_again_and_again_counts_no_failure() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.verified_limits = [RateLimit::UNLIMITED; LimitClass::COUNT];
    cfg.limits = [RateLimit::UNLIMITED; LimitClass::COUNT];
    let mut dp = load(&cfg);
    for _ in 0..20 {
        log_in(&mut dp, PHONE, 5062);
        // A SUBSCRIBE challenged and accepted closes its challenge too.
        assert_eq!(answer_to(&mut dp, PHONE, 5062, 407, "SUBSCRIBE"), TC_ACT_OK);
        assert_eq!(answer_to(&mut dp, PHONE, 5062, 202, "SUBSCRIBE"), TC_ACT_OK);
        // A call challenged, then busy.
        assert_eq!(answer_to(&mut dp, PHONE, 5062, 407, "INVITE"), TC_ACT_OK);
        assert_eq!(answer_to(&mut dp, PHONE, 5062, 486, "INVITE"), TC_ACT_OK);
    }
    for kind in AuthFailure::ALL {
        assert_eq!(
            event(&dp, sip_xdp_common::failure_counter(kind)),
            0,
            "{kind:?}"
        );
    }
    assert_eq!(event(&dp, EventCounter::Verifications), 20);
    assert!(dp.maps.bans().unwrap().is_empty());
}

#[test]
fn forbidden_and_not_found_are_failures_and_options_404_is_not() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&answers_config());
    let scanner = "198.51.100.77";
    register_from(&mut dp, scanner, 5062, 1);
    answer_to(&mut dp, scanner, 5062, 404, "OPTIONS");
    answer_to(&mut dp, scanner, 5062, 404, "REGISTER");
    answer_to(&mut dp, scanner, 5062, 404, "INVITE");
    answer_to(&mut dp, scanner, 5062, 403, "REGISTER");
    assert_eq!(event(&dp, EventCounter::FailuresNotFound), 2);
    assert_eq!(event(&dp, EventCounter::FailuresForbidden), 1);
    assert_eq!(event(&dp, EventCounter::AuthBans), 0);
    answer_to(&mut dp, scanner, 5062, 403, "INVITE");
    assert_eq!(event(&dp, EventCounter::AuthBans), 1);
    let state = dp.maps.source(key(scanner)).unwrap().unwrap();
    assert_eq!(auth_ban_kind(state.ban_class), Some(AuthFailure::Forbidden));
    assert_eq!(register_from(&mut dp, scanner, 5062, 2), XDP_DROP);
}

#[test]
fn a_scanner_changing_ports_is_counted_by_its_open_challenges() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.auth_max_unanswered = 6;
    let mut dp = load(&cfg);
    let scanner = "198.51.100.78";
    register_from(&mut dp, scanner, 5062, 1);
    // A new port for every request: no flow sees a second challenge.
    for port in 0..6 {
        answer_to(&mut dp, scanner, 10_000 + port, 401, "REGISTER");
    }
    assert_eq!(event(&dp, EventCounter::FailuresUnanswered), 0);
    for port in 6..10 {
        answer_to(&mut dp, scanner, 10_000 + port, 401, "REGISTER");
    }
    assert_eq!(event(&dp, EventCounter::FailuresUnanswered), 4);
    assert_eq!(event(&dp, EventCounter::FailuresRechallenged), 0);
    assert_eq!(event(&dp, EventCounter::AuthBans), 1);
}

#[test]
fn a_verified_office_loses_the_broken_phone_not_its_address() {
    sip_xdp_tests::needs_root!();
    let mut dp = load(&answers_config());
    let mut events = RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap();
    let office = "198.51.100.50";
    log_in(&mut dp, office, 5062);
    // The broken phone behind the same NAT, its own port: challenged again and again.
    for guess in 0..4 {
        register_from(&mut dp, office, 6100, guess);
        answer_to(&mut dp, office, 6100, 401, "REGISTER");
    }
    assert_eq!(event(&dp, EventCounter::FailuresRechallenged), 3);
    assert_eq!(event(&dp, EventCounter::FlowBans), 1);
    assert_eq!(event(&dp, EventCounter::AuthBans), 0);
    let flows = dp.maps.flows_of(key(office)).unwrap();
    let broken = flows
        .iter()
        .find(|(f, _)| f.port == 6100)
        .expect("the flow")
        .1;
    assert!(broken.banned_until_ns > 0);
    // Its packets are dropped at XDP; every other phone of the office passes.
    assert_eq!(register_from(&mut dp, office, 6100, 9), XDP_DROP);
    assert_eq!(register_from(&mut dp, office, 5062, 9), XDP_PASS);
    assert_eq!(register_from(&mut dp, office, 5064, 9), XDP_PASS);
    assert_eq!(event(&dp, EventCounter::FlowBannedDrops), 1);
    assert_eq!(
        dp.maps
            .source(key(office))
            .unwrap()
            .unwrap()
            .banned_until_ns,
        0
    );
    let bans = drain(&mut events);
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].kind, ban_event_kind::FLOW_BAN);
    assert_eq!(bans[0].port, 6100);
    // Lifting it (`ban del`) forgets the flow's ban too.
    assert!(dp.maps.forget_source(key(office)).unwrap());
    assert!(dp.maps.flows_of(key(office)).unwrap().is_empty());
}

#[test]
fn the_reflection_guard_caps_unverified_destinations_only() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.reflection_per_destination = RateLimit::per_interval(1, HOUR_NS, 2);
    cfg.reflection_total = RateLimit::per_interval(1, HOUR_NS, 5);
    cfg.auth_max_failures = 1_000;
    cfg.auth_max_unanswered = 1_000;
    let mut dp = load(&cfg);
    log_in(&mut dp, PHONE, 5062);
    // A forged source's challenges: two go out, the rest are dropped.
    let victim = "198.51.100.90";
    let sent: Vec<u32> = (0..4)
        .map(|port| answer_to(&mut dp, victim, 7000 + port, 401, "REGISTER"))
        .collect();
    assert_eq!(sent, [TC_ACT_OK, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_SHOT]);
    assert_eq!(event(&dp, EventCounter::ReflectionDestinationDrops), 2);
    // The verified phone is never capped.
    for _ in 0..10 {
        assert_eq!(answer_to(&mut dp, PHONE, 5062, 403, "REGISTER"), TC_ACT_OK);
    }
    // The total of 5: the phone's challenge before it was verified and the victim's two count,
    // so two more destinations get one each, the next ones none.
    let sent: Vec<u32> = (1..=4)
        .map(|n| {
            answer_to(
                &mut dp,
                &format!("198.51.100.{}", 100 + n),
                5062,
                404,
                "INVITE",
            )
        })
        .collect();
    assert_eq!(sent, [TC_ACT_OK, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_SHOT]);
    assert_eq!(event(&dp, EventCounter::ReflectionTotalDrops), 2);
    // 2xx and 1xx are never capped.
    assert_eq!(
        answer_to(&mut dp, "198.51.100.120", 5062, 200, "OPTIONS"),
        TC_ACT_OK
    );
    assert_eq!(
        answer_to(&mut dp, "198.51.100.120", 5062, 100, "INVITE"),
        TC_ACT_OK
    );
}

#[test]
fn the_admission_budget_drops_unverified_requests_before_they_make_state() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.admission = RateLimit::per_interval(1, HOUR_NS, 5);
    let mut dp = load(&cfg);
    log_in(&mut dp, PHONE, 5062); // two REGISTERs from the budget, while unverified
    let mut verdicts = Vec::new();
    for n in 0..6 {
        let forged = format!("198.51.100.{}", 150 + n);
        verdicts.push(register_from(&mut dp, &forged, 5062, n));
    }
    assert_eq!(
        verdicts,
        [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP]
    );
    // Beyond the budget no state is made.
    for n in 3..6 {
        let forged = format!("198.51.100.{}", 150 + n);
        assert_eq!(dp.maps.source(key(&forged)).unwrap(), None);
    }
    // INVITE draws from it too; OPTIONS does not.
    let mut invite = Frame::sip(
        ip("198.51.100.170"),
        ip(SERVER),
        &request("INVITE", "sip:1@x", 1),
    );
    invite.src_port = 5062;
    assert_eq!(dp.run(&invite.build()).unwrap(), XDP_DROP);
    let options = Frame::sip(
        ip("198.51.100.171"),
        ip(SERVER),
        &request("OPTIONS", "sip:1@x", 1),
    );
    assert_eq!(dp.run(&options.build()).unwrap(), XDP_PASS);
    // The verified phone passes as before.
    assert_eq!(register_from(&mut dp, PHONE, 5062, 3), XDP_PASS);
    let counters = dp.maps.counters().unwrap();
    assert_eq!(
        counters.packets(Verdict::DropAdmission, MethodClass::Register),
        3
    );
    assert_eq!(
        counters.packets(Verdict::DropAdmission, MethodClass::Invite),
        1
    );
}

#[test]
fn without_the_answers_flag_nobody_is_verified_and_nothing_is_budgeted() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.flags &= !flags::ANSWERS;
    cfg.admission = RateLimit::per_interval(1, HOUR_NS, 1);
    let mut dp = load(&cfg);
    log_in(&mut dp, PHONE, 5062);
    // The egress program still records the success, but the XDP program does not use it.
    for seq in 0..1 {
        assert_eq!(register_from(&mut dp, PHONE, 5062, seq), XDP_PASS);
    }
    assert_eq!(
        register_from(&mut dp, PHONE, 5062, 9),
        XDP_DROP,
        "unverified burst of 3"
    );
    for n in 0..4 {
        let forged = format!("198.51.100.{}", 180 + n);
        assert_eq!(register_from(&mut dp, &forged, 5062, n), XDP_PASS);
    }
}

#[test]
fn monitor_mode_reports_auth_bans_and_reflection_and_drops_nothing() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.flags |= flags::MONITOR;
    // No rate ban comes first: only the answers decide.
    cfg.limits = [RateLimit::UNLIMITED; LimitClass::COUNT];
    cfg.reflection_per_destination = RateLimit::per_interval(1, HOUR_NS, 1);
    let mut dp = load(&cfg);
    for _ in 0..6 {
        register_from(&mut dp, GUESSER, 5099, 1);
        assert_eq!(
            answer_to(&mut dp, GUESSER, 5099, 401, "REGISTER"),
            TC_ACT_OK
        );
    }
    assert_eq!(event(&dp, EventCounter::WouldBans), 1);
    assert_eq!(event(&dp, EventCounter::AuthBans), 1);
    assert_eq!(event(&dp, EventCounter::BansIssued), 0);
    assert!(event(&dp, EventCounter::ReflectionDestinationDrops) >= 4);
    assert_eq!(register_from(&mut dp, GUESSER, 5099, 2), XDP_PASS);
}

#[test]
fn the_cseq_method_is_read_wherever_the_server_puts_it() {
    sip_xdp_tests::needs_root!();
    let mut cfg = answers_config();
    cfg.auth_max_failures = 1_000;
    let mut dp = load(&cfg);
    let send = |dp: &mut Datapath, client: &str, payload: String| {
        let frame = answer_frame(ip(server_of(client)), ip(client), 5062, payload.as_bytes());
        dp.run_egress(&frame).unwrap()
    };
    // Lower-case name, a long Via stack before it (about 700 bytes), IPv6: all read. Verified
    // means the 200 was read as answering a REGISTER.
    let vias: String = (0..5)
        .map(|n| format!("Via: SIP/2.0/UDP 203.0.113.{n}:5060;branch=z9hG4bK{n:090}\r\n"))
        .collect();
    assert!((600..800).contains(&vias.len()), "{}", vias.len());
    for (client, cseq) in [
        ("198.51.100.205", "CSeq:   31  REGISTER".to_owned()),
        ("198.51.100.201", "cseq: 2 REGISTER".to_owned()),
        ("198.51.100.202", format!("{}CSeq:   31  REGISTER", vias)),
        ("2001:db8:5::1", "CSeq: 2 REGISTER".to_owned()),
    ] {
        let challenge = format!("SIP/2.0 401 Unauthorized\r\nCall-ID: x\r\n{cseq}\r\n\r\n");
        let ok = format!("SIP/2.0 200 OK\r\nCall-ID: x\r\n{cseq}\r\nContact: <sip:a@b>\r\n\r\n");
        assert_eq!(send(&mut dp, client, challenge), TC_ACT_OK);
        assert_eq!(send(&mut dp, client, ok), TC_ACT_OK);
        assert!(
            dp.maps.verified_source(key(client)).unwrap().is_some(),
            "{client}: {cseq:.40}"
        );
    }
    // A CSeq past the scanned bytes is unknown: a 404 to it counts (fail closed), a 200 to it
    // verifies nobody.
    let far: String = "X-Padding: ".to_owned() + &"p".repeat(1100) + "\r\n";
    let client = "198.51.100.203";
    let before = event(&dp, EventCounter::FailuresNotFound);
    send(
        &mut dp,
        client,
        format!("SIP/2.0 404 Not Found\r\n{far}CSeq: 1 OPTIONS\r\n\r\n"),
    );
    assert_eq!(event(&dp, EventCounter::FailuresNotFound), before + 1);
    send(
        &mut dp,
        client,
        "SIP/2.0 401 Unauthorized\r\nCSeq: 1 REGISTER\r\n\r\n".to_owned(),
    );
    send(
        &mut dp,
        client,
        format!("SIP/2.0 200 OK\r\n{far}CSeq: 2 REGISTER\r\n\r\n"),
    );
    assert_eq!(dp.maps.verified_source(key(client)).unwrap(), None);
    // Requests the server sends (OPTIONS pings to phones) and non-SIP are not answers.
    let answers = event(&dp, EventCounter::Answers);
    send(
        &mut dp,
        client,
        "OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n".to_owned(),
    );
    send(&mut dp, client, "garbage".to_owned());
    assert_eq!(event(&dp, EventCounter::Answers), answers);
}
