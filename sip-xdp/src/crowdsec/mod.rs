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
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv6Addr},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, anyhow, bail};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use sip_xdp_common::LimitClass;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, error, info, warn};

use crate::{
    config::{CrowdsecSection, format_duration},
    control::{Control, OriginUpdate},
    events::{BanEventKind, BanRecord},
    metrics::CrowdsecMetrics,
    state::{BanOrigin, Clocks},
};

/// Sent with every request, so `cscli bouncers list` and the LAPI's access log name us.
pub const USER_AGENT: &str = concat!("sip-xdp/", env!("CARGO_PKG_VERSION"));
/// Most nets the bouncer bans at once unless `crowdsec.max_bans` says fewer: origin
/// `crowdsec`'s quota of the kernel's deny table (see [`crate::control::CROWDSEC_QUOTA`]).
pub const MAX_CROWDSEC_NETS: usize = crate::control::CROWDSEC_QUOTA;
/// Own bans waiting to be pushed; past this they are counted as dropped, so a spoofed flood
/// that bans a million sources costs a bounded amount of memory.
pub const SIGNAL_QUEUE: usize = 1024;
/// Alerts per `POST /v1/alerts`.
pub const SIGNAL_BATCH: usize = 50;
/// Least time between two pushes: at most `SIGNAL_BATCH` alerts per this, whatever the flood.
pub const PUSH_GAP: Duration = Duration::from_millis(500);
/// The Local API's tokens last an hour; log in again a little before.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a full signal queue is reported while it stays full.
const QUEUE_FULL_WARN_INTERVAL_MS: u64 = 60_000;
/// Distinct kinds of skipped decisions logged (each once); bounded against a hostile feed.
const MAX_NOTES: usize = 64;
const MAX_REASON_CHARS: usize = 160;

/// The scenario an own ban is pushed under, by the limit class that ran dry.
pub const fn scenario(class: LimitClass) -> &'static str {
    match class {
        LimitClass::Register => "sip-xdp/register-flood",
        LimitClass::Invite => "sip-xdp/invite-flood",
        LimitClass::Options => "sip-xdp/options-flood",
        LimitClass::Other => "sip-xdp/sip-flood",
        LimitClass::InDialog => "sip-xdp/in-dialog-flood",
        LimitClass::Response => "sip-xdp/response-flood",
        LimitClass::KeepAlive => "sip-xdp/keepalive-flood",
        LimitClass::Malformed => "sip-xdp/malformed-flood",
    }
}

/// What decisions the bouncer applies: the narrowest nets it takes and how many at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedLimits {
    /// `crowdsec.min_prefix_v4`: IPv4 nets wider than this are refused.
    pub min_prefix_v4: u8,
    /// `crowdsec.min_prefix_v6`: IPv6 nets wider than this are refused.
    pub min_prefix_v6: u8,
    /// `crowdsec.max_bans`.
    pub max_nets: usize,
}

impl Default for FeedLimits {
    fn default() -> Self {
        let d = CrowdsecSection::default();
        Self {
            min_prefix_v4: d.min_prefix_v4,
            min_prefix_v6: d.min_prefix_v6,
            max_nets: d.max_bans as usize,
        }
    }
}

/// `[crowdsec]` with its secrets read: what the client runs with.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Always ends with "/", so endpoints join below it.
    pub lapi: Url,
    api_key: String,
    pub poll_interval: Duration,
    pub max_backoff: Duration,
    pub origins: Vec<String>,
    pub machine: Option<Machine>,
    pub limits: FeedLimits,
    /// `crowdsec.signals.rate_bans`: push the kernel's rate bans (needs `machine`).
    pub push_rate_bans: bool,
    /// `crowdsec.ca_file`'s PEM text: extra roots for an https:// Local API.
    ca_pem: Option<Vec<u8>>,
}

