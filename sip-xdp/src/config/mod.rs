//! The operator's TOML configuration (`/etc/sip-xdp/sip-xdp.toml`): parsing with errors that
//! point at the offending line, defaults that equal the program's [`Config::DEFAULT`], and the
//! translation into the kernel [`Config`] plus the settings only user space needs.
//!
//! Value checks (ranges, rate and duration syntax) live inside the `Deserialize` of each field,
//! so toml attaches the value's span to the error and the operator gets `file:line:column`.
use std::{
    fmt,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, SeqAccess, Visitor},
};
use sip_xdp_common::{
    BAN_DURATION_CEILING_NS, CONFIG_VERSION, Config, DEFAULT_MAX_SOURCES, LimitClass,
    MAX_SIP_PORTS, RateLimit, flags,
};
use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::{control::CROWDSEC_QUOTA, loader::MAX_SOURCES_LIMIT};

/// Where the daemon and the CLI look for the configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sip-xdp/sip-xdp.toml";
/// The commented example file; parsing it gives [`Settings::default`].
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../etc/sip-xdp.toml");
/// Largest ban escalation factor: the program caps the factor here whatever the map says, so a
/// larger value would be accepted and silently not honoured.
pub const MAX_BAN_FACTOR: u32 = 16;

const SECOND_NS: u64 = 1_000_000_000;
const MINUTE_NS: u64 = 60 * SECOND_NS;
const HOUR_NS: u64 = 60 * MINUTE_NS;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "cannot read the sip-xdp configuration {}: {source}; check the path and that this user \
         may read it (etc/sip-xdp.toml in the sip-xdp sources is a commented example)",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; `message` names the key and the fix.
    #[error("{origin}{}: {message}", location_suffix(location))]
    Invalid {
        origin: String,
        location: Option<Location>,
        message: String,
    },
}

