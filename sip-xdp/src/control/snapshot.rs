//! The kernel's lists as they were before an edit, put back when the edit cannot be saved.
use std::collections::{HashMap, HashSet};

use anyhow::Result;
use ipnet::IpNet;

use crate::maps::SipMaps;

/// The kernel's allow and deny tables as they were before an edit.
pub(super) struct ListSnapshot {
    allow: HashSet<IpNet>,
    protected: HashSet<IpNet>,
    deny: HashMap<IpNet, u64>,
}

impl ListSnapshot {
    pub(super) fn take(maps: &SipMaps) -> Result<Self> {
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
    pub(super) fn restore(&self, maps: &mut SipMaps) -> Result<()> {
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