/// Watcher credentials for the signal pusher.
#[derive(Clone, PartialEq, Eq)]
pub struct Machine {
    pub login: String,
    password: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("lapi", &self.lapi.as_str())
            .field("poll_interval", &self.poll_interval)
            .field("max_backoff", &self.max_backoff)
            .field("origins", &self.origins)
            .field("machine", &self.machine.as_ref().map(|m| &m.login))
            .field("limits", &self.limits)
            .field("push_rate_bans", &self.push_rate_bans)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// `None` while `[crowdsec]` is off. Reads the key and credentials files, so a missing or
    /// empty one stops the daemon before it attaches, naming the file and the fix. Secrets in a
    /// file that group or others can read are refused: a key or credentials file, and
    /// `config_file` (the configuration these settings came from) when it holds one inline.
    pub fn from_settings(
        section: &CrowdsecSection,
        config_file: Option<&Path>,
    ) -> Result<Option<Self>> {
        // Even with [crowdsec] off: a secret in a readable file is out either way.
        let inline = [
            ("crowdsec.api_key", section.api_key.is_some()),
            (
                "crowdsec.signals.password",
                section.signals.password.is_some(),
            ),
        ];
        if let (Some(file), Some((key, _))) = (config_file, inline.iter().find(|(_, set)| *set)) {
            let fix = if *key == "crowdsec.api_key" {
                "move the key to a file of mode 0600 named by crowdsec.api_key_file"
            } else {
                "move the credentials to a file of mode 0600 named by \
                 crowdsec.signals.credentials_file"
            };
            check_private(
                file,
                &format!("the configuration (which sets {key} inline)"),
                fix,
            )?;
        }
        if !section.enabled {
            return Ok(None);
        }
        let mut lapi = Url::parse(&section.lapi_url)
            .with_context(|| format!("crowdsec.lapi_url {:?} is not a URL", section.lapi_url))?;
        if !lapi.path().ends_with('/') {
            let path = format!("{}/", lapi.path());
            lapi.set_path(&path);
        }
        let api_key = match (&section.api_key, &section.api_key_file) {
            (Some(key), _) => key.trim().to_owned(),
            (None, Some(path)) => {
                check_private(path, "crowdsec.api_key_file", BOUNCER_KEY_FIX)?;
                read_secret(path, "crowdsec.api_key_file", BOUNCER_KEY_FIX)?
            }
            (None, None) => bail!(
                "crowdsec.enabled is true but no bouncer key is set: {BOUNCER_KEY_FIX} and set \
                 crowdsec.api_key_file"
            ),
        };
        let ca_pem = match &section.ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!(
                        "cannot read crowdsec.ca_file {}; point it at the PEM certificate of \
                         the CA that signed the Local API's certificate (or the certificate \
                         itself)",
                        path.display()
                    )
                })?;
                // Builds a client once, so a file that is not PEM fails here, before attaching.
                http_client(Some(&pem)).with_context(|| {
                    format!(
                        "crowdsec.ca_file {} is not usable as PEM certificates",
                        path.display()
                    )
                })?;
                Some(pem)
            }
        };
        let signals = &section.signals;
        let machine = if !signals.enabled {
            None
        } else if let Some(path) = &signals.credentials_file {
            check_private(path, "crowdsec.signals.credentials_file", MACHINE_FIX)?;
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read crowdsec.signals.credentials_file {}; {MACHINE_FIX}",
                    path.display()
                )
            })?;
            let creds = parse_credentials(&text).with_context(|| {
                format!(
                    "crowdsec.signals.credentials_file {} is not a credentials file; \
                     {MACHINE_FIX}",
                    path.display()
                )
            })?;
            Some(creds)
        } else {
            match (&signals.machine_id, &signals.password) {
                (Some(login), Some(password)) => Some(Machine {
                    login: login.clone(),
                    password: password.clone(),
                }),
                _ => bail!(
                    "crowdsec.signals.enabled is true but no machine credentials are set; \
                     {MACHINE_FIX}"
                ),
            }
        };
        Ok(Some(Self {
            lapi,
            api_key,
            poll_interval: section.poll_interval,
            max_backoff: section.max_backoff,
            origins: section.origins.clone(),
            machine,
            limits: FeedLimits {
                min_prefix_v4: section.min_prefix_v4,
                min_prefix_v6: section.min_prefix_v6,
                max_nets: (section.max_bans as usize).min(MAX_CROWDSEC_NETS),
            },
            push_rate_bans: signals.enabled && signals.rate_bans,
            ca_pem,
        }))
    }

    fn endpoint(&self, path: &str) -> Result<Url> {
        self.lapi
            .join(path)
            .with_context(|| format!("joining {path} to crowdsec.lapi_url {}", self.lapi))
    }
}

/// The client for the Local API, trusting `ca_pem`'s certificates besides the public roots.
fn http_client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).context("reading the PEM")?;
        if certs.is_empty() {
            bail!("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .context("cannot set up the HTTP client for the CrowdSec Local API")
}

const BOUNCER_KEY_FIX: &str = "create a key with `cscli bouncers add sip-xdp-$(hostname) -o raw \
                               > /etc/sip-xdp/crowdsec-bouncer.key` (one per node)";
const MACHINE_FIX: &str = "create one with `cscli machines add sip-xdp-$(hostname) -p PASSWORD \
                           -f /etc/sip-xdp/crowdsec-machine.yaml` and set \
                           crowdsec.signals.credentials_file to that file";

/// Refuses a file holding a secret that group or others may read (or write).
fn check_private(path: &Path, what: &str, fix: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}; {fix}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} holds a secret but group or others can access it (mode {mode:04o}): run \
             `chmod 600 {}` (owned by the user sip-xdp runs as), or {fix}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn read_secret(path: &Path, key: &str, fix: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {key} {}; {fix}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        bail!(
            "{key} {} must hold the key alone on one line; {fix}",
            path.display()
        );
    }
    Ok(secret.to_owned())
}

/// cscli's `local_api_credentials.yaml`: flat `login:` and `password:` (and `url:`, unused:
/// `crowdsec.lapi_url` names the API). A plain or quoted scalar per line is all cscli writes.
fn parse_credentials(text: &str) -> Result<Machine> {
    let (mut login, mut password) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            bail!("line {line:?} is not `key: value`");
        };
        let value = unquote(value.trim());
        match key.trim() {
            "login" => login = Some(value),
            "password" => password = Some(value),
            _ => {}
        }
    }
    match (login, password) {
        (Some(login), Some(password)) if !login.is_empty() && !password.is_empty() => {
            Ok(Machine { login, password })
        }
        _ => bail!("it needs both `login:` and `password:`"),
    }
}

fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].replace("''", "'");
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return value[1..value.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
    }
    value.to_owned()
}

/// Seconds in a Go `time.Duration` string, as the Local API writes a decision's remaining time
/// ("3h59m58.123456s", "-204.069056ms" for one already over, "500µs", "0s").
pub fn parse_go_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(if negative { -total } else { total })
}

/// One decision as the stream gives it; every field optional, so one odd decision is skipped
/// rather than failing the whole poll.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamDecision {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub scenario: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// `GET /v1/decisions/stream`'s answer; the Local API writes `null` for an empty list.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DecisionStream {
    #[serde(default)]
    pub new: Option<Vec<StreamDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<StreamDecision>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    net: IpNet,
    expires_at: u64,
    reason: String,
}

