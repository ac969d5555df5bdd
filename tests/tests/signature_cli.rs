//! `sip-xdp signature list|add|del` as an operator types them, against the kernel's real
//! `SIGNATURES` table: every edit is read back from the pinned map with the library (not from
//! the CLI's own report), the config flag that hands requests to the scan program follows the
//! table, and runtime edits (additions, and removals of config entries) survive a detach and
//! attach, a purge, and the hit counters of entries that stay survive a reattach.
//!
//! Runs the real binary in the server namespace of its own veth pair, with its own pin and
//! state directories (see `sip_xdp_tests::host`).
use std::collections::BTreeSet;

use aya::maps::{HashMap, Map, MapData};
use serde_json::Value;
use sip_xdp::{loader::PinDir, maps::SipMaps};
use sip_xdp_common::{CONFIG_VERSION, SignatureEntry, SignatureKey, SignatureKind, flags};
use sip_xdp_tests::{host::Host, netns::SERVER_IF};

/// The test's `[signatures]`: two fingerprints (one in capitals) and one trap account.
const CONFIG: &str = r#"
[signatures]
ban = "30m"
fingerprints = ["Friendly-Scanner", "sipcli"]
traps = ["100"]
"#;

type Signatures = BTreeSet<(String, String)>;

fn set(entries: &[(&str, &str)]) -> Signatures {
    entries
        .iter()
        .map(|(kind, token)| (kind.to_string(), token.to_string()))
        .collect()
}

/// What the kernel's table holds, read from the pinned map.
fn kernel(host: &Host) -> Signatures {
    let maps = SipMaps::open_pinned(&PinDir::new(&host.pin_dir)).expect("the pinned maps");
    assert!(
        maps.has_signatures(),
        "the pinned maps have no SIGNATURES table: this build has no scan program"
    );
    maps.signatures()
        .expect("reading SIGNATURES")
        .into_iter()
        .map(|(key, _)| {
            let kind = SignatureKind::from_index(usize::from(key.kind)).expect("a known kind");
            let token = String::from_utf8(key.token_bytes().to_vec()).expect("an ASCII token");
            (kind.name().to_owned(), token)
        })
        .collect()
}

/// The config flag `flags::SIGNATURES` in force, and the config's signature ban.
fn kernel_flag(host: &Host) -> (bool, u64) {
    let maps = SipMaps::open_pinned(&PinDir::new(&host.pin_dir)).expect("the pinned maps");
    let config = maps.read_config().expect("reading CONFIG");
    assert_eq!(config.version, CONFIG_VERSION);
    (config.has_flag(flags::SIGNATURES), config.signature_ban_ns)
}

fn list(host: &Host) -> Value {
    serde_json::from_str(&host.ok(&["signature", "list", "--output", "json"]))
        .expect("signature list JSON")
}

