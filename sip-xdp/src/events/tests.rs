use std::net::{Ipv4Addr, Ipv6Addr};

use sip_xdp_common::ipv4_mapped;

use sip_xdp_common::{AuthFailure, LimitClass};

use super::*;

fn event(kind: u8) -> BanEvent {
    BanEvent {
        addr: ipv4_mapped([198, 51, 100, 7]),
        now_ns: 5_000_000_000,
        banned_until_ns: 65_000_000_000,
        duration_ns: 60_000_000_000,
        window_ns: 500_000_000,
        window_packets: 406,
        strikes: 1,
        kind,
        limit_class: LimitClass::Register as u8,
        port: 0,
        prefix_len: 0,
        _pad: [0; 3],
    }
}

fn bytes_of(event: &BanEvent) -> Vec<u8> {
    // SAFETY: BanEvent is Pod with explicit padding; viewing it as bytes is sound.
    unsafe {
        std::slice::from_raw_parts(
            (event as *const BanEvent).cast::<u8>(),
            size_of::<BanEvent>(),
        )
    }
    .to_vec()
}

fn record_from(addr: [u8; 4], kind: BanEventKind, class: LimitClass) -> BanRecord {
    BanRecord {
        kind,
        source: IpAddr::V4(Ipv4Addr::from(addr)),
        port: None,
        prefix_len: None,
        cause: BanCause::Rate(class),
        rate_per_sec: 100.0,
        window_packets: 100,
        window_ns: 1_000_000_000,
        duration_ns: 60_000_000_000,
        strikes: 1,
        banned_until_mono_ns: 0,
        at_mono_ns: 0,
    }
}

fn ban(addr: [u8; 4]) -> BanRecord {
    record_from(addr, BanEventKind::Ban, LimitClass::Register)
}

fn cfg(lines_per_sec: u32, burst: u32, summary_s: u64) -> LogLimiterConfig {
    LogLimiterConfig {
        lines_per_sec,
        burst,
        summary_interval: Duration::from_secs(summary_s),
    }
}

#[test]
fn decodes_a_ban_event() {
    let record = BanRecord::decode(&event(ban_event_kind::BAN)).expect("valid event");
    assert_eq!(
        record,
        BanRecord {
            kind: BanEventKind::Ban,
            source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            port: None,
            prefix_len: None,
            cause: BanCause::Rate(LimitClass::Register),
            rate_per_sec: 812.0,
            window_packets: 406,
            window_ns: 500_000_000,
            duration_ns: 60_000_000_000,
            strikes: 1,
            banned_until_mono_ns: 65_000_000_000,
            at_mono_ns: 5_000_000_000,
        }
    );
    let would = BanRecord::decode(&event(ban_event_kind::WOULD_BAN)).expect("valid event");
    assert_eq!(would.kind, BanEventKind::WouldBan);
    let expired = BanRecord::decode(&event(ban_event_kind::EXPIRED)).expect("valid event");
    assert_eq!(expired.kind, BanEventKind::Expired);
}

#[test]
fn ipv6_sources_print_as_keyed() {
    let mut ev = event(ban_event_kind::BAN);
    let prefix: Ipv6Addr = "2001:db8:1:2::".parse().expect("valid address");
    ev.addr = prefix.octets();
    let record = BanRecord::decode(&ev).expect("valid event");
    assert_eq!(record.source.to_string(), "2001:db8:1:2::");
}

#[test]
fn rejects_unknown_kind_and_class() {
    assert_eq!(BanRecord::decode(&event(5)), None);
    let mut ev = event(ban_event_kind::BAN);
    ev.limit_class = LimitClass::COUNT as u8;
    assert_eq!(BanRecord::decode(&ev), None);
}

