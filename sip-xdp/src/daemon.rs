//! `sip-xdp run`: the foreground service. Attaches (adopting a pinned attachment), logs ban
//! events from the kernel, keeps maps and state file in step, serves metrics, reloads on SIGHUP.
//!
//! The daemon holds no link: the filter's life is the pins', so a crashed or killed daemon
//! leaves the host filtering, and the next `run` picks everything up where it was.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tracing::{error, info, warn};

use crate::{
    config::{LogFormat, Settings},
    control::{self, Control},
    crowdsec::{self, Crowdsec},
    events::{self, BanRecord, EventLogger, LogLimiterConfig},
    feeds::Feeds,
    instance::DaemonLock,
    loader::{self, AttachMode, PinDir},
    maps::{self, SipMaps},
    metrics::{self, Snapshot},
    state::{BanOrigin, StateFile, now_wall_secs},
    status::{self, TableFill},
};

/// How often expired manual bans are cleared and maps and state file compared.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
/// How often the source table is scanned for the ban and fill gauges (a full walk of the LRU).
const TABLE_SCAN_INTERVAL: Duration = Duration::from_secs(15);
/// How often automatic bans are saved to the state file.
const AUTO_BAN_SAVE_INTERVAL: Duration = Duration::from_secs(60);

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files get plain text; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn limiter_config(settings: &Settings) -> LogLimiterConfig {
    LogLimiterConfig {
        lines_per_sec: settings.log.ban_lines_per_sec,
        burst: settings.log.ban_lines_burst,
        summary_interval: settings.log.summary_interval,
    }
}

/// What the daemon counts itself, for the metrics.
#[derive(Default)]
struct DaemonStats {
    ban_events: BTreeMap<(String, String), u64>,
    table_fill: TableFill,
    config_reloads: u64,
    config_reload_failures: u64,
    config_last_reload_success_timestamp_seconds: f64,
}

struct Shared {
    maps: Mutex<SipMaps>,
    logger: Mutex<EventLogger>,
    stats: Mutex<DaemonStats>,
    control: Control,
    pins: PinDir,
    /// The ban feeds running (the CrowdSec client while `[crowdsec]` is on).
    feeds: Mutex<Feeds>,
    /// The settings the running CrowdSec feed was started with, to tell whether a reload
    /// changes them.
    crowdsec_config: Mutex<Option<crowdsec::ClientConfig>>,
    /// The CrowdSec client's figures; they outlive its restarts.
    crowdsec_stats: Arc<crowdsec::Stats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another task must not take the daemon's bookkeeping down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_unix_secs_f64() -> f64 {
    crate::time::now_wall().as_secs_f64()
}

/// How to run the daemon: what `sip-xdp run` was told, in the library's terms.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    /// The config in force at start.
    pub settings: Settings,
    /// The file it came from, read again on SIGHUP; `None`: built-in defaults, nothing to reload.
    pub config_path: Option<PathBuf>,
    /// Overrides `log.format`.
    pub log_format: Option<LogFormat>,
    /// Leave the filter attached on SIGINT/SIGTERM.
    pub keep_attached: bool,
    pub no_metrics: bool,
    /// Overrides `metrics.listen`.
    pub metrics_listen: Option<SocketAddr>,
}

pub fn run(options: RunOptions) -> Result<()> {
    let RunOptions {
        pin_dir,
        state_dir,
        settings,
        config_path,
        ..
    } = options.clone();
    let args = &options;
    init_logging(options.log_format.unwrap_or(settings.log.format));
    // Before attaching: a missing key file stops here, with nothing changed.
    let crowdsec_config =
        crowdsec::ClientConfig::from_settings(&settings.crowdsec, config_path.as_deref())?;
    let _daemon_lock = DaemonLock::acquire(&state_dir)?;
    let pins = PinDir::new(&pin_dir);
    let control = Control::new(pins.clone(), state_dir.clone());

    // One daemon per pinned program: a second one (even with another state directory) would
    // replace the first one's program and fight it over the config.
    pins.ensure()?;
    let _pin_lock = pins.lock_daemon()?;

    let report = control.attach(&settings, &args.ifaces, args.mode)?;
    for warning in &report.warnings {
        warn!("{warning}");
    }
    for (iface, outcome) in &report.outcomes {
        if outcome.fell_back {
            warn!(
                iface = %iface,
                "the driver refused native XDP; attached in generic (skb) mode, which filters \
                 after the kernel allocates the packet (slower under floods)"
            );
        }
        info!(
            iface = %iface,
            mode = %outcome.mode,
            adopted = outcome.replaced,
            pin_dir = %pins.path().display(),
            "{}",
            if outcome.replaced {
                "adopted the pinned attachment (program replaced in place; counters, bans and lists kept)"
            } else {
                "attached"
            }
        );
    }
    let maps = SipMaps::open_pinned(&pins)?;
    let ring = maps::open_ban_events(&pins)?;
    let shared = Arc::new(Shared {
        maps: Mutex::new(maps),
        logger: Mutex::new(EventLogger::new(limiter_config(&settings))),
        stats: Mutex::new(DaemonStats::default()),
        control,
        pins,
        feeds: Mutex::default(),
        crowdsec_config: Mutex::new(None),
        crowdsec_stats: Arc::default(),
    });
    refresh_table_fill(&shared);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(
        shared.clone(),
        settings,
        config_path,
        args,
        ring,
        crowdsec_config,
    ));

    // Whatever happened, keep the escalation history and leave the host as promised.
    if let Err(e) = shared.control.save_auto_bans(&lock(&shared.maps)) {
        warn!(error = %format!("{e:#}"), "could not save automatic bans to the state file");
    }
    if args.keep_attached {
        info!("stopping; the program stays attached (--keep-attached)");
    } else {
        for iface in &args.ifaces {
            match loader::detach_pinned(&shared.pins, iface) {
                Ok(_) => info!(iface = %iface, "detached"),
                Err(e) => error!(iface = %iface, error = %e, "could not detach"),
            }
        }
    }
    result
}

