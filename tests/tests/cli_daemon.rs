//! The `sip-xdp` binary end to end: daemonless attach/detach with pinned state, list and ban
//! commands, the daemon adopting an attachment, logging ban events, serving metrics, reloading
//! on SIGHUP and detaching on SIGTERM, and the errors operators get for bad input.
//!
//! Every test runs the real binary inside the server namespace of its own veth pair (with
//! `nsenter --net`, which keeps the host's /sys/fs/bpf visible), with its own pin directory on
//! bpffs and its own state directory, and sends real datagrams from the client namespace.
use std::{
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp_tests::{
    harness::require_root,
    netns::{CLIENT_V4_A, CLIENT_V4_B, SERVER_IF, SERVER_V4, VethPair},
    packet,
};

const QUIET: Duration = Duration::from_millis(150);
const SETTLE: Duration = Duration::from_secs(5);
const BURST: usize = 10;

/// Register limit 1/s with a burst of 10, one-minute bans: a 50-packet flood is cut to 10.
const TEST_CONFIG: &str = r#"
[limits.register]
rate = "1/s"
burst = 10

[bans]
base = "60s"
extend = "60s"
"#;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The built `sip-xdp` binary: `SIP_XDP_BIN`, else next to this test's directory in the target
/// dir (scripts/test.sh builds it before `cargo test`).
fn find_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SIP_XDP_BIN") {
        return Some(path.into());
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("sip-xdp");
    bin.exists().then_some(bin)
}

fn sip_xdp_bin() -> PathBuf {
    find_bin().expect(
        "the sip-xdp binary is missing from the target directory: build it first \
         (`cargo build -p sip-xdp --bin sip-xdp`; scripts/test.sh does) or set SIP_XDP_BIN",
    )
}

/// A veth pair plus an isolated sip-xdp installation (pin dir, state dir, config file).
struct Host {
    net: VethPair,
    pin_dir: PathBuf,
    state_dir: tempfile::TempDir,
    config: PathBuf,
    sip: SocketAddr,
}

impl Host {
    fn new() -> Self {
        require_root();
        let net = VethPair::new().expect("creating the test namespaces");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/sxdp-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let state_dir = tempfile::tempdir().expect("state dir");
        let config = state_dir.path().join("sip-xdp.toml");
        std::fs::write(&config, TEST_CONFIG).unwrap();
        Self {
            net,
            pin_dir,
            state_dir,
            config,
            sip: SocketAddr::new(IpAddr::V4(SERVER_V4), 5060),
        }
    }

    /// `sip-xdp args` inside the server namespace, this host's directories in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.net.server.path().display()))
            .arg("--")
            .arg(sip_xdp_bin())
            .args(args)
            .env("SIP_XDP_PIN_DIR", &self.pin_dir)
            .env("SIP_XDP_STATE_DIR", self.state_dir.path())
            .env_remove("SIP_XDP_LOG_FORMAT");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running sip-xdp")
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sip-xdp {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "sip-xdp {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn attach(&self) -> String {
        let config = self.config.to_str().unwrap();
        self.ok(&[
            "attach", "--iface", SERVER_IF, "--mode", "native", "--config", config,
        ])
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--output", "json"])).expect("status JSON")
    }

    fn server_socket(&self) -> UdpSocket {
        let sip = self.sip;
        self.net.server.run(move || {
            let socket = UdpSocket::bind(sip).expect("binding the server socket");
            socket.set_read_timeout(Some(QUIET)).unwrap();
            socket
        })
    }

    fn client(&self, source: IpAddr) -> UdpSocket {
        self.net.client.run(move || {
            UdpSocket::bind(SocketAddr::new(source, 0)).expect("binding a client socket")
        })
    }

    /// Sends `count` REGISTERs from `source` and returns how many reached the server socket.
    fn registers_through(&self, server: &UdpSocket, source: IpAddr, count: u32) -> usize {
        let client = self.client(source);
        for seq in 0..count {
            client
                .send_to(&packet::register("100", seq + 1), self.sip)
                .expect("sending a REGISTER");
        }
        drain_from(server, source)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Detach and drop pinned maps; the namespaces go when `net` drops. No panics here: this
        // also runs while a failed test unwinds.
        if find_bin().is_some() {
            let _ = self.command(&["detach", "--all", "--purge"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Datagrams from `source` until the socket stays quiet.
fn drain_from(socket: &UdpSocket, source: IpAddr) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) if peer.ip() == source => n += 1,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("receiving: {e}"),
        }
    }
    n
}

/// `ip link` shows "prog/xdp id N" (or "xdp"/"xdpgeneric" flags) while a program is attached.
fn has_xdp(host: &Host) -> bool {
    let link = host
        .net
        .server
        .ip(&["-d", "link", "show", SERVER_IF])
        .unwrap();
    link.contains("prog/xdp") || link.contains(" xdp ") || link.contains(" xdpgeneric ")
}

fn register_burst(status: &Value) -> u64 {
    status["config"]["limits"]
        .as_array()
        .expect("config.limits")
        .iter()
        .find(|l| l["class"] == "register")
        .and_then(|l| l["burst"].as_u64())
        .expect("a register limit")
}

fn packets(status: &Value, verdict: &str, method: &str) -> u64 {
    status["packets"][verdict][method].as_u64().unwrap_or(0)
}

fn ban_sources(host: &Host) -> Vec<(String, String)> {
    let bans: Value =
        serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).expect("ban JSON");
    bans.as_array()
        .expect("ban list is an array")
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap().to_owned(),
                b["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn attach_keeps_filtering_without_a_process_and_detach_keeps_state() {
    let host = Host::new();
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
    let host = Host::new();
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
    assert_eq!(status["tables"]["manual_bans"], 1);
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

/// A running `sip-xdp run`, its stderr collected line by line.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(host: &Host, extra: &[&str]) -> Self {
        let config = host.config.to_str().unwrap();
        let mut args = vec![
            "run",
            "--iface",
            SERVER_IF,
            "--mode",
            "native",
            "--config",
            config,
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let mut child = host
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the daemon");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no daemon log line with {needles:?}; log so far:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // The pid is nsenter's, which execs sip-xdp in place: the same process.
        // SAFETY: a pid we started and still own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn scrape(host: &Host) -> String {
    host.net.server.run(|| {
        let mut stream = TcpStream::connect("127.0.0.1:9433").expect("connecting to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    })
}

#[test]
fn daemon_adopts_logs_serves_metrics_reloads_and_detaches() {
    let host = Host::new();
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
    let host = Host::new();
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
    let host = Host::new();
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
    let host = Host::new();
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
    let host = Host::new();
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
