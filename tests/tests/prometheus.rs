//! The Prometheus alert rules and the Grafana dashboard in `contrib/` against the real exporter.
//!
//! Debian's Prometheus 2.42 runs inside the test's server namespace with the example config
//! (`contrib/prometheus/scrape.yml`, scrape and evaluation every second) and the rules file, and
//! scrapes a `sip-xdp run` daemon there. Spoofed REGISTER floods from the client namespace fill
//! the daemon's small source table and keep the rate limiter dropping; then the interface is
//! detached and the daemon stopped. Every PromQL expression of the rules (as Prometheus itself
//! loaded them) and of the dashboard (`targets[].expr`, Grafana's variables substituted) goes
//! through Prometheus' HTTP API: each alert expression must return nothing before its condition
//! and data once it holds, each dashboard query must return data and each panel show something
//! non-zero. Every `sip_xdp_*` name they use must appear in a scrape of the exporter.
//!
//! The CrowdSec parts (the Local API alert, the CrowdSec panels) need a daemon with `[crowdsec]`
//! enabled and run in their own test, against a Local API address where nothing listens.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp::loader::PinDir;
use sip_xdp_tests::{
    host::{Daemon, Host},
    netns::{
        CLIENT_MAC, CLIENT_V4_A, CLIENT_V4_B, CLIENT_V6_A, Netns, SERVER_IF, SERVER_MAC, SERVER_V4,
        SERVER_V6,
    },
    packet::{self, Frame},
    raw::{RawSender, mac},
    registrar::Registrar,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const RULES: &str = "contrib/prometheus/sip-xdp.rules.yml";
const SCRAPE_CONFIG: &str = "contrib/prometheus/scrape.yml";
const DASHBOARD: &str = "contrib/grafana/sip-xdp.json";

const METRICS_PORT: u16 = 9433;
const PROMETHEUS_PORT: u16 = 9090;
/// What Grafana's `$__rate_interval` becomes: long enough to cover the whole test.
const RATE_INTERVAL: &str = "1m";
/// The source table's capacity: small, so a bounded flood fills it past the alert's 90%, but
/// not smaller: the kernel's LRU keeps min(capacity / CPUs / 2, 128) entries free, so a table
/// of 64 on two CPUs never holds more than 48 (75%).
const CAPACITY: u64 = 4096;
/// Spoofed IPv6 sources sending one REGISTER each: half again what the table holds.
const SPREAD_SOURCES: u32 = 6144;
/// Spoofed IPv4 sources that each run their bucket dry, one after the other.
const FLOOD_SOURCES: u8 = 96;
/// REGISTERs per spoofed source: past the test config's burst of 10, so each is banned.
const FRAMES_PER_SOURCE: u32 = 15;
/// The second, sustained flood: frames per second and its bounds.
const SUSTAINED_PPS: u64 = 2000;
const SUSTAINED_MAX_FRAMES: u64 = 80_000;
const SUSTAINED_MAX_TIME: Duration = Duration::from_secs(40);
/// How long an alert expression may take to return data once its condition holds (the table
/// gauges are refreshed every 15 s; scrapes and evaluations come every second).
const CONDITION_DEADLINE: Duration = Duration::from_secs(30);
const CROWDSEC_METRIC_PREFIX: &str = "sip_xdp_crowdsec_";
/// The series of the answers-aware defences (the TC egress program, verified sources, auth
/// bans, the reflection and admission guards): their rules and panels need answers from a
/// registrar and a forged flood, and have their own test.
const ANSWERS_METRICS: &[&str] = &[
    "sip_xdp_answers_enabled",
    "sip_xdp_egress_attached",
    "sip_xdp_answers_total",
    "sip_xdp_verifications_total",
    "sip_xdp_verified_sources",
    "sip_xdp_verified_capacity",
    "sip_xdp_verified_table_full_total",
    "sip_xdp_banned_phones",
    "sip_xdp_auth_failures_total",
    "sip_xdp_auth_bans_total",
    "sip_xdp_phone_ban_drops_total",
    "sip_xdp_reflection_drops_total",
    "sip_xdp_admission_drops_total",
];

/// Series whose alert needs what the core flood does not send: a prefix table of 65,536 entries
/// filled past 90%. (The core flood's IPv4 sources share one /24 and get it banned, and its
/// sustained part carries SYNs: the other prefix and TCP series are checked with the rest.)
const PREFIX_TABLE_METRICS: &[&str] = &["sip_xdp_tracked_prefixes", "sip_xdp_prefixes_capacity"];

/// The scan program's series: they need a scanner or a trap request, which the core flood does
/// not send (its panels are checked against the served names like every other).
const SIGNATURE_METRICS: &[&str] = &[
    "sip_xdp_signature_bans_total",
    "sip_xdp_signature_scans_total",
    "sip_xdp_signature_scan_failures_total",
    "sip_xdp_signature_scan_truncated_total",
    "sip_xdp_signatures",
    "sip_xdp_signatures_capacity",
    "sip_xdp_signature_banned_sources",
];

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn read_repo_file(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn metrics_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(SERVER_V4), METRICS_PORT)
}

fn require_prometheus() {
    for tool in [PROMETHEUS, PROMTOOL] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run scripts/setup-toolchain.sh (or `apt-get install prometheus`)"
        );
    }
}

/// The daemon's config: the test's rate limits, a small source table, metrics on the server
/// namespace's address (where Prometheus, in the same namespace, scrapes them), plus `extra`.
fn daemon_config(extra: &str) -> String {
    format!(
        "[limits.register]\nrate = \"1/s\"\nburst = 10\n\n\
         [bans]\nbase = \"60s\"\nextend = \"60s\"\n\n\
         [datapath]\nmax_sources = {CAPACITY}\n\n\
         [metrics]\nlisten = \"{}\"\n{extra}",
        metrics_addr()
    )
}

