//! Lists, bans and attachment, kept in step between the pinned maps (the live copy the kernel
//! reads) and the state file (the durable copy that survives reboots and purges).
//!
//! Every change takes the state lock for its whole read-modify-write, so the CLI and the daemon
//! never lose each other's edits. Live maps are changed first, so a full table or a missing
//! privilege fails before anything is saved that the kernel does not have; when the save then
//! fails (a full disk), the kernel's tables are put back as they were, so the state file and the
//! kernel never disagree about a list entry or a ban (nor, so, about its origin).
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use serde::Serialize;
use sip_xdp_common::{BanRecord, Config, LimitClass, SourceKey, SourceState, ban_flags};

use crate::{
    config::Settings,
    loader::{self, AttachMode, AttachOutcome, LoadOptions, PinDir},
    maps::{SipMaps, cidr_key, key_addr},
    state::{self, AutoBanRecord, BanOrigin, Clocks, SavedClock, StateFile},
    time::{NS_PER_SEC, human_duration, monotonic_now_ns, now_wall_secs},
};

const DENY_TABLE: usize = sip_xdp_common::MAX_LIST_ENTRIES as usize;
/// Most nets origin `crowdsec` bans at once: half the kernel's deny table, so a feed can never
/// take the room manual and fail2ban bans need (`crowdsec.max_bans` may lower it).
pub const CROWDSEC_QUOTA: usize = DENY_TABLE / 2;
/// Most nets origin `fail2ban` bans at once: a quarter of the deny table. The last quarter is
/// only ever used by manual bans and `sip-xdp deny`.
pub const FAIL2BAN_QUOTA: usize = DENY_TABLE / 4;

/// How many nets each feed origin may ban at once (manual bans have no quota of their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub crowdsec: usize,
    pub fail2ban: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            crowdsec: CROWDSEC_QUOTA,
            fail2ban: FAIL2BAN_QUOTA,
        }
    }
}

impl Quotas {
    pub fn of(&self, origin: BanOrigin) -> Option<usize> {
        match origin {
            BanOrigin::Manual => None,
            BanOrigin::Fail2ban => Some(self.fail2ban),
            BanOrigin::Crowdsec => Some(self.crowdsec),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Allow,
    Deny,
    /// Rate-limited, never banned.
    Protect,
}

impl ListKind {
    pub const fn command(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
            ListKind::Protect => "protect",
        }
    }
}

/// What a list or ban edit did, entry by entry.
#[derive(Debug, Default)]
pub struct EditReport {
    pub lines: Vec<String>,
    pub missing: Vec<IpNet>,
    /// False when no maps are pinned: the change is saved and applies at the next attach.
    pub live: bool,
    /// True when the change is in force now: the maps are pinned and the program is attached to
    /// at least one interface present in this network namespace.
    pub enforced: bool,
}

impl EditReport {
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
    /// Who imposed it: "manual", "fail2ban", "crowdsec" (the ban list), "rate" (the kernel's rate
    /// limit) or "would" (monitor mode, not enforced).
    pub origin: &'static str,
    /// The limit class whose bucket ran dry (automatic bans).
    pub class: Option<&'static str>,
    pub remaining_s: u64,
    /// Wall-clock end, unix seconds.
    pub expires_at: u64,
    pub strikes: Option<u32>,
    pub reason: Option<String>,
}

/// Which bans `ban del` lifts. Each origin is lifted only when named, so fail2ban's unban or a
/// deleted CrowdSec decision never lifts a ban someone else imposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lift {
    /// The rate limiter's own bans (and their strike history) of sources inside the net.
    pub rate: bool,
    /// Ban-list origins.
    pub origins: Vec<BanOrigin>,
}

impl Lift {
    /// What an operator's plain `ban del` lifts: the bans this node made itself.
    pub fn local() -> Self {
        Self {
            rate: true,
            origins: vec![BanOrigin::Manual],
        }
    }

    pub fn all() -> Self {
        Self {
            rate: true,
            origins: BanOrigin::ALL.to_vec(),
        }
    }

    pub fn only(origin: BanOrigin) -> Self {
        Self {
            rate: false,
            origins: vec![origin],
        }
    }
}

/// One origin's wanted ban list, as a feed (the CrowdSec bouncer) sees it.
#[derive(Clone, Debug, Default)]
pub struct OriginUpdate {
    /// The feed's whole set: every ban of this origin not in `upsert` is lifted.
    pub replace_all: bool,
    /// (net, expires_at unix seconds, reason) to add or renew.
    pub upsert: Vec<(IpNet, u64, Option<String>)>,
    /// Nets whose ban of this origin is lifted.
    pub remove: Vec<IpNet>,
}

/// What [`Control::attach`] did.
#[derive(Debug)]
pub struct AttachReport {
    pub outcomes: Vec<(String, AttachOutcome)>,
    /// Said loudly by the caller: what could not be restored (a bad state file, moved aside),
    /// and bans shortened because the wall clock is behind.
    pub warnings: Vec<String>,
}

pub struct Control {
    pins: PinDir,
    state_dir: PathBuf,
    quotas: Quotas,
}

