//! How the commands print what the library reports: text for people, JSON for scripts.
use anyhow::Result;

use super::OutputFormat;
use crate::{
    control::{BanEntry, EditReport, ListEntry, ListKind},
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
    println!("sip-xdp {}", status.version);
    for warning in &status.state_warnings {
        println!("WARNING:   {warning}");
    }
    match status.daemon_pid {
        Some(pid) => println!("daemon:    running (pid {pid})"),
        None => println!("daemon:    not running"),
    }
    if !status.pinned {
        println!(
            "state:     nothing pinned in {} (run `sip-xdp attach --iface IFACE`)",
            status.pin_dir
        );
        return Ok(());
    }
    println!("pinned:    {}", status.pin_dir);
    if status.attached.is_empty() {
        println!("attached:  none (maps kept; `sip-xdp attach --iface IFACE` resumes filtering)");
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
            println!("attached:  {} ({} mode), {ids}{gone}", a.iface, a.mode);
        } else {
            println!(
                "answers:   {} (TC egress by {}), {ids}{gone}",
                a.iface, a.mode
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
            println!(
                "WARNING:   answers are on but {iface} has no egress program: nobody there is \
                 verified and every REGISTER and INVITE draws from the admission budget; run \
                 `sip-xdp attach --iface {iface}` again"
            );
        }
    }
    if status.monitor_mode {
        println!("mode:      MONITOR (counting and logging would-bans, dropping nothing)");
    }
    let t = &status.tables;
    let fill = if t.sources_capacity > 0 {
        100.0 * t.tracked_sources as f64 / t.sources_capacity as f64
    } else {
        0.0
    };
    println!(
        "sources:   {} tracked of {} ({fill:.1}% of the LRU table)",
        t.tracked_sources, t.sources_capacity
    );
    println!(
        "bans:      {} kernel bans (rate and auth), {} list bans (manual, fail2ban, crowdsec), {} \
         would-bans (monitor)",
        t.active_bans, t.list_bans, t.active_would_bans
    );
    println!(
        "ban table: {} records (bans and strike histories) of {}",
        t.ban_records, t.bans_capacity
    );
    println!(
        "lists:     {} allowlist, {} denylist, {} protected entries",
        t.allowlist_entries, t.denylist_entries, t.protected_entries
    );
    if answers_on {
        let e = |name: &str| status.events.get(name).copied().unwrap_or(0);
        println!(
            "verified:  {} sources of {} (a success after a challenge), {} phones banned",
            t.verified_sources, t.verified_capacity, t.banned_flows
        );
        println!(
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
        println!(
            "guards:    reflection drops {} (per destination) + {} (total), admission drops {}",
            e("reflection_destination_drops"),
            e("reflection_total_drops"),
            admission
        );
    }
    if let Some(config) = &status.config {
        println!("config in force:");
        for line in config.to_string().lines() {
            println!("  {line}");
        }
    }
    println!("packets (verdict / method):");
    if status.packets.is_empty() {
        println!("  none yet");
    }
    for (verdict, methods) in &status.packets {
        let parts: Vec<String> = methods.iter().map(|(m, n)| format!("{m}={n}")).collect();
        println!("  {verdict:<17} {}", parts.join(" "));
    }
    let events: Vec<String> = status
        .events
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("events:    {}", events.join(" "));
    Ok(())
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
