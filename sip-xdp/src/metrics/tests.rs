use std::collections::BTreeMap;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use sip_xdp_common::{
    COUNTER_SLOTS, EventCounter, MethodClass, Verdict, event_counter_index, packet_counter_index,
};

use super::{render::ALWAYS_REPORTED_METHODS, *};
use crate::maps::Counters;
use crate::status::TableFill;

fn counters(packets: &[(Verdict, MethodClass, u64)], events: &[(EventCounter, u64)]) -> Counters {
    let mut slots = vec![0u64; COUNTER_SLOTS as usize];
    for &(verdict, method, value) in packets {
        slots[packet_counter_index(verdict, method) as usize] = value;
    }
    for &(event, value) in events {
        slots[event_counter_index(event) as usize] = value;
    }
    Counters::from_slots(slots)
}

fn sample_snapshot() -> Snapshot {
    let mut ban_events = BTreeMap::new();
    ban_events.insert(("ban".to_string(), "register".to_string()), 4);
    ban_events.insert(("expired".to_string(), "invite".to_string()), 2);
    ban_events.insert(("prefix_ban".to_string(), "register".to_string()), 6);
    Snapshot {
        counters: counters(
            &[
                (Verdict::DropBanned, MethodClass::Register, 7),
                (Verdict::Pass, MethodClass::Invite, 12),
                (Verdict::DropRate, MethodClass::Options, 3),
            ],
            &[
                (EventCounter::BansIssued, 5),
                (EventCounter::WouldBans, 1),
                (EventCounter::EventsLost, 9),
                (EventCounter::TrackFailures, 11),
                (EventCounter::FailuresRechallenged, 17),
                (EventCounter::AuthBans, 2),
                (EventCounter::FlowBans, 1),
                (EventCounter::ReflectionTotalDrops, 23),
                (EventCounter::Verifications, 31),
                (EventCounter::PrefixBans, 6),
                (EventCounter::PrefixBannedDrops, 700),
                (EventCounter::PrefixTrackFailures, 8),
                (EventCounter::FingerprintBans, 14),
                (EventCounter::TrapBans, 3),
                (EventCounter::Scans, 9_001),
                (EventCounter::ScanFailures, 2),
                (EventCounter::ScanTruncated, 27),
            ],
        ),
        tables: TableFill {
            tracked_sources: 42,
            sources_capacity: 131_072,
            ban_records: 4,
            bans_capacity: 65_536,
            protected_entries: 1,
            active_bans: 3,
            active_would_bans: 1,
            allowlist_entries: 6,
            denylist_entries: 8,
            list_bans: 7,
            verified_sources: 19,
            verified_capacity: 65_536,
            banned_flows: 1,
            tracked_prefixes: 321,
            prefixes_capacity: 65_536,
            banned_prefixes: 2,
            would_banned_prefixes: 0,
            prefix_ban_records: 5,
            prefix_bans_capacity: 16_384,
            fingerprint_signatures: 20,
            trap_signatures: 2,
            signatures_capacity: 4_096,
            fingerprint_bans: 11,
            trap_bans: 1,
        },
        list_bans: [("manual".to_string(), 2), ("crowdsec".to_string(), 5)].into(),
        list_bans_added: [("fail2ban".to_string(), 7)].into(),
        attached: vec![
            ("eth0".to_string(), "native".to_string()),
            ("eth1".to_string(), "skb".to_string()),
        ],
        egress_attached: vec![("eth0".to_string(), "tcx".to_string())],
        answers_enabled: true,
        ban_events,
        log_lines_suppressed: 13,
        config_reloads: 4,
        config_reload_failures: 1,
        config_last_reload_success_timestamp_seconds: 1_700_000_000.5,
        crowdsec: None,
        http: HttpMetrics {
            closed_over_limit: 64,
            closed_header_timeout: 16,
            closed_response_timeout: 1,
        },
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn renders_every_metric_from_the_snapshot() {
    let text = render(&sample_snapshot()).expect("render");
    let lines = lines(&text);
    let version = env!("CARGO_PKG_VERSION");
    let build_info = format!("sip_xdp_build_info{{version=\"{version}\"}} 1");
    for expected in [
        r#"sip_xdp_packets_total{method="register",verdict="drop_banned"} 7"#,
        r#"sip_xdp_packets_total{method="invite",verdict="pass"} 12"#,
        r#"sip_xdp_packets_total{method="options",verdict="drop_rate"} 3"#,
        r#"sip_xdp_bans_total{mode="enforce"} 5"#,
        r#"sip_xdp_bans_total{mode="monitor"} 1"#,
        "sip_xdp_ban_events_lost_total 9",
        "sip_xdp_source_track_failures_total 11",
        r#"sip_xdp_ban_events_total{class="register",kind="ban"} 4"#,
        r#"sip_xdp_ban_events_total{class="invite",kind="expired"} 2"#,
        r#"sip_xdp_ban_events_total{class="register",kind="prefix_ban"} 6"#,
        r#"sip_xdp_ban_events_total{class="connection",kind="ban"} 0"#,
        r#"sip_xdp_ban_events_total{class="connection",kind="would_prefix_ban"} 0"#,
        "sip_xdp_prefix_bans_total 6",
        "sip_xdp_prefix_banned_drops_total 700",
        "sip_xdp_prefix_track_failures_total 8",
        r#"sip_xdp_banned_prefixes{mode="enforce"} 2"#,
        r#"sip_xdp_banned_prefixes{mode="monitor"} 0"#,
        "sip_xdp_tracked_prefixes 321",
        "sip_xdp_prefixes_capacity 65536",
        "sip_xdp_prefix_ban_records 5",
        "sip_xdp_prefix_bans_capacity 16384",
        r#"sip_xdp_signature_bans_total{kind="fingerprint"} 14"#,
        r#"sip_xdp_signature_bans_total{kind="trap"} 3"#,
        "sip_xdp_signature_scans_total 9001",
        "sip_xdp_signature_scan_failures_total 2",
        "sip_xdp_signature_scan_truncated_total 27",
        r#"sip_xdp_signatures{kind="fingerprint"} 20"#,
        r#"sip_xdp_signatures{kind="trap"} 2"#,
        "sip_xdp_signatures_capacity 4096",
        r#"sip_xdp_signature_banned_sources{kind="fingerprint"} 11"#,
        r#"sip_xdp_signature_banned_sources{kind="trap"} 1"#,
        r#"sip_xdp_ban_events_total{class="trap",kind="would_ban"} 0"#,
        "# TYPE sip_xdp_signature_bans_total counter",
        "# TYPE sip_xdp_signatures gauge",
        "# TYPE sip_xdp_banned_prefixes gauge",
        "# TYPE sip_xdp_prefix_bans_total counter",
        r#"sip_xdp_active_bans{mode="enforce"} 3"#,
        r#"sip_xdp_active_bans{mode="monitor"} 1"#,
        r#"sip_xdp_list_bans{origin="manual"} 2"#,
        r#"sip_xdp_list_bans{origin="crowdsec"} 5"#,
        r#"sip_xdp_list_bans{origin="fail2ban"} 0"#,
        r#"sip_xdp_list_bans_added_total{origin="fail2ban"} 7"#,
        "sip_xdp_tracked_sources 42",
        "sip_xdp_sources_capacity 131072",
        "sip_xdp_allowlist_entries 6",
        "sip_xdp_denylist_entries 8",
        r#"sip_xdp_attached{interface="eth0",mode="native"} 1"#,
        r#"sip_xdp_attached{interface="eth1",mode="skb"} 1"#,
        r#"sip_xdp_egress_attached{interface="eth0",link="tcx"} 1"#,
        "sip_xdp_answers_enabled 1",
        r#"sip_xdp_auth_failures_total{kind="rechallenged"} 17"#,
        r#"sip_xdp_auth_failures_total{kind="forbidden"} 0"#,
        r#"sip_xdp_auth_bans_total{scope="address"} 2"#,
        r#"sip_xdp_auth_bans_total{scope="phone"} 1"#,
        r#"sip_xdp_reflection_drops_total{cap="total"} 23"#,
        r#"sip_xdp_reflection_drops_total{cap="destination"} 0"#,
        "sip_xdp_verifications_total 31",
        "sip_xdp_verified_sources 19",
        "sip_xdp_banned_phones 1",
        "sip_xdp_admission_drops_total 0",
        "sip_xdp_log_lines_suppressed_total 13",
        r#"sip_xdp_config_reloads_total{result="success"} 4"#,
        r#"sip_xdp_config_reloads_total{result="failure"} 1"#,
        "sip_xdp_config_last_reload_success_timestamp_seconds 1700000000.5",
        build_info.as_str(),
        "# TYPE sip_xdp_packets_total counter",
        "# TYPE sip_xdp_active_bans gauge",
        "# TYPE sip_xdp_config_last_reload_success_timestamp_seconds gauge",
    ] {
        assert!(
            lines.contains(&expected),
            "missing line {expected:?} in:\n{text}"
        );
    }
}

#[test]
fn packet_series_are_register_and_invite_plus_non_zero_pairs() {
    let text = render(&sample_snapshot()).expect("render");
    let packet_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sip_xdp_packets_total{"))
        .collect();
    // Every verdict for register, invite and unparsed, plus the one non-zero options pair.
    assert_eq!(
        packet_lines.len(),
        Verdict::COUNT * ALWAYS_REPORTED_METHODS.len() + 1,
        "{packet_lines:#?}"
    );
    for verdict in Verdict::ALL {
        for method in ALWAYS_REPORTED_METHODS {
            let prefix = format!(
                "sip_xdp_packets_total{{method=\"{}\",verdict=\"{}\"}} ",
                method.name(),
                verdict.name()
            );
            assert!(
                packet_lines.iter().any(|l| l.starts_with(&prefix)),
                "missing {prefix}"
            );
        }
    }
    assert!(packet_lines.contains(&r#"sip_xdp_packets_total{method="register",verdict="pass"} 0"#));
    assert!(
        !text.contains(r#"method="bye""#),
        "zero bye series emitted:\n{text}"
    );
    assert!(!text.contains(r#"method="options",verdict="pass""#));
}

#[test]
fn default_snapshot_has_zero_series_for_dashboards() {
    let text = render(&Snapshot::default()).expect("render");
    let lines = lines(&text);
    for expected in [
        r#"sip_xdp_packets_total{method="invite",verdict="drop_rate"} 0"#,
        r#"sip_xdp_bans_total{mode="monitor"} 0"#,
        r#"sip_xdp_ban_events_total{class="options",kind="would_ban"} 0"#,
        r#"sip_xdp_ban_events_total{class="other",kind="expired"} 0"#,
        r#"sip_xdp_list_bans{origin="crowdsec"} 0"#,
        r#"sip_xdp_list_bans_added_total{origin="manual"} 0"#,
        r#"sip_xdp_config_reloads_total{result="failure"} 0"#,
        "sip_xdp_tracked_sources 0",
    ] {
        assert!(
            lines.contains(&expected),
            "missing line {expected:?} in:\n{text}"
        );
    }
    // No attachment, no attached series.
    assert!(!text.contains("sip_xdp_attached{"), "{text}");
}

#[test]
fn tcp_classes_and_the_prefix_verdict_appear_without_being_listed() {
    let snapshot = Snapshot {
        counters: counters(
            &[
                (Verdict::DropRate, MethodClass::TcpSyn, 9),
                (Verdict::Pass, MethodClass::Tcp, 40),
                (Verdict::DropBanned, MethodClass::Unread, 5),
                (Verdict::DropPrefix, MethodClass::Register, 12),
            ],
            &[],
        ),
        ..Snapshot::default()
    };
    let text = render(&snapshot).expect("render");
    let lines = lines(&text);
    for expected in [
        r#"sip_xdp_packets_total{method="tcp_syn",verdict="drop_rate"} 9"#,
        r#"sip_xdp_packets_total{method="tcp",verdict="pass"} 40"#,
        r#"sip_xdp_packets_total{method="unread",verdict="drop_banned"} 5"#,
        r#"sip_xdp_packets_total{method="register",verdict="drop_prefix"} 12"#,
        // Zero series for dashboards: the new verdict for the always-reported methods, and
        // ban events of the connection class and of prefixes.
        r#"sip_xdp_packets_total{method="invite",verdict="drop_prefix"} 0"#,
        r#"sip_xdp_ban_events_total{class="connection",kind="ban"} 0"#,
        r#"sip_xdp_ban_events_total{class="register",kind="prefix_ban"} 0"#,
        r#"sip_xdp_ban_events_total{class="connection",kind="prefix_expired"} 0"#,
        "sip_xdp_prefix_bans_total 0",
        r#"sip_xdp_banned_prefixes{mode="enforce"} 0"#,
    ] {
        assert!(
            lines.contains(&expected),
            "missing line {expected:?} in:\n{text}"
        );
    }
    // Zero TCP series are left out, like every zero pair of a method not always reported.
    assert!(
        !text.contains(r#"method="tcp_syn",verdict="pass""#),
        "{text}"
    );
}

#[test]
fn every_metric_has_help_text() {
    let text = render(&sample_snapshot()).expect("render");
    let lines = lines(&text);
    let mut families = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        families += 1;
        let name = rest.split(' ').next().expect("TYPE line has a name");
        let help = i
            .checked_sub(1)
            .and_then(|j| lines[j].strip_prefix(&format!("# HELP {name} ")))
            .unwrap_or("");
        assert!(help.len() > 10, "metric {name} lacks a help text");
    }
    // + 8: the prefix families (bans, banned drops, track failures, banned prefixes, the two
    // tables' fill and capacity); + 7: the signature families (bans, scans, scan failures,
    // truncated scans, signatures listed, their capacity, sources banned now).
    assert_eq!(families, 24 + 13 + 8 + 7, "{text}");
}

#[test]
fn crowdsec_series_only_when_enabled() {
    let off = render(&sample_snapshot()).expect("render");
    assert!(!off.contains("sip_xdp_crowdsec_"), "{off}");

    let snapshot = Snapshot {
        crowdsec: Some(CrowdsecMetrics {
            lapi_up: false,
            polls_success: 12,
            polls_failure: 3,
            last_sync_timestamp_seconds: 1_700_000_001.25,
            decisions: 4,
            alerts_pushed: 9,
            alerts_dropped: 2,
            decisions_refused_too_broad: 3,
            decisions_refused_ipv4_mapped: 1,
        }),
        ..sample_snapshot()
    };
    let text = render(&snapshot).expect("render");
    let lines = lines(&text);
    for expected in [
        "sip_xdp_crowdsec_lapi_up 0",
        r#"sip_xdp_crowdsec_polls_total{result="success"} 12"#,
        r#"sip_xdp_crowdsec_polls_total{result="failure"} 3"#,
        "sip_xdp_crowdsec_last_sync_timestamp_seconds 1700000001.25",
        "sip_xdp_crowdsec_decisions 4",
        "sip_xdp_crowdsec_alerts_pushed_total 9",
        "sip_xdp_crowdsec_alerts_dropped_total 2",
        r#"sip_xdp_crowdsec_decisions_refused_total{reason="too_broad"} 3"#,
        r#"sip_xdp_crowdsec_decisions_refused_total{reason="ipv4_mapped"} 1"#,
        "# TYPE sip_xdp_crowdsec_lapi_up gauge",
        "# TYPE sip_xdp_crowdsec_polls_total counter",
    ] {
        assert!(
            lines.contains(&expected),
            "missing line {expected:?} in:\n{text}"
        );
    }
    let families = lines.iter().filter(|l| l.starts_with("# TYPE ")).count();
    assert_eq!(families, 24 + 13 + 8 + 7 + 7, "{text}");
}

#[test]
fn label_values_are_escaped_and_repeated_ban_event_labels_add() {
    let snapshot = Snapshot {
        attached: vec![("we\"ird\\if".to_string(), "skb".to_string())],
        ban_events: BTreeMap::from([(("ban".to_string(), "invite".to_string()), 6)]),
        ..Snapshot::default()
    };
    let text = render(&snapshot).expect("render");
    assert!(
        text.lines()
            .any(|l| l == r#"sip_xdp_attached{interface="we\"ird\\if",mode="skb"} 1"#),
        "{text}"
    );
    // The seeded zero and the daemon's count land in one series.
    let invite_bans: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(r#"sip_xdp_ban_events_total{class="invite",kind="ban"}"#))
        .collect();
    assert_eq!(
        invite_bans,
        [r#"sip_xdp_ban_events_total{class="invite",kind="ban"} 6"#]
    );
}

/// Sends one HTTP/1.1 request and reads the whole response (the server closes after it).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut written = 0;
    while written < request.len() {
        stream.writable().await.expect("writable");
        match stream.try_write(&request.as_bytes()[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream.readable().await.expect("readable");
        match stream.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

#[tokio::test]
async fn serves_metrics_errors_and_shuts_down() {
    let failing = Arc::new(AtomicBool::new(false));
    let source: SnapshotFn = {
        let failing = failing.clone();
        Arc::new(move || {
            if failing.load(Ordering::SeqCst) {
                anyhow::bail!("map SOURCES is gone")
            }
            Ok(sample_snapshot())
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, source, async {
        let _ = stopped.await;
    }));

    let (status, content_type, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, CONTENT_TYPE);
    assert!(content_type.starts_with(prometheus::TEXT_FORMAT));
    assert!(
        body.lines()
            .any(|l| l == r#"sip_xdp_packets_total{method="register",verdict="drop_banned"} 7"#),
        "{body}"
    );

    let (status, _, body) = http_get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("/metrics"), "{body}");

    failing.store(true, Ordering::SeqCst);
    let (status, _, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 500);
    assert!(body.contains("map SOURCES is gone"), "{body}");

    // The failure did not stop the server.
    failing.store(false, Ordering::SeqCst);
    let (status, _, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");

    let (status, _, _) = http_get(addr, "/nothing-here").await;
    assert_eq!(status, 404);

    assert!(!server.is_finished(), "server returned before shutdown");
    stop.send(()).expect("server still listening for shutdown");
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown")
        .expect("server task did not panic");
    assert!(result.is_ok(), "{result:?}");
}

/// Reads until the server closes the connection or `within` passes; true when it closed.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

#[tokio::test]
async fn half_sent_requests_cannot_hold_the_endpoint() {
    use tokio::io::AsyncWriteExt as _;
    let source: SnapshotFn = Arc::new(|| Ok(sample_snapshot()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(500),
        connection_timeout: Duration::from_secs(10),
        max_connections: 4,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with_limits(
        listener,
        source,
        async {
            let _ = stopped.await;
        },
        limits,
    ));

    // Twelve clients send half a request each and hold on.
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a request");
        held.push(stream);
    }
    // A scrape still gets its answer: it takes the place of the oldest half-sent one.
    let (status, _, body) =
        tokio::time::timeout(Duration::from_secs(5), http_get(addr, "/metrics"))
            .await
            .expect("a scrape is answered while half-sent requests are held");
    assert_eq!(status, 200, "{body}");
    // Every half-sent request is closed by the server: evicted, or after the header timeout.
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream, Duration::from_secs(5)).await,
            "half-sent request {i} still open"
        );
    }
    let (_, _, body) = http_get(addr, "/metrics").await;
    let value = |reason: &str| -> u64 {
        let series = format!("sip_xdp_metrics_connections_closed_total{{reason=\"{reason}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {body}"))
    };
    // 12 held + 1 scrape over a cap of 4: 9 closed at once (the oldest first), the 3 held
    // beside the scrape by the header timeout.
    assert_eq!(value("over_limit"), 9, "{body}");
    assert_eq!(value("header_timeout"), 3, "{body}");
    assert_eq!(value("response_timeout"), 0, "{body}");

    stop.send(()).expect("server still running");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns after shutdown")
        .expect("no panic")
        .expect("no error");
}
