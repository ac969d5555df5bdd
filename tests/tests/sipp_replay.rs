//! A replay against the live program on the same traffic: sipp floods the attached filter from
//! the client namespace while tcpdump captures on the client's side of the veth (it sees every
//! frame, the dropped ones too), a phone registers from a second address and then sends one
//! REGISTER naming a scanner. `sip-xdp replay` of that capture must count exactly what the live
//! program counted, verdict by verdict and class by class, and find the same bans.
use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp_tests::{
    host::{Host, ban_sources, sip_xdp_bin},
    netns::{CLIENT_IF, CLIENT_V4_A, CLIENT_V4_B},
    packet::register,
    sipp::{Sipp, scenario},
};

const REGISTRAR: &str = "203.0.113.1:5060";

/// tcpdump on the client's end of the veth, writing `path`, with a buffer that holds the whole
/// flood; returns once it listens, with the receiver of its stderr lines (its closing counts).
fn capture(host: &Host, path: &std::path::Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", host.net.client.name(), "tcpdump"])
        .args(["-i", CLIENT_IF, "-U", "-s", "0", "-B", "16384", "-n", "-w"])
        .arg(path)
        .args(["udp", "port", "5060"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tcpdump (apt-get install tcpdump)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening on") => return (child, rx),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tcpdump did not start listening within 10 s");
            }
        }
    }
}

/// Waits until tcpdump has written what it was sent: the file stops growing for a second (it
/// can lag behind on a busy machine; stopped early, it would drop what it has not read yet).
fn settle(path: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, Instant::now());
    while Instant::now() < deadline {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if size != last.0 {
            last = (size, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_replay_of_a_captured_flood_counts_what_the_live_program_counted() {
    sip_xdp_tests::needs_root!();
    if Command::new("tcpdump").arg("--version").output().is_err() {
        panic!("tcpdump is missing: apt-get install tcpdump (scripts/setup-toolchain.sh does)");
    }
    let host = Host::new("");
    host.attach();
    // Something listens on 5060, so passed REGISTERs make no ICMP errors.
    let server = host.server_socket();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("live.pcap");
    let (mut tcpdump, tcpdump_lines) = capture(&host, &pcap);

    // 2,000 REGISTERs at 2,000/s from A: its burst passes, the rest is dropped.
    let sf = scenario("register_flood.xml");
    let source = CLIENT_V4_A.to_string();
    let flood = Sipp::spawn(
        &host.net.client,
        "register flood",
        &[
            REGISTRAR, "-sf", &sf, "-i", &source, "-p", "5070", "-m", "2000", "-r", "2000",
        ],
        Duration::from_secs(30),
    )
    .wait(Duration::from_secs(30));
    flood.assert_code(0);
    // A phone at B: ten REGISTERs 50 ms apart, then one that names a scanner.
    let phone = host.client(IpAddr::V4(CLIENT_V4_B));
    let registrar: SocketAddr = REGISTRAR.parse().unwrap();
    for seq in 1..=10 {
        phone.send_to(&register("200", seq), registrar).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let scanner = String::from_utf8(register("200", 11)).unwrap().replace(
        "Content-Length: 0",
        "User-Agent: friendly-scanner\r\nContent-Length: 0",
    );
    phone.send_to(scanner.as_bytes(), registrar).unwrap();
    settle(&pcap);
    // SAFETY: signalling the tcpdump this test started, by its PID.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    assert!(
        tcpdump.wait().unwrap().success(),
        "tcpdump exited with an error"
    );
    let tcpdump_said: Vec<String> = tcpdump_lines.try_iter().collect();
    assert!(
        tcpdump_said
            .iter()
            .any(|l| l.trim() == "0 packets dropped by kernel"),
        "tcpdump lost frames (the replay cannot match a capture with holes): {tcpdump_said:?}"
    );
    drop(server);

    let live = host.status();
    let config = host.config.to_str().unwrap();
    let out = Command::new(sip_xdp_bin())
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--config",
            config,
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["run"];
    let mut compared = 0;
    for count in run["packets"].as_array().unwrap() {
        let (verdict, class) = (
            count["verdict"].as_str().unwrap(),
            count["class"].as_str().unwrap(),
        );
        if class == "not_sip" {
            continue;
        }
        let live_n = live["packets"][verdict][class].as_u64().unwrap_or(0);
        assert_eq!(
            count["packets"].as_u64().unwrap(),
            live_n,
            "{verdict}/{class}: replay vs live\nreplay: {run}\nlive: {}",
            live["packets"]
        );
        compared += live_n;
    }
    // And nothing the live program counted is missing from the replay.
    let live_total: u64 = live["packets"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|classes| classes.as_object().unwrap().iter())
        .filter(|(class, _)| *class != "not_sip")
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(compared, live_total, "live: {}", live["packets"]);
    assert_eq!(compared, 2000 + 11, "every REGISTER sent was counted once");
    assert_eq!(
        live["packets"]["pass"]["register"],
        40 + 10,
        "{}",
        live["packets"]
    );
    // The same bans: A by its bucket, B by its fingerprint.
    let mut live_bans = ban_sources(&host);
    live_bans.sort();
    let mut replay_bans: Vec<(String, String)> = run["bans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap().to_owned(),
                b["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    replay_bans.sort();
    assert_eq!(replay_bans, live_bans);
    assert_eq!(
        live_bans,
        vec![
            (CLIENT_V4_A.to_string(), "rate".to_owned()),
            (CLIENT_V4_B.to_string(), "fingerprint".to_owned())
        ]
    );
    eprintln!(
        "replay of {} captured frames: {compared} SIP packets, every (verdict, class) count equal \
         to the live program's; bans {replay_bans:?}",
        report["capture"]["frames"]
    );
}
