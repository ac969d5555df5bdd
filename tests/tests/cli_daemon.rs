//! The `sip-xdp` binary end to end: daemonless attach/detach with pinned state, list and ban
//! commands, the daemon adopting an attachment, logging ban events, serving metrics, reloading
//! on SIGHUP and detaching on SIGTERM, and the errors operators get for bad input.
//!
//! Every test runs the real binary inside the server namespace of its own veth pair (see
//! `sip_xdp_tests::host`), with its own pin directory on bpffs and its own state directory, and
//! sends real datagrams from the client namespace.
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp_tests::{
    host::{
        BURST, Daemon, Host, TEST_CONFIG, ban_sources, has_xdp, packets, register_burst, scrape,
        sip_xdp_bin,
    },
    netns::{CLIENT_V4_A, CLIENT_V4_B, SERVER_IF},
};

#[test]
fn attach_keeps_filtering_without_a_process_and_detach_keeps_state() {
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    let out = host.attach();
    assert!(out.contains("attached, native mode"), "{out}");
    // The attach command has exited: the pinned link is what keeps the program in place.
    let link = host.net.server.ip(&["link", "show", SERVER_IF]).unwrap();
    assert!(
        link.contains("xdp"),
        "no XDP program on {SERVER_IF}: {link}"
    );

    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 50), BURST);
    let status = host.status();
    assert_eq!(status["attached"][0]["iface"], SERVER_IF);
    assert_eq!(status["attached"][0]["mode"], "native");
    assert!(status["attached"][0]["program_id"].as_u64().unwrap() > 0);
    assert_eq!(packets(&status, "pass", "register"), BURST as u64);
    assert_eq!(packets(&status, "drop_rate", "register"), 1);
    assert_eq!(
        packets(&status, "drop_banned", "register"),
        50 - BURST as u64 - 1
    );
    assert_eq!(status["tables"]["active_bans"], 1);
    assert_eq!(register_burst(&status), 10);
    assert!(ban_sources(&host).contains(&(a.to_string(), "rate".to_owned())));

    // Detached: nothing filters, but the ban and the counters wait in the pinned maps.
    let out = host.ok(&["detach", "--iface", SERVER_IF]);
    assert!(out.contains("detached"), "{out}");
    assert!(!has_xdp(&host), "still attached after detach");
    assert_eq!(host.registers_through(&server, a, 5), 5);
    let status = host.status();
    assert_eq!(status["attached"].as_array().unwrap().len(), 0);
    assert_eq!(packets(&status, "pass", "register"), BURST as u64);

    // Attached again: the same ban is still in force, the counters carry on.
    host.attach();
    assert_eq!(host.registers_through(&server, a, 5), 0);
    let status = host.status();
    assert_eq!(
        packets(&status, "drop_banned", "register"),
        50 - BURST as u64 - 1 + 5
    );
}

