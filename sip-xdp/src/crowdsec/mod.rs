//! CrowdSec: this node as a bouncer of a CrowdSec Local API (its ban decisions become bans of
//! origin `crowdsec`) and, optionally, as a signal source (its own rate-limit bans go to the
//! Local API as alerts carrying a ban decision, so every bouncer of the fleet enforces them).
//!
//! The API shapes are crowdsec 1.4's (Debian 12), which later versions keep: `GET
//! /v1/decisions/stream` with `X-Api-Key` (`startup=true` gives the whole set, then each poll
//! gives what changed since this bouncer's last pull), `POST /v1/watchers/login` for a JWT, and
//! `POST /v1/alerts`.
//!
//! Bans live in the kernel and the state file with their expiry, so an unreachable Local API
//! changes nothing already in force: the bouncer backs off, logs the outage once, and pulls the
//! whole set again when the API is back, which lifts what was deleted meanwhile.
//!
//! The rooms: `client` (`[crowdsec]` with its secrets read, the tasks' shared context),
//! `credentials` (key and credentials files, their permissions), `decisions` (the stream
//! decoded, screened and folded into bans), `bouncer` (the poller: backoff, outage, resync),
//! `signals` (own bans queued and pushed as alerts) and `stats` (the figures metrics show).
use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{config::format_duration, control::Control, events::BanRecord};

mod bouncer;
mod client;
mod credentials;
mod decisions;
mod signals;
mod stats;

use self::{
    bouncer::run_bouncer,
    client::{Ctx, http_client},
    signals::{Signal, offer, run_pusher, signal_of},
};
pub use self::{
    client::{ClientConfig, MAX_CROWDSEC_NETS, USER_AGENT},
    credentials::Machine,
    decisions::{
        DecisionBook, DecisionStream, FeedLimits, NetRefusal, Pending, Refused, StreamDecision,
        parse_go_duration, screen_net,
    },
    signals::{PUSH_GAP, SIGNAL_BATCH, SIGNAL_QUEUE, scenario},
    stats::Stats,
};

const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The running client: the bouncer task and, with signals on, the pusher task.
pub struct Crowdsec {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    signals: Option<mpsc::Sender<Signal>>,
    ipv6_prefix: AtomicU8,
    stats: Arc<Stats>,
    last_full_warn_ms: AtomicU64,
    config: ClientConfig,
}