/// A change for [`Control::update_origin`], and the set of bans it leaves in force.
#[derive(Debug)]
pub struct Pending {
    pub update: OriginUpdate,
    wanted: HashMap<IpNet, u64>,
}

/// The decisions held, by id, and the bans last handed to the state file and kernel. Several
/// decisions may cover one net (different scenarios); the net's ban lasts as long as the
/// longest, and is lifted only when its last decision goes.
#[derive(Debug, Default)]
pub struct DecisionBook {
    held: HashMap<i64, Held>,
    applied: HashMap<IpNet, u64>,
    noted: BTreeSet<String>,
    over_cap_noted: bool,
    limits: FeedLimits,
    refused: Refused,
}

/// Decisions refused since last taken, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// Wider than `crowdsec.min_prefix_v4` / `min_prefix_v6`.
    pub too_broad: u64,
    /// An IPv6 range covering the whole IPv4-mapped block (::ffff:0:0/96), i.e. all of IPv4.
    pub ipv4_mapped: u64,
}

/// Why a decision's net is not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetRefusal {
    TooBroad { key: &'static str, limit: u8 },
    CoversIpv4Mapped,
}

/// The IPv4-mapped block: the kernel keys IPv4 sources by these addresses.
fn ipv4_mapped_block() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96).expect("96 <= 128")
}

/// The net a decision may ban, or why not: a range inside ::ffff:0:0/96 is the IPv4 net it
/// names; one covering that block, or wider than the limit of its family, is refused.
pub fn screen_net(net: IpNet, limits: &FeedLimits) -> Result<IpNet, NetRefusal> {
    let mut net = net.trunc();
    if let IpNet::V6(v6) = net {
        let block = ipv4_mapped_block();
        if block.contains(&v6) {
            let v4 = v6.addr().to_ipv4_mapped().expect("inside ::ffff:0:0/96");
            net = IpNet::V4(
                Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .expect("<= 32")
                    .trunc(),
            );
        } else if v6.contains(&block) {
            return Err(NetRefusal::CoversIpv4Mapped);
        }
    }
    let (key, limit) = match net {
        IpNet::V4(_) => ("crowdsec.min_prefix_v4", limits.min_prefix_v4),
        IpNet::V6(_) => ("crowdsec.min_prefix_v6", limits.min_prefix_v6),
    };
    if net.prefix_len() < limit {
        return Err(NetRefusal::TooBroad { key, limit });
    }
    Ok(net)
}