/// Waits for the daemon's "sip-xdp running" line; if it exits first, fails with its log.
fn wait_running(daemon: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if daemon
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("sip-xdp running"))
        {
            return;
        }
        if let Some(status) = daemon.child.try_wait().unwrap() {
            // Let the reader thread collect the last lines.
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "the daemon exited ({status}) instead of running; its log:\n{}",
                daemon.lines.lock().unwrap().join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not report running; its log:\n{}",
            daemon.lines.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET `path` from `addr` inside `ns` (HTTP/1.0, so the body is neither chunked nor kept
/// alive). Returns the status code and body, or the connection error.
fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path} from {addr}: no end of headers in {response:?}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path} from {addr}: bad status line in {head:?}"));
    Ok((code, body.to_owned()))
}

/// Percent-encodes a query parameter (everything but RFC 3986's unreserved characters).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The metric names a scrape of the exporter serves (its `# TYPE` lines).
fn scraped_names(host: &Host) -> BTreeSet<String> {
    let (code, body) =
        http_get(&host.net.server, metrics_addr(), "/metrics").expect("scraping the exporter");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `sip_xdp_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sip_xdp_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn is_crowdsec(expr: &str) -> bool {
    expr.contains(CROWDSEC_METRIC_PREFIX)
}

fn is_answers(expr: &str) -> bool {
    metric_names(expr)
        .iter()
        .any(|n| ANSWERS_METRICS.contains(&n.as_str()))
}

fn is_prefix_table(expr: &str) -> bool {
    metric_names(expr)
        .iter()
        .any(|n| PREFIX_TABLE_METRICS.contains(&n.as_str()))
}

fn is_signatures(expr: &str) -> bool {
    metric_names(expr)
        .iter()
        .any(|n| SIGNATURE_METRICS.contains(&n.as_str()))
}

/// Neither CrowdSec's, the answers', the prefix table's nor the scan's: the parts the flood
/// test checks.
fn is_core(expr: &str) -> bool {
    !is_crowdsec(expr) && !is_answers(expr) && !is_prefix_table(expr) && !is_signatures(expr)
}

/// A sample's value; Prometheus writes NaN and infinities as "NaN", "+Inf", "-Inf".
fn sample_value(sample: &Value) -> f64 {
    let text = sample["value"][1].as_str().expect("a sample value");
    match text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text.parse().unwrap_or_else(|_| panic!("bad sample {text}")),
    }
}

/// A PromQL expression from the dashboard, Grafana's variables substituted.
#[derive(Debug)]
struct PanelQuery {
    panel: String,
    expr: String,
}

fn dashboard() -> Value {
    serde_json::from_str(&read_repo_file(DASHBOARD)).expect("the dashboard is valid JSON")
}

/// Every `targets[].expr` of every panel (rows' nested panels included), with `$instance` set
/// to `instance` and `$__rate_interval` to [`RATE_INTERVAL`].
fn dashboard_queries(dashboard: &Value, instance: &str) -> Vec<PanelQuery> {
    fn walk(panels: &Value, instance: &str, out: &mut Vec<PanelQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(&panel["panels"], instance, out);
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let expr = expr
                    .replace("$__rate_interval", RATE_INTERVAL)
                    .replace("$instance", instance);
                assert!(
                    !expr.contains('$'),
                    "an unknown Grafana variable is left in {expr}"
                );
                out.push(PanelQuery {
                    panel: panel["title"].as_str().unwrap_or("?").to_owned(),
                    expr,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], instance, &mut out);
    out
}

/// The dashboard's template variables of the form `label_values(SELECTOR, LABEL)`.
fn dashboard_variables(dashboard: &Value) -> Vec<(String, String, String)> {
    let list = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    list.iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .expect("a variable query");
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("unsupported variable query {query}"));
            let (selector, label) = inner
                .rsplit_once(',')
                .expect("label_values(SELECTOR, LABEL)");
            (
                v["name"].as_str().unwrap().to_owned(),
                selector.trim().to_owned(),
                label.trim().to_owned(),
            )
        })
        .collect()
}

/// The alert names in the rules file, by its `- alert: NAME` lines.
fn alert_names_in_file() -> BTreeSet<String> {
    read_repo_file(RULES)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(PROMTOOL)
        .args(args)
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed: {text}");
    text
}

/// A Prometheus server in the host's server namespace, killed (by pid) on drop.
struct Prometheus<'a> {
    ns: &'a Netns,
    child: Child,
    dir: tempfile::TempDir,
    api: SocketAddr,
}

impl<'a> Prometheus<'a> {
    /// Starts Prometheus on the example config (contrib/prometheus/scrape.yml) with the target
    /// and intervals changed for the test, the rules file next to it, its database in a
    /// tempdir, listening on the server namespace's address only.
    fn start(host: &'a Host) -> Self {
        let dir = tempfile::tempdir().expect("a directory for Prometheus");
        let example = read_repo_file(SCRAPE_CONFIG);
        let mut config = example.clone();
        for (from, to) in [
            (
                "  scrape_interval: 15s",
                "  scrape_interval: 1s\n  scrape_timeout: 1s",
            ),
            ("  evaluation_interval: 15s", "  evaluation_interval: 1s"),
            (
                "          - 127.0.0.1:9433",
                &format!("          - {}", metrics_addr()),
            ),
        ] {
            assert_eq!(
                example.matches(from).count(),
                1,
                "{SCRAPE_CONFIG} changed: the test replaces {from:?} once"
            );
            config = config.replace(from, to);
        }
        std::fs::write(dir.path().join("prometheus.yml"), &config).unwrap();
        std::fs::copy(repo_file(RULES), dir.path().join("sip-xdp.rules.yml")).unwrap();
        let api = SocketAddr::new(IpAddr::V4(SERVER_V4), PROMETHEUS_PORT);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        // nsenter execs Prometheus in place: the child's pid is Prometheus'.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", host.net.server.path().display()))
            .arg("--")
            .arg(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let prometheus = Self {
            ns: &host.net.server,
            child,
            dir,
            api,
        };
        prometheus.wait_ready();
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(self.ns, self.api, "/-/ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not get ready; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET an API path; asserts `"status": "success"` and returns `data`.
    fn api(&self, path: &str) -> Value {
        let (code, body) = http_get(self.ns, self.api, path)
            .unwrap_or_else(|e| panic!("GET {path} from Prometheus: {e}\n{}", self.log()));
        let reply: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e} in {body}"));
        assert!(
            code == 200 && reply["status"] == "success",
            "GET {path}: {code} {body}"
        );
        reply["data"].clone()
    }

    /// An instant query's samples.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)));
        match data["resultType"].as_str() {
            Some("vector") => data["result"].as_array().unwrap().clone(),
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": data["result"]})],
            other => panic!("{expr}: unexpected result type {other:?}"),
        }
    }

    /// Queries `expr` until it returns data; fails after `deadline` naming `what`.
    fn wait_for_data(&self, what: &str, expr: &str, deadline: Duration) -> Vec<Value> {
        let until = Instant::now() + deadline;
        loop {
            let samples = self.query(expr);
            if !samples.is_empty() {
                return samples;
            }
            if Instant::now() >= until {
                // What the series the expression reads hold now, to tell why.
                let names: Vec<String> = metric_names(expr).into_iter().collect();
                let raw = self.query(&format!(r#"{{__name__=~"up|{}"}}"#, names.join("|")));
                panic!(
                    "{what}: `{expr}` returned no data within {deadline:?}; its series now: \
                     {raw:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The alerting rules Prometheus loaded, once each has been evaluated: name -> query.
    /// Asserts they are the file's alerts, every one evaluated without error.
    fn loaded_rules(&self) -> BTreeMap<String, String> {
        let expected = alert_names_in_file();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let data = self.api("/api/v1/rules");
            let rules: Vec<&Value> = data["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap())
                .collect();
            let healthy = rules.iter().all(|r| r["health"] == "ok");
            if healthy && !rules.is_empty() {
                let loaded: BTreeMap<String, String> = rules
                    .iter()
                    .map(|r| {
                        assert_eq!(r["type"], "alerting", "{r}");
                        (
                            r["name"].as_str().unwrap().to_owned(),
                            r["query"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                assert_eq!(
                    loaded.keys().cloned().collect::<BTreeSet<_>>(),
                    expected,
                    "Prometheus loaded other alerts than {RULES} names"
                );
                assert_eq!(loaded.len(), rules.len(), "an alert name is used twice");
                return loaded;
            }
            assert!(
                Instant::now() < deadline,
                "the rules were not all evaluated healthy: {data}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for the first successful scrape of the exporter.
    fn wait_scraped(&self) {
        self.wait_for_data(
            "the first scrape of sip-xdp",
            r#"up{job="sip-xdp"} == 1"#,
            Duration::from_secs(15),
        );
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A REGISTER frame from the (spoofed) `source` to the server.
fn register_frame(source: Ipv4Addr, seq: u32) -> Vec<u8> {
    let payload = packet::register("1000", seq);
    let mut frame = Frame::sip(source.into(), SERVER_V4.into(), &payload).build();
    frame[0..6].copy_from_slice(&mac(SERVER_MAC));
    frame[6..12].copy_from_slice(&mac(CLIENT_MAC));
    frame
}

/// The spoofed sources: 198.51.100.20 onwards (clear of the real clients .10 and .11).
fn flood_source(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 20 + i)
}

/// The first flood: one OPTIONS from each of [`SPREAD_SOURCES`] IPv6 addresses, more than the
/// table holds (a REGISTER flood of new sources no longer fills it: the admission budget drops
/// unverified REGISTERs beyond it before they make state; OPTIONS do not draw from it), then [`FLOOD_SOURCES`] IPv4 sources in turn send [`FRAMES_PER_SOURCE`]
/// REGISTERs: the first ones run their bucket dry and are banned, until their /24's bucket
/// (drawn from by every REGISTER within a source's limit) runs dry too and the prefix is banned
/// with the rest. Returns the frames sent.
fn fill_the_table(sender: &RawSender) -> u64 {
    let mut sent = 0;
    for i in 0..SPREAD_SOURCES {
        // Each from a /48 of its own: one prefix's sources together would run its bucket dry
        // and get it banned before the table fills.
        let source = Ipv6Addr::new(0x2001, 0xdb8, i as u16, 0, 0, 0, 0, 1);
        let payload = packet::request("OPTIONS", "sip:1000@example.com", 1);
        let mut frame = Frame::sip(source.into(), SERVER_V6.into(), &payload).build();
        frame[0..6].copy_from_slice(&mac(SERVER_MAC));
        frame[6..12].copy_from_slice(&mac(CLIENT_MAC));
        sender.send(&frame);
        sent += 1;
        if i % 128 == 127 {
            // Paced so the veth's XDP ring never overflows.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for i in 0..FLOOD_SOURCES {
        for seq in 1..=FRAMES_PER_SOURCE {
            sender.send(&register_frame(flood_source(i), seq));
            sent += 1;
        }
        // Paced so the veth's XDP ring never overflows.
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// A sustained REGISTER flood from the last (banned, by their prefix) sources of the first
/// flood, one frame in four a SYN to the SIP TLS port (a banned source trying TCP), at [`SUSTAINED_PPS`], on its own thread. It stops when dropped, and by itself after
/// [`SUSTAINED_MAX_TIME`] or [`SUSTAINED_MAX_FRAMES`].
struct SustainedFlood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl SustainedFlood {
    fn start(sender: RawSender) -> Self {
        let frames: Vec<Vec<u8>> = (FLOOD_SOURCES - 32..FLOOD_SOURCES)
            .map(|i| {
                if i % 4 == 0 {
                    let mut syn = Frame::udp(flood_source(i).into(), SERVER_V4.into(), 5061, &[]);
                    syn.protocol = packet::IPPROTO_TCP;
                    syn.src_port = 40_000 + u16::from(i);
                    let mut frame = syn.build();
                    frame[0..6].copy_from_slice(&mac(SERVER_MAC));
                    frame[6..12].copy_from_slice(&mac(CLIENT_MAC));
                    frame
                } else {
                    register_frame(flood_source(i), 1000)
                }
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            while !stopped.load(Ordering::Relaxed)
                && started.elapsed() < SUSTAINED_MAX_TIME
                && sent < SUSTAINED_MAX_FRAMES
            {
                // 20 frames per 10 ms tick.
                for frame in frames.iter().cycle().take((SUSTAINED_PPS / 100) as usize) {
                    sender.send(frame);
                    sent += 1;
                }
                let due = Duration::from_secs_f64(sent as f64 / SUSTAINED_PPS as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the flood; returns the frames it sent.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the flood thread")
    }
}

impl Drop for SustainedFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The rule of `alert`'s query, from what Prometheus loaded.
fn rule<'r>(rules: &'r BTreeMap<String, String>, alert: &str) -> &'r str {
    rules
        .get(alert)
        .unwrap_or_else(|| panic!("no alert {alert} in {RULES}"))
}

/// `promtool check rules` and `check config` pass on the files as shipped; Prometheus scrapes
/// the daemon through a flood, a detach and a stop, and every rule and dashboard query (but
/// the CrowdSec ones) returns data when its condition holds.
#[test]
fn alert_rules_and_dashboard_queries_return_data_from_a_real_prometheus() {
    sip_xdp_tests::needs_root!();
    require_prometheus();
    let started = Instant::now();
    let alerts = alert_names_in_file();
    let rules_path = repo_file(RULES);
    let out = promtool(&["check", "rules", rules_path.to_str().unwrap()]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );
    let out = promtool(&[
        "check",
        "config",
        repo_file(SCRAPE_CONFIG).to_str().unwrap(),
    ]);
    assert!(
        out.contains("is valid prometheus config file syntax"),
        "{out}"
    );

    let host = Host::new(&daemon_config(""));
    let mut daemon = Daemon::start(&host, &[]);
    wait_running(&mut daemon);
    let prometheus = Prometheus::start(&host);
    let rules = prometheus.loaded_rules();
    prometheus.wait_scraped();
    let (flood_rule, table_rule, detached_rule, down_rule, syn_rule) = (
        rule(&rules, "SipXdpFloodInProgress"),
        rule(&rules, "SipXdpSourceTableNearlyFull"),
        rule(&rules, "SipXdpNotAttached"),
        rule(&rules, "SipXdpMetricsDown"),
        rule(&rules, "SipXdpTcpConnectionFlood"),
    );
    assert_eq!(
        rules.values().filter(|q| is_core(q)).count(),
        5,
        "the test creates the condition of each core alert; a new one needs its own"
    );
    // Nothing is wrong yet: no alert expression has data.
    for (name, query) in &rules {
        let samples = prometheus.query(query);
        assert!(
            samples.is_empty(),
            "{name} holds before its condition: {samples:?}"
        );
    }

    // Ban-list bans of every origin, after the first scrape so that the rate of
    // sip_xdp_list_bans_added_total sees them.
    for (last, origin) in [(201, "manual"), (202, "fail2ban"), (203, "crowdsec")] {
        host.ok(&[
            "ban",
            "add",
            &Ipv4Addr::new(198, 51, 100, last).to_string(),
            "--for",
            "1h",
            "--origin",
            origin,
            "--reason",
            "prometheus test",
        ]);
    }

    let sender = RawSender::new(&host);
    let flood_started = Instant::now();
    let first_flood = fill_the_table(&sender);
    let flood = SustainedFlood::start(sender);

    let table = prometheus.wait_for_data(
        "SipXdpSourceTableNearlyFull after a spoofed flood",
        table_rule,
        CONDITION_DEADLINE,
    );
    let table_fill = sample_value(&table[0]);
    assert!(table_fill > 0.9 && table_fill <= 1.0, "{table:?}");
    let flooding = prometheus.wait_for_data(
        "SipXdpFloodInProgress during a sustained flood",
        flood_rule,
        CONDITION_DEADLINE,
    );
    let drop_rate = sample_value(&flooding[0]);
    prometheus.wait_for_data(
        "SipXdpTcpConnectionFlood while banned sources send SYNs",
        syn_rule,
        CONDITION_DEADLINE,
    );

    // Every dashboard query returns data, and every panel shows something non-zero.
    let dashboard = dashboard();
    let instance = metrics_addr().to_string();
    for (name, selector, label) in dashboard_variables(&dashboard) {
        let samples = prometheus.query(&selector);
        let values: BTreeSet<&str> = samples
            .iter()
            .filter_map(|s| s["metric"][label.as_str()].as_str())
            .collect();
        assert!(
            values.contains(instance.as_str()),
            "variable {name}: label_values({selector}, {label}) gives {values:?}"
        );
    }
    let queries = dashboard_queries(&dashboard, &instance);
    let mut panel_max: BTreeMap<&str, f64> = BTreeMap::new();
    for query in queries.iter().filter(|q| is_core(&q.expr)) {
        let samples = prometheus.query(&query.expr);
        assert!(
            !samples.is_empty(),
            "panel {:?}: `{}` returned no data",
            query.panel,
            query.expr
        );
        let max = samples
            .iter()
            .map(sample_value)
            .filter(|v| !v.is_nan())
            .fold(0.0, f64::max);
        let entry = panel_max.entry(&query.panel).or_insert(0.0);
        *entry = entry.max(max);
    }
    for (panel, max) in &panel_max {
        assert!(
            *max > 0.0,
            "panel {panel:?} shows only zeros during a flood"
        );
    }

    // Every sip_xdp_* name the rules and the dashboard use is served, except the CrowdSec ones
    // (served only with [crowdsec] enabled; the other test checks them).
    let used: BTreeSet<String> = rules
        .values()
        .map(String::as_str)
        .chain(queries.iter().map(|q| q.expr.as_str()))
        .flat_map(metric_names)
        .filter(|n| !n.starts_with(CROWDSEC_METRIC_PREFIX))
        .collect();
    let served = scraped_names(&host);
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the exporter serves no {missing:?}; it serves {served:?}"
    );
    let ingested: BTreeSet<String> = prometheus
        .query(r#"count by (__name__) ({__name__=~"sip_xdp_.+"})"#)
        .iter()
        .map(|s| s["metric"]["__name__"].as_str().unwrap().to_owned())
        .collect();
    assert!(used.is_subset(&ingested), "Prometheus has {ingested:?}");

    let sustained = flood.stop();

    // Detached while the daemon keeps serving metrics.
    assert!(prometheus.query(detached_rule).is_empty());
    host.ok(&["detach", "--iface", SERVER_IF]);
    let detached = prometheus.wait_for_data(
        "SipXdpNotAttached after `sip-xdp detach`",
        detached_rule,
        CONDITION_DEADLINE,
    );
    assert_eq!(detached[0]["metric"]["instance"], instance.as_str());

    // Nothing is counted while detached: Prometheus' last scrape holds what the kernel counted,
    // every frame of the flood from banned sources among it.
    let status = host.status();
    // With the answers on, a flood source the kernel no longer holds a ban for is unverified:
    // its REGISTERs beyond the admission budget are dropped there.
    let kernel_drops: u64 = ["drop_rate", "drop_banned", "drop_admission"]
        .iter()
        .filter_map(|verdict| status["packets"][verdict].as_object())
        .flat_map(|methods| methods.values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(
        kernel_drops > sustained,
        "{kernel_drops} drops, {sustained} frames"
    );
    let scraped_drops = format!(
        r#"sum(sip_xdp_packets_total{{verdict=~"drop_rate|drop_banned|drop_admission"}}) == {kernel_drops}"#
    );
    prometheus.wait_for_data(
        "the kernel's drop counters in Prometheus",
        &scraped_drops,
        Duration::from_secs(10),
    );

    // The daemon stops: the scrape fails.
    assert!(prometheus.query(down_rule).is_empty());
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    let down = prometheus.wait_for_data(
        "SipXdpMetricsDown after the daemon stopped",
        down_rule,
        CONDITION_DEADLINE,
    );
    assert_eq!(down[0]["metric"]["instance"], instance.as_str());

    eprintln!(
        "prometheus: {} rules and {} dashboard queries returned data; {first_flood} + \
         {sustained} spoofed frames (REGISTERs, one in four of the second a SYN) over {:.1?}: table {:.0}% full ({CAPACITY} entries), \
         {drop_rate:.0} packets/s dropped; whole test {:.1?}",
        rules.values().filter(|q| is_core(q)).count(),
        queries.iter().filter(|q| is_core(&q.expr)).count(),
        flood_started.elapsed(),
        table_fill * 100.0,
        started.elapsed()
    );
}

/// The CrowdSec parts: a daemon with `[crowdsec]` enabled whose Local API address has nothing
/// listening. The LAPI alert's expression returns data, every CrowdSec dashboard query returns
/// data, and every `sip_xdp_crowdsec_*` name they use is served.
#[test]
fn crowdsec_alert_and_panels_return_data_with_the_local_api_unreachable() {
    sip_xdp_tests::needs_root!();
    require_prometheus();
    // Loopback in the server namespace, where nothing listens on this port: every poll is
    // refused. The key is inline, so the config file must be private (mode 0600).
    let lapi = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);
    let host = Host::new(&daemon_config(&format!(
        "\n[crowdsec]\nenabled = true\nlapi_url = \"http://{lapi}/\"\n\
         api_key = \"sip-xdp-prometheus-test\"\npoll_interval = \"2s\"\n"
    )));
    sip_xdp_tests::crowdsec::make_private(&host.config);
    let mut daemon = Daemon::start(&host, &[]);
    wait_running(&mut daemon);
    let prometheus = Prometheus::start(&host);
    let rules = prometheus.loaded_rules();
    prometheus.wait_scraped();

    let unreachable = prometheus.wait_for_data(
        "SipXdpCrowdsecLapiUnreachable with nothing listening at the LAPI address",
        rule(&rules, "SipXdpCrowdsecLapiUnreachable"),
        CONDITION_DEADLINE,
    );
    assert_eq!(sample_value(&unreachable[0]), 0.0);

    let instance = metrics_addr().to_string();
    let queries = dashboard_queries(&dashboard(), &instance);
    let crowdsec: Vec<&str> = rules
        .values()
        .map(String::as_str)
        .chain(queries.iter().map(|q| q.expr.as_str()))
        .filter(|e| is_crowdsec(e))
        .collect();
    assert!(crowdsec.len() >= 2, "{crowdsec:?}");
    for expr in &crowdsec {
        prometheus.wait_for_data("a CrowdSec query", expr, CONDITION_DEADLINE);
    }
    let used: BTreeSet<String> = crowdsec
        .iter()
        .flat_map(|e| metric_names(e))
        .filter(|n| n.starts_with(CROWDSEC_METRIC_PREFIX))
        .collect();
    let served = scraped_names(&host);
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the exporter serves no {missing:?}; it serves {served:?}"
    );
    eprintln!(
        "prometheus (crowdsec): {} CrowdSec queries returned data; {} metrics used",
        crowdsec.len(),
        used.len()
    );
}

/// The answers guards of the answers test: small, so a bounded forged flood and a bounded
/// burst of challenges run them dry.
const ANSWERS_CONFIG: &str = "\n[answers.admission]\nrate = \"20/s\"\nburst = 40\n\
     [answers.reflection_total]\nrate = \"20/s\"\nburst = 40\n";
/// Forged sources sending one REGISTER each: far past the admission budget above.
const FORGED_SOURCES: u32 = 1500;
/// Forged addresses the registrar answers, and challenges to each (past the per-destination
/// burst of 10; together past the total burst of 40).
const VICTIMS: u8 = 40;
const CHALLENGES_PER_VICTIM: u16 = 25;

/// The answers-aware parts: a daemon with [answers] on (the default) and small guards, a
/// registrar socket answering real REGISTERs from the client namespace (a phone logs in, a
/// second phone of its address retries a wrong password, another address collects 403s),
/// challenges sent to forged addresses, and a forged-source REGISTER flood. Every answers
/// panel returns data and shows something non-zero, the drop alerts' expressions return data
/// once the guards drop, the verified-table alert none (one verified client), and the
/// egress-missing alert data once the egress link's pin is removed and none again after
/// `sip-xdp attach`.
#[test]
fn answers_alerts_and_panels_return_data_from_real_answers() {
    sip_xdp_tests::needs_root!();
    require_prometheus();
    let started = Instant::now();
    let host = Host::new(&daemon_config(ANSWERS_CONFIG));
    let mut daemon = Daemon::start(&host, &[]);
    wait_running(&mut daemon);
    let prometheus = Prometheus::start(&host);
    let rules = prometheus.loaded_rules();
    prometheus.wait_scraped();
    let (egress_rule, admission_rule, reflection_rule, verified_rule) = (
        rule(&rules, "SipXdpAnswersEgressMissing"),
        rule(&rules, "SipXdpAdmissionBudgetExceeded"),
        rule(&rules, "SipXdpReflectionCapped"),
        rule(&rules, "SipXdpVerifiedTableNearlyFull"),
    );
    assert_eq!(
        rules.values().filter(|q| is_answers(q)).count(),
        4,
        "the test creates the condition of each answers alert; a new one needs its own"
    );
    for (name, query) in rules.iter().filter(|(_, q)| is_answers(q)) {
        let samples = prometheus.query(query);
        assert!(
            samples.is_empty(),
            "{name} holds before its condition: {samples:?}"
        );
    }
    prometheus.wait_for_data(
        "the daemon's egress program and answers flag",
        r#"sip_xdp_egress_attached == 1 and on (instance) sip_xdp_answers_enabled == 1"#,
        CONDITION_DEADLINE,
    );

    // A registrar's answers to real REGISTERs.
    let mut registrar = Registrar::new(&host);
    let good = registrar.phone(IpAddr::V4(CLIENT_V4_A));
    registrar.log_in(&good);
    let broken = registrar.phone(IpAddr::V4(CLIENT_V4_A));
    assert_eq!(registrar.registers(&broken, 401, 6), 6);
    assert!(!registrar.register(&broken, 401), "no phone ban");
    assert!(registrar.register(&good, 200), "the good phone is cut off");
    let guesser = registrar.phone(IpAddr::V4(CLIENT_V4_B));
    assert_eq!(registrar.registers(&guesser, 403, 5), 5);
    assert!(!registrar.register(&guesser, 403), "no auth ban");

    // Challenges to forged addresses (the registrar answering a forged flood), each victim on
    // its own ports; static neighbours so that they leave the server at once.
    let victim = |i: u8| Ipv4Addr::new(198, 51, 100, 100 + i);
    for i in 0..VICTIMS {
        host.net
            .server
            .ip(&[
                "neigh",
                "replace",
                &victim(i).to_string(),
                "lladdr",
                CLIENT_MAC,
                "dev",
                SERVER_IF,
                "nud",
                "permanent",
            ])
            .unwrap();
    }
    for i in 0..VICTIMS {
        for n in 0..CHALLENGES_PER_VICTIM {
            let to = SocketAddr::new(IpAddr::V4(victim(i)), 20_000 + n);
            registrar.answer(to, 401, u32::from(n) + 1);
        }
    }

    // A forged-source REGISTER flood, a new IPv6 source for every frame.
    let sender = RawSender::new(&host);
    for i in 0..FORGED_SOURCES {
        let source = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, (i >> 16) as u16, i as u16);
        let payload = packet::register("1000", 1);
        let mut frame = Frame::sip(source.into(), SERVER_V6.into(), &payload).build();
        frame[0..6].copy_from_slice(&mac(SERVER_MAC));
        frame[6..12].copy_from_slice(&mac(CLIENT_MAC));
        sender.send(&frame);
        if i % 128 == 127 {
            // Paced so the veth's XDP ring never overflows.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let status = host.status();
    let events = &status["events"];
    let admission_drops: u64 = status["packets"]["drop_admission"]
        .as_object()
        .map_or(0, |m| m.values().map(|n| n.as_u64().unwrap()).sum());
    let reflection_drops = events["reflection_destination_drops"].as_u64().unwrap()
        + events["reflection_total_drops"].as_u64().unwrap();
    assert!(
        admission_drops > u64::from(FORGED_SOURCES) / 2,
        "{admission_drops} admission drops of {FORGED_SOURCES}: {status:#}"
    );
    assert!(
        reflection_drops > u64::from(VICTIMS) * u64::from(CHALLENGES_PER_VICTIM) / 2,
        "{reflection_drops} reflection drops: {events:#}"
    );

    let admission = prometheus.wait_for_data(
        "SipXdpAdmissionBudgetExceeded during a forged flood",
        admission_rule,
        CONDITION_DEADLINE,
    );
    let reflection = prometheus.wait_for_data(
        "SipXdpReflectionCapped after challenges to forged addresses",
        reflection_rule,
        CONDITION_DEADLINE,
    );
    // The table gauges come every 15 s.
    prometheus.wait_for_data(
        "one verified client and one banned phone",
        "sip_xdp_verified_sources == 1 and on (instance) sip_xdp_banned_phones == 1",
        CONDITION_DEADLINE,
    );
    let fill = prometheus.query("sip_xdp_verified_sources / sip_xdp_verified_capacity");
    let capacity = status["tables"]["verified_capacity"].as_u64().unwrap() as f64;
    assert_eq!(sample_value(&fill[0]), 1.0 / capacity, "{fill:?}");
    assert!(prometheus.query(verified_rule).is_empty());

    // Every answers query of the dashboard returns data, every answers panel shows something.
    let instance = metrics_addr().to_string();
    let queries = dashboard_queries(&dashboard(), &instance);
    let answers: Vec<&PanelQuery> = queries.iter().filter(|q| is_answers(&q.expr)).collect();
    assert!(answers.len() >= 8, "{answers:?}");
    let mut panel_max: BTreeMap<&str, f64> = BTreeMap::new();
    for query in &answers {
        let samples = prometheus.query(&query.expr);
        assert!(
            !samples.is_empty(),
            "panel {:?}: `{}` returned no data",
            query.panel,
            query.expr
        );
        let max = samples
            .iter()
            .map(sample_value)
            .filter(|v| !v.is_nan())
            .fold(0.0, f64::max);
        let entry = panel_max.entry(&query.panel).or_insert(0.0);
        *entry = entry.max(max);
    }
    for (panel, max) in &panel_max {
        assert!(*max > 0.0, "panel {panel:?} shows only zeros");
    }
    // Every label value the panels split by shows up.
    let kinds: BTreeSet<String> = prometheus
        .query(r#"sum by (kind) (increase(sip_xdp_auth_failures_total[1m])) > 0"#)
        .iter()
        .map(|s| s["metric"]["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["forbidden", "rechallenged", "unanswered"]
            .map(str::to_owned)
            .into(),
        "failure kinds: the guesser's 403s, the broken phone's second challenges, the \
         challenges past answers.max_unanswered at each forged address"
    );
    let scopes = prometheus.query(r#"sip_xdp_auth_bans_total > 0"#);
    assert_eq!(scopes.len(), 2, "address and phone bans: {scopes:?}");

    let used: BTreeSet<String> = rules
        .values()
        .map(String::as_str)
        .chain(answers.iter().map(|q| q.expr.as_str()))
        .filter(|e| is_answers(e))
        .flat_map(metric_names)
        .collect();
    let served = scraped_names(&host);
    let missing: Vec<&String> = used.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "the exporter serves no {missing:?}; it serves {served:?}"
    );
    let unused: Vec<&&str> = ANSWERS_METRICS
        .iter()
        .filter(|n| !used.contains(**n) && **n != "sip_xdp_verified_table_full_total")
        .collect();
    assert!(unused.is_empty(), "no rule or panel shows {unused:?}");

    // The egress program taken off behind sip-xdp's back: its pin removed (and, with a clsact
    // filter, the filter too). Attaching again clears it.
    let status = host.status();
    let link = status["attached"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["hook"] == "tc-egress")
        .and_then(|a| a["mode"].as_str())
        .expect("an egress attachment")
        .to_owned();
    if link == "tcx" {
        std::fs::remove_file(host.pin_dir.join(format!("link_tc-egress_{SERVER_IF}"))).unwrap();
    } else {
        host.net
            .server
            .run(|| {
                Command::new("tc")
                    .args(["filter", "del", "dev", SERVER_IF, "egress"])
                    .status()
            })
            .unwrap();
        std::fs::remove_file(host.pin_dir.join(format!("netlink_tc-egress_{SERVER_IF}"))).unwrap();
    }
    let missing = prometheus.wait_for_data(
        "SipXdpAnswersEgressMissing with the egress program gone",
        egress_rule,
        CONDITION_DEADLINE,
    );
    assert_eq!(missing[0]["metric"]["interface"], SERVER_IF, "{missing:?}");
    host.ok(&[
        "attach",
        "--iface",
        SERVER_IF,
        "--mode",
        "native",
        "--config",
        host.config.to_str().unwrap(),
    ]);
    let deadline = Instant::now() + CONDITION_DEADLINE;
    while !prometheus.query(egress_rule).is_empty() {
        assert!(
            Instant::now() < deadline,
            "SipXdpAnswersEgressMissing still holds after `sip-xdp attach`"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    eprintln!(
        "prometheus (answers): {} answers queries returned data; {admission_drops} of \
         {FORGED_SOURCES} forged REGISTERs dropped by admission ({:.1}/s over 1m), \
         {reflection_drops} of {} challenges to {VICTIMS} forged addresses dropped ({:.1}/s); \
         egress link {link}; whole test {:.1?}",
        answers.len(),
        sample_value(&admission[0]),
        u32::from(VICTIMS) * u32::from(CHALLENGES_PER_VICTIM),
        sample_value(&reflection[0]),
        started.elapsed()
    );
}

/// A REGISTER as `packet::register` makes it, with `User-Agent: user_agent`.
fn register_with_user_agent(user: &str, seq: u32, user_agent: &str) -> Vec<u8> {
    let text = String::from_utf8(packet::register(user, seq)).expect("requests are text");
    text.replacen(
        "Content-Length:",
        &format!("User-Agent: {user_agent}\r\nContent-Length:"),
        1,
    )
    .into_bytes()
}

/// The scan program's parts: a scanner naming itself (`friendly-scanner`) and a REGISTER for a
/// trap account, each banned on its first request; every signature panel returns data and
/// shows something non-zero, and the scan-failure alert's expression returns none until the
/// scan program is taken out of its `SCANNERS` slot, then data once requests pass unscanned.
#[test]
fn signature_alert_and_panels_return_data_from_a_real_scanner() {
    sip_xdp_tests::needs_root!();
    require_prometheus();
    let started = Instant::now();
    let host = Host::new(&daemon_config("[signatures]\ntraps = [\"999\"]\n"));
    let mut daemon = Daemon::start(&host, &[]);
    wait_running(&mut daemon);
    let prometheus = Prometheus::start(&host);
    let rules = prometheus.loaded_rules();
    prometheus.wait_scraped();
    let failing_rule = rule(&rules, "SipXdpSignatureScanFailing");
    assert_eq!(
        rules.values().filter(|q| is_signatures(q)).count(),
        1,
        "the test creates the condition of each signature alert; a new one needs its own"
    );
    assert!(prometheus.query(failing_rule).is_empty());

    // The scanner, then a trap request from another address.
    let scanner = host.client(IpAddr::V4(CLIENT_V4_A));
    for seq in 1..=5 {
        scanner
            .send_to(
                &register_with_user_agent("1000", seq, "friendly-scanner"),
                host.sip,
            )
            .unwrap();
    }
    let trapped = host.client(IpAddr::V4(CLIENT_V4_B));
    trapped
        .send_to(&packet::register("999", 1), host.sip)
        .unwrap();
    // The in-force gauges follow the daemon's table refresh.
    prometheus.wait_for_data(
        "a fingerprint ban and a trap ban in force",
        r#"sip_xdp_signature_banned_sources{kind="fingerprint"} == 1 and on (instance) sip_xdp_signature_banned_sources{kind="trap"} == 1"#,
        CONDITION_DEADLINE,
    );
    prometheus.wait_for_data(
        "two signature bans counted",
        r#"sum(sip_xdp_signature_bans_total) == 2"#,
        CONDITION_DEADLINE,
    );

    let dashboard = dashboard();
    let instance = metrics_addr().to_string();
    let queries: Vec<PanelQuery> = dashboard_queries(&dashboard, &instance)
        .into_iter()
        .filter(|q| is_signatures(&q.expr))
        .collect();
    assert!(
        queries.len() >= 4,
        "the dashboard's signature row: {}",
        queries.len()
    );
    let mut panel_max: BTreeMap<&str, f64> = BTreeMap::new();
    for query in &queries {
        let samples = prometheus.query(&query.expr);
        assert!(
            !samples.is_empty(),
            "panel {:?}: `{}` returned no data",
            query.panel,
            query.expr
        );
        let max = samples
            .iter()
            .map(sample_value)
            .filter(|v| !v.is_nan())
            .fold(0.0, f64::max);
        let entry = panel_max.entry(&query.panel).or_insert(0.0);
        *entry = entry.max(max);
    }
    for (panel, max) in &panel_max {
        assert!(
            *max > 0.0,
            "panel {panel:?} shows only zeros after two bans"
        );
    }
    assert!(prometheus.query(failing_rule).is_empty());

    // The scan program taken out of its slot: requests pass unscanned, and the alert says so.
    let slot = PinDir::new(&host.pin_dir).map_path("SCANNERS");
    let out = Command::new("bpftool")
        .args(["map", "delete", "pinned"])
        .arg(&slot)
        .args(["key", "0", "0", "0", "0"])
        .output()
        .expect("running bpftool");
    assert!(out.status.success(), "bpftool map delete: {out:?}");
    let unscanned = host.client(IpAddr::V6(CLIENT_V6_A));
    for seq in 1..=3 {
        unscanned
            .send_to(
                &packet::register("300", seq),
                SocketAddr::new(IpAddr::V6(SERVER_V6), 5060),
            )
            .unwrap();
    }
    prometheus.wait_for_data(
        "SipXdpSignatureScanFailing with the scan program out of its slot",
        failing_rule,
        CONDITION_DEADLINE,
    );
    assert_eq!(host.status()["signatures_scanning"], false);
    eprintln!(
        "prometheus: {} signature panel queries returned data after a fingerprint and a trap \
         ban; the scan-failure alert held once the scan program was taken out; whole test \
         {:.1?}",
        queries.len(),
        started.elapsed()
    );
}
