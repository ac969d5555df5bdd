//! Lists, bans and attachment, kept in step between the pinned maps (the live copy the kernel
//! reads) and the state file (the durable copy that survives reboots and purges).
//!
//! Every change takes the state lock for its whole read-modify-write, so the CLI and the daemon
//! never lose each other's edits. Live maps are changed first, so a full table or a missing
//! privilege fails before anything is saved that the kernel does not have.
use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::Serialize;
use sip_xdp_common::{Config, LimitClass, SourceKey, SourceState, ban_flags};

use crate::{
    config::Settings,
    loader::{self, AttachMode, AttachOutcome, LoadOptions, PinDir},
    maps::{SipMaps, cidr_key, key_addr},
    state::{self, AutoBanRecord, Clocks, StateFile, now_wall_secs},
    time::monotonic_now_ns,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Allow,
    Deny,
}

impl ListKind {
    pub const fn command(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
        }
    }
}

/// What a list or ban edit did, entry by entry.
#[derive(Debug, Default)]
pub struct EditReport {
    pub lines: Vec<String>,
    pub missing: Vec<IpNet>,
    /// False when nothing is attached: the change is saved and applies at the next attach.
    pub live: bool,
}

impl EditReport {
    pub fn print(&self) {
        for line in &self.lines {
            println!("{line}");
        }
        if !self.live {
            println!(
                "(sip-xdp is not attached: saved to the state file, applied at the next attach)"
            );
        }
    }

    pub fn fail_if_missing(&self, command: &str) -> Result<()> {
        if self.missing.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self.missing.iter().map(|n| n.to_string()).collect();
        bail!(
            "not found: {} (see `sip-xdp {command} list`)",
            list.join(", ")
        )
    }
}

/// One allow or deny entry as `list` shows it.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    pub cidr: IpNet,
    /// In the kernel's table now.
    pub live: bool,
    /// In the state file (restored after reboot).
    pub saved: bool,
    pub added_at: Option<u64>,
    pub comment: Option<String>,
}

/// A ban in force, manual or automatic.
#[derive(Debug, Serialize)]
pub struct BanEntry {
    /// The banned address or CIDR (IPv6 sources may be a prefix, per `sip.ipv6_source_prefix`).
    pub source: String,
    /// "manual", "rate" (the kernel's rate limit) or "would" (monitor mode, not enforced).
    pub kind: &'static str,
    /// The limit class whose bucket ran dry (automatic bans).
    pub class: Option<&'static str>,
    pub remaining_s: u64,
    /// Wall-clock end, unix seconds.
    pub expires_at: u64,
    pub strikes: Option<u32>,
    pub reason: Option<String>,
}

pub struct Control {
    pins: PinDir,
    state_dir: PathBuf,
}