impl DecisionBook {
    pub fn new(limits: FeedLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// The decisions refused since the last call.
    pub fn take_refused(&mut self) -> Refused {
        std::mem::take(&mut self.refused)
    }

    /// Folds one poll in. A startup (or resync) pull replaces everything held; a delta adds and
    /// deletes by id. Returns the change to apply, or `None` when the bans stay as they are.
    pub fn fold(
        &mut self,
        stream: DecisionStream,
        startup: bool,
        now_unix_secs: f64,
    ) -> Option<Pending> {
        if startup {
            // Expired decisions come as `deleted` here; nothing held can refer to them.
            self.held.clear();
        } else {
            for decision in stream.deleted.unwrap_or_default() {
                self.held.remove(&decision.id);
            }
        }
        for decision in stream.new.unwrap_or_default() {
            match self.accept(&decision, now_unix_secs) {
                Some(held) => {
                    self.held.insert(decision.id, held);
                }
                None => {
                    self.held.remove(&decision.id);
                }
            }
        }
        let now = now_unix_secs.max(0.0) as u64;
        self.held.retain(|_, held| held.expires_at > now);

        let mut longest: HashMap<IpNet, &Held> = HashMap::new();
        for held in self.held.values() {
            let slot = longest.entry(held.net).or_insert(held);
            if held.expires_at > slot.expires_at {
                *slot = held;
            }
        }
        let mut chosen: Vec<&Held> = longest.into_values().collect();
        let max_nets = self.limits.max_nets;
        if chosen.len() > max_nets {
            if !self.over_cap_noted {
                warn!(
                    nets = chosen.len(),
                    applied = max_nets,
                    "CrowdSec holds more nets to ban than its quota crowdsec.max_bans = \
                     {max_nets} (the kernel's deny table is shared with manual and fail2ban \
                     bans); the longest bans are applied. Narrow the feed with crowdsec.origins \
                     (e.g. leave out \"CAPI\" and \"lists\")"
                );
                self.over_cap_noted = true;
            }
            chosen.sort_by_key(|held| std::cmp::Reverse(held.expires_at));
            chosen.truncate(max_nets);
        } else {
            self.over_cap_noted = false;
        }
        let wanted: HashMap<IpNet, u64> = chosen.iter().map(|h| (h.net, h.expires_at)).collect();
        let upsert: Vec<(IpNet, u64, Option<String>)> = chosen
            .iter()
            .filter(|h| startup || self.applied.get(&h.net) != Some(&h.expires_at))
            .map(|h| (h.net, h.expires_at, Some(h.reason.clone())))
            .collect();
        let remove: Vec<IpNet> = if startup {
            Vec::new()
        } else {
            self.applied
                .keys()
                .filter(|net| !wanted.contains_key(net))
                .copied()
                .collect()
        };
        if !startup && upsert.is_empty() && remove.is_empty() {
            return None;
        }
        Some(Pending {
            update: OriginUpdate {
                replace_all: startup,
                upsert,
                remove,
            },
            wanted,
        })
    }

    /// Records that `pending` is in force.
    pub fn commit(&mut self, pending: Pending) {
        self.applied = pending.wanted;
    }

    /// The ban a new decision asks for, or `None` (logged once per kind) when sip-xdp does not
    /// apply it.
    fn accept(&mut self, decision: &StreamDecision, now_unix_secs: f64) -> Option<Held> {
        let kind = decision.kind.as_deref().unwrap_or("");
        if !kind.eq_ignore_ascii_case("ban") {
            self.note(
                format!("type:{kind}"),
                format!(
                    "ignoring CrowdSec decisions of type {kind:?}: sip-xdp only applies `ban` \
                     decisions"
                ),
            );
            return None;
        }
        let scope = decision.scope.as_deref().unwrap_or("");
        let value = decision.value.as_deref().unwrap_or("").trim();
        let net = match scope.to_ascii_lowercase().as_str() {
            "ip" => value
                .parse::<IpAddr>()
                .map(|addr| IpNet::from(addr.to_canonical()))
                .or_else(|_| value.parse::<IpNet>()),
            "range" => value.parse::<IpNet>(),
            _ => {
                self.note(
                    format!("scope:{scope}"),
                    format!(
                        "ignoring CrowdSec decisions of scope {scope:?}: sip-xdp applies scopes \
                         Ip and Range"
                    ),
                );
                return None;
            }
        };
        let Ok(parsed) = net else {
            self.note(
                "value".to_owned(),
                format!(
                    "ignoring CrowdSec decision {} ({scope} {value:?}): not an address or range \
                     (further ones are not logged)",
                    decision.id
                ),
            );
            return None;
        };
        let net = match screen_net(parsed, &self.limits) {
            Ok(net) => net,
            Err(refusal) => {
                let why = match &refusal {
                    NetRefusal::TooBroad { key, limit } => {
                        self.refused.too_broad += 1;
                        format!("wider than {key} = {limit}")
                    }
                    NetRefusal::CoversIpv4Mapped => {
                        self.refused.ipv4_mapped += 1;
                        "covers ::ffff:0:0/96, the IPv4-mapped block (all of IPv4)".to_owned()
                    }
                };
                if self.noted.len() < MAX_NOTES && self.noted.insert(format!("refused:{parsed}")) {
                    warn!(
                        decision = decision.id,
                        net = %parsed,
                        "refusing CrowdSec decision {} ({scope} {value}, {} from {}): {why}; \
                         not applied, counted in sip_xdp_crowdsec_decisions_refused_total \
                         (delete it with `cscli decisions delete --id {}`, or lower the limit \
                         if such wide bans are wanted)",
                        decision.id,
                        decision.scenario.as_deref().unwrap_or("?"),
                        decision.origin.as_deref().unwrap_or("?"),
                        decision.id
                    );
                }
                return None;
            }
        };
        let duration = decision.duration.as_deref().unwrap_or("");
        let Some(remaining_secs) = parse_go_duration(duration) else {
            self.note(
                "duration".to_owned(),
                format!(
                    "ignoring CrowdSec decision {} on {value}: duration {duration:?} is not a Go \
                     duration (further ones are not logged)",
                    decision.id
                ),
            );
            return None;
        };
        if remaining_secs <= 0.0 {
            return None;
        }
        let reason = format!(
            "{} ({})",
            decision.scenario.as_deref().unwrap_or("?"),
            decision.origin.as_deref().unwrap_or("?")
        );
        Some(Held {
            net,
            expires_at: (now_unix_secs + remaining_secs).ceil() as u64,
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
        })
    }

    fn note(&mut self, key: String, message: String) {
        if self.noted.len() < MAX_NOTES && self.noted.insert(key) {
            info!("{message}");
        }
    }
}

/// What the metrics show, shared by the tasks and the daemon and kept across reloads.
#[derive(Debug, Default)]
pub struct Stats {
    lapi_up: AtomicBool,
    polls_success: AtomicU64,
    polls_failure: AtomicU64,
    last_sync_unix_ms: AtomicU64,
    decisions: AtomicU64,
    alerts_pushed: AtomicU64,
    alerts_dropped: AtomicU64,
    refused_too_broad: AtomicU64,
    refused_ipv4_mapped: AtomicU64,
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

fn now_unix() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// An own ban waiting to be pushed.
#[derive(Clone, Copy, Debug)]
struct Signal {
    net: IpNet,
    class: LimitClass,
    banned_until_mono_ns: u64,
    packets: u32,
    rate_per_sec: f64,
    strikes: u32,
}

struct Ctx {
    cfg: ClientConfig,
    http: reqwest::Client,
    stream_url: Url,
    login_url: Url,
    alerts_url: Url,
    control: Control,
    stats: Arc<Stats>,
}

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
        let signals = match ctx.cfg.machine.clone() {
            None => None,
            Some(_) if !ctx.cfg.push_rate_bans => {
                info!(
                    "crowdsec.signals.rate_bans is off: this node's rate-limit bans are not \
                     pushed to the Local API (a forged UDP flood would otherwise ban a real peer \
                     on the whole fleet); set it to true where forged sources cannot reach \
                     this node"
                );
                None
            }
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

    /// What it runs with, to tell whether a reload changes anything.
    pub fn config(&self) -> &ClientConfig {
        &self.config
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

/// The signal for a ban event: bans only (not would-bans or expiries); an IPv6 source covers
/// the prefix the kernel tracks it by.
fn signal_of(record: &BanRecord, ipv6_prefix: u8) -> Option<Signal> {
    if record.kind != BanEventKind::Ban {
        return None;
    }
    let net = match record.source {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::new(IpAddr::V6(v6), ipv6_prefix.min(128))
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(IpAddr::V6(v6))),
    };
    Some(Signal {
        net,
        class: record.class,
        banned_until_mono_ns: record.banned_until_mono_ns,
        packets: record.window_packets,
        rate_per_sec: record.rate_per_sec,
        strikes: record.strikes,
    })
}

/// Queues `signal` if there is room, else counts it dropped (and says so at most once a minute).
fn offer(tx: &mpsc::Sender<Signal>, signal: Signal, stats: &Stats, last_warn_ms: &AtomicU64) {
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

fn next_backoff(delay: Duration, cfg: &ClientConfig) -> Duration {
    delay
        .max(cfg.poll_interval)
        .saturating_mul(2)
        .min(cfg.max_backoff)
}

/// Sleeps `delay`; false when told to stop first.
async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        () = tokio::time::sleep(delay) => true,
    }
}

async fn run_bouncer(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
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

enum PushError {
    /// Worth retrying: the Local API is down or overloaded.
    Unreachable(anyhow::Error),
    /// Retrying would give the same answer (bad credentials, a refused alert).
    Rejected(anyhow::Error),
}

async fn run_pusher(
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
    let now_wall = clocks.wall_ns / 1_000_000_000;
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
        let scenario = scenario(signal.class);
        let message = format!(
            "sip-xdp: {value} sent {:.0} {} requests/s; banned for {} (strike {})",
            signal.rate_per_sec,
            signal.class.name(),
            format_duration(Duration::from_secs(secs)),
            signal.strikes
        );
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
    let scenarios: Vec<&str> = LimitClass::ALL.iter().map(|&c| scenario(c)).collect();
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

    fn decision(id: i64, kind: &str, scope: &str, value: &str, duration: &str) -> StreamDecision {
        StreamDecision {
            id,
            duration: Some(duration.to_owned()),
            origin: Some("cscli".to_owned()),
            scenario: Some("manual 'ban' from 'test'".to_owned()),
            scope: Some(scope.to_owned()),
            kind: Some(kind.to_owned()),
            value: Some(value.to_owned()),
        }
    }

    fn stream(new: Vec<StreamDecision>, deleted: Vec<StreamDecision>) -> DecisionStream {
        DecisionStream {
            new: Some(new),
            deleted: Some(deleted),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const NOW: f64 = 1_700_000_000.25;

    #[test]
    fn go_durations_parse() {
        let close = |text: &str, want: f64| {
            let got = parse_go_duration(text).unwrap_or_else(|| panic!("{text:?} rejected"));
            assert!((got - want).abs() < 1e-6, "{text:?}: {got} != {want}");
        };
        close("3h59m58.123456s", 3.0 * 3600.0 + 59.0 * 60.0 + 58.123456);
        close("59.229907474s", 59.229907474);
        close("-204.069056ms", -0.204069056);
        close("-1h2m", -3720.0);
        close("500\u{b5}s", 0.0005);
        close("500\u{3bc}s", 0.0005);
        close("1.5us", 0.0000015);
        close("12ns", 12e-9);
        close("0s", 0.0);
        close("0", 0.0);
        close("4h", 14400.0);
        for bad in ["", "-", "h", "5", "5d", "1h5", ".s", "1..2s", "abc"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn credentials_file_as_cscli_writes_it() {
        let m = parse_credentials(
            "url: http://203.0.113.200:8080\nlogin: sipxdp-a\npassword: passA123456\n",
        )
        .unwrap();
        assert_eq!(
            (m.login.as_str(), m.password.as_str()),
            ("sipxdp-a", "passA123456")
        );
        let m = parse_credentials("# c\nlogin: 'it''s'\npassword: \"p:w\"\n").unwrap();
        assert_eq!((m.login.as_str(), m.password.as_str()), ("it's", "p:w"));
        assert!(parse_credentials("url: x\nlogin: a\n").is_err());
        assert!(parse_credentials("garbage\n").is_err());
    }

    #[test]
    fn startup_replaces_and_deltas_diff() {
        let mut book = DecisionBook::default();
        let first = book
            .fold(
                stream(
                    vec![
                        decision(1, "ban", "Ip", "198.51.100.7", "1h"),
                        decision(2, "ban", "Range", "198.51.100.64/26", "10m0.5s"),
                        decision(3, "ban", "ip", "2001:db8::7", "30s"),
                        decision(4, "captcha", "Ip", "198.51.100.8", "1h"),
                        decision(5, "ban", "Country", "FR", "1h"),
                        decision(6, "ban", "Ip", "not-an-ip", "1h"),
                        decision(7, "ban", "Ip", "198.51.100.9", "-2s"),
                        decision(8, "ban", "Ip", "::ffff:198.51.100.10", "1m"),
                    ],
                    // Expired decisions come as deleted at startup: ignored.
                    vec![decision(99, "ban", "Ip", "198.51.100.7", "-1s")],
                ),
                true,
                NOW,
            )
            .expect("a startup pull is always applied");
        assert!(first.update.replace_all);
        let mut upsert = first.update.upsert.clone();
        upsert.sort_by_key(|u| u.0);
        let now = NOW as u64;
        assert_eq!(
            upsert
                .iter()
                .map(|(n, e, _)| (n.to_string(), e - now))
                .collect::<Vec<_>>(),
            [
                // Ends rounded up to the second: NOW is 0.25 s past one.
                ("198.51.100.7/32".to_owned(), 3601),
                ("198.51.100.10/32".to_owned(), 61),
                ("198.51.100.64/26".to_owned(), 601),
                ("2001:db8::7/128".to_owned(), 31),
            ]
        );
        assert_eq!(
            upsert[0].2.as_deref(),
            Some("manual 'ban' from 'test' (cscli)")
        );
        assert_eq!(book.held(), 4);
        book.commit(first);

        // Nothing new: nothing to do.
        assert!(
            book.fold(stream(vec![], vec![]), false, NOW + 1.0)
                .is_none()
        );
        assert!(
            book.fold(DecisionStream::default(), false, NOW + 1.0)
                .is_none()
        );

        // A second, longer decision on the same address renews it; deleting it goes back to the
        // first one's end; deleting both lifts the ban.
        let pending = book
            .fold(
                stream(
                    vec![decision(10, "ban", "Ip", "198.51.100.7", "2h")],
                    vec![],
                ),
                false,
                NOW + 2.0,
            )
            .unwrap();
        assert!(!pending.update.replace_all);
        assert_eq!(pending.update.upsert.len(), 1);
        assert_eq!(pending.update.upsert[0].0, net("198.51.100.7/32"));
        assert_eq!(
            pending.update.upsert[0].1,
            (NOW + 2.0 + 7200.0).ceil() as u64
        );
        assert!(pending.update.remove.is_empty());
        book.commit(pending);
        assert_eq!(book.held(), 5);

        let pending = book
            .fold(
                stream(
                    vec![],
                    vec![decision(10, "ban", "Ip", "198.51.100.7", "-1s")],
                ),
                false,
                NOW + 3.0,
            )
            .unwrap();
        assert_eq!(
            pending
                .update
                .upsert
                .iter()
                .map(|u| u.1 - now)
                .collect::<Vec<_>>(),
            [3601]
        );
        book.commit(pending);

        let pending = book
            .fold(
                stream(
                    vec![],
                    vec![decision(1, "ban", "Ip", "198.51.100.7", "-1s")],
                ),
                false,
                NOW + 4.0,
            )
            .unwrap();
        assert!(pending.update.upsert.is_empty());
        assert_eq!(pending.update.remove, [net("198.51.100.7/32")]);
        book.commit(pending);

        // An unknown id deleted changes nothing; a ban running out is lifted.
        assert!(
            book.fold(
                stream(
                    vec![],
                    vec![decision(555, "ban", "Ip", "198.51.100.99", "-1s")]
                ),
                false,
                NOW + 5.0
            )
            .is_none()
        );
        let pending = book
            .fold(stream(vec![], vec![]), false, NOW + 31.0)
            .unwrap();
        assert_eq!(pending.update.remove, [net("2001:db8::7/128")]);
        book.commit(pending);
        assert_eq!(book.held(), 2);

        // A resync that no longer has a decision: replace_all lifts whatever is not listed.
        let pending = book
            .fold(
                stream(
                    vec![decision(2, "ban", "Range", "198.51.100.64/26", "9m")],
                    vec![],
                ),
                true,
                NOW + 60.0,
            )
            .unwrap();
        assert!(pending.update.replace_all);
        assert_eq!(pending.update.upsert.len(), 1);
        book.commit(pending);
        assert_eq!(book.held(), 1);
    }

    #[test]
    fn a_failed_apply_is_diffed_again() {
        let mut book = DecisionBook::default();
        let first = book_fold(
            &mut book,
            vec![decision(1, "ban", "Ip", "198.51.100.7", "1h")],
            true,
        );
        book.commit(first);
        let lost = book_fold(
            &mut book,
            vec![decision(2, "ban", "Ip", "198.51.100.8", "1h")],
            false,
        );
        drop(lost);
        // Not committed: the next change still carries the first one.
        let pending = book_fold(
            &mut book,
            vec![decision(3, "ban", "Ip", "198.51.100.9", "1h")],
            false,
        );
        let mut nets: Vec<IpNet> = pending.update.upsert.iter().map(|u| u.0).collect();
        nets.sort();
        assert_eq!(nets, [net("198.51.100.8/32"), net("198.51.100.9/32")]);
    }

    fn book_fold(book: &mut DecisionBook, new: Vec<StreamDecision>, startup: bool) -> Pending {
        book.fold(stream(new, vec![]), startup, NOW).unwrap()
    }

    #[test]
    fn the_stream_json_parses_with_nulls() {
        let s: DecisionStream = serde_json::from_str(
            r#"{"deleted":null,"new":[{"duration":"59m56.636204677s","id":1,"origin":"cscli",
            "scenario":"manual 'ban' from 'x'","scope":"Ip","type":"ban","value":"198.51.100.77"}]}"#,
        )
        .unwrap();
        assert!(s.deleted.is_none());
        assert_eq!(s.new.unwrap()[0].value.as_deref(), Some("198.51.100.77"));
        let s: DecisionStream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert!(s.new.is_none());
    }

    #[test]
    fn too_many_nets_keep_the_longest() {
        let mut book = DecisionBook::default();
        let new: Vec<StreamDecision> = (0..MAX_CROWDSEC_NETS as i64 + 10)
            .map(|i| {
                let addr = std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128);
                decision(i, "ban", "Ip", &addr.to_string(), &format!("{}s", 100 + i))
            })
            .collect();
        let pending = book_fold(&mut book, new, true);
        assert_eq!(pending.update.upsert.len(), MAX_CROWDSEC_NETS);
        let shortest = pending.update.upsert.iter().map(|u| u.1).min().unwrap();
        assert_eq!(shortest, (NOW + 100.0 + 10.0).ceil() as u64);
        assert_eq!(book.held(), MAX_CROWDSEC_NETS + 10);
    }

    fn ban_record(kind: BanEventKind, source: &str) -> BanRecord {
        BanRecord {
            kind,
            source: source.parse().unwrap(),
            class: LimitClass::Register,
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
    fn own_bans_become_alerts_with_decisions() {
        let clocks = Clocks {
            wall_ns: 1_700_000_000_400_000_000,
            mono_ns: 50_000_000_000,
        };
        let signal = |net: &str, class, until_s: u64| Signal {
            net: net.parse().unwrap(),
            class,
            banned_until_mono_ns: until_s * 1_000_000_000,
            packets: 41,
            rate_per_sec: 412.4,
            strikes: 1,
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

    fn limits(v4: u8, v6: u8) -> FeedLimits {
        FeedLimits {
            min_prefix_v4: v4,
            min_prefix_v6: v6,
            max_nets: MAX_CROWDSEC_NETS,
        }
    }

    #[test]
    fn over_broad_and_ipv4_mapped_nets_are_screened() {
        let d = FeedLimits::default();
        assert_eq!((d.min_prefix_v4, d.min_prefix_v6), (16, 32));
        let too_broad = |key, limit| Err(NetRefusal::TooBroad { key, limit });
        for (value, want) in [
            ("0.0.0.0/0", too_broad("crowdsec.min_prefix_v4", 16)),
            ("198.0.0.0/8", too_broad("crowdsec.min_prefix_v4", 16)),
            ("198.51.0.0/16", Ok(net("198.51.0.0/16"))),
            ("198.51.100.7/32", Ok(net("198.51.100.7/32"))),
            ("::/0", Err(NetRefusal::CoversIpv4Mapped)),
            ("::/8", Err(NetRefusal::CoversIpv4Mapped)),
            ("::ffff:0:0/96", too_broad("crowdsec.min_prefix_v4", 16)),
            ("::ffff:198.51.100.0/120", Ok(net("198.51.100.0/24"))),
            ("::ffff:198.51.100.7/128", Ok(net("198.51.100.7/32"))),
            (
                "::ffff:198.0.0.0/104",
                too_broad("crowdsec.min_prefix_v4", 16),
            ),
            ("2000::/3", too_broad("crowdsec.min_prefix_v6", 32)),
            ("2001:db8::/31", too_broad("crowdsec.min_prefix_v6", 32)),
            ("2001:db8::/32", Ok(net("2001:db8::/32"))),
            ("2001:db8::7/128", Ok(net("2001:db8::7/128"))),
        ] {
            assert_eq!(screen_net(net(value), &d), want, "{value}");
        }
        // Limits are the operator's: /8 allowed for IPv4, a /64 needed for IPv6.
        assert_eq!(
            screen_net(net("10.0.0.0/8"), &limits(8, 64)),
            Ok(net("10.0.0.0/8"))
        );
        assert!(screen_net(net("2001:db8::/48"), &limits(8, 64)).is_err());
        // Even with the loosest IPv6 limit, a range covering the mapped block is refused.
        assert_eq!(
            screen_net(net("::/64"), &limits(1, 1)),
            Err(NetRefusal::CoversIpv4Mapped)
        );
    }

    #[test]
    fn over_broad_decisions_are_not_applied_and_are_counted() {
        let mut book = DecisionBook::new(FeedLimits::default());
        let pending = book_fold(
            &mut book,
            vec![
                decision(1, "ban", "Range", "0.0.0.0/0", "1h"),
                decision(2, "ban", "Range", "::/0", "1h"),
                decision(3, "ban", "Range", "::/8", "1h"),
                decision(4, "ban", "Range", "198.0.0.0/8", "1h"),
                decision(5, "ban", "Range", "::ffff:198.51.100.0/120", "1h"),
                decision(6, "ban", "Ip", "::ffff:198.51.100.9", "1h"),
                decision(7, "ban", "Range", "2001:db8:c633::/48", "1h"),
            ],
            true,
        );
        let mut nets: Vec<IpNet> = pending.update.upsert.iter().map(|u| u.0).collect();
        nets.sort();
        assert_eq!(
            nets,
            [
                net("198.51.100.0/24"),
                net("198.51.100.9/32"),
                net("2001:db8:c633::/48")
            ]
        );
        assert_eq!(book.held(), 3);
        assert_eq!(
            book.take_refused(),
            Refused {
                too_broad: 2,
                ipv4_mapped: 2
            }
        );
        assert_eq!(book.take_refused(), Refused::default(), "taken once");
    }

    #[test]
    fn the_feed_stops_at_max_bans() {
        let mut book = DecisionBook::new(FeedLimits {
            max_nets: 3,
            ..FeedLimits::default()
        });
        let new: Vec<StreamDecision> = (1..=5)
            .map(|i| {
                decision(
                    i,
                    "ban",
                    "Ip",
                    &format!("198.51.100.{i}"),
                    &format!("{}m", i * 10),
                )
            })
            .collect();
        let pending = book_fold(&mut book, new, true);
        let mut nets: Vec<IpNet> = pending.update.upsert.iter().map(|u| u.0).collect();
        nets.sort();
        assert_eq!(
            nets,
            [
                net("198.51.100.3/32"),
                net("198.51.100.4/32"),
                net("198.51.100.5/32")
            ],
            "the longest three"
        );
    }

    fn section_with_key_file(key_file: &Path) -> CrowdsecSection {
        CrowdsecSection {
            enabled: true,
            api_key_file: Some(key_file.to_owned()),
            ..CrowdsecSection::default()
        }
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn secrets_readable_by_group_or_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bouncer.key");
        std::fs::write(&key, "k0123456789\n").unwrap();
        let creds = dir.path().join("machine.yaml");
        std::fs::write(&creds, "login: m\npassword: p\n").unwrap();
        let config = dir.path().join("sip-xdp.toml");
        std::fs::write(&config, "").unwrap();

        for mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(&key, mode);
            let err = ClientConfig::from_settings(&section_with_key_file(&key), Some(&config))
                .unwrap_err()
                .to_string();
            for needle in [
                "crowdsec.api_key_file",
                &key.display().to_string(),
                &format!("mode {mode:04o}"),
                &format!("chmod 600 {}", key.display()),
            ] {
                assert!(err.contains(needle), "{mode:o}: {err}");
            }
        }
        chmod(&key, 0o600);
        chmod(&config, 0o644);
        let ok = ClientConfig::from_settings(&section_with_key_file(&key), Some(&config)).unwrap();
        assert!(
            ok.is_some(),
            "a 0600 key file with no inline secret is fine"
        );

        // The machine credentials file.
        let mut section = section_with_key_file(&key);
        section.signals.enabled = true;
        section.signals.credentials_file = Some(creds.clone());
        chmod(&creds, 0o644);
        let err = ClientConfig::from_settings(&section, Some(&config))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("crowdsec.signals.credentials_file")
                && err.contains(&format!("chmod 600 {}", creds.display())),
            "{err}"
        );
        chmod(&creds, 0o600);
        assert!(ClientConfig::from_settings(&section, Some(&config)).is_ok());

        // Inline secrets in a config file others can read.
        let inline_key = CrowdsecSection {
            enabled: true,
            api_key: Some("k0123456789".to_owned()),
            ..CrowdsecSection::default()
        };
        let mut inline_password = section_with_key_file(&key);
        inline_password.signals.enabled = true;
        inline_password.signals.machine_id = Some("m".to_owned());
        inline_password.signals.password = Some("p".to_owned());
        for (section, key_name, fix) in [
            (&inline_key, "crowdsec.api_key", "crowdsec.api_key_file"),
            (
                &inline_password,
                "crowdsec.signals.password",
                "crowdsec.signals.credentials_file",
            ),
        ] {
            chmod(&config, 0o644);
            let err = ClientConfig::from_settings(section, Some(&config))
                .unwrap_err()
                .to_string();
            for needle in [
                key_name,
                &config.display().to_string(),
                &format!("chmod 600 {}", config.display()),
                fix,
            ] {
                assert!(err.contains(needle), "{key_name}: {err}");
            }
            chmod(&config, 0o600);
            assert!(
                ClientConfig::from_settings(section, Some(&config)).is_ok(),
                "{key_name} inline in a 0600 config"
            );
        }
    }

    fn machine_section(rate_bans: bool) -> CrowdsecSection {
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
        section
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

    /// A throwaway self-signed certificate made for this test (`openssl req -x509 -newkey ec`).
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUbEVuxcpy9MVXYeEg0Cm6HABOnX0wCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPc2lwLXhkcC10ZXN0LWNhMCAXDTI2MTIwMTA4MzAwN1oYDzIx
MjYxMTA3MDgzMDA3WjAaMRgwFgYDVQQDDA9zaXAteGRwLXRlc3QtY2EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAT/oOeUVjPtAIra3D8ECud6DjpN2hgm7iENjje1
1IsSsb71uAVIWB0vm1VmOpfAXILuehlhCDQxcx5hoktnbqUwo1MwUTAdBgNVHQ4E
FgQUpbPmYnv5i+5tOhahbKIe8i+ER48wHwYDVR0jBBgwFoAUpbPmYnv5i+5tOhah
bKIe8i+ER48wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAhQXh
q0eTBthw/OfbDdCk9djtU+Ev0P7wUBySqcFiVbACIAWCQFKWluMyZzFrdopcqvd6
2JTfPPOgb3pONZY0nG1m
-----END CERTIFICATE-----
";

    #[test]
    fn ca_file_is_read_and_checked_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bouncer.key");
        std::fs::write(&key, "k0123456789\n").unwrap();
        chmod(&key, 0o600);
        let ca = dir.path().join("ca.pem");
        let mut section = section_with_key_file(&key);
        section.lapi_url = "https://203.0.113.200:8080/".to_owned();
        section.ca_file = Some(ca.clone());

        let err = format!(
            "{:#}",
            ClientConfig::from_settings(&section, None).unwrap_err()
        );
        assert!(err.contains("cannot read crowdsec.ca_file"), "{err}");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = format!(
            "{:#}",
            ClientConfig::from_settings(&section, None).unwrap_err()
        );
        assert!(
            err.contains("crowdsec.ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        std::fs::write(&ca, TEST_CA_PEM).unwrap();
        let cfg = ClientConfig::from_settings(&section, None)
            .unwrap()
            .unwrap();
        assert_eq!(cfg.ca_pem.as_deref(), Some(TEST_CA_PEM.as_bytes()));
    }

    #[test]
    fn an_inline_secret_in_a_readable_config_is_refused_even_with_crowdsec_off() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sip-xdp.toml");
        std::fs::write(&config, "").unwrap();
        chmod(&config, 0o644);
        let section = CrowdsecSection {
            api_key: Some("k0123456789".to_owned()),
            ..CrowdsecSection::default()
        };
        let err = ClientConfig::from_settings(&section, Some(&config))
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
        chmod(&config, 0o600);
        assert!(
            ClientConfig::from_settings(&section, Some(&config))
                .unwrap()
                .is_none()
        );
    }
}
