//! `[prefixes]`: the buckets every IPv4 /24 and IPv6 /64 and /48 (the lengths configurable)
//! shares among its unverified sources, on top of each source's own, so that a flood spread
//! over the addresses of one prefix is banned as that prefix.
use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, SeqAccess, Visitor},
};
use sip_xdp_common::{
    Config, LimitClass, PREFIX_LEVEL_IPV4, PREFIX_LEVELS, RateLimit, prefix_mask,
};

use super::{
    limits::{LimitsSection, de_limits, limits_of},
    parse::{IntInRange, int_in_range},
};

/// The IPv6 prefix levels at most (the kernel's levels past the IPv4 one).
pub const MAX_IPV6_PREFIX_LEVELS: usize = PREFIX_LEVELS - 1;
/// The widest IPv4 prefix a bucket may cover: a /8 is already a whole registry block.
const MIN_IPV4_PREFIX: u8 = 8;
/// The widest IPv6 prefix a bucket may cover (a /16 spans many providers).
const MIN_IPV6_PREFIX: u8 = 16;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [prefixes] table")]
pub struct PrefixesSection {
    /// The IPv4 prefix length of a bucket (8..=32), 0 for none.
    #[serde(deserialize_with = "de_ipv4_prefix")]
    pub ipv4: u8,
    /// The IPv6 prefix lengths (16..=128, distinct), at most [`MAX_IPV6_PREFIX_LEVELS`]; each
    /// is a bucket of its own, drawn in this order.
    #[serde(deserialize_with = "de_ipv6_prefixes")]
    pub ipv6: Vec<u8>,
    /// One bucket per class, as in `[limits]`; "unlimited" means the class draws from no
    /// prefix bucket.
    #[serde(deserialize_with = "de_prefix_limits")]
    pub limits: LimitsSection,
}

fn default_prefix_limits() -> LimitsSection {
    limits_of(&Config::DEFAULT.prefix_limits)
}

impl Default for PrefixesSection {
    fn default() -> Self {
        let lens = Config::DEFAULT.prefix_lens;
        Self {
            ipv4: lens[PREFIX_LEVEL_IPV4].saturating_sub(96),
            ipv6: lens
                .iter()
                .enumerate()
                .filter(|&(level, &len)| level != PREFIX_LEVEL_IPV4 && len != 0)
                .map(|(_, &len)| len)
                .collect(),
            limits: default_prefix_limits(),
        }
    }
}

impl PrefixesSection {
    /// The kernel's levels in the 128-bit form of keys: the IPv4 level first (its length + 96),
    /// then the IPv6 ones; 0 for a level that is off.
    pub fn prefix_lens(&self) -> [u8; PREFIX_LEVELS] {
        let mut lens = [0u8; PREFIX_LEVELS];
        if self.ipv4 != 0 {
            lens[PREFIX_LEVEL_IPV4] = 96 + self.ipv4.min(32);
        }
        let ipv6_levels = (0..PREFIX_LEVELS).filter(|&level| level != PREFIX_LEVEL_IPV4);
        for (level, &len) in ipv6_levels.zip(&self.ipv6) {
            lens[level] = len.min(128);
        }
        lens
    }

    /// The mask of each level, as the program expects it beside `prefix_lens`.
    pub fn prefix_masks(&self) -> [[u8; 16]; PREFIX_LEVELS] {
        self.prefix_lens().map(prefix_mask)
    }

    pub fn rate_limits(&self) -> [RateLimit; LimitClass::COUNT] {
        self.limits.rate_limits()
    }

    /// True when no level is on: no source draws from a prefix bucket.
    pub fn is_off(&self) -> bool {
        self.ipv4 == 0 && self.ipv6.is_empty()
    }
}

fn de_ipv4_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let len: u8 = int_in_range(d, 0, 32, "")?;
    if len != 0 && len < MIN_IPV4_PREFIX {
        return Err(de::Error::custom(format!(
            "must be 0 (no IPv4 prefix bucket) or between {MIN_IPV4_PREFIX} and 32, got {len} (a \
             prefix wider than /{MIN_IPV4_PREFIX} spans many networks: one flood would ban them \
             all)"
        )));
    }
    Ok(len)
}

/// One length inside `ipv6`, checked in its own visitor so the error points at the element.
struct Ipv6PrefixValue(u8);

impl<'de> Deserialize<'de> for Ipv6PrefixValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let len = d.deserialize_i64(IntInRange {
            lead: "must only hold prefix lengths",
            min: i64::from(MIN_IPV6_PREFIX),
            max: 128,
            zero_note: " (leave a level out of the list to turn it off)",
        })?;
        u8::try_from(len).map(Ipv6PrefixValue).map_err(|_| {
            de::Error::custom(format!(
                "must only hold prefix lengths between {MIN_IPV6_PREFIX} and 128, got {len}"
            ))
        })
    }
}

