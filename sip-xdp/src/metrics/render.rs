//! Rendering a [`Snapshot`] in the Prometheus text exposition format, from a fresh registry
//! at each scrape.
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::Collector,
};
use sip_xdp_common::{
    AuthFailure, EventCounter, LimitClass, MethodClass, SignatureKind, Verdict, failure_counter,
};

use super::{CrowdsecMetrics, MetricsError, Snapshot};
use crate::state::BanOrigin;

/// Content type of the text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Method classes whose packet series are emitted even at zero.
pub(super) const ALWAYS_REPORTED_METHODS: [MethodClass; 3] = [
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
        for failure in AuthFailure::ALL {
            labels.push((kind, failure.name()));
        }
        for signature in SignatureKind::ALL {
            labels.push((kind, signature.name()));
        }
    }
    for kind in ["prefix_ban", "would_prefix_ban", "prefix_expired"] {
        for class in LimitClass::ALL {
            labels.push((kind, class.name()));
        }
    }
    for kind in ["flow_ban", "would_flow_ban"] {
        for failure in AuthFailure::ALL {
            labels.push((kind, failure.name()));
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
         mode (mode=monitor), of single sources and of whole prefixes (these also in \
         sip_xdp_prefix_bans_total).",
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

    render_prefixes(&scrape, snapshot)?;
    render_signatures(&scrape, snapshot)?;
    render_answers(&scrape, snapshot)?;

    let ban_events = scrape.counter_vec(
        "sip_xdp_ban_events_total",
        "Ban events the daemon read from the programs, by kind (ban, would_ban, expired; \
         prefix_ban, would_prefix_ban, prefix_expired for whole prefixes; flow_ban, \
         would_flow_ban) and class (the limit class of a rate or prefix ban, the failure kind \
         of an auth ban, fingerprint or trap for a signature ban).",
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
    active_bans.set(&["enforce"], snapshot.tables.active_bans)?;
    active_bans.set(&["monitor"], snapshot.tables.active_would_bans)?;

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
        snapshot.tables.tracked_sources,
    )?;
    scrape.gauge(
        "sip_xdp_sources_capacity",
        "Capacity of the sources map; once full, the least recently seen sources are evicted.",
        snapshot.tables.sources_capacity,
    )?;
    scrape.gauge(
        "sip_xdp_allowlist_entries",
        "CIDR entries in the allowlist.",
        snapshot.tables.allowlist_entries,
    )?;
    scrape.gauge(
        "sip_xdp_protected_entries",
        "CIDR entries in the protected list (rate-limited, never banned).",
        snapshot.tables.protected_entries,
    )?;
    scrape.gauge(
        "sip_xdp_ban_records",
        "Records in the durable ban table: bans in force and strike histories not yet decayed, \
         kept out of reach of the sources map's eviction.",
        snapshot.tables.ban_records,
    )?;
    scrape.gauge(
        "sip_xdp_bans_capacity",
        "Capacity of the durable ban table; past it new bans hold in the sources map only (see \
         sip_xdp_ban_table_full_total).",
        snapshot.tables.bans_capacity,
    )?;
    scrape.gauge(
        "sip_xdp_denylist_entries",
        "Permanent CIDR entries in the denylist (bans with an expiry are counted in \
         sip_xdp_list_bans).",
        snapshot.tables.denylist_entries,
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

/// The scan program (`[signatures]`): scanner fingerprints and trap accounts, the requests
/// scanned and the bans they made.
fn render_signatures(scrape: &ScrapeRegistry, snapshot: &Snapshot) -> Result<(), MetricsError> {
    let counters = &snapshot.counters;
    let tables = &snapshot.tables;
    let bans = scrape.counter_vec(
        "sip_xdp_signature_bans_total",
        "Sources banned on their first matching request by the scan program, for a scanner's \
         fingerprint in User-Agent, From or To (kind=fingerprint) or for a request to a trap \
         account (kind=trap); monitor-mode would-bans included (also in sip_xdp_bans_total).",
        &["kind"],
    )?;
    bans.add(
        &["fingerprint"],
        counters.event(EventCounter::FingerprintBans),
    )?;
    bans.add(&["trap"], counters.event(EventCounter::TrapBans))?;
    scrape.counter(
        "sip_xdp_signature_scans_total",
        "Requests handed to the scan program (sources neither allowlisted nor verified, \
         signatures on).",
        counters.event(EventCounter::Scans),
    )?;
    scrape.counter(
        "sip_xdp_signature_scan_failures_total",
        "Requests that passed unscanned although signatures were on: the scan program was \
         missing or the payload could not be read.",
        counters.event(EventCounter::ScanFailures),
    )?;
    scrape.counter(
        "sip_xdp_signature_scan_truncated_total",
        "Requests whose headers ran past the scan's limits (1024 bytes, 48 token lookups); the \
         rest of their headers was not scanned.",
        counters.event(EventCounter::ScanTruncated),
    )?;
    let listed = scrape.gauge_vec(
        "sip_xdp_signatures",
        "Signatures in the kernel's table, by kind (config entries and runtime additions).",
        &["kind"],
    )?;
    listed.set(&["fingerprint"], tables.fingerprint_signatures)?;
    listed.set(&["trap"], tables.trap_signatures)?;
    scrape.gauge(
        "sip_xdp_signatures_capacity",
        "Capacity of the kernel's signature table (fingerprints and trap accounts together).",
        tables.signatures_capacity,
    )?;
    let banned = scrape.gauge_vec(
        "sip_xdp_signature_banned_sources",
        "Sources under a signature ban now (enforced), by kind.",
        &["kind"],
    )?;
    banned.set(&["fingerprint"], tables.fingerprint_bans)?;
    banned.set(&["trap"], tables.trap_bans)?;
    Ok(())
}

/// The prefix buckets (`[prefixes]`): bans of whole prefixes and the tables behind them.
fn render_prefixes(scrape: &ScrapeRegistry, snapshot: &Snapshot) -> Result<(), MetricsError> {
    let counters = &snapshot.counters;
    let tables = &snapshot.tables;
    scrape.counter(
        "sip_xdp_prefix_bans_total",
        "Prefixes (IPv4 /24, IPv6 /64 and /48 by default) banned because the unverified sources \
         in them together ran a prefix bucket dry; monitor-mode would-bans included.",
        counters.event(EventCounter::PrefixBans),
    )?;
    scrape.counter(
        "sip_xdp_prefix_banned_drops_total",
        "Packets dropped because their source's prefix was banned (also in \
         sip_xdp_packets_total{verdict=\"drop_banned\"}).",
        counters.event(EventCounter::PrefixBannedDrops),
    )?;
    scrape.counter(
        "sip_xdp_prefix_track_failures_total",
        "Prefix buckets the XDP program could not create (inserting into the prefix map \
         failed); their packets drew from no prefix bucket.",
        counters.event(EventCounter::PrefixTrackFailures),
    )?;
    let banned = scrape.gauge_vec(
        "sip_xdp_banned_prefixes",
        "Prefixes under a ban now (mode=enforce), or under a monitor-mode would-be ban \
         (mode=monitor).",
        &["mode"],
    )?;
    banned.set(&["enforce"], tables.banned_prefixes)?;
    banned.set(&["monitor"], tables.would_banned_prefixes)?;
    scrape.gauge(
        "sip_xdp_tracked_prefixes",
        "Prefixes with a bucket in the prefix map.",
        tables.tracked_prefixes,
    )?;
    scrape.gauge(
        "sip_xdp_prefixes_capacity",
        "Capacity of the prefix map; once full, the least recently seen prefixes are evicted.",
        tables.prefixes_capacity,
    )?;
    scrape.gauge(
        "sip_xdp_prefix_ban_records",
        "Records in the durable prefix ban table: prefix bans in force and strike histories not \
         yet decayed.",
        tables.prefix_ban_records,
    )?;
    scrape.gauge(
        "sip_xdp_prefix_bans_capacity",
        "Capacity of the durable prefix ban table.",
        tables.prefix_bans_capacity,
    )?;
    Ok(())
}

/// What the egress program learnt from the server's answers.
fn render_answers(scrape: &ScrapeRegistry, snapshot: &Snapshot) -> Result<(), MetricsError> {
    let counters = &snapshot.counters;
    scrape.gauge(
        "sip_xdp_answers_enabled",
        "1 when [answers] is on in the config the programs run on: every interface with the XDP \
         program should then have the TC egress program too (sip_xdp_egress_attached).",
        u64::from(snapshot.answers_enabled),
    )?;
    let egress = scrape.gauge_vec(
        "sip_xdp_egress_attached",
        "1 for each interface the TC egress program (the server's answers) is attached to, with \
         how (tcx: a pinned link, netlink: a clsact filter).",
        &["interface", "link"],
    )?;
    for (interface, link) in &snapshot.egress_attached {
        egress.set(&[interface, link], 1)?;
    }
    scrape.counter(
        "sip_xdp_answers_total",
        "Responses from the SIP ports the egress program read.",
        counters.event(EventCounter::Answers),
    )?;
    scrape.counter(
        "sip_xdp_verifications_total",
        "Successes (2xx to REGISTER or INVITE after a challenge) that verified or renewed a \
         client.",
        counters.event(EventCounter::Verifications),
    )?;
    scrape.counter(
        "sip_xdp_verified_table_full_total",
        "Verifications lost because the verified table was full.",
        counters.event(EventCounter::VerifiedTableFull),
    )?;
    scrape.gauge(
        "sip_xdp_verified_sources",
        "Clients whose verification is in force now.",
        snapshot.tables.verified_sources,
    )?;
    scrape.gauge(
        "sip_xdp_verified_capacity",
        "Capacity of the verified table.",
        snapshot.tables.verified_capacity,
    )?;
    scrape.gauge(
        "sip_xdp_banned_phones",
        "Phones (address and port) of verified addresses banned for failed authentication now.",
        snapshot.tables.banned_flows,
    )?;
    let failures = scrape.counter_vec(
        "sip_xdp_auth_failures_total",
        "Failed authentication counted from the server's answers, by kind: forbidden (403), \
         not_found (404 to REGISTER or INVITE), rechallenged (a second challenge with no success \
         between), unanswered (challenges past the open count).",
        &["kind"],
    )?;
    for kind in AuthFailure::ALL {
        failures.add(&[kind.name()], counters.event(failure_counter(kind)))?;
    }
    let auth_bans = scrape.counter_vec(
        "sip_xdp_auth_bans_total",
        "Bans for failed authentication, of an address (scope=address) or of one phone of a \
         verified address (scope=phone); monitor-mode would-bans included.",
        &["scope"],
    )?;
    auth_bans.add(&["address"], counters.event(EventCounter::AuthBans))?;
    auth_bans.add(&["phone"], counters.event(EventCounter::FlowBans))?;
    scrape.counter(
        "sip_xdp_phone_ban_drops_total",
        "Packets of banned phones dropped at ingress.",
        counters.event(EventCounter::FlowBannedDrops),
    )?;
    let reflection = scrape.counter_vec(
        "sip_xdp_reflection_drops_total",
        "Challenges and error responses to unverified clients the egress program dropped (in \
         monitor mode: would have), by the cap that ran dry (destination, total).",
        &["cap"],
    )?;
    reflection.add(
        &["destination"],
        counters.event(EventCounter::ReflectionDestinationDrops),
    )?;
    reflection.add(
        &["total"],
        counters.event(EventCounter::ReflectionTotalDrops),
    )?;
    let admission: u64 = MethodClass::ALL
        .iter()
        .map(|&m| counters.packets(Verdict::DropAdmission, m))
        .sum();
    scrape.counter(
        "sip_xdp_admission_drops_total",
        "Unverified REGISTER and INVITE dropped beyond the admission budget (also in \
         sip_xdp_packets_total{verdict=\"drop_admission\"}).",
        admission,
    )?;
    Ok(())
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