impl Crowdsec {
    /// Starts the tasks on the current tokio runtime. `control` applies the decisions (its own
    /// lock and state file, like a CLI edit); `ipv6_prefix` is `sip.ipv6_source_prefix`, the
    /// prefix an own IPv6 ban covers.
    pub fn start(
        cfg: ClientConfig,
        control: Control,
        stats: Arc<Stats>,
        ipv6_prefix: u8,
    ) -> Result<Self> {
        let http = http_client(cfg.ca_pem.as_deref())?;
        let ctx = Arc::new(Ctx {
            stream_url: cfg.endpoint("v1/decisions/stream")?,
            login_url: cfg.endpoint("v1/watchers/login")?,
            alerts_url: cfg.endpoint("v1/alerts")?,
            cfg,
            http,
            control,
            stats: stats.clone(),
        });
        let config = ctx.cfg.clone();
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(run_bouncer(ctx.clone(), stop_rx.clone()))];
        let cfg = &ctx.cfg;
        let evidence_off = !cfg.push_rate_bans && !cfg.push_auth_bans && !cfg.push_prefix_bans;
        if cfg.machine.is_some() && evidence_off {
            info!(
                "crowdsec.signals.rate_bans, auth_bans and prefix_bans are off: this node's \
                 rate, auth and prefix bans are not pushed to the Local API (a forged UDP flood \
                 would otherwise ban a real peer on the whole fleet); set them to true where \
                 forged sources cannot reach this node{}",
                if cfg.push_signature_bans {
                    "; its fingerprint and trap bans are (signature_bans)"
                } else {
                    ""
                }
            );
        }
        let signals = match ctx.cfg.machine.clone() {
            None => None,
            Some(_) if evidence_off && !ctx.cfg.push_signature_bans => None,
            Some(machine) => {
                let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
                tasks.push(tokio::spawn(run_pusher(ctx.clone(), machine, rx, stop_rx)));
                Some(tx)
            }
        };
        let loopback = config.lapi.host_str().is_some_and(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_or(h.eq_ignore_ascii_case("localhost"), |a| a.is_loopback())
        });
        if config.lapi.scheme() == "http" && !loopback {
            warn!(
                lapi = %config.lapi,
                "plain http:// to a Local API off loopback (crowdsec.allow_insecure_http = \
                 true): the bouncer key and every decision cross the network in clear"
            );
        }
        info!(
            lapi = %config.lapi,
            poll_interval = %format_duration(ctx.cfg.poll_interval),
            signals = signals.is_some(),
            "CrowdSec client started"
        );
        Ok(Self {
            stop,
            tasks,
            signals,
            ipv6_prefix: AtomicU8::new(ipv6_prefix),
            stats,
            last_full_warn_ms: AtomicU64::new(0),
            config,
        })
    }

    pub fn set_ipv6_prefix(&self, prefix: u8) {
        self.ipv6_prefix.store(prefix, Ordering::Relaxed);
    }

    /// Queues an own rate-limit ban for the Local API (signals on); never blocks the event
    /// reader: a full queue drops and counts.
    pub fn on_ban(&self, record: &BanRecord) {
        let Some(tx) = &self.signals else {
            return;
        };
        let wanted = match record.cause {
            _ if record.prefix_len.is_some() => self.config.push_prefix_bans,
            sip_xdp_common::BanCause::Rate(_) => self.config.push_rate_bans,
            sip_xdp_common::BanCause::Auth(_) => self.config.push_auth_bans,
            sip_xdp_common::BanCause::Signature(_) => self.config.push_signature_bans,
        };
        if !wanted {
            return;
        }
        if let Some(signal) = signal_of(record, self.ipv6_prefix.load(Ordering::Relaxed)) {
            offer(tx, signal, &self.stats, &self.last_full_warn_ms);
        }
    }

    /// Stops both tasks (an HTTP request in flight is abandoned) and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        }
        debug!(lapi = %self.config.lapi, "CrowdSec client stopped");
    }
}

impl crate::feeds::BanFeed for Crowdsec {
    fn origin(&self) -> crate::state::BanOrigin {
        crate::state::BanOrigin::Crowdsec
    }

    fn on_own_ban(&self, record: &BanRecord) {
        self.on_ban(record);
    }

    fn set_ipv6_prefix(&self, prefix: u8) {
        Crowdsec::set_ipv6_prefix(self, prefix);
    }

    fn stop(self: Box<Self>) -> crate::feeds::Stopping {
        Box::pin(Crowdsec::stop(*self))
    }
}

#[cfg(test)]
mod tests {
    use sip_xdp_common::{AuthFailure, BanCause, LimitClass};

    use super::*;
    use crate::{config::CrowdsecSection, events::BanEventKind};

    fn machine_section(rate_bans: bool) -> CrowdsecSection {
        machine_section_with(rate_bans, false)
    }

    fn machine_section_with(rate_bans: bool, auth_bans: bool) -> CrowdsecSection {
        let mut section = CrowdsecSection {
            enabled: true,
            // Nothing listens there: the bouncer only backs off.
            lapi_url: "http://127.0.0.1:9/".to_owned(),
            api_key: Some("k0123456789".to_owned()),
            ..CrowdsecSection::default()
        };
        section.signals.enabled = true;
        section.signals.machine_id = Some("m".to_owned());
        section.signals.password = Some("p".to_owned());
        section.signals.rate_bans = rate_bans;
        section.signals.auth_bans = auth_bans;
        // On by default; these tests are about the other switches.
        section.signals.signature_bans = false;
        section
    }

