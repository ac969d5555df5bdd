//! Signals: this node's own rate-limit bans queued (bounded; a full queue drops and counts) and
//! pushed to the Local API as alerts carrying a ban decision, logged in as a watcher.
use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::anyhow;
use ipnet::IpNet;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use sip_xdp_common::{AuthFailure, BanCause, LimitClass, SignatureKind};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::{
    bouncer::{next_backoff, pause},
    client::Ctx,
    credentials::{MACHINE_FIX, Machine},
    stats::{Stats, now_unix},
};
use crate::{
    config::format_duration,
    events::{BanEventKind, BanRecord},
    state::Clocks,
};

/// Own bans waiting to be pushed; past this they are counted as dropped, so a spoofed flood
/// that bans a million sources costs a bounded amount of memory.
pub const SIGNAL_QUEUE: usize = 1024;
/// Alerts per `POST /v1/alerts`.
pub const SIGNAL_BATCH: usize = 50;
/// Least time between two pushes: at most `SIGNAL_BATCH` alerts per this, whatever the flood.
pub const PUSH_GAP: Duration = Duration::from_millis(500);
/// The Local API's tokens last an hour; log in again a little before.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// How often a full signal queue is reported while it stays full.
const QUEUE_FULL_WARN_INTERVAL_MS: u64 = 60_000;

/// The scenario an own ban is pushed under: by the limit class that ran dry, or for failed
/// authentication, password guessing (403, a second challenge) or scanning (404, unanswered
/// challenges).
pub const fn scenario(cause: BanCause) -> &'static str {
    let class = match cause {
        BanCause::Rate(class) => class,
        BanCause::Auth(AuthFailure::Forbidden | AuthFailure::Rechallenged) => {
            return "sip-xdp/sip-bruteforce";
        }
        BanCause::Auth(AuthFailure::NotFound | AuthFailure::Unanswered) => {
            return "sip-xdp/sip-scan";
        }
        BanCause::Signature(SignatureKind::Fingerprint) => return "sip-xdp/sip-scanner-fingerprint",
        BanCause::Signature(SignatureKind::Trap) => return "sip-xdp/sip-trap-account",
    };
    match class {
        LimitClass::Register => "sip-xdp/register-flood",
        LimitClass::Invite => "sip-xdp/invite-flood",
        LimitClass::Options => "sip-xdp/options-flood",
        LimitClass::Other => "sip-xdp/sip-flood",
        LimitClass::InDialog => "sip-xdp/in-dialog-flood",
        LimitClass::Response => "sip-xdp/response-flood",
        LimitClass::KeepAlive => "sip-xdp/keepalive-flood",
        LimitClass::Malformed => "sip-xdp/malformed-flood",
        LimitClass::Connection => "sip-xdp/sip-tcp-flood",
    }
}

/// The scenario a prefix's ban is pushed under (as a Range decision), whatever its class: the
/// unverified sources of one prefix flooded together, each within its own limit.
pub const PREFIX_SCENARIO: &str = "sip-xdp/sip-prefix-flood";

/// An own ban waiting to be pushed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Signal {
    net: IpNet,
    cause: BanCause,
    banned_until_mono_ns: u64,
    packets: u32,
    rate_per_sec: f64,
    strikes: u32,
    /// The ban of a prefix (`net` is that prefix), not of one source.
    prefix: bool,
}

impl Signal {
    pub(super) fn scenario(&self) -> &'static str {
        if self.prefix {
            PREFIX_SCENARIO
        } else {
            scenario(self.cause)
        }
    }
}

#[cfg(test)]
impl Signal {
    pub(super) fn net(&self) -> IpNet {
        self.net
    }
}

/// The signal for a ban event: bans only (not would-bans or expiries); an IPv6 source covers
/// the prefix the kernel tracks it by, a prefix's ban the prefix.
pub(super) fn signal_of(record: &BanRecord, ipv6_prefix: u8) -> Option<Signal> {
    if record.kind != BanEventKind::Ban {
        return None;
    }
    let net = match record.source {
        _ if record.prefix_len.is_some() => record.prefix()?,
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), ipv6_prefix.min(128))
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(IpAddr::V6(v6))),
    };
    Some(Signal {
        net,
        cause: record.cause,
        banned_until_mono_ns: record.banned_until_mono_ns,
        packets: record.window_packets,
        rate_per_sec: record.rate_per_sec,
        strikes: record.strikes,
        prefix: record.prefix_len.is_some(),
    })
}

