//! Lists, bans and attachment, kept in step between the pinned maps (the live copy the kernel
//! reads) and the state file (the durable copy that survives reboots and purges).
//!
//! Every change takes the state lock for its whole read-modify-write, so the CLI and the daemon
//! never lose each other's edits. Live maps are changed first, so a full table or a missing
//! privilege fails before anything is saved that the kernel does not have; when the save then
//! fails (a full disk), the kernel's tables are put back as they were, so the state file and the
//! kernel never disagree about a list entry or a ban (nor, so, about its origin).
mod attach;
mod bans;
mod lists;
mod origins;
mod prefixes;
mod quotas;
mod reconcile;
mod signatures;
mod snapshot;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use anyhow::{Result, bail};
use ipnet::IpNet;
use serde::Serialize;

pub use lists::forget_sources_in;
pub use quotas::{CROWDSEC_QUOTA, FAIL2BAN_QUOTA, Quotas};
pub use reconcile::{forget_quiet_sources, gc_bans, gc_sources};
pub use signatures::{SignatureList, SignatureReport, SignatureView, apply_signatures};

use crate::{
    loader::{self, AttachOutcome, PinDir},
    maps::SipMaps,
    state::{self, BanOrigin, StateFile},
};
use quotas::DENY_TABLE;
use snapshot::ListSnapshot;

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
    /// limit), "auth" (failed authentication), "prefix" (a whole prefix's bucket ran dry; the
    /// source is then a CIDR) or "would" (monitor mode, not enforced).
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
    /// The kernel's bans of prefixes inside the net (`[prefixes]`), with their strikes.
    pub prefix: bool,
    /// Ban-list origins.
    pub origins: Vec<BanOrigin>,
}

impl Lift {
    /// What an operator's plain `ban del` lifts: the bans this node made itself.
    pub fn local() -> Self {
        Self {
            rate: true,
            prefix: true,
            origins: vec![BanOrigin::Manual],
        }
    }

    pub fn all() -> Self {
        Self {
            rate: true,
            prefix: true,
            origins: BanOrigin::ALL.to_vec(),
        }
    }

    pub fn only(origin: BanOrigin) -> Self {
        Self {
            rate: false,
            prefix: false,
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
            attached.iter().any(|a| {
                a.hook == loader::Hook::XdpIngress
                    && loader::attachment_ids(a).is_some()
                    && check_interface(&a.iface).is_ok()
            })
        })
    }

    fn live_maps(&self) -> Result<Option<SipMaps>> {
        if !self.pins.has_maps() {
            return Ok(None);
        }
        Ok(Some(SipMaps::open_pinned(&self.pins)?))
    }
}

fn check_interface(iface: &str) -> Result<()> {
    loader::if_index(iface)?;
    Ok(())
}

/// A saved automatic ban (of a source or a prefix) as its durable table holds it, on the
/// monotonic clock: its end still to be reported while it lies ahead, as the kernel would have
/// it.
pub(crate) fn restored_ban(
    banned_until_ns: u64,
    ban_duration_ns: u64,
    strikes: u32,
    ban_class: u8,
    monitor_only: bool,
    now_mono_ns: u64,
) -> sip_xdp_common::DurableBan {
    let mut flags = 0;
    if monitor_only {
        flags |= sip_xdp_common::ban_flags::MONITOR_ONLY;
    }
    if banned_until_ns > now_mono_ns {
        flags |= sip_xdp_common::ban_flags::EXPIRY_PENDING;
    }
    sip_xdp_common::DurableBan {
        banned_until_ns,
        ban_duration_ns,
        strikes,
        ban_class,
        ban_flags: flags,
        _pad: [0; 2],
    }
}
