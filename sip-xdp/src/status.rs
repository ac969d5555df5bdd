//! `sip-xdp status` and the list outputs, as text for people and JSON for scripts.
use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;
use sip_xdp_common::{
    EventCounter, MethodClass, SourceKey, SourceState, Verdict, ban_flags, flags,
};

use crate::{
    cli::{Cli, OutputFormat, StatusArgs},
    config::{KernelConfigView, describe_kernel},
    control::{BanEntry, ListEntry, ListKind},
    daemon,
    loader::{self, PinDir},
    maps::{Counters, SipMaps},
    time::monotonic_now_ns,
};

#[derive(Debug, Serialize)]
pub struct Attachment {
    pub iface: String,
    pub mode: String,
    pub program_id: Option<u32>,
    pub link_id: Option<u32>,
    /// False when the interface no longer exists in this network namespace.
    pub interface_present: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct TableFill {
    pub tracked_sources: u64,
    pub sources_capacity: u64,
    pub active_bans: u64,
    pub active_would_bans: u64,
    pub list_bans: u64,
    pub allowlist_entries: u64,
    pub denylist_entries: u64,
    pub protected_entries: u64,
    /// Records in the durable ban table (bans in force and strike histories).
    pub ban_records: u64,
    pub bans_capacity: u64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub pin_dir: String,
    pub pinned: bool,
    pub daemon_pid: Option<u32>,
    pub attached: Vec<Attachment>,
    pub config: Option<KernelConfigView>,
    pub monitor_mode: bool,
    pub tables: TableFill,
    /// packets[verdict][method], non-zero entries only.
    pub packets: BTreeMap<String, BTreeMap<String, u64>>,
    pub events: BTreeMap<String, u64>,
    /// State files `attach` could not use and moved aside: what they held was not restored (or
    /// only from an earlier version). Shown until the operator deals with them (removes them).
    pub state_warnings: Vec<String>,
}

/// Table fill, counted the way the metrics report it.
pub fn table_fill(maps: &SipMaps) -> Result<TableFill> {
    table_fill_with(maps, &maps.sources()?)
}

/// [`table_fill`] with the source table already read.
pub fn table_fill_with(maps: &SipMaps, sources: &[(SourceKey, SourceState)]) -> Result<TableFill> {
    let now_ns = monotonic_now_ns();
    let monitor = maps
        .read_config()
        .map(|c| c.has_flag(flags::MONITOR))
        .unwrap_or(false);
    let mut fill = TableFill {
        sources_capacity: u64::from(maps.sources_capacity()),
        tracked_sources: sources.len() as u64,
        bans_capacity: u64::from(maps.bans_capacity()),
        ..TableFill::default()
    };
    // Bans are counted in the durable table, which holds them whether or not the source table
    // still tracks the source.
    for (_, ban) in maps.bans()? {
        fill.ban_records += 1;
        if ban.banned_until_ns > now_ns {
            if ban.ban_flags & ban_flags::MONITOR_ONLY == 0 {
                fill.active_bans += 1;
            } else if monitor {
                fill.active_would_bans += 1;
            }
        }
    }
    fill.allowlist_entries = maps.allowlist()?.len() as u64;
    fill.protected_entries = maps.protected()?.len() as u64;
    for (_, entry) in maps.denylist()? {
        if entry.expires_at_ns == 0 {
            fill.denylist_entries += 1;
        } else if entry.expires_at_ns > now_ns {
            fill.list_bans += 1;
        }
    }
    Ok(fill)
}

fn packet_table(counters: &Counters) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut table = BTreeMap::new();
    for verdict in Verdict::ALL {
        for class in MethodClass::ALL {
            let n = counters.packets(verdict, class);
            if n > 0 {
                table
                    .entry(verdict.name().to_owned())
                    .or_insert_with(BTreeMap::new)
                    .insert(class.name().to_owned(), n);
            }
        }
    }
    table
}

