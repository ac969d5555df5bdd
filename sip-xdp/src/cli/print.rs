//! How the commands print what the library reports: text for people, JSON for scripts.
use anyhow::Result;

use super::OutputFormat;
use crate::{
    control::{BanEntry, EditReport, ListEntry, ListKind, SignatureList, SignatureReport},
    status::Status,
};

/// A list or ban edit, entry by entry, and whether it is in force now.
pub(super) fn edit_report(report: &EditReport) {
    for line in &report.lines {
        println!("{line}");
    }
    if !report.enforced {
        println!(
            "(sip-xdp is not attached to any interface here: saved to the state file, applied \
             at the next attach)"
        );
    }
}

pub(super) fn status_text(status: &Status, output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    print!("{}", status_lines(status));
    Ok(())
}

/// `status` as text, one line per fact.
fn status_lines(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Writing to a String cannot fail.
    macro_rules! say {
        ($($arg:tt)*) => {{
            let _ = writeln!(out, $($arg)*);
        }};
    }
    say!("sip-xdp {}", status.version);
    for warning in &status.state_warnings {
        say!("WARNING:   {warning}");
    }
    match status.daemon_pid {
        Some(pid) => say!("daemon:    running (pid {pid})"),
        None => say!("daemon:    not running"),
    }
    if !status.pinned {
        say!(
            "state:     nothing pinned in {} (run `sip-xdp attach --iface IFACE`)",
            status.pin_dir
        );
        return out;
    }
    say!("pinned:    {}", status.pin_dir);
    if status.attached.is_empty() {
        say!("attached:  none (maps kept; `sip-xdp attach --iface IFACE` resumes filtering)");
    }
    for a in &status.attached {
        let ids = match (a.program_id, a.link_id) {
            (Some(p), Some(0)) => format!("program id {p}"),
            (Some(p), Some(l)) => format!("program id {p}, link id {l}"),
            _ => "link unreadable".to_owned(),
        };
        let gone = if a.interface_present {
            ""
        } else {
            " (interface missing in this network namespace)"
        };
        if a.hook == "xdp" {
            say!("attached:  {} ({} mode), {ids}{gone}", a.iface, a.mode);
        } else {
            say!(
                "answers:   {} (TC egress by {}), {ids}{gone}",
                a.iface,
                a.mode
            );
        }
    }
    let answers_on = status.config.as_ref().is_some_and(|c| c.answers_enabled);
    let xdp: Vec<&str> = status
        .attached
        .iter()
        .filter(|a| a.hook == "xdp")
        .map(|a| a.iface.as_str())
        .collect();
    for iface in &xdp {
        let has_egress = status
            .attached
            .iter()
            .any(|a| a.hook != "xdp" && a.iface == *iface);
        if answers_on && !has_egress {
            say!(
                "WARNING:   answers are on but {iface} has no egress program: nobody there is \
                 verified and every REGISTER and INVITE draws from the admission budget; run \
                 `sip-xdp attach --iface {iface}` again"
            );
        }
    }
    if status.monitor_mode {
        say!("mode:      MONITOR (counting and logging would-bans, dropping nothing)");
    }
    let e = |name: &str| status.events.get(name).copied().unwrap_or(0);
    if let Some(config) = &status.config {
        let list = |ports: &[u16]| -> String {
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            ports.join(", ")
        };
        let tcp = if config.tcp_ports.is_empty() {
            "none (SIP over TCP and TLS not inspected)".to_owned()
        } else {
            format!("{} (SIP over TCP, TLS, WebSocket)", list(&config.tcp_ports))
        };
        say!(
            "datapath:  udp ports {}; tcp ports {tcp}",
            list(&config.ports)
        );
    }
    let t = &status.tables;
    if let Some(config) = &status.config {
        let would = if t.would_banned_prefixes > 0 {
            format!(", {} would-bans (monitor)", t.would_banned_prefixes)
        } else {
            String::new()
        };
        say!(
            "prefixes:  {}; {} prefix buckets tracked of {}, {} prefix bans in force{would}; \
             issued {}, drops {}, untracked {}",
            config.prefix_levels(),
            thousands(t.tracked_prefixes),
            thousands(t.prefixes_capacity),
            t.banned_prefixes,
            e("prefix_bans"),
            e("prefix_banned_drops"),
            e("prefix_track_failures")
        );
    }
    if status.config.is_some() {
        let scanning = if status.signatures_scanning {
            "on"
        } else if t.fingerprint_signatures + t.trap_signatures == 0 {
            "off (no signatures listed)"
        } else {
            "off (disabled in the config, or the scan program is not loaded)"
        };
        say!(
            "signatures: {scanning}; {} fingerprints, {} trap accounts (of {}); scans {}, \
             failed {}, truncated {}; bans issued {} fingerprint, {} trap; in force {} \
             fingerprint, {} trap",
            t.fingerprint_signatures,
            t.trap_signatures,
            thousands(t.signatures_capacity),
            e("scans"),
            e("scan_failures"),
            e("scan_truncated"),
            e("fingerprint_bans"),
            e("trap_bans"),
            t.fingerprint_bans,
            t.trap_bans
        );
    }
    let fill = if t.sources_capacity > 0 {
        100.0 * t.tracked_sources as f64 / t.sources_capacity as f64
    } else {
        0.0
    };
    say!(
        "sources:   {} tracked of {} ({fill:.1}% of the LRU table)",
        t.tracked_sources,
        t.sources_capacity
    );
    say!(
        "bans:      {} kernel bans (rate and auth), {} list bans (manual, fail2ban, crowdsec), {} \
         would-bans (monitor)",
        t.active_bans,
        t.list_bans,
        t.active_would_bans
    );
    say!(
        "ban table: {} records (bans and strike histories) of {}",
        t.ban_records,
        t.bans_capacity
    );
    say!(
        "lists:     {} allowlist, {} denylist, {} protected entries",
        t.allowlist_entries,
        t.denylist_entries,
        t.protected_entries
    );
    if answers_on {
        say!(
            "verified:  {} sources of {} (a success after a challenge), {} phones banned",
            t.verified_sources,
            t.verified_capacity,
            t.banned_flows
        );
        say!(
            "failures:  forbidden={} not_found={} rechallenged={} unanswered={}; auth bans {}, \
             phone bans {}",
            e("failures_forbidden"),
            e("failures_not_found"),
            e("failures_rechallenged"),
            e("failures_unanswered"),
            e("auth_bans"),
            e("flow_bans")
        );
        let admission: u64 = status
            .packets
            .get("drop_admission")
            .map_or(0, |m| m.values().sum());
        say!(
            "guards:    reflection drops {} (per destination) + {} (total), admission drops {}",
            e("reflection_destination_drops"),
            e("reflection_total_drops"),
            admission
        );
    }
    if let Some(config) = &status.config {
        say!("config in force:");
        for line in config.to_string().lines() {
            say!("  {line}");
        }
    }
    say!("packets (verdict / method):");
    if status.packets.is_empty() {
        say!("  none yet");
    }
    for (verdict, methods) in &status.packets {
        let parts: Vec<String> = methods.iter().map(|(m, n)| format!("{m}={n}")).collect();
        say!("  {verdict:<17} {}", parts.join(" "));
    }
    let events: Vec<String> = status
        .events
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    say!("events:    {}", events.join(" "));
    out
}

