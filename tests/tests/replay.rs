//! `sip-xdp replay` as an operator types it, on captures written here: the verdicts, bans and
//! false-positive risk it reports come from the real programs run on the capture's frames at
//! the capture's times (a flood cut at its burst, a phone the server's answers verify, a
//! scanner's fingerprint), a second config's difference, and clear errors for what is not a
//! usable capture. `sipp_replay.rs` compares a replay with the live program on the same traffic.
use std::{net::IpAddr, path::Path, process::Command};

use serde_json::Value;
use sip_xdp_tests::{
    host::sip_xdp_bin,
    packet::{Frame, answer, answer_frame, register},
};

const SERVER: &str = "203.0.113.1";
const FLOODER: &str = "198.51.100.7";
const SCANNER: &str = "198.51.100.8";
const PHONE: &str = "198.51.100.9";
const MS: u64 = 1_000_000;
/// Some Tuesday in 2026, in nanoseconds since the epoch.
const START_NS: u64 = 1_780_000_000_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Writes a nanosecond pcap of Ethernet frames.
fn write_pcap(path: &Path, link_type: u32, frames: &[(u64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&link_type.to_le_bytes());
    for (ts_ns, frame) in frames {
        out.extend_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).unwrap();
}

fn to_server(src: &str, payload: &[u8]) -> Vec<u8> {
    Frame::sip(ip(src), ip(SERVER), payload).build()
}

fn from_server(client: &str, payload: &[u8]) -> Vec<u8> {
    answer_frame(ip(SERVER), ip(client), 5062, payload)
}

fn scanner_register() -> Vec<u8> {
    String::from_utf8(register("100", 1))
        .unwrap()
        .replace(
            "Content-Length: 0",
            "User-Agent: friendly-scanner\r\nContent-Length: 0",
        )
        .into_bytes()
}

/// A phone that registers (challenge, credentials, 200 OK), then refreshes 100 times in 100 ms;
/// a flooder's 100 REGISTERs in 100 ms, answered with a 200 OK five seconds later; a scanner's
/// one REGISTER naming itself.
fn edge_capture() -> Vec<(u64, Vec<u8>)> {
    let mut frames = vec![
        (START_NS, to_server(PHONE, &register("200", 1))),
        (
            START_NS + 5 * MS,
            from_server(PHONE, &answer(401, "Unauthorized", "REGISTER", 1)),
        ),
        (START_NS + 10 * MS, to_server(PHONE, &register("200", 2))),
        (
            START_NS + 15 * MS,
            from_server(PHONE, &answer(200, "OK", "REGISTER", 2)),
        ),
    ];
    for i in 0..100 {
        frames.push((
            START_NS + 1000 * MS + i * MS,
            to_server(PHONE, &register("200", 3 + i as u32)),
        ));
        frames.push((
            START_NS + 2000 * MS + i * MS,
            to_server(FLOODER, &register("300", 1 + i as u32)),
        ));
    }
    frames.push((
        START_NS + 2500 * MS,
        to_server(SCANNER, &scanner_register()),
    ));
    frames.push((
        START_NS + 7000 * MS,
        from_server(FLOODER, &answer(200, "OK", "REGISTER", 7)),
    ));
    frames.sort_by_key(|(ts, _)| *ts);
    frames
}

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(sip_xdp_bin())
        .arg("replay")
        .args(args)
        .env_remove("SIP_XDP_LOG_FORMAT")
        .output()
        .expect("running sip-xdp replay")
}

fn replay_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = replay(&all);
    assert!(
        out.status.success(),
        "sip-xdp replay {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay JSON")
}

