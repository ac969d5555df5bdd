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
    netns::{CLIENT_V4_A, CLIENT_V4_B, SERVER_IF, SERVER_V4, SERVER_V6},
    packet::{self, Frame},
    raw::RawSender,
    registrar::Registrar,
};

#[test]
fn attach_keeps_filtering_without_a_process_and_detach_keeps_state() {
    sip_xdp_tests::needs_root!();
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
    // A banned source's datagrams are dropped on their addresses, before the payload is read.
    assert_eq!(
        packets(&status, "drop_banned", "unread"),
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
        packets(&status, "drop_banned", "unread"),
        50 - BURST as u64 - 1 + 5
    );
}

#[test]
fn lists_and_manual_bans_survive_a_purge_and_apply_live() {
    sip_xdp_tests::needs_root!();
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
    sip_xdp_tests::needs_root!();
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
    sip_xdp_tests::needs_root!();
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
        packets(&status, "drop_banned", "unread") >= packets(&before, "drop_banned", "unread")
            && packets(&before, "drop_banned", "unread") > 0,
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
        metrics.contains("sip_xdp_packets_total{method=\"unread\",verdict=\"drop_banned\"}"),
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
    // A valid one applies, TCP ports and prefix levels included (an empty TCP list is said).
    std::fs::write(
        &host.config,
        "[limits.register]\nrate = \"2/s\"\nburst = 25\n\
         [datapath]\ntcp_ports = []\n[prefixes]\nipv4 = 16\nipv6 = [56]\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&["datapath.tcp_ports is empty"]);
    daemon.wait_for(&["config reloaded"]);
    let status = host.status();
    assert_eq!(register_burst(&status), 25);
    assert_eq!(status["config"]["tcp_ports"], serde_json::json!([]));
    assert_eq!(status["config"]["prefix_ipv4"], 16);
    assert_eq!(status["config"]["prefix_ipv6"], serde_json::json!([56]));

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
    sip_xdp_tests::needs_root!();
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
    sip_xdp_tests::needs_root!();
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
    sip_xdp_tests::needs_root!();
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
    sip_xdp_tests::needs_root!();
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
    sip_xdp_tests::needs_root!();
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

/// `ip -d link show dev IF` in `netns`: the XDP program's id, if one is attached.
fn xdp_prog_id(netns: &str, iface: &str) -> Option<u64> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "ip", "-d", "link", "show", "dev", iface,
        ])
        .output()
        .expect("running ip");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = &text[text.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `ip netns exec NS sip-xdp args`, exactly as an operator types it: the default pin and state
/// directories (nothing in the environment), a private mount namespace without the host's bpffs.
fn ip_netns_exec(netns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(sip_xdp_bin())
        .args(args)
        .env_remove("SIP_XDP_PIN_DIR")
        .env_remove("SIP_XDP_STATE_DIR")
        .env_remove("SIP_XDP_LOG_FORMAT")
        .output()
        .expect("running ip netns exec")
}

fn ip_netns_exec_ok(netns: &str, args: &[&str]) -> String {
    let out = ip_netns_exec(netns, args);
    assert!(
        out.status.success(),
        "ip netns exec {netns} sip-xdp {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The default directories of a network namespace, removed (after a detach and purge) on drop.
struct NetnsDefaults {
    netns: String,
    pin_dir: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    created_state_root: bool,
}

impl NetnsDefaults {
    fn new(netns: &str) -> Self {
        Self {
            netns: netns.to_owned(),
            pin_dir: format!("/sys/fs/bpf/sip-xdp-netns-{netns}").into(),
            state_dir: format!("/var/lib/sip-xdp/netns-{netns}").into(),
            created_state_root: !std::path::Path::new("/var/lib/sip-xdp").exists(),
        }
    }
}

impl Drop for NetnsDefaults {
    fn drop(&mut self) {
        let _ = ip_netns_exec(&self.netns, &["detach", "--all", "--purge"]);
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        if self.created_state_root {
            // This test made it (the package's tests expect it absent before an install).
            let _ = std::fs::remove_dir_all("/var/lib/sip-xdp");
        }
    }
}

#[test]
fn ip_netns_exec_attach_stays_attached_and_later_commands_manage_it() {
    sip_xdp_tests::needs_root!();
    // Two namespaces, each with an interface called sxdp-srv.
    let host = Host::new(TEST_CONFIG);
    let other = Host::new(TEST_CONFIG);
    let (ns, ns2) = (host.net.server.name(), other.net.server.name());
    let (dirs, dirs2) = (NetnsDefaults::new(ns), NetnsDefaults::new(ns2));
    let config = host.config.to_str().unwrap();
    let a = IpAddr::V4(CLIENT_V4_A);

    let out = ip_netns_exec_ok(
        ns,
        &[
            "attach", "--iface", SERVER_IF, "--mode", "native", "--config", config,
        ],
    );
    assert!(out.contains("attached, native mode"), "{out}");
    assert!(
        out.contains(&dirs.pin_dir.display().to_string()),
        "not pinned in the namespace's own directory on the host's bpffs: {out}"
    );
    ip_netns_exec_ok(ns2, &["attach", "--iface", SERVER_IF, "--mode", "native"]);

    // The command has exited: seen from outside, the program is attached and pinned on the
    // host's bpffs, each namespace's in its own directory.
    let prog = xdp_prog_id(ns, SERVER_IF).expect("no XDP program attached after the command");
    let prog2 = xdp_prog_id(ns2, SERVER_IF).expect("the second namespace's program");
    assert_ne!(prog, prog2);
    assert!(dirs.pin_dir.join("link_native_sxdp-srv").exists());
    assert!(dirs2.pin_dir.join("link_native_sxdp-srv").exists());
    assert!(dirs.state_dir.join("state.json").is_file());

    // A second `ip netns exec` finds it.
    let status: Value =
        serde_json::from_str(&ip_netns_exec_ok(ns, &["status", "--output", "json"])).unwrap();
    assert_eq!(status["attached"][0]["iface"], SERVER_IF);
    assert_eq!(status["attached"][0]["program_id"], prog);
    assert_eq!(register_burst(&status), 10);
    ip_netns_exec_ok(ns, &["status", "--require-attached"]);

    // It filters: the rate limit, then a ban added from yet another `ip netns exec`.
    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 30), BURST);
    let status: Value =
        serde_json::from_str(&ip_netns_exec_ok(ns, &["status", "--output", "json"])).unwrap();
    assert_eq!(packets(&status, "pass", "register"), BURST as u64);
    assert_eq!(status["tables"]["active_bans"], 1);
    let b = IpAddr::V4(CLIENT_V4_B);
    ip_netns_exec_ok(
        ns,
        &[
            "ban",
            "add",
            &b.to_string(),
            "--for",
            "1h",
            "--require-enforced",
        ],
    );
    assert_eq!(host.registers_through(&server, b, 3), 0);
    // The other namespace's filter has its own maps: nothing of this reached it.
    let status2: Value =
        serde_json::from_str(&ip_netns_exec_ok(ns2, &["status", "--output", "json"])).unwrap();
    assert_eq!(status2["tables"]["list_bans"], 0);
    assert_eq!(packets(&status2, "pass", "register"), 0);

    // Detach from another `ip netns exec`: gone in the kernel, the other namespace untouched.
    let out = ip_netns_exec_ok(ns, &["detach", "--iface", SERVER_IF]);
    assert!(out.contains("detached"), "{out}");
    assert_eq!(
        xdp_prog_id(ns, SERVER_IF),
        None,
        "still attached after detach"
    );
    assert_eq!(xdp_prog_id(ns2, SERVER_IF), Some(prog2));
    assert_eq!(host.registers_through(&server, b, 3), 3);
}

#[test]
fn a_private_mount_namespace_pins_into_the_hosts_bpffs() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    // A private mount namespace without bpffs on /sys/fs/bpf (what `ip netns exec` and `unshare`
    // give): attach must not mount a bpffs that dies with the namespace; it pins into the host's
    // (PID 1's) bpffs, so the filter outlives the shell.
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; \
         if [ \"$(stat -f -c %T /sys/fs/bpf)\" = bpf_fs ]; then echo still-mounted; exit 3; fi; \
         nsenter --net={netns} {bin} attach --iface {SERVER_IF} --config {config} && \
         stat -f -c %T /sys/fs/bpf",
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
    assert!(
        !stdout.contains("bpf_fs"),
        "attach mounted a bpffs in the private namespace: {stdout}"
    );
    // The shell and its namespace are gone; the host sees the pins and the program.
    assert!(
        host.pin_dir.join("link_native_sxdp-srv").exists(),
        "{stdout}"
    );
    assert!(has_xdp(&host));
    let status = host.status();
    assert_eq!(status["attached"][0]["iface"], SERVER_IF);
    let server = host.server_socket();
    assert_eq!(
        host.registers_through(&server, IpAddr::V4(CLIENT_V4_A), 30),
        BURST
    );
}

#[test]
fn attach_refuses_where_no_bpffs_outlives_the_command() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    // A container-like PID namespace whose init has no bpffs, and attach run in a private mount
    // namespace below it: no bpffs that outlives the command is reachable.
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; \
         unshare --mount --propagation private -- \
           nsenter --net={netns} {bin} attach --iface {SERVER_IF} --config {config}",
        netns = host.net.server.path().display(),
        bin = sip_xdp_bin().display(),
        config = host.config.display(),
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("SIP_XDP_PIN_DIR", &host.pin_dir)
        .env("SIP_XDP_STATE_DIR", host.state_dir.path())
        .output()
        .expect("running unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "attach reported success: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("outlives this command")
            && stderr.contains("-v /sys/fs/bpf:/sys/fs/bpf")
            && stderr.contains("--pin-dir"),
        "{stderr}"
    );
    assert!(!has_xdp(&host), "something was attached");
    assert!(!host.pin_dir.exists(), "something was pinned");

    // A container without the host's bpffs (`docker run ... sip-xdp attach`): sip-xdp is in its
    // PID 1's mount namespace, but that namespace ends with the container.
    let script = format!(
        "umount /sys/fs/bpf 2>/dev/null; \
         nsenter --net={netns} {bin} attach --iface {SERVER_IF} --config {config}",
        netns = host.net.server.path().display(),
        bin = sip_xdp_bin().display(),
        config = host.config.display(),
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--mount-proc",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("SIP_XDP_PIN_DIR", &host.pin_dir)
        .env("SIP_XDP_STATE_DIR", host.state_dir.path())
        .output()
        .expect("running unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "attach reported success: {stderr}");
    assert!(
        stderr.contains("outlives this command") && stderr.contains("container"),
        "{stderr}"
    );
    assert!(!has_xdp(&host), "something was attached");
    assert!(!host.pin_dir.exists(), "something was pinned");
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
    sip_xdp_tests::needs_root!();
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

// ---- The answers-aware defences as an operator sees them ----------------------------------

/// The egress attachment status JSON reports for `SERVER_IF`: (link, program id).
fn egress_in_status(status: &Value) -> Option<(String, u64)> {
    status["attached"]
        .as_array()
        .expect("status.attached")
        .iter()
        .find(|a| a["hook"] == "tc-egress" && a["iface"] == SERVER_IF)
        .map(|a| {
            (
                a["mode"].as_str().unwrap().to_owned(),
                a["program_id"].as_u64().expect("an egress program id"),
            )
        })
}

/// What the kernel itself says of the egress program, asked without sip-xdp: on a kernel with
/// TCX, whether a TCX link runs program `program_id` (named `sip_xdp_egress`), and the pinned
/// link; with a clsact filter, `tc filter show dev SERVER_IF egress`; and `bpftool`, where it is
/// installed. Returns a line describing what was found, or None when nothing is on.
fn egress_from_outside(host: &Host, program_id: Option<u64>) -> Option<String> {
    let tc = host
        .net
        .server
        .run(|| {
            Command::new("tc")
                .args(["filter", "show", "dev", SERVER_IF, "egress"])
                .output()
        })
        .expect("running tc");
    let tc = String::from_utf8_lossy(&tc.stdout).into_owned();
    let tcx_pin = host.pin_dir.join(format!("link_tc-egress_{SERVER_IF}"));
    let mut found = Vec::new();
    if tc.contains("sip_xdp_egress") {
        found.push(format!("tc filter: {}", tc.trim().replace('\n', " / ")));
    }
    let tcx_links: Vec<u32> = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| l.link_type().ok() == Some(aya::programs::links::LinkType::Tcx))
        .filter(|l| program_id.is_none_or(|p| u64::from(l.program_id()) == p))
        .map(|l| l.program_id())
        .collect();
    for id in &tcx_links {
        let name = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == *id)
            .and_then(|p| p.name_as_str().map(str::to_owned))
            .unwrap_or_default();
        if program_id.is_some() {
            assert_eq!(name, "sip_xdp_egress", "the TCX link's program");
        }
        found.push(format!("TCX link to program {id} ({name})"));
    }
    if tcx_pin.exists() {
        found.push(format!("pinned {}", tcx_pin.display()));
        if let Ok(out) = Command::new("bpftool")
            .args(["link", "show", "pinned"])
            .arg(&tcx_pin)
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            // bpftool 7.1 (Debian 12) predates the name and prints the number:
            // BPF_LINK_TYPE_TCX is 11.
            assert!(
                text.contains("tcx") || text.contains("type 11 "),
                "bpftool link show pinned: {text}"
            );
            found.push(format!("bpftool: {}", text.trim().replace('\n', " / ")));
        }
    }
    if program_id.is_none() {
        // Without an id the TCX links of other tests' hosts may be listed: only the interface's
        // own evidence (its filters, its pin) counts.
        found.retain(|f| !f.starts_with("TCX link"));
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// The egress program's `answers` counter after the server sends one 401 from its SIP port to
/// B: one more while the program is on the interface, the same while it is not.
fn answers_counted(host: &Host, registrar: &Registrar) -> bool {
    let before = host.status()["events"]["answers"].as_u64().unwrap_or(0);
    let b = std::net::SocketAddr::new(IpAddr::V4(CLIENT_V4_B), 5999);
    registrar.answer(b, 401, 1);
    let after = host.status()["events"]["answers"].as_u64().unwrap_or(0);
    assert!(after <= before + 1, "{before} -> {after} answers for one");
    after == before + 1
}

fn status_text(host: &Host) -> String {
    host.ok(&["status"])
}

#[test]
fn answers_egress_program_attaches_shows_detaches_and_stays_as_configured() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let registrar = Registrar::new(&host);
    assert!(
        egress_from_outside(&host, None).is_none(),
        "an egress program before attach"
    );

    // Attached as an operator does: the egress program goes on with the XDP one.
    let out = host.attach();
    assert!(out.contains("answers read at TC egress ("), "{out}");
    let status = host.status();
    let (link, mut program_id) =
        egress_in_status(&status).unwrap_or_else(|| panic!("no egress in {status:#}"));
    assert!(link == "tcx" || link == "netlink", "{link}");
    assert!(program_id > 0);
    assert_eq!(status["config"]["answers_enabled"], true);
    let outside = egress_from_outside(&host, Some(program_id))
        .unwrap_or_else(|| panic!("status says {link} program {program_id}, the kernel nothing"));
    eprintln!("egress from outside: {outside}");
    if link == "tcx" {
        assert!(
            outside.contains(&format!("TCX link to program {program_id}")),
            "{outside}"
        );
    } else {
        assert!(outside.contains("tc filter"), "{outside}");
    }
    assert!(
        answers_counted(&host, &registrar),
        "the egress program counted no answer"
    );
    let text = status_text(&host);
    assert!(
        text.contains(&format!(
            "answers:   {SERVER_IF} (TC egress by {link}), program id {program_id}"
        )),
        "{text}"
    );
    assert!(text.contains("verified:  0 sources of "), "{text}");
    assert!(
        text.contains("guards:    reflection drops 0 (per destination)"),
        "{text}"
    );
    assert!(
        text.contains("answers                 on (verified for 2h"),
        "{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");

    // Taken off behind sip-xdp's back (the TCX link's pin removed, as a careless cleanup of
    // bpffs would): status warns and says how to put it back, and no answer is read.
    if link == "tcx" {
        std::fs::remove_file(host.pin_dir.join(format!("link_tc-egress_{SERVER_IF}"))).unwrap();
        assert!(egress_from_outside(&host, Some(program_id)).is_none());
        assert!(!answers_counted(&host, &registrar));
        let text = status_text(&host);
        assert!(
            text.contains(&format!(
                "WARNING:   answers are on but {SERVER_IF} has no egress program"
            )) && text.contains(&format!("run `sip-xdp attach --iface {SERVER_IF}` again")),
            "{text}"
        );
        host.attach();
        program_id = egress_in_status(&host.status())
            .expect("egress after attach")
            .1;
        assert!(egress_from_outside(&host, Some(program_id)).is_some());
        assert!(answers_counted(&host, &registrar));
    }

    // Detached: both programs go, as the kernel sees it too.
    let out = host.ok(&["detach", "--iface", SERVER_IF]);
    assert!(out.contains("detached"), "{out}");
    let status = host.status();
    assert!(egress_in_status(&status).is_none(), "{status:#}");
    assert!(
        egress_from_outside(&host, Some(program_id)).is_none(),
        "{:?}",
        egress_from_outside(&host, Some(program_id))
    );
    assert!(!has_xdp(&host));
    assert!(!answers_counted(&host, &registrar));

    // A daemon reloading a config that turns the answers off keeps them on, and says why.
    let mut daemon = Daemon::start(&host, &[]);
    daemon.wait_for(&["sip-xdp running"]);
    let (_, program_id) = egress_in_status(&host.status()).expect("the daemon's egress program");
    assert!(egress_from_outside(&host, Some(program_id)).is_some());
    std::fs::write(
        &host.config,
        format!("{TEST_CONFIG}\n[answers]\nenabled = false\n[limits.invite]\nburst = 7\n"),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let warning = daemon.wait_for(&["answers.enabled changed"]);
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    assert!(warning.contains("next `sip-xdp attach`"), "{warning}");
    daemon.wait_for(&["config reloaded"]);
    let status = host.status();
    assert_eq!(status["config"]["answers_enabled"], true, "{status:#}");
    let invite_burst = status["config"]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["class"] == "invite")
        .and_then(|l| l["burst"].as_u64());
    assert_eq!(invite_burst, Some(7), "the rest of the reload applied");
    assert!(egress_from_outside(&host, Some(program_id)).is_some());
    assert!(answers_counted(&host, &registrar));
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    assert!(egress_from_outside(&host, Some(program_id)).is_none());

    // `[answers] enabled = false`: attach puts the XDP program on alone.
    let off = Host::new(&format!("{TEST_CONFIG}\n[answers]\nenabled = false\n"));
    let registrar = Registrar::new(&off);
    let out = off.attach();
    assert!(out.contains("attached, native mode"), "{out}");
    assert!(!out.contains("answers read"), "{out}");
    assert!(has_xdp(&off));
    let status = off.status();
    assert!(egress_in_status(&status).is_none(), "{status:#}");
    assert_eq!(status["config"]["answers_enabled"], false);
    assert!(egress_from_outside(&off, None).is_none());
    assert!(!answers_counted(&off, &registrar));
    let text = status_text(&off);
    assert!(
        text.contains("answers                 off (no egress program)"),
        "{text}"
    );
    assert!(
        !text.contains("verified:") && !text.contains("WARNING"),
        "{text}"
    );
    eprintln!(
        "answers off: {}",
        text.lines().find(|l| l.contains("answers")).unwrap()
    );

    // `sip-xdp config show` prints the section as it is in force; `config check` refuses a
    // verified threshold below the unverified one at its line.
    let shown = off.ok(&["config", "show", "--config", off.config.to_str().unwrap()]);
    assert!(shown.contains("[answers]\nenabled = false\n"), "{shown}");
    for key in [
        "max_failures_verified = 50",
        "[answers.admission]",
        "[answers.verified_limits.register]",
    ] {
        assert!(shown.contains(key), "no {key:?} in\n{shown}");
    }
    let bad = off.state_dir.path().join("bad-answers.toml");
    std::fs::write(
        &bad,
        "[answers]\nmax_failures = 8\nmax_failures_verified = 2\n",
    )
    .unwrap();
    let err = off.fails(&["config", "check", bad.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "{}:3:25: answers.max_failures_verified (2) must be at least answers.max_failures (8)",
            bad.display()
        )),
        "{err}"
    );
}