/// 65536 as `65,536`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn list(kind: ListKind, entries: &[ListEntry], output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("{} list is empty", kind.command());
    }
    for e in entries {
        let mut notes = Vec::new();
        if !e.live {
            notes.push("not live: applies at next attach".to_owned());
        }
        if !e.saved {
            notes.push("not in the state file".to_owned());
        }
        if let Some(c) = &e.comment {
            notes.push(c.clone());
        }
        if notes.is_empty() {
            println!("{}", e.cidr);
        } else {
            println!("{:<43} {}", e.cidr.to_string(), notes.join("; "));
        }
    }
    Ok(())
}

pub(super) fn bans(bans: &[BanEntry], output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(bans)?);
        return Ok(());
    }
    print!("{}", bans_text(bans));
    Ok(())
}

/// `ban list` as text: one line per ban (a prefix ban's source is its CIDR).
fn bans_text(bans: &[BanEntry]) -> String {
    use std::fmt::Write as _;
    if bans.is_empty() {
        return "no bans in force\n".to_owned();
    }
    let mut text = format!(
        "{:<43} {:<8} {:<10} {:>10} {:>7}  reason\n",
        "source", "origin", "class", "remaining", "strikes"
    );
    for b in bans {
        let _ = writeln!(
            text,
            "{:<43} {:<8} {:<10} {:>10} {:>7}  {}",
            b.source,
            b.origin,
            b.class.unwrap_or("-"),
            humantime::format_duration(std::time::Duration::from_secs(b.remaining_s)).to_string(),
            b.strikes
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            b.reason.as_deref().unwrap_or("")
        );
    }
    text
}