/// (kind, token) of what `signature list` reports, with each entry's origin and liveness.
fn listed(list: &Value) -> Vec<(String, String, String, bool)> {
    list["signatures"]
        .as_array()
        .expect("a signatures array")
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["token"].as_str().unwrap().to_owned(),
                s["origin"].as_str().unwrap().to_owned(),
                s["live"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn listed_set(list: &Value) -> Signatures {
    listed(list)
        .into_iter()
        .map(|(kind, token, _, _)| (kind, token))
        .collect()
}

/// Writes a hit count into one entry, as the scan program does on a match.
fn record_hits(host: &Host, kind: SignatureKind, token: &str, hits: u64) {
    let path = PinDir::new(&host.pin_dir).map_path("SIGNATURES");
    let map = Map::from_map_data(MapData::from_pin(&path).expect("pinned SIGNATURES")).unwrap();
    let mut map: HashMap<MapData, SignatureKey, SignatureEntry> = HashMap::try_from(map).unwrap();
    let key = SignatureKey::new(kind, token.as_bytes()).unwrap();
    let now_ns = {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    map.insert(
        key,
        SignatureEntry {
            hits,
            last_hit_ns: now_ns,
        },
        0,
    )
    .expect("writing a hit count");
}

fn hits_of(list: &Value, kind: &str, token: &str) -> (u64, Option<u64>) {
    let entry = list["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind && s["token"] == token)
        .unwrap_or_else(|| panic!("no {kind} {token} in {list}"));
    (
        entry["hits"].as_u64().unwrap(),
        entry["last_hit_at"].as_u64(),
    )
}

#[test]
fn runtime_edits_reach_the_kernel_at_once_and_survive_reattach_and_purge() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(CONFIG);
    let config = host.config.to_str().unwrap().to_owned();

    // Before any attach: saved, said so, applied later.
    let out = host.ok(&["signature", "add", "trap", "Admin", "--config", &config]);
    assert!(out.contains("added trap \"admin\""), "{out}");
    assert!(out.contains("no kernel SIGNATURES table here"), "{out}");

    host.attach();
    let configured = set(&[
        ("fingerprint", "friendly-scanner"),
        ("fingerprint", "sipcli"),
        ("trap", "100"),
        ("trap", "admin"),
    ]);
    assert_eq!(kernel(&host), configured);
    assert_eq!(kernel_flag(&host), (true, 30 * 60 * 1_000_000_000));
    let status = host.status();
    assert_eq!(status["signatures_scanning"], true, "{status}");
    assert_eq!(status["tables"]["fingerprint_signatures"], 2);
    assert_eq!(status["tables"]["trap_signatures"], 2);
    let shown = list(&host);
    assert_eq!(listed_set(&shown), configured);
    assert!(
        listed(&shown).iter().all(|(_, token, origin, live)| *live
            && origin
                == if token == "admin" {
                    "runtime"
                } else {
                    "config"
                }),
        "{shown}"
    );
    assert_eq!(shown["scanning"], true);

    // An operator adds a fingerprint and takes a config entry out: the kernel has exactly what
    // the list says, at once.
    let out = host.ok(&[
        "signature",
        "add",
        "fingerprint",
        "SIPVicious-NG",
        "sipvicious-ng",
    ]);
    assert_eq!(
        out.matches("added fingerprint \"sipvicious-ng\"").count(),
        1,
        "{out}"
    );
    let out = host.ok(&["signature", "del", "fingerprint", "sipcli"]);
    assert!(
        out.contains("removed fingerprint \"sipcli\" (a config entry"),
        "{out}"
    );
    let edited = set(&[
        ("fingerprint", "friendly-scanner"),
        ("fingerprint", "sipvicious-ng"),
        ("trap", "100"),
        ("trap", "admin"),
    ]);
    assert_eq!(kernel(&host), edited);
    let shown = list(&host);
    assert_eq!(listed_set(&shown), edited);
    assert_eq!(shown["removed_from_config"][0]["token"], "sipcli");
    let text = host.ok(&["signature", "list", "--kind", "trap"]);
    assert!(
        text.contains("admin") && !text.contains("friendly-scanner"),
        "{text}"
    );

    // Mistakes are refused, naming the token and the fix; nothing changes.
    let err = host.fails(&["signature", "del", "trap", "nobody"]);
    assert!(err.contains("not found: trap \"nobody\""), "{err}");
    let err = host.fails(&["signature", "add", "fingerprint", "Asterisk PBX"]);
    assert!(
        err.contains("list one of its tokens instead (\"asterisk\" or \"pbx\")"),
        "{err}"
    );
    assert_eq!(kernel(&host), edited);

    // The scan program's hit counter shows in the list, and stays through a reattach.
    record_hits(&host, SignatureKind::Fingerprint, "friendly-scanner", 7);
    let (hits, last_hit_at) = hits_of(&list(&host), "fingerprint", "friendly-scanner");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(hits, 7);
    let last_hit_at = last_hit_at.expect("a last hit");
    assert!(now.abs_diff(last_hit_at) <= 5, "{last_hit_at} vs {now}");
    let text = host.ok(&["signature", "list"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("friendly-scanner") && l.contains(" 7  20")),
        "{text}"
    );

    host.ok(&["detach", "--iface", SERVER_IF]);
    host.attach();
    assert_eq!(kernel(&host), edited);
    assert_eq!(
        hits_of(&list(&host), "fingerprint", "friendly-scanner").0,
        7
    );

    // Emptied, the flag goes off (no request is handed to the scan); one entry turns it on.
    host.ok(&[
        "signature",
        "del",
        "fingerprint",
        "friendly-scanner",
        "sipvicious-ng",
    ]);
    host.ok(&["signature", "del", "trap", "100", "admin"]);
    assert!(kernel(&host).is_empty());
    assert!(!kernel_flag(&host).0);
    assert_eq!(host.status()["signatures_scanning"], false);
    host.ok(&["signature", "add", "trap", "1"]);
    assert_eq!(kernel(&host), set(&[("trap", "1")]));
    assert!(kernel_flag(&host).0);

    // A purge drops the pinned table; the attach after it rebuilds it from the config and the
    // state file's runtime edits.
    host.ok(&["detach", "--all", "--purge"]);
    host.attach();
    assert_eq!(kernel(&host), set(&[("trap", "1")]));
    assert!(kernel_flag(&host).0);
    host.ok(&["signature", "add", "fingerprint", "sipcli"]);
    assert_eq!(
        kernel(&host),
        set(&[("trap", "1"), ("fingerprint", "sipcli")])
    );
    assert_eq!(
        listed(&list(&host))
            .into_iter()
            .find(|(_, t, _, _)| t == "sipcli")
            .map(|(_, _, origin, _)| origin),
        Some("config".to_owned()),
        "re-adding a removed config entry restores it as a config entry"
    );

    // The ban commands take the new origins.
    host.ok(&[
        "ban",
        "del",
        "203.0.113.9",
        "--origin",
        "fingerprint,trap",
        "--missing-ok",
    ]);
}

#[test]
fn signatures_off_in_the_config_fill_the_table_but_scan_nothing() {
    sip_xdp_tests::needs_root!();
    let host = Host::new("[signatures]\nenabled = false\ntraps = [\"100\"]\n");
    host.attach();
    assert_eq!(kernel(&host), defaults_plus(&[("trap", "100")]));
    assert!(!kernel_flag(&host).0);
    // An edit does not turn the scan on against the config.
    host.ok(&[
        "signature",
        "add",
        "trap",
        "200",
        "--config",
        host.config.to_str().unwrap(),
    ]);
    assert!(!kernel_flag(&host).0);
    let out = host.ok(&["signature", "list"]);
    assert!(out.contains("requests are not scanned now"), "{out}");
}

/// The default fingerprints (as `sip-xdp config show` has them) plus `extra`.
fn defaults_plus(extra: &[(&str, &str)]) -> Signatures {
    let mut all: Signatures = sip_xdp::config::DEFAULT_FINGERPRINTS
        .iter()
        .map(|t| ("fingerprint".to_owned(), t.to_string()))
        .collect();
    all.extend(set(extra));
    all
}

/// The daemon's SIGHUP reload applies the new `[signatures]` lists to the kernel's table,
/// keeps the runtime edits on top, and turns the scan off when the config does.
#[test]
fn a_config_reload_applies_the_new_lists_and_keeps_the_runtime_edits() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(CONFIG);
    let daemon = sip_xdp_tests::host::Daemon::start(&host, &[]);
    daemon.wait_for(&["sip-xdp running"]);
    host.ok(&["signature", "add", "trap", "7"]);
    host.ok(&["signature", "del", "trap", "100"]);
    record_hits(&host, SignatureKind::Fingerprint, "friendly-scanner", 3);

    std::fs::write(
        &host.config,
        "[signatures]\nban = \"2h\"\nfingerprints = [\"friendly-scanner\", \"pplsip\"]\n\
         traps = [\"100\", \"7\"]\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&["config reloaded"]);
    // sipcli left the config; pplsip came in; 7 is a config entry now; 100's runtime removal
    // still holds. friendly-scanner stayed, with its hits.
    assert_eq!(
        kernel(&host),
        set(&[
            ("fingerprint", "friendly-scanner"),
            ("fingerprint", "pplsip"),
            ("trap", "7"),
        ])
    );
    assert_eq!(kernel_flag(&host), (true, 2 * 3600 * 1_000_000_000));
    let shown = list(&host);
    assert_eq!(hits_of(&shown, "fingerprint", "friendly-scanner").0, 3);
    assert!(
        listed(&shown)
            .iter()
            .all(|(_, _, origin, live)| origin == "config" && *live),
        "{shown}"
    );

    std::fs::write(
        &host.config,
        "[signatures]\nenabled = false\nfingerprints = [\"pplsip\"]\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    let reloads = || {
        daemon
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("config reloaded"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while reloads() < 2 {
        assert!(std::time::Instant::now() < deadline, "no second reload");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !kernel_flag(&host).0,
        "signatures.enabled = false turns the scan off"
    );
    assert_eq!(kernel(&host), set(&[("fingerprint", "pplsip")]));
}