#[test]
fn decodes_bytes_and_rejects_other_lengths() {
    let ev = event(ban_event_kind::WOULD_BAN);
    let bytes = bytes_of(&ev);
    assert_eq!(decode_bytes(&bytes), BanRecord::decode(&ev));
    assert!(decode_bytes(&bytes).is_some());
    assert_eq!(decode_bytes(&bytes[..bytes.len() - 1]), None);
    assert_eq!(decode_bytes(&[]), None);
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode_bytes(&longer), None);
    // Unaligned: the same bytes one past an 8-byte boundary.
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    assert_eq!(decode_bytes(&shifted[1..]), BanRecord::decode(&ev));
}

#[test]
fn rate_is_packets_over_window_with_a_floor() {
    assert_eq!(rate_per_sec(406, 500_000_000), 812.0);
    assert_eq!(rate_per_sec(10, 2_000_000_000), 5.0);
    // Below the clock's resolution the window counts as one jiffy at most.
    assert_eq!(rate_per_sec(41, 0), 4100.0);
    assert_eq!(rate_per_sec(41, 1_000_000), 4100.0);
    assert_eq!(rate_per_sec(0, 0), 0.0);
}

#[test]
fn messages_name_source_class_rate_and_strike() {
    let record = BanRecord::decode(&event(ban_event_kind::BAN)).expect("valid event");
    assert_eq!(
        message(&record),
        "banned 198.51.100.7 for 1m: register at 812/s, strike 1"
    );
    let mut would = BanRecord::decode(&event(ban_event_kind::WOULD_BAN)).expect("valid");
    would.cause = BanCause::Rate(LimitClass::Invite);
    would.strikes = 3;
    would.duration_ns = 240_000_000_000;
    assert_eq!(
        message(&would),
        "would ban 198.51.100.7 for 4m (monitor mode): invite at 812/s, strike 3"
    );
    let expired = BanRecord::decode(&event(ban_event_kind::EXPIRED)).expect("valid");
    assert_eq!(
        message(&expired),
        "ban on 198.51.100.7 expired after 1m: register, strike 1"
    );
}

#[test]
fn short_windows_report_packets_not_rate() {
    let mut ev = event(ban_event_kind::BAN);
    ev.window_ns = 4_000_000;
    ev.window_packets = 41;
    let record = BanRecord::decode(&ev).expect("valid event");
    assert_eq!(
        message(&record),
        "banned 198.51.100.7 for 1m: register at 41 packets in 4ms, strike 1"
    );
    ev.window_ns = 0;
    let record = BanRecord::decode(&ev).expect("valid event");
    assert_eq!(
        message(&record),
        "banned 198.51.100.7 for 1m: register at 41 packets at once, strike 1"
    );
}

#[test]
fn monotonic_times_convert_to_wall_clock() {
    let now_wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        mono_to_rfc3339(70_000_000_000, 10_000_000_000, now_wall),
        "2023-11-14T22:14:20Z"
    );
    assert_eq!(
        mono_to_wall(4_000_000_000, 10_000_000_000, now_wall),
        now_wall - Duration::from_secs(6)
    );
}

#[test]
fn writes_burst_lines_then_suppresses_and_refills() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(2, 3, 60));
    for i in 0..3 {
        assert!(
            logger.log(&ban([192, 0, 2, i]), t0),
            "line {i} within burst"
        );
    }
    assert!(!logger.log(&ban([192, 0, 2, 3]), t0));
    assert!(!logger.log(&ban([192, 0, 2, 4]), t0 + Duration::from_millis(400)));
    assert_eq!(logger.suppressed_total(), 2);
    // 2 lines/s: one token after 500 ms.
    assert!(logger.log(&ban([192, 0, 2, 5]), t0 + Duration::from_millis(500)));
    assert!(!logger.log(&ban([192, 0, 2, 6]), t0 + Duration::from_millis(500)));
    // A long pause refills to the burst, no further.
    let later = t0 + Duration::from_secs(100);
    for i in 0..3 {
        assert!(logger.log(&ban([192, 0, 2, 10 + i]), later));
    }
    assert!(!logger.log(&ban([192, 0, 2, 20]), later));
    assert_eq!(logger.suppressed_total(), 4);
}

