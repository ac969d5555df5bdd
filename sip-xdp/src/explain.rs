//! `sip-xdp explain ADDR`: everything the kernel's pinned maps (read only) and the state file
//! know about one address, and the verdict its next REGISTER, INVITE, OPTIONS and TCP SYN would
//! get.
//!
//! The verdicts are a **prediction**, computed here in user space by following the program's
//! order (sip-xdp-ebpf `policy.rs`, `prefixes.rs`, `main.rs`): the ban read before the payload
//! (the source's own when its key is the whole address, then its prefixes' bans unless it is
//! exempt), the allowlist, the denylist, the source's own ban (a masked or restored key), its
//! bucket, the admission budget, and last its prefixes' buckets. Nothing is drawn: each
//! prediction is for one packet sent now, on its own. It cannot see what the packet's payload
//! would add (a scanner's signature, a malformed line), a phone ban of the port it would come
//! from, nor the packets other sources send between the read and the packet; the test
//! (`tests/tests/explain.rs`) sends the packets and compares with the kernel's counters.
use std::{net::IpAddr, path::Path};

use ipnet::IpNet;
use serde::Serialize;
use sip_xdp_common::{
    BanCause, Config, DurableBan, LimitClass, MethodClass, PREFIX_LEVEL_IPV4, PREFIX_LEVELS,
    RateLimit, SourceState, Verdict, ban_flags, flags,
};
use thiserror::Error;

use crate::{
    loader::{self, PinDir},
    maps::{MapsError, SipMaps, addr_key, key_addr, prefix_key},
    state::{Clocks, StateError, StateFile},
    time::NS_PER_SEC,
};

#[derive(Debug, Error)]
pub enum ExplainError {
    #[error(
        "{0:?} is not an IP address (examples: 203.0.113.7, 2001:db8::7); explain takes one \
         address, not a CIDR"
    )]
    BadAddress(String),
    #[error(
        "{0} is an IPv4-mapped IPv6 address, which no packet comes from (the program drops IPv6 \
         packets from ::ffff:0:0/96): IPv4 sources are explained as IPv4, write {1}"
    )]
    MappedAddress(IpAddr, std::net::Ipv4Addr),
    #[error(
        "nothing to explain: sip-xdp has no maps pinned under {0} (not attached on this host); \
         run `sip-xdp attach --iface IFACE` or start sip-xdp.service, or pass the right \
         --pin-dir"
    )]
    NotAttached(String),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// An address as `explain` takes it: one host, IPv4 or IPv6.
pub fn parse_address(text: &str) -> Result<IpAddr, ExplainError> {
    let text = text.trim();
    let bare = text
        .strip_suffix("/32")
        .or_else(|| text.strip_suffix("/128"));
    let address: IpAddr = bare
        .unwrap_or(text)
        .parse()
        .map_err(|_| ExplainError::BadAddress(text.to_owned()))?;
    if let IpAddr::V6(v6) = address
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(ExplainError::MappedAddress(address, v4));
    }
    Ok(address)
}

/// One list entry that covers the address.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ListMatch {
    pub cidr: IpNet,
    /// In the kernel's table now.
    pub live: bool,
    /// In the state file.
    pub saved: bool,
    /// The longest live match: the one the kernel's lookup finds.
    pub effective: bool,
    pub comment: Option<String>,
    /// `allow`, `protect` or `deny` (the operator's lists), or a ban's origin (`manual`,
    /// `fail2ban`, `crowdsec`) for a denylist entry that is a ban.
    pub origin: String,
    /// For a ban: seconds left, and its reason.
    pub remaining_s: Option<u64>,
    pub reason: Option<String>,
}

/// One ban that holds (or held, with strikes still counted) the address.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BanInfo {
    /// What is banned: the address, its tracked key (an IPv6 prefix per
    /// `sip.ipv6_source_prefix`), a prefix, a phone (`ADDR:PORT`) or a ban-list CIDR.
    pub target: String,
    /// `rate`, `auth`, `fingerprint`, `trap` (the kernel's per-source bans), `prefix`, `manual`,
    /// `fail2ban`, `crowdsec`, `would` (monitor mode).
    pub origin: String,
    /// The limit class or failure kind, for the kernel's bans.
    pub class: Option<String>,
    /// In force now.
    pub active: bool,
    pub remaining_s: u64,
    pub strikes: Option<u32>,
    pub reason: String,
}