/// Real REGISTERs from the client namespace, answered by a registrar socket on port 5060: a
/// phone logs in (verified), a second phone of the same address retries a wrong password
/// (a phone ban: its port only), another address collects 403s (an auth ban). `ban list` shows
/// both, `ban del --origin auth` lifts them.
#[test]
fn auth_and_phone_bans_from_real_answers_are_listed_and_lifted() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    host.attach();
    let mut registrar = Registrar::new(&host);
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));

    let good = registrar.phone(a);
    registrar.log_in(&good);
    let status = host.status();
    assert_eq!(status["tables"]["verified_sources"], 1, "{status:#}");
    assert_eq!(status["events"]["verifications"], 1);

    // The broken phone: the first 401 is the normal challenge, each further one a failure; the
    // fifth (answers.max_flow_failures) bans its port.
    let broken = registrar.phone(a);
    let broken_at = broken.local_addr().unwrap();
    assert_eq!(registrar.registers(&broken, 401, 6), 6);
    assert!(
        !registrar.register(&broken, 401),
        "the broken phone still passes"
    );
    assert!(
        registrar.register(&good, 200),
        "the good phone of the same address is cut off"
    );

    // An unverified address answered 403 five times (answers.max_failures): banned.
    let guesser = registrar.phone(b);
    assert_eq!(registrar.registers(&guesser, 403, 5), 5);
    assert!(
        !registrar.register(&guesser, 403),
        "the guesser still passes"
    );

    let bans: Value = serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).unwrap();
    let entry = |source: &str| {
        bans.as_array()
            .unwrap()
            .iter()
            .find(|b| b["source"] == source)
            .unwrap_or_else(|| panic!("no ban of {source} in {bans:#}"))
            .clone()
    };
    let phone = entry(&broken_at.to_string());
    assert_eq!(
        (phone["origin"].as_str(), phone["class"].as_str()),
        (Some("auth"), Some("phone"))
    );
    assert!(phone["remaining_s"].as_u64().unwrap() > 0);
    let address = entry(&b.to_string());
    assert_eq!(
        (address["origin"].as_str(), address["class"].as_str()),
        (Some("auth"), Some("forbidden"))
    );
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"] != a.to_string()),
        "the verified address itself is banned: {bans:#}"
    );
    let listed = host.ok(&["ban", "list"]);
    assert!(
        listed.contains(&broken_at.to_string()) && listed.contains("phone"),
        "{listed}"
    );
    let text = status_text(&host);
    assert!(
        text.contains("failures:  forbidden=5 not_found=0 rechallenged=5 unanswered=0; auth bans 1, phone bans 1"),
        "{text}"
    );
    assert!(
        text.contains("verified:  1 sources of ") && text.contains("1 phones banned"),
        "{text}"
    );
    eprintln!("{bans:#}");

    // Lifted: the address ban, then the phone ban (by its address).
    let out = host.ok(&["ban", "del", &b.to_string(), "--origin", "auth"]);
    assert!(out.contains(&format!("lifted auth ban of {b}")), "{out}");
    assert!(
        registrar.register(&guesser, 200),
        "the lifted address is still dropped"
    );
    // Another origin lifts nothing and says which one would.
    let out = host.run(&["ban", "del", &a.to_string(), "--origin", "manual"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("still banned by the auth ban (lift with --origin auth)"),
        "{said}"
    );
    assert!(!registrar.register(&broken, 200));
    let out = host.ok(&["ban", "del", &a.to_string(), "--origin", "auth"]);
    assert!(
        out.contains(&format!("lifted auth ban of phone {broken_at}")),
        "{out}"
    );
    eprintln!("ban del {a} --origin auth: {out}");
    assert!(
        registrar.register(&broken, 200),
        "the lifted phone is still dropped"
    );
    // Its address stays verified: the good phone was never touched.
    assert_eq!(host.status()["tables"]["verified_sources"], 1);
    assert!(registrar.register(&good, 200));
    let bans: Value = serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).unwrap();
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .all(|e| e["origin"] != "auth"),
        "{bans:#}"
    );
}