/// Queues `signal` if there is room, else counts it dropped (and says so at most once a minute).
pub(super) fn offer(
    tx: &mpsc::Sender<Signal>,
    signal: Signal,
    stats: &Stats,
    last_warn_ms: &AtomicU64,
) {
    match tx.try_send(signal) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
            let now_ms = now_unix().as_millis() as u64;
            let last = last_warn_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) >= QUEUE_FULL_WARN_INTERVAL_MS
                && last_warn_ms
                    .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(
                    queue = SIGNAL_QUEUE,
                    "more own bans than the CrowdSec Local API is sent ({SIGNAL_BATCH} per {}): \
                     the rest are dropped and counted in sip_xdp_crowdsec_alerts_dropped_total \
                     (reported at most once a minute)",
                    format_duration(PUSH_GAP)
                );
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

enum PushError {
    /// Worth retrying: the Local API is down or overloaded.
    Unreachable(anyhow::Error),
    /// Retrying would give the same answer (bad credentials, a refused alert).
    Rejected(anyhow::Error),
}

pub(super) async fn run_pusher(
    ctx: Arc<Ctx>,
    machine: Machine,
    mut rx: mpsc::Receiver<Signal>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &ctx.cfg;
    let stats = &ctx.stats;
    let mut token: Option<(String, Instant)> = None;
    let mut batch: Vec<Signal> = Vec::with_capacity(SIGNAL_BATCH);
    let mut delay = Duration::ZERO;
    let mut down_since: Option<Instant> = None;
    let mut rejecting = false;
    loop {
        if batch.is_empty() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                signal = rx.recv() => match signal {
                    Some(signal) => batch.push(signal),
                    None => return,
                },
            }
        }
        while batch.len() < SIGNAL_BATCH {
            match rx.try_recv() {
                Ok(signal) => batch.push(signal),
                Err(_) => break,
            }
        }
        let alerts = build_alerts(&batch, Clocks::now());
        if alerts.is_empty() {
            // Every ban in it ended while waiting.
            batch.clear();
            continue;
        }
        let pushed = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            pushed = push_alerts(&ctx, &machine, &mut token, &alerts) => pushed,
        };
        match pushed {
            Ok(()) => {
                stats
                    .alerts_pushed
                    .fetch_add(alerts.len() as u64, Ordering::Relaxed);
                debug!(
                    alerts = alerts.len(),
                    "pushed own bans to the CrowdSec Local API"
                );
                batch.clear();
                rejecting = false;
                delay = Duration::ZERO;
                if let Some(since) = down_since.take() {
                    info!(
                        down_for = %format_duration(Duration::from_secs(since.elapsed().as_secs())),
                        "pushing own bans to the CrowdSec Local API again"
                    );
                }
                if !pause(&mut stop, PUSH_GAP).await {
                    return;
                }
            }
            Err(PushError::Rejected(e)) => {
                stats
                    .alerts_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                if !rejecting {
                    error!(
                        error = %format!("{e:#}"),
                        "the CrowdSec Local API refused own bans; they are dropped and counted \
                         in sip_xdp_crowdsec_alerts_dropped_total (logged once until a push \
                         succeeds)"
                    );
                }
                rejecting = true;
                if !pause(&mut stop, PUSH_GAP).await {
                    return;
                }
            }
            Err(PushError::Unreachable(e)) => {
                delay = next_backoff(delay, cfg);
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    warn!(
                        lapi = %cfg.lapi,
                        error = %format!("{e:#}"),
                        "cannot push own bans to the CrowdSec Local API; retrying with backoff \
                         (they wait in a queue of {SIGNAL_QUEUE}), logged once until it works"
                    );
                }
                if !pause(&mut stop, delay).await {
                    return;
                }
            }
        }
    }
}

