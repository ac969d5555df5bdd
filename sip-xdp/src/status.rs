//! What `sip-xdp status` reports, gathered from the pins, the maps and the state directory: plain
//! data that the CLI prints (text or JSON) and the daemon turns into metrics.
use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;
use sip_xdp_common::{
    EventCounter, MethodClass, PrefixKey, SignatureKind, SourceKey, SourceState, Verdict,
    ban_flags, flags, signature_ban_kind,
};

use std::path::Path;

use crate::{
    config::{KernelConfigView, describe_kernel},
    instance,
    loader::{self, PinDir},
    maps::{Counters, SipMaps},
    time::monotonic_now_ns,
};

#[derive(Debug, Serialize)]
pub struct Attachment {
    pub iface: String,
    /// `xdp` (the filter) or `tc-egress` (the server's answers).
    pub hook: &'static str,
    /// XDP: native or skb. TC egress: tcx (a pinned link) or netlink (a clsact filter).
    pub mode: String,
    pub program_id: Option<u32>,
    pub link_id: Option<u32>,
    /// False when the interface no longer exists in this network namespace.
    pub interface_present: bool,
}

/// How full the program's tables are and what they hold, counted the way status and the
/// metrics report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
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
    /// Clients whose verification (a success after a challenge) is in force.
    pub verified_sources: u64,
    pub verified_capacity: u64,
    /// Phones (address and port) of verified addresses banned for failed authentication.
    pub banned_flows: u64,
    /// Prefix buckets in `PREFIXES` (`[prefixes]`), and its capacity.
    pub tracked_prefixes: u64,
    pub prefixes_capacity: u64,
    /// Prefixes banned now (enforced), and would-bans in monitor mode.
    pub banned_prefixes: u64,
    pub would_banned_prefixes: u64,
    /// Records in the durable prefix ban table, and its capacity.
    pub prefix_ban_records: u64,
    pub prefix_bans_capacity: u64,
    /// Entries of `SIGNATURES` by kind, and its capacity (0 for a build without the scan).
    pub fingerprint_signatures: u64,
    pub trap_signatures: u64,
    pub signatures_capacity: u64,
    /// Sources banned now (enforced) for a scanner's fingerprint, and for a trap account.
    pub fingerprint_bans: u64,
    pub trap_bans: u64,
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
    /// Requests are scanned for signatures now: `flags::SIGNATURES` set and the scan program
    /// in `SCANNERS`.
    pub signatures_scanning: bool,
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
                match signature_ban_kind(ban.ban_class) {
                    Some(SignatureKind::Fingerprint) => fill.fingerprint_bans += 1,
                    Some(SignatureKind::Trap) => fill.trap_bans += 1,
                    None => {}
                }
            } else if monitor {
                fill.active_would_bans += 1;
            }
        }
    }
    count_prefixes(maps, &mut fill, now_ns, monitor)?;
    if maps.has_signatures() {
        fill.signatures_capacity = u64::from(maps.signatures_capacity());
        for (key, _) in maps.signatures()? {
            match SignatureKind::from_index(usize::from(key.kind)) {
                Some(SignatureKind::Fingerprint) => fill.fingerprint_signatures += 1,
                Some(SignatureKind::Trap) => fill.trap_signatures += 1,
                None => {}
            }
        }
    }
    fill.verified_capacity = u64::from(maps.verified_capacity());
    fill.verified_sources = maps
        .verified()?
        .iter()
        .filter(|(_, v)| v.verified_until_ns > now_ns)
        .count() as u64;
    fill.banned_flows = maps
        .flows()?
        .iter()
        .filter(|(_, f)| f.banned_until_ns > now_ns)
        .count() as u64;
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

/// The prefix buckets and bans: a prefix is banned while its record (or its bucket, which the
/// program updates first) says so.
fn count_prefixes(maps: &SipMaps, fill: &mut TableFill, now_ns: u64, monitor: bool) -> Result<()> {
    fill.prefixes_capacity = u64::from(maps.prefixes_capacity());
    fill.prefix_bans_capacity = u64::from(maps.prefix_bans_capacity());
    let mut until: BTreeMap<[u8; 17], (u64, u8)> = BTreeMap::new();
    let key_of = |key: &PrefixKey| {
        let mut k = [0u8; 17];
        k[..16].copy_from_slice(&key.addr);
        k[16] = key.prefix_len;
        k
    };
    for (key, ban) in maps.prefix_bans()? {
        fill.prefix_ban_records += 1;
        until.insert(key_of(&key), (ban.banned_until_ns, ban.ban_flags));
    }
    for (key, state) in maps.prefixes()? {
        fill.tracked_prefixes += 1;
        let entry = until.entry(key_of(&key)).or_insert((0, 0));
        if state.banned_until_ns > entry.0 {
            *entry = (state.banned_until_ns, state.ban_flags);
        }
    }
    for (banned_until_ns, flags) in until.into_values() {
        if banned_until_ns <= now_ns {
            continue;
        }
        if flags & ban_flags::MONITOR_ONLY == 0 {
            fill.banned_prefixes += 1;
        } else if monitor {
            fill.would_banned_prefixes += 1;
        }
    }
    Ok(())
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

/// Everything `sip-xdp status` shows, for the sip-xdp whose pins and state live in `pin_dir` and
/// `state_dir`.
pub fn gather(pin_dir: &Path, state_dir: &Path) -> Result<Status> {
    let pins = PinDir::new(pin_dir);
    let attached = pins
        .attachments()?
        .into_iter()
        .map(|a| {
            let ids = loader::attachment_ids(&a);
            let present = loader::if_index(&a.iface).is_ok();
            let mode = match a.hook {
                loader::Hook::XdpIngress => a.mode.name().to_owned(),
                loader::Hook::TcEgress => a.egress_link().name().to_owned(),
            };
            Attachment {
                hook: a.hook.name(),
                mode,
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
        daemon_pid: instance::running_pid(state_dir),
        attached,
        config: None,
        monitor_mode: false,
        signatures_scanning: false,
        tables: TableFill::default(),
        packets: BTreeMap::new(),
        events: BTreeMap::new(),
        state_warnings: crate::state::rejected_files(state_dir)
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
        status.signatures_scanning = config.version == sip_xdp_common::CONFIG_VERSION
            && config.has_flag(flags::SIGNATURES)
            && crate::maps::scan_program_in_place(&pins);
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

/// `status --require-attached`: fails unless some attachment's link is readable and its
/// interface exists here, since only then do bans (fail2ban's among them) drop anything.
pub fn require_attached(status: &Status) -> Result<()> {
    if status.attached.iter().any(|a| {
        a.hook == loader::Hook::XdpIngress.name() && a.program_id.is_some() && a.interface_present
    }) {
        return Ok(());
    }
    let pinned: Vec<&str> = status
        .attached
        .iter()
        .filter(|a| a.hook == loader::Hook::XdpIngress.name())
        .map(|a| a.iface.as_str())
        .collect();
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