impl ConfigError {
    /// True when the file does not exist (a caller may then fall back to the defaults).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A position in the configuration text, both 1-based; the column counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

fn location_suffix(location: &Option<Location>) -> String {
    match location {
        Some(Location { line, column }) => format!(":{line}:{column}"),
        None => String::new(),
    }
}

fn location_of(text: &str, offset: usize) -> Location {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// The whole operator configuration. Every field is optional in the file. Parse it with
/// [`Settings::from_toml_str`] or [`Settings::load`]: a bare `toml::from_str` skips the
/// cross-field checks (`bans.max >= bans.base`) and the file/line in errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub sip: SipSection,
    pub limits: LimitsSection,
    pub bans: BansSection,
    pub datapath: DatapathSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub crowdsec: CrowdsecSection,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [sip] table")]
pub struct SipSection {
    /// Destination ports inspected: 1 to [`MAX_SIP_PORTS`], non-zero, distinct.
    #[serde(deserialize_with = "de_ports")]
    pub ports: Vec<u16>,
    /// IPv6 sources are keyed by this prefix length (1..=128).
    #[serde(deserialize_with = "de_ipv6_source_prefix")]
    pub ipv6_source_prefix: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [limits] table")]
pub struct LimitsSection {
    #[serde(deserialize_with = "de_register_limit")]
    pub register: Limit,
    #[serde(deserialize_with = "de_invite_limit")]
    pub invite: Limit,
    #[serde(deserialize_with = "de_options_limit")]
    pub options: Limit,
    #[serde(deserialize_with = "de_other_limit")]
    pub other: Limit,
    #[serde(deserialize_with = "de_in_dialog_limit")]
    pub in_dialog: Limit,
    #[serde(deserialize_with = "de_response_limit")]
    pub response: Limit,
    #[serde(deserialize_with = "de_keepalive_limit")]
    pub keepalive: Limit,
    #[serde(deserialize_with = "de_malformed_limit")]
    pub malformed: Limit,
}

impl LimitsSection {
    pub fn get(&self, class: LimitClass) -> &Limit {
        match class {
            LimitClass::Register => &self.register,
            LimitClass::Invite => &self.invite,
            LimitClass::Options => &self.options,
            LimitClass::Other => &self.other,
            LimitClass::InDialog => &self.in_dialog,
            LimitClass::Response => &self.response,
            LimitClass::KeepAlive => &self.keepalive,
            LimitClass::Malformed => &self.malformed,
        }
    }
}

/// One token bucket: `rate` sustained, `burst` back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub rate: Rate,
    pub burst: u32,
}

impl Limit {
    const fn per_second(count: u64, burst: u32) -> Self {
        Self {
            rate: Rate::Limited {
                count,
                per: RatePeriod::Second,
            },
            burst,
        }
    }

    pub const fn rate_limit(&self) -> RateLimit {
        self.rate.rate_limit(self.burst)
    }
}

// Kept equal to `Config::DEFAULT.limits` (a test holds them together); spelled out because a
// kernel interval does not always map back to one operator rate.
const DEFAULT_REGISTER_LIMIT: Limit = Limit::per_second(5, 40);
const DEFAULT_INVITE_LIMIT: Limit = Limit::per_second(5, 20);
const DEFAULT_OPTIONS_LIMIT: Limit = Limit::per_second(5, 30);
const DEFAULT_OTHER_LIMIT: Limit = Limit::per_second(50, 100);
const DEFAULT_IN_DIALOG_LIMIT: Limit = Limit::per_second(100, 200);
const DEFAULT_RESPONSE_LIMIT: Limit = Limit::per_second(100, 200);
const DEFAULT_KEEPALIVE_LIMIT: Limit = Limit::per_second(50, 100);
const DEFAULT_MALFORMED_LIMIT: Limit = Limit::per_second(10, 20);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [bans] table")]
pub struct BansSection {
    /// First ban.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub base: Duration,
    /// Multiplier for each repeat ban (1..=[`MAX_BAN_FACTOR`]).
    #[serde(deserialize_with = "de_ban_factor")]
    pub factor: u32,
    /// Cap for escalated bans, at least `base`.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub max: Duration,
    /// Quiet time after which a source's strikes reset (0: every ban is a first ban).
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub strike_decay: Duration,
    pub extend_while_active: bool,
    /// How long past its last packet an active banned source stays banned.
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub extend: Duration,
    /// Length of `sip-xdp ban add ADDR` without `--for`.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub manual_default: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [datapath] table")]
pub struct DatapathSection {
    pub monitor: bool,
    pub drop_malformed: bool,
    pub drop_unknown_fragments: bool,
    /// Pass what the parser cannot resolve (long IPv6 header chains, tiny first fragments,
    /// IPv4-mapped IPv6 sources) instead of dropping it.
    pub pass_unparsed: bool,
    /// Accepted for configs written for sip-xdp 0.1, and ignored: ACK, BYE and CANCEL have
    /// their own bucket now (`[limits.in_dialog]`), responses theirs (`[limits.response]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_in_dialog: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_responses: Option<bool>,
    /// Capacity of the per-source LRU map (1..=[`MAX_SOURCES_LIMIT`]); fixed at program load.
    #[serde(deserialize_with = "de_max_sources")]
    pub max_sources: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [metrics] table")]
pub struct MetricsSection {
    pub enabled: bool,
    #[serde(deserialize_with = "de_listen")]
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [log] table")]
pub struct LogSection {
    pub format: LogFormat,
    /// Ban and expiry lines per second before they are only counted.
    #[serde(deserialize_with = "de_ban_lines")]
    pub ban_lines_per_sec: u32,
    #[serde(deserialize_with = "de_ban_lines")]
    pub ban_lines_burst: u32,
    /// How often suppressed ban lines are summarised.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub summary_interval: Duration,
}

/// `[crowdsec]`: decisions from a CrowdSec Local API become bans of origin `crowdsec` (the
/// bouncer), and with `[crowdsec.signals]` this node's own rate-limit bans go to the Local API as
/// alerts. Secrets are read at daemon start, so `config check` needs no access to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [crowdsec] table")]
pub struct CrowdsecSection {
    pub enabled: bool,
    #[serde(deserialize_with = "de_lapi_url")]
    pub lapi_url: String,
    /// The bouncer key itself; `api_key_file` keeps it out of a world-readable config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// PEM certificates to trust for an https:// Local API (a private CA, or crowdsec's own
    /// self-signed certificate), besides the usual public roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub poll_interval: Duration,
    /// Failed polls double the wait up to this.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub max_backoff: Duration,
    /// Only decisions of these origins ("crowdsec", "cscli", "CAPI", "lists"); empty: all.
    #[serde(deserialize_with = "de_origins")]
    pub origins: Vec<String>,
    /// Plain `http://` to a Local API that is not on loopback: the bouncer key and every
    /// decision cross the network in clear. Off: such a URL is refused.
    pub allow_insecure_http: bool,
    /// IPv4 decisions wider than this prefix length are refused (logged and counted).
    #[serde(deserialize_with = "de_min_prefix_v4")]
    pub min_prefix_v4: u8,
    /// IPv6 decisions wider than this prefix length are refused (logged and counted).
    #[serde(deserialize_with = "de_min_prefix_v6")]
    pub min_prefix_v6: u8,
    /// Most nets the feed bans at once (its quota of the kernel's deny table); at most
    /// [`CROWDSEC_QUOTA`], so the rest of the table stays free for manual and fail2ban bans.
    #[serde(deserialize_with = "de_crowdsec_max_bans")]
    pub max_bans: u32,
    pub signals: SignalsSection,
}

/// `[crowdsec.signals]`: the machine (watcher) credentials this node pushes alerts with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "the [crowdsec.signals] table"
)]
pub struct SignalsSection {
    pub enabled: bool,
    /// Push the kernel's rate-limit bans. Off by default: a rate ban is evidence that forged
    /// UDP sources can create, and a pushed one bans the real peer on the whole fleet.
    pub rate_bans: bool,
    /// cscli's local_api_credentials.yaml format (`url`, `login`, `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people reading the journal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

impl Default for SipSection {
    fn default() -> Self {
        Self {
            ports: Config::DEFAULT
                .sip_ports
                .iter()
                .copied()
                .filter(|&port| port != 0)
                .collect(),
            ipv6_source_prefix: mask_prefix_len(&Config::DEFAULT.ipv6_source_mask).unwrap_or(128),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            register: DEFAULT_REGISTER_LIMIT,
            invite: DEFAULT_INVITE_LIMIT,
            options: DEFAULT_OPTIONS_LIMIT,
            other: DEFAULT_OTHER_LIMIT,
            in_dialog: DEFAULT_IN_DIALOG_LIMIT,
            response: DEFAULT_RESPONSE_LIMIT,
            keepalive: DEFAULT_KEEPALIVE_LIMIT,
            malformed: DEFAULT_MALFORMED_LIMIT,
        }
    }
}

impl Default for BansSection {
    fn default() -> Self {
        let d = Config::DEFAULT;
        Self {
            base: Duration::from_nanos(d.ban_base_ns),
            factor: d.ban_factor,
            max: Duration::from_nanos(d.ban_max_ns),
            strike_decay: Duration::from_nanos(d.strike_decay_ns),
            extend_while_active: d.has_flag(flags::EXTEND_WHILE_ACTIVE),
            extend: Duration::from_nanos(d.ban_extend_ns),
            manual_default: Duration::from_secs(3600),
        }
    }
}

impl Default for DatapathSection {
    fn default() -> Self {
        let d = Config::DEFAULT;
        Self {
            monitor: d.has_flag(flags::MONITOR),
            drop_malformed: d.has_flag(flags::DROP_MALFORMED),
            drop_unknown_fragments: d.has_flag(flags::DROP_UNKNOWN_FRAGMENTS),
            pass_unparsed: d.has_flag(flags::PASS_UNPARSED),
            limit_in_dialog: None,
            limit_responses: None,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9433)),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            ban_lines_per_sec: 10,
            ban_lines_burst: 50,
            summary_interval: Duration::from_secs(60),
        }
    }
}

impl Default for CrowdsecSection {
    fn default() -> Self {
        Self {
            enabled: false,
            lapi_url: "http://127.0.0.1:8080/".to_owned(),
            api_key: None,
            api_key_file: None,
            ca_file: None,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            origins: Vec::new(),
            allow_insecure_http: false,
            min_prefix_v4: 16,
            min_prefix_v6: 32,
            max_bans: CROWDSEC_QUOTA as u32,
            signals: SignalsSection::default(),
        }
    }
}

/// Equal to parsing [`EMBEDDED_DEFAULT_TOML`] (a test holds the two together).
impl Default for Settings {
    fn default() -> Self {
        Self {
            sip: SipSection::default(),
            limits: LimitsSection::default(),
            bans: BansSection::default(),
            datapath: DatapathSection::default(),
            metrics: MetricsSection::default(),
            log: LogSection::default(),
            crowdsec: CrowdsecSection::default(),
        }
    }
}

impl Settings {
    /// Parses a configuration; `origin` (usually the file path) prefixes every error.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let settings: Settings = toml::from_str(text).map_err(|err| {
            let span = err.span();
            let key = span.as_ref().and_then(|span| key_path_at(text, span));
            ConfigError::Invalid {
                origin: origin.to_owned(),
                location: span.map(|span| location_of(text, span.start)),
                message: compose_message(key.as_deref(), err.message().trim_end()),
            }
        })?;
        if let Err(problem) = settings.check_across_fields() {
            let span = problem.keys.iter().find_map(|key| value_span(text, key));
            return Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                location: span.map(|span| location_of(text, span.start)),
                message: problem.message,
            });
        }
        Ok(settings)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The configuration the XDP program reads from its `CONFIG` map.
    pub fn kernel_config(&self) -> Config {
        let mut sip_ports = [0u16; MAX_SIP_PORTS];
        for (slot, &port) in sip_ports.iter_mut().zip(&self.sip.ports) {
            *slot = port;
        }
        let datapath = &self.datapath;
        let flag_bits = [
            (datapath.monitor, flags::MONITOR),
            (datapath.drop_malformed, flags::DROP_MALFORMED),
            (
                datapath.drop_unknown_fragments,
                flags::DROP_UNKNOWN_FRAGMENTS,
            ),
            (datapath.pass_unparsed, flags::PASS_UNPARSED),
            (self.bans.extend_while_active, flags::EXTEND_WHILE_ACTIVE),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |bits, (_, flag)| bits | flag);
        Config {
            version: CONFIG_VERSION,
            flags: flag_bits,
            sip_ports,
            // Parsing already enforces the range; the clamp keeps a hand-built Settings from
            // producing zero-length repeat bans.
            ban_factor: self.bans.factor.clamp(1, MAX_BAN_FACTOR),
            _pad0: 0,
            ipv6_source_mask: prefix_mask(self.sip.ipv6_source_prefix),
            limits: LimitClass::ALL.map(|class| self.limits.get(class).rate_limit()),
            ban_base_ns: duration_ns(self.bans.base),
            ban_max_ns: duration_ns(self.bans.max),
            strike_decay_ns: duration_ns(self.bans.strike_decay),
            ban_extend_ns: duration_ns(self.bans.extend),
        }
    }

    /// The effective configuration as TOML, every key present, in the units an operator writes
    /// ("5/s", "1m"); parsing it gives back an equal `Settings`.
    pub fn to_toml(&self) -> String {
        // Every field is a string, integer, bool or table of those: serialising cannot fail.
        toml::to_string(self).expect("Settings serialises to TOML")
    }

    /// Duration of a manual ban when the operator gives none.
    pub fn manual_ban_default(&self) -> Duration {
        self.bans.manual_default
    }

    fn check_across_fields(&self) -> Result<(), CrossFieldProblem> {
        if self.bans.max < self.bans.base {
            return Err(CrossFieldProblem {
                keys: vec![&["bans", "max"], &["bans", "base"]],
                message: format!(
                    "bans.max must be at least bans.base ({}), got {}; raise bans.max or lower \
                     bans.base",
                    format_duration(self.bans.base),
                    format_duration(self.bans.max)
                ),
            });
        }
        self.crowdsec.check()
    }
}