/// One alert per ban still running, each carrying its ban decision.
fn build_alerts(batch: &[Signal], clocks: Clocks) -> Vec<Value> {
    let now_wall = clocks.wall_ns / sip_xdp_common::NS_PER_SEC;
    // The Local API takes the decision's end as stop_at + duration, stop_at in whole seconds.
    let stamp =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now_wall)).to_string();
    let mut seen: Vec<IpNet> = Vec::with_capacity(batch.len());
    let mut alerts = Vec::with_capacity(batch.len());
    for signal in batch {
        if seen.contains(&signal.net) {
            continue;
        }
        seen.push(signal.net);
        let until = clocks.mono_to_wall_secs(signal.banned_until_mono_ns);
        let Some(secs) = until.checked_sub(now_wall).filter(|&s| s > 0) else {
            continue;
        };
        let host = signal.net.prefix_len() == signal.net.max_prefix_len();
        let (scope, value) = if host {
            ("Ip", signal.net.addr().to_string())
        } else {
            ("Range", signal.net.to_string())
        };
        let scenario = signal.scenario();
        let message = match signal.cause {
            BanCause::Rate(class) if signal.prefix => format!(
                "sip-xdp: the unverified sources of {value} together sent {:.0} {} requests/s; \
                 the prefix is banned for {} (strike {})",
                signal.rate_per_sec,
                class.name(),
                format_duration(Duration::from_secs(secs)),
                signal.strikes
            ),
            BanCause::Rate(class) => format!(
                "sip-xdp: {value} sent {:.0} {} requests/s; banned for {} (strike {})",
                signal.rate_per_sec,
                class.name(),
                format_duration(Duration::from_secs(secs)),
                signal.strikes
            ),
            BanCause::Auth(kind) => format!(
                "sip-xdp: {value} failed authentication ({}) past the configured count; banned \
                 for {} (strike {})",
                kind.name(),
                format_duration(Duration::from_secs(secs)),
                signal.strikes
            ),
            BanCause::Signature(SignatureKind::Fingerprint) => format!(
                "sip-xdp: {value} sent a request with a scanner's fingerprint in its headers; \
                 banned for {} (strike {})",
                format_duration(Duration::from_secs(secs)),
                signal.strikes
            ),
            BanCause::Signature(SignatureKind::Trap) => format!(
                "sip-xdp: {value} sent a request to a trap account; banned for {} (strike {})",
                format_duration(Duration::from_secs(secs)),
                signal.strikes
            ),
        };
        let mut source = json!({ "scope": scope, "value": value });
        source[if host { "ip" } else { "range" }] = json!(value);
        alerts.push(json!({
            "scenario": scenario,
            "scenario_hash": "",
            "scenario_version": "",
            "message": message,
            "events_count": i32::try_from(signal.packets).unwrap_or(i32::MAX),
            "events": [],
            "capacity": 0,
            "leakspeed": "0",
            "simulated": false,
            "remediation": true,
            "start_at": stamp,
            "stop_at": stamp,
            "source": source,
            "decisions": [{
                "type": "ban",
                "scope": scope,
                "value": value,
                "duration": format!("{secs}s"),
                "origin": "crowdsec",
                "scenario": scenario,
            }],
        }));
    }
    alerts
}