#[test]
fn lists_and_manual_bans_survive_a_purge_and_apply_live() {
    let host = Host::new(TEST_CONFIG);
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
    // Edited before anything is attached: saved, applied at attach.
    let out = host.ok(&["allow", "add", &b.to_string(), "--comment", "office NAT"]);
    assert!(out.contains("not attached"), "{out}");
    host.attach();
    let server = host.server_socket();
    // B is allowlisted: a flood well past the burst all arrives.
    assert_eq!(host.registers_through(&server, b, 40), 40);

    host.ok(&[
        "ban",
        "add",
        &a.to_string(),
        "--for",
        "1h",
        "--reason",
        "scanner",
    ]);
    assert_eq!(host.registers_through(&server, a, 3), 0);
    let status = host.status();
    assert_eq!(packets(&status, "drop_denylisted", "register"), 3);
    assert_eq!(status["tables"]["list_bans"], 1);
    assert!(ban_sources(&host).contains(&(format!("{a}/32"), "manual".to_owned())));

    host.ok(&["deny", "add", "203.0.113.0/24"]);
    let deny: Value =
        serde_json::from_str(&host.ok(&["deny", "list", "--output", "json"])).unwrap();
    assert_eq!(deny[0]["cidr"], "203.0.113.0/24");
    assert_eq!(deny[0]["live"], true);
    host.ok(&["deny", "del", "203.0.113.0/24"]);

    // Purge drops every pinned map; the state file brings lists and bans back at attach.
    host.ok(&["detach", "--all", "--purge"]);
    assert!(!host.pin_dir.join("DENYLIST").exists());
    host.attach();
    let allow: Value =
        serde_json::from_str(&host.ok(&["allow", "list", "--output", "json"])).unwrap();
    assert_eq!(allow[0]["cidr"], format!("{b}/32"));
    assert_eq!(allow[0]["live"], true);
    assert_eq!(allow[0]["comment"], "office NAT");
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "the manual ban came back"
    );
    assert_eq!(
        host.registers_through(&server, b, 20),
        20,
        "the allowlist came back"
    );

    let out = host.ok(&["ban", "del", &a.to_string()]);
    assert!(out.contains("lifted"), "{out}");
    assert_eq!(host.registers_through(&server, a, 3), 3);
    assert!(ban_sources(&host).is_empty());
    let err = host.fails(&["ban", "del", &a.to_string()]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ban_origins_are_kept_apart() {
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    host.attach();
    let server = host.server_socket();
    let a_str = a.to_string();
    host.ok(&["ban", "add", &a_str, "--for", "1h", "--reason", "by hand"]);
    host.ok(&[
        "ban", "add", &a_str, "--for", "10m", "--origin", "fail2ban", "--reason", "asterisk",
    ]);
    let mut sources = ban_sources(&host);
    sources.sort();
    assert_eq!(
        sources,
        vec![
            (format!("{a}/32"), "fail2ban".to_owned()),
            (format!("{a}/32"), "manual".to_owned()),
        ]
    );

    // fail2ban's unban lifts only fail2ban's ban.
    let out = host.ok(&["ban", "del", &a_str, "--origin", "fail2ban"]);
    assert!(out.contains("lifted fail2ban ban"), "{out}");
    assert!(out.contains("still banned by manual"), "{out}");
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "the manual ban holds"
    );
    // Again: nothing left of that origin; --missing-ok keeps scripts quiet.
    host.fails(&["ban", "del", &a_str, "--origin", "fail2ban"]);
    host.ok(&["ban", "del", &a_str, "--origin", "fail2ban", "--missing-ok"]);

    // And the operator's plain `ban del` never lifts CrowdSec's.
    host.ok(&["ban", "add", &a_str, "--for", "5m", "--origin", "crowdsec"]);
    let out = host.ok(&["ban", "del", &a_str]);
    assert!(out.contains("lifted manual ban"), "{out}");
    assert!(out.contains("still banned by crowdsec"), "{out}");
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "CrowdSec's ban holds"
    );
    host.ok(&["ban", "del", &a_str, "--origin", "all"]);
    assert_eq!(host.registers_through(&server, a, 3), 3);
    assert!(ban_sources(&host).is_empty());
}

