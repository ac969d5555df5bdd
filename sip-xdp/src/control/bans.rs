//! Bans: added and lifted by hand (or by fail2ban), listed with the kernel's own rate bans.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use sip_xdp_common::{BanCause, DurableBan, SourceKey, ban_flags};

use super::{
    BanEntry, Control, EditReport, Lift,
    prefixes::{covering_prefix_bans, lift_prefix_bans, prefix_ban_entries, prefix_bans},
    quotas::check_quota,
};
use crate::{
    maps::{SipMaps, key_addr},
    state::{BanOrigin, Clocks, StateFile},
    time::{NS_PER_SEC, human_duration, monotonic_now_ns, now_wall_secs},
};

impl Control {
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
                let mut still_kernel: Option<&'static str> = None;
                for (key, source) in &sources {
                    if !source_in(net, key, &ipv6_mask) || source.banned_until_ns <= now_ns {
                        continue;
                    }
                    if source.ban_flags & ban_flags::MONITOR_ONLY != 0 {
                        continue;
                    }
                    if !lift.rate {
                        still_kernel = Some(kernel_origin(source.ban_class));
                    }
                }
                // Phone bans (one port of a verified address) inside the net.
                let banned_phones: Vec<_> = match maps.as_ref() {
                    Some(maps) => maps
                        .flows()?
                        .into_iter()
                        .filter(|(flow, state)| {
                            state.banned_until_ns > now_ns && net.contains(&key_addr(flow.addr))
                        })
                        .map(|(flow, _)| flow)
                        .collect(),
                    None => Vec::new(),
                };
                if !lift.rate && !banned_phones.is_empty() {
                    still_kernel = Some("auth");
                }
                if lift.rate {
                    if let Some(maps) = maps.as_mut() {
                        for flow in &banned_phones {
                            if maps.forget_flow(flow)? {
                                lifted.push(format!(
                                    "auth ban of phone {}",
                                    SipMaps::flow_name(flow)
                                ));
                            }
                        }
                        for (key, source) in &sources {
                            if !source_in(net, key, &ipv6_mask) {
                                continue;
                            }
                            let was_banned = source.banned_until_ns > now_ns;
                            if maps.forget_source(key.addr)? && was_banned {
                                lifted.push(format!(
                                    "{} ban of {}",
                                    kernel_origin(source.ban_class),
                                    key_addr(key.addr)
                                ));
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
                // Prefix bans: lifted when the net covers the prefix; one that covers the net
                // (an address of a banned /24) stays, and the report says how to lift it.
                let mut prefix_remaining = Vec::new();
                if lift.prefix {
                    let prefix = lift_prefix_bans(state, maps.as_mut(), net, now_ns)?;
                    if prefix.forgotten_saved > 0 && prefix.lifted.is_empty() && lifted.is_empty() {
                        lifted.push("saved prefix ban".to_owned());
                    }
                    lifted.extend(prefix.lifted);
                } else if let Some(maps) = maps.as_ref() {
                    for b in prefix_bans(maps)? {
                        let live = b.ban.banned_until_ns > now_ns
                            && b.ban.ban_flags & ban_flags::MONITOR_ONLY == 0;
                        if live && net.contains(&b.net) {
                            prefix_remaining.push(format!(
                                "the prefix ban of {} (lift with --origin prefix)",
                                b.net
                            ));
                        }
                    }
                }
                if let Some(maps) = maps.as_ref() {
                    for covering in covering_prefix_bans(maps, net, now_ns)? {
                        prefix_remaining.push(format!(
                            "the prefix ban of {covering} (lift with `sip-xdp ban del {covering}`)"
                        ));
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
                if let Some(origin) = still_kernel {
                    remaining.push(format!("the {origin} ban (lift with --origin {origin})"));
                }
                remaining.extend(prefix_remaining);
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

    /// `ban del --origin prefix` without an address: lifts every prefix ban (and forgets every
    /// prefix's strikes), IPv4 and IPv6.
    pub fn lift_every_prefix_ban(&self) -> Result<EditReport> {
        self.edit(|state, maps, report| {
            let now_ns = monotonic_now_ns();
            let mut lifted = Vec::new();
            let mut forgotten = 0;
            for net in ["0.0.0.0/0", "::/0"] {
                let net: IpNet = net.parse().expect("a valid CIDR");
                let prefix = lift_prefix_bans(state, maps.as_mut(), net, now_ns)?;
                lifted.extend(prefix.lifted);
                forgotten += prefix.forgotten_saved;
            }
            report.lines.push(if lifted.is_empty() {
                format!(
                    "no prefix ban in force{}",
                    if forgotten > 0 {
                        format!("; forgot {forgotten} saved prefix strike histories")
                    } else {
                        String::new()
                    }
                )
            } else {
                format!("lifted {}", lifted.join(", "))
            });
            Ok(())
        })
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
                let cause = BanCause::from_ban_class(source.ban_class);
                entries.push(BanEntry {
                    source: key_addr(key.addr).to_string(),
                    origin: if would {
                        "would"
                    } else {
                        kernel_origin(source.ban_class)
                    },
                    class: cause.map(BanCause::name),
                    remaining_s: (source.banned_until_ns - clocks.mono_ns).div_ceil(NS_PER_SEC),
                    expires_at,
                    strikes: Some(source.strikes),
                    reason: None,
                });
            }
            entries.extend(prefix_ban_entries(&maps, clocks, monitor)?);
            // One phone of a verified address, banned by its address and port alone.
            for (flow, state) in maps.flows()? {
                if state.banned_until_ns <= clocks.mono_ns {
                    continue;
                }
                entries.push(BanEntry {
                    source: SipMaps::flow_name(&flow),
                    origin: "auth",
                    class: Some("phone"),
                    remaining_s: (state.banned_until_ns - clocks.mono_ns).div_ceil(NS_PER_SEC),
                    expires_at: clocks.mono_to_wall_secs(state.banned_until_ns),
                    strikes: Some(state.strikes),
                    reason: Some(
                        "failed authentication from this port of a verified address; its \
                         other phones pass"
                            .to_owned(),
                    ),
                });
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.remaining_s));
        Ok(entries)
    }
}

/// `rate` or `auth`, from a kernel ban's `ban_class`.
fn kernel_origin(ban_class: u8) -> &'static str {
    BanCause::from_ban_class(ban_class).map_or("rate", BanCause::origin)
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
pub(super) fn write_denylist_entry(
    maps: &mut SipMaps,
    net: IpNet,
    value: Option<u64>,
) -> Result<()> {
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

/// The kernel's rate bans and strike histories: the durable `BANS` table, where the program
/// writes every ban and extension, with the live `SOURCES` entry's view where it is newer (the
/// expiry report clears a flag there first).
pub(super) fn rate_bans(maps: &SipMaps) -> Result<Vec<(SourceKey, DurableBan)>> {
    let mut bans: HashMap<SourceKey, DurableBan> = maps.bans()?.into_iter().collect();
    for (key, source) in maps.sources()? {
        if source.banned_until_ns == 0 {
            continue;
        }
        let live = DurableBan::of(&source);
        bans.entry(key)
            .and_modify(|saved| {
                if live.banned_until_ns >= saved.banned_until_ns {
                    *saved = live;
                }
            })
            .or_insert(live);
    }
    let mut bans: Vec<(SourceKey, DurableBan)> = bans.into_iter().collect();
    bans.sort_by_key(|(key, _)| key.addr);
    Ok(bans)
}