struct Ipv6PrefixesVisitor;

impl<'de> Visitor<'de> for Ipv6PrefixesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a list of 0 to {MAX_IPV6_PREFIX_LEVELS} IPv6 prefix lengths, such as [64, 48]"
        )
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut lens: Vec<u8> = Vec::new();
        while let Some(Ipv6PrefixValue(len)) = seq.next_element()? {
            if lens.contains(&len) {
                return Err(de::Error::custom(format!(
                    "must list each prefix length once, {len} appears twice"
                )));
            }
            lens.push(len);
        }
        if lens.len() > MAX_IPV6_PREFIX_LEVELS {
            return Err(de::Error::custom(format!(
                "must list at most {MAX_IPV6_PREFIX_LEVELS} prefix lengths (the program keeps \
                 no more IPv6 levels), got {}",
                lens.len()
            )));
        }
        Ok(lens)
    }
}

fn de_ipv6_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_seq(Ipv6PrefixesVisitor)
}

fn de_prefix_limits<'de, D: Deserializer<'de>>(d: D) -> Result<LimitsSection, D::Error> {
    de_limits(d, &default_prefix_limits())
}

#[cfg(test)]
mod tests {
    use sip_xdp_common::{Config, LimitClass, PREFIX_LEVELS, RateLimit, prefix_mask};

    use crate::config::{
        Settings,
        kernel::describe_kernel,
        tests::{at, parse, reject},
    };

    #[test]
    fn defaults_are_the_programs() {
        let s = Settings::default();
        assert_eq!(s.datapath.tcp_ports, vec![5060, 5061]);
        assert_eq!(
            (s.prefixes.ipv4, s.prefixes.ipv6.clone()),
            (24, vec![64, 48])
        );
        let k = s.kernel_config();
        let d = Config::DEFAULT;
        assert_eq!(k.tcp_ports, d.tcp_ports);
        assert_eq!(k.prefix_lens, d.prefix_lens);
        assert_eq!(k.prefix_lens, [120, 64, 48]);
        assert_eq!(k.prefix_masks, d.prefix_masks);
        assert_eq!(k.prefix_limits, d.prefix_limits);
        assert_eq!(
            k.prefix_limits[LimitClass::KeepAlive as usize],
            RateLimit::UNLIMITED
        );
        let connection = LimitClass::Connection as usize;
        assert_eq!(k.limits[connection], d.limits[connection]);
        assert_eq!(k.limits[connection], RateLimit::per_second(5, 50));
        assert_eq!(k.verified_limits[connection], d.verified_limits[connection]);
        assert_eq!(
            k.verified_limits[connection],
            RateLimit::per_second(50, 500)
        );
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    }

    #[test]
    fn every_prefix_and_tcp_key_reaches_the_kernel_config() {
        let s = parse(
            "[datapath]\ntcp_ports = [5060, 5061, 8443]\n\
             [limits.connection]\nrate = \"2/s\"\nburst = 9\n\
             [answers.verified_limits.connection]\nrate = \"30/s\"\n\
             [prefixes]\nipv4 = 22\nipv6 = [56]\n\
             [prefixes.limits.register]\nrate = \"7/s\"\nburst = 70\n\
             [prefixes.limits.keepalive]\nrate = \"100/s\"\nburst = 300\n\
             [prefixes.limits.connection]\nrate = \"unlimited\"\n",
        )
        .unwrap();
        let k = s.kernel_config();
        assert_eq!(k.tcp_ports, [5060, 5061, 8443, 0, 0, 0, 0, 0]);
        let connection = LimitClass::Connection as usize;
        assert_eq!(k.limits[connection], RateLimit::per_second(2, 9));
        // A partial table keeps its class's verified default burst.
        assert_eq!(
            k.verified_limits[connection],
            RateLimit::per_second(30, 500)
        );
        assert_eq!(k.prefix_lens, [96 + 22, 56, 0]);
        for level in 0..PREFIX_LEVELS {
            assert_eq!(k.prefix_masks[level], prefix_mask(k.prefix_lens[level]));
        }
        assert_eq!(k.prefix_masks[2], [0; 16]);
        let p = &k.prefix_limits;
        assert_eq!(
            p[LimitClass::Register as usize],
            RateLimit::per_second(7, 70)
        );
        assert_eq!(
            p[LimitClass::KeepAlive as usize],
            RateLimit::per_second(100, 300)
        );
        assert_eq!(p[connection], RateLimit::UNLIMITED);
        // Untouched classes keep the program's prefix defaults.
        assert_eq!(
            p[LimitClass::Invite as usize],
            Config::DEFAULT.prefix_limits[LimitClass::Invite as usize]
        );

        // What `status` prints of it.
        let view = describe_kernel(&k);
        assert_eq!(view.tcp_ports, vec![5060, 5061, 8443]);
        assert_eq!(view.prefix_levels(), "/22 /56");
        let text = view.to_string();
        for line in [
            "tcp ports               5060, 5061, 8443",
            "prefix buckets          /22 /56",
            "prefix register         7/s, burst 70",
            "prefix connection       unlimited",
            "limit connection        2/s, burst 9",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["prefix_ipv4"], 22);
        assert_eq!(json["prefix_ipv6"][0], 56);
        assert_eq!(json["tcp_ports"][2], 8443);

        // `config show` writes it back in a form that reads the same.
        let shown = s.to_toml();
        for needle in [
            "tcp_ports = [5060, 5061, 8443]",
            "[prefixes.limits.connection]",
            "ipv4 = 22",
        ] {
            assert!(shown.contains(needle), "no {needle:?} in\n{shown}");
        }
        assert_eq!(parse(&shown).unwrap(), s, "{shown}");
    }