impl Control {
    pub fn new(pins: PinDir, state_dir: PathBuf) -> Self {
        Self { pins, state_dir }
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// One list or ban edit: under the state lock, on the state file and the live maps (if
    /// pinned), saved when `edit` succeeds.
    fn edit(
        &self,
        edit: impl FnOnce(&mut StateFile, &mut Option<SipMaps>, &mut EditReport) -> Result<()>,
    ) -> Result<EditReport> {
        let _lock = state::lock(&self.state_dir)?;
        let mut state = StateFile::load(&self.state_dir)?;
        let mut maps = self.live_maps()?;
        let mut report = EditReport {
            live: maps.is_some(),
            ..EditReport::default()
        };
        edit(&mut state, &mut maps, &mut report)?;
        state.save(&self.state_dir)?;
        Ok(report)
    }

    fn live_maps(&self) -> Result<Option<SipMaps>> {
        if !self.pins.has_maps() {
            return Ok(None);
        }
        Ok(Some(SipMaps::open_pinned(&self.pins)?))
    }

    /// Loads the program against the pinned maps, applies the config and the saved lists, and
    /// attaches (or updates in place) every interface. Either all interfaces end up attached or
    /// the host is left as it was.
    pub fn attach(
        &self,
        settings: &Settings,
        ifaces: &[String],
        mode: AttachMode,
    ) -> Result<Vec<(String, AttachOutcome)>> {
        for iface in ifaces {
            check_interface(iface)?;
        }
        let _lock = state::lock(&self.state_dir)?;
        let mut state = StateFile::load(&self.state_dir)?;
        let options = LoadOptions {
            max_sources: settings.datapath.max_sources,
        };
        let mut load = loader::load_pinned(&options, &self.pins)?;
        let prepared = (|| -> Result<()> {
            let mut maps = SipMaps::take_from(&mut load.ebpf)?;
            if maps.sources_capacity() != options.max_sources {
                eprintln!(
                    "warning: datapath.max_sources is {} but the pinned SOURCES table holds {}; \
                     the new size applies after `sip-xdp detach --all --purge`",
                    options.max_sources,
                    maps.sources_capacity()
                );
            }
            maps.write_config(&settings.kernel_config())?;
            reconcile_locked(&mut state, &mut maps)?;
            if !load.adopted_maps {
                restore_auto_bans(&state, &mut maps)?;
            }
            // Restored bans of allowlisted addresses, and entries pinned by a build that read the
            // allowlist first, would otherwise drop allowlisted sources.
            let allowed = maps.allowlist()?;
            forget_sources_in(&mut maps, &allowed)?;
            state.save(&self.state_dir)?;
            Ok(())
        })();
        if let Err(e) = prepared {
            if self.pins.attachments()?.is_empty() {
                load.rollback(&self.pins);
            }
            return Err(e);
        }
        let mut done: Vec<(String, AttachOutcome)> = Vec::new();
        for iface in ifaces {
            match loader::attach_pinned(&mut load.ebpf, &self.pins, iface, mode) {
                Ok(outcome) => done.push((iface.clone(), outcome)),
                Err(e) => {
                    // Undo what this command attached; replaced links keep working as before.
                    for (iface, outcome) in &done {
                        if !outcome.replaced {
                            let _ = loader::detach_pinned(&self.pins, iface);
                        }
                    }
                    if self.pins.attachments()?.is_empty() && !load.adopted_maps {
                        load.rollback(&self.pins);
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(done)
    }

    pub fn list_add(
        &self,
        kind: ListKind,
        nets: &[IpNet],
        comment: Option<String>,
    ) -> Result<EditReport> {
        self.edit(|state, maps, report| {
            for &net in nets {
                let added = match kind {
                    ListKind::Allow => state.add_allow(net, comment.clone()),
                    ListKind::Deny => state.add_deny(net, comment.clone()),
                };
                if let Some(maps) = maps.as_mut() {
                    match kind {
                        ListKind::Allow => maps.allow(net),
                        ListKind::Deny => maps.deny(net, 0),
                    }
                    .with_context(|| {
                        format!(
                            "cannot add {net} to the {} table (it holds {} entries at most)",
                            kind.command(),
                            sip_xdp_common::MAX_LIST_ENTRIES
                        )
                    })?;
                }
                report.lines.push(if added {
                    format!("{} {net}: added", kind.command())
                } else {
                    format!("{} {net}: already present", kind.command())
                });
            }
            if kind == ListKind::Allow
                && let Some(maps) = maps.as_mut()
            {
                forget_sources_in(maps, nets)?;
            }
            Ok(())
        })
    }

    pub fn list_del(&self, kind: ListKind, nets: &[IpNet]) -> Result<EditReport> {
        self.edit(|state, maps, report| {
            let now_wall = now_wall_secs();
            for &net in nets {
                let in_file = match kind {
                    ListKind::Allow => state.remove_allow(net),
                    ListKind::Deny => state.remove_deny(net),
                };
                let in_map = match maps.as_mut() {
                    None => false,
                    Some(maps) => match kind {
                        ListKind::Allow => maps.unallow(net)?,
                        // A manual ban of the same net stays in force.
                        ListKind::Deny => match state.denylist_value(&net, now_wall) {
                            Some(expires_at_ns) => {
                                maps.deny(net, expires_at_ns)?;
                                true
                            }
                            None => maps.undeny(net)?,
                        },
                    },
                };
                if in_file || in_map {
                    report
                        .lines
                        .push(format!("{} {net}: removed", kind.command()));
                } else {
                    report.missing.push(net);
                }
            }
            Ok(())
        })
    }

    pub fn list_entries(&self, kind: ListKind) -> Result<Vec<ListEntry>> {
        let state = StateFile::load(&self.state_dir)?;
        let live: Vec<IpNet> = match self.live_maps()? {
            None => Vec::new(),
            Some(maps) => match kind {
                ListKind::Allow => maps.allowlist()?,
                ListKind::Deny => maps
                    .denylist()?
                    .into_iter()
                    .filter(|(_, entry)| entry.expires_at_ns == 0)
                    .map(|(net, _)| net)
                    .collect(),
            },
        };
        let saved: Vec<(IpNet, u64, Option<String>)> = match kind {
            ListKind::Allow => state
                .allow
                .iter()
                .map(|r| (r.net, r.added_at, r.comment.clone()))
                .collect(),
            ListKind::Deny => state
                .deny
                .iter()
                .map(|r| (r.net, r.added_at, r.comment.clone()))
                .collect(),
        };
        let mut entries: Vec<ListEntry> = saved
            .into_iter()
            .map(|(cidr, added_at, comment)| ListEntry {
                cidr,
                live: live.contains(&cidr),
                saved: true,
                added_at: Some(added_at),
                comment,
            })
            .collect();
        for cidr in live {
            if !entries.iter().any(|e| e.cidr == cidr) {
                entries.push(ListEntry {
                    cidr,
                    live: true,
                    saved: false,
                    added_at: None,
                    comment: None,
                });
            }
        }
        entries.sort_by_key(|e| e.cidr);
        Ok(entries)
    }

    pub fn ban_add(
        &self,
        nets: &[IpNet],
        duration: Duration,
        reason: Option<String>,
    ) -> Result<EditReport> {
        if duration.is_zero() {
            bail!("a ban must last longer than 0s (e.g. --for 30m)");
        }
        self.edit(|state, maps, report| {
            let now_wall = now_wall_secs();
            let expires_at = now_wall.saturating_add(duration.as_secs().max(1));
            for &net in nets {
                state.add_ban(net, expires_at, reason.clone());
                if let Some(maps) = maps.as_mut()
                    && let Some(value) = state.denylist_value(&net, now_wall)
                {
                    maps.deny(net, value).with_context(|| {
                        format!(
                            "cannot ban {net}: the deny table holds {} entries at most",
                            sip_xdp_common::MAX_LIST_ENTRIES
                        )
                    })?;
                }
                report.lines.push(format!(
                    "ban {net}: banned for {}",
                    humantime::format_duration(Duration::from_secs(duration.as_secs().max(1)))
                ));
            }
            Ok(())
        })
    }

    /// Lifts manual bans of `nets` and automatic bans of every tracked source inside them.
    pub fn ban_del(&self, nets: &[IpNet]) -> Result<EditReport> {
        self.edit(|state, maps, report| {
            let now_wall = now_wall_secs();
            let now_ns = monotonic_now_ns();
            let (sources, ipv6_mask) = match maps.as_ref() {
                Some(maps) => (
                    maps.sources()?,
                    maps.read_config()
                        .map(|c| c.ipv6_source_mask)
                        .unwrap_or([0xff; 16]),
                ),
                None => (Vec::new(), [0xff; 16]),
            };
            for &net in nets {
                let mut lifted = Vec::new();
                if state.remove_ban(net) {
                    lifted.push("manual ban".to_owned());
                }
                if let Some(maps) = maps.as_mut() {
                    match state.denylist_value(&net, now_wall) {
                        Some(value) => maps.deny(net, value)?,
                        None => {
                            if maps.undeny(net)? && !lifted.iter().any(|l| l == "manual ban") {
                                lifted.push("manual ban".to_owned());
                            }
                        }
                    }
                    for (key, source) in &sources {
                        if !source_in(net, key, &ipv6_mask) {
                            continue;
                        }
                        let was_banned = source.banned_until_ns > now_ns;
                        if maps.forget_source(key.addr)? && was_banned {
                            lifted.push(format!("automatic ban of {}", key_addr(key.addr)));
                        }
                    }
                }
                // Forget the saved escalation too, or a restore would bring the ban back.
                let before = state.auto_bans.len();
                state.auto_bans.retain(|b| !net.contains(&b.addr));
                if state.auto_bans.len() != before && lifted.is_empty() {
                    lifted.push("saved automatic ban".to_owned());
                }
                if lifted.is_empty() {
                    report.missing.push(net);
                } else {
                    report
                        .lines
                        .push(format!("ban {net}: lifted {}", lifted.join(", ")));
                }
            }
            Ok(())
        })
    }

    pub fn ban_entries(&self) -> Result<Vec<BanEntry>> {
        let state = StateFile::load(&self.state_dir)?;
        let clocks = Clocks::now();
        let now_wall = clocks.wall_ns / 1_000_000_000;
        let mut entries: Vec<BanEntry> = state
            .bans
            .iter()
            .filter(|b| b.expires_at > now_wall)
            .map(|b| BanEntry {
                source: b.net.to_string(),
                kind: "manual",
                class: None,
                remaining_s: b.expires_at - now_wall,
                expires_at: b.expires_at,
                strikes: None,
                reason: b.reason.clone(),
            })
            .collect();
        if let Some(maps) = self.live_maps()? {
            let monitor = maps
                .read_config()
                .map(|c| c.has_flag(sip_xdp_common::flags::MONITOR))
                .unwrap_or(false);
            for (key, source) in maps.sources()? {
                if source.banned_until_ns <= clocks.mono_ns {
                    continue;
                }
                let would = source.ban_flags & ban_flags::MONITOR_ONLY != 0;
                if would && !monitor {
                    continue;
                }
                let expires_at = clocks.mono_to_wall_secs(source.banned_until_ns);
                entries.push(BanEntry {
                    source: key_addr(key.addr).to_string(),
                    kind: if would { "would" } else { "rate" },
                    class: LimitClass::from_index(source.ban_class as usize).map(|c| c.name()),
                    remaining_s: (source.banned_until_ns - clocks.mono_ns).div_ceil(1_000_000_000),
                    expires_at,
                    strikes: Some(source.strikes),
                    reason: None,
                });
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.remaining_s));
        Ok(entries)
    }

    /// Brings maps and state file into agreement (union: nothing is dropped from either) and
    /// removes manual bans that have run out. The daemon runs this periodically.
    pub fn reconcile(&self, maps: &mut SipMaps) -> Result<()> {
        let _lock = state::lock(&self.state_dir)?;
        let mut state = StateFile::load(&self.state_dir)?;
        let before = state.clone();
        reconcile_locked(&mut state, maps)?;
        if state != before {
            state.save(&self.state_dir)?;
        }
        Ok(())
    }

    /// Saves the automatic bans (and their strike history) so a reboot or a purge keeps
    /// escalation going. Returns how many were saved.
    pub fn save_auto_bans(&self, maps: &SipMaps) -> Result<usize> {
        let records = auto_ban_records(maps)?;
        let count = records.len();
        let _lock = state::lock(&self.state_dir)?;
        let mut state = StateFile::load(&self.state_dir)?;
        if state.auto_bans != records {
            state.set_auto_bans(records);
            state.save(&self.state_dir)?;
        }
        Ok(count)
    }
}

/// Forgets sources that have been quiet for longer than the strike decay and are not banned:
/// their buckets are full again and their strikes would reset anyway, so the entry holds nothing
/// but a slot in the LRU table. Returns how many were removed.
pub fn gc_sources(maps: &mut SipMaps) -> Result<usize> {
    let sources = maps.sources()?;
    Ok(forget_quiet_sources(maps, sources)?.0)
}

/// [`gc_sources`] over an already read table; also returns the entries it kept, so the caller
/// can count them without walking the LRU table a second time.
pub fn forget_quiet_sources(
    maps: &mut SipMaps,
    sources: Vec<(SourceKey, SourceState)>,
) -> Result<(usize, Vec<(SourceKey, SourceState)>)> {
    let now_ns = monotonic_now_ns();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    // Never below 10 s, so a zero decay does not forget sources between two packets.
    let idle_ns = config.strike_decay_ns.max(10_000_000_000);
    let mut removed = 0;
    let mut kept = Vec::with_capacity(sources.len());
    for (key, source) in sources {
        // window_start_ns moves with every packet at least once a second: last activity.
        let quiet = now_ns.saturating_sub(source.window_start_ns) > idle_ns;
        let ban_over = source.banned_until_ns.saturating_add(idle_ns) < now_ns;
        if quiet && ban_over && maps.forget_source(key.addr)? {
            removed += 1;
        } else {
            kept.push((key, source));
        }
    }
    Ok((removed, kept))
}

fn check_interface(iface: &str) -> Result<()> {
    let name = std::ffi::CString::new(iface)
        .map_err(|_| loader::AttachError::NoSuchInterface(iface.to_owned()))?;
    // SAFETY: valid NUL-terminated string.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
        return Err(loader::AttachError::NoSuchInterface(iface.to_owned()).into());
    }
    Ok(())
}

/// Does `net` cover the tracked source `key`? IPv6 sources are tracked per prefix (the config's
/// mask), so one address of that prefix names the whole tracked source.
fn source_in(net: IpNet, key: &SourceKey, ipv6_mask: &[u8; 16]) -> bool {
    let tracked = key_addr(key.addr);
    if net.contains(&tracked) {
        return true;
    }
    match net {
        IpNet::V6(v6) if v6.prefix_len() == 128 && tracked.is_ipv6() => {
            let mut masked = v6.addr().octets();
            for (byte, mask) in masked.iter_mut().zip(ipv6_mask) {
                *byte &= mask;
            }
            masked == key.addr
        }
        _ => false,
    }
}

/// Forgets every tracked source whose key lies in one of `nets` (compared in the kernel's
/// 16-byte form), with its bucket, ban and strikes. Called after `nets` are allowlisted: the
/// program drops a banned source before it looks at the allowlist, which is sound only while no
/// allowlisted address has a tracked entry (it never gets a new one once allowlisted). Masked
/// IPv6 keys do not need this, as the program checks the allowlist first for them; they are
/// forgotten when the net covers the key. Returns how many were forgotten.
pub fn forget_sources_in(maps: &mut SipMaps, nets: &[IpNet]) -> Result<usize> {
    if nets.is_empty() {
        return Ok(0);
    }
    let prefixes: Vec<(u128, u128)> = nets
        .iter()
        .map(|&net| {
            let key = cidr_key(net);
            let mask = u128::MAX
                .checked_shl(128 - key.prefix_len().min(128))
                .unwrap_or(0);
            (u128::from_be_bytes(key.data()) & mask, mask)
        })
        .collect();
    let mut forgotten = 0;
    for (key, _) in maps.sources()? {
        let addr = u128::from_be_bytes(key.addr);
        if prefixes.iter().any(|&(net, mask)| addr & mask == net) && maps.forget_source(key.addr)? {
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

fn reconcile_locked(state: &mut StateFile, maps: &mut SipMaps) -> Result<()> {
    let clocks = Clocks::now();
    let now_wall = clocks.wall_ns / 1_000_000_000;
    state.prune_expired_bans(now_wall);

    let live_allow = maps.allowlist()?;
    for net in &live_allow {
        if !state.allow.iter().any(|r| r.net == *net) {
            state.add_allow(*net, Some("found in the pinned allowlist".to_owned()));
        }
    }
    let mut restored_allow = Vec::new();
    for record in state.allow.clone() {
        if !live_allow.contains(&record.net) {
            maps.allow(record.net)
                .with_context(|| format!("restoring allowlist entry {}", record.net))?;
            restored_allow.push(record.net);
        }
    }
    forget_sources_in(maps, &restored_allow)?;

    for (net, entry) in maps.denylist()? {
        let saved =
            state.deny.iter().any(|r| r.net == net) || state.bans.iter().any(|b| b.net == net);
        if entry.expires_at_ns == 0 {
            if !saved {
                state.add_deny(net, Some("found in the pinned denylist".to_owned()));
            }
        } else if entry.expires_at_ns <= clocks.mono_ns {
            // The kernel already ignores it; keep the table for live entries.
            if state.denylist_value(&net, now_wall).is_none() {
                maps.undeny(net)?;
            }
        } else if !saved {
            state.add_ban(
                net,
                clocks.mono_to_wall_secs(entry.expires_at_ns),
                Some("found in the pinned denylist".to_owned()),
            );
        }
    }
    for (net, value) in state.denylist_entries(now_wall) {
        maps.deny(net, value)
            .with_context(|| format!("restoring denylist entry {net}"))?;
    }
    Ok(())
}

fn auto_ban_records(maps: &SipMaps) -> Result<Vec<AutoBanRecord>> {
    let clocks = Clocks::now();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut records = Vec::new();
    for (key, source) in maps.sources()? {
        if source.banned_until_ns == 0 {
            continue;
        }
        // Strike history matters until it decays; a ban that ended longer ago is forgotten.
        let relevant_until = source
            .banned_until_ns
            .saturating_add(config.strike_decay_ns);
        if relevant_until <= clocks.mono_ns {
            continue;
        }
        records.push(AutoBanRecord {
            addr: key_addr(key.addr),
            banned_until: clocks.mono_to_wall_secs(source.banned_until_ns),
            ban_duration_ns: source.ban_duration_ns,
            strikes: source.strikes,
            limit_class: source.ban_class,
            monitor_only: source.ban_flags & ban_flags::MONITOR_ONLY != 0,
        });
    }
    records.sort_by_key(|r| r.addr);
    Ok(records)
}

/// Puts saved automatic bans back into a freshly created SOURCES table (after a reboot or a
/// purge), with their remaining time and strike count.
fn restore_auto_bans(state: &StateFile, maps: &mut SipMaps) -> Result<usize> {
    let clocks = Clocks::now();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut restored = 0;
    for record in &state.auto_bans {
        let banned_until_ns = clocks.wall_to_mono_ns(record.banned_until);
        if banned_until_ns.saturating_add(config.strike_decay_ns) <= clocks.mono_ns {
            continue;
        }
        let key = match record.addr {
            IpAddr::V4(v4) => sip_xdp_common::ipv4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        };
        let mut flags = 0;
        if record.monitor_only {
            flags |= ban_flags::MONITOR_ONLY;
        }
        if banned_until_ns > clocks.mono_ns {
            // As the kernel would have it: the ban's end is still to be reported.
            flags |= ban_flags::EXPIRY_PENDING;
        }
        let source = SourceState {
            banned_until_ns,
            ban_duration_ns: record.ban_duration_ns,
            window_start_ns: clocks.mono_ns,
            strikes: record.strikes,
            ban_class: record.limit_class,
            ban_flags: flags,
            ..SourceState::default()
        };
        maps.set_source(key, &source)?;
        restored += 1;
    }
    Ok(restored)
}
