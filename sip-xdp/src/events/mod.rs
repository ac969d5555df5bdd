//! Ban events from the `BAN_EVENTS` ring buffer: decoding, and logging them one structured line
//! each, under a rate limit.
//!
//! The rate limit exists because the kernel bans whatever it sees: a spoofed flood from millions
//! of addresses, each banned once, must not turn into millions of log lines. Lines past the limit
//! are counted and summarised once per `summary_interval`.
use std::{
    borrow::Borrow,
    collections::HashMap,
    future::Future,
    mem::size_of,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use ipnet::IpNet;
use sip_xdp_common::{BanCause, BanEvent, ban_event_kind};
use thiserror::Error;
use tokio::io::{Interest, unix::AsyncFd};

use crate::maps::key_addr;

/// The coarse clock the kernel stamps advances one jiffy at a time (1 to 10 ms), so a shorter
/// window is clock resolution, not a measurement; rates are computed over at least this long.
const MIN_RATE_WINDOW_NS: u64 = 10_000_000;
/// Below this window the extrapolated rate is too rough to quote alone (a jiffy is up to 10% of
/// it), so the human message gives the packet count and window instead.
const SHORT_WINDOW_NS: u64 = 100_000_000;
/// How many distinct suppressed sources are counted per summary period. Past this, new sources
/// only add to a total: a spoofed flood would otherwise grow the map without bound.
const MAX_TRACKED_SOURCES: usize = 1024;
/// Sources named in a summary line.
const TOP_SOURCES: usize = 5;

#[derive(Debug, Error)]
pub enum EventsError {
    #[error(
        "cannot watch the {ring} ring buffer for events: {source}; run the daemon inside a tokio runtime with IO enabled"
    )]
    Register {
        ring: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "waiting for events on the {ring} ring buffer failed: {source}; restart the daemon to reopen the pinned map"
    )]
    Poll {
        ring: &'static str,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanEventKind {
    Ban,
    WouldBan,
    Expired,
    /// One flow (address and port) of a verified address banned for failed authentication.
    FlowBan,
    WouldFlowBan,
}

impl BanEventKind {
    pub const COUNT: usize = 5;

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ban => "ban",
            Self::WouldBan => "would_ban",
            Self::Expired => "expired",
            Self::FlowBan => "flow_ban",
            Self::WouldFlowBan => "would_flow_ban",
        }
    }

    pub const fn from_raw(kind: u8) -> Option<Self> {
        match kind {
            ban_event_kind::BAN => Some(Self::Ban),
            ban_event_kind::WOULD_BAN => Some(Self::WouldBan),
            ban_event_kind::EXPIRED => Some(Self::Expired),
            ban_event_kind::FLOW_BAN => Some(Self::FlowBan),
            ban_event_kind::WOULD_FLOW_BAN => Some(Self::WouldFlowBan),
            _ => None,
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Ban => 0,
            Self::WouldBan => 1,
            Self::Expired => 2,
            Self::FlowBan => 3,
            Self::WouldFlowBan => 4,
        }
    }

    /// A ban (or would-be ban) being imposed, of an address or a flow.
    pub const fn is_imposed(self) -> bool {
        !matches!(self, Self::Expired)
    }

    pub const fn is_monitor_only(self) -> bool {
        matches!(self, Self::WouldBan | Self::WouldFlowBan)
    }
}

/// A decoded [`BanEvent`].
#[derive(Clone, Debug, PartialEq)]
pub struct BanRecord {
    pub kind: BanEventKind,
    /// As the kernel keyed it: an IPv6 source may be masked to the configured prefix.
    pub source: IpAddr,
    /// The flow's port, for flow bans.
    pub port: Option<u16>,
    /// For the ban of a prefix (`[prefixes]`), its length as the operator writes it (24 for an
    /// IPv4 /24, 64 for an IPv6 /64); `source` is then the prefix's first address.
    pub prefix_len: Option<u8>,
    /// The bucket that ran dry, or the failure kind of an auth ban.
    pub cause: BanCause,
    pub rate_per_sec: f64,
    pub window_packets: u32,
    pub window_ns: u64,
    pub duration_ns: u64,
    pub strikes: u32,
    /// CLOCK_MONOTONIC_COARSE, as [`crate::time::monotonic_now_ns`].
    pub banned_until_mono_ns: u64,
    pub at_mono_ns: u64,
}