async fn serve(
    shared: Arc<Shared>,
    mut settings: Settings,
    config_path: Option<PathBuf>,
    args: &RunOptions,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    crowdsec_config: Option<crowdsec::ClientConfig>,
) -> Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let event_shared = shared.clone();
    let events_task = tokio::spawn(events::read_events(
        ring,
        move |record: BanRecord| {
            lock(&event_shared.logger).log(&record, Instant::now());
            *lock(&event_shared.stats)
                .ban_events
                .entry((
                    record.metric_kind().to_owned(),
                    record.cause.name().to_owned(),
                ))
                .or_insert(0) += 1;
            lock(&event_shared.feeds).on_own_ban(&record);
        },
        stopped(stop_rx.clone()),
    ));

    let metrics_addr = if args.no_metrics || !settings.metrics.enabled {
        None
    } else {
        Some(args.metrics_listen.unwrap_or(settings.metrics.listen))
    };
    let metrics_task = match metrics_addr {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen for metrics on {addr} (in use? set metrics.listen, \
                     --metrics-listen, or --no-metrics)"
                )
            })?;
            info!(listen = %addr, "serving Prometheus metrics at /metrics");
            let snapshot_shared = shared.clone();
            let source: metrics::SnapshotFn = Arc::new(move || snapshot(&snapshot_shared));
            Some(tokio::spawn(metrics::serve(
                listener,
                source,
                stopped(stop_rx.clone()),
            )))
        }
    };

    if let Some(config) = crowdsec_config {
        start_crowdsec(&shared, config, &settings)?;
    }

    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_reconcile = Instant::now();
    let mut last_scan = Instant::now();
    let mut last_save = Instant::now();
    // systemd (Type=notify): ready only now, with the program attached and events flowing.
    notify(&[sd_notify::NotifyState::Ready]);
    info!(
        ifaces = %args.ifaces.join(","),
        config = %config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "built-in defaults".into()),
        "sip-xdp running"
    );

    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                notify(&[sd_notify::NotifyState::Reloading]);
                let before = settings.clone();
                reload(&shared, &mut settings, config_path.as_deref());
                reload_crowdsec(&shared, &before, &mut settings, config_path.as_deref()).await;
                notify(&[sd_notify::NotifyState::Ready]);
            }
            _ = tick.tick() => {
                lock(&shared.logger).tick(Instant::now());
                if last_reconcile.elapsed() >= RECONCILE_INTERVAL {
                    last_reconcile = Instant::now();
                    let s = shared.clone();
                    let done = tokio::task::spawn_blocking(move || s.control.reconcile(&mut lock(&s.maps))).await;
                    if let Ok(Err(e)) = done {
                        warn!(error = %format!("{e:#}"), "could not reconcile maps and state file");
                    }
                }
                if last_scan.elapsed() >= TABLE_SCAN_INTERVAL {
                    last_scan = Instant::now();
                    let s = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || refresh_table_fill(&s)).await;
                }
                if last_save.elapsed() >= AUTO_BAN_SAVE_INTERVAL {
                    last_save = Instant::now();
                    let s = shared.clone();
                    let done = tokio::task::spawn_blocking(move || s.control.save_auto_bans(&lock(&s.maps))).await;
                    if let Ok(Err(e)) = done {
                        warn!(error = %format!("{e:#}"), "could not save automatic bans");
                    }
                }
            }
        }
    }
    notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let feeds = lock(&shared.feeds).take_all();
    for feed in feeds {
        feed.stop().await;
    }
    match events_task.await {
        Ok(Err(e)) => warn!(error = %e, "ban event reader stopped with an error"),
        Err(e) => warn!(error = %e, "ban event reader panicked"),
        Ok(Ok(())) => {}
    }
    if let Some(task) = metrics_task
        && let Ok(Err(e)) = task.await
    {
        warn!(error = %e, "metrics server stopped with an error");
    }
    Ok(())
}