/// One token bucket of the source or of a prefix.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BucketFill {
    pub class: &'static str,
    pub rate_per_sec: f64,
    pub burst: u64,
    /// Packets that would conform back to back now.
    pub tokens_left: u64,
}

/// What `SOURCES` holds for the address's key.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SourceInfo {
    /// The key: the address, or its IPv6 prefix when sources are grouped.
    pub key: String,
    pub packets: u64,
    pub dropped: u64,
    /// Seconds since the start of its last counted second (its latest packet, within 1 s).
    pub last_seen_s_ago: u64,
    pub buckets: Vec<BucketFill>,
    /// Which limits its buckets follow: `verified` or `default`.
    pub limits: &'static str,
}

/// One prefix level of the address.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PrefixInfo {
    pub prefix: IpNet,
    pub tracked: bool,
    pub packets: u64,
    pub dropped: u64,
    pub buckets: Vec<BucketFill>,
}

/// `VERIFIED` and `ANSWERS`: what the server's answers say.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, Default)]
pub struct AnswersInfo {
    /// Verified now (a success after a challenge, the egress program attached).
    pub verified: bool,
    pub verified_remaining_s: Option<u64>,
    pub successes: Option<u64>,
    /// Failed authentications in the current window.
    pub failures: Option<u32>,
    pub open_challenges: Option<u32>,
    pub reflection_drops: Option<u32>,
    /// Whether the egress program reads answers at all (`[answers] enabled`).
    pub answers_enabled: bool,
}

/// The predicted verdict of one packet.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Prediction {
    /// `register`, `invite`, `options` (UDP), `tcp_syn`.
    pub packet: &'static str,
    pub verdict: &'static str,
    /// The class the kernel counts it under (`unread` when the ban drops it before its payload
    /// is read).
    pub counted_as: &'static str,
    /// Which step decided, in the program's words.
    pub because: String,
}

/// Everything `explain` reports about one address.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Explanation {
    pub address: IpAddr,
    /// Whether the program is attached to an interface present here (`None` when the maps were
    /// given, not found through a pin directory). Detached, the maps still say what the
    /// program would do once attached again, but nothing is filtered now.
    pub attached: Option<bool>,
    pub monitor_mode: bool,
    pub allowlist: Vec<ListMatch>,
    pub protected: Vec<ListMatch>,
    pub denylist: Vec<ListMatch>,
    pub bans: Vec<BanInfo>,
    pub source: Option<SourceInfo>,
    pub prefixes: Vec<PrefixInfo>,
    pub answers: AnswersInfo,
    pub predictions: Vec<Prediction>,
}

/// [`explain`] for the sip-xdp whose maps are pinned in `pin_dir` and whose state file is in
/// `state_dir`; the daemon need not run.
pub fn explain_pinned(
    pin_dir: &Path,
    state_dir: &Path,
    address: IpAddr,
) -> Result<Explanation, ExplainError> {
    let pins = PinDir::new(pin_dir);
    if !pins.has_maps() {
        return Err(ExplainError::NotAttached(pins.path().display().to_string()));
    }
    let maps = SipMaps::open_pinned(&pins)?;
    let state = StateFile::load(state_dir)?;
    let mut report = explain(&maps, &state, address)?;
    report.attached = Some(pins.attachments().is_ok_and(|attachments| {
        attachments.iter().any(|a| {
            a.hook == loader::Hook::XdpIngress
                && loader::attachment_ids(a).is_some()
                && loader::if_index(&a.iface).is_ok()
        })
    }));
    Ok(report)
}