#[test]
fn summary_after_interval_counts_kinds_classes_and_top_sources() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(1, 1, 60));
    assert!(logger.log(&ban([203, 0, 113, 1]), t0));
    assert_eq!(logger.tick(t0), None);
    for _ in 0..4 {
        logger.log(&ban([203, 0, 113, 9]), t0);
    }
    for _ in 0..2 {
        logger.log(
            &record_from([203, 0, 113, 8], BanEventKind::WouldBan, LimitClass::Invite),
            t0,
        );
    }
    logger.log(
        &record_from([203, 0, 113, 7], BanEventKind::Expired, LimitClass::Other),
        t0,
    );
    for last in 1..=4 {
        logger.log(&ban([198, 51, 100, last]), t0);
    }
    assert_eq!(logger.suppressed_total(), 11);
    assert_eq!(logger.tick(t0 + Duration::from_secs(59)), None);
    let summary = logger
        .tick(t0 + Duration::from_secs(60))
        .expect("summary after the interval");
    assert_eq!(
        summary,
        "suppressed 11 ban event lines in the last 60s: bans=8, would_bans=2, expired=1; \
         classes: register=8, invite=2, other=1; \
         top sources: 203.0.113.9 (4), 203.0.113.8 (2), 198.51.100.1 (1), 198.51.100.2 (1), \
         198.51.100.3 (1)"
    );
    // Counts start over; the total for the metrics does not.
    assert_eq!(logger.tick(t0 + Duration::from_secs(130)), None);
    assert_eq!(logger.suppressed_total(), 11);
    logger.log(&ban([203, 0, 113, 9]), t0 + Duration::from_millis(130_100));
    logger.log(&ban([203, 0, 113, 9]), t0 + Duration::from_millis(130_200));
    assert_eq!(logger.tick(t0 + Duration::from_secs(180)), None);
    let summary = logger
        .tick(t0 + Duration::from_secs(190))
        .expect("second summary");
    assert!(
        summary.starts_with("suppressed 1 ban event lines in the last 60s: bans=1,"),
        "{summary}"
    );
}

#[test]
fn no_summary_when_nothing_was_suppressed() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(10, 10, 1));
    assert!(logger.log(&ban([192, 0, 2, 1]), t0));
    assert_eq!(logger.tick(t0 + Duration::from_secs(5)), None);
    assert_eq!(logger.suppressed_total(), 0);
}

#[test]
fn tracked_sources_stay_bounded() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(0, 0, 60));
    logger.tick(t0);
    // A heavy hitter seen before the flood stays counted while the flood fills the map.
    for _ in 0..3 {
        assert!(!logger.log(&ban([10, 255, 255, 255]), t0));
    }
    for i in 0..5000u32 {
        let [_, b, c, d] = i.to_be_bytes();
        assert!(!logger.log(&ban([10, b, c, d]), t0));
    }
    assert_eq!(logger.suppressed.by_source.len(), MAX_TRACKED_SOURCES);
    assert_eq!(
        logger.suppressed.untracked,
        5000 - (MAX_TRACKED_SOURCES as u64 - 1)
    );
    let summary = logger.tick(t0 + Duration::from_secs(60)).expect("summary");
    assert!(
        summary.starts_with("suppressed 5003 ban event lines"),
        "{summary}"
    );
    assert!(
        summary.contains("top sources: 10.255.255.255 (3), 10.0.0.0 (1),"),
        "{summary}"
    );
    assert!(
        summary.ends_with("(+3977 from sources past the 1024 tracked)"),
        "{summary}"
    );
    assert!(logger.suppressed.by_source.is_empty());
}

#[test]
fn reload_clamps_tokens_and_keeps_counts() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(1, 10, 60));
    logger.set_config(cfg(1, 2, 60));
    assert!(logger.log(&ban([192, 0, 2, 1]), t0));
    assert!(logger.log(&ban([192, 0, 2, 2]), t0));
    assert!(!logger.log(&ban([192, 0, 2, 3]), t0));
    logger.set_config(cfg(100, 100, 60));
    assert_eq!(logger.suppressed_total(), 1);
    // The new rate applies from the next refill.
    assert!(logger.log(&ban([192, 0, 2, 4]), t0 + Duration::from_millis(10)));
}