impl CrowdsecSection {
    fn check(&self) -> Result<(), CrossFieldProblem> {
        let problem = |keys: Vec<&'static [&'static str]>, message: String| {
            Err(CrossFieldProblem { keys, message })
        };
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return problem(
                vec![&["crowdsec", "api_key"]],
                "set crowdsec.api_key_file or crowdsec.api_key, not both".to_owned(),
            );
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return problem(
                vec![&["crowdsec", "api_key"]],
                "crowdsec.api_key is empty; paste the key `cscli bouncers add sip-xdp` printed"
                    .to_owned(),
            );
        }
        if self.enabled && self.api_key.is_none() && self.api_key_file.is_none() {
            return problem(
                vec![&["crowdsec", "enabled"]],
                "crowdsec.enabled is true but no bouncer key is set: create one with `cscli \
                 bouncers add sip-xdp` (one per node) and put it in the file named by \
                 crowdsec.api_key_file (preferred) or in crowdsec.api_key"
                    .to_owned(),
            );
        }
        if !self.allow_insecure_http && !lapi_url_is_safe(&self.lapi_url) {
            return problem(
                vec![&["crowdsec", "lapi_url"]],
                format!(
                    "crowdsec.lapi_url {:?} is plain http:// to a host that is not loopback: the \
                     bouncer key and every decision would cross the network in clear; use \
                     https:// (crowdsec's api.server.tls; crowdsec.ca_file names a private \
                     CA), or a Local API on 127.0.0.1, or, on a link you trust (a VPN), set \
                     crowdsec.allow_insecure_http = true",
                    self.lapi_url
                ),
            );
        }
        if self.max_backoff < self.poll_interval {
            return problem(
                vec![&["crowdsec", "max_backoff"], &["crowdsec", "poll_interval"]],
                format!(
                    "crowdsec.max_backoff must be at least crowdsec.poll_interval ({}), got {}",
                    format_duration(self.poll_interval),
                    format_duration(self.max_backoff)
                ),
            );
        }
        let signals = &self.signals;
        if signals.credentials_file.is_some()
            && (signals.machine_id.is_some() || signals.password.is_some())
        {
            return problem(
                vec![&["crowdsec", "signals", "credentials_file"]],
                "set crowdsec.signals.credentials_file or crowdsec.signals.machine_id and \
                 password, not both"
                    .to_owned(),
            );
        }
        if signals.machine_id.is_some() != signals.password.is_some() {
            return problem(
                vec![
                    &["crowdsec", "signals", "machine_id"],
                    &["crowdsec", "signals", "password"],
                ],
                "crowdsec.signals.machine_id and crowdsec.signals.password go together; set \
                 both, or use crowdsec.signals.credentials_file"
                    .to_owned(),
            );
        }
        if signals.enabled {
            if !self.enabled {
                return problem(
                    vec![&["crowdsec", "signals", "enabled"]],
                    "crowdsec.signals.enabled needs crowdsec.enabled = true (and its bouncer key)"
                        .to_owned(),
                );
            }
            if signals.credentials_file.is_none() && signals.machine_id.is_none() {
                return problem(
                    vec![&["crowdsec", "signals", "enabled"]],
                    "crowdsec.signals.enabled is true but no machine credentials are set: \
                     create them with `cscli machines add sip-xdp-NODE -p PASSWORD -f FILE` and \
                     set crowdsec.signals.credentials_file = FILE"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }
}

struct CrossFieldProblem {
    /// Keys whose value the error points at, the first present in the file wins.
    keys: Vec<&'static [&'static str]>,
    message: String,
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .min(BAN_DURATION_CEILING_NS)
}

/// The IPv6 mask keeping the first `prefix_len` bits (128 at most).
fn prefix_mask(prefix_len: u8) -> [u8; 16] {
    let bits = u32::from(prefix_len.min(128));
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    mask.to_be_bytes()
}

/// The prefix length a mask stands for, or `None` when its bits are not contiguous.
fn mask_prefix_len(mask: &[u8; 16]) -> Option<u8> {
    let ones = u128::from_be_bytes(*mask).leading_ones();
    let len = u8::try_from(ones).ok()?;
    (prefix_mask(len) == *mask).then_some(len)
}

/// Joins a key path and a deserialisation message into one sentence. Messages from this
/// module's validators start with "must", so they read as "bans.factor must be ...".
fn compose_message(key: Option<&str>, reason: &str) -> String {
    let Some(key) = key else {
        return reason.to_owned();
    };
    if reason.starts_with("must ") {
        return format!("{key} {reason}");
    }
    if let Some(rest) = reason.strip_prefix("unknown field `")
        && let Some((_, expected)) = rest.split_once("`, ")
    {
        return format!("unknown key `{key}`; check its spelling ({expected})");
    }
    format!("{key}: {reason}")
}

/// Dotted path of the key whose key or value text covers `span` (the deepest one).
fn key_path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_key_path(root.get_ref(), span, &mut path).then(|| path.join("."))
}

fn find_key_path(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if key.span() == *span {
            return true;
        }
        if let DeValue::Table(inner) = value.get_ref()
            && find_key_path(inner, span, path)
        {
            return true;
        }
        let value_span = value.span();
        if value_span.start <= span.start && span.end <= value_span.end {
            return true;
        }
        path.pop();
    }
    false
}

/// Span of the value at a dotted key path, when the file sets it.
fn value_span(text: &str, keys: &[&str]) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let (last, parents) = keys.split_last()?;
    let mut table = root.get_ref();
    for key in parents {
        match table.get(*key)?.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    Some(table.get(*last)?.span())
}

// ---- rates ----

/// The period of a [`Rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
}

impl RatePeriod {
    pub const fn period_ns(self) -> u64 {
        match self {
            Self::Second => SECOND_NS,
            Self::Minute => MINUTE_NS,
            Self::Hour => HOUR_NS,
        }
    }

    /// The unit as written after the slash.
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "min",
            Self::Hour => "h",
        }
    }
}

