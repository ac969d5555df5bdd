//! Which nets a decision may ban: none wider than the operator's prefix limits, none covering
//! the IPv4-mapped block (all of IPv4 to the kernel); a range inside it is the IPv4 net it names.
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::CrowdsecSection;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crowdsec::MAX_CROWDSEC_NETS;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
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
}