/// What the maps and the state file say about `address`, with the predicted verdicts (see the
/// module's doc: a prediction, not a replay).
pub fn explain(
    maps: &SipMaps,
    state: &StateFile,
    address: IpAddr,
) -> Result<Explanation, ExplainError> {
    let clocks = Clocks::now();
    let now_ns = clocks.mono_ns;
    let now_wall = clocks.wall_ns / NS_PER_SEC;
    let cfg = maps.read_config()?;
    let monitor = cfg.has_flag(flags::MONITOR);
    let src = addr_key(address);

    let allowlist = list_matches(
        address,
        &maps.allowlist()?,
        state.allow.iter().map(|r| (r.net, r.comment.clone())),
        "allow",
    );
    let protected = list_matches(
        address,
        &maps.protected()?,
        state.protected.iter().map(|r| (r.net, r.comment.clone())),
        "protect",
    );
    let (denylist, list_bans, denylisted) = deny_matches(maps, state, address, now_ns, now_wall)?;

    let key = source_key(&cfg, address);
    let tracked = maps.source(key)?;
    let record = maps.ban(key)?;
    let verified_record = maps.verified_source(key)?;
    let answer_state = maps.answer_state(key)?;
    let answers_enabled = cfg.has_flag(flags::ANSWERS);
    let verified_until_map = if answers_enabled {
        verified_record.map_or(0, |v| v.verified_until_ns)
    } else {
        0
    };

    let mut bans = list_bans;
    if let Some(ban) = kernel_ban(tracked.as_ref(), record.as_ref()) {
        bans.push(source_ban(&cfg, &key_addr(key).to_string(), &ban, now_ns));
    }
    for (flow, f) in maps.flows_of(src)? {
        if f.banned_until_ns > now_ns {
            bans.push(BanInfo {
                target: SipMaps::flow_name(&flow),
                origin: "auth".to_owned(),
                class: Some("phone".to_owned()),
                active: true,
                remaining_s: (f.banned_until_ns - now_ns).div_ceil(NS_PER_SEC),
                strikes: Some(f.strikes),
                reason: "failed authentication from this port of a verified address; its other \
                         phones pass"
                    .to_owned(),
            });
        }
    }

    let mut prefixes = Vec::new();
    let mut prefix_states = Vec::new();
    for level in levels(address) {
        let len = cfg.prefix_lens[level];
        if len == 0 {
            continue;
        }
        let net = level_net(address, len);
        let pkey = prefix_key(net);
        let pstate = maps.prefix(&pkey)?;
        let precord = maps.prefix_ban(&pkey)?;
        if let Some(ban) = kernel_ban(pstate.as_ref(), precord.as_ref()) {
            bans.push(prefix_ban_info(&cfg, net, &ban, now_ns));
        }
        prefixes.push(PrefixInfo {
            prefix: net,
            tracked: pstate.is_some(),
            packets: pstate.map_or(0, |s| s.packets),
            dropped: pstate.map_or(0, |s| s.dropped),
            buckets: buckets(
                &cfg.prefix_limits,
                pstate.as_ref().map(|s| &s.tat_ns),
                now_ns,
            ),
        });
        prefix_states.push((level, pkey, pstate, precord));
    }

    let source = tracked.map(|s| {
        let verified = is_verified(&cfg, s.verified_until_ns, now_ns);
        SourceInfo {
            key: key_addr(key).to_string(),
            packets: s.packets,
            dropped: s.dropped,
            last_seen_s_ago: now_ns.saturating_sub(s.window_start_ns) / NS_PER_SEC,
            buckets: buckets(limits_for(&cfg, verified), Some(&s.tat_ns), now_ns),
            limits: if verified { "verified" } else { "default" },
        }
    });

    let answers = AnswersInfo {
        verified: is_verified(&cfg, verified_until_map, now_ns),
        verified_remaining_s: verified_record
            .filter(|v| v.verified_until_ns > now_ns)
            .map(|v| (v.verified_until_ns - now_ns).div_ceil(NS_PER_SEC)),
        successes: verified_record.map(|v| v.successes),
        failures: answer_state.map(|a| a.failures),
        open_challenges: answer_state.map(|a| a.open_challenges),
        reflection_drops: answer_state.map(|a| a.reflection_drops),
        answers_enabled,
    };

    let world = World {
        cfg: &cfg,
        now_ns,
        whole_key: address.is_ipv4() || cfg.ipv6_source_mask[15] == 0xff,
        tracked,
        record,
        verified_until_map,
        allowlisted: allowlist.iter().any(|m| m.effective),
        protected: protected.iter().any(|m| m.effective),
        denylisted,
        prefix_bans_until_ns: maps.prefix_bans_until()?,
        prefixes: prefix_states,
        admission_tat_ns: maps.admission_tat_ns()?,
    };
    let udp_sip = cfg.sip_ports.iter().any(|&p| p != 0);
    let tcp_sip = cfg.tcp_ports.iter().any(|&p| p != 0);
    let mut predictions = Vec::new();
    for class in [
        MethodClass::Register,
        MethodClass::Invite,
        MethodClass::Options,
    ] {
        predictions.push(if udp_sip {
            world.predict(class)
        } else {
            not_sip(class, "no UDP SIP port is configured")
        });
    }
    predictions.push(if tcp_sip {
        world.predict(MethodClass::TcpSyn)
    } else {
        not_sip(MethodClass::TcpSyn, "no SIP TCP port is configured")
    });

    Ok(Explanation {
        address,
        attached: None,
        monitor_mode: monitor,
        allowlist,
        protected,
        denylist,
        bans,
        source,
        prefixes,
        answers,
        predictions,
    })
}