/// A sustained rate as the operator writes it: "5/s", "300/min", "1000/h", "unlimited".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Unlimited,
    /// `count` requests per `per`; `count` is at least 1 ("0/s" parses as `Unlimited`).
    Limited {
        count: u64,
        per: RatePeriod,
    },
}

const RATE_EXAMPLES: &str = "\"5/s\", \"300/min\", \"1000/h\" or \"unlimited\"";

impl Rate {
    /// The kernel token bucket for this rate with `burst`.
    pub const fn rate_limit(self, burst: u32) -> RateLimit {
        match self {
            Self::Unlimited => RateLimit::UNLIMITED,
            Self::Limited { count, per } => {
                RateLimit::per_interval(count, per.period_ns(), burst as u64)
            }
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    /// Errors read after the name of the thing parsed: "must be a rate such as ...".
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(Self::Unlimited);
        }
        let bad = |why: &str| format!("must be a rate such as {RATE_EXAMPLES}, got {s:?}{why}");
        let Some((count, unit)) = text.split_once('/') else {
            return Err(bad(" (no \"/\" between count and unit)"));
        };
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => RatePeriod::Second,
            "m" | "min" | "minute" => RatePeriod::Minute,
            "h" | "hour" => RatePeriod::Hour,
            _ => return Err(bad(" (the unit after \"/\" must be s, min or h)")),
        };
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| bad(" (the count before \"/\" must be a whole number)"))?;
        if count == 0 {
            return Ok(Self::Unlimited);
        }
        if count > per.period_ns() {
            return Err(format!(
                "must be at most {}/{} (one request per nanosecond), got {s:?}",
                per.period_ns(),
                per.unit()
            ));
        }
        Ok(Self::Limited { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("unlimited"),
            Self::Limited { count, per } => write!(f, "{count}/{}", per.unit()),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a rate string such as {RATE_EXAMPLES}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(RateVisitor)
    }
}

/// The kernel bucket in operator units: the shortest "N/unit" that maps to exactly this
/// interval, or a decimal per-second rate when none does.
fn describe_rate(limit: &RateLimit) -> String {
    if limit.is_unlimited() {
        return "unlimited".to_owned();
    }
    let interval_ns = limit.interval_ns;
    for per in [RatePeriod::Second, RatePeriod::Minute, RatePeriod::Hour] {
        let period_ns = per.period_ns();
        let guess = period_ns / interval_ns;
        for count in [guess, guess + 1] {
            if count > 0 && RateLimit::per_interval(count, period_ns, 1).interval_ns == interval_ns
            {
                return Rate::Limited { count, per }.to_string();
            }
        }
    }
    format!("{:.3}/s", SECOND_NS as f64 / interval_ns as f64)
}

// ---- durations ----

const DURATION_EXAMPLES: &str = "\"60s\", \"10m\", \"1h30m\" or \"500ms\"";

/// Parses an operator duration ("10m", "1h30m", "500ms") that must be longer than zero and at
/// most about 10 years (the program's ban ceiling). Errors read after the name of the thing
/// parsed: "must be longer than zero, ...".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_in_range(s, false)
}

fn parse_duration_in_range(s: &str, allow_zero: bool) -> Result<Duration, String> {
    let duration = humantime::parse_duration(s.trim()).map_err(|err| {
        format!("must be a duration such as {DURATION_EXAMPLES}, got {s:?} ({err})")
    })?;
    if !allow_zero && duration.is_zero() {
        return Err(format!("must be longer than zero, got {s:?}"));
    }
    if duration.as_nanos() > u128::from(BAN_DURATION_CEILING_NS) {
        return Err(format!(
            "must be at most {} (about 10 years), got {s:?}",
            format_duration(Duration::from_nanos(BAN_DURATION_CEILING_NS))
        ));
    }
    Ok(duration)
}

/// Formats a duration the way an operator writes it, exactly: "1h30m", "1m", "500ms", "0s".
/// Hours are the largest unit, so the text never depends on how long a day or year is.
pub fn format_duration(duration: Duration) -> String {
    let total_ns = duration.as_nanos();
    if total_ns == 0 {
        return "0s".to_owned();
    }
    let units: [(&str, u128); 6] = [
        ("h", u128::from(HOUR_NS)),
        ("m", u128::from(MINUTE_NS)),
        ("s", u128::from(SECOND_NS)),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut rest = total_ns;
    let mut out = String::new();
    for (unit, unit_ns) in units {
        let count = rest / unit_ns;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            rest %= unit_ns;
        }
    }
    out
}

fn ser_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_duration(*duration))
}

struct DurationVisitor {
    allow_zero: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration string such as {DURATION_EXAMPLES}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration_in_range(v, self.allow_zero).map_err(E::custom)
    }
}

fn de_positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor { allow_zero: false })
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor { allow_zero: true })
}

// ---- integers ----

/// An integer in `min..=max`, checked inside the visitor so the error carries the value's span.
struct IntInRange {
    /// Starts the message, after the key: "must be" or, in a list, "must only hold ports".
    lead: &'static str,
    min: i64,
    max: i64,
    /// Appended when the value is 0, to say why 0 is not allowed.
    zero_note: &'static str,
}

impl Visitor<'_> for IntInRange {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer between {} and {}", self.min, self.max)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if (self.min..=self.max).contains(&v) {
            return Ok(v);
        }
        let note = if v == 0 { self.zero_note } else { "" };
        Err(E::custom(format!(
            "{} between {} and {}, got {v}{note}",
            self.lead, self.min, self.max
        )))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!(
                "{} between {} and {}, got {v}",
                self.lead, self.min, self.max
            ))),
        }
    }
}

fn int_in_range<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
    min: T,
    max: T,
    zero_note: &'static str,
) -> Result<T, D::Error>
where
    i64: From<T>,
{
    let v = d.deserialize_i64(IntInRange {
        lead: "must be",
        min: i64::from(min),
        max: i64::from(max),
        zero_note,
    })?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("must fit the field's range, got {v}")))
}

fn de_ban_factor<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(
        d,
        1,
        MAX_BAN_FACTOR,
        " (0 would make repeat bans zero-length)",
    )
}

fn de_ipv6_source_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    int_in_range(
        d,
        1,
        128,
        " (0 would make the whole IPv6 internet one source)",
    )
}

fn de_max_sources<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, 1, MAX_SOURCES_LIMIT, " (no source could be tracked)")
}

fn de_ban_lines<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, 1, u32::MAX, " (no ban would ever be logged)")
}

fn de_burst<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(
        d,
        1,
        u32::MAX,
        " (use rate = \"unlimited\" to turn a bucket off)",
    )
}

// ---- limits ----

/// A `[limits.*]` table as written; missing keys take the class's own default.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a limit table with `rate` and `burst`"
)]
struct PartialLimit {
    rate: Option<Rate>,
    #[serde(default, deserialize_with = "de_burst_some")]
    burst: Option<u32>,
}

fn de_burst_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_burst(d).map(Some)
}

fn de_limit<'de, D: Deserializer<'de>>(d: D, default: Limit) -> Result<Limit, D::Error> {
    let partial = PartialLimit::deserialize(d)?;
    Ok(Limit {
        rate: partial.rate.unwrap_or(default.rate),
        burst: partial.burst.unwrap_or(default.burst),
    })
}

fn de_register_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_REGISTER_LIMIT)
}