/// A unix time as `signature list` prints it: RFC 3339, UTC, to the second.
fn unix_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

pub(super) fn signatures(list: &SignatureList, output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    print!("{}", signatures_text(list));
    Ok(())
}

/// `signature list` as text: a header, one line per signature, then the notes.
fn signatures_text(list: &SignatureList) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if list.signatures.is_empty() {
        out.push_str("no signatures listed\n");
    } else {
        let _ = writeln!(
            out,
            "{:<32} {:<11} {:<8} {:>8}  last hit",
            "token", "kind", "from", "hits"
        );
    }
    for s in &list.signatures {
        let last = match (s.live, s.last_hit_at) {
            (false, _) => "(not in the kernel: applies at the next attach)".to_owned(),
            (true, Some(at)) => unix_time(at),
            (true, None) => "never".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<32} {:<11} {:<8} {:>8}  {last}",
            s.token, s.kind, s.origin, s.hits
        );
    }
    if !list.removed_from_config.is_empty() {
        let removed: Vec<String> = list
            .removed_from_config
            .iter()
            .map(|s| format!("{} {}", s.kind, s.token))
            .collect();
        let _ = writeln!(
            out,
            "removed from the config at runtime: {} (`sip-xdp signature add` puts one back)",
            removed.join(", ")
        );
    }
    if !list.live {
        out.push_str(
            "(no kernel SIGNATURES table here: not attached, or a build without the scan \
             program; the list applies at the next attach)\n",
        );
    } else if !list.scanning {
        out.push_str(
            "(requests are not scanned now: signatures are off in the config, the list is \
             empty, or the scan program is not loaded)\n",
        );
    }
    out
}

