//! The allow, deny and protected lists: edits and listings.
use std::collections::HashSet;

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use sip_xdp_common::SourceKey;

use super::{Control, EditReport, ListEntry, ListKind};
use crate::{
    maps::{SipMaps, cidr_key},
    state::StateFile,
    time::now_wall_secs,
};

impl Control {
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