async fn push_alerts(
    ctx: &Ctx,
    machine: &Machine,
    token: &mut Option<(String, Instant)>,
    alerts: &[Value],
) -> Result<(), PushError> {
    for attempt in 0..2 {
        let fresh = token
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < TOKEN_LIFETIME);
        if !fresh {
            *token = Some((login(ctx, machine).await?, Instant::now()));
        }
        let bearer = token.as_ref().map(|(t, _)| t.as_str()).unwrap_or("");
        let response = ctx
            .http
            .post(ctx.alerts_url.clone())
            .bearer_auth(bearer)
            .json(alerts)
            .send()
            .await
            .map_err(|e| {
                PushError::Unreachable(
                    anyhow::Error::new(e).context(format!("POST {}", ctx.alerts_url)),
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::UNAUTHORIZED && attempt == 0 {
            // Expired or revoked: log in again once.
            *token = None;
            continue;
        }
        let body = response.text().await.unwrap_or_default();
        let error = anyhow!(
            "POST {} answered {status}: {}",
            ctx.alerts_url,
            body.chars().take(200).collect::<String>()
        );
        return Err(if status.is_server_error() {
            PushError::Unreachable(error)
        } else {
            PushError::Rejected(error)
        });
    }
    Err(PushError::Rejected(anyhow!(
        "the Local API refused machine {:?}'s fresh token (401)",
        machine.login
    )))
}

async fn login(ctx: &Ctx, machine: &Machine) -> Result<String, PushError> {
    #[derive(Deserialize)]
    struct LoginResponse {
        #[serde(default)]
        token: String,
    }
    let mut scenarios: Vec<&str> = LimitClass::ALL
        .iter()
        .map(|&c| scenario(BanCause::Rate(c)))
        .chain(
            AuthFailure::ALL
                .iter()
                .map(|&k| scenario(BanCause::Auth(k))),
        )
        .chain(std::iter::once(PREFIX_SCENARIO))
        .collect();
    scenarios.dedup();
    let response = ctx
        .http
        .post(ctx.login_url.clone())
        .json(&json!({
            "machine_id": machine.login,
            "password": machine.password,
            "scenarios": scenarios,
        }))
        .send()
        .await
        .map_err(|e| {
            PushError::Unreachable(anyhow::Error::new(e).context(format!("POST {}", ctx.login_url)))
        })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(PushError::Unreachable(anyhow!(
            "POST {} answered {status}",
            ctx.login_url
        )));
    }
    if !status.is_success() {
        return Err(PushError::Rejected(anyhow!(
            "the Local API refused machine {:?} ({status}): check the credentials against `cscli \
             machines list` (the machine must be validated); {MACHINE_FIX}",
            machine.login
        )));
    }
    let body: LoginResponse = response.json().await.map_err(|e| {
        PushError::Unreachable(
            anyhow::Error::new(e).context("reading the Local API's login answer"),
        )
    })?;
    if body.token.is_empty() {
        return Err(PushError::Rejected(anyhow!(
            "the Local API's login answer for machine {:?} holds no token",
            machine.login
        )));
    }
    Ok(body.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ban_record(kind: BanEventKind, source: &str) -> BanRecord {
        BanRecord {
            kind,
            source: source.parse().unwrap(),
            port: None,
            prefix_len: None,
            cause: BanCause::Rate(LimitClass::Register),
            rate_per_sec: 400.0,
            window_packets: 41,
            window_ns: 100_000_000,
            duration_ns: 60_000_000_000,
            strikes: 1,
            banned_until_mono_ns: 60_000_000_000,
            at_mono_ns: 0,
        }
    }

    #[test]
    fn a_flood_of_own_bans_is_bounded_and_counted() {
        let (tx, mut rx) = mpsc::channel(SIGNAL_QUEUE);
        let stats = Stats::default();
        let last_warn = AtomicU64::new(0);
        let flood = 100_000u32;
        for i in 0..flood {
            let source = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i));
            let record = ban_record(BanEventKind::Ban, &source.to_string());
            offer(&tx, signal_of(&record, 128).unwrap(), &stats, &last_warn);
        }
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, SIGNAL_QUEUE);
        assert_eq!(
            stats.metrics().alerts_dropped,
            u64::from(flood) - SIGNAL_QUEUE as u64
        );
        assert_ne!(
            last_warn.load(Ordering::Relaxed),
            0,
            "the drop was reported"
        );
    }

    #[test]
    fn only_bans_are_signalled_and_ipv6_covers_the_tracked_prefix() {
        assert!(signal_of(&ban_record(BanEventKind::WouldBan, "198.51.100.7"), 128).is_none());
        assert!(signal_of(&ban_record(BanEventKind::Expired, "198.51.100.7"), 128).is_none());
        let v4 = signal_of(&ban_record(BanEventKind::Ban, "198.51.100.7"), 64).unwrap();
        assert_eq!(v4.net, net("198.51.100.7/32"));
        let v6 = signal_of(&ban_record(BanEventKind::Ban, "2001:db8:1:2::"), 64).unwrap();
        assert_eq!(v6.net, net("2001:db8:1:2::/64"));
        let v6 = signal_of(&ban_record(BanEventKind::Ban, "2001:db8:1:2::9"), 128).unwrap();
        assert_eq!(v6.net, net("2001:db8:1:2::9/128"));
    }

    #[test]
    fn prefix_bans_become_range_alerts_of_their_own_scenario() {
        let mut record = ban_record(BanEventKind::Ban, "198.51.100.0");
        record.prefix_len = Some(24);
        let signal = signal_of(&record, 128).unwrap();
        assert_eq!(signal.net, net("198.51.100.0/24"));
        assert_eq!(signal.scenario(), PREFIX_SCENARIO);
        let mut v6 = ban_record(BanEventKind::Ban, "2001:db8:1::");
        v6.prefix_len = Some(48);
        v6.cause = BanCause::Rate(LimitClass::Connection);
        // The source-key prefix does not matter for a prefix's ban: its own length does.
        let v6 = signal_of(&v6, 128).unwrap();
        assert_eq!(v6.net, net("2001:db8:1::/48"));
        let clocks = Clocks {
            wall_ns: 1_700_000_000_400_000_000,
            mono_ns: 50_000_000_000,
        };
        let alerts = build_alerts(&[signal, v6], clocks);
        assert_eq!(alerts.len(), 2, "{alerts:#?}");
        for (alert, value) in alerts.iter().zip(["198.51.100.0/24", "2001:db8:1::/48"]) {
            assert_eq!(alert["scenario"], "sip-xdp/sip-prefix-flood");
            assert_eq!(alert["source"]["scope"], "Range");
            assert_eq!(alert["source"]["range"], value);
            assert_eq!(alert["decisions"][0]["scope"], "Range");
            assert_eq!(alert["decisions"][0]["value"], value);
            assert_eq!(
                alert["decisions"][0]["scenario"],
                "sip-xdp/sip-prefix-flood"
            );
            assert_eq!(alert["decisions"][0]["duration"], "11s");
        }
        let message = alerts[0]["message"].as_str().unwrap();
        assert!(
            message.starts_with("sip-xdp: the unverified sources of 198.51.100.0/24 together sent"),
            "{message}"
        );
        // A connection flood of one source has a scenario of its own.
        assert_eq!(
            scenario(BanCause::Rate(LimitClass::Connection)),
            "sip-xdp/sip-tcp-flood"
        );
    }

    #[test]
    fn own_bans_become_alerts_with_decisions() {
        let clocks = Clocks {
            wall_ns: 1_700_000_000_400_000_000,
            mono_ns: 50_000_000_000,
        };
        let signal = |net: &str, class, until_s: u64| Signal {
            net: net.parse().unwrap(),
            cause: BanCause::Rate(class),
            banned_until_mono_ns: until_s * sip_xdp_common::NS_PER_SEC,
            packets: 41,
            rate_per_sec: 412.4,
            strikes: 1,
            prefix: false,
        };
        let alerts = build_alerts(
            &[
                signal("198.51.100.10/32", LimitClass::Register, 110),
                signal("198.51.100.10/32", LimitClass::Register, 110),
                signal("2001:db8:1::/64", LimitClass::Options, 80),
                signal("198.51.100.11/32", LimitClass::Invite, 40),
            ],
            clocks,
        );
        assert_eq!(alerts.len(), 2, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(a["scenario"], "sip-xdp/register-flood");
        assert_eq!(a["source"]["scope"], "Ip");
        assert_eq!(a["source"]["ip"], "198.51.100.10");
        assert_eq!(a["stop_at"], "2023-11-14T22:13:20Z");
        assert_eq!(a["events_count"], 41);
        let d = &a["decisions"][0];
        assert_eq!(d["type"], "ban");
        assert_eq!(d["value"], "198.51.100.10");
        assert_eq!(d["duration"], "61s");
        assert_eq!(d["origin"], "crowdsec");
        let b = &alerts[1];
        assert_eq!(b["scenario"], "sip-xdp/options-flood");
        assert_eq!(b["source"]["range"], "2001:db8:1::/64");
        assert_eq!(b["decisions"][0]["scope"], "Range");
        assert_eq!(b["decisions"][0]["duration"], "31s");
    }
}