impl BanRecord {
    /// `None` for an unknown kind or limit class, or a prefix length no key can have (a kernel
    /// built from other sources).
    pub fn decode(event: &BanEvent) -> Option<BanRecord> {
        let source = key_addr(event.addr);
        let prefix_len = match (event.prefix_len, source) {
            (0, _) => None,
            (len @ 96..=128, IpAddr::V4(_)) => Some(len - 96),
            (len @ 1..=128, IpAddr::V6(_)) => Some(len),
            _ => return None,
        };
        Some(BanRecord {
            kind: BanEventKind::from_raw(event.kind)?,
            source,
            port: (event.port != 0).then_some(event.port),
            prefix_len,
            cause: BanCause::from_ban_class(event.limit_class)?,
            rate_per_sec: rate_per_sec(event.window_packets, event.window_ns),
            window_packets: event.window_packets,
            window_ns: event.window_ns,
            duration_ns: event.duration_ns,
            strikes: event.strikes,
            banned_until_mono_ns: event.banned_until_ns,
            at_mono_ns: event.now_ns,
        })
    }
}

impl BanRecord {
    /// The banned prefix, for a prefix ban.
    pub fn prefix(&self) -> Option<IpNet> {
        let len = self.prefix_len?;
        IpNet::new(self.source, len).ok().map(|net| net.trunc())
    }

    /// What was banned as `ban list` names it: an address, or a prefix as a CIDR.
    pub fn subject(&self) -> String {
        match self.prefix() {
            Some(net) => net.to_string(),
            None => self.source.to_string(),
        }
    }

    /// The `kind` label of `sip_xdp_ban_events_total`: the event's kind, or for a prefix's ban
    /// `prefix_ban`, `would_prefix_ban` and `prefix_expired`, so that prefix bans are told
    /// apart from the bans of single sources.
    pub fn metric_kind(&self) -> &'static str {
        if self.prefix_len.is_none() {
            return self.kind.name();
        }
        match self.kind {
            BanEventKind::Expired => "prefix_expired",
            BanEventKind::WouldBan | BanEventKind::WouldFlowBan => "would_prefix_ban",
            BanEventKind::Ban | BanEventKind::FlowBan => "prefix_ban",
        }
    }

    /// `rate`, `auth`, `fingerprint`, `trap` or, for a prefix's ban, `prefix`.
    pub fn origin(&self) -> &'static str {
        if self.prefix_len.is_some() {
            "prefix"
        } else {
            self.cause.origin()
        }
    }
}

/// Packets per second over the window, the window taken as at least `MIN_RATE_WINDOW_NS`.
pub fn rate_per_sec(window_packets: u32, window_ns: u64) -> f64 {
    let window_ns = window_ns.max(MIN_RATE_WINDOW_NS);
    f64::from(window_packets) / (window_ns as f64 / 1e9)
}

/// Decodes the raw ring-buffer item bytes (length check, unaligned read).
///
/// The kernel reserves exactly one `BanEvent` per item, so any other length means the program
/// was built from other sources and the bytes cannot be trusted to mean the same fields.
pub fn decode_bytes(bytes: &[u8]) -> Option<BanRecord> {
    if bytes.len() != size_of::<BanEvent>() {
        return None;
    }
    // SAFETY: the length is checked above; BanEvent is #[repr(C)] made of integers and byte
    // arrays (it is aya::Pod), so every bit pattern is a valid value; read_unaligned because ring
    // buffer items are only 8-byte aligned by convention, not by type.
    let event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<BanEvent>()) };
    BanRecord::decode(&event)
}

/// The wall-clock time of a monotonic instant, given a simultaneous reading of both clocks.
pub fn mono_to_wall(mono_ns: u64, now_mono_ns: u64, now_wall: SystemTime) -> SystemTime {
    let wall = if mono_ns >= now_mono_ns {
        now_wall.checked_add(Duration::from_nanos(mono_ns - now_mono_ns))
    } else {
        now_wall.checked_sub(Duration::from_nanos(now_mono_ns - mono_ns))
    };
    wall.unwrap_or(now_wall)
}

/// RFC 3339 (UTC, whole seconds) of a monotonic instant.
pub fn mono_to_rfc3339(mono_ns: u64, now_mono_ns: u64, now_wall: SystemTime) -> String {
    humantime::format_rfc3339_seconds(mono_to_wall(mono_ns, now_mono_ns, now_wall)).to_string()
}

