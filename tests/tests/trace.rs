//! `sip-xdp trace` as an operator types it, against the attached program: every packet of the
//! traced source is reported with the kernel's verdict and the bucket left after it, nobody
//! else's; the trace leaves no entry behind when it ends, and one whose process is killed stops
//! by itself.
use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use sip_xdp::{loader::PinDir, maps::SipMaps, time::monotonic_now_ns};
use sip_xdp_tests::{
    host::Host,
    netns::{CLIENT_V4_A, CLIENT_V4_B},
    packet::register,
};

/// Starts `sip-xdp trace args` in the server namespace; returns once it traces.
fn start(host: &Host, args: &[&str]) -> (std::process::Child, std::process::ChildStdout) {
    let mut full = vec!["trace"];
    full.extend(args);
    let mut child = host
        .command(&full)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting sip-xdp trace");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("tracing "), "sip-xdp trace said: {line}");
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

fn maps(host: &Host) -> (PinDir, SipMaps) {
    let pins = PinDir::new(&host.pin_dir);
    let maps = SipMaps::open_pinned(&pins).unwrap();
    (pins, maps)
}

#[test]
fn a_trace_reports_each_packet_of_its_source_and_nothing_else() {
    sip_xdp_tests::needs_root!();
    let host = Host::new("[answers]\nenabled = false\n[prefixes]\nipv4 = 0\nipv6 = []\n");
    host.attach();
    let server = host.server_socket();
    let traced = CLIENT_V4_A.to_string();
    let (mut trace, stdout) = start(&host, &[&traced, "--for", "3s", "--output", "json"]);
    // 45 REGISTERs from the traced source: 40 pass, the 41st bans, 4 dropped unread; 5 from
    // another source, not traced.
    let a = host.client(IpAddr::V4(CLIENT_V4_A));
    let b = host.client(IpAddr::V4(CLIENT_V4_B));
    for seq in 1..=45 {
        a.send_to(&register("100", seq), host.sip).unwrap();
        if seq <= 5 {
            b.send_to(&register("200", seq), host.sip).unwrap();
        }
    }
    assert!(trace.wait().unwrap().success(), "sip-xdp trace failed");
    drop(server);
    let records: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("one JSON object per line"))
        .collect();
    assert_eq!(records.len(), 45, "{records:#?}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["source"], traced.as_str());
        if i < 40 {
            assert_eq!(
                (&r["class"], &r["verdict"]),
                (&"register".into(), &"pass".into()),
                "{r}"
            );
            assert_eq!(r["bucket"], "register");
            assert_eq!(r["burst"], 40);
            assert_eq!(r["tokens_left"], 39 - i as u64, "packet {i}: {r}");
            assert_eq!(r["ban"], Value::Null);
        } else if i == 40 {
            assert_eq!(r["verdict"], "drop_rate", "{r}");
            assert_eq!(r["ban"], "rate (register)", "{r}");
            assert_eq!(r["strikes"], 1);
        } else {
            assert_eq!(
                (&r["class"], &r["verdict"]),
                (&"unread".into(), &"drop_banned".into()),
                "{r}"
            );
            assert!(r["banned_for_secs"].as_u64().unwrap() >= 58, "{r}");
        }
    }
    // The trace left nothing behind: no traced source, the program no longer looking.
    let (pins, maps) = maps(&host);
    assert_eq!(sip_xdp::maps::open_traced(&pins).unwrap().keys().count(), 0);
    assert_eq!(maps.read_config().unwrap().trace_until_ns, 0);
}

#[test]
fn a_killed_trace_stops_by_itself() {
    sip_xdp_tests::needs_root!();
    let host = Host::new("");
    host.attach();
    let (mut trace, _stdout) = start(&host, &["198.51.100.0/24"]);
    std::thread::sleep(Duration::from_millis(1500));
    let (pins, maps) = maps(&host);
    let until = maps.read_config().unwrap().trace_until_ns;
    let now = monotonic_now_ns();
    assert!(until > now, "a running trace keeps its end ahead");
    // SAFETY: killing the trace this test started, by its PID.
    unsafe { libc::kill(trace.id() as i32, libc::SIGKILL) };
    trace.wait().unwrap();
    assert!(
        until <= now + sip_xdp::trace::TRACE_LEASE.as_nanos() as u64 + 1_000_000_000,
        "the end is at most a lease ahead"
    );
    std::thread::sleep(sip_xdp::trace::TRACE_LEASE + Duration::from_secs(1));
    assert!(
        maps.read_config().unwrap().trace_until_ns < monotonic_now_ns(),
        "the killed trace's end has passed: the program stopped tracing"
    );
    // A new trace of the same CIDR starts over it and cleans up after itself.
    let (mut again, _out) = start(&host, &["198.51.100.0/24", "--for", "1s"]);
    assert!(again.wait().unwrap().success());
    assert_eq!(sip_xdp::maps::open_traced(&pins).unwrap().keys().count(), 0);
}

#[test]
fn a_trace_shows_the_servers_answers_to_its_source() {
    sip_xdp_tests::needs_root!();
    // The defaults: the answers on, so the egress program reads what the server sends.
    let host = Host::new("[prefixes]\nipv4 = 0\nipv6 = []\n");
    host.attach();
    let server = host.server_socket();
    let traced = CLIENT_V4_A.to_string();
    let (mut trace, stdout) = start(&host, &[&traced, "--for", "3s", "--output", "json"]);
    let a = host.client(IpAddr::V4(CLIENT_V4_A));
    for seq in 1..=3 {
        a.send_to(&register("100", seq), host.sip).unwrap();
        let mut buf = [0u8; 2048];
        let (_, from) = server
            .recv_from(&mut buf)
            .expect("the REGISTER reaches the server");
        // The server challenges each one, as a registrar does.
        server
            .send_to(
                &sip_xdp_tests::packet::answer(401, "Unauthorized", "REGISTER", seq),
                from,
            )
            .unwrap();
    }
    assert!(trace.wait().unwrap().success(), "sip-xdp trace failed");
    let records: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("one JSON object per line"))
        .collect();
    let requests: Vec<&Value> = records.iter().filter(|r| r["answer"].is_null()).collect();
    let answers: Vec<&Value> = records.iter().filter(|r| !r["answer"].is_null()).collect();
    assert_eq!(requests.len(), 3, "{records:#?}");
    assert!(
        requests.iter().all(|r| r["verdict"] == "pass"),
        "{records:#?}"
    );
    assert_eq!(
        answers.len(),
        3,
        "the three challenges the egress program read: {records:#?}"
    );
    for r in answers {
        assert_eq!(r["answer"], 401);
        assert_eq!(r["verdict"], "answer_sent");
        assert_eq!(r["class"], "response");
        assert_eq!(r["source"], traced.as_str());
    }
}