/// The prefix a flood spread over 198.51.100.0/24 gets banned as, real clients A and B in it.
const FLOODED_PREFIX: &str = "198.51.100.0/24";
/// Spoofed sources of the spread: 198.51.100.100 onwards, clear of the real clients.
const SPREAD_HOSTS: u8 = 100;
/// OPTIONS per spoofed source: far below its own bucket (burst 30), 300 together against the
/// prefix's burst of 200.
const SPREAD_FRAMES: u32 = 3;

/// The prefix ban of `ban list --output json`, if listed.
fn listed_prefix_ban(host: &Host) -> Option<Value> {
    let bans: Value =
        serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).expect("ban JSON");
    bans.as_array()
        .expect("ban list is an array")
        .iter()
        .find(|b| b["source"] == FLOODED_PREFIX)
        .cloned()
}

#[test]
fn a_flood_spread_over_a_24_is_banned_as_the_prefix_listed_kept_and_lifted() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    let mut daemon = Daemon::start(&host, &["--no-metrics"]);
    daemon.wait_for(&["sip-xdp running"]);
    let server = host.server_socket();

    // Every spoofed source stays within its own limit; together they run the /24's OPTIONS
    // bucket dry.
    let sender = RawSender::new(&host);
    for seq in 1..=SPREAD_FRAMES {
        for i in 0..SPREAD_HOSTS {
            let source = std::net::Ipv4Addr::new(198, 51, 100, 100 + i);
            let payload = packet::request("OPTIONS", "sip:1000@example.com", seq);
            sender.send_addressed(&Frame::sip(source.into(), SERVER_V4.into(), &payload).build());
            if i % 32 == 31 {
                // Paced so the veth's XDP ring never overflows.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let line = daemon.wait_for(&[
        "\"event\":\"ban\"",
        &format!("\"source\":\"{FLOODED_PREFIX}\""),
    ]);
    let event: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(event["origin"], "prefix", "{line}");
    assert_eq!(event["class"], "options", "{line}");
    assert_eq!(event["prefix_len"], 24, "{line}");
    assert_eq!(event["strikes"], 1, "{line}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("banned prefix 198.51.100.0/24 (options) for 1m, strike 1"),
        "{line}"
    );

    let ban = listed_prefix_ban(&host).expect("the prefix ban in `ban list`");
    assert_eq!(ban["origin"], "prefix", "{ban}");
    assert_eq!(ban["class"], "options", "{ban}");
    assert_eq!(ban["strikes"], 1, "{ban}");
    let remaining = ban["remaining_s"].as_u64().unwrap();
    assert!((1..=60).contains(&remaining), "{ban}");
    // No source of the spread was banned on its own.
    assert!(
        ban_sources(&host)
            .iter()
            .all(|(_, origin)| origin == "prefix"),
        "{:?}",
        ban_sources(&host)
    );
    let text = host.ok(&["ban", "list"]);
    assert!(
        text.lines().any(|l| l.starts_with(FLOODED_PREFIX)
            && l.contains(" prefix ")
            && l.contains("options")),
        "{text}"
    );
    // A real client inside the prefix (unverified, never over its own limit) is dropped with it.
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "A is in the banned /24"
    );
    let status = host.status();
    assert_eq!(status["tables"]["banned_prefixes"], 1, "{status}");
    assert_eq!(status["events"]["prefix_bans"], 1, "{status}");
    assert!(
        status["events"]["prefix_banned_drops"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert!(packets(&status, "drop_prefix", "options") >= 1, "{status}");
    eprintln!(
        "prefix: {} of {} OPTIONS from {SPREAD_HOSTS} addresses of {FLOODED_PREFIX} passed, then \
         the /24 was banned ({} drop_prefix, {} dropped as banned)",
        packets(&status, "pass", "options"),
        u32::from(SPREAD_HOSTS) * SPREAD_FRAMES,
        packets(&status, "drop_prefix", "options"),
        status["events"]["prefix_banned_drops"]
    );
    let text = host.ok(&["status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("prefixes:  /24 /64 /48; ")
                && l.contains("1 prefix bans in force")),
        "{text}"
    );

    // The daemon saves it at its exit; a purge drops the pinned tables; the next attach puts it
    // back with its strike, and A is still dropped.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(host.state_dir.path().join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["prefix_bans"][0]["net"], FLOODED_PREFIX, "{state}");
    host.ok(&["detach", "--all", "--purge"]);
    assert!(!host.pin_dir.join("PREFIX_BANS").exists());
    host.attach();
    let ban = listed_prefix_ban(&host).expect("the prefix ban restored after a purge");
    assert_eq!(
        (ban["origin"].as_str(), ban["strikes"].as_u64()),
        (Some("prefix"), Some(1))
    );
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "the prefix ban came back"
    );

    // Lifting one address of the prefix lifts nothing, and says which ban stays.
    let out = host.run(&["ban", "del", &a.to_string()]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("still banned by the prefix ban of 198.51.100.0/24"),
        "{said}"
    );
    assert!(listed_prefix_ban(&host).is_some());
    // Its CIDR lifts it, strikes and saved record with it.
    let said = host.ok(&["ban", "del", FLOODED_PREFIX]);
    assert!(
        said.contains("lifted prefix ban of 198.51.100.0/24"),
        "{said}"
    );
    assert!(listed_prefix_ban(&host).is_none());
    assert_eq!(host.registers_through(&server, a, 3), 3, "A passes again");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(host.state_dir.path().join("state.json")).unwrap(),
    )
    .unwrap();
    assert!(state.get("prefix_bans").is_none(), "{state}");
    let said = host.ok(&["ban", "del", "--origin", "prefix"]);
    assert!(said.contains("no prefix ban in force"), "{said}");
}