fn rate_phrase(record: &BanRecord) -> String {
    let class = match record.cause {
        BanCause::Rate(class) => class.name(),
        BanCause::Auth(kind) => {
            return format!(
                "failed authentication in the server's answers ({})",
                kind.name()
            );
        }
        // The event does not carry the token; `sip-xdp signature list` shows which one's hits
        // went up.
        BanCause::Signature(kind) => {
            return match kind {
                sip_xdp_common::SignatureKind::Fingerprint => {
                    "a scanner's fingerprint (a listed token in User-Agent, From or To; \
                     `sip-xdp signature list` shows the hits)"
                        .to_string()
                }
                sip_xdp_common::SignatureKind::Trap => {
                    "a REGISTER, INVITE or OPTIONS for a trap account (`sip-xdp signature \
                     list` shows the hits)"
                        .to_string()
                }
            };
        }
    };
    if record.window_ns == 0 {
        format!("{class} at {} packets at once", record.window_packets)
    } else if record.window_ns < SHORT_WINDOW_NS {
        format!(
            "{class} at {} packets in {}ms",
            record.window_packets,
            record.window_ns.div_ceil(1_000_000)
        )
    } else {
        format!("{class} at {:.0}/s", record.rate_per_sec)
    }
}

/// The human part of a prefix ban's event line: the prefix, its class, and what its sources
/// sent together.
fn prefix_message(record: &BanRecord, net: IpNet, duration: &str) -> String {
    let class = record.cause.name();
    let together = format!(
        "its unverified sources together sent {}",
        rate_phrase(record)
    );
    match record.kind {
        BanEventKind::Expired => format!(
            "ban on prefix {net} ({class}) expired after {duration}, strike {}",
            record.strikes
        ),
        BanEventKind::WouldBan | BanEventKind::WouldFlowBan => format!(
            "would ban prefix {net} ({class}) for {duration} (monitor mode), strike {} \
             ({together})",
            record.strikes
        ),
        BanEventKind::Ban | BanEventKind::FlowBan => format!(
            "banned prefix {net} ({class}) for {duration}, strike {} ({together})",
            record.strikes
        ),
    }
}

/// The human part of a ban event line.
pub fn message(record: &BanRecord) -> String {
    let duration = crate::time::human_duration_ns(record.duration_ns);
    if let Some(net) = record.prefix() {
        return prefix_message(record, net, &duration);
    }
    match record.kind {
        BanEventKind::Ban => format!(
            "banned {} for {duration}: {}, strike {}",
            record.source,
            rate_phrase(record),
            record.strikes
        ),
        BanEventKind::WouldBan => format!(
            "would ban {} for {duration} (monitor mode): {}, strike {}",
            record.source,
            rate_phrase(record),
            record.strikes
        ),
        BanEventKind::Expired => format!(
            "ban on {} expired after {duration}: {}, strike {}",
            record.source,
            record.cause.name(),
            record.strikes
        ),
        BanEventKind::FlowBan | BanEventKind::WouldFlowBan => format!(
            "{} {}:{} for {duration}{}: {}, strike {} (the address's other phones are not \
             affected)",
            if record.kind == BanEventKind::FlowBan {
                "banned phone"
            } else {
                "would ban phone"
            },
            record.source,
            record.port.unwrap_or(0),
            if record.kind == BanEventKind::FlowBan {
                ""
            } else {
                " (monitor mode)"
            },
            rate_phrase(record),
            record.strikes
        ),
    }
}

