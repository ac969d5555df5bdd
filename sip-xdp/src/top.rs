//! What `sip-xdp top` shows, read from the pinned maps (never written): a [`Sample`] per refresh,
//! and the rates and top sources two samples make. The terminal side (drawing, keys, actions)
//! is `cli/top.rs`; the actions go through [`crate::control::Control`], as the CLI's do.
//!
//! Reading costs the datapath nothing but the map reads: the `SOURCES` walk stops at
//! `max_sources` entries and is timed, and bans are read from the durable tables (`BANS`,
//! `PREFIX_BANS`, the denylist), which are smaller than `SOURCES`.
use std::{
    collections::{BTreeMap, HashMap},
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sip_xdp_common::{
    BanCause, LimitClass, MethodClass, SourceKey, SourceState, Verdict, ban_flags, flags,
};
use thiserror::Error;

use crate::{
    loader::PinDir,
    maps::{Counters, MapsError, SipMaps, key_addr, prefix_net},
    state::{Clocks, StateFile},
    status::{TableFill, table_fill_with},
    time::NS_PER_SEC,
};

#[derive(Debug, Error)]
pub enum TopError {
    #[error(
        "nothing to show: sip-xdp has no maps pinned under {0} (not attached on this host); run \
         `sip-xdp attach --iface IFACE` or start sip-xdp.service, or pass the right --pin-dir"
    )]
    NotAttached(String),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("reading the table fill: {0:#}")]
    Fill(anyhow::Error),
}

/// One source as a sample reads it from `SOURCES`.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceRow {
    pub addr: IpAddr,
    pub packets: u64,
    pub dropped: u64,
    pub strikes: u32,
    pub verified: bool,
    /// Banned now: (origin, seconds left).
    pub ban: Option<(String, u64)>,
    /// REGISTER bucket: packets that fit back to back now, of its burst.
    pub register_tokens: (u64, u64),
}

/// One ban in force, of any origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanRow {
    pub target: String,
    pub origin: String,
    pub class: Option<String>,
    pub remaining_s: u64,
    pub strikes: Option<u32>,
}

/// The CrowdSec bouncer's health, as the daemon's metrics endpoint serves it.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedHealth {
    /// No daemon serves metrics at the configured address (or metrics are off).
    NoDaemon,
    /// The daemon runs without CrowdSec.
    NotConfigured,
    Crowdsec {
        up: bool,
        /// Seconds since the last successful poll (None: none yet).
        last_sync_s_ago: Option<u64>,
        decisions: u64,
    },
}

/// Everything one refresh reads.
#[derive(Clone, Debug)]
pub struct Sample {
    pub taken: Instant,
    pub counters: Counters,
    pub monitor: bool,
    pub sources: Vec<SourceRow>,
    /// Whether the walk stopped at its bound before the table's end.
    pub walk_truncated: bool,
    pub walk_time: Duration,
    pub bans: Vec<BanRow>,
    pub fill: TableFill,
    pub feed: FeedHealth,
}

/// The maps (and the state file and daemon) `top` reads, opened once.
pub struct Reader {
    maps: SipMaps,
    pins: PinDir,
    state_dir: std::path::PathBuf,
    metrics: Option<SocketAddr>,
    pub max_sources: usize,
}

fn tokens_left(tat_ns: u64, limit: &sip_xdp_common::RateLimit, now_ns: u64) -> u64 {
    let ahead_ns = tat_ns.max(now_ns) - now_ns;
    if limit.is_unlimited() || ahead_ns > limit.burst_tolerance_ns {
        return 0;
    }
    (limit.burst_tolerance_ns - ahead_ns) / limit.interval_ns + 1
}

fn origin_of(ban_class: u8, ban_flags_: u8) -> String {
    if ban_flags_ & ban_flags::MONITOR_ONLY != 0 {
        return "would".to_owned();
    }
    BanCause::from_ban_class(ban_class)
        .map_or("rate", BanCause::origin)
        .to_owned()
}