fn de_invite_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_INVITE_LIMIT)
}

fn de_options_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_OPTIONS_LIMIT)
}

fn de_other_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_OTHER_LIMIT)
}

fn de_in_dialog_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_IN_DIALOG_LIMIT)
}

fn de_response_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_RESPONSE_LIMIT)
}

fn de_keepalive_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_KEEPALIVE_LIMIT)
}

fn de_malformed_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_MALFORMED_LIMIT)
}

// ---- ports and addresses ----

/// One port inside `ports`, checked in its own visitor so the error points at the element.
struct PortValue(u16);

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let port = d.deserialize_i64(IntInRange {
            lead: "must only hold ports",
            min: 1,
            max: i64::from(u16::MAX),
            zero_note: " (port 0 is not a port a SIP client can send to)",
        })?;
        u16::try_from(port).map(PortValue).map_err(|_| {
            de::Error::custom(format!(
                "must only hold ports between 1 and 65535, got {port}"
            ))
        })
    }
}

struct PortsVisitor;

impl<'de> Visitor<'de> for PortsVisitor {
    type Value = Vec<u16>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a list of 1 to {MAX_SIP_PORTS} UDP ports, such as [5060, 5080]"
        )
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u16>, A::Error> {
        let mut ports: Vec<u16> = Vec::new();
        while let Some(PortValue(port)) = seq.next_element()? {
            if ports.contains(&port) {
                return Err(de::Error::custom(format!(
                    "must list each port once, {port} appears twice"
                )));
            }
            ports.push(port);
        }
        if ports.is_empty() {
            return Err(de::Error::custom(
                "must list at least one port (the program would inspect nothing)",
            ));
        }
        if ports.len() > MAX_SIP_PORTS {
            return Err(de::Error::custom(format!(
                "must list at most {MAX_SIP_PORTS} ports (the program inspects no more), got {}",
                ports.len()
            )));
        }
        Ok(ports)
    }
}

fn de_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    d.deserialize_seq(PortsVisitor)
}

struct ListenVisitor;

impl Visitor<'_> for ListenVisitor {
    type Value = SocketAddr;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address and port such as \"127.0.0.1:9433\" or \"[::1]:9433\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
        v.trim().parse().map_err(|_| {
            E::custom(format!(
                "must be an address and port such as \"127.0.0.1:9433\" or \"[::1]:9433\", \
                 got {v:?}"
            ))
        })
    }
}

fn de_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    d.deserialize_str(ListenVisitor)
}

const LAPI_URL_EXAMPLE: &str = "\"http://127.0.0.1:8080/\"";

fn de_lapi_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let url = reqwest::Url::parse(text.trim()).map_err(|e| {
        de::Error::custom(format!(
            "must be a URL such as {LAPI_URL_EXAMPLE}, got {text:?} ({e})"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(de::Error::custom(format!(
            "must be an http:// or https:// URL such as {LAPI_URL_EXAMPLE}, got {text:?}"
        )));
    }
    Ok(text.trim().to_owned())
}

/// https, or http to a loopback host (`localhost`, 127.0.0.0/8, ::1).
fn lapi_url_is_safe(text: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(text.trim()) else {
        // Parsing already refused it; nothing to add.
        return true;
    };
    if url.scheme() != "http" {
        return true;
    }
    let Some(host) = url.host_str() else {
        return true;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(addr) => addr.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn de_min_prefix_v4<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    int_in_range(
        d,
        1,
        32,
        " (a decision for 0.0.0.0/0 would drop every IPv4 source)",
    )
}

fn de_min_prefix_v6<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    int_in_range(
        d,
        1,
        128,
        " (a decision for ::/0 would drop every IPv6 source)",
    )
}

fn de_crowdsec_max_bans<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(
        d,
        1,
        CROWDSEC_QUOTA as u32,
        " (turn the feed off with crowdsec.enabled = false)",
    )
}

fn de_origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let origins = Vec::<String>::deserialize(d)?;
    if let Some(bad) = origins
        .iter()
        .find(|o| o.trim().is_empty() || o.contains(',') || o.contains(char::is_whitespace))
    {
        return Err(de::Error::custom(format!(
            "must only hold origin names such as \"crowdsec\", \"cscli\" or \"CAPI\", got {bad:?}"
        )));
    }
    Ok(origins)
}

// ---- the kernel config, described ----

/// One kernel token bucket in operator units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitView {
    /// The [`LimitClass`] name: register, invite, options, other.
    pub class: &'static str,
    /// "5/s", "unlimited", or a decimal per-second rate when no whole rate maps to the interval.
    pub rate: String,
    pub burst: u64,
    pub interval_ns: u64,
}

/// The kernel config in force, in operator units, for `sip-xdp status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelConfigView {
    /// Version stamped in the map entry.
    pub stored_version: u32,
    /// True when the entry's version is not [`CONFIG_VERSION`] (say, never written): the program
    /// then ignores it and runs on [`Config::DEFAULT`], which is what the fields below show.
    pub using_builtin_defaults: bool,
    pub ports: Vec<u16>,
    /// `None` when the mask is not a contiguous prefix (never written by this crate).
    pub ipv6_source_prefix: Option<u8>,
    pub monitor: bool,
    pub drop_malformed: bool,
    pub drop_unknown_fragments: bool,
    pub pass_unparsed: bool,
    pub limits: Vec<LimitView>,
    pub ban_base: String,
    pub ban_factor: u32,
    pub ban_max: String,
    pub strike_decay: String,
    pub extend_while_active: bool,
    pub ban_extend: String,
}

/// Describes the config read back from the program's `CONFIG` map.
pub fn describe_kernel(cfg: &Config) -> KernelConfigView {
    let using_builtin_defaults = cfg.version != CONFIG_VERSION;
    let in_force = if using_builtin_defaults {
        &Config::DEFAULT
    } else {
        cfg
    };
    let human = |ns: u64| format_duration(Duration::from_nanos(ns));
    KernelConfigView {
        stored_version: cfg.version,
        using_builtin_defaults,
        ports: in_force
            .sip_ports
            .iter()
            .copied()
            .filter(|&port| port != 0)
            .collect(),
        ipv6_source_prefix: mask_prefix_len(&in_force.ipv6_source_mask),
        monitor: in_force.has_flag(flags::MONITOR),
        drop_malformed: in_force.has_flag(flags::DROP_MALFORMED),
        drop_unknown_fragments: in_force.has_flag(flags::DROP_UNKNOWN_FRAGMENTS),
        pass_unparsed: in_force.has_flag(flags::PASS_UNPARSED),
        limits: LimitClass::ALL
            .iter()
            .zip(&in_force.limits)
            .map(|(class, limit)| LimitView {
                class: class.name(),
                rate: describe_rate(limit),
                burst: limit.burst(),
                interval_ns: limit.interval_ns,
            })
            .collect(),
        ban_base: human(in_force.ban_base_ns),
        ban_factor: in_force.ban_factor,
        ban_max: human(in_force.ban_max_ns),
        strike_decay: human(in_force.strike_decay_ns),
        extend_while_active: in_force.has_flag(flags::EXTEND_WHILE_ACTIVE),
        ban_extend: human(in_force.ban_extend_ns),
    }
}