fn packets(run: &Value, verdict: &str, class: &str) -> u64 {
    run["packets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["verdict"] == verdict && c["class"] == class)
        .map_or(0, |c| c["packets"].as_u64().unwrap())
}

#[test]
fn a_replay_reports_what_the_programs_do_to_the_capture() {
    sip_xdp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("edge.pcap");
    write_pcap(&pcap, 1, &edge_capture());
    // The README's example is this capture: `SIP_XDP_KEEP_CAPTURE=FILE` keeps a copy.
    if let Some(keep) = std::env::var_os("SIP_XDP_KEEP_CAPTURE") {
        std::fs::copy(&pcap, keep).unwrap();
    }
    // The built-in defaults (no config file is read from /etc when one is named).
    let defaults = dir.path().join("defaults.toml");
    std::fs::write(&defaults, "").unwrap();
    let report = replay_json(&[
        pcap.to_str().unwrap(),
        "--config",
        defaults.to_str().unwrap(),
    ]);
    assert_eq!(report["capture"]["frames"], 206);
    assert_eq!(
        report["capture"]["servers"][0], SERVER,
        "the server is inferred"
    );
    let run = &report["run"];
    // The phone: two unverified REGISTERs, then 100 under the verified buckets (an unverified
    // source's burst is 40); both answers went through the egress program.
    // The flooder: its burst of 40, the 41st dry and banned, 59 dropped unread.
    // The scanner: dropped and banned on its fingerprint.
    assert_eq!(packets(run, "pass", "register"), 2 + 100 + 40, "{run}");
    assert_eq!(packets(run, "drop_rate", "register"), 1, "{run}");
    assert_eq!(packets(run, "drop_banned", "unread"), 59, "{run}");
    assert_eq!(packets(run, "drop_signature", "register"), 1, "{run}");
    assert_eq!(run["ingress_frames"], 203);
    assert_eq!(run["egress_frames"], 2, "the phone's 401 and 200 OK");
    assert_eq!(
        run["answers_skipped"], 1,
        "the 200 OK to the flooder, whose REGISTER was dropped"
    );
    let bans = run["bans"].as_array().unwrap();
    assert_eq!(bans.len(), 2, "{run}");
    let flood_ban = bans
        .iter()
        .find(|b| b["source"] == FLOODER)
        .expect("the flooder's ban");
    assert_eq!(flood_ban["origin"], "rate");
    assert_eq!(flood_ban["cause"], "register");
    let at = flood_ban["at_secs"].as_f64().unwrap();
    assert!(
        (2.039..2.041).contains(&at),
        "banned at its 41st REGISTER, 2.040 s in: {at}"
    );
    let scan_ban = bans
        .iter()
        .find(|b| b["source"] == SCANNER)
        .expect("the scanner's ban");
    assert_eq!(scan_ban["origin"], "fingerprint");
    assert_eq!(scan_ban["duration_secs"], 3600);
    // The server accepted the flooder's credentials after the ban: a false positive risk.
    let risky = run["banned_then_succeeded"].as_array().unwrap();
    assert_eq!(risky.len(), 1, "{run}");
    assert_eq!(risky[0]["source"], FLOODER);
    assert!((risky[0]["succeeded_at_secs"].as_f64().unwrap() - 7.0).abs() < 1e-6);

    // A second config with a REGISTER burst of 200: the flooder is no longer banned.
    let loose = dir.path().join("loose.toml");
    std::fs::write(&loose, "[limits.register]\nrate = \"5/s\"\nburst = 200\n").unwrap();
    let report = replay_json(&[
        pcap.to_str().unwrap(),
        "--config",
        defaults.to_str().unwrap(),
        "--compare",
        loose.to_str().unwrap(),
    ]);
    let second = &report["second"];
    assert_eq!(
        packets(second, "pass", "register"),
        2 + 100 + 100,
        "{second}"
    );
    let diff = &report["comparison"];
    assert_eq!(
        diff["banned_only_first"],
        serde_json::json!([FLOODER]),
        "{diff}"
    );
    assert_eq!(diff["banned_only_second"], serde_json::json!([]));
    assert!(
        diff["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v[0] == "drop_banned" && v[1] == 59 && v[2] == 0),
        "{diff}"
    );
    // The text report says the same in words.
    let out = replay(&[
        pcap.to_str().unwrap(),
        "--config",
        defaults.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server 203.0.113.1"), "{text}");
    assert!(
        text.contains(&format!("{FLOODER}  banned at 2.040s, accepted at 7.000s")),
        "{text}"
    );
}

#[test]
fn what_is_not_a_usable_capture_is_named() {
    sip_xdp_tests::needs_root!();
    let dir = tempfile::tempdir().unwrap();
    let fails = |path: &Path| {
        let out = replay(&[path.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "replay of {} should fail",
            path.display()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "REGISTER sip:example.com SIP/2.0\r\n").unwrap();
    let err = fails(&text);
    assert!(
        err.contains("is not a pcap or pcapng capture") && err.contains("52 45 47 49"),
        "{err}"
    );

    let wifi = dir.path().join("wifi.pcap");
    write_pcap(&wifi, 105, &[(START_NS, vec![0u8; 40])]);
    let err = fails(&wifi);
    assert!(
        err.contains("link type IEEE802_11") && err.contains("Ethernet"),
        "{err}"
    );

    let cut = dir.path().join("cut.pcap");
    write_pcap(&cut, 1, &edge_capture()[..3]);
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let err = fails(&cut);
    assert!(err.contains("is truncated: packet 3"), "{err}");

    let missing = dir.path().join("missing.pcap");
    let err = fails(&missing);
    assert!(err.contains("cannot open the capture"), "{err}");

    // A Linux cooked capture (`tcpdump -i any`) is replayed as Ethernet.
    let cooked = dir.path().join("any.pcap");
    let frames: Vec<(u64, Vec<u8>)> = (0..50u64)
        .map(|i| {
            let eth = to_server(FLOODER, &register("300", i as u32 + 1));
            let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
            sll.extend_from_slice(&eth[14..]);
            (START_NS + i * MS, sll)
        })
        .collect();
    write_pcap(&cooked, 113, &frames);
    let defaults = dir.path().join("defaults.toml");
    std::fs::write(&defaults, "").unwrap();
    let report = replay_json(&[
        cooked.to_str().unwrap(),
        "--config",
        defaults.to_str().unwrap(),
    ]);
    assert_eq!(packets(&report["run"], "pass", "register"), 40, "{report}");
    assert_eq!(report["capture"]["link_types"][0], "LINUX_SLL");
}