impl Reader {
    /// Opens the maps pinned in `pin_dir`; `metrics` is the daemon's metrics address (feed
    /// health), if it serves one.
    pub fn open(
        pin_dir: &Path,
        state_dir: &Path,
        metrics: Option<SocketAddr>,
        max_sources: usize,
    ) -> Result<Self, TopError> {
        let pins = PinDir::new(pin_dir);
        if !pins.has_maps() {
            return Err(TopError::NotAttached(pins.path().display().to_string()));
        }
        Ok(Self {
            maps: SipMaps::open_pinned(&pins)?,
            pins,
            state_dir: state_dir.to_owned(),
            metrics,
            max_sources: max_sources.max(1),
        })
    }

    /// The interfaces the program is attached to (for the header).
    pub fn attached(&self) -> Vec<String> {
        self.pins
            .attachments()
            .map(|a| {
                a.into_iter()
                    .filter(|a| a.hook == crate::loader::Hook::XdpIngress)
                    .map(|a| a.iface)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads one sample.
    pub fn sample(&self) -> Result<Sample, TopError> {
        let clocks = Clocks::now();
        let now_ns = clocks.mono_ns;
        let cfg = self.maps.read_config()?;
        let monitor = cfg.has_flag(flags::MONITOR);
        let counters = self.maps.counters()?;

        let started = Instant::now();
        let (raw, walk_truncated) = self.maps.sources_bounded(self.max_sources)?;
        let walk_time = started.elapsed();
        let answers = cfg.has_flag(flags::ANSWERS);
        let register = LimitClass::Register as usize;
        let sources = raw
            .iter()
            .map(|(key, s): &(SourceKey, SourceState)| {
                let verified = answers && now_ns < s.verified_until_ns;
                let limit = if verified {
                    &cfg.verified_limits[register]
                } else {
                    &cfg.limits[register]
                };
                let banned = now_ns < s.banned_until_ns
                    && (s.ban_flags & ban_flags::MONITOR_ONLY == 0 || monitor);
                SourceRow {
                    addr: key_addr(key.addr),
                    packets: s.packets,
                    dropped: s.dropped,
                    strikes: s.strikes,
                    verified,
                    ban: banned.then(|| {
                        (
                            origin_of(s.ban_class, s.ban_flags),
                            (s.banned_until_ns - now_ns).div_ceil(NS_PER_SEC),
                        )
                    }),
                    register_tokens: (
                        tokens_left(s.tat_ns[register], limit, now_ns),
                        limit.burst(),
                    ),
                }
            })
            .collect();

        let mut bans = Vec::new();
        for (key, ban) in self.maps.bans()? {
            if ban.banned_until_ns > now_ns
                && (ban.ban_flags & ban_flags::MONITOR_ONLY == 0 || monitor)
            {
                bans.push(BanRow {
                    target: key_addr(key.addr).to_string(),
                    origin: origin_of(ban.ban_class, ban.ban_flags),
                    class: BanCause::from_ban_class(ban.ban_class).map(|c| c.name().to_owned()),
                    remaining_s: (ban.banned_until_ns - now_ns).div_ceil(NS_PER_SEC),
                    strikes: Some(ban.strikes),
                });
            }
        }
        for (key, ban) in self.maps.prefix_bans()? {
            if ban.banned_until_ns > now_ns
                && (ban.ban_flags & ban_flags::MONITOR_ONLY == 0 || monitor)
                && let Some(net) = prefix_net(&key)
            {
                bans.push(BanRow {
                    target: net.to_string(),
                    origin: if ban.ban_flags & ban_flags::MONITOR_ONLY != 0 {
                        "would".to_owned()
                    } else {
                        "prefix".to_owned()
                    },
                    class: BanCause::from_ban_class(ban.ban_class).map(|c| c.name().to_owned()),
                    remaining_s: (ban.banned_until_ns - now_ns).div_ceil(NS_PER_SEC),
                    strikes: Some(ban.strikes),
                });
            }
        }
        let now_wall = clocks.wall_ns / NS_PER_SEC;
        if let Ok(state) = StateFile::load(&self.state_dir) {
            for b in state.bans.iter().filter(|b| b.expires_at > now_wall) {
                bans.push(BanRow {
                    target: b.net.to_string(),
                    origin: b.origin.name().to_owned(),
                    class: None,
                    remaining_s: b.expires_at - now_wall,
                    strikes: None,
                });
            }
        }
        bans.sort_by_key(|b| std::cmp::Reverse(b.remaining_s));

        let mut fill = table_fill_with(&self.maps, &raw).map_err(TopError::Fill)?;
        if walk_truncated {
            // At least this many: the walk stopped before the end.
            fill.tracked_sources = raw.len() as u64;
        }
        Ok(Sample {
            taken: Instant::now(),
            counters,
            monitor,
            sources,
            walk_truncated,
            walk_time,
            bans,
            fill,
            feed: self.feed_health(clocks.wall_ns / NS_PER_SEC),
        })
    }

    fn feed_health(&self, now_wall: u64) -> FeedHealth {
        let Some(addr) = self.metrics else {
            return FeedHealth::NoDaemon;
        };
        match scrape(addr) {
            Some(body) => feed_from_metrics(&body, now_wall),
            None => FeedHealth::NoDaemon,
        }
    }
}

/// GET /metrics from the daemon, within a fraction of the refresh.
fn scrape(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_millis(200);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.take(4 << 20).read_to_string(&mut body).ok()?;
    body.starts_with("HTTP/1.1 200").then_some(body)
}

/// The CrowdSec gauges of a metrics page.
pub fn feed_from_metrics(body: &str, now_wall: u64) -> FeedHealth {
    let value = |name: &str| {
        body.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    match value("sip_xdp_crowdsec_lapi_up") {
        None => FeedHealth::NotConfigured,
        Some(up) => {
            let last = value("sip_xdp_crowdsec_last_sync_timestamp_seconds").unwrap_or(0.0);
            FeedHealth::Crowdsec {
                up: up >= 1.0,
                last_sync_s_ago: (last > 0.0).then(|| now_wall.saturating_sub(last as u64)),
                decisions: value("sip_xdp_crowdsec_decisions").unwrap_or(0.0) as u64,
            }
        }
    }
}

/// How the sources table is ordered (the `s` key cycles through them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    PacketRate,
    DropRate,
    Packets,
    Strikes,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            SortBy::PacketRate => SortBy::DropRate,
            SortBy::DropRate => SortBy::Packets,
            SortBy::Packets => SortBy::Strikes,
            SortBy::Strikes => SortBy::PacketRate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortBy::PacketRate => "pkts/s",
            SortBy::DropRate => "drops/s",
            SortBy::Packets => "packets",
            SortBy::Strikes => "strikes",
        }
    }
}

/// A source with its rates over the last refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct RankedSource {
    pub row: SourceRow,
    pub packets_per_sec: f64,
    pub drops_per_sec: f64,
}