fn not_sip(class: MethodClass, because: &str) -> Prediction {
    Prediction {
        packet: class.name(),
        verdict: Verdict::PassNotSip.name(),
        counted_as: MethodClass::NotSip.name(),
        because: because.to_owned(),
    }
}

/// The per-source key of `address`, as `sources::set_source_key` makes it.
fn source_key(cfg: &Config, address: IpAddr) -> [u8; 16] {
    let mut key = addr_key(address);
    if address.is_ipv6() {
        for (byte, mask) in key.iter_mut().zip(cfg.ipv6_source_mask) {
            *byte &= mask;
        }
    }
    key
}

fn levels(address: IpAddr) -> Vec<usize> {
    if address.is_ipv4() {
        vec![PREFIX_LEVEL_IPV4]
    } else {
        (PREFIX_LEVEL_IPV4 + 1..PREFIX_LEVELS).collect()
    }
}

/// The prefix of `address` at `len` bits (the 128-bit form the config holds).
fn level_net(address: IpAddr, len: u8) -> IpNet {
    let bits = match address {
        IpAddr::V4(_) => len.saturating_sub(96).min(32),
        IpAddr::V6(_) => len.min(128),
    };
    IpNet::new(address, bits)
        .expect("a prefix length within the family")
        .trunc()
}

fn is_verified(cfg: &Config, verified_until_ns: u64, now_ns: u64) -> bool {
    cfg.has_flag(flags::ANSWERS) && now_ns < verified_until_ns
}

fn limits_for(cfg: &Config, verified: bool) -> &[RateLimit; LimitClass::COUNT] {
    if verified {
        &cfg.verified_limits
    } else {
        &cfg.limits
    }
}

fn is_banned(cfg: &Config, banned_until_ns: u64, ban_flags_: u8, now_ns: u64) -> bool {
    now_ns < banned_until_ns
        && (ban_flags_ & ban_flags::MONITOR_ONLY == 0 || cfg.has_flag(flags::MONITOR))
}

/// GCRA: does one more packet fit at `now_ns`?
fn conforms(tat_ns: u64, limit: &RateLimit, now_ns: u64) -> bool {
    tat_ns.max(now_ns) - now_ns <= limit.burst_tolerance_ns
}

/// Packets that fit back to back now.
fn tokens_left(tat_ns: u64, limit: &RateLimit, now_ns: u64) -> u64 {
    let ahead_ns = tat_ns.max(now_ns) - now_ns;
    if limit.is_unlimited() || ahead_ns > limit.burst_tolerance_ns {
        return 0;
    }
    (limit.burst_tolerance_ns - ahead_ns) / limit.interval_ns + 1
}

fn buckets(
    limits: &[RateLimit; LimitClass::COUNT],
    tat_ns: Option<&[u64; LimitClass::COUNT]>,
    now_ns: u64,
) -> Vec<BucketFill> {
    LimitClass::ALL
        .iter()
        .zip(limits)
        .enumerate()
        .filter(|(_, (_, limit))| !limit.is_unlimited())
        .map(|(i, (class, limit))| BucketFill {
            class: class.name(),
            rate_per_sec: NS_PER_SEC as f64 / limit.interval_ns as f64,
            burst: limit.burst(),
            tokens_left: tokens_left(tat_ns.map_or(0, |t| t[i]), limit, now_ns),
        })
        .collect()
}