#[test]
fn rate_without_burst_still_writes_lines() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(1, 0, 60));
    assert!(logger.log(&ban([192, 0, 2, 1]), t0));
    assert!(!logger.log(&ban([192, 0, 2, 2]), t0));
    assert!(logger.log(&ban([192, 0, 2, 3]), t0 + Duration::from_secs(1)));
}

#[test]
fn auth_and_phone_bans_decode_and_read_as_such() {
    let mut ev = event(ban_event_kind::BAN);
    ev.limit_class = sip_xdp_common::BAN_CLASS_AUTH | AuthFailure::Rechallenged as u8;
    let record = BanRecord::decode(&ev).expect("an auth ban");
    assert_eq!(record.cause, BanCause::Auth(AuthFailure::Rechallenged));
    assert_eq!(record.cause.origin(), "auth");
    let text = message(&record);
    assert!(
        text.contains("failed authentication in the server's answers (rechallenged)"),
        "{text}"
    );
    let mut ev = event(ban_event_kind::FLOW_BAN);
    ev.limit_class = sip_xdp_common::BAN_CLASS_AUTH | AuthFailure::Forbidden as u8;
    ev.port = 6100;
    let record = BanRecord::decode(&ev).expect("a phone ban");
    assert_eq!(record.kind, BanEventKind::FlowBan);
    assert_eq!(record.port, Some(6100));
    let text = message(&record);
    assert!(
        text.starts_with("banned phone 198.51.100.7:6100 for 1m"),
        "{text}"
    );
    // An auth byte this build does not know is refused, as an unknown class is.
    ev.limit_class = sip_xdp_common::BAN_CLASS_AUTH | 0x3f;
    assert!(BanRecord::decode(&ev).is_none());
}

#[test]
fn signature_bans_decode_and_read_as_such() {
    use sip_xdp_common::{BAN_CLASS_SIGNATURE, SignatureKind};
    let mut ev = event(ban_event_kind::BAN);
    ev.limit_class = BAN_CLASS_SIGNATURE | SignatureKind::Fingerprint as u8;
    let record = BanRecord::decode(&ev).expect("a fingerprint ban");
    assert_eq!(
        record.cause,
        BanCause::Signature(SignatureKind::Fingerprint)
    );
    assert_eq!(record.origin(), "fingerprint");
    let text = message(&record);
    assert!(
        text.starts_with("banned 198.51.100.7 for 1m: a scanner's fingerprint (a listed token in User-Agent, From or To"),
        "{text}"
    );
    let mut ev = event(ban_event_kind::WOULD_BAN);
    ev.limit_class = BAN_CLASS_SIGNATURE | SignatureKind::Trap as u8;
    let record = BanRecord::decode(&ev).expect("a trap would-ban");
    assert_eq!(record.origin(), "trap");
    let text = message(&record);
    assert!(
        text.contains("(monitor mode): a REGISTER, INVITE or OPTIONS for a trap account"),
        "{text}"
    );
    // A signature kind this build does not know is refused.
    ev.limit_class = BAN_CLASS_SIGNATURE | 0x3f;
    assert!(BanRecord::decode(&ev).is_none());
}

fn prefix_event(kind: u8, addr: [u8; 16], prefix_len: u8) -> BanEvent {
    BanEvent {
        addr,
        prefix_len,
        ..event(kind)
    }
}

