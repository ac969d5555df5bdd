//! Scanner fingerprints and trap accounts against real SIP traffic: sipp plays a scanner that
//! names itself (SIPVicious' `friendly-scanner` User-Agent) or asks for a trap account, and a
//! real phone of the same /24; the registrar (tests/sipp/registrar.xml, the Kamailio way) runs
//! in the server namespace, `sip-xdp run` (the daemon: ban event lines, metrics) filters its
//! interface with the defaults plus a trap account.
//!
//! Each scenario checks that the source is banned on its first request (none reached the
//! registrar), that the phone beside it registers every time, and that the ban shows with its
//! origin in `ban list`, `status`, the metrics, the ban event log line and the signature's hits.
use std::{
    net::Ipv4Addr,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use serde_json::Value;
use sip_xdp_tests::{
    host::{Daemon, Host, packets, scrape},
    netns::{CLIENT_V4_A, CLIENT_V4_B},
    sipp::{Sipp, SippRun, scenario},
};

/// The scanner's address; the phone's is in the same /24.
const SCANNER: Ipv4Addr = CLIENT_V4_A;
const PHONE: Ipv4Addr = CLIENT_V4_B;
const REGISTRAR: &str = "203.0.113.1:5060";
/// The defaults: the fingerprints, no trap account.
const DEFAULTS: &str = "";
/// The defaults, with extension 1000 (one the registrar knows) a trap account.
const TRAP_1000: &str = "[signatures]\ntraps = [\"1000\"]\n";
/// REGISTERs the scanner sends: one per call, no retransmission.
const SCANS: u32 = 20;
const PHONE_CALLS: u32 = 4;

static SERIAL: Mutex<()> = Mutex::new(());

/// The scenarios time their runs on a 2-core machine: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn registrar(host: &Host) -> Sipp {
    let sf = scenario("registrar.xml");
    let mut uas = Sipp::spawn(
        &host.net.server,
        "registrar",
        &[
            "-sf",
            &sf,
            "-i",
            "203.0.113.1",
            "-p",
            "5060",
            "-m",
            "500000",
            "-trace_msg",
        ],
        Duration::from_secs(60),
    );
    uas.wait_ready();
    uas
}

/// `SCANS` REGISTERs from `SCANNER` (scenario `xml`, extensions of `csv`), 10 a second.
fn scanner(host: &Host, xml: &str, csv: &str) -> Sipp {
    let (sf, inf, source, m) = (
        scenario(xml),
        scenario(csv),
        SCANNER.to_string(),
        SCANS.to_string(),
    );
    Sipp::spawn(
        &host.net.client,
        xml,
        &[
            REGISTRAR, "-sf", &sf, "-inf", &inf, "-i", &source, "-p", "5070", "-m", &m, "-r", "10",
        ],
        Duration::from_secs(30),
    )
}

/// The phone at `PHONE`: `PHONE_CALLS` registrations (challenge and answer), 2 a second.
fn phone(host: &Host) -> Sipp {
    let (sf, inf, source, m) = (
        scenario("phone.xml"),
        scenario("homeworker.csv"),
        PHONE.to_string(),
        PHONE_CALLS.to_string(),
    );
    Sipp::spawn(
        &host.net.client,
        "phone",
        &[
            REGISTRAR,
            "-sf",
            &sf,
            "-inf",
            &inf,
            "-i",
            &source,
            "-p",
            "5061",
            "-m",
            &m,
            "-r",
            "2",
            "-default_behaviors",
            "all,-bye",
        ],
        Duration::from_secs(30),
    )
}

fn ban_of(host: &Host, source: Ipv4Addr) -> Option<Value> {
    let list: Value = serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"]))
        .expect("ban list JSON");
    list.as_array()
        .expect("ban list is an array")
        .iter()
        .find(|b| b["source"] == source.to_string())
        .cloned()
}

