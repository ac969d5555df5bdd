//! A feed's whole ban list for its origin (the CrowdSec bouncer), applied in one pass.
use std::collections::{HashMap, HashSet};

use anyhow::{Context as _, Result};
use ipnet::IpNet;

use super::{Control, DENY_TABLE, OriginUpdate, bans::write_denylist_entry};
use crate::{
    state::{self, BanOrigin, StateFile},
    time::now_wall_secs,
};

impl Control {
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
}

/// Applies a feed's update to `origin`'s bans in the state file in one pass; returns (added or
/// renewed, lifted, left out over `quota`) and the nets whose kernel entry may have changed.
/// New nets past `quota` live bans of the origin are left out; renewals always apply.
pub(super) fn apply_origin_update(
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