impl fmt::Display for KernelConfigView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        if self.using_builtin_defaults {
            writeln!(
                f,
                "config entry version {} is not {CONFIG_VERSION}: the program runs on its \
                 built-in defaults, shown below",
                self.stored_version
            )?;
        }
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        writeln!(f, "sip ports               {}", ports.join(", "))?;
        match self.ipv6_source_prefix {
            Some(len) => writeln!(f, "ipv6 source prefix      /{len}")?,
            None => writeln!(f, "ipv6 source prefix      (non-contiguous mask)")?,
        }
        writeln!(f, "monitor (drop nothing)  {}", on(self.monitor))?;
        writeln!(f, "drop malformed          {}", on(self.drop_malformed))?;
        writeln!(
            f,
            "drop unknown fragments  {}",
            on(self.drop_unknown_fragments)
        )?;
        writeln!(f, "pass unparsed           {}", on(self.pass_unparsed))?;
        for limit in &self.limits {
            if limit.rate == "unlimited" {
                writeln!(f, "limit {:<17} unlimited", limit.class)?;
            } else {
                writeln!(
                    f,
                    "limit {:<17} {}, burst {}",
                    limit.class, limit.rate, limit.burst
                )?;
            }
        }
        writeln!(f, "ban base                {}", self.ban_base)?;
        writeln!(f, "ban factor              {}", self.ban_factor)?;
        writeln!(f, "ban max                 {}", self.ban_max)?;
        writeln!(f, "strike decay            {}", self.strike_decay)?;
        if self.extend_while_active {
            write!(
                f,
                "extend while active     on ({} past the last packet)",
                self.ban_extend
            )
        } else {
            write!(f, "extend while active     off")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml_str(text, "test.toml")
    }

    /// The error's location and message; panics (failing the test) when `text` parses.
    fn reject(text: &str) -> (Option<Location>, String) {
        match parse(text) {
            Ok(settings) => panic!("accepted {text:?} as {settings:?}"),
            Err(ConfigError::Invalid {
                location, message, ..
            }) => (location, message),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn embedded_file_is_the_default_and_matches_the_kernel_default() {
        let settings = parse(EMBEDDED_DEFAULT_TOML).expect("embedded default parses");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.kernel_config(), Config::DEFAULT);
        assert_eq!(settings.datapath.max_sources, DEFAULT_MAX_SOURCES);
        assert_eq!(settings.manual_ban_default(), Duration::from_secs(3600));
    }

    #[test]
    fn embedded_file_sets_every_key() {
        // Each key of the effective config must appear in the example, so operators see it.
        let effective: toml::Table = toml::from_str(&Settings::default().to_toml()).unwrap();
        let example: toml::Table = toml::from_str(EMBEDDED_DEFAULT_TOML).unwrap();
        fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
            for (key, value) in table {
                let path = format!("{prefix}{key}");
                match value {
                    toml::Value::Table(inner) => keys(inner, &format!("{path}."), out),
                    _ => out.push(path),
                }
            }
        }
        let (mut want, mut have) = (Vec::new(), Vec::new());
        keys(&effective, "", &mut want);
        keys(&example, "", &mut have);
        want.sort();
        have.sort();
        assert_eq!(have, want);
        assert_eq!(want.len(), 47);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Settings::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Settings::default());
    }

    #[test]
    fn every_section_overrides() {
        let text = r#"
[sip]
ports = [5060, 5080]
ipv6_source_prefix = 64

[limits.register]
rate = "300/min"
burst = 10
[limits.invite]
rate = "unlimited"
[limits.options]
burst = 7
[limits.other]
rate = "1000/h"
burst = 2

[bans]
base = "30s"
factor = 3
max = "2h"
strike_decay = "10m"
extend_while_active = false
extend = "5s"
manual_default = "1h30m"

[datapath]
monitor = true
drop_malformed = false
drop_unknown_fragments = true
pass_unparsed = true
limit_in_dialog = true
limit_responses = true
max_sources = 1000

[metrics]
enabled = false
listen = "[::1]:9000"

[log]
format = "json"
ban_lines_per_sec = 3
ban_lines_burst = 4
summary_interval = "500ms"
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.sip.ports, vec![5060, 5080]);
        assert_eq!(s.sip.ipv6_source_prefix, 64);
        assert_eq!(
            s.limits.register,
            Limit {
                rate: Rate::Limited {
                    count: 300,
                    per: RatePeriod::Minute
                },
                burst: 10
            }
        );
        // A partial table keeps its own class's default for the missing key.
        assert_eq!(s.limits.invite.rate, Rate::Unlimited);
        assert_eq!(s.limits.invite.burst, 20);
        assert_eq!(s.limits.options.rate, DEFAULT_OPTIONS_LIMIT.rate);
        assert_eq!(s.limits.options.burst, 7);
        assert_eq!(s.bans.base, Duration::from_secs(30));
        assert_eq!(s.bans.factor, 3);
        assert_eq!(s.bans.max, Duration::from_secs(7200));
        assert_eq!(s.bans.strike_decay, Duration::from_secs(600));
        assert!(!s.bans.extend_while_active);
        assert_eq!(s.bans.extend, Duration::from_secs(5));
        assert_eq!(s.manual_ban_default(), Duration::from_secs(5400));
        assert!(s.datapath.monitor);
        assert!(!s.datapath.drop_malformed);
        assert_eq!(s.datapath.max_sources, 1000);
        assert!(!s.metrics.enabled);
        assert_eq!(s.metrics.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.ban_lines_per_sec, 3);
        assert_eq!(s.log.ban_lines_burst, 4);
        assert_eq!(s.log.summary_interval, Duration::from_millis(500));

        let k = s.kernel_config();
        assert_eq!(k.version, CONFIG_VERSION);
        assert_eq!(k.sip_ports, [5060, 5080, 0, 0, 0, 0, 0, 0]);
        let mut mask = [0u8; 16];
        mask[..8].fill(0xff);
        assert_eq!(k.ipv6_source_mask, mask);
        assert_eq!(
            k.flags,
            flags::MONITOR | flags::DROP_UNKNOWN_FRAGMENTS | flags::PASS_UNPARSED
        );
        assert_eq!(
            k.limits[LimitClass::Register as usize].interval_ns,
            200_000_000
        );
        assert_eq!(k.limits[LimitClass::Register as usize].burst(), 10);
        assert_eq!(k.limits[LimitClass::Invite as usize], RateLimit::UNLIMITED);
        assert_eq!(
            k.limits[LimitClass::Options as usize],
            RateLimit::per_second(5, 7)
        );
        assert_eq!(
            k.limits[LimitClass::Other as usize],
            RateLimit::per_interval(1000, HOUR_NS, 2)
        );
        assert_eq!(k.ban_factor, 3);
        assert_eq!(k.ban_base_ns, 30 * SECOND_NS);
        assert_eq!(k.ban_max_ns, 2 * HOUR_NS);
        assert_eq!(k.strike_decay_ns, 10 * MINUTE_NS);
        assert_eq!(k.ban_extend_ns, 5 * SECOND_NS);
    }

    #[test]
    fn rates_map_to_kernel_buckets() {
        let rate = |s: &str| s.parse::<Rate>().unwrap();
        assert_eq!(rate("unlimited").rate_limit(40), RateLimit::UNLIMITED);
        assert_eq!(rate("0/s").rate_limit(40), RateLimit::UNLIMITED);
        assert_eq!(rate("300/min").rate_limit(1).interval_ns, 200_000_000);
        assert_eq!(rate("300/m"), rate("300/min"));
        assert_eq!(rate(" 10 / h ").rate_limit(1).interval_ns, 360 * SECOND_NS);
        assert_eq!(rate("5/s").rate_limit(40), RateLimit::per_second(5, 40));
        for bad in ["5", "5/x", "five/s", "-5/s", "5.5/s", "", "2000000000/s"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.starts_with("must be"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_parse_with_limits() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(parse_duration("11y").unwrap_err().contains("at most"));
        assert!(
            parse_duration("10")
                .unwrap_err()
                .starts_with("must be a duration")
        );
        assert!(parse_duration("").is_err());
        for d in [
            Duration::from_secs(60),
            Duration::from_secs(5400),
            Duration::from_nanos(3_600_000_000_123),
            Duration::from_millis(1500),
            Duration::from_nanos(BAN_DURATION_CEILING_NS),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let (location, message) = reject("[bans]\nbase = \"1m\"\nfactr = 3\n");
        assert_eq!(location, at(3, 1));
        assert!(message.contains("`bans.factr`"), "{message}");
        assert!(message.contains("factor"), "{message}");

        let (location, message) = reject("[sip]\n[limit.register]\nrate = \"1/s\"\n");
        assert_eq!(location.map(|l| l.line), Some(2));
        assert!(message.contains("`limit`"), "{message}");

        let (location, message) = reject("[limits.register]\nrate = \"1/s\"\nbrust = 3\n");
        assert_eq!(location, at(3, 1));
        assert!(message.contains("limits.register.brust"), "{message}");
    }

    #[test]
    fn the_example_error_reads_as_documented() {
        let mut text = String::from("[bans]\n");
        text.push_str(&"# padding\n".repeat(10));
        text.push_str("factor = 0\n");
        let err = Settings::from_toml_str(&text, DEFAULT_CONFIG_PATH).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/sip-xdp/sip-xdp.toml:12:10: bans.factor must be between 1 and 16, got 0 (0 \
             would make repeat bans zero-length)"
        );
    }

    #[test]
    fn bad_values_are_rejected_at_their_line() {
        #[rustfmt::skip]
        let cases: &[(&str, usize, usize, &str)] = &[
            ("[limits.invite]\nrate = \"5 per s\"\n", 2, 8, "limits.invite.rate must be a rate"),
            ("[limits.invite]\nrate = 5\n", 2, 8, "limits.invite.rate: invalid type"),
            ("[limits.other]\nburst = 0\n", 2, 9, "limits.other.burst must be between 1"),
            ("[bans]\nbase = \"soon\"\n", 2, 8, "bans.base must be a duration"),
            ("[bans]\nbase = 60\n", 2, 8, "a duration string"),
            ("[bans]\nbase = \"0s\"\n", 2, 8, "bans.base must be longer than zero"),
            ("[bans]\nextend = \"20y\"\n", 2, 10, "bans.extend must be at most"),
            ("[bans]\nfactor = 17\n", 2, 10, "bans.factor must be between 1 and 16, got 17"),
            ("[sip]\nports = [5060, 0]\n", 2, 16, "sip.ports must only hold ports between 1 and 65535, got 0"),
            ("[sip]\nports = [70000]\n", 2, 10, "got 70000"),
            ("[sip]\nports = [5060, 5080, 5060]\n", 2, 9, "5060 appears twice"),
            ("[sip]\nports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n", 2, 9, "at most 8 ports"),
            ("[sip]\nports = []\n", 2, 9, "at least one port"),
            ("[sip]\nipv6_source_prefix = 0\n", 2, 22, "sip.ipv6_source_prefix must be"),
            ("[sip]\nipv6_source_prefix = 129\n", 2, 22, "got 129"),
            ("[datapath]\nmax_sources = 0\n", 2, 15, "datapath.max_sources must be"),
            ("[datapath]\nmax_sources = 16777217\n", 2, 15, "16777216"),
            ("[datapath]\nmonitor = \"yes\"\n", 2, 11, "datapath.monitor: invalid type"),
            ("[metrics]\nlisten = \"localhost\"\n", 2, 10, "metrics.listen must be an address"),
            ("[log]\nformat = \"xml\"\n", 2, 10, "log.format: unknown variant `xml`"),
            ("[log]\nban_lines_per_sec = 0\n", 2, 21, "log.ban_lines_per_sec must be"),
            ("[log]\nsummary_interval = \"0s\"\n", 2, 20, "longer than zero"),
            ("[bans]\nbase = \"2h\"\nmax = \"1h\"\n", 3, 7, "bans.max must be at least"),
            ("[bans]\nbase = \"48h\"\n", 2, 8, "bans.max must be at least bans.base (48h)"),
            ("[sip\n", 1, 5, ""),
        ];
        for &(text, line, column, needle) in cases {
            let (location, message) = reject(text);
            assert_eq!(location, at(line, column), "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn crowdsec_section_parses_and_checks() {
        let s = parse(
            r#"
[crowdsec]
enabled = true
lapi_url = "https://203.0.113.200:8080"
api_key_file = "/etc/sip-xdp/crowdsec-bouncer.key"
poll_interval = "500ms"
max_backoff = "8s"
origins = ["crowdsec", "cscli"]

[crowdsec.signals]
enabled = true
credentials_file = "/etc/sip-xdp/crowdsec-machine.yaml"
"#,
        )
        .unwrap();
        let c = &s.crowdsec;
        assert!(c.enabled && c.signals.enabled);
        assert_eq!(c.lapi_url, "https://203.0.113.200:8080");
        assert_eq!(
            c.api_key_file.as_deref(),
            Some(Path::new("/etc/sip-xdp/crowdsec-bouncer.key"))
        );
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.max_backoff, Duration::from_secs(8));
        assert_eq!(c.origins, ["crowdsec", "cscli"]);
        assert_eq!(parse(&s.to_toml()).unwrap(), s);

        #[rustfmt::skip]
        let cases: &[(&str, usize, usize, &str)] = &[
            ("[crowdsec]\nenabled = true\n", 2, 11, "no bouncer key is set: create one with `cscli bouncers add sip-xdp`"),
            ("[crowdsec]\napi_key = \"k\"\napi_key_file = \"/k\"\n", 2, 11, "not both"),
            ("[crowdsec]\napi_key = \" \"\n", 2, 11, "crowdsec.api_key is empty"),
            ("[crowdsec]\nlapi_url = \"127.0.0.1:8080\"\n", 2, 12, "crowdsec.lapi_url must be"),
            ("[crowdsec]\nlapi_url = \"ftp://h/\"\n", 2, 12, "http:// or https://"),
            ("[crowdsec]\npoll_interval = \"0s\"\n", 2, 17, "crowdsec.poll_interval must be longer than zero"),
            ("[crowdsec]\npoll_interval = \"1m\"\n", 2, 17, "crowdsec.max_backoff must be at least crowdsec.poll_interval (1m)"),
            ("[crowdsec]\norigins = [\"a,b\"]\n", 2, 11, "crowdsec.origins must only hold origin names"),
            ("[crowdsec]\nenabled = true\napi_key = \"k\"\n[crowdsec.signals]\nenabled = true\n", 5, 11, "cscli machines add"),
            ("[crowdsec.signals]\nenabled = true\nmachine_id = \"m\"\npassword = \"p\"\n", 2, 11, "needs crowdsec.enabled = true"),
            ("[crowdsec.signals]\nmachine_id = \"m\"\n", 2, 14, "go together"),
            ("[crowdsec.signals]\ncredentials_file = \"/f\"\npassword = \"p\"\n", 2, 20, "not both"),
            ("[crowdsec]\napi_kye = \"k\"\n", 2, 1, "unknown key `crowdsec.api_kye`"),
            ("[crowdsec]\nmin_prefix_v4 = 0\n", 2, 17, "crowdsec.min_prefix_v4 must be between 1 and 32"),
            ("[crowdsec]\nmin_prefix_v6 = 129\n", 2, 17, "crowdsec.min_prefix_v6 must be between 1 and 128"),
            ("[crowdsec]\nmax_bans = 8193\n", 2, 12, "crowdsec.max_bans must be between 1 and 8192"),
            ("[crowdsec]\nmax_bans = 0\n", 2, 12, "crowdsec.enabled = false"),
        ];
        for &(text, line, column, needle) in cases {
            let (location, message) = reject(text);
            assert_eq!(location, at(line, column), "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        for url in [
            "http://203.0.113.200:8080/",
            "http://lapi.example.net:8080/",
            "http://[2001:db8::1]:8080/",
        ] {
            let text = format!("[crowdsec]\nlapi_url = \"{url}\"\n");
            let (location, message) = reject(&text);
            assert_eq!(location, at(2, 12), "{url}: {message}");
            for needle in [
                "crowdsec.lapi_url",
                "not loopback",
                "use https://",
                "crowdsec.allow_insecure_http = true",
            ] {
                assert!(message.contains(needle), "{url}: {message}");
            }
            let allowed = format!("{text}allow_insecure_http = true\n");
            assert!(parse(&allowed).unwrap().crowdsec.allow_insecure_http);
        }
        for url in [
            "http://127.0.0.1:8080/",
            "http://127.1.2.3:8080/",
            "http://localhost:8080/",
            "http://[::1]:8080/",
            "https://203.0.113.200:8080/",
            "https://lapi.example.net/",
        ] {
            let text = format!("[crowdsec]\nlapi_url = \"{url}\"\n");
            assert_eq!(parse(&text).unwrap().crowdsec.lapi_url, url);
        }
    }

    #[test]
    fn feed_limits_and_rate_ban_signals_have_safe_defaults() {
        let c = Settings::default().crowdsec;
        assert_eq!((c.min_prefix_v4, c.min_prefix_v6), (16, 32));
        assert_eq!(c.max_bans as usize, CROWDSEC_QUOTA);
        assert!(
            !c.signals.rate_bans,
            "rate bans are not signalled unless configured"
        );
        assert!(!c.allow_insecure_http);
        let s = parse(
            "[crowdsec]\nmin_prefix_v4 = 24\nmin_prefix_v6 = 48\nmax_bans = 10\n\
             [crowdsec.signals]\nrate_bans = true\n",
        )
        .unwrap();
        let c = &s.crowdsec;
        assert_eq!((c.min_prefix_v4, c.min_prefix_v6, c.max_bans), (24, 48, 10));
        assert!(c.signals.rate_bans);
        assert_eq!(parse(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn to_toml_round_trips() {
        assert_eq!(
            parse(&Settings::default().to_toml()).unwrap(),
            Settings::default()
        );

        let mut s = Settings::default();
        s.sip.ports = vec![5060, 5061, 5080];
        s.sip.ipv6_source_prefix = 56;
        s.limits.register.rate = Rate::Limited {
            count: 300,
            per: RatePeriod::Minute,
        };
        s.limits.invite.rate = Rate::Unlimited;
        s.limits.other.burst = 1;
        s.bans.base = Duration::from_millis(1500);
        s.bans.factor = 16;
        s.bans.max = Duration::from_secs(3 * 86_400 + 1);
        s.bans.strike_decay = Duration::ZERO;
        s.bans.extend_while_active = false;
        s.bans.manual_default = Duration::from_secs(5400);
        s.datapath.monitor = true;
        s.datapath.max_sources = 42;
        s.metrics.listen = "[::]:9999".parse().unwrap();
        s.log.format = LogFormat::Json;
        s.log.summary_interval = Duration::from_secs(7);
        let text = s.to_toml();
        assert!(text.contains("rate = \"300/min\""), "{text}");
        assert!(text.contains("base = \"1s500ms\""), "{text}");
        assert!(text.contains("manual_default = \"1h30m\""), "{text}");
        assert_eq!(parse(&text).unwrap(), s, "{text}");
    }

    #[test]
    fn describe_kernel_reports_operator_units() {
        let view = describe_kernel(&Config::DEFAULT);
        assert!(!view.using_builtin_defaults);
        let register = &view.limits[LimitClass::Register as usize];
        assert_eq!(register.class, "register");
        assert_eq!(register.rate, "5/s");
        assert_eq!(register.burst, 40);
        assert_eq!(view.ports, vec![5060]);
        assert_eq!(view.ipv6_source_prefix, Some(128));
        assert_eq!(view.ban_base, "1m");
        assert_eq!(view.ban_max, "24h");
        assert!(view.extend_while_active && view.drop_malformed && !view.monitor);
        let text = view.to_string();
        assert!(
            text.contains("limit register          5/s, burst 40"),
            "{text}"
        );

        let settings = parse(
            "[limits.register]\nrate = \"1/min\"\nburst = 3\n[limits.invite]\nrate = \"3/s\"\n\
             [limits.options]\nrate = \"unlimited\"\n[sip]\nipv6_source_prefix = 48\n",
        )
        .unwrap();
        let view = describe_kernel(&settings.kernel_config());
        let rates: Vec<&str> = view.limits.iter().map(|l| l.rate.as_str()).collect();
        assert_eq!(
            rates,
            [
                "1/min",
                "3/s",
                "unlimited",
                "50/s",
                "100/s",
                "100/s",
                "50/s",
                "10/s"
            ]
        );
        assert_eq!(view.limits[0].burst, 3);
        assert_eq!(view.ipv6_source_prefix, Some(48));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["limits"][0]["rate"], "1/min");

        // A never-written entry (version 0) means the program runs on its defaults.
        let zeroed = Config {
            version: 0,
            ban_factor: 9,
            ..Config::DEFAULT
        };
        let view = describe_kernel(&zeroed);
        assert!(view.using_builtin_defaults);
        assert_eq!(view.ban_factor, Config::DEFAULT.ban_factor);
        assert!(view.to_string().contains("built-in defaults"));
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sip-xdp.toml");
        std::fs::write(&path, "[bans]\nfactor = 4\n").unwrap();
        assert_eq!(Settings::load(&path).unwrap().bans.factor, 4);

        std::fs::write(&path, "[bans]\nfactor = 0\n").unwrap();
        let err = Settings::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2:10: ", path.display())),
            "{err}"
        );

        let missing = dir.path().join("absent.toml");
        let err = Settings::load(&missing).unwrap_err();
        assert!(err.is_not_found());
        assert!(err.to_string().contains(&missing.display().to_string()));
    }

    #[test]
    fn prefix_masks_round_trip() {
        for len in 1..=128u8 {
            assert_eq!(mask_prefix_len(&prefix_mask(len)), Some(len));
        }
        assert_eq!(prefix_mask(128), [0xff; 16]);
        let mut holey = [0xff; 16];
        holey[3] = 0;
        assert_eq!(mask_prefix_len(&holey), None);
    }
}