    /// Signature bans go out under their own switch (on by default), each kind under its own
    /// scenario, whatever rate_bans and auth_bans say; a would-ban never does.
    #[test]
    fn signature_bans_are_signalled_under_their_own_switch() {
        use sip_xdp_common::SignatureKind;
        assert!(CrowdsecSection::default().signals.signature_bans);
        for signature_bans in [false, true] {
            let mut section = machine_section_with(false, false);
            section.signals.signature_bans = signature_bans;
            let cfg = ClientConfig::from_settings(&section, None)
                .unwrap()
                .unwrap();
            assert_eq!(cfg.push_signature_bans, signature_bans);
            let (tx, mut rx) = mpsc::channel(SIGNAL_QUEUE);
            let (stop, _) = watch::channel(false);
            let client = Crowdsec {
                stop,
                tasks: Vec::new(),
                signals: Some(tx),
                ipv6_prefix: AtomicU8::new(128),
                stats: Arc::default(),
                last_full_warn_ms: AtomicU64::new(0),
                config: cfg,
            };
            let sig =
                |kind, source| record(BanEventKind::Ban, source, None, BanCause::Signature(kind));
            client.on_ban(&sig(SignatureKind::Fingerprint, "203.0.113.50"));
            client.on_ban(&sig(SignatureKind::Trap, "2001:db8::51"));
            client.on_ban(&record(
                BanEventKind::WouldBan,
                "203.0.113.52",
                None,
                BanCause::Signature(SignatureKind::Trap),
            ));
            client.on_ban(&record(
                BanEventKind::Ban,
                "203.0.113.53",
                None,
                BanCause::Rate(LimitClass::Register),
            ));
            let mut queued = Vec::new();
            while let Ok(signal) = rx.try_recv() {
                queued.push((signal.net().to_string(), signal.scenario()));
            }
            let expected: Vec<(String, &str)> = if signature_bans {
                vec![
                    (
                        "203.0.113.50/32".to_owned(),
                        "sip-xdp/sip-scanner-fingerprint",
                    ),
                    ("2001:db8::51/128".to_owned(), "sip-xdp/sip-trap-account"),
                ]
            } else {
                Vec::new()
            };
            assert_eq!(queued, expected, "signature_bans = {signature_bans}");
        }
    }