#[test]
fn daemon_adopts_logs_serves_metrics_reloads_and_detaches() {
    let host = Host::new(TEST_CONFIG);
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
    host.attach();
    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 30), BURST);
    let before = host.status();
    let program_before = before["attached"][0]["program_id"].as_u64().unwrap();

    let mut daemon = Daemon::start(&host, &[]);
    daemon.wait_for(&["adopted the pinned attachment"]);
    daemon.wait_for(&["sip-xdp running"]);
    let status = host.status();
    assert_eq!(status["daemon_pid"], daemon.child.id());
    assert_ne!(
        status["attached"][0]["program_id"].as_u64().unwrap(),
        program_before
    );
    assert!(
        packets(&status, "drop_banned", "register") >= packets(&before, "drop_banned", "register"),
        "counters survived the adoption"
    );
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "A's ban survived the adoption"
    );

    // A ban while the daemon runs: one structured JSON line.
    assert_eq!(host.registers_through(&server, b, 30), BURST);
    let line = daemon.wait_for(&["\"event\":\"ban\"", &format!("\"source\":\"{b}\"")]);
    let event: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["class"], "register");
    assert_eq!(event["strikes"], 1);
    assert_eq!(event["duration_s"].as_f64().unwrap() as u64, 60);

    let metrics = scrape(&host);
    assert!(
        metrics.contains("sip_xdp_packets_total{method=\"register\",verdict=\"drop_banned\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sip_xdp_attached{interface=\"sxdp-srv\",mode=\"native\"} 1"));
    // A's ban happened before the daemon started; its event waited in the pinned ring buffer.
    daemon.wait_for(&["\"event\":\"ban\"", &format!("\"source\":\"{a}\"")]);
    assert!(
        metrics.contains("sip_xdp_ban_events_total{class=\"register\",kind=\"ban\"} 2"),
        "{metrics}"
    );

    // A second daemon on the same state is refused, and changes nothing.
    let second = host.run(&["run", "--iface", SERVER_IF, "--no-metrics"]);
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another sip-xdp daemon"), "{err}");

    // An invalid reload is rejected with its line; the running config stays.
    std::fs::write(
        &host.config,
        "[limits.register]\nrate = \"1/s\"\nburst = 0\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let line = daemon.wait_for(&["config reload rejected"]);
    assert!(line.contains(":3:"), "the error names the line: {line}");
    assert_eq!(register_burst(&host.status()), 10);
    // A valid one applies.
    std::fs::write(
        &host.config,
        "[limits.register]\nrate = \"2/s\"\nburst = 25\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&["config reloaded"]);
    assert_eq!(register_burst(&host.status()), 25);

    // SIGTERM: a clean exit that detaches, with the maps kept.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    let status = host.status();
    assert_eq!(status["attached"].as_array().unwrap().len(), 0);
    assert_eq!(status["pinned"], true);
    assert!(status["daemon_pid"].is_null());
}

#[test]
fn a_killed_daemon_leaves_the_filter_running() {
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    let mut daemon = Daemon::start(&host, &["--no-metrics"]);
    daemon.wait_for(&["sip-xdp running"]);
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 40), BURST);
    let status = host.status();
    assert_eq!(status["attached"][0]["iface"], SERVER_IF);
    assert!(status["daemon_pid"].is_null());
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_nothing_behind() {
    let host = Host::new(TEST_CONFIG);
    let err = host.fails(&["allow", "add", "10.0.0.300/8"]);
    assert!(err.contains("not an IP address or CIDR"), "{err}");
    let err = host.fails(&["ban", "add", "198.51.100.7", "--for", "soon"]);
    assert!(err.contains("soon"), "{err}");

    let err = host.fails(&["attach", "--iface", "sxdp-nosuch"]);
    assert!(
        err.contains("sxdp-nosuch") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !host.pin_dir.exists(),
        "a failed attach left {} behind",
        host.pin_dir.display()
    );

    let bad = host.state_dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits.register]\nrate = \"5/s\"\nburts = 3\n").unwrap();
    let err = host.fails(&["config", "check", bad.to_str().unwrap()]);
    assert!(err.contains("burts") && err.contains(":3:"), "{err}");
    let err = host.fails(&[
        "attach",
        "--iface",
        SERVER_IF,
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(err.contains("burts"), "{err}");
    assert!(!host.pin_dir.exists());

    let err = host.fails(&["detach", "--iface", SERVER_IF]);
    assert!(err.contains("not attached"), "{err}");
    let out = host.ok(&["config", "check", host.config.to_str().unwrap()]);
    assert!(out.contains("OK"), "{out}");

    // Not root: refused before touching anything.
    let mut as_nobody = Command::new("setpriv");
    as_nobody
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(sip_xdp_bin())
        .args(["attach", "--iface", SERVER_IF])
        .env("SIP_XDP_PIN_DIR", &host.pin_dir)
        .env("SIP_XDP_STATE_DIR", host.state_dir.path());
    let out = as_nobody.output().expect("running setpriv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");

    // A pin directory that is not on bpffs.
    let not_bpffs = host.state_dir.path().join("pins");
    let err = host.fails(&[
        "--pin-dir",
        not_bpffs.to_str().unwrap(),
        "attach",
        "--iface",
        SERVER_IF,
    ]);
    assert!(err.contains("not on a BPF filesystem"), "{err}");
    assert!(!has_xdp(&host));
}

#[test]
fn auto_mode_falls_back_to_skb_where_the_device_has_no_native_xdp() {
    let host = Host::new(TEST_CONFIG);
    // A bridge device has no native XDP support (and the dummy driver is not built here).
    host.net
        .server
        .ip(&["link", "add", "sxdp-br", "type", "bridge"])
        .unwrap();
    host.net
        .server
        .ip(&["link", "set", "sxdp-br", "up"])
        .unwrap();
    let err = host.fails(&["attach", "--iface", "sxdp-br", "--mode", "native"]);
    assert!(
        err.contains("native") && err.contains("--mode skb"),
        "{err}"
    );
    assert!(
        !host.pin_dir.join("SOURCES").exists(),
        "a failed attach left maps pinned"
    );

    let out = host.run(&["attach", "--iface", "sxdp-br", "--mode", "auto"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning") && err.contains("skb"), "{err}");
    let status = host.status();
    assert_eq!(status["attached"][0]["iface"], "sxdp-br");
    assert_eq!(status["attached"][0]["mode"], "skb");
    // Asking for the other mode while attached names the fix.
    let err = host.fails(&["attach", "--iface", "sxdp-br", "--mode", "native"]);
    assert!(err.contains("detach --iface sxdp-br"), "{err}");
}

#[test]
fn daemon_logs_would_bans_and_expiries_in_monitor_mode() {
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    std::fs::write(
        &host.config,
        "[limits.register]\nrate = \"1/s\"\nburst = 10\n\n[bans]\nbase = \"1s\"\n\
         extend_while_active = false\n\n[datapath]\nmonitor = true\n",
    )
    .unwrap();
    let daemon = Daemon::start(&host, &["--no-metrics"]);
    daemon.wait_for(&["sip-xdp running"]);
    let server = host.server_socket();
    // Monitor mode: everything passes, the would-be ban is logged.
    assert_eq!(host.registers_through(&server, a, 40), 40);
    let line = daemon.wait_for(&["\"event\":\"would_ban\"", &format!("\"source\":\"{a}\"")]);
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["class"], "register");
    let status = host.status();
    assert_eq!(status["monitor_mode"], true);
    assert_eq!(status["tables"]["active_would_bans"], 1);
    assert_eq!(status["events"]["would_bans"], 1);

    // The kernel reports the end of the (would-be) ban with the source's next packet.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(host.registers_through(&server, a, 1), 1);
    let line = daemon.wait_for(&["\"event\":\"expired\"", &format!("\"source\":\"{a}\"")]);
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["strikes"], 1);
}

#[test]
fn automatic_bans_and_strikes_survive_a_purge() {
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    host.attach();
    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 30), BURST);
    // Purging drops the pinned SOURCES table; detach saves the bans to the state file first.
    host.ok(&["detach", "--all", "--purge"]);
    assert!(!host.pin_dir.join("SOURCES").exists());
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(host.state_dir.path().join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["auto_bans"][0]["addr"], a.to_string());
    assert_eq!(state["auto_bans"][0]["strikes"], 1);

    host.attach();
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "the ban came back"
    );
    let bans = ban_sources(&host);
    assert!(
        bans.contains(&(a.to_string(), "rate".to_owned())),
        "{bans:?}"
    );
    let status = host.status();
    assert_eq!(status["tables"]["active_bans"], 1);
}

