//! The tables `[sip]`, `[bans]`, `[datapath]`, `[metrics]` and `[log]`: their defaults (the
//! program's own where the kernel has one) and the checks of their values.
use std::{fmt, net::SocketAddr, time::Duration};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, SeqAccess, Visitor},
};
use sip_xdp_common::{Config, DEFAULT_MAX_SOURCES, MAX_SIP_PORTS, MAX_SOURCES_LIMIT, flags};

use super::{
    parse::{CrossFieldProblem, IntInRange, int_in_range},
    units::{de_duration, de_positive_duration, format_duration, ser_duration},
};

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

pub use sip_xdp_common::MAX_BAN_FACTOR;

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
    /// TCP destination ports inspected (SIP over TCP, TLS, WebSocket): 0 to [`MAX_SIP_PORTS`],
    /// non-zero, distinct. Empty turns TCP inspection off (and bans then leave TCP alone).
    #[serde(deserialize_with = "de_tcp_ports")]
    pub tcp_ports: Vec<u16>,
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
            ports: nonzero_ports(&Config::DEFAULT.sip_ports),
            ipv6_source_prefix: mask_prefix_len(&Config::DEFAULT.ipv6_source_mask).unwrap_or(128),
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
            tcp_ports: nonzero_ports(&d.tcp_ports),
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

impl BansSection {
    pub(super) fn check(&self) -> Result<(), CrossFieldProblem> {
        if self.max < self.base {
            return Err(CrossFieldProblem {
                keys: vec![&["bans", "max"], &["bans", "base"]],
                message: format!(
                    "bans.max must be at least bans.base ({}), got {}; raise bans.max or lower \
                     bans.base",
                    format_duration(self.base),
                    format_duration(self.max)
                ),
            });
        }
        Ok(())
    }
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

/// The ports of a kernel port table (0 marks an unused slot).
pub(super) fn nonzero_ports(ports: &[u16]) -> Vec<u16> {
    ports.iter().copied().filter(|&port| port != 0).collect()
}

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

/// A list of ports of one transport: distinct, non-zero, at most [`MAX_SIP_PORTS`]; empty only
/// where that turns the transport's inspection off.
struct PortsVisitor {
    transport: &'static str,
    example: &'static str,
    allow_empty: bool,
}

impl<'de> Visitor<'de> for PortsVisitor {
    type Value = Vec<u16>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let least = if self.allow_empty { 0 } else { 1 };
        write!(
            f,
            "a list of {least} to {MAX_SIP_PORTS} {} ports, such as {}",
            self.transport, self.example
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
        if ports.is_empty() && !self.allow_empty {
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
    d.deserialize_seq(PortsVisitor {
        transport: "UDP",
        example: "[5060, 5080]",
        allow_empty: false,
    })
}

fn de_tcp_ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    d.deserialize_seq(PortsVisitor {
        transport: "TCP",
        example: "[5060, 5061] (or [] to inspect no TCP)",
        allow_empty: true,
    })
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

/// The IPv6 mask keeping the first `prefix_len` bits (128 at most).
pub(super) fn prefix_mask(prefix_len: u8) -> [u8; 16] {
    let bits = u32::from(prefix_len.min(128));
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    mask.to_be_bytes()
}

/// The prefix length a mask stands for, or `None` when its bits are not contiguous.
pub(super) fn mask_prefix_len(mask: &[u8; 16]) -> Option<u8> {
    let ones = u128::from_be_bytes(*mask).leading_ones();
    let len = u8::try_from(ones).ok()?;
    (prefix_mask(len) == *mask).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

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