    #[tokio::test]
    async fn rate_bans_are_not_signalled_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        for rate_bans in [false, true] {
            let cfg = ClientConfig::from_settings(&machine_section(rate_bans), None)
                .unwrap()
                .unwrap();
            assert_eq!(cfg.push_rate_bans, rate_bans);
            assert!(cfg.machine.is_some(), "credentials are read either way");
            let control = Control::new(
                crate::loader::PinDir::new(dir.path().join("no-pins")),
                dir.path().to_owned(),
            );
            let client = Crowdsec::start(cfg, control, Arc::default(), 128).unwrap();
            assert_eq!(client.signals.is_some(), rate_bans);
            client.stop().await;
        }
    }

    fn record(kind: BanEventKind, source: &str, port: Option<u16>, cause: BanCause) -> BanRecord {
        BanRecord {
            kind,
            source: source.parse().unwrap(),
            port,
            prefix_len: None,
            cause,
            rate_per_sec: 3.0,
            window_packets: 5,
            window_ns: 600_000_000_000,
            duration_ns: 60_000_000_000,
            strikes: 1,
            // Far in the future: the pusher would keep it.
            banned_until_mono_ns: u64::MAX / 2,
            at_mono_ns: 0,
        }
    }

    /// What `on_ban` queues for each of an auth ban per failure kind, a phone (flow) ban, an
    /// auth would-ban (monitor mode) and a rate ban, with the two switches in each position.
    /// The client is built around a queue the test reads instead of the pusher task.
    #[test]
    fn auth_bans_are_not_signalled_unless_configured() {
        let auth = |kind| {
            record(
                BanEventKind::Ban,
                "198.51.100.40",
                None,
                BanCause::Auth(kind),
            )
        };
        for (rate_bans, auth_bans) in [(false, false), (false, true), (true, false), (true, true)] {
            let cfg =
                ClientConfig::from_settings(&machine_section_with(rate_bans, auth_bans), None)
                    .unwrap()
                    .unwrap();
            assert_eq!(
                (cfg.push_rate_bans, cfg.push_auth_bans),
                (rate_bans, auth_bans)
            );
            let (tx, mut rx) = mpsc::channel(SIGNAL_QUEUE);
            let (stop, _) = watch::channel(false);
            let client = Crowdsec {
                stop,
                tasks: Vec::new(),
                signals: Some(tx),
                ipv6_prefix: AtomicU8::new(128),
                stats: Arc::default(),
                last_full_warn_ms: AtomicU64::new(0),
                config: cfg,
            };
            for kind in [
                AuthFailure::Forbidden,
                AuthFailure::NotFound,
                AuthFailure::Rechallenged,
                AuthFailure::Unanswered,
            ] {
                client.on_ban(&auth(kind));
            }
            // Neither a phone ban (one flow of a verified address: the address must not be banned
            // fleet-wide) nor a would-ban is ever pushed.
            client.on_ban(&record(
                BanEventKind::FlowBan,
                "198.51.100.41",
                Some(5062),
                BanCause::Auth(AuthFailure::Rechallenged),
            ));
            client.on_ban(&record(
                BanEventKind::WouldBan,
                "198.51.100.42",
                None,
                BanCause::Auth(AuthFailure::Forbidden),
            ));
            client.on_ban(&record(
                BanEventKind::Ban,
                "198.51.100.43",
                None,
                BanCause::Rate(LimitClass::Register),
            ));
            let mut queued = Vec::new();
            while let Ok(signal) = rx.try_recv() {
                queued.push((signal.net().to_string(), signal.scenario()));
            }
            let mut expected = Vec::new();
            if auth_bans {
                for scenario in [
                    "sip-xdp/sip-bruteforce",
                    "sip-xdp/sip-scan",
                    "sip-xdp/sip-bruteforce",
                    "sip-xdp/sip-scan",
                ] {
                    expected.push(("198.51.100.40/32".to_owned(), scenario));
                }
            }
            if rate_bans {
                expected.push(("198.51.100.43/32".to_owned(), "sip-xdp/register-flood"));
            }
            assert_eq!(
                queued, expected,
                "rate_bans = {rate_bans}, auth_bans = {auth_bans}"
            );
        }
    }

    #[test]
    fn prefix_bans_are_signalled_only_with_their_own_switch() {
        let prefix = |rate_bans: bool| {
            let mut r = record(
                BanEventKind::Ban,
                "198.51.100.0",
                None,
                BanCause::Rate(LimitClass::Register),
            );
            r.prefix_len = Some(24);
            if !rate_bans {
                r.source = "203.0.113.0".parse().unwrap();
            }
            r
        };
        for (rate_bans, prefix_bans) in [(false, false), (false, true), (true, false), (true, true)]
        {
            let mut section = machine_section(rate_bans);
            section.signals.prefix_bans = prefix_bans;
            let cfg = ClientConfig::from_settings(&section, None)
                .unwrap()
                .unwrap();
            assert_eq!(cfg.push_prefix_bans, prefix_bans);
            let (tx, mut rx) = mpsc::channel(SIGNAL_QUEUE);
            let (stop, _) = watch::channel(false);
            let client = Crowdsec {
                stop,
                tasks: Vec::new(),
                signals: Some(tx),
                ipv6_prefix: AtomicU8::new(128),
                stats: Arc::default(),
                last_full_warn_ms: AtomicU64::new(0),
                config: cfg,
            };
            client.on_ban(&prefix(rate_bans));
            // A would-ban of a prefix (monitor mode) is never pushed.
            let mut would = prefix(rate_bans);
            would.kind = BanEventKind::WouldBan;
            client.on_ban(&would);
            let mut queued = Vec::new();
            while let Ok(signal) = rx.try_recv() {
                queued.push((signal.net().to_string(), signal.scenario()));
            }
            let expected: Vec<(String, &str)> = if prefix_bans {
                let net = if rate_bans {
                    "198.51.100.0/24"
                } else {
                    "203.0.113.0/24"
                };
                vec![(net.to_owned(), "sip-xdp/sip-prefix-flood")]
            } else {
                Vec::new()
            };
            assert_eq!(
                queued, expected,
                "rate_bans = {rate_bans}, prefix_bans = {prefix_bans}"
            );
        }
    }

    #[tokio::test]
    async fn auth_bans_alone_start_the_pusher() {
        let dir = tempfile::tempdir().unwrap();
        for (rate_bans, auth_bans) in [(false, false), (false, true)] {
            let cfg =
                ClientConfig::from_settings(&machine_section_with(rate_bans, auth_bans), None)
                    .unwrap()
                    .unwrap();
            let control = Control::new(
                crate::loader::PinDir::new(dir.path().join("no-pins")),
                dir.path().to_owned(),
            );
            let client = Crowdsec::start(cfg, control, Arc::default(), 128).unwrap();
            assert_eq!(client.signals.is_some(), auth_bans);
            client.stop().await;
        }
    }
}