#[test]
fn a_missing_bpffs_is_mounted_where_sip_xdp_expects_it() {
    let host = Host::new(TEST_CONFIG);
    // A private mount namespace without bpffs on /sys/fs/bpf (a minimal host or container):
    // attach mounts it, pins there, and status finds the attachment through it. The namespace,
    // its bpffs and so the pinned link die with the shell.
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; \
         if [ \"$(stat -f -c %T /sys/fs/bpf)\" = bpf_fs ]; then echo still-mounted; exit 3; fi; \
         nsenter --net={netns} {bin} attach --iface {SERVER_IF} --config {config} && \
         stat -f -c %T /sys/fs/bpf && \
         nsenter --net={netns} {bin} status --output json",
        netns = host.net.server.path().display(),
        bin = sip_xdp_bin().display(),
        config = host.config.display(),
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("SIP_XDP_PIN_DIR", &host.pin_dir)
        .env("SIP_XDP_STATE_DIR", host.state_dir.path())
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("bpf_fs"), "bpffs was not mounted: {stdout}");
    let json = &stdout[stdout.find('{').expect("status JSON")..];
    let status: Value = serde_json::from_str(json).unwrap();
    assert_eq!(status["attached"][0]["iface"], SERVER_IF);
}

/// GET /metrics from the daemon in `host`'s server namespace, giving up after `within`.
fn scrape_within(host: &Host, within: Duration) -> std::io::Result<String> {
    let mut stream = host
        .net
        .server
        .run(|| TcpStream::connect_timeout(&"127.0.0.1:9433".parse().unwrap(), within))?;
    stream.set_read_timeout(Some(within))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"))
}