#[test]
fn a_syn_flood_bans_its_source_as_connection_on_udp_too() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    host.attach();
    let server = host.server_socket();
    let status = host.status();
    let connection = status["config"]["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["class"] == "connection")
        .cloned()
        .expect("a connection limit in status");
    let burst = connection["burst"].as_u64().unwrap();
    assert_eq!(
        status["config"]["tcp_ports"],
        serde_json::json!([5060, 5061])
    );

    // SYNs from A's address to the SIP TLS port, past the connection bucket's burst.
    let sender = RawSender::new(&host);
    for i in 0..burst + 30 {
        let mut frame = Frame::udp(a, SERVER_V4.into(), 5061, &[]);
        frame.protocol = packet::IPPROTO_TCP;
        frame.src_port = 40_000 + i as u16;
        sender.send_addressed(&frame.build());
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let bans: Value =
        serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).expect("ban JSON");
    let ban = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["source"] == a.to_string())
        .unwrap_or_else(|| panic!("no ban of {a}: {bans}"));
    assert_eq!(ban["origin"], "rate", "{ban}");
    assert_eq!(ban["class"], "connection", "{ban}");
    let text = host.ok(&["ban", "list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with(&a.to_string()) && l.contains(" connection ")),
        "{text}"
    );
    let status = host.status();
    assert!(packets(&status, "drop_rate", "tcp_syn") >= 1, "{status}");
    assert!(packets(&status, "pass", "tcp_syn") >= burst, "{status}");
    // Banned over TCP, dropped over UDP: the ban covers every transport.
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "A's REGISTERs after its SYN flood"
    );
    assert!(packets(&host.status(), "drop_banned", "unread") >= 3);
}