fn emit(record: &BanRecord, until: &str) {
    let message = message(record);
    // One decimal is all the window's resolution supports; more digits would only be noise.
    let rate_per_sec = (record.rate_per_sec * 10.0).round() / 10.0;
    let duration_s = record.duration_ns as f64 / 1e9;
    let window_ms = record.window_ns / 1_000_000;
    let subject = record.subject();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                event = record.kind.name(),
                source = %subject,
                port = record.port.unwrap_or(0),
                prefix_len = record.prefix_len.unwrap_or(0),
                origin = record.origin(),
                class = record.cause.name(),
                rate_per_sec,
                window_packets = record.window_packets,
                window_ms,
                duration_s,
                strikes = record.strikes,
                until = %until,
                "{message}"
            )
        };
    }
    match record.kind {
        BanEventKind::Ban | BanEventKind::FlowBan => line!(warn),
        BanEventKind::WouldBan | BanEventKind::Expired | BanEventKind::WouldFlowBan => {
            line!(info)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLimiterConfig {
    /// Ban event lines written per second on average; 0 with `burst` 0 writes summaries only.
    pub lines_per_sec: u32,
    /// Lines written back to back before the average applies.
    pub burst: u32,
    /// How often a summary of suppressed lines is written (when anything was suppressed).
    pub summary_interval: Duration,
}

/// What was suppressed since the last summary.
#[derive(Debug, Default)]
struct Suppressed {
    total: u64,
    by_kind: [u64; BanEventKind::COUNT],
    by_cause: HashMap<BanCause, u64>,
    /// By what was banned: an address, or a prefix as (first address, length).
    by_source: HashMap<(IpAddr, Option<u8>), u64>,
    /// Events from sources that arrived after `by_source` was full.
    untracked: u64,
}

impl Suppressed {
    fn count(&mut self, record: &BanRecord) {
        self.total += 1;
        self.by_kind[record.kind.index()] += 1;
        *self.by_cause.entry(record.cause).or_default() += 1;
        let key = (record.source, record.prefix_len);
        if let Some(count) = self.by_source.get_mut(&key) {
            *count += 1;
        } else if self.by_source.len() < MAX_TRACKED_SOURCES {
            self.by_source.insert(key, 1);
        } else {
            self.untracked += 1;
        }
    }

    /// The sources (or prefixes, as CIDRs) with the most suppressed lines.
    fn top_sources(&self) -> Vec<(String, u64)> {
        let mut sources: Vec<((IpAddr, Option<u8>), u64)> =
            self.by_source.iter().map(|(&a, &n)| (a, n)).collect();
        // Address as tie-breaker so the same counts always give the same line.
        sources.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sources.truncate(TOP_SOURCES);
        sources
            .into_iter()
            .map(|((addr, len), n)| {
                let name = match len.and_then(|len| IpNet::new(addr, len).ok()) {
                    Some(net) => net.trunc().to_string(),
                    None => addr.to_string(),
                };
                (name, n)
            })
            .collect()
    }

    fn summary(&self, period: Duration) -> String {
        let kinds = &self.by_kind;
        let mut text = format!(
            "suppressed {} ban event lines in the last {}s: bans={}, would_bans={}, expired={}",
            self.total,
            period.as_secs_f64().round() as u64,
            kinds[BanEventKind::Ban.index()],
            kinds[BanEventKind::WouldBan.index()],
            kinds[BanEventKind::Expired.index()],
        );
        let phones =
            kinds[BanEventKind::FlowBan.index()] + kinds[BanEventKind::WouldFlowBan.index()];
        if phones > 0 {
            text.push_str(&format!(", phone bans={phones}"));
        }
        let mut causes: Vec<(BanCause, u64)> =
            self.by_cause.iter().map(|(&c, &n)| (c, n)).collect();
        causes.sort_by_key(|&(c, _)| c.ban_class());
        let classes: Vec<String> = causes
            .iter()
            .map(|(c, n)| match c {
                BanCause::Rate(_) => format!("{}={n}", c.name()),
                BanCause::Auth(_) => format!("auth {}={n}", c.name()),
                BanCause::Signature(_) => format!("signature {}={n}", c.name()),
            })
            .collect();
        text.push_str("; classes: ");
        text.push_str(&classes.join(", "));
        let top: Vec<String> = self
            .top_sources()
            .iter()
            .map(|(addr, n)| format!("{addr} ({n})"))
            .collect();
        text.push_str("; top sources: ");
        text.push_str(&top.join(", "));
        if self.untracked > 0 {
            text.push_str(&format!(
                " (+{} from sources past the {MAX_TRACKED_SOURCES} tracked)",
                self.untracked
            ));
        }
        text
    }
}

/// Writes ban event lines under a token bucket and summarises the ones it suppresses.
#[derive(Debug)]
pub struct EventLogger {
    cfg: LogLimiterConfig,
    tokens: f64,
    /// `None` until the first call: time only comes from the caller.
    last_refill: Option<Instant>,
    period_start: Option<Instant>,
    suppressed: Suppressed,
    suppressed_total: u64,
}

impl EventLogger {
    pub fn new(cfg: LogLimiterConfig) -> Self {
        let tokens = capacity(&cfg);
        Self {
            cfg,
            tokens,
            last_refill: None,
            period_start: None,
            suppressed: Suppressed::default(),
            suppressed_total: 0,
        }
    }

    /// Takes effect for the next line; counts and the summary period carry over.
    pub fn set_config(&mut self, cfg: LogLimiterConfig) {
        self.tokens = self.tokens.min(capacity(&cfg));
        self.cfg = cfg;
    }

    /// Logs the record (or counts it as suppressed). `now` is passed in so tests control time.
    /// Returns whether a line was written.
    pub fn log(&mut self, record: &BanRecord, now: Instant) -> bool {
        if !self.take_token(now) {
            self.period_start.get_or_insert(now);
            self.suppressed.count(record);
            self.suppressed_total += 1;
            return false;
        }
        let until = mono_to_rfc3339(
            record.banned_until_mono_ns,
            crate::time::monotonic_now_ns(),
            SystemTime::now(),
        );
        emit(record, &until);
        true
    }

    /// Call periodically (the daemon calls it every second): writes the summary line when
    /// `summary_interval` has passed and something was suppressed. Returns the summary text if
    /// one was written.
    pub fn tick(&mut self, now: Instant) -> Option<String> {
        let start = *self.period_start.get_or_insert(now);
        let period = now.saturating_duration_since(start);
        if period < self.cfg.summary_interval {
            return None;
        }
        self.period_start = Some(now);
        if self.suppressed.total == 0 {
            return None;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        let text = suppressed.summary(period);
        let top_sources = suppressed
            .top_sources()
            .iter()
            .map(|(addr, n)| format!("{addr} ({n})"))
            .collect::<Vec<_>>()
            .join(", ");
        let kinds = suppressed.by_kind;
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    event = "ban_log_summary",
                    suppressed = suppressed.total,
                    bans = kinds[BanEventKind::Ban.index()],
                    would_bans = kinds[BanEventKind::WouldBan.index()],
                    expired = kinds[BanEventKind::Expired.index()],
                    period_s = period.as_secs(),
                    top_sources = %top_sources,
                    "{text}"
                )
            };
        }
        if kinds[BanEventKind::Ban.index()] > 0 {
            line!(warn);
        } else {
            line!(info);
        }
        Some(text)
    }

    /// Lines suppressed since the logger was created (summaries do not reset it).
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    fn take_token(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(self.cfg.lines_per_sec))
                .min(capacity(&self.cfg));
        }
        self.last_refill = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A bucket that refills but can hold less than one token would never write a line; a rate