/// The ban fields of a key: its live state's where newer than its durable record's (as
/// `ban list` reads them), if either has a ban.
fn kernel_ban(state: Option<&SourceState>, record: Option<&DurableBan>) -> Option<DurableBan> {
    let live = state.filter(|s| s.banned_until_ns != 0).map(DurableBan::of);
    match (live, record.copied()) {
        (Some(live), Some(saved)) if saved.banned_until_ns > live.banned_until_ns => Some(saved),
        (Some(live), _) => Some(live),
        (None, saved) => saved.filter(|s| s.banned_until_ns != 0),
    }
}

fn cause_origin(ban: &DurableBan) -> (String, Option<String>) {
    match BanCause::from_ban_class(ban.ban_class) {
        Some(cause) => (cause.origin().to_owned(), Some(cause.name().to_owned())),
        None => ("rate".to_owned(), None),
    }
}

fn source_ban(cfg: &Config, target: &str, ban: &DurableBan, now_ns: u64) -> BanInfo {
    let (origin, class) = cause_origin(ban);
    let would = ban.ban_flags & ban_flags::MONITOR_ONLY != 0;
    let active = is_banned(cfg, ban.banned_until_ns, ban.ban_flags, now_ns);
    let reason = match (&class, origin.as_str()) {
        _ if ban.banned_until_ns <= now_ns => format!(
            "ended; its {} strike(s) count until they decay",
            ban.strikes
        ),
        (Some(class), "rate") => format!("its {class} bucket ran dry"),
        (Some(kind), "auth") => format!("failed authentication ({kind})"),
        (Some(kind), _) => format!("its request carried a {kind} signature"),
        (None, _) => "a ban class this build does not know".to_owned(),
    };
    BanInfo {
        target: target.to_owned(),
        origin: if would && active {
            "would".to_owned()
        } else {
            origin
        },
        class,
        active,
        remaining_s: ban
            .banned_until_ns
            .saturating_sub(now_ns)
            .div_ceil(NS_PER_SEC),
        strikes: Some(ban.strikes),
        reason: if would {
            format!("{reason} (monitor mode: not enforced)")
        } else {
            reason
        },
    }
}

fn prefix_ban_info(cfg: &Config, net: IpNet, ban: &DurableBan, now_ns: u64) -> BanInfo {
    let mut info = source_ban(cfg, &net.to_string(), ban, now_ns);
    if info.origin != "would" {
        info.origin = "prefix".to_owned();
    }
    if ban.banned_until_ns > now_ns {
        info.reason = format!(
            "its unverified sources together ran the prefix's {} bucket dry; verified, \
             allowlisted and protected sources in it pass",
            info.class.as_deref().unwrap_or("?")
        );
    }
    info
}

/// The entries of one allow-shaped list covering `address`: the kernel's and the state file's.
fn list_matches(
    address: IpAddr,
    live: &[IpNet],
    saved: impl Iterator<Item = (IpNet, Option<String>)>,
    origin: &str,
) -> Vec<ListMatch> {
    let saved: Vec<(IpNet, Option<String>)> = saved.filter(|(n, _)| n.contains(&address)).collect();
    let mut nets: Vec<IpNet> = live
        .iter()
        .copied()
        .filter(|n| n.contains(&address))
        .chain(saved.iter().map(|(n, _)| *n))
        .collect();
    nets.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
    nets.dedup();
    let longest_live = nets.iter().find(|n| live.contains(n)).copied();
    nets.into_iter()
        .map(|net| ListMatch {
            cidr: net,
            live: live.contains(&net),
            saved: saved.iter().any(|(n, _)| *n == net),
            effective: Some(net) == longest_live,
            comment: saved
                .iter()
                .find(|(n, _)| *n == net)
                .and_then(|(_, c)| c.clone()),
            origin: origin.to_owned(),
            remaining_s: None,
            reason: None,
        })
        .collect()
}

