//! Prometheus metrics: rendering a [`Snapshot`] of the daemon's state in the text exposition
//! format, and the HTTP endpoint that serves it.
//!
//! Each scrape builds a fresh [`Registry`] from a snapshot the daemon gathers at that moment,
//! rather than keeping long-lived metric objects in sync with the maps: the kernel counters are
//! the source of truth and are monotonic, so setting a fresh counter to their value is exact and
//! nothing can drift.
//!
//! Series that always appear, even at zero, so that dashboards and alerts have data from the
//! first scrape: `sip_xdp_packets_total` for every verdict with method `register` and `invite`
//! (the methods attacks target), the `mode` and `result` variants of the labelled counters and
//! gauges, and `sip_xdp_ban_events_total` for every (kind, class) pair the daemon can report.
//! Other packet series appear once their count is non-zero, which keeps the 8 x 19 matrix from
//! flooding the scrape with series that never move (a `drop_rate` of `ack` when in-dialog
//! requests are not limited, say).
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

use axum::{
    http::{Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::Collector,
};
use sip_xdp_common::{EventCounter, LimitClass, MethodClass, Verdict};
use thiserror::Error;

use crate::{maps::Counters, state::BanOrigin};

/// Everything the metrics report, gathered by the daemon at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per (verdict, method) packets and the event counter slots, summed over CPUs.
    pub counters: Counters,
    /// Entries in the `SOURCES` LRU.
    pub tracked_sources: u64,
    /// Its `max_entries`.
    pub sources_capacity: u64,
    /// Sources banned now (enforcing).
    pub active_bans: u64,
    /// Monitor-mode would-bans still running.
    pub active_would_bans: u64,
    /// Ban-list bans in force, by origin (`"manual"` | `"fail2ban"` | `"crowdsec"`).
    pub list_bans: BTreeMap<String, u64>,
    /// Ban-list bans ever added (renewals included), by origin; kept in the state file.
    pub list_bans_added: BTreeMap<String, u64>,
    pub allowlist_entries: u64,
    /// Permanent deny entries.
    pub denylist_entries: u64,
    /// Protected-list entries.
    pub protected_entries: u64,
    /// Records in the durable ban table and its capacity.
    pub ban_records: u64,
    pub bans_capacity: u64,
    /// (interface, mode `"native"` | `"skb"`).
    pub attached: Vec<(String, String)>,
    /// (kind `"ban"` | `"would_ban"` | `"expired"`, limit class `"register"` | `"invite"` |
    /// `"options"` | `"other"`) -> events the daemon read from the XDP program.
    pub ban_events: BTreeMap<(String, String), u64>,
    pub log_lines_suppressed: u64,
    pub config_reloads: u64,
    pub config_reload_failures: u64,
    pub config_last_reload_success_timestamp_seconds: f64,
    /// The CrowdSec client's figures; `None` while `[crowdsec]` is off (its series are left out).
    pub crowdsec: Option<CrowdsecMetrics>,
    /// The metrics server's own connection counts (filled in by [`serve`]).
    pub http: HttpMetrics,
}

/// Connections the metrics server closed before answering, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpMetrics {
    /// Over [`ServerLimits::max_connections`]: the oldest connection still sending its request,
    /// or the new one when every connection is being answered.
    pub closed_over_limit: u64,
    /// Request headers not complete within [`ServerLimits::header_read_timeout`].
    pub closed_header_timeout: u64,
    /// Response not written within [`ServerLimits::connection_timeout`] of the accept.
    pub closed_response_timeout: u64,
}

/// What the CrowdSec bouncer and signal pusher count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrowdsecMetrics {
    /// The last poll of the Local API succeeded.
    pub lapi_up: bool,
    pub polls_success: u64,
    pub polls_failure: u64,
    /// Unix time of the last successful poll (0: none yet).
    pub last_sync_timestamp_seconds: f64,
    /// Ban decisions held (each may cover the same net as another).
    pub decisions: u64,
    pub alerts_pushed: u64,
    /// Alerts given up: queue full (a flood of bans) or rejected by the Local API.
    pub alerts_dropped: u64,
    /// Decisions refused for a net wider than crowdsec.min_prefix_v4 / min_prefix_v6.
    pub decisions_refused_too_broad: u64,
    /// Decisions refused for an IPv6 range covering the IPv4-mapped block.
    pub decisions_refused_ipv4_mapped: u64,
}

/// A source of snapshots (the daemon implements it by reading the pinned maps).
pub type SnapshotFn = Arc<dyn Fn() -> anyhow::Result<Snapshot> + Send + Sync>;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("building metric {name} failed: {source}; this is a bug in sip-xdp, please report it")]
    Build {
        name: &'static str,
        #[source]
        source: prometheus::Error,
    },
    #[error(
        "encoding the metrics in the Prometheus text format failed: {0}; this is a bug in sip-xdp, please report it"
    )]
    Encode(#[source] prometheus::Error),
    #[error(
        "the metrics HTTP server stopped: {0}; check the metrics listen address and restart sip-xdp"
    )]
    Serve(#[source] std::io::Error),
}

