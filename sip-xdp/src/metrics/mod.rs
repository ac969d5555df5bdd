//! Prometheus metrics: rendering a [`Snapshot`] of the daemon's state in the text exposition
//! format, and the HTTP endpoint that serves it.
//!
//! Each scrape builds a fresh [`Registry`](prometheus::Registry) from a snapshot the daemon
//! gathers at that moment, rather than keeping long-lived metric objects in sync with the maps:
//! the kernel counters are the source of truth and are monotonic, so setting a fresh counter to
//! their value is exact and nothing can drift.
//!
//! Series that always appear, even at zero, so that dashboards and alerts have data from the
//! first scrape: `sip_xdp_packets_total` for every verdict with method `register` and `invite`
//! (the methods attacks target), the `mode` and `result` variants of the labelled counters and
//! gauges, and `sip_xdp_ban_events_total` for every (kind, class) pair the daemon can report.
//! Other packet series appear once their count is non-zero, which keeps the 8 x 19 matrix from
//! flooding the scrape with series that never move (a `drop_rate` of `ack` when in-dialog
//! requests are not limited, say).
mod render;
mod server;
mod snapshot;
#[cfg(test)]
mod tests;

use thiserror::Error;

pub use render::{CONTENT_TYPE, render};
pub use server::{ServerLimits, serve, serve_with_limits};
pub use snapshot::{CrowdsecMetrics, HttpMetrics, Snapshot, SnapshotFn};

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