/// The denylist entries covering `address` (permanent denies and ban-list bans, which the
/// kernel holds in one table), the ban-list bans as [`BanInfo`]s, and whether the kernel's
/// lookup denies the address (`lists::is_denylisted`: the longest entry, if it has not expired).
fn deny_matches(
    maps: &SipMaps,
    state: &StateFile,
    address: IpAddr,
    now_ns: u64,
    now_wall: u64,
) -> Result<(Vec<ListMatch>, Vec<BanInfo>, bool), ExplainError> {
    let mut live: Vec<(IpNet, u64)> = maps
        .denylist()?
        .into_iter()
        .filter(|(n, _)| n.contains(&address))
        .map(|(n, e)| (n, e.expires_at_ns))
        .collect();
    live.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
    let denied = live
        .first()
        .is_some_and(|&(_, expires_at_ns)| expires_at_ns == 0 || now_ns < expires_at_ns);
    let mut nets: Vec<IpNet> = live.iter().map(|(n, _)| *n).collect();
    nets.extend(
        state
            .deny
            .iter()
            .map(|d| d.net)
            .chain(
                state
                    .bans
                    .iter()
                    .filter(|b| b.expires_at > now_wall)
                    .map(|b| b.net),
            )
            .filter(|n| n.contains(&address)),
    );
    nets.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
    nets.dedup();
    // The kernel's lookup finds the longest live entry, whatever its expiry says.
    let longest_live = nets
        .iter()
        .find(|n| live.iter().any(|(l, _)| l == *n))
        .copied();
    let mut matches = Vec::new();
    let mut bans = Vec::new();
    for net in nets {
        let kernel = live.iter().find(|(n, _)| *n == net).map(|(_, e)| *e);
        let effective = Some(net) == longest_live;
        if let Some(deny) = state.deny.iter().find(|d| d.net == net) {
            matches.push(ListMatch {
                cidr: net,
                live: kernel == Some(0),
                saved: true,
                effective: effective && kernel == Some(0),
                comment: deny.comment.clone(),
                origin: "deny".to_owned(),
                remaining_s: None,
                reason: None,
            });
        } else if kernel == Some(0) {
            matches.push(ListMatch {
                cidr: net,
                live: true,
                saved: false,
                effective,
                comment: None,
                origin: "deny".to_owned(),
                remaining_s: None,
                reason: Some("in the kernel only (not in the state file)".to_owned()),
            });
        }
        let saved_bans: Vec<_> = state
            .bans
            .iter()
            .filter(|b| b.net == net && b.expires_at > now_wall)
            .collect();
        let kernel_ban = kernel.filter(|&e| e != 0);
        for ban in &saved_bans {
            let remaining_s = ban.expires_at - now_wall;
            matches.push(ListMatch {
                cidr: net,
                live: kernel_ban.is_some(),
                saved: true,
                effective: effective && kernel_ban.is_some_and(|e| e > now_ns),
                comment: None,
                origin: ban.origin.name().to_owned(),
                remaining_s: Some(remaining_s),
                reason: ban.reason.clone(),
            });
            bans.push(BanInfo {
                target: net.to_string(),
                origin: ban.origin.name().to_owned(),
                class: None,
                active: kernel_ban.is_some_and(|e| e > now_ns),
                remaining_s,
                strikes: None,
                reason: ban
                    .reason
                    .clone()
                    .unwrap_or_else(|| "no reason given".to_owned()),
            });
        }
        if let Some(expires_at_ns) = kernel_ban
            && saved_bans.is_empty()
            && expires_at_ns > now_ns
        {
            let remaining_s = (expires_at_ns - now_ns).div_ceil(NS_PER_SEC);
            matches.push(ListMatch {
                cidr: net,
                live: true,
                saved: false,
                effective,
                comment: None,
                origin: "manual".to_owned(),
                remaining_s: Some(remaining_s),
                reason: Some("in the kernel only (not in the state file)".to_owned()),
            });
            bans.push(BanInfo {
                target: net.to_string(),
                origin: "manual".to_owned(),
                class: None,
                active: true,
                remaining_s,
                strikes: None,
                reason: "in the kernel's denylist only (not in the state file)".to_owned(),
            });
        }
    }
    Ok((matches, bans, denied))
}