/// Content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Method classes whose packet series are emitted even at zero.
const ALWAYS_REPORTED_METHODS: [MethodClass; 3] = [
    MethodClass::Register,
    MethodClass::Invite,
    MethodClass::Unparsed,
];

/// Ban event (kind, class) pairs emitted even at zero: the ones the daemon can produce.
fn expected_ban_event_labels() -> Vec<(&'static str, &'static str)> {
    let mut labels = Vec::new();
    for kind in ["ban", "would_ban", "expired"] {
        for class in LimitClass::ALL {
            labels.push((kind, class.name()));
        }
    }
    labels
}

/// A gauge holds an `i64`; a count past `i64::MAX` cannot happen in practice, and clamping is
/// the honest answer if it did.
fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Registers metrics into one scrape's registry, naming the metric in every error.
struct ScrapeRegistry {
    registry: Registry,
}

impl ScrapeRegistry {
    fn register<C: Collector + Clone + 'static>(
        &self,
        name: &'static str,
        collector: Result<C, prometheus::Error>,
    ) -> Result<C, MetricsError> {
        let build = |source| MetricsError::Build { name, source };
        let collector = collector.map_err(build)?;
        self.registry
            .register(Box::new(collector.clone()))
            .map_err(build)?;
        Ok(collector)
    }

    fn counter(&self, name: &'static str, help: &str, value: u64) -> Result<(), MetricsError> {
        self.register(name, IntCounter::new(name, help))?
            .inc_by(value);
        Ok(())
    }

    fn counter_vec(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<LabelledCounter, MetricsError> {
        let vec = self.register(name, IntCounterVec::new(Opts::new(name, help), labels))?;
        Ok(LabelledCounter { name, vec })
    }

    fn gauge(&self, name: &'static str, help: &str, value: u64) -> Result<(), MetricsError> {
        self.register(name, IntGauge::new(name, help))?
            .set(gauge_value(value));
        Ok(())
    }

    fn gauge_vec(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<LabelledGauge, MetricsError> {
        let vec = self.register(name, IntGaugeVec::new(Opts::new(name, help), labels))?;
        Ok(LabelledGauge { name, vec })
    }

    fn float_gauge(&self, name: &'static str, help: &str, value: f64) -> Result<(), MetricsError> {
        self.register(name, Gauge::new(name, help))?.set(value);
        Ok(())
    }
}

struct LabelledCounter {
    name: &'static str,
    vec: IntCounterVec,
}

impl LabelledCounter {
    /// Adds rather than sets, so a label set that appears twice (the same attachment listed
    /// twice, say) sums instead of panicking or silently dropping one.
    fn add(&self, labels: &[&str], value: u64) -> Result<(), MetricsError> {
        self.vec
            .get_metric_with_label_values(labels)
            .map_err(|source| MetricsError::Build {
                name: self.name,
                source,
            })?
            .inc_by(value);
        Ok(())
    }
}

struct LabelledGauge {
    name: &'static str,
    vec: IntGaugeVec,
}

impl LabelledGauge {
    fn set(&self, labels: &[&str], value: u64) -> Result<(), MetricsError> {
        self.vec
            .get_metric_with_label_values(labels)
            .map_err(|source| MetricsError::Build {
                name: self.name,
                source,
            })?
            .set(gauge_value(value));
        Ok(())
    }
}

/// Renders a snapshot in the Prometheus text exposition format.
pub fn render(snapshot: &Snapshot) -> Result<String, MetricsError> {
    let scrape = ScrapeRegistry {
        registry: Registry::new(),
    };
    let counters = &snapshot.counters;

    let packets = scrape.counter_vec(
        "sip_xdp_packets_total",
        "Packets the XDP program classified, by verdict (what it did, or in monitor mode would \
         have done) and SIP method class.",
        &["verdict", "method"],
    )?;
    for verdict in Verdict::ALL {
        for method in MethodClass::ALL {
            let value = counters.packets(verdict, method);
            if value != 0 || ALWAYS_REPORTED_METHODS.contains(&method) {
                packets.add(&[verdict.name(), method.name()], value)?;
            }
        }
    }

    let bans = scrape.counter_vec(
        "sip_xdp_bans_total",
        "Rate-limit bans the XDP program imposed (mode=enforce) or would have imposed in monitor \
         mode (mode=monitor).",
        &["mode"],
    )?;
    bans.add(&["enforce"], counters.event(EventCounter::BansIssued))?;
    bans.add(&["monitor"], counters.event(EventCounter::WouldBans))?;

    scrape.counter(
        "sip_xdp_ban_events_lost_total",
        "Ban events the XDP program could not send because the ring buffer was full; the bans \
         still apply, but were not logged.",
        counters.event(EventCounter::EventsLost),
    )?;
    scrape.counter(
        "sip_xdp_source_track_failures_total",
        "New sources the XDP program could not track because inserting into the sources map \
         failed; their packets passed unlimited.",
        counters.event(EventCounter::TrackFailures),
    )?;

    scrape.counter(
        "sip_xdp_ban_table_full_total",
        "Bans the XDP program could not write to the durable ban table because it was full; \
         they hold in the sources map, where a flood of new sources can evict them.",
        counters.event(EventCounter::BanTableFull),
    )?;
    scrape.counter(
        "sip_xdp_bans_restored_total",
        "Bans and strike histories the XDP program restored from the durable ban table after \
         the sources map had evicted the source.",
        counters.event(EventCounter::BansRestored),
    )?;
    scrape.counter(
        "sip_xdp_protected_drops_total",
        "Packets of protected sources dropped by their rate limit (protected sources are never \
         banned).",
        counters.event(EventCounter::ProtectedDrops),
    )?;

    let ban_events = scrape.counter_vec(
        "sip_xdp_ban_events_total",
        "Rate-limit ban events the daemon read from the XDP program, by kind (ban, would_ban, \
         expired) and limit class.",
        &["kind", "class"],
    )?;
    for (kind, class) in expected_ban_event_labels() {
        ban_events.add(&[kind, class], 0)?;
    }
    for ((kind, class), &value) in &snapshot.ban_events {
        ban_events.add(&[kind, class], value)?;
    }

    let active_bans = scrape.gauge_vec(
        "sip_xdp_active_bans",
        "Sources under a rate-limit ban now (mode=enforce), or under a monitor-mode would-be ban \
         (mode=monitor).",
        &["mode"],
    )?;
    active_bans.set(&["enforce"], snapshot.active_bans)?;
    active_bans.set(&["monitor"], snapshot.active_would_bans)?;

    let list_bans = scrape.gauge_vec(
        "sip_xdp_list_bans",
        "Ban-list bans in force now (denylist entries with an expiry), by origin: manual \
         (sip-xdp ban add), fail2ban, crowdsec.",
        &["origin"],
    )?;
    let list_bans_added = scrape.counter_vec(
        "sip_xdp_list_bans_added_total",
        "Ban-list bans added or renewed, by origin; kept in the state file, so it survives \
         restarts.",
        &["origin"],
    )?;
    for origin in BanOrigin::ALL {
        let name = origin.name();
        list_bans.set(&[name], snapshot.list_bans.get(name).copied().unwrap_or(0))?;
        list_bans_added.add(
            &[name],
            snapshot.list_bans_added.get(name).copied().unwrap_or(0),
        )?;
    }
    scrape.gauge(
        "sip_xdp_tracked_sources",
        "Source addresses with rate-limit state in the sources map.",
        snapshot.tracked_sources,
    )?;
    scrape.gauge(
        "sip_xdp_sources_capacity",
        "Capacity of the sources map; once full, the least recently seen sources are evicted.",
        snapshot.sources_capacity,
    )?;
    scrape.gauge(
        "sip_xdp_allowlist_entries",
        "CIDR entries in the allowlist.",
        snapshot.allowlist_entries,
    )?;
    scrape.gauge(
        "sip_xdp_protected_entries",
        "CIDR entries in the protected list (rate-limited, never banned).",
        snapshot.protected_entries,
    )?;
    scrape.gauge(
        "sip_xdp_ban_records",
        "Records in the durable ban table: bans in force and strike histories not yet decayed, \
         kept out of reach of the sources map's eviction.",
        snapshot.ban_records,
    )?;
    scrape.gauge(
        "sip_xdp_bans_capacity",
        "Capacity of the durable ban table; past it new bans hold in the sources map only (see \
         sip_xdp_ban_table_full_total).",
        snapshot.bans_capacity,
    )?;
    scrape.gauge(
        "sip_xdp_denylist_entries",
        "Permanent CIDR entries in the denylist (bans with an expiry are counted in \
         sip_xdp_list_bans).",
        snapshot.denylist_entries,
    )?;

    let attached = scrape.gauge_vec(
        "sip_xdp_attached",
        "1 for each interface the XDP program is attached to, with its attach mode (native or \
         skb).",
        &["interface", "mode"],
    )?;
    for (interface, mode) in &snapshot.attached {
        attached.set(&[interface, mode], 1)?;
    }

    scrape.counter(
        "sip_xdp_log_lines_suppressed_total",
        "Ban event log lines the daemon left out to keep the log rate bounded.",
        snapshot.log_lines_suppressed,
    )?;
    let reloads = scrape.counter_vec(
        "sip_xdp_config_reloads_total",
        "Configuration reloads the daemon attempted, by result (success or failure).",
        &["result"],
    )?;
    reloads.add(&["success"], snapshot.config_reloads)?;
    reloads.add(&["failure"], snapshot.config_reload_failures)?;
    scrape.float_gauge(
        "sip_xdp_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration load.",
        snapshot.config_last_reload_success_timestamp_seconds,
    )?;

    if let Some(crowdsec) = &snapshot.crowdsec {
        render_crowdsec(&scrape, crowdsec)?;
    }

    let closed = scrape.counter_vec(
        "sip_xdp_metrics_connections_closed_total",
        "Connections to this metrics endpoint closed before an answer, by reason: over_limit \
         (more than the concurrent connection cap), header_timeout (request headers too slow), \
         response_timeout (response not taken in time).",
        &["reason"],
    )?;
    closed.add(&["over_limit"], snapshot.http.closed_over_limit)?;
    closed.add(&["header_timeout"], snapshot.http.closed_header_timeout)?;
    closed.add(&["response_timeout"], snapshot.http.closed_response_timeout)?;

    scrape
        .gauge_vec(
            "sip_xdp_build_info",
            "Always 1; the version label is the running sip-xdp version.",
            &["version"],
        )?
        .set(&[env!("CARGO_PKG_VERSION")], 1)?;

    let mut body = Vec::new();
    TextEncoder::new()
        .encode(&scrape.registry.gather(), &mut body)
        .map_err(MetricsError::Encode)?;
    // The text encoder writes only the UTF-8 strings it was given, so this cannot fail; the
    // error path still reports rather than panics.
    String::from_utf8(body).map_err(|e| {
        MetricsError::Encode(prometheus::Error::Msg(format!("output is not UTF-8: {e}")))
    })
}

fn render_crowdsec(scrape: &ScrapeRegistry, m: &CrowdsecMetrics) -> Result<(), MetricsError> {
    scrape.gauge(
        "sip_xdp_crowdsec_lapi_up",
        "1 when the last poll of the CrowdSec Local API succeeded, 0 while it is unreachable \
         (bans already applied stay in force).",
        u64::from(m.lapi_up),
    )?;
    let polls = scrape.counter_vec(
        "sip_xdp_crowdsec_polls_total",
        "Polls of the CrowdSec Local API decision stream, by result (success or failure).",
        &["result"],
    )?;
    polls.add(&["success"], m.polls_success)?;
    polls.add(&["failure"], m.polls_failure)?;
    scrape.float_gauge(
        "sip_xdp_crowdsec_last_sync_timestamp_seconds",
        "Unix time of the last successful poll of the CrowdSec Local API (0: none yet).",
        m.last_sync_timestamp_seconds,
    )?;
    scrape.gauge(
        "sip_xdp_crowdsec_decisions",
        "CrowdSec ban decisions held (several may cover one net; see \
         sip_xdp_list_bans{origin=\"crowdsec\"} for the bans they make).",
        m.decisions,
    )?;
    scrape.counter(
        "sip_xdp_crowdsec_alerts_pushed_total",
        "Rate-limit bans pushed to the CrowdSec Local API as alerts with a ban decision.",
        m.alerts_pushed,
    )?;
    scrape.counter(
        "sip_xdp_crowdsec_alerts_dropped_total",
        "Rate-limit bans not pushed to the CrowdSec Local API: the queue was full (a flood of \
         bans) or the Local API rejected them.",
        m.alerts_dropped,
    )?;
    let refused = scrape.counter_vec(
        "sip_xdp_crowdsec_decisions_refused_total",
        "CrowdSec decisions not applied, by reason: too_broad (a net wider than \
         crowdsec.min_prefix_v4 / min_prefix_v6), ipv4_mapped (an IPv6 range covering \
         ::ffff:0:0/96, all of IPv4). Counted each time a poll brings one.",
        &["reason"],
    )?;
    refused.add(&["too_broad"], m.decisions_refused_too_broad)?;
    refused.add(&["ipv4_mapped"], m.decisions_refused_ipv4_mapped)?;
    Ok(())
}

/// How the metrics server bounds what clients can hold: a Prometheus scrape sends its request
/// at once and reads the answer at once, so anything slower is a client to cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest a connection may stay open from its accept to the end of its response (a
    /// client that does not read the response is cut off here).
    pub connection_timeout: Duration,
    /// Connections open at once. A new one past it closes the oldest connection still sending
    /// its request (so a scrape gets through a crowd of half-sent requests), or is itself
    /// closed when every open connection is being answered.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            max_connections: 16,
        }
    }
}

