//! Prefix bans (`[prefixes]`): the kernel bans a whole prefix whose unverified sources ran its
//! bucket dry. Here they are listed, lifted, saved and restored the way the rate bans of single
//! sources are (see `bans.rs`, `reconcile.rs` and `attach.rs`).
use std::collections::HashMap;

use anyhow::Result;
use ipnet::IpNet;
use sip_xdp_common::{BanCause, Config, DurableBan, PrefixKey, ban_flags};

use super::BanEntry;
use crate::{
    maps::{SipMaps, prefix_key, prefix_net},
    state::{Clocks, PrefixBanRecord, StateFile},
    time::{NS_PER_SEC, monotonic_now_ns},
};

/// A prefix ban the kernel holds: the prefix, its key, and its ban fields.
pub(super) struct PrefixBan {
    pub(super) net: IpNet,
    pub(super) key: PrefixKey,
    pub(super) ban: DurableBan,
}

/// The kernel's prefix bans and strike histories: the durable `PREFIX_BANS` table, with the live
/// `PREFIXES` entry's view where it is newer (as [`super::bans::rate_bans`] for sources). Keys
/// no prefix of this build stands for are left out.
pub(super) fn prefix_bans(maps: &SipMaps) -> Result<Vec<PrefixBan>> {
    let mut bans: HashMap<PrefixKey, DurableBan> = maps.prefix_bans()?.into_iter().collect();
    for (key, state) in maps.prefixes()? {
        if state.banned_until_ns == 0 {
            continue;
        }
        let live = DurableBan::of(&state);
        bans.entry(key)
            .and_modify(|saved| {
                if live.banned_until_ns >= saved.banned_until_ns {
                    *saved = live;
                }
            })
            .or_insert(live);
    }
    let mut bans: Vec<PrefixBan> = bans
        .into_iter()
        .filter_map(|(key, ban)| {
            Some(PrefixBan {
                net: prefix_net(&key)?,
                key,
                ban,
            })
        })
        .collect();
    bans.sort_by_key(|b| b.net);
    Ok(bans)
}

/// The prefix bans in force, as `ban list` shows them: the prefix as a CIDR, origin `prefix`
/// (`would` for a monitor-mode would-ban, listed only while monitor mode is on), the class
/// whose prefix bucket ran dry.
pub(super) fn prefix_ban_entries(
    maps: &SipMaps,
    clocks: Clocks,
    monitor: bool,
) -> Result<Vec<BanEntry>> {
    let mut entries = Vec::new();
    for PrefixBan { net, ban, .. } in prefix_bans(maps)? {
        if ban.banned_until_ns <= clocks.mono_ns {
            continue;
        }
        let would = ban.ban_flags & ban_flags::MONITOR_ONLY != 0;
        if would && !monitor {
            continue;
        }
        entries.push(BanEntry {
            source: net.to_string(),
            origin: if would { "would" } else { "prefix" },
            class: BanCause::from_ban_class(ban.ban_class).map(BanCause::name),
            remaining_s: (ban.banned_until_ns - clocks.mono_ns).div_ceil(NS_PER_SEC),
            expires_at: clocks.mono_to_wall_secs(ban.banned_until_ns),
            strikes: Some(ban.strikes),
            reason: Some(
                if would {
                    "would ban the prefix: its unverified sources together ran its bucket dry \
                     (monitor mode)"
                } else {
                    "its unverified sources together ran the prefix's bucket dry; verified, \
                     allowlisted and protected sources in it pass"
                }
                .to_owned(),
            ),
        });
    }
    Ok(entries)
}

/// What `ban del NET` did to prefix bans.
#[derive(Debug, Default)]
pub(super) struct PrefixLift {
    /// "prefix ban of 198.51.100.0/24", one per prefix inside NET that was banned now.
    pub(super) lifted: Vec<String>,
    /// Saved prefix bans inside NET forgotten (with no ban in force in the kernel).
    pub(super) forgotten_saved: usize,
}

