//! The translation to the kernel: [`Settings::kernel_config`] is the entry the program reads from
//! its `CONFIG` map, and [`describe_kernel`] reads an entry back in operator units for `sip-xdp
//! status`.
use std::{fmt, time::Duration};

use serde::Serialize;
use sip_xdp_common::{
    BAN_DURATION_CEILING_NS, CONFIG_VERSION, Config, LimitClass, MAX_SIP_PORTS, PREFIX_LEVEL_IPV4,
    flags,
};

use super::{
    sections::{MAX_BAN_FACTOR, mask_prefix_len, nonzero_ports, prefix_mask},
    settings::Settings,
    units::{describe_rate, format_duration},
};

impl Settings {
    /// The configuration the XDP program reads from its `CONFIG` map.
    pub fn kernel_config(&self) -> Config {
        let mut sip_ports = [0u16; MAX_SIP_PORTS];
        for (slot, &port) in sip_ports.iter_mut().zip(&self.sip.ports) {
            *slot = port;
        }
        let mut tcp_ports = [0u16; MAX_SIP_PORTS];
        for (slot, &port) in tcp_ports.iter_mut().zip(&self.datapath.tcp_ports) {
            *slot = port;
        }
        let datapath = &self.datapath;
        let answers = &self.answers;
        let flag_bits = [
            (datapath.monitor, flags::MONITOR),
            (datapath.drop_malformed, flags::DROP_MALFORMED),
            (
                datapath.drop_unknown_fragments,
                flags::DROP_UNKNOWN_FRAGMENTS,
            ),
            (datapath.pass_unparsed, flags::PASS_UNPARSED),
            (self.bans.extend_while_active, flags::EXTEND_WHILE_ACTIVE),
            // `attach` puts the egress program on every interface it filters whenever this is
            // on, and refuses to report success without it.
            (answers.enabled, flags::ANSWERS),
            // What the file asks for; `attach` (and every later write) also wants the scan
            // program in `SCANNERS` and an entry in `SIGNATURES`, which only it can tell.
            (
                self.signatures.enabled && !self.signatures.keys().is_empty(),
                flags::SIGNATURES,
            ),
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
            limits: self.limits.rate_limits(),
            ban_base_ns: duration_ns(self.bans.base),
            ban_max_ns: duration_ns(self.bans.max),
            strike_decay_ns: duration_ns(self.bans.strike_decay),
            ban_extend_ns: duration_ns(self.bans.extend),
            verified_limits: answers.verified_limits.rate_limits(),
            admission: answers.admission.rate_limit(),
            reflection_per_destination: answers.reflection_per_destination.rate_limit(),
            reflection_total: answers.reflection_total.rate_limit(),
            verified_for_ns: duration_ns(answers.verified_for),
            auth_window_ns: duration_ns(answers.window),
            auth_max_failures: answers.max_failures,
            auth_max_failures_verified: answers.max_failures_verified,
            auth_max_flow_failures: answers.max_flow_failures,
            auth_max_unanswered: answers.max_unanswered,
            flow_ban_ns: duration_ns(answers.flow_ban),
            tcp_ports,
            prefix_lens: self.prefixes.prefix_lens(),
            _pad1: [0; 5],
            prefix_masks: self.prefixes.prefix_masks(),
            prefix_limits: self.prefixes.rate_limits(),
            signature_ban_ns: duration_ns(self.signatures.ban),
            trace_until_ns: 0,
        }
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos())
        .unwrap_or(u64::MAX)
        .min(BAN_DURATION_CEILING_NS)
}

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
    /// TCP ports inspected (SIP over TCP, TLS, WebSocket); empty: TCP is not inspected.
    pub tcp_ports: Vec<u16>,
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
    /// `[answers] enabled`: the egress program's verified sources and admission budget count.
    pub answers_enabled: bool,
    pub verified_limits: Vec<LimitView>,
    pub admission: LimitView,
    pub reflection_per_destination: LimitView,
    pub reflection_total: LimitView,
    pub verified_for: String,
    pub auth_window: String,
    pub auth_max_failures: u32,
    pub auth_max_failures_verified: u32,
    pub auth_max_flow_failures: u32,
    pub auth_max_unanswered: u32,
    pub flow_ban: String,
    /// The IPv4 prefix of a prefix bucket (24 for a /24), `None` when that level is off.
    pub prefix_ipv4: Option<u8>,
    /// The IPv6 prefixes of prefix buckets, in the order they are drawn.
    pub prefix_ipv6: Vec<u8>,
    /// The buckets every prefix has (shared by its unverified sources).
    pub prefix_limits: Vec<LimitView>,
    /// `flags::SIGNATURES`: requests are handed to the scan program.
    pub signatures: bool,
    /// Shortest ban for a signature match.
    pub signature_ban: String,
}

impl KernelConfigView {
    /// The prefix levels as `status` names them: `/24 /64 /48`, or `off`.
    pub fn prefix_levels(&self) -> String {
        let levels: Vec<String> = self
            .prefix_ipv4
            .iter()
            .chain(&self.prefix_ipv6)
            .map(|len| format!("/{len}"))
            .collect();
        if levels.is_empty() {
            "off".to_owned()
        } else {
            levels.join(" ")
        }
    }
}