    #[test]
    fn levels_and_tcp_turn_off_and_say_so() {
        let s = parse("[datapath]\ntcp_ports = []\n[prefixes]\nipv4 = 0\nipv6 = []\n").unwrap();
        assert!(s.prefixes.is_off());
        let k = s.kernel_config();
        assert_eq!(k.tcp_ports, [0; 8]);
        assert_eq!(k.prefix_lens, [0; PREFIX_LEVELS]);
        assert_eq!(k.prefix_masks, [[0; 16]; PREFIX_LEVELS]);
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .contains("datapath.tcp_ports is empty: SIP over TCP and TLS is not inspected"),
            "{warnings:?}"
        );
        let view = describe_kernel(&k);
        assert_eq!(view.prefix_levels(), "off");
        let text = view.to_string();
        assert!(text.contains("tcp ports               none"), "{text}");
        assert!(text.contains("prefix buckets          off"), "{text}");
        assert!(!text.contains("prefix register"), "{text}");

        // A level no wider than the source key holds one source: said, not refused.
        let s = parse("[sip]\nipv6_source_prefix = 64\n").unwrap();
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("prefixes.ipv6 lists /64"),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_ports_and_prefixes_are_refused_at_their_line() {
        #[rustfmt::skip]
        let cases: &[(&str, usize, usize, &str)] = &[
            ("[datapath]\ntcp_ports = [5061, 0]\n", 2, 20, "datapath.tcp_ports must only hold ports between 1 and 65535, got 0"),
            ("[datapath]\ntcp_ports = [5060, 5060]\n", 2, 13, "5060 appears twice"),
            ("[datapath]\ntcp_ports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n", 2, 13, "at most 8 ports"),
            ("[datapath]\ntcp_ports = [65536]\n", 2, 14, "got 65536"),
            ("[datapath]\ntcp_ports = 5060\n", 2, 13, "a list of 0 to 8 TCP ports"),
            ("[prefixes]\nipv4 = 7\n", 2, 8, "prefixes.ipv4 must be 0 (no IPv4 prefix bucket) or between 8 and 32, got 7"),
            ("[prefixes]\nipv4 = 33\n", 2, 8, "prefixes.ipv4 must be between 0 and 32, got 33"),
            ("[prefixes]\nipv6 = [64, 64]\n", 2, 8, "64 appears twice"),
            ("[prefixes]\nipv6 = [8]\n", 2, 9, "prefixes.ipv6 must only hold prefix lengths between 16 and 128, got 8"),
            ("[prefixes]\nipv6 = [0]\n", 2, 9, "leave a level out"),
            ("[prefixes]\nipv6 = [129]\n", 2, 9, "got 129"),
            ("[prefixes]\nipv6 = [64, 56, 48]\n", 2, 8, "at most 2 prefix lengths"),
            ("[prefixes]\nipv6 = 64\n", 2, 8, "a list of 0 to 2 IPv6 prefix lengths"),
            ("[prefixes.limits.register]\nburst = 0\n", 2, 9, "prefixes.limits.register.burst must be between 1"),
            ("[prefixes.limits.register]\nrate = \"fast\"\n", 2, 8, "prefixes.limits.register.rate must be a rate"),
            ("[prefixes.limits.tcp]\nrate = \"1/s\"\n", 1, 18, "prefixes.limits.tcp"),
            ("[limits.connection]\nburst = 0\n", 2, 9, "limits.connection.burst must be between 1"),
            ("[prefixes]\nipv5 = 1\n", 2, 1, "`prefixes.ipv5`"),
        ];
        for &(text, line, column, needle) in cases {
            let (location, message) = reject(text);
            assert!(message.contains(needle), "{text:?}: {message}");
            assert_eq!(location, at(line, column), "{text:?}: {message}");
        }
    }
}