/// Lifts the prefix bans of every prefix inside `net` (a prefix is lifted by its own CIDR or a
/// wider one) and forgets their strikes: their `PREFIX_BANS` records, `PREFIXES` buckets and
/// saved records.
pub(super) fn lift_prefix_bans(
    state: &mut StateFile,
    maps: Option<&mut SipMaps>,
    net: IpNet,
    now_ns: u64,
) -> Result<PrefixLift> {
    let mut lift = PrefixLift::default();
    if let Some(maps) = maps {
        let mut keys: Vec<(IpNet, PrefixKey, bool)> = prefix_bans(maps)?
            .into_iter()
            .filter(|b| net.contains(&b.net))
            .map(|b| {
                let live = b.ban.banned_until_ns > now_ns
                    && b.ban.ban_flags & ban_flags::MONITOR_ONLY == 0;
                (b.net, b.key, live)
            })
            .collect();
        // Buckets of prefixes with no ban yet: their strikes start again too.
        for (key, _) in maps.prefixes()? {
            if let Some(prefix) = prefix_net(&key)
                && net.contains(&prefix)
                && !keys.iter().any(|(_, k, _)| *k == key)
            {
                keys.push((prefix, key, false));
            }
        }
        for (prefix, key, live) in keys {
            if maps.forget_prefix(&key)? && live {
                lift.lifted.push(format!("prefix ban of {prefix}"));
            }
        }
    }
    lift.forgotten_saved = state.remove_prefix_bans_in(net);
    Ok(lift)
}

/// The prefix bans in force that cover `net` without being inside it (`ban del` of one address
/// of a banned /24): they stay, and `ban del` says how to lift them.
pub(super) fn covering_prefix_bans(maps: &SipMaps, net: IpNet, now_ns: u64) -> Result<Vec<IpNet>> {
    Ok(prefix_bans(maps)?
        .into_iter()
        .filter(|b| {
            b.ban.banned_until_ns > now_ns
                && b.ban.ban_flags & ban_flags::MONITOR_ONLY == 0
                && b.net != net
                && b.net.contains(&net)
        })
        .map(|b| b.net)
        .collect())
}

/// The prefix bans and strike histories worth saving: those whose strikes have not decayed.
pub(super) fn prefix_ban_records(maps: &SipMaps) -> Result<Vec<PrefixBanRecord>> {
    let clocks = Clocks::now();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut records = Vec::new();
    for PrefixBan { net, ban, .. } in prefix_bans(maps)? {
        if ban.banned_until_ns == 0 {
            continue;
        }
        let relevant_until = ban.banned_until_ns.saturating_add(config.strike_decay_ns);
        if relevant_until <= clocks.mono_ns {
            continue;
        }
        records.push(PrefixBanRecord {
            net,
            banned_until: clocks.mono_to_wall_secs(ban.banned_until_ns),
            ban_duration_ns: ban.ban_duration_ns,
            strikes: ban.strikes,
            limit_class: ban.ban_class,
            monitor_only: ban.ban_flags & ban_flags::MONITOR_ONLY != 0,
        });
    }
    Ok(records)
}

/// Puts saved prefix bans back into a freshly created `PREFIX_BANS` table (after a reboot, a
/// purge, or the first attach of a build with prefix buckets over older pins), with their
/// remaining time and strikes. Returns how many.
pub(super) fn restore_prefix_bans(state: &StateFile, maps: &mut SipMaps) -> Result<usize> {
    let clocks = Clocks::now();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut restored = 0;
    for record in &state.prefix_bans {
        let banned_until_ns = clocks.wall_to_mono_ns(record.banned_until);
        if banned_until_ns.saturating_add(config.strike_decay_ns) <= clocks.mono_ns {
            continue;
        }
        let ban = super::restored_ban(
            banned_until_ns,
            record.ban_duration_ns,
            record.strikes,
            record.limit_class,
            record.monitor_only,
            clocks.mono_ns,
        );
        let key = prefix_key(record.net);
        // Into the durable table only: the program rebuilds the prefix's bucket from it at its
        // next packet. A bucket left in PREFIXES would shadow it.
        maps.set_prefix_ban(&key, &ban)?;
        maps.forget_prefix_tracked(&key)?;
        restored += 1;
    }
    Ok(restored)
}

/// Removes prefix ban records whose strikes have decayed (as [`super::gc_bans`] for sources).
pub(super) fn gc_prefix_bans(maps: &mut SipMaps) -> Result<usize> {
    let now_ns = monotonic_now_ns();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut removed = 0;
    for (key, record) in maps.prefix_bans()? {
        let decayed = now_ns > record.banned_until_ns
            && now_ns - record.banned_until_ns > config.strike_decay_ns;
        if decayed && maps.forget_prefix_ban(&key)? {
            removed += 1;
        }
    }
    Ok(removed)
}