fn start_crowdsec(
    shared: &Shared,
    config: crowdsec::ClientConfig,
    settings: &Settings,
) -> Result<()> {
    // The feed's quota of the deny table: crowdsec.max_bans (never more than the default).
    let quotas = control::Quotas {
        crowdsec: config.limits.max_nets,
        ..control::Quotas::default()
    };
    let control = Control::new(
        shared.control.pins().clone(),
        shared.control.state_dir().to_owned(),
    )
    .with_quotas(quotas);
    let client = Crowdsec::start(
        config.clone(),
        control,
        shared.crowdsec_stats.clone(),
        settings.sip.ipv6_source_prefix,
    )?;
    // The caller stopped any feed of this origin first.
    let _ = lock(&shared.feeds).insert(Box::new(client));
    *lock(&shared.crowdsec_config) = Some(config);
    Ok(())
}

/// SIGHUP, after the rest of the config was reloaded: changed `[crowdsec]` settings, or a changed
/// key or credentials file, restart the client (it pulls the whole set again; bans in force stay
/// meanwhile). Settings that cannot start (say, a missing key file) leave the running client and
/// its settings as they were.
async fn reload_crowdsec(
    shared: &Shared,
    before: &Settings,
    settings: &mut Settings,
    config_path: Option<&Path>,
) {
    let config = match crowdsec::ClientConfig::from_settings(&settings.crowdsec, config_path) {
        Ok(config) => config,
        Err(e) => {
            error!(
                error = %format!("{e:#}"),
                "the new [crowdsec] settings cannot be used; the CrowdSec client keeps running \
                 with the previous ones"
            );
            settings.crowdsec = before.crowdsec.clone();
            return;
        }
    };
    let old = {
        let mut running = lock(&shared.crowdsec_config);
        if *running == config {
            lock(&shared.feeds).set_ipv6_prefix(settings.sip.ipv6_source_prefix);
            return;
        }
        *running = None;
        lock(&shared.feeds).take(BanOrigin::Crowdsec)
    };
    if let Some(old) = old {
        old.stop().await;
    }
    match config {
        None => info!("CrowdSec client stopped ([crowdsec] is off); its bans run out on their own"),
        Some(config) => {
            if let Err(e) = start_crowdsec(shared, config, settings) {
                error!(error = %format!("{e:#}"), "could not restart the CrowdSec client");
            }
        }
    }
}

/// Tells systemd about the service's state; a no-op outside systemd (no NOTIFY_SOCKET).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!(error = %e, "could not notify systemd");
    }
}

/// One walk of the source table: forget quiet sources, then count what is left.
fn refresh_table_fill(shared: &Shared) {
    let mut maps = lock(&shared.maps);
    match control::gc_bans(&mut maps) {
        Ok(0) => {}
        Ok(removed) => tracing::debug!(removed, "forgot ban records whose strikes decayed"),
        Err(e) => warn!(error = %format!("{e:#}"), "could not sweep the ban table"),
    }
    let fill = maps
        .sources()
        .map_err(anyhow::Error::from)
        .and_then(|sources| control::forget_quiet_sources(&mut maps, sources))
        .and_then(|(removed, kept)| {
            if removed > 0 {
                tracing::debug!(
                    removed,
                    "forgot sources quiet for longer than the strike decay"
                );
            }
            status::table_fill_with(&maps, &kept)
        });
    drop(maps);
    match fill {
        Ok(fill) => lock(&shared.stats).table_fill = fill,
        Err(e) => warn!(error = %format!("{e:#}"), "could not scan the source table"),
    }
}