#[test]
fn an_ipv6_spread_is_banned_as_its_64_and_the_ban_covers_tcp() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    host.attach();
    let sender = RawSender::new(&host);
    // 100 addresses of one /64 (each its own source: sip.ipv6_source_prefix is 128), 3 OPTIONS
    // each: within every source's limit, past the /64's burst of 200.
    let source = |i: u16| std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xc633, 0x6400, 0, 0, 0x77, i);
    for seq in 1..=SPREAD_FRAMES {
        for i in 0..u16::from(SPREAD_HOSTS) {
            let payload = packet::request("OPTIONS", "sip:1000@example.com", seq);
            sender
                .send_addressed(&Frame::sip(source(i).into(), SERVER_V6.into(), &payload).build());
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let bans: Value =
        serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).expect("ban JSON");
    let listed: Vec<(&str, &str)> = bans
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["source"].as_str().unwrap(), b["origin"].as_str().unwrap()))
        .collect();
    // The /64 is drawn from first and banned; the /48 above it is not.
    assert_eq!(listed, [("2001:db8:c633:6400::/64", "prefix")], "{bans}");
    assert_eq!(bans[0]["class"], "options", "{bans}");
    let status = host.status();
    assert_eq!(status["tables"]["banned_prefixes"], 1, "{status}");
    assert!(
        status["tables"]["tracked_prefixes"].as_u64().unwrap() >= 2,
        "{status}"
    );

    // A new address of the /64 opening a TCP connection is dropped by the prefix's ban.
    let before = packets(&status, "drop_banned", "tcp_syn");
    let mut syn = Frame::udp(source(4000).into(), SERVER_V6.into(), 5060, &[]);
    syn.protocol = packet::IPPROTO_TCP;
    syn.src_port = 40_001;
    for _ in 0..3 {
        sender.send_addressed(&syn.build());
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = host.status();
    assert_eq!(
        packets(&status, "drop_banned", "tcp_syn"),
        before + 3,
        "{status}"
    );
    assert!(
        status["events"]["prefix_banned_drops"].as_u64().unwrap() >= 3,
        "{status}"
    );
    // `ban del` of a wider net lifts it.
    let said = host.ok(&["ban", "del", "2001:db8:c633::/48"]);
    assert!(
        said.contains("lifted prefix ban of 2001:db8:c633:6400::/64"),
        "{said}"
    );
    assert_eq!(host.status()["tables"]["banned_prefixes"], 0);
}