/// Item 10 of issue 10: 80 half-sent requests to a daemon limited to 64 descriptors held the
/// metrics endpoint (scrapes timed out) and starved the reconcile ("Too many open files").
#[test]
fn half_sent_metrics_requests_cannot_starve_scrapes_or_reconcile() {
    const HELD: usize = 80;
    const NOFILE: u64 = 64;
    let host = Host::new(TEST_CONFIG);
    let mut daemon = Daemon::start_with_nofile(&host, &[], Some(NOFILE));
    daemon.wait_for(&["sip-xdp running"]);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .map(|d| d.count())
        .unwrap_or(0);
    println!("daemon runs with {fds} descriptors open, RLIMIT_NOFILE {NOFILE}");

    // Eighty clients send half a request each and hold on.
    let mut held: Vec<TcpStream> = (0..HELD)
        .map(|i| {
            let mut stream = host
                .net
                .server
                .run(|| TcpStream::connect("127.0.0.1:9433"))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
                .unwrap();
            stream
        })
        .collect();
    // A ban that runs out at once: the next reconcile (every 10 s) prunes it from the state file,
    // which needs descriptors for the lock, the file and its replacement.
    host.ok(&["ban", "add", "198.51.100.20", "--for", "1s"]);
    let state_file = host.state_dir.path().join("state.json");
    assert!(
        std::fs::read_to_string(&state_file)
            .unwrap()
            .contains("198.51.100.20")
    );

    // A real scrape is still answered while they are held.
    let started = Instant::now();
    let response = scrape_within(&host, Duration::from_secs(10))
        .expect("a scrape is answered while half-sent requests are held");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    println!(
        "scrape answered after {} ms with {HELD} half-sent requests held",
        started.elapsed().as_millis()
    );

    // The server closes every half-sent request: at once when over the cap, else after the
    // header-read timeout.
    for (i, stream) in held.iter_mut().enumerate() {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("half-sent request {i} is still open after 15 s")
                }
                Err(_) => break,
            }
        }
    }
    let closed_at = started.elapsed();
    println!(
        "all {HELD} half-sent requests closed by the server after {} ms",
        closed_at.as_millis()
    );

    // The reconcile kept working: the expired ban leaves the state file.
    let deadline = Instant::now() + Duration::from_secs(25);
    while std::fs::read_to_string(&state_file)
        .unwrap()
        .contains("198.51.100.20")
    {
        assert!(
            Instant::now() < deadline,
            "no reconcile pruned the expired ban within 25 s; log:\n{}",
            daemon.lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = scrape_within(&host, Duration::from_secs(10)).expect("scrape");
    let over_limit = counter(
        &metrics,
        r#"sip_xdp_metrics_connections_closed_total{reason="over_limit"}"#,
    );
    let timed_out = counter(
        &metrics,
        r#"sip_xdp_metrics_connections_closed_total{reason="header_timeout"}"#,
    );
    println!("closed: {over_limit} over the connection cap, {timed_out} by the header timeout");
    assert_eq!(over_limit + timed_out, HELD as u64, "{metrics}");
    assert!(over_limit >= (HELD - 16) as u64, "{metrics}");
    let log = daemon.lines.lock().unwrap().join("\n");
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("could not reconcile"), "{log}");
    assert!(!log.contains("metrics scrape failed"), "{log}");
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
}