/// without a burst means one line at a time.
fn capacity(cfg: &LogLimiterConfig) -> f64 {
    f64::from(cfg.burst.max(cfg.lines_per_sec.min(1)))
}

const RING_NAME: &str = sip_xdp_common::map_names::BAN_EVENTS;

/// Reads the ring buffer until `shutdown` resolves, calling `on_event` for each decoded record.
/// Sleeps until the kernel writes and drains everything available after each wakeup.
/// Undecodable items are skipped with a debug-level trace.
pub async fn read_events<T: Borrow<MapData>>(
    ring: RingBuf<T>,
    mut on_event: impl FnMut(BanRecord),
    shutdown: impl Future<Output = ()>,
) -> Result<(), EventsError> {
    // SAFETY: the RingBuf owns (or borrows for its whole life) the MapData whose fd it returns,
    // so the fd stays open and the same until the AsyncFd, which owns the RingBuf, is dropped;
    // the ring is never swapped out through get_mut.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|err| {
            EventsError::Register {
                ring: RING_NAME,
                source: err.into_parts().1,
            }
        })?;
    // Events already queued (from before the daemon started) raise no new wakeup.
    drain(ring.get_mut(), &mut on_event);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| EventsError::Poll { ring: RING_NAME, source })?;
                drain(guard.get_inner_mut(), &mut on_event);
                // Only clears the readiness this guard saw: a write that raced the drain wakes
                // us again.
                guard.clear_ready();
            }
        }
    }
}

fn drain<T>(ring: &mut RingBuf<T>, on_event: &mut impl FnMut(BanRecord)) {
    while let Some(item) = ring.next() {
        match decode_bytes(&item) {
            Some(record) => on_event(record),
            None => tracing::debug!(
                len = item.len(),
                "skipping undecodable {RING_NAME} item; is the loaded program from another sip-xdp build?"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