#[test]
fn prefix_bans_decode_as_cidrs() {
    let ev = prefix_event(ban_event_kind::BAN, ipv4_mapped([198, 51, 100, 0]), 96 + 24);
    let record = BanRecord::decode(&ev).expect("valid event");
    assert_eq!(record.prefix_len, Some(24));
    assert_eq!(record.source, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)));
    assert_eq!(record.prefix(), Some("198.51.100.0/24".parse().unwrap()));
    assert_eq!(record.subject(), "198.51.100.0/24");
    assert_eq!(record.origin(), "prefix");
    assert_eq!(record.metric_kind(), "prefix_ban");
    // The same bytes through the ring buffer's decoder.
    assert_eq!(decode_bytes(&bytes_of(&ev)), Some(record));

    let v6: Ipv6Addr = "2001:db8:1::".parse().unwrap();
    let record =
        BanRecord::decode(&prefix_event(ban_event_kind::EXPIRED, v6.octets(), 64)).unwrap();
    assert_eq!(record.subject(), "2001:db8:1::/64");
    assert_eq!(record.metric_kind(), "prefix_expired");
    let record =
        BanRecord::decode(&prefix_event(ban_event_kind::WOULD_BAN, v6.octets(), 48)).unwrap();
    assert_eq!(record.subject(), "2001:db8:1::/48");
    assert_eq!(record.metric_kind(), "would_prefix_ban");

    // A source's ban is no prefix's.
    let record = BanRecord::decode(&event(ban_event_kind::BAN)).unwrap();
    assert_eq!((record.prefix_len, record.origin()), (None, "rate"));
    assert_eq!(record.subject(), "198.51.100.7");
    assert_eq!(record.metric_kind(), "ban");

    // Lengths no key has: an IPv4 prefix below 96 (the mapped block) or past 128.
    for (addr, len) in [
        (ipv4_mapped([198, 51, 100, 0]), 24),
        (ipv4_mapped([198, 51, 100, 0]), 129),
        (v6.octets(), 200),
    ] {
        assert_eq!(
            BanRecord::decode(&prefix_event(ban_event_kind::BAN, addr, len)),
            None,
            "{len}"
        );
    }
}

#[test]
fn prefix_messages_name_the_prefix_class_and_strike() {
    let ban = BanRecord::decode(&prefix_event(
        ban_event_kind::BAN,
        ipv4_mapped([198, 51, 100, 0]),
        120,
    ))
    .unwrap();
    assert_eq!(
        message(&ban),
        "banned prefix 198.51.100.0/24 (register) for 1m, strike 1 (its unverified sources \
         together sent register at 812/s)"
    );
    let mut would = ban.clone();
    would.kind = BanEventKind::WouldBan;
    would.cause = BanCause::Rate(LimitClass::Connection);
    would.strikes = 2;
    assert_eq!(
        message(&would),
        "would ban prefix 198.51.100.0/24 (connection) for 1m (monitor mode), strike 2 (its \
         unverified sources together sent connection at 812/s)"
    );
    let v6: Ipv6Addr = "2001:db8:1::".parse().unwrap();
    let expired =
        BanRecord::decode(&prefix_event(ban_event_kind::EXPIRED, v6.octets(), 64)).unwrap();
    assert_eq!(
        message(&expired),
        "ban on prefix 2001:db8:1::/64 (register) expired after 1m, strike 1"
    );
}

#[test]
fn suppressed_prefix_bans_are_summarised_as_cidrs() {
    let t0 = Instant::now();
    let mut logger = EventLogger::new(cfg(0, 0, 60));
    let prefix = BanRecord::decode(&prefix_event(
        ban_event_kind::BAN,
        ipv4_mapped([203, 0, 113, 0]),
        120,
    ))
    .unwrap();
    for _ in 0..3 {
        assert!(!logger.log(&prefix, t0));
    }
    // The /24's first address as a source of its own is another line of the summary.
    let mut host = prefix.clone();
    host.prefix_len = None;
    assert!(!logger.log(&host, t0));
    let text = logger
        .tick(t0 + Duration::from_secs(61))
        .expect("a summary");
    assert!(
        text.contains("top sources: 203.0.113.0/24 (3), 203.0.113.0 (1)"),
        "{text}"
    );
}