/// Packets per second between two samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    pub by_verdict: BTreeMap<&'static str, f64>,
    pub by_class: BTreeMap<&'static str, f64>,
    pub total: f64,
}

fn per_sec(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

/// The rates from `before` to `now` (`COUNTERS` deltas).
pub fn rates(before: &Sample, now: &Sample) -> Rates {
    let secs = now
        .taken
        .duration_since(before.taken)
        .as_secs_f64()
        .max(1e-3);
    let mut rates = Rates::default();
    for verdict in Verdict::ALL {
        for class in MethodClass::ALL {
            let r = per_sec(
                now.counters.packets(verdict, class),
                before.counters.packets(verdict, class),
                secs,
            );
            if r > 0.0 {
                *rates.by_verdict.entry(verdict.name()).or_default() += r;
                *rates.by_class.entry(class.name()).or_default() += r;
                rates.total += r;
            }
        }
    }
    rates
}

/// The sources of `now` inside `filter`, with their rates since `before`, ordered by `sort`.
pub fn rank(
    before: Option<&Sample>,
    now: &Sample,
    filter: Option<IpNet>,
    sort: SortBy,
) -> Vec<RankedSource> {
    let secs = before.map_or(1.0, |b| {
        now.taken.duration_since(b.taken).as_secs_f64().max(1e-3)
    });
    let previous: HashMap<IpAddr, (u64, u64)> = before
        .map(|b| {
            b.sources
                .iter()
                .map(|s| (s.addr, (s.packets, s.dropped)))
                .collect()
        })
        .unwrap_or_default();
    let mut ranked: Vec<RankedSource> = now
        .sources
        .iter()
        .filter(|s| filter.is_none_or(|f| f.contains(&s.addr)))
        .map(|s| {
            let (packets, dropped) = previous.get(&s.addr).copied().unwrap_or((0, 0));
            RankedSource {
                packets_per_sec: if before.is_some() {
                    per_sec(s.packets, packets, secs)
                } else {
                    0.0
                },
                drops_per_sec: if before.is_some() {
                    per_sec(s.dropped, dropped, secs)
                } else {
                    0.0
                },
                row: s.clone(),
            }
        })
        .collect();
    let key = |r: &RankedSource| -> (f64, f64) {
        match sort {
            SortBy::PacketRate => (r.packets_per_sec, r.row.packets as f64),
            SortBy::DropRate => (r.drops_per_sec, r.row.dropped as f64),
            SortBy::Packets => (r.row.packets as f64, r.row.dropped as f64),
            SortBy::Strikes => (f64::from(r.row.strikes), r.row.packets as f64),
        }
    };
    ranked.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.row.addr.cmp(&b.row.addr))
    });
    ranked
}