pub fn gather(cli: &Cli) -> Result<Status> {
    let pins = PinDir::new(&cli.pin_dir);
    let attached = pins
        .attachments()?
        .into_iter()
        .map(|a| {
            let ids = loader::attachment_ids(&a);
            let present = loader::if_index(&a.iface).is_ok();
            Attachment {
                mode: a.mode.name().to_owned(),
                program_id: ids.map(|(p, _)| p),
                link_id: ids.map(|(_, l)| l),
                interface_present: present,
                iface: a.iface,
            }
        })
        .collect();
    let mut status = Status {
        version: env!("CARGO_PKG_VERSION"),
        pin_dir: pins.path().display().to_string(),
        pinned: pins.has_maps(),
        daemon_pid: daemon::running_pid(&cli.state_dir),
        attached,
        config: None,
        monitor_mode: false,
        tables: TableFill::default(),
        packets: BTreeMap::new(),
        events: BTreeMap::new(),
        state_warnings: crate::state::rejected_files(&cli.state_dir)
            .into_iter()
            .map(|path| {
                format!(
                    "{} could not be read and was moved aside by attach; what it held was \
                     restored only from the previous version, if at all: check the lists and \
                     bans, then remove it",
                    path.display()
                )
            })
            .collect(),
    };
    if status.pinned {
        let maps = SipMaps::open_pinned(&pins)?;
        let config = maps.read_config()?;
        status.monitor_mode = config.has_flag(flags::MONITOR);
        status.config = Some(describe_kernel(&config));
        status.tables = table_fill(&maps)?;
        let counters = maps.counters()?;
        status.packets = packet_table(&counters);
        for counter in EventCounter::ALL {
            status
                .events
                .insert(counter.name().to_owned(), counters.event(counter));
        }
    }
    Ok(status)
}

pub fn print_status(cli: &Cli, args: &StatusArgs) -> Result<()> {
    let status = gather(cli)?;
    write_status(&status, args.output)?;
    if args.require_attached {
        require_attached(&status)?;
    }
    Ok(())
}

/// `status --require-attached`: fails unless some attachment's link is readable and its
/// interface exists here, since only then do bans (fail2ban's among them) drop anything.
pub fn require_attached(status: &Status) -> Result<()> {
    if status
        .attached
        .iter()
        .any(|a| a.program_id.is_some() && a.interface_present)
    {
        return Ok(());
    }
    let pinned: Vec<&str> = status.attached.iter().map(|a| a.iface.as_str()).collect();
    let detail = if pinned.is_empty() {
        format!("no attachment pinned under {}", status.pin_dir)
    } else {
        format!(
            "the links pinned under {} ({}) are unreadable or their interfaces are missing in \
             this network namespace",
            status.pin_dir,
            pinned.join(", ")
        )
    };
    bail!(
        "sip-xdp is not attached to any interface ({detail}): run `sip-xdp attach --iface IFACE` \
         or start sip-xdp.service (or check --pin-dir)"
    )
}

fn write_status(status: &Status, output: OutputFormat) -> Result<()> {
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
            (Some(p), Some(l)) => format!("program id {p}, link id {l}"),
            _ => "link unreadable".to_owned(),
        };
        let gone = if a.interface_present {
            ""
        } else {
            " (interface missing in this network namespace)"
        };
        println!("attached:  {} ({} mode), {ids}{gone}", a.iface, a.mode);
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
        "bans:      {} rate bans, {} list bans (manual, fail2ban, crowdsec), {} would-bans (monitor)",
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

pub fn print_list(kind: ListKind, entries: &[ListEntry], output: OutputFormat) -> Result<()> {
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

pub fn print_bans(bans: &[BanEntry], output: OutputFormat) -> Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(bans)?);
        return Ok(());
    }
    if bans.is_empty() {
        println!("no bans in force");
        return Ok(());
    }
    println!(
        "{:<43} {:<8} {:<9} {:>10} {:>7}  reason",
        "source", "origin", "class", "remaining", "strikes"
    );
    for b in bans {
        println!(
            "{:<43} {:<8} {:<9} {:>10} {:>7}  {}",
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
    Ok(())
}