impl Control {
    pub fn new(pins: PinDir, state_dir: PathBuf) -> Self {
        Self {
            pins,
            state_dir,
            quotas: Quotas::default(),
        }
    }

    /// The same, with other per-origin quotas (each at most its default).
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = Quotas {
            crowdsec: quotas.crowdsec.min(CROWDSEC_QUOTA),
            fail2ban: quotas.fail2ban.min(FAIL2BAN_QUOTA),
        };
        self
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
            enforced: maps.is_some() && self.attached_here(),
            ..EditReport::default()
        };
        // What the kernel's lists hold before the edit, to put back if it cannot be saved.
        let before = maps.as_ref().map(ListSnapshot::take).transpose()?;
        let result = edit(&mut state, &mut maps, &mut report)
            .and_then(|()| state.save(&self.state_dir).map_err(Into::into));
        if let Err(e) = result {
            if let (Some(maps), Some(before)) = (maps.as_mut(), before) {
                if let Err(undo) = before.restore(maps) {
                    bail!(
                        "{e:#}; and the kernel's tables could not be put back as they were \
                         ({undo:#}): run `sip-xdp attach` again to bring them in line with the \
                         state file"
                    );
                }
                bail!("{e:#}; the kernel's tables were left as they were");
            }
            return Err(e);
        }
        Ok(report)
    }

    /// Whether the program is attached (through this pin directory) to an interface that is
    /// present in this network namespace, so a list or ban change is in force now.
    pub fn attached_here(&self) -> bool {
        self.pins.attachments().is_ok_and(|attached| {
            attached
                .iter()
                .any(|a| loader::attachment_ids(a).is_some() && check_interface(&a.iface).is_ok())
        })
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
    ) -> Result<AttachReport> {
        for iface in ifaces {
            check_interface(iface)?;
        }
        // Before anything else is touched: a pin directory that would vanish with this command
        // refuses here.
        self.pins.ensure()?;
        // A bad state file must not leave the host unfiltered: attach with what can be trusted
        // (the program, the config, the previous version of the file, the pinned maps) and say
        // what was not restored.
        let loaded = state::lock(&self.state_dir).and_then(|lock| {
            let (state, recovery) = StateFile::load_or_recover(&self.state_dir)?;
            Ok((lock, state, recovery))
        });
        let (_lock, mut state, recovery) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                // Leave no empty pin directory behind (a no-op when anything is in it).
                self.pins.remove_if_empty();
                return Err(e.into());
            }
        };
        let recovered = !recovery.warnings.is_empty();
        let mut warnings = recovery.warnings;
        let options = LoadOptions {
            max_sources: settings.datapath.max_sources,
        };
        let mut load = loader::load_pinned(&options, &self.pins)?;
        let prepared = (|| -> Result<()> {
            let mut maps = SipMaps::take_from(&mut load.ebpf)?;
            if maps.sources_capacity() != options.max_sources {
                warnings.push(format!(
                    "datapath.max_sources is {} but the pinned SOURCES table holds {}; the new \
                     size applies after `sip-xdp detach --all --purge`",
                    options.max_sources,
                    maps.sources_capacity()
                ));
            }
            {
                let _config_lock = self.pins.lock_config()?;
                maps.write_config(&settings.kernel_config())?;
            }
            let shortened = reconcile_locked(&mut state, &mut maps)?;
            if shortened > 0 {
                warnings.push(format!(
                    "{shortened} saved bans would have outlasted their duration (the wall clock is \
                     behind the time of the last save, or was set back): shortened to what they \
                     can have left"
                ));
            }
            for (key, record) in &load.migration.bans {
                maps.set_ban(key.addr, record)?;
            }
            if !load.adopted_maps || load.created_bans {
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
        if recovered && load.adopted_maps {
            warnings.push(
                "the lists and bans still in the pinned maps were kept and saved to the new \
                 state file"
                    .to_owned(),
            );
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
        Ok(AttachReport {
            outcomes: done,
            warnings,
        })
    }

    pub fn list_add(
        &self,
        kind: ListKind,
        nets: &[IpNet],
        comment: Option<String>,
    ) -> Result<EditReport> {
        self.edit(|state, maps, report| {
            for &net in nets {
                crate::maps::check_listable(net)?;
                let added = match kind {
                    ListKind::Allow => state.add_allow(net, comment.clone()),
                    ListKind::Deny => state.add_deny(net, comment.clone()),
                    ListKind::Protect => state.add_protected(net, comment.clone()),
                };
                if let Some(maps) = maps.as_mut() {
                    match kind {
                        ListKind::Allow => maps.allow(net),
                        ListKind::Deny => maps.deny(net, 0),
                        ListKind::Protect => maps.protect(net),
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
            // Allowlisted sources must have no entry (the program reads a ban before the
            // allowlist); protected ones must lose the bans they had before.
            if matches!(kind, ListKind::Allow | ListKind::Protect)
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
                    ListKind::Protect => state.remove_protected(net),
                };
                let in_map = match maps.as_mut() {
                    None => false,
                    Some(maps) => match kind {
                        ListKind::Allow => maps.unallow(net)?,
                        ListKind::Protect => maps.unprotect(net)?,
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
                ListKind::Protect => maps.protected()?,
                ListKind::Deny => maps
                    .denylist()?
                    .into_iter()
                    .filter(|(_, entry)| entry.expires_at_ns == 0)
                    .map(|(net, _)| net)
                    .collect(),
            },
        };
        let saved: Vec<(IpNet, u64, Option<String>)> = match kind {
            ListKind::Protect => state
                .protected
                .iter()
                .map(|r| (r.net, r.added_at, r.comment.clone()))
                .collect(),
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

    /// Bans `nets` on behalf of `origin` for `duration`.
    pub fn ban_add(
        &self,
        nets: &[IpNet],
        origin: BanOrigin,
        duration: Duration,
        reason: Option<String>,
    ) -> Result<EditReport> {
        if duration.is_zero() {
            bail!("a ban must last longer than 0s (e.g. --for 30m)");
        }
        let secs = duration.as_secs().max(1);
        let quotas = self.quotas;
        self.edit(|state, maps, report| {
            let now_wall = now_wall_secs();
            // Before any change: a refused ban leaves kernel and state file as they were.
            check_quota(state, origin, nets, now_wall, &quotas)?;
            let expires_at = now_wall.saturating_add(secs);
            for &net in nets {
                state.add_ban(net, origin, expires_at, reason.clone());
                apply_denylist(state, maps.as_mut(), net, now_wall)?;
                let by = match origin {
                    BanOrigin::Manual => String::new(),
                    other => format!(" ({other})"),
                };
                report.lines.push(format!(
                    "ban {net}: banned for {}{by}",
                    human_duration(Duration::from_secs(secs))
                ));
            }
            Ok(())
        })
    }

    /// Lifts the bans `lift` names of `nets`: ban-list bans of exactly these nets, and with
    /// `lift.rate` the automatic bans of every tracked source inside them. Bans of other origins
    /// stay, and the report says which.
    pub fn ban_del(&self, nets: &[IpNet], lift: &Lift) -> Result<EditReport> {
        self.edit(|state, maps, report| {
            let now_wall = now_wall_secs();
            let now_ns = monotonic_now_ns();
            let (sources, ipv6_mask) = match maps.as_ref() {
                Some(maps) => (
                    rate_bans(maps)?,
                    maps.read_config()
                        .map(|c| c.ipv6_source_mask)
                        .unwrap_or([0xff; 16]),
                ),
                None => (Vec::new(), [0xff; 16]),
            };
            let kernel_bans: HashSet<IpNet> = match maps.as_ref() {
                Some(maps) => maps
                    .denylist()?
                    .into_iter()
                    .filter(|(_, entry)| entry.expires_at_ns != 0)
                    .map(|(net, _)| net)
                    .collect(),
                None => HashSet::new(),
            };
            for &net in nets {
                let mut lifted = Vec::new();
                for &origin in &lift.origins {
                    if state.remove_ban(net, origin) {
                        lifted.push(format!("{origin} ban"));
                    }
                }
                if let Some(maps) = maps.as_mut() {
                    let in_kernel = kernel_bans.contains(&net);
                    let wanted = state.denylist_value(&net, now_wall);
                    apply_denylist(state, Some(&mut *maps), net, now_wall)?;
                    // A ban only the kernel knew of (the state file was lost) counts as manual.
                    if in_kernel
                        && wanted.is_none()
                        && lifted.is_empty()
                        && lift.origins.contains(&BanOrigin::Manual)
                    {
                        lifted.push("manual ban".to_owned());
                    }
                }
                let mut still_rate = false;
                for (key, source) in &sources {
                    if !source_in(net, key, &ipv6_mask) || source.banned_until_ns <= now_ns {
                        continue;
                    }
                    if source.ban_flags & ban_flags::MONITOR_ONLY != 0 {
                        continue;
                    }
                    if !lift.rate {
                        still_rate = true;
                    }
                }
                if lift.rate {
                    if let Some(maps) = maps.as_mut() {
                        for (key, source) in &sources {
                            if !source_in(net, key, &ipv6_mask) {
                                continue;
                            }
                            let was_banned = source.banned_until_ns > now_ns;
                            if maps.forget_source(key.addr)? && was_banned {
                                lifted.push(format!("rate ban of {}", key_addr(key.addr)));
                            }
                        }
                    }
                    // Forget the saved escalation too, or a restore would bring the ban back.
                    let before = state.auto_bans.len();
                    state.auto_bans.retain(|b| !net.contains(&b.addr));
                    if state.auto_bans.len() != before && lifted.is_empty() {
                        lifted.push("saved rate ban".to_owned());
                    }
                }
                let mut remaining: Vec<String> = state
                    .bans_of(net, now_wall)
                    .iter()
                    .map(|b| {
                        format!(
                            "{} for {} (lift with --origin {})",
                            b.origin,
                            human_duration(Duration::from_secs(b.expires_at - now_wall)),
                            b.origin
                        )
                    })
                    .collect();
                if still_rate {
                    remaining.push("the rate limit (lift with --origin rate)".to_owned());
                }
                let still = if remaining.is_empty() {
                    String::new()
                } else {
                    format!("; still banned by {}", remaining.join(", "))
                };
                if lifted.is_empty() {
                    report.missing.push(net);
                    if !remaining.is_empty() {
                        report
                            .lines
                            .push(format!("ban {net}: nothing of that origin to lift{still}"));
                    }
                } else {
                    report
                        .lines
                        .push(format!("ban {net}: lifted {}{still}", lifted.join(", ")));
                }
            }
            Ok(())
        })
    }

    /// Applies one feed's changes to its origin's bans in one locked edit; returns how many bans
    /// were added or renewed, how many lifted, and how many new ones were left out because the
    /// origin's quota was full. Bans of other origins are untouched.
    pub fn update_origin(
        &self,
        origin: BanOrigin,
        update: &OriginUpdate,
    ) -> Result<(usize, usize, usize)> {
        let mut counts = (0, 0, 0);
        let quota = self.quotas.of(origin).unwrap_or(DENY_TABLE);
        self.edit(|state, maps, _report| {
            let now_wall = now_wall_secs();
            let touched;
            (counts, touched) = apply_origin_update(state, origin, update, now_wall, quota);
            let Some(maps) = maps.as_mut() else {
                return Ok(());
            };
            // One pass over the state for all touched nets: a feed of tens of thousands of
            // decisions must not cost a pass per net.
            let wanted: HashMap<IpNet, u64> =
                state.denylist_entries(now_wall).into_iter().collect();
            for net in touched {
                write_denylist_entry(maps, net, wanted.get(&net).copied()).with_context(|| {
                    format!("applying the {origin} ban of {net} to the kernel's deny table")
                })?;
            }
            Ok(())
        })?;
        Ok(counts)
    }

    pub fn ban_entries(&self) -> Result<Vec<BanEntry>> {
        let state = StateFile::load(&self.state_dir)?;
        let clocks = Clocks::now();
        let now_wall = clocks.wall_ns / NS_PER_SEC;
        let mut entries: Vec<BanEntry> = state
            .bans
            .iter()
            .filter(|b| b.expires_at > now_wall)
            .map(|b| BanEntry {
                source: b.net.to_string(),
                origin: b.origin.name(),
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
            for (key, source) in rate_bans(&maps)? {
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
                    origin: if would { "would" } else { "rate" },
                    class: LimitClass::from_index(source.ban_class as usize).map(|c| c.name()),
                    remaining_s: (source.banned_until_ns - clocks.mono_ns).div_ceil(NS_PER_SEC),
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
        let shortened = reconcile_locked(&mut state, maps)?;
        if shortened > 0 {
            tracing::warn!(
                shortened,
                "the wall clock was set back: shortened saved bans to what they can have left"
            );
        }
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
    loader::if_index(iface)?;
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

/// Refuses a ban of `nets` by `origin` that would take the origin past its quota (renewals of
/// nets it already bans do not count), naming the quota and the fix.
fn check_quota(
    state: &StateFile,
    origin: BanOrigin,
    nets: &[IpNet],
    now_wall: u64,
    quotas: &Quotas,
) -> Result<()> {
    let Some(quota) = quotas.of(origin) else {
        return Ok(());
    };
    let held: HashSet<IpNet> = state
        .bans
        .iter()
        .filter(|b| b.origin == origin && b.expires_at > now_wall)
        .map(|b| b.net)
        .collect();
    let new: HashSet<IpNet> = nets
        .iter()
        .map(|n| n.trunc())
        .filter(|n| !held.contains(n))
        .collect();
    if held.len() + new.len() > quota {
        let fix = match origin {
            BanOrigin::Crowdsec => {
                "lower the feed (crowdsec.origins) or lift some with \
                                    `sip-xdp ban del --origin crowdsec NET`"
            }
            _ => {
                "lift some with `sip-xdp ban del --origin fail2ban NET`, or shorten fail2ban's \
                  bantime; manual bans (`sip-xdp ban add` without --origin) still have room"
            }
        };
        bail!(
            "cannot ban {} for {origin}: {origin} already bans {} nets and its quota is {quota} \
             of the kernel's {DENY_TABLE} deny entries (kept so one origin cannot starve the \
             others); {fix}",
            nets.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            held.len()
        );
    }
    Ok(())
}

/// Applies a feed's update to `origin`'s bans in the state file in one pass; returns (added or
/// renewed, lifted, left out over `quota`) and the nets whose kernel entry may have changed.
/// New nets past `quota` live bans of the origin are left out; renewals always apply.
fn apply_origin_update(
    state: &mut StateFile,
    origin: BanOrigin,
    update: &OriginUpdate,
    now_wall: u64,
    quota: usize,
) -> ((usize, usize, usize), Vec<IpNet>) {
    let mut counts = (0, 0, 0);
    let mut mine: HashMap<IpNet, state::ListBan> = HashMap::new();
    let mut others = Vec::with_capacity(state.bans.len());
    for ban in std::mem::take(&mut state.bans) {
        if ban.origin == origin {
            mine.insert(ban.net, ban);
        } else {
            others.push(ban);
        }
    }
    let mut touched: HashSet<IpNet> = HashSet::new();
    if update.replace_all {
        let keep: HashSet<IpNet> = update.upsert.iter().map(|(n, _, _)| n.trunc()).collect();
        mine.retain(|net, _| {
            let kept = keep.contains(net);
            if !kept {
                touched.insert(*net);
                counts.1 += 1;
            }
            kept
        });
    }
    for net in &update.remove {
        let net = net.trunc();
        if mine.remove(&net).is_some() {
            touched.insert(net);
            counts.1 += 1;
        }
    }
    let mut added = Vec::new();
    let mut live = mine.values().filter(|b| b.expires_at > now_wall).count();
    for (net, expires_at, reason) in &update.upsert {
        let net = net.trunc();
        if *expires_at <= now_wall {
            continue;
        }
        if mine.get(&net).is_some_and(|b| b.expires_at == *expires_at) {
            continue;
        }
        if mine.get(&net).is_none_or(|b| b.expires_at <= now_wall) {
            if live >= quota {
                counts.2 += 1;
                continue;
            }
            live += 1;
        }
        mine.insert(
            net,
            state::ListBan {
                net,
                origin,
                expires_at: *expires_at,
                added_at: now_wall,
                reason: reason.clone(),
            },
        );
        added.push(net);
        touched.insert(net);
        counts.0 += 1;
    }
    let mut mine: Vec<state::ListBan> = mine.into_values().collect();
    mine.sort_by_key(|b| b.net);
    others.extend(mine);
    state.bans = others;
    if !added.is_empty() {
        *state.bans_added.entry(origin).or_default() += added.len() as u64;
    }
    let mut touched: Vec<IpNet> = touched.into_iter().collect();
    touched.sort();
    (counts, touched)
}

/// Makes the kernel's DENYLIST entry of `net` what the state file says: the permanent deny, the
/// longest live ban of any origin, or nothing.
fn apply_denylist(
    state: &StateFile,
    maps: Option<&mut SipMaps>,
    net: IpNet,
    now_wall: u64,
) -> Result<()> {
    match maps {
        Some(maps) => write_denylist_entry(maps, net, state.denylist_value(&net, now_wall)),
        None => Ok(()),
    }
}

/// Sets the kernel's DENYLIST entry of `net` to `value` (monotonic expiry, 0 = never), or
/// removes it for `None`.
fn write_denylist_entry(maps: &mut SipMaps, net: IpNet, value: Option<u64>) -> Result<()> {
    match value {
        Some(value) => maps.deny(net, value).with_context(|| {
            format!(
                "cannot ban {net}: the deny table holds {} entries at most",
                sip_xdp_common::MAX_LIST_ENTRIES
            )
        }),
        None => maps.undeny(net).map(|_| ()).map_err(Into::into),
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
    let keys: HashSet<SourceKey> = maps
        .sources()?
        .into_iter()
        .map(|(key, _)| key)
        .chain(maps.bans()?.into_iter().map(|(key, _)| key))
        .collect();
    for key in keys {
        let addr = u128::from_be_bytes(key.addr);
        if prefixes.iter().any(|&(net, mask)| addr & mask == net) && maps.forget_source(key.addr)? {
            forgotten += 1;
        }
    }
    Ok(forgotten)
}

/// Returns how many saved bans were shortened because the wall clock is behind (see
/// [`StateFile::clamp_restored_bans`]).
fn reconcile_locked(state: &mut StateFile, maps: &mut SipMaps) -> Result<usize> {
    let shortened = state.clamp_restored_bans(&SavedClock::now());
    let clocks = Clocks::now();
    let now_wall = clocks.wall_ns / NS_PER_SEC;
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

    let live_protected = maps.protected()?;
    for net in &live_protected {
        if !state.protected.iter().any(|r| r.net == *net) {
            state.add_protected(*net, Some("found in the pinned protected list".to_owned()));
        }
    }
    let mut restored_protected = Vec::new();
    for record in state.protected.clone() {
        if !live_protected.contains(&record.net) {
            maps.protect(record.net)
                .with_context(|| format!("restoring protected entry {}", record.net))?;
            restored_protected.push(record.net);
        }
    }
    forget_sources_in(maps, &restored_protected)?;

    let saved_nets: HashSet<IpNet> = state
        .deny
        .iter()
        .map(|r| r.net)
        .chain(state.bans.iter().map(|b| b.net))
        .collect();
    let wanted: HashMap<IpNet, u64> = state.denylist_entries(now_wall).into_iter().collect();
    let live_deny = maps.denylist()?;
    let mut live_values: HashMap<IpNet, u64> = HashMap::with_capacity(live_deny.len());
    for (net, entry) in live_deny {
        live_values.insert(net, entry.expires_at_ns);
        let saved = saved_nets.contains(&net);
        if entry.expires_at_ns == 0 {
            if !saved {
                state.add_deny(net, Some("found in the pinned denylist".to_owned()));
            }
        } else if entry.expires_at_ns <= clocks.mono_ns {
            // The kernel already ignores it; keep the table for live entries.
            if !wanted.contains_key(&net) {
                maps.undeny(net)?;
            }
        } else if !saved {
            state.add_ban(
                net,
                BanOrigin::Manual,
                clocks.mono_to_wall_secs(entry.expires_at_ns),
                Some("found in the pinned denylist".to_owned()),
            );
        }
    }
    for (net, value) in state.denylist_entries(now_wall) {
        // Wall-to-monotonic conversions wobble by the clocks' drift; rewriting tens of thousands
        // of unchanged entries every reconcile would be wasted syscalls.
        let unchanged = live_values
            .get(&net)
            .is_some_and(|&live| (live == 0) == (value == 0) && live.abs_diff(value) < NS_PER_SEC);
        if unchanged {
            continue;
        }
        maps.deny(net, value)
            .with_context(|| format!("restoring denylist entry {net}"))?;
    }
    Ok(shortened)
}

/// The kernel's allow and deny tables as they were before an edit.
struct ListSnapshot {
    allow: HashSet<IpNet>,
    protected: HashSet<IpNet>,
    deny: HashMap<IpNet, u64>,
}

impl ListSnapshot {
    fn take(maps: &SipMaps) -> Result<Self> {
        Ok(Self {
            allow: maps.allowlist()?.into_iter().collect(),
            protected: maps.protected()?.into_iter().collect(),
            deny: maps
                .denylist()?
                .into_iter()
                .map(|(net, entry)| (net, entry.expires_at_ns))
                .collect(),
        })
    }

    /// Puts the tables back as they were (entries the edit added removed, removed ones added,
    /// changed ones reset).
    fn restore(&self, maps: &mut SipMaps) -> Result<()> {
        let now_allow: HashSet<IpNet> = maps.allowlist()?.into_iter().collect();
        for net in now_allow.difference(&self.allow) {
            maps.unallow(*net)?;
        }
        for net in self.allow.difference(&now_allow) {
            maps.allow(*net)?;
        }
        let now_protected: HashSet<IpNet> = maps.protected()?.into_iter().collect();
        for net in now_protected.difference(&self.protected) {
            maps.unprotect(*net)?;
        }
        for net in self.protected.difference(&now_protected) {
            maps.protect(*net)?;
        }
        let now_deny: HashMap<IpNet, u64> = maps
            .denylist()?
            .into_iter()
            .map(|(net, entry)| (net, entry.expires_at_ns))
            .collect();
        for (net, value) in &now_deny {
            match self.deny.get(net) {
                None => {
                    maps.undeny(*net)?;
                }
                Some(old) if old != value => maps.deny(*net, *old)?,
                Some(_) => {}
            }
        }
        for (net, value) in &self.deny {
            if !now_deny.contains_key(net) {
                maps.deny(*net, *value)?;
            }
        }
        Ok(())
    }
}

/// The kernel's rate bans and strike histories: the durable `BANS` table, where the program
/// writes every ban and extension, with the live `SOURCES` entry's view where it is newer (the
/// expiry report clears a flag there first).
fn rate_bans(maps: &SipMaps) -> Result<Vec<(SourceKey, BanRecord)>> {
    let mut bans: HashMap<SourceKey, BanRecord> = maps.bans()?.into_iter().collect();
    for (key, source) in maps.sources()? {
        if source.banned_until_ns == 0 {
            continue;
        }
        let live = BanRecord {
            banned_until_ns: source.banned_until_ns,
            ban_duration_ns: source.ban_duration_ns,
            strikes: source.strikes,
            ban_class: source.ban_class,
            ban_flags: source.ban_flags,
            _pad: [0; 2],
        };
        bans.entry(key)
            .and_modify(|saved| {
                if live.banned_until_ns >= saved.banned_until_ns {
                    *saved = live;
                }
            })
            .or_insert(live);
    }
    let mut bans: Vec<(SourceKey, BanRecord)> = bans.into_iter().collect();
    bans.sort_by_key(|(key, _)| key.addr);
    Ok(bans)
}

/// Removes ban records whose strikes have decayed (the ban ended more than the strike decay
/// ago): they would be ignored, and the table must keep room for new bans. Returns how many.
pub fn gc_bans(maps: &mut SipMaps) -> Result<usize> {
    let now_ns = monotonic_now_ns();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut removed = 0;
    for (key, record) in maps.bans()? {
        let decayed = now_ns > record.banned_until_ns
            && now_ns - record.banned_until_ns > config.strike_decay_ns;
        if decayed && maps.forget_ban(key.addr)? {
            removed += 1;
        }
    }
    Ok(removed)
}

fn auto_ban_records(maps: &SipMaps) -> Result<Vec<AutoBanRecord>> {
    let clocks = Clocks::now();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut records = Vec::new();
    for (key, source) in rate_bans(maps)? {
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
        let ban = BanRecord {
            banned_until_ns,
            ban_duration_ns: record.ban_duration_ns,
            strikes: record.strikes,
            ban_class: record.limit_class,
            ban_flags: flags,
            _pad: [0; 2],
        };
        // Into the durable table only: the program rebuilds the source's entry from it at the
        // source's next packet. An entry left in SOURCES would shadow it.
        maps.set_ban(key, &ban)?;
        maps.forget_tracked(key)?;
        restored += 1;
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn host(i: u32) -> IpNet {
        IpNet::from(IpAddr::V4(Ipv4Addr::from(0xC633_0000 + i)))
    }

    #[test]
    fn origin_update_replaces_only_its_own_origin() {
        let mut state = StateFile::default();
        let now = 1_000;
        state.add_ban(host(1), BanOrigin::Manual, 5_000, None);
        state.add_ban(host(1), BanOrigin::Crowdsec, 2_000, None);
        state.add_ban(host(2), BanOrigin::Crowdsec, 2_000, None);

        // A full pull that no longer has host 2 and renews host 1 and brings host 3.
        let full = OriginUpdate {
            replace_all: true,
            upsert: vec![(host(1), 3_000, None), (host(3), 4_000, None)],
            remove: Vec::new(),
        };
        let (counts, touched) =
            apply_origin_update(&mut state, BanOrigin::Crowdsec, &full, now, CROWDSEC_QUOTA);
        assert_eq!(counts, (2, 1, 0));
        assert_eq!(touched, vec![host(1), host(2), host(3)]);
        let crowdsec: Vec<(IpNet, u64)> = state
            .bans
            .iter()
            .filter(|b| b.origin == BanOrigin::Crowdsec)
            .map(|b| (b.net, b.expires_at))
            .collect();
        assert_eq!(crowdsec, vec![(host(1), 3_000), (host(3), 4_000)]);
        assert!(
            state
                .bans
                .iter()
                .any(|b| b.origin == BanOrigin::Manual && b.net == host(1)),
            "the manual ban of the same net stays"
        );

        // A delta: the same expiry again is no change; a removal; an already expired upsert.
        let delta = OriginUpdate {
            replace_all: false,
            upsert: vec![(host(3), 4_000, None), (host(4), now, None)],
            remove: vec![host(1)],
        };
        let (counts, touched) =
            apply_origin_update(&mut state, BanOrigin::Crowdsec, &delta, now, CROWDSEC_QUOTA);
        assert_eq!(counts, (0, 1, 0));
        assert_eq!(touched, vec![host(1)]);
        assert_eq!(state.bans_added[&BanOrigin::Crowdsec], 4);
        let entries: HashMap<IpNet, u64> = state.denylist_entries(now).into_iter().collect();
        assert!(entries.contains_key(&host(1)), "kept by its manual ban");
        assert!(!entries.contains_key(&host(2)));
        assert!(entries.contains_key(&host(3)));
        assert!(!entries.contains_key(&host(4)));
    }

    #[test]
    fn a_large_feed_applies_in_one_pass() {
        let mut state = StateFile::default();
        let feed = OriginUpdate {
            replace_all: true,
            upsert: (0..50_000).map(|i| (host(i), 10_000, None)).collect(),
            remove: Vec::new(),
        };
        let (counts, touched) =
            apply_origin_update(&mut state, BanOrigin::Crowdsec, &feed, 1, usize::MAX);
        assert_eq!(counts, (50_000, 0, 0));
        assert_eq!(touched.len(), 50_000);
        assert_eq!(state.denylist_entries(1).len(), 50_000);
        // Reloading such a file keeps every ban (normalise de-duplicates by set).
        let text = serde_json::to_string(&state).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(state::STATE_FILE), text).unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap().bans.len(), 50_000);
    }

    #[test]
    fn a_feed_stops_at_its_quota_and_renewals_still_apply() {
        let mut state = StateFile::default();
        let now = 1_000;
        state.add_ban(host(900), BanOrigin::Fail2ban, 5_000, None);
        let feed = OriginUpdate {
            replace_all: true,
            upsert: (0..10).map(|i| (host(i), 3_000, None)).collect(),
            remove: Vec::new(),
        };
        let (counts, touched) = apply_origin_update(&mut state, BanOrigin::Crowdsec, &feed, now, 4);
        assert_eq!(counts, (4, 0, 6), "4 applied, 6 left out over the quota");
        assert_eq!(touched.len(), 4);
        let crowdsec = |state: &StateFile| {
            state
                .bans
                .iter()
                .filter(|b| b.origin == BanOrigin::Crowdsec)
                .count()
        };
        assert_eq!(crowdsec(&state), 4);
        // Renewing what it holds still works at the cap; a new net does not.
        let delta = OriginUpdate {
            replace_all: false,
            upsert: vec![(host(0), 4_000, None), (host(20), 4_000, None)],
            remove: Vec::new(),
        };
        let (counts, _) = apply_origin_update(&mut state, BanOrigin::Crowdsec, &delta, now, 4);
        assert_eq!(counts, (1, 0, 1));
        assert_eq!(state.bans_of(host(0), now)[0].expires_at, 4_000);
        assert!(state.bans_of(host(20), now).is_empty());
        // A lifted net makes room again.
        let delta = OriginUpdate {
            replace_all: false,
            upsert: vec![(host(20), 4_000, None)],
            remove: vec![host(1)],
        };
        let (counts, _) = apply_origin_update(&mut state, BanOrigin::Crowdsec, &delta, now, 4);
        assert_eq!(counts, (1, 1, 0));
        assert_eq!(crowdsec(&state), 4);
        assert!(
            state
                .bans
                .iter()
                .any(|b| b.origin == BanOrigin::Fail2ban && b.net == host(900)),
            "other origins untouched"
        );
    }

    #[test]
    fn each_origin_has_its_own_quota_and_manual_bans_keep_room() {
        let quotas = Quotas {
            crowdsec: 3,
            fail2ban: 2,
        };
        let now = 1_000;
        let mut state = StateFile::default();
        for i in 0..3 {
            state.add_ban(host(i), BanOrigin::Crowdsec, 5_000, None);
        }
        // CrowdSec at its cap does not take fail2ban's room.
        check_quota(&state, BanOrigin::Fail2ban, &[host(10)], now, &quotas).unwrap();
        state.add_ban(host(10), BanOrigin::Fail2ban, 5_000, None);
        check_quota(&state, BanOrigin::Fail2ban, &[host(11)], now, &quotas).unwrap();
        state.add_ban(host(11), BanOrigin::Fail2ban, 5_000, None);
        let err = check_quota(&state, BanOrigin::Fail2ban, &[host(12)], now, &quotas)
            .unwrap_err()
            .to_string();
        for needle in [
            "cannot ban 198.51.0.12/32 for fail2ban",
            "fail2ban already bans 2 nets and its quota is 2",
            "sip-xdp ban del --origin fail2ban",
        ] {
            assert!(err.contains(needle), "{err}");
        }
        // A renewal at the cap is fine; so is a net another origin already holds.
        check_quota(&state, BanOrigin::Fail2ban, &[host(11)], now, &quotas).unwrap();
        let err = check_quota(&state, BanOrigin::Crowdsec, &[host(10)], now, &quotas)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("crowdsec already bans 3 nets and its quota is 3"),
            "{err}"
        );
        // Manual bans have no quota of their own.
        check_quota(
            &state,
            BanOrigin::Manual,
            &[host(12), host(13)],
            now,
            &quotas,
        )
        .unwrap();
        // Expired bans free their slot.
        check_quota(&state, BanOrigin::Fail2ban, &[host(12)], 5_000, &quotas).unwrap();
        // Two new nets when one slot is left: refused as a whole, before anything changes.
        state.bans.retain(|b| b.net != host(11));
        assert!(
            check_quota(
                &state,
                BanOrigin::Fail2ban,
                &[host(12), host(13)],
                now,
                &quotas
            )
            .is_err()
        );
        // The defaults leave a quarter of the table to manual bans and the denylist.
        let d = Quotas::default();
        assert_eq!(d.crowdsec + d.fail2ban, DENY_TABLE / 4 * 3);
    }

    #[test]
    fn control_quotas_are_capped_at_the_defaults() {
        let control = Control::new(PinDir::new("/nonexistent"), PathBuf::from("/nonexistent"))
            .with_quotas(Quotas {
                crowdsec: usize::MAX,
                fail2ban: 7,
            });
        assert_eq!(
            control.quotas,
            Quotas {
                crowdsec: CROWDSEC_QUOTA,
                fail2ban: 7
            }
        );
    }

    #[test]
    fn a_full_feed_leaves_fail2ban_and_manual_bans_working() {
        let dir = tempfile::tempdir().unwrap();
        let control = Control::new(
            PinDir::new(dir.path().join("no-pins")),
            dir.path().to_owned(),
        )
        .with_quotas(Quotas {
            crowdsec: 3,
            fail2ban: 2,
        });
        let until = now_wall_secs() + 3_600;
        let feed = OriginUpdate {
            replace_all: true,
            upsert: (0..5).map(|i| (host(i), until, None)).collect(),
            remove: Vec::new(),
        };
        assert_eq!(
            control.update_origin(BanOrigin::Crowdsec, &feed).unwrap(),
            (3, 0, 2),
            "the feed stops at its quota"
        );
        let hour = Duration::from_secs(3_600);
        for i in [10, 11] {
            control
                .ban_add(&[host(i)], BanOrigin::Fail2ban, hour, None)
                .expect("fail2ban has its own room while the feed is full");
        }
        let err = control
            .ban_add(&[host(12)], BanOrigin::Fail2ban, hour, None)
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("fail2ban already bans 2 nets and its quota is 2"),
            "{err}"
        );
        let state = StateFile::load(dir.path()).unwrap();
        assert!(
            state.bans_of(host(12), now_wall_secs()).is_empty(),
            "nothing saved"
        );
        control
            .ban_add(&[host(12)], BanOrigin::Manual, hour, None)
            .expect("manual bans still have room");
        let state = StateFile::load(dir.path()).unwrap();
        let count = |origin| state.bans.iter().filter(|b| b.origin == origin).count();
        assert_eq!(
            (
                count(BanOrigin::Crowdsec),
                count(BanOrigin::Fail2ban),
                count(BanOrigin::Manual)
            ),
            (3, 2, 1)
        );
    }
}
