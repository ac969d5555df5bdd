//! Keeping the kernel's tables and the state file in agreement over time: the periodic
//! reconcile, saved automatic bans, and the garbage collection of quiet sources and old bans.
use std::collections::{HashMap, HashSet};

use anyhow::{Context as _, Result};
use ipnet::IpNet;
use sip_xdp_common::{Config, SourceKey, SourceState, ban_flags};

use super::{
    Control,
    bans::rate_bans,
    forget_sources_in,
    prefixes::{gc_prefix_bans, prefix_ban_records},
};
use crate::{
    maps::{SipMaps, key_addr},
    state::{self, AutoBanRecord, BanOrigin, Clocks, SavedClock, StateFile},
    time::{NS_PER_SEC, monotonic_now_ns},
};

impl Control {
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

    /// Saves the automatic bans of sources and of prefixes (and their strike history) so a
    /// reboot or a purge keeps escalation going. Returns how many were saved.
    pub fn save_auto_bans(&self, maps: &SipMaps) -> Result<usize> {
        let records = auto_ban_records(maps)?;
        let prefix_records = prefix_ban_records(maps)?;
        let count = records.len() + prefix_records.len();
        let _lock = state::lock(&self.state_dir)?;
        let mut state = StateFile::load(&self.state_dir)?;
        if state.auto_bans != records || state.prefix_bans != prefix_records {
            state.set_auto_bans(records);
            state.set_prefix_bans(prefix_records);
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

/// Returns how many saved bans were shortened because the wall clock is behind (see
/// [`StateFile::clamp_restored_bans`]).
pub(super) fn reconcile_locked(state: &mut StateFile, maps: &mut SipMaps) -> Result<usize> {
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

/// Removes ban records whose strikes have decayed (the ban ended more than the strike decay
/// ago), of sources and of prefixes: they would be ignored, and the tables must keep room for
/// new bans. Returns how many.
pub fn gc_bans(maps: &mut SipMaps) -> Result<usize> {
    Ok(gc_source_bans(maps)? + gc_prefix_bans(maps)?)
}

fn gc_source_bans(maps: &mut SipMaps) -> Result<usize> {
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
