//! What the metrics report: the figures the daemon gathers at each scrape.
use std::{collections::BTreeMap, sync::Arc};

#[cfg(doc)]
use super::{ServerLimits, serve};
use crate::{maps::Counters, status::TableFill};

/// Everything the metrics report, gathered by the daemon at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Per (verdict, method) packets and the event counter slots, summed over CPUs.
    pub counters: Counters,
    /// The tables' fill and contents, as `status` counts them (its `list_bans` is the kernel's
    /// count; the metrics serve the state file's per-origin count below).
    pub tables: TableFill,
    /// Ban-list bans in force, by origin (`"manual"` | `"fail2ban"` | `"crowdsec"`).
    pub list_bans: BTreeMap<String, u64>,
    /// Ban-list bans ever added (renewals included), by origin; kept in the state file.
    pub list_bans_added: BTreeMap<String, u64>,
    /// (interface, mode `"native"` | `"skb"`).
    pub attached: Vec<(String, String)>,
    /// (interface, link `"tcx"` | `"netlink"`) of the egress program.
    pub egress_attached: Vec<(String, String)>,
    /// `[answers]` is on in the config the programs run on: each XDP attachment should have
    /// the egress program beside it.
    pub answers_enabled: bool,
    /// (kind `"ban"` | `"would_ban"` | `"expired"` | `"prefix_ban"` | `"would_prefix_ban"` |
    /// `"prefix_expired"` | `"flow_ban"` | `"would_flow_ban"`, class: the limit class or the
    /// failure kind) -> events the daemon read from the XDP program.
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
