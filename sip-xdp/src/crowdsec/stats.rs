//! What the metrics show of the CrowdSec client, counted by the bouncer and the pusher.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::metrics::CrowdsecMetrics;

/// What the metrics show, shared by the tasks and the daemon and kept across reloads.
#[derive(Debug, Default)]
pub struct Stats {
    pub(super) lapi_up: AtomicBool,
    pub(super) polls_success: AtomicU64,
    pub(super) polls_failure: AtomicU64,
    pub(super) last_sync_unix_ms: AtomicU64,
    pub(super) decisions: AtomicU64,
    pub(super) alerts_pushed: AtomicU64,
    pub(super) alerts_dropped: AtomicU64,
    pub(super) refused_too_broad: AtomicU64,
    pub(super) refused_ipv4_mapped: AtomicU64,
}

impl Stats {
    pub fn metrics(&self) -> CrowdsecMetrics {
        CrowdsecMetrics {
            lapi_up: self.lapi_up.load(Ordering::Relaxed),
            polls_success: self.polls_success.load(Ordering::Relaxed),
            polls_failure: self.polls_failure.load(Ordering::Relaxed),
            last_sync_timestamp_seconds: self.last_sync_unix_ms.load(Ordering::Relaxed) as f64
                / 1000.0,
            decisions: self.decisions.load(Ordering::Relaxed),
            alerts_pushed: self.alerts_pushed.load(Ordering::Relaxed),
            alerts_dropped: self.alerts_dropped.load(Ordering::Relaxed),
            decisions_refused_too_broad: self.refused_too_broad.load(Ordering::Relaxed),
            decisions_refused_ipv4_mapped: self.refused_ipv4_mapped.load(Ordering::Relaxed),
        }
    }
}

pub(super) use crate::time::now_wall as now_unix;