/// What the prediction reads: the maps' view of one address, taken once.
struct World<'a> {
    cfg: &'a Config,
    now_ns: u64,
    whole_key: bool,
    tracked: Option<SourceState>,
    record: Option<DurableBan>,
    verified_until_map: u64,
    allowlisted: bool,
    protected: bool,
    denylisted: bool,
    prefix_bans_until_ns: u64,
    prefixes: Vec<(
        usize,
        sip_xdp_common::PrefixKey,
        Option<SourceState>,
        Option<DurableBan>,
    )>,
    admission_tat_ns: u64,
}

/// The state a durable record restores (`bans::restore_ban`): its ban, full buckets; `None` for
/// no record or one whose strikes decayed.
fn restored(
    cfg: &Config,
    record: Option<&DurableBan>,
    verified_until_ns: u64,
    now_ns: u64,
) -> Option<SourceState> {
    let record = record?;
    if now_ns > record.banned_until_ns && now_ns - record.banned_until_ns > cfg.strike_decay_ns {
        return None;
    }
    Some(SourceState {
        banned_until_ns: record.banned_until_ns,
        ban_duration_ns: record.ban_duration_ns,
        strikes: record.strikes,
        ban_class: record.ban_class,
        ban_flags: record.ban_flags,
        verified_until_ns,
        window_start_ns: now_ns,
        ..SourceState::default()
    })
}

fn limit_of(class: MethodClass) -> LimitClass {
    match class {
        MethodClass::Register => LimitClass::Register,
        MethodClass::Invite => LimitClass::Invite,
        MethodClass::Options => LimitClass::Options,
        _ => LimitClass::Connection,
    }
}