pub(super) fn signature_report(report: &SignatureReport) {
    for line in &report.lines {
        println!("{line}");
    }
    if !report.live {
        println!(
            "(no kernel SIGNATURES table here: saved to the state file, applied at the next \
             attach)"
        );
    } else if !report.scanning {
        println!(
            "(in the kernel's table, but requests are not scanned now: signatures are off in \
             the config, the list is empty, or the scan program is not loaded)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, origin: &'static str, class: Option<&'static str>) -> BanEntry {
        BanEntry {
            source: source.to_owned(),
            origin,
            class,
            remaining_s: 75,
            expires_at: 1_900_000_075,
            strikes: Some(2),
            reason: None,
        }
    }

    #[test]
    fn status_shows_tcp_ports_and_prefixes() {
        use crate::status::TableFill;
        use sip_xdp_common::{Config, EventCounter};
        let mut events = std::collections::BTreeMap::new();
        for counter in EventCounter::ALL {
            events.insert(counter.name().to_owned(), 0);
        }
        events.insert("prefix_bans".to_owned(), 3);
        events.insert("prefix_banned_drops".to_owned(), 4_000);
        events.insert("prefix_track_failures".to_owned(), 1);
        events.insert("scans".to_owned(), 5_000);
        events.insert("scan_truncated".to_owned(), 2);
        events.insert("fingerprint_bans".to_owned(), 4);
        let status = Status {
            version: "0.0.0",
            pin_dir: "/sys/fs/bpf/test".to_owned(),
            pinned: true,
            daemon_pid: None,
            attached: Vec::new(),
            config: Some(crate::config::describe_kernel(&Config::DEFAULT)),
            monitor_mode: false,
            signatures_scanning: true,
            tables: TableFill {
                tracked_prefixes: 1_234,
                prefixes_capacity: 65_536,
                banned_prefixes: 2,
                fingerprint_signatures: 20,
                trap_signatures: 1,
                signatures_capacity: 4_096,
                fingerprint_bans: 3,
                ..TableFill::default()
            },
            packets: std::collections::BTreeMap::new(),
            events,
            state_warnings: Vec::new(),
        };
        let text = status_lines(&status);
        for line in [
            "datapath:  udp ports 5060; tcp ports 5060, 5061 (SIP over TCP, TLS, WebSocket)",
            "prefixes:  /24 /64 /48; 1,234 prefix buckets tracked of 65,536, 2 prefix bans in \
             force; issued 3, drops 4000, untracked 1",
            "  tcp ports               5060, 5061",
            "  limit connection        5/s, burst 50",
            "  prefix register         20/s, burst 200",
            "  prefix keepalive        unlimited",
            "signatures: on; 20 fingerprints, 1 trap accounts (of 4,096); scans 5000, failed 0, \
             truncated 2; bans issued 4 fingerprint, 0 trap; in force 3 fingerprint, 0 trap",
            // The program's own default has no scan: only attach turns it on.
            "  signatures              off",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("prefix_track_failures=1"), "{text}");

        let off = Config {
            tcp_ports: [0; 8],
            prefix_lens: [0; 3],
            ..Config::DEFAULT
        };
        let status = Status {
            config: Some(crate::config::describe_kernel(&off)),
            ..status
        };
        let text = status_lines(&status);
        assert!(
            text.contains("tcp ports none (SIP over TCP and TLS not inspected)"),
            "{text}"
        );
        assert!(text.contains("prefixes:  off; "), "{text}");
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(65_536), "65,536");
        assert_eq!(thousands(16_777_216), "16,777,216");
    }

    #[test]
    fn prefix_bans_list_as_cidrs_beside_source_bans() {
        let bans = [
            entry("198.51.100.0/24", "prefix", Some("register")),
            entry("2001:db8:1::/64", "prefix", Some("connection")),
            entry("203.0.113.9", "rate", Some("connection")),
        ];
        let text = bans_text(&bans);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("source "), "{text}");
        let columns =
            |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_owned).collect() };
        assert_eq!(
            columns(lines[1]),
            ["198.51.100.0/24", "prefix", "register", "1m", "15s", "2"]
        );
        assert_eq!(
            columns(lines[2])[..3],
            ["2001:db8:1::/64", "prefix", "connection"]
        );
        assert_eq!(
            columns(lines[3])[..3],
            ["203.0.113.9", "rate", "connection"]
        );
        // The columns line up however long the class name.
        let origin_at = lines[0].find("origin").unwrap();
        let remaining_end = lines[0].find("remaining").unwrap() + "remaining".len();
        for line in &lines[1..] {
            assert_eq!(
                line.find("prefix").or(line.find("rate")),
                Some(origin_at),
                "{text}"
            );
            assert_eq!(&line[remaining_end - 2..remaining_end], "5s", "{text}");
        }
        // JSON names the prefix the same way.
        let json = serde_json::to_value(&bans[0]).unwrap();
        assert_eq!(json["source"], "198.51.100.0/24");
        assert_eq!(json["origin"], "prefix");
        assert_eq!(json["class"], "register");
        assert_eq!(json["strikes"], 2);
        assert_eq!(bans_text(&[]), "no bans in force\n");
    }
}
