//! The bouncer: polls `GET /v1/decisions/stream`, applies what changed as bans of origin
//! `crowdsec`, backs off while the Local API is away (logging the outage once) and pulls the whole
//! set again when it is back.
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use reqwest::StatusCode;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::{
    client::{ClientConfig, Ctx},
    credentials::BOUNCER_KEY_FIX,
    decisions::{DecisionBook, DecisionStream},
    stats::now_unix,
};
use crate::{config::format_duration, state::BanOrigin};

pub(super) fn next_backoff(delay: Duration, cfg: &ClientConfig) -> Duration {
    delay
        .max(cfg.poll_interval)
        .saturating_mul(2)
        .min(cfg.max_backoff)
}

/// Sleeps `delay`; false when told to stop first.
pub(super) async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        () = tokio::time::sleep(delay) => true,
    }
}

pub(super) async fn run_bouncer(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let cfg = &ctx.cfg;
    let stats = &ctx.stats;
    let mut book = DecisionBook::new(cfg.limits);
    let mut startup = true;
    let mut delay = Duration::ZERO;
    let mut down_since: Option<Instant> = None;
    let mut synced_once = false;
    let mut apply_failing = false;
    loop {
        if !pause(&mut stop, delay).await {
            return;
        }
        let fetched = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            fetched = fetch_stream(&ctx, startup) => fetched,
        };
        let stream = match fetched {
            Ok(stream) => stream,
            Err(e) => {
                stats.polls_failure.fetch_add(1, Ordering::Relaxed);
                stats.lapi_up.store(false, Ordering::Relaxed);
                delay = next_backoff(delay, cfg);
                startup = true;
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    warn!(
                        lapi = %cfg.lapi,
                        error = %format!("{e:#}"),
                        max_backoff = %format_duration(cfg.max_backoff),
                        "CrowdSec Local API unreachable: bans already applied stay in force; \
                         retrying with backoff, logged once until it is back"
                    );
                } else {
                    debug!(error = %format!("{e:#}"), retry_in = ?delay, "CrowdSec Local API still unreachable");
                }
                continue;
            }
        };
        stats.polls_success.fetch_add(1, Ordering::Relaxed);
        stats.lapi_up.store(true, Ordering::Relaxed);
        stats
            .last_sync_unix_ms
            .store(now_unix().as_millis() as u64, Ordering::Relaxed);

        let pending = book.fold(stream, startup, now_unix().as_secs_f64());
        stats.decisions.store(book.held() as u64, Ordering::Relaxed);
        let refused = book.take_refused();
        stats
            .refused_too_broad
            .fetch_add(refused.too_broad, Ordering::Relaxed);
        stats
            .refused_ipv4_mapped
            .fetch_add(refused.ipv4_mapped, Ordering::Relaxed);
        let applied = match pending {
            None => Ok((0, 0, 0)),
            Some(pending) => {
                let job = ctx.clone();
                let update = pending.update.clone();
                let done = tokio::task::spawn_blocking(move || {
                    job.control.update_origin(BanOrigin::Crowdsec, &update)
                })
                .await
                .map_err(|e| anyhow!("the ban update task failed: {e}"))
                .and_then(|r| r);
                if done.is_ok() {
                    book.commit(pending);
                }
                done
            }
        };
        let (added, lifted) = match applied {
            Ok((added, lifted, over_quota)) => {
                if over_quota > 0 {
                    warn!(
                        over_quota,
                        quota = cfg.limits.max_nets,
                        "CrowdSec decisions left out: origin crowdsec is at its quota of the \
                         kernel's deny table (crowdsec.max_bans)"
                    );
                }
                (added, lifted)
            }
            Err(e) => {
                // The next poll pulls the whole set again and retries.
                if !apply_failing {
                    error!(
                        error = %format!("{e:#}"),
                        "could not apply CrowdSec decisions; retrying with a full pull"
                    );
                }
                apply_failing = true;
                startup = true;
                delay = next_backoff(delay, cfg);
                continue;
            }
        };
        apply_failing = false;
        let held = book.held();
        if startup {
            if let Some(since) = down_since.take() {
                let down_for = Duration::from_secs(since.elapsed().as_secs());
                info!(
                    lapi = %cfg.lapi,
                    down_for = %format_duration(down_for),
                    decisions = held,
                    added,
                    lifted,
                    "CrowdSec Local API is back after {}; resynced {held} decisions",
                    format_duration(down_for)
                );
            } else if !synced_once {
                info!(
                    lapi = %cfg.lapi,
                    decisions = held,
                    added,
                    lifted,
                    "connected to the CrowdSec Local API; synced {held} decisions"
                );
            }
        } else if added + lifted > 0 {
            info!(
                added,
                lifted,
                decisions = held,
                "CrowdSec decisions applied"
            );
        }
        synced_once = true;
        startup = false;
        delay = cfg.poll_interval;
    }
}

async fn fetch_stream(ctx: &Ctx, startup: bool) -> Result<DecisionStream> {
    let mut url = ctx.stream_url.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("startup", if startup { "true" } else { "false" })
            // Every decision, not only the longest per value: a deleted one then never hides
            // another still in force on the same net.
            .append_pair("dedup", "false")
            .append_pair("scopes", "ip,range");
        if !ctx.cfg.origins.is_empty() {
            query.append_pair("origins", &ctx.cfg.origins.join(","));
        }
    }
    let response = ctx
        .http
        .get(url)
        .header("X-Api-Key", &ctx.cfg.api_key)
        .send()
        .await
        .with_context(|| format!("GET {}", ctx.stream_url))?;
    let status = response.status();
    if matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) {
        bail!(
            "the Local API refused the bouncer key ({status}); check crowdsec.api_key_file \
             against `cscli bouncers list`, or {BOUNCER_KEY_FIX}"
        );
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!(
            "the Local API answered {status}: {}",
            body.chars().take(200).collect::<String>()
        );
    }
    response
        .json::<DecisionStream>()
        .await
        .context("the Local API's decision stream is not the JSON sip-xdp expects")
}