impl World<'_> {
    fn verdict(
        &self,
        class: MethodClass,
        verdict: Verdict,
        counted_as: MethodClass,
        because: impl Into<String>,
    ) -> Prediction {
        let monitor = self.cfg.has_flag(flags::MONITOR) && verdict.is_drop();
        let because = because.into();
        Prediction {
            packet: class.name(),
            verdict: verdict.name(),
            counted_as: counted_as.name(),
            because: if monitor {
                format!("{because} (monitor mode: counted, but passed)")
            } else {
                because
            },
        }
    }

    fn needs_admission(&self, class: MethodClass, verified: bool) -> bool {
        self.cfg.has_flag(flags::ANSWERS)
            && !verified
            && matches!(class, MethodClass::Register | MethodClass::Invite)
    }

    fn admitted(&self) -> bool {
        self.cfg.admission.is_unlimited()
            || conforms(self.admission_tat_ns, &self.cfg.admission, self.now_ns)
            || self.protected
    }

    /// The program's walk for one packet of `class` from the address, nothing drawn.
    fn predict(&self, class: MethodClass) -> Prediction {
        let cfg = self.cfg;
        let now = self.now_ns;
        let unread = if class == MethodClass::TcpSyn {
            MethodClass::TcpSyn
        } else {
            MethodClass::Unread
        };
        // policy::early: the source's own ban, when its key is its address.
        if self.whole_key
            && let Some(s) = &self.tracked
            && is_banned(cfg, s.banned_until_ns, s.ban_flags, now)
        {
            return self.verdict(
                class,
                Verdict::DropBanned,
                unread,
                "the source is banned: dropped before its payload is read",
            );
        }
        // prefixes::early: a banned prefix, unless the source is exempt.
        let tracked_verified = self
            .tracked
            .as_ref()
            .is_some_and(|s| is_verified(cfg, s.verified_until_ns, now));
        if !tracked_verified && now < self.prefix_bans_until_ns {
            for (_, _, state, record) in &self.prefixes {
                let state = state.or_else(|| restored(cfg, record.as_ref(), 0, now));
                if let Some(s) = state
                    && is_banned(cfg, s.banned_until_ns, s.ban_flags, now)
                {
                    let verified_until = match &self.tracked {
                        Some(t) => t.verified_until_ns,
                        None => self.verified_until_map,
                    };
                    if is_verified(cfg, verified_until, now) || self.allowlisted || self.protected {
                        continue;
                    }
                    return self.verdict(
                        class,
                        Verdict::DropBanned,
                        unread,
                        "its prefix is banned: dropped before its payload is read",
                    );
                }
            }
        }
        // policy::listed_or_limited.
        if self.allowlisted {
            return self.verdict(class, Verdict::PassAllowlisted, class, "allowlisted");
        }
        if self.denylisted {
            return self.verdict(
                class,
                Verdict::DropDenylisted,
                class,
                "on the denylist (a deny entry or a ban-list ban)",
            );
        }
        let limit = limit_of(class);
        let state = self
            .tracked
            .or_else(|| restored(cfg, self.record.as_ref(), self.verified_until_map, now));
        let verified;
        match state {
            None => {
                verified = is_verified(cfg, self.verified_until_map, now);
                if self.needs_admission(class, verified) && !self.admitted() {
                    return self.verdict(
                        class,
                        Verdict::DropAdmission,
                        class,
                        "a new unverified source beyond the admission budget",
                    );
                }
            }
            Some(s) => {
                if is_banned(cfg, s.banned_until_ns, s.ban_flags, now) {
                    return self.verdict(
                        class,
                        Verdict::DropBanned,
                        class,
                        "its tracked key (or saved ban) is banned",
                    );
                }
                verified = is_verified(cfg, s.verified_until_ns, now);
                let bucket = &limits_for(cfg, verified)[limit as usize];
                if !bucket.is_unlimited() && !conforms(s.tat_ns[limit as usize], bucket, now) {
                    let what = if self.protected {
                        "protected, so not banned"
                    } else {
                        "and is banned with it"
                    };
                    return self.verdict(
                        class,
                        Verdict::DropRate,
                        class,
                        format!("its {} bucket is empty ({what})", limit.name()),
                    );
                }
                if self.needs_admission(class, verified) && !self.admitted() {
                    return self.verdict(
                        class,
                        Verdict::DropAdmission,
                        class,
                        "unverified, beyond the admission budget",
                    );
                }
            }
        }
        // The prefixes' buckets, for unverified sources (`prefixes::draw`).
        if !verified {
            let bucket = &cfg.prefix_limits[limit as usize];
            if !bucket.is_unlimited() {
                for (_, _, pstate, precord) in &self.prefixes {
                    let pstate = pstate.or_else(|| restored(cfg, precord.as_ref(), 0, now));
                    if let Some(p) = pstate
                        && !conforms(p.tat_ns[limit as usize], bucket, now)
                        && !self.protected
                    {
                        return self.verdict(
                            class,
                            Verdict::DropPrefix,
                            class,
                            format!("its prefix's {} bucket is empty", limit.name()),
                        );
                    }
                }
            }
        }
        let because = match (state.is_some(), verified) {
            (_, true) => "verified: within its (verified) bucket".to_owned(),
            (true, false) => format!("within its {} bucket", limit.name()),
            (false, false) => "a new source: its first packet fits".to_owned(),
        };
        self.verdict(class, Verdict::Pass, class, because)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_left_counts_the_packets_that_fit_back_to_back() {
        let limit = RateLimit::per_second(1, 10);
        let now = 1_000 * NS_PER_SEC;
        assert_eq!(tokens_left(0, &limit, now), 10);
        // Three drawn just now: seven left.
        assert_eq!(tokens_left(now + 3 * NS_PER_SEC, &limit, now), 7);
        assert_eq!(tokens_left(now + 10 * NS_PER_SEC, &limit, now), 0);
        assert!(!conforms(now + 10 * NS_PER_SEC, &limit, now));
        assert!(conforms(now + 9 * NS_PER_SEC, &limit, now));
    }

    #[test]
    fn addresses_parse_and_cidrs_are_refused_with_the_fix() {
        assert_eq!(
            parse_address("203.0.113.7/32").unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert!(parse_address("2001:db8::7").is_ok());
        let err = parse_address("::ffff:198.51.100.7")
            .unwrap_err()
            .to_string();
        assert!(err.contains("write 198.51.100.7"), "{err}");
        let err = parse_address("198.51.100.0/24").unwrap_err().to_string();
        assert!(
            err.contains("not an IP address") && err.contains("203.0.113.7"),
            "{err}"
        );
    }

    #[test]
    fn prefix_levels_are_masked_in_their_family() {
        assert_eq!(
            level_net("198.51.100.77".parse().unwrap(), 120),
            "198.51.100.0/24".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            level_net("2001:db8:1:2::9".parse().unwrap(), 48),
            "2001:db8:1::/48".parse::<IpNet>().unwrap()
        );
    }
}