fn snapshot(shared: &Shared) -> Result<Snapshot> {
    let (counters, answers_enabled) = {
        let maps = lock(&shared.maps);
        let config = maps.read_config()?;
        (
            maps.counters()?,
            config.has_flag(sip_xdp_common::flags::ANSWERS),
        )
    };
    let (mut attached, mut egress_attached) = (Vec::new(), Vec::new());
    for a in shared.pins.attachments()? {
        match a.hook {
            crate::loader::Hook::XdpIngress => attached.push((a.iface, a.mode.name().to_owned())),
            crate::loader::Hook::TcEgress => {
                let link = a.egress_link().name().to_owned();
                egress_attached.push((a.iface, link));
            }
        }
    }
    let log_lines_suppressed = lock(&shared.logger).suppressed_total();
    // Origins live only in the state file; it is replaced by rename, so reading it unlocked sees
    // one whole version.
    let state = StateFile::load(shared.control.state_dir())?;
    let now_wall = now_wall_secs();
    let mut list_bans = BTreeMap::new();
    for ban in state.bans.iter().filter(|b| b.expires_at > now_wall) {
        *list_bans.entry(ban.origin.name().to_owned()).or_insert(0) += 1;
    }
    let list_bans_added = state
        .bans_added
        .iter()
        .map(|(origin, &n)| (origin.name().to_owned(), n))
        .collect();
    let crowdsec = lock(&shared.feeds)
        .is_running(BanOrigin::Crowdsec)
        .then(|| shared.crowdsec_stats.metrics());
    let stats = lock(&shared.stats);
    let fill = &stats.table_fill;
    Ok(Snapshot {
        counters,
        tables: fill.clone(),
        list_bans,
        list_bans_added,
        attached,
        egress_attached,
        answers_enabled,
        ban_events: stats.ban_events.clone(),
        log_lines_suppressed,
        config_reloads: stats.config_reloads,
        config_reload_failures: stats.config_reload_failures,
        config_last_reload_success_timestamp_seconds: stats
            .config_last_reload_success_timestamp_seconds,
        crowdsec,
        // Filled in by the metrics server.
        http: Default::default(),
    })
}

/// The reloaded `[signatures]` applied to the kernel's table and saved in the state file; the
/// config to write, with its scan flag.
fn reload_signatures(
    shared: &Shared,
    new: &Settings,
) -> anyhow::Result<(sip_xdp_common::Config, Option<String>)> {
    let state_dir = shared.control.state_dir();
    // The maps before the state lock, in the order the ban saver takes them.
    let mut maps = lock(&shared.maps);
    let _state_lock = crate::state::lock(state_dir)?;
    let mut state = StateFile::load(state_dir)?;
    let applied = crate::control::apply_signatures(new, &mut state, &mut maps, &shared.pins)?;
    state.save(state_dir)?;
    Ok(applied)
}

/// SIGHUP: the new config applies as a whole, or not at all.
fn reload(shared: &Shared, settings: &mut Settings, path: Option<&Path>) {
    let Some(path) = path else {
        info!("SIGHUP: no config file in use (built-in defaults); nothing to reload");
        return;
    };
    let loaded = Settings::load(path);
    let mut stats = lock(&shared.stats);
    let mut new = match loaded {
        Ok(new) => new,
        Err(e) => {
            stats.config_reload_failures += 1;
            error!(
                config = %path.display(),
                error = %e,
                "config reload rejected; the running config stays in force"
            );
            return;
        }
    };
    // The egress program goes on and off with `attach`: a reload that flipped the flag alone
    // would trust an egress program that is not there, or ignore one that is.
    if new.answers.enabled != settings.answers.enabled {
        warn!(
            answers = new.answers.enabled,
            "answers.enabled changed; it takes effect at the next `sip-xdp attach` (or restart), \
             which puts the egress program on or takes it off"
        );
        new.answers.enabled = settings.answers.enabled;
    }
    // The signature lists follow the file (runtime edits kept on top), and the scan flag
    // follows the table, before the config that may turn it on.
    let written = reload_signatures(shared, &new).and_then(|(config, warning)| {
        if let Some(warning) = warning {
            warn!(config = %path.display(), "{warning}");
        }
        let _config_lock = shared.pins.lock_config()?;
        lock(&shared.maps).write_config(&config)?;
        Ok(())
    });
    if let Err(e) = written {
        stats.config_reload_failures += 1;
        error!(error = %e, "could not apply the reloaded config; the running config stays in force");
        return;
    }
    for warning in new.warnings() {
        warn!(config = %path.display(), "{warning}");
    }
    lock(&shared.logger).set_config(limiter_config(&new));
    if new.metrics != settings.metrics {
        warn!("metrics settings changed; they take effect at the next restart");
    }
    if new.datapath.max_sources != settings.datapath.max_sources {
        warn!(
            "datapath.max_sources changed; the table is resized only after `sip-xdp detach --all --purge` and a new attach"
        );
    }
    *settings = new;
    stats.config_reloads += 1;
    stats.config_last_reload_success_timestamp_seconds = now_unix_secs_f64();
    info!(config = %path.display(), "config reloaded");
}