#[derive(Debug, Default)]
struct HttpStats {
    over_limit: AtomicU64,
    header_timeout: AtomicU64,
    response_timeout: AtomicU64,
}

impl HttpStats {
    fn metrics(&self) -> HttpMetrics {
        HttpMetrics {
            closed_over_limit: self.over_limit.load(Ordering::Relaxed),
            closed_header_timeout: self.header_timeout.load(Ordering::Relaxed),
            closed_response_timeout: self.response_timeout.load(Ordering::Relaxed),
        }
    }
}

/// One open connection, oldest first in [`Slots`].
struct Slot {
    id: u64,
    /// Its request headers are in: it is being answered, not a candidate for eviction.
    answering: Arc<AtomicBool>,
    close: Arc<tokio::sync::Notify>,
}

type Slots = Arc<Mutex<VecDeque<Slot>>>;

/// How often a failing accept (say, out of file descriptors) is logged at most.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Serves GET /metrics (text format 0.0.4 content type) and GET / (a one-line pointer to
/// /metrics) until `shutdown` resolves, with [`ServerLimits::default`]. A snapshot error
/// answers 500 with the error text (and does not stop the server).
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: SnapshotFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    serve_with_limits(listener, source, shutdown, ServerLimits::default()).await
}

/// [`serve`] with other limits. One request per connection (no keep-alive).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    source: SnapshotFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> Result<(), MetricsError> {
    let stats = Arc::new(HttpStats::default());
    let slots: Slots = Arc::default();
    let mut connections = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    let mut last_accept_warn: Option<Instant> = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: not fatal. Back
                    // off a little so a persistent error does not spin.
                    if last_accept_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_INTERVAL) {
                        last_accept_warn = Some(Instant::now());
                        tracing::warn!(
                            error = %e,
                            "the metrics server cannot accept a connection (logged at most \
                             once a minute)"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let answering = Arc::new(AtomicBool::new(false));
        let close = Arc::new(tokio::sync::Notify::new());
        {
            let mut open = slots.lock().unwrap_or_else(|e| e.into_inner());
            if open.len() >= limits.max_connections.max(1) {
                stats.over_limit.fetch_add(1, Ordering::Relaxed);
                match open
                    .iter()
                    .position(|s| !s.answering.load(Ordering::Relaxed))
                {
                    Some(oldest) => {
                        if let Some(evicted) = open.remove(oldest) {
                            evicted.close.notify_one();
                        }
                    }
                    None => {
                        drop(stream);
                        continue;
                    }
                }
            }
            next_id += 1;
            open.push_back(Slot {
                id: next_id,
                answering: answering.clone(),
                close: close.clone(),
            });
        }
        connections.spawn(serve_connection(
            stream,
            source.clone(),
            stats.clone(),
            limits,
            Connection {
                id: next_id,
                answering,
                close,
                slots: slots.clone(),
            },
        ));
    }
    // Open connections are abandoned: a scrape in flight sees its connection closed.
    connections.shutdown().await;
    Ok(())
}