/// Bans in force per origin.
pub fn bans_by_origin(bans: &[BanRow]) -> BTreeMap<&str, usize> {
    let mut by = BTreeMap::new();
    for b in bans {
        *by.entry(b.origin.as_str()).or_default() += 1;
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(taken: Instant, sources: Vec<SourceRow>) -> Sample {
        Sample {
            taken,
            counters: Counters::default(),
            monitor: false,
            sources,
            walk_truncated: false,
            walk_time: Duration::ZERO,
            bans: Vec::new(),
            fill: TableFill::default(),
            feed: FeedHealth::NoDaemon,
        }
    }

    fn row(addr: &str, packets: u64, dropped: u64) -> SourceRow {
        SourceRow {
            addr: addr.parse().unwrap(),
            packets,
            dropped,
            strikes: 0,
            verified: false,
            ban: None,
            register_tokens: (0, 0),
        }
    }

    #[test]
    fn sources_rank_by_their_rate_since_the_last_sample_and_filter_by_prefix() {
        let t0 = Instant::now();
        let before = sample(
            t0,
            vec![row("198.51.100.1", 1000, 0), row("203.0.113.9", 0, 0)],
        );
        let now = sample(
            t0 + Duration::from_secs(2),
            vec![
                row("198.51.100.1", 1010, 0),
                row("203.0.113.9", 400, 390),
                row("203.0.113.10", 2, 0),
            ],
        );
        let ranked = rank(Some(&before), &now, None, SortBy::PacketRate);
        assert_eq!(ranked[0].row.addr.to_string(), "203.0.113.9");
        assert_eq!(ranked[0].packets_per_sec, 200.0);
        assert_eq!(ranked[0].drops_per_sec, 195.0);
        assert_eq!(ranked[1].packets_per_sec, 5.0);
        let by_total = rank(Some(&before), &now, None, SortBy::Packets);
        assert_eq!(by_total[0].row.addr.to_string(), "198.51.100.1");
        let filtered = rank(
            Some(&before),
            &now,
            Some("203.0.113.0/24".parse().unwrap()),
            SortBy::DropRate,
        );
        assert_eq!(filtered.len(), 2);
        assert!(
            filtered
                .iter()
                .all(|r| r.row.addr.to_string().starts_with("203.0.113."))
        );
    }

    #[test]
    fn feed_health_reads_the_crowdsec_gauges() {
        let body = "HTTP/1.1 200 OK\r\n\r\n# HELP x\nsip_xdp_crowdsec_lapi_up 1\n\
                    sip_xdp_crowdsec_last_sync_timestamp_seconds 1000.5\n\
                    sip_xdp_crowdsec_decisions 42\n";
        assert_eq!(
            feed_from_metrics(body, 1010),
            FeedHealth::Crowdsec {
                up: true,
                last_sync_s_ago: Some(10),
                decisions: 42
            }
        );
        assert_eq!(
            feed_from_metrics("sip_xdp_packets_total 1\n", 0),
            FeedHealth::NotConfigured
        );
    }
}