fn limit_views(limits: &[sip_xdp_common::RateLimit]) -> Vec<LimitView> {
    LimitClass::ALL
        .iter()
        .zip(limits)
        .map(|(class, limit)| limit_view(class.name(), limit))
        .collect()
}

fn limit_view(class: &'static str, limit: &sip_xdp_common::RateLimit) -> LimitView {
    LimitView {
        class,
        rate: describe_rate(limit),
        burst: limit.burst(),
        interval_ns: limit.interval_ns,
    }
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
        ports: nonzero_ports(&in_force.sip_ports),
        tcp_ports: nonzero_ports(&in_force.tcp_ports),
        ipv6_source_prefix: mask_prefix_len(&in_force.ipv6_source_mask),
        monitor: in_force.has_flag(flags::MONITOR),
        drop_malformed: in_force.has_flag(flags::DROP_MALFORMED),
        drop_unknown_fragments: in_force.has_flag(flags::DROP_UNKNOWN_FRAGMENTS),
        pass_unparsed: in_force.has_flag(flags::PASS_UNPARSED),
        limits: limit_views(&in_force.limits),
        ban_base: human(in_force.ban_base_ns),
        ban_factor: in_force.ban_factor,
        ban_max: human(in_force.ban_max_ns),
        strike_decay: human(in_force.strike_decay_ns),
        extend_while_active: in_force.has_flag(flags::EXTEND_WHILE_ACTIVE),
        ban_extend: human(in_force.ban_extend_ns),
        answers_enabled: in_force.has_flag(flags::ANSWERS),
        verified_limits: limit_views(&in_force.verified_limits),
        admission: limit_view("admission", &in_force.admission),
        reflection_per_destination: limit_view(
            "reflection_per_destination",
            &in_force.reflection_per_destination,
        ),
        reflection_total: limit_view("reflection_total", &in_force.reflection_total),
        verified_for: human(in_force.verified_for_ns),
        auth_window: human(in_force.auth_window_ns),
        auth_max_failures: in_force.auth_max_failures,
        auth_max_failures_verified: in_force.auth_max_failures_verified,
        auth_max_flow_failures: in_force.auth_max_flow_failures,
        auth_max_unanswered: in_force.auth_max_unanswered,
        flow_ban: human(in_force.flow_ban_ns),
        prefix_ipv4: match in_force.prefix_lens[PREFIX_LEVEL_IPV4] {
            0 => None,
            len => Some(len.saturating_sub(96)),
        },
        prefix_ipv6: in_force
            .prefix_lens
            .iter()
            .enumerate()
            .filter(|&(level, &len)| level != PREFIX_LEVEL_IPV4 && len != 0)
            .map(|(_, &len)| len)
            .collect(),
        prefix_limits: limit_views(&in_force.prefix_limits),
        signatures: in_force.has_flag(flags::SIGNATURES),
        signature_ban: human(in_force.signature_ban_ns),
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
        if self.tcp_ports.is_empty() {
            writeln!(
                f,
                "tcp ports               none (SIP over TCP and TLS not inspected)"
            )?;
        } else {
            let tcp: Vec<String> = self.tcp_ports.iter().map(u16::to_string).collect();
            writeln!(f, "tcp ports               {}", tcp.join(", "))?;
        }
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
        writeln!(f, "prefix buckets          {}", self.prefix_levels())?;
        if self.prefix_ipv4.is_some() || !self.prefix_ipv6.is_empty() {
            for limit in &self.prefix_limits {
                writeln!(f, "prefix {:<16} {}", limit.class, bucket_text(limit))?;
            }
        }
        if self.signatures {
            writeln!(
                f,
                "signatures              on (a match bans for {} at least)",
                self.signature_ban
            )?;
        } else {
            writeln!(f, "signatures              off")?;
        }
        writeln!(f, "ban base                {}", self.ban_base)?;
        writeln!(f, "ban factor              {}", self.ban_factor)?;
        writeln!(f, "ban max                 {}", self.ban_max)?;
        writeln!(f, "strike decay            {}", self.strike_decay)?;
        if self.extend_while_active {
            writeln!(
                f,
                "extend while active     on ({} past the last packet)",
                self.ban_extend
            )?;
        } else {
            writeln!(f, "extend while active     off")?;
        }
        if !self.answers_enabled {
            return write!(f, "answers                 off (no egress program)");
        }
        let bucket = bucket_text;
        writeln!(
            f,
            "answers                 on (verified for {} after a success)",
            self.verified_for
        )?;
        for limit in &self.verified_limits {
            writeln!(f, "verified {:<14} {}", limit.class, bucket(limit))?;
        }
        writeln!(f, "admission budget        {}", bucket(&self.admission))?;
        writeln!(
            f,
            "reflection cap          {} per destination, {} in total",
            bucket(&self.reflection_per_destination),
            bucket(&self.reflection_total)
        )?;
        write!(
            f,
            "auth failures           {} in {} ban an address ({} if verified, {} ban one \
             phone for {}); {} open challenges at most",
            self.auth_max_failures,
            self.auth_window,
            self.auth_max_failures_verified,
            self.auth_max_flow_failures,
            self.flow_ban,
            self.auth_max_unanswered
        )
    }
}

fn bucket_text(l: &LimitView) -> String {
    if l.rate == "unlimited" {
        "unlimited".to_owned()
    } else {
        format!("{}, burst {}", l.rate, l.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse;

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
                "10/s",
                "5/s"
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
}