struct Connection {
    id: u64,
    answering: Arc<AtomicBool>,
    close: Arc<tokio::sync::Notify>,
    slots: Slots,
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    source: SnapshotFn,
    stats: Arc<HttpStats>,
    limits: ServerLimits,
    conn: Connection,
) {
    let answering = conn.answering.clone();
    let page_stats = stats.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        answering.store(true, Ordering::Relaxed);
        let source = source.clone();
        let stats = page_stats.clone();
        async move { Ok::<_, Infallible>(route(request, source, stats).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(false);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(e) = result
                && e.is_timeout()
            {
                stats.header_timeout.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Evicted for a newer connection (already counted).
        () = conn.close.notified() => {}
        () = tokio::time::sleep(limits.connection_timeout) => {
            if conn.answering.load(Ordering::Relaxed) {
                stats.response_timeout.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.header_timeout.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let mut open = conn.slots.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = open.iter().position(|s| s.id == conn.id) {
        open.remove(i);
    }
}

async fn route(
    request: Request<hyper::body::Incoming>,
    source: SnapshotFn,
    stats: Arc<HttpStats>,
) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    match request.uri().path() {
        "/metrics" => metrics_page(source, stats.metrics()).await,
        "/" => index_page().await.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn index_page() -> &'static str {
    "sip-xdp: Prometheus metrics are at /metrics\n"
}

async fn metrics_page(source: SnapshotFn, http: HttpMetrics) -> Response {
    // Reading the maps is a series of blocking syscalls (one per tracked source when counting
    // bans), so it runs off the async workers.
    let outcome = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let mut snapshot =
            source().map_err(|e| format!("reading the sip-xdp state for metrics failed: {e:#}"))?;
        snapshot.http = http;
        render(&snapshot).map_err(|e| e.to_string())
    })
    .await;
    let error = match outcome {
        Ok(Ok(body)) => return ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Ok(Err(error)) => error,
        Err(join) => format!(
            "reading the sip-xdp state for metrics did not finish: {join}; this is a bug in \
             sip-xdp, please report it"
        ),
    };
    tracing::warn!(error = %error, "metrics scrape failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{error}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use sip_xdp_common::{COUNTER_SLOTS, event_counter_index, packet_counter_index};

    use super::*;

    fn counters(
        packets: &[(Verdict, MethodClass, u64)],
        events: &[(EventCounter, u64)],
    ) -> Counters {
        let mut slots = vec![0u64; COUNTER_SLOTS as usize];
        for &(verdict, method, value) in packets {
            slots[packet_counter_index(verdict, method) as usize] = value;
        }
        for &(event, value) in events {
            slots[event_counter_index(event) as usize] = value;
        }
        Counters::from_slots(slots)
    }

    fn sample_snapshot() -> Snapshot {
        let mut ban_events = BTreeMap::new();
        ban_events.insert(("ban".to_string(), "register".to_string()), 4);
        ban_events.insert(("expired".to_string(), "invite".to_string()), 2);
        Snapshot {
            counters: counters(
                &[
                    (Verdict::DropBanned, MethodClass::Register, 7),
                    (Verdict::Pass, MethodClass::Invite, 12),
                    (Verdict::DropRate, MethodClass::Options, 3),
                ],
                &[
                    (EventCounter::BansIssued, 5),
                    (EventCounter::WouldBans, 1),
                    (EventCounter::EventsLost, 9),
                    (EventCounter::TrackFailures, 11),
                ],
            ),
            tracked_sources: 42,
            sources_capacity: 131_072,
            ban_records: 4,
            bans_capacity: 65_536,
            protected_entries: 1,
            active_bans: 3,
            active_would_bans: 1,
            list_bans: [("manual".to_string(), 2), ("crowdsec".to_string(), 5)].into(),
            list_bans_added: [("fail2ban".to_string(), 7)].into(),
            allowlist_entries: 6,
            denylist_entries: 8,
            attached: vec![
                ("eth0".to_string(), "native".to_string()),
                ("eth1".to_string(), "skb".to_string()),
            ],
            ban_events,
            log_lines_suppressed: 13,
            config_reloads: 4,
            config_reload_failures: 1,
            config_last_reload_success_timestamp_seconds: 1_700_000_000.5,
            crowdsec: None,
            http: HttpMetrics {
                closed_over_limit: 64,
                closed_header_timeout: 16,
                closed_response_timeout: 1,
            },
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn renders_every_metric_from_the_snapshot() {
        let text = render(&sample_snapshot()).expect("render");
        let lines = lines(&text);
        let version = env!("CARGO_PKG_VERSION");
        let build_info = format!("sip_xdp_build_info{{version=\"{version}\"}} 1");
        for expected in [
            r#"sip_xdp_packets_total{method="register",verdict="drop_banned"} 7"#,
            r#"sip_xdp_packets_total{method="invite",verdict="pass"} 12"#,
            r#"sip_xdp_packets_total{method="options",verdict="drop_rate"} 3"#,
            r#"sip_xdp_bans_total{mode="enforce"} 5"#,
            r#"sip_xdp_bans_total{mode="monitor"} 1"#,
            "sip_xdp_ban_events_lost_total 9",
            "sip_xdp_source_track_failures_total 11",
            r#"sip_xdp_ban_events_total{class="register",kind="ban"} 4"#,
            r#"sip_xdp_ban_events_total{class="invite",kind="expired"} 2"#,
            r#"sip_xdp_active_bans{mode="enforce"} 3"#,
            r#"sip_xdp_active_bans{mode="monitor"} 1"#,
            r#"sip_xdp_list_bans{origin="manual"} 2"#,
            r#"sip_xdp_list_bans{origin="crowdsec"} 5"#,
            r#"sip_xdp_list_bans{origin="fail2ban"} 0"#,
            r#"sip_xdp_list_bans_added_total{origin="fail2ban"} 7"#,
            "sip_xdp_tracked_sources 42",
            "sip_xdp_sources_capacity 131072",
            "sip_xdp_allowlist_entries 6",
            "sip_xdp_denylist_entries 8",
            r#"sip_xdp_attached{interface="eth0",mode="native"} 1"#,
            r#"sip_xdp_attached{interface="eth1",mode="skb"} 1"#,
            "sip_xdp_log_lines_suppressed_total 13",
            r#"sip_xdp_config_reloads_total{result="success"} 4"#,
            r#"sip_xdp_config_reloads_total{result="failure"} 1"#,
            "sip_xdp_config_last_reload_success_timestamp_seconds 1700000000.5",
            build_info.as_str(),
            "# TYPE sip_xdp_packets_total counter",
            "# TYPE sip_xdp_active_bans gauge",
            "# TYPE sip_xdp_config_last_reload_success_timestamp_seconds gauge",
        ] {
            assert!(
                lines.contains(&expected),
                "missing line {expected:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn packet_series_are_register_and_invite_plus_non_zero_pairs() {
        let text = render(&sample_snapshot()).expect("render");
        let packet_lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sip_xdp_packets_total{"))
            .collect();
        // Every verdict for register, invite and unparsed, plus the one non-zero options pair.
        assert_eq!(
            packet_lines.len(),
            Verdict::COUNT * ALWAYS_REPORTED_METHODS.len() + 1,
            "{packet_lines:#?}"
        );
        for verdict in Verdict::ALL {
            for method in ALWAYS_REPORTED_METHODS {
                let prefix = format!(
                    "sip_xdp_packets_total{{method=\"{}\",verdict=\"{}\"}} ",
                    method.name(),
                    verdict.name()
                );
                assert!(
                    packet_lines.iter().any(|l| l.starts_with(&prefix)),
                    "missing {prefix}"
                );
            }
        }
        assert!(
            packet_lines.contains(&r#"sip_xdp_packets_total{method="register",verdict="pass"} 0"#)
        );
        assert!(
            !text.contains(r#"method="bye""#),
            "zero bye series emitted:\n{text}"
        );
        assert!(!text.contains(r#"method="options",verdict="pass""#));
    }

    #[test]
    fn default_snapshot_has_zero_series_for_dashboards() {
        let text = render(&Snapshot::default()).expect("render");
        let lines = lines(&text);
        for expected in [
            r#"sip_xdp_packets_total{method="invite",verdict="drop_rate"} 0"#,
            r#"sip_xdp_bans_total{mode="monitor"} 0"#,
            r#"sip_xdp_ban_events_total{class="options",kind="would_ban"} 0"#,
            r#"sip_xdp_ban_events_total{class="other",kind="expired"} 0"#,
            r#"sip_xdp_list_bans{origin="crowdsec"} 0"#,
            r#"sip_xdp_list_bans_added_total{origin="manual"} 0"#,
            r#"sip_xdp_config_reloads_total{result="failure"} 0"#,
            "sip_xdp_tracked_sources 0",
        ] {
            assert!(
                lines.contains(&expected),
                "missing line {expected:?} in:\n{text}"
            );
        }
        // No attachment, no attached series.
        assert!(!text.contains("sip_xdp_attached{"), "{text}");
    }

    #[test]
    fn every_metric_has_help_text() {
        let text = render(&sample_snapshot()).expect("render");
        let lines = lines(&text);
        let mut families = 0;
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            families += 1;
            let name = rest.split(' ').next().expect("TYPE line has a name");
            let help = i
                .checked_sub(1)
                .and_then(|j| lines[j].strip_prefix(&format!("# HELP {name} ")))
                .unwrap_or("");
            assert!(help.len() > 10, "metric {name} lacks a help text");
        }
        assert_eq!(families, 24, "{text}");
    }

    #[test]
    fn crowdsec_series_only_when_enabled() {
        let off = render(&sample_snapshot()).expect("render");
        assert!(!off.contains("sip_xdp_crowdsec_"), "{off}");

        let snapshot = Snapshot {
            crowdsec: Some(CrowdsecMetrics {
                lapi_up: false,
                polls_success: 12,
                polls_failure: 3,
                last_sync_timestamp_seconds: 1_700_000_001.25,
                decisions: 4,
                alerts_pushed: 9,
                alerts_dropped: 2,
                decisions_refused_too_broad: 3,
                decisions_refused_ipv4_mapped: 1,
            }),
            ..sample_snapshot()
        };
        let text = render(&snapshot).expect("render");
        let lines = lines(&text);
        for expected in [
            "sip_xdp_crowdsec_lapi_up 0",
            r#"sip_xdp_crowdsec_polls_total{result="success"} 12"#,
            r#"sip_xdp_crowdsec_polls_total{result="failure"} 3"#,
            "sip_xdp_crowdsec_last_sync_timestamp_seconds 1700000001.25",
            "sip_xdp_crowdsec_decisions 4",
            "sip_xdp_crowdsec_alerts_pushed_total 9",
            "sip_xdp_crowdsec_alerts_dropped_total 2",
            r#"sip_xdp_crowdsec_decisions_refused_total{reason="too_broad"} 3"#,
            r#"sip_xdp_crowdsec_decisions_refused_total{reason="ipv4_mapped"} 1"#,
            "# TYPE sip_xdp_crowdsec_lapi_up gauge",
            "# TYPE sip_xdp_crowdsec_polls_total counter",
        ] {
            assert!(
                lines.contains(&expected),
                "missing line {expected:?} in:\n{text}"
            );
        }
        let families = lines.iter().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(families, 24 + 7, "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_repeated_ban_event_labels_add() {
        let snapshot = Snapshot {
            attached: vec![("we\"ird\\if".to_string(), "skb".to_string())],
            ban_events: BTreeMap::from([(("ban".to_string(), "invite".to_string()), 6)]),
            ..Snapshot::default()
        };
        let text = render(&snapshot).expect("render");
        assert!(
            text.lines()
                .any(|l| l == r#"sip_xdp_attached{interface="we\"ird\\if",mode="skb"} 1"#),
            "{text}"
        );
        // The seeded zero and the daemon's count land in one series.
        let invite_bans: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(r#"sip_xdp_ban_events_total{class="invite",kind="ban"}"#))
            .collect();
        assert_eq!(
            invite_bans,
            [r#"sip_xdp_ban_events_total{class="invite",kind="ban"} 6"#]
        );
    }

    /// Sends one HTTP/1.1 request and reads the whole response (the server closes after it).
    async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut written = 0;
        while written < request.len() {
            stream.writable().await.expect("writable");
            match stream.try_write(&request.as_bytes()[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            stream.readable().await.expect("readable");
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        let response = String::from_utf8(response).expect("UTF-8 response");
        let (head, body) = response.split_once("\r\n\r\n").expect("header end");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let content_type = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        (status, content_type, body.to_string())
    }

    #[tokio::test]
    async fn serves_metrics_errors_and_shuts_down() {
        let failing = Arc::new(AtomicBool::new(false));
        let source: SnapshotFn = {
            let failing = failing.clone();
            Arc::new(move || {
                if failing.load(Ordering::SeqCst) {
                    anyhow::bail!("map SOURCES is gone")
                }
                Ok(sample_snapshot())
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, source, async {
            let _ = stopped.await;
        }));

        let (status, content_type, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, CONTENT_TYPE);
        assert!(content_type.starts_with(prometheus::TEXT_FORMAT));
        assert!(
            body.lines()
                .any(|l| l == r#"sip_xdp_packets_total{method="register",verdict="drop_banned"} 7"#),
            "{body}"
        );

        let (status, _, body) = http_get(addr, "/").await;
        assert_eq!(status, 200);
        assert!(body.contains("/metrics"), "{body}");

        failing.store(true, Ordering::SeqCst);
        let (status, _, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 500);
        assert!(body.contains("map SOURCES is gone"), "{body}");

        // The failure did not stop the server.
        failing.store(false, Ordering::SeqCst);
        let (status, _, body) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");

        let (status, _, _) = http_get(addr, "/nothing-here").await;
        assert_eq!(status, 404);

        assert!(!server.is_finished(), "server returned before shutdown");
        stop.send(()).expect("server still listening for shutdown");
        let result = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .expect("server task did not panic");
        assert!(result.is_ok(), "{result:?}");
    }

    /// Reads until the server closes the connection or `within` passes; true when it closed.
    async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        read.await.is_ok()
    }

    #[tokio::test]
    async fn half_sent_requests_cannot_hold_the_endpoint() {
        use tokio::io::AsyncWriteExt as _;
        let source: SnapshotFn = Arc::new(|| Ok(sample_snapshot()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(500),
            connection_timeout: Duration::from_secs(10),
            max_connections: 4,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with_limits(
            listener,
            source,
            async {
                let _ = stopped.await;
            },
            limits,
        ));

        // Twelve clients send half a request each and hold on.
        let mut held = Vec::new();
        for _ in 0..12 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("half a request");
            held.push(stream);
        }
        // A scrape still gets its answer: it takes the place of the oldest half-sent one.
        let (status, _, body) =
            tokio::time::timeout(Duration::from_secs(5), http_get(addr, "/metrics"))
                .await
                .expect("a scrape is answered while half-sent requests are held");
        assert_eq!(status, 200, "{body}");
        // Every half-sent request is closed by the server: evicted, or after the header timeout.
        for (i, stream) in held.iter_mut().enumerate() {
            assert!(
                closed_by_server(stream, Duration::from_secs(5)).await,
                "half-sent request {i} still open"
            );
        }
        let (_, _, body) = http_get(addr, "/metrics").await;
        let value = |reason: &str| -> u64 {
            let series =
                format!("sip_xdp_metrics_connections_closed_total{{reason=\"{reason}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(&series)?.parse().ok())
                .unwrap_or_else(|| panic!("no {series} in {body}"))
        };
        // 12 held + 1 scrape over a cap of 4: 9 closed at once (the oldest first), the 3 held
        // beside the scrape by the header timeout.
        assert_eq!(value("over_limit"), 9, "{body}");
        assert_eq!(value("header_timeout"), 3, "{body}");
        assert_eq!(value("response_timeout"), 0, "{body}");

        stop.send(()).expect("server still running");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .expect("no panic")
            .expect("no error");
    }
}
