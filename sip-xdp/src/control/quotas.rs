//! How many nets each feed origin may ban at once, so one origin cannot starve the others of
//! the kernel's deny table.
use std::collections::HashSet;

use anyhow::{Result, bail};
use ipnet::IpNet;

use crate::state::{BanOrigin, StateFile};

pub(super) const DENY_TABLE: usize = sip_xdp_common::MAX_LIST_ENTRIES as usize;
/// Most nets origin `crowdsec` bans at once (half the kernel's deny table), defined with the
/// `[crowdsec]` section that may lower it.
pub use crate::config::CROWDSEC_QUOTA;
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

/// Refuses a ban of `nets` by `origin` that would take the origin past its quota (renewals of
/// nets it already bans do not count), naming the quota and the fix.
pub(super) fn check_quota(
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