fn hits(host: &Host, kind: &str, token: &str) -> u64 {
    let list: Value =
        serde_json::from_str(&host.ok(&["signature", "list", "--output", "json"])).unwrap();
    list["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind && s["token"] == token)
        .unwrap_or_else(|| panic!("no {kind} {token} listed: {list}"))["hits"]
        .as_u64()
        .unwrap()
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics:\n{text}"))
}

/// What the scenario measured, for the summary line.
struct Outcome {
    scanner: SippRun,
    phone: SippRun,
    reached: usize,
    phone_reached: usize,
}

/// The scanner and the phone together against the registrar, under the daemon.
fn scan_beside_a_phone(host: &Host, xml: &str, csv: &str) -> Outcome {
    let uas = registrar(host);
    let phone = phone(host);
    std::thread::sleep(Duration::from_millis(300));
    let scanner = scanner(host, xml, csv).wait(Duration::from_secs(30));
    let phone = phone.wait(Duration::from_secs(30));
    let uas = uas.stop();
    let reached = uas.received_requests("REGISTER", &SCANNER.to_string());
    let phone_reached = uas.received_requests("REGISTER", &PHONE.to_string());
    phone.assert_code(0);
    assert_eq!(
        (phone.successful(), phone.failed()),
        (u64::from(PHONE_CALLS), 0),
        "the phone in the scanner's /24 should register every time\n{phone}"
    );
    assert_eq!(
        reached, 0,
        "no REGISTER of the scanner should reach the registrar\n{uas}"
    );
    assert_eq!(scanner.successful(), 0, "{scanner}");
    assert_eq!(scanner.failed(), u64::from(SCANS), "{scanner}");
    Outcome {
        scanner,
        phone,
        reached,
        phone_reached,
    }
}

/// What every signature ban shows: status's verdicts and counters, ban list, metrics.
fn check_ban_everywhere(host: &Host, daemon: &Daemon, kind: &str, counter: &str) {
    let status = host.status();
    assert_eq!(status["signatures_scanning"], true, "{status}");
    assert_eq!(
        packets(&status, "drop_signature", "register"),
        1,
        "the first REGISTER is the one that matched: {status}"
    );
    assert_eq!(
        packets(&status, "drop_banned", "unread"),
        u64::from(SCANS) - 1,
        "every later one is dropped on its address: {status}"
    );
    assert_eq!(status["events"][counter], 1, "{status}");
    let in_force = format!("{kind}_bans");
    assert_eq!(status["tables"][in_force.as_str()], 1, "{status}");
    let text = host.ok(&["status"]);
    assert!(
        text.lines().any(|l| l.starts_with("signatures: on;")),
        "{text}"
    );

    let ban = ban_of(host, SCANNER).unwrap_or_else(|| panic!("{SCANNER} is not banned"));
    assert_eq!(ban["origin"], kind, "{ban}");
    assert_eq!(ban["class"], kind, "{ban}");
    assert!(
        ban["remaining_s"].as_u64().unwrap() > 3500,
        "a signature ban lasts signatures.ban (1h) at least: {ban}"
    );
    assert!(ban_of(host, PHONE).is_none(), "the phone was banned");

    let metrics = scrape(host);
    assert_eq!(
        metric(
            &metrics,
            &format!("sip_xdp_signature_bans_total{{kind=\"{kind}\"}}")
        ),
        1
    );
    // (The gauges of what is in force follow the daemon's table refresh, every 15 s; status
    // above read them now.)
    assert!(metric(&metrics, "sip_xdp_signature_scans_total") >= 1);

    let scanner = SCANNER.to_string();
    let line = daemon.wait_for(&[scanner.as_str(), "\"origin\":\"", kind]);
    assert!(line.contains(&format!("\"origin\":\"{kind}\"")), "{line}");
}

/// Scenario 1: SIPVicious' extension scan, announcing itself as `friendly-scanner`, and a
/// phone in its /24. The first REGISTER bans the scanner (drop_signature), so none of its 20
/// reaches the registrar; the phone registers 4 times out of 4.
#[test]
fn a_scanner_naming_itself_is_banned_on_its_first_register_while_a_phone_beside_it_registers() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    let host = Host::new(DEFAULTS);
    let daemon = Daemon::start(&host, &[]);
    daemon.wait_for(&["sip-xdp running"]);
    let outcome = scan_beside_a_phone(&host, "fingerprint_scanner.xml", "scan.csv");
    check_ban_everywhere(&host, &daemon, "fingerprint", "fingerprint_bans");
    assert_eq!(hits(&host, "fingerprint", "friendly-scanner"), 1);
    let line = daemon.wait_for(&[SCANNER.to_string().as_str(), "a scanner's fingerprint"]);
    assert!(line.contains("strike 1"), "{line}");
    eprintln!(
        "fingerprint: {} of {SCANS} scanner REGISTERs reached the registrar (banned on the \
         first, {:.1?} run); the phone's {} registrations all succeeded ({} REGISTERs passed)",
        outcome.reached,
        outcome.scanner.elapsed,
        outcome.phone.successful(),
        outcome.phone_reached
    );
}

/// Scenario 2: the same scan with a neutral User-Agent, for extension 1000 only, which is a
/// trap account: its first REGISTER bans it (origin trap); the phone registers.
#[test]
fn a_register_for_a_trap_account_bans_at_once_while_a_phone_beside_it_registers() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    let host = Host::new(TRAP_1000);
    let daemon = Daemon::start(&host, &[]);
    daemon.wait_for(&["sip-xdp running"]);
    let outcome = scan_beside_a_phone(&host, "scanner.xml", "trap.csv");
    check_ban_everywhere(&host, &daemon, "trap", "trap_bans");
    assert_eq!(hits(&host, "trap", "1000"), 1);
    let line = daemon.wait_for(&[SCANNER.to_string().as_str(), "for a trap account"]);
    assert!(line.contains("strike 1"), "{line}");
    eprintln!(
        "trap: {} of {SCANS} REGISTERs for trap account 1000 reached the registrar (banned on \
         the first, {:.1?} run); the phone's {} registrations all succeeded",
        outcome.reached,
        outcome.scanner.elapsed,
        outcome.phone.successful()
    );
}
