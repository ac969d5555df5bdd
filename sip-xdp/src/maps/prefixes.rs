//! The prefix buckets (`PREFIXES`, an LRU hash of [`SourceState`] per prefix) and the durable
//! prefix bans (`PREFIX_BANS`, like `BANS` for sources), keyed by [`PrefixKey`]: the masked
//! address in the 16-byte form of source keys and the prefix length in that form.
use std::net::IpAddr;

use ipnet::IpNet;
use sip_xdp_common::{DurableBan, PrefixKey, SourceState, global_buckets, map_names, prefix_mask};

use super::{MapsError, SipMaps, absent_is_false, addr_key, key_addr, map_err};

/// The key of a prefix: its address masked to its length, the length in the 128-bit form
/// (an IPv4 /24 is 120).
pub fn prefix_key(net: IpNet) -> PrefixKey {
    let net = net.trunc();
    let prefix_len = match net {
        IpNet::V4(v4) => 96 + v4.prefix_len(),
        IpNet::V6(v6) => v6.prefix_len(),
    };
    let mask = prefix_mask(prefix_len);
    let mut addr = addr_key(net.addr());
    for (byte, mask) in addr.iter_mut().zip(mask) {
        *byte &= mask;
    }
    PrefixKey {
        addr,
        prefix_len,
        _pad: [0; 7],
    }
}

/// The CIDR a prefix key stands for (`198.51.100.0/24`, `2001:db8:1::/64`); `None` for a length
/// no key of this build has (an IPv4 key shorter than /0, a length past 128).
pub fn prefix_net(key: &PrefixKey) -> Option<IpNet> {
    let len = key.prefix_len;
    match key_addr(key.addr) {
        IpAddr::V4(v4) if (96..=128).contains(&len) => IpNet::new(IpAddr::V4(v4), len - 96).ok(),
        IpAddr::V4(_) => None,
        addr @ IpAddr::V6(_) => IpNet::new(addr, len).ok(),
    }
    .map(|net| net.trunc())
}

impl SipMaps {
    /// Every prefix bucket the program tracks, with its ban fields.
    pub fn prefixes(&self) -> Result<Vec<(PrefixKey, SourceState)>, MapsError> {
        self.prefixes
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::PREFIXES)))
            .collect()
    }

    /// One prefix's bucket and ban fields, if the program tracks it.
    pub fn prefix(&self, key: &PrefixKey) -> Result<Option<SourceState>, MapsError> {
        match self.prefixes.get(key, 0) {
            Ok(state) => Ok(Some(state)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::PREFIXES)(e)),
        }
    }

    /// One prefix's durable ban record, if it has one.
    pub fn prefix_ban(&self, key: &PrefixKey) -> Result<Option<DurableBan>, MapsError> {
        match self.prefix_bans.get(key, 0) {
            Ok(ban) => Ok(Some(ban)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::PREFIX_BANS)(e)),
        }
    }

    /// Capacity of `PREFIXES`.
    pub fn prefixes_capacity(&self) -> u32 {
        self.prefixes_capacity
    }

    /// The durable prefix bans and strike histories.
    pub fn prefix_bans(&self) -> Result<Vec<(PrefixKey, DurableBan)>, MapsError> {
        self.prefix_bans
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::PREFIX_BANS)))
            .collect()
    }

    /// Capacity of `PREFIX_BANS`.
    pub fn prefix_bans_capacity(&self) -> u32 {
        self.prefix_bans_capacity
    }

    /// Writes a prefix's ban record (restoring saved bans after a reboot). The program's
    /// latest prefix-ban end is raised first, so a packet that could find the record also
    /// finds the early prefix check on.
    pub fn set_prefix_ban(
        &mut self,
        key: &PrefixKey,
        record: &DurableBan,
    ) -> Result<(), MapsError> {
        self.raise_prefix_bans_until(record.banned_until_ns)?;
        self.prefix_bans
            .insert(key, record, 0)
            .map_err(map_err(map_names::PREFIX_BANS))
    }

    /// The program's latest prefix-ban end (`global_buckets::PREFIX_BANS_UNTIL`): no prefix
    /// ban can be in force at or after it.
    pub fn prefix_bans_until(&self) -> Result<u64, MapsError> {
        self.global_buckets
            .get(&global_buckets::PREFIX_BANS_UNTIL, 0)
            .map_err(map_err(map_names::GLOBAL_BUCKETS))
    }

    /// Sets the latest prefix-ban end to `until_ns`, lower or higher. Lowering it below a ban
    /// in force switches that ban's check before the payload off: only `cargo xtask bench`
    /// does it, to measure the path with and without a prefix ban in force in one run.
    #[doc(hidden)]
    pub fn set_prefix_bans_until_for_measurement(
        &mut self,
        until_ns: u64,
    ) -> Result<(), MapsError> {
        self.global_buckets
            .set(global_buckets::PREFIX_BANS_UNTIL, until_ns, 0)
            .map_err(map_err(map_names::GLOBAL_BUCKETS))
    }

    /// Raises the latest prefix-ban end to `until_ns`; never lowers it.
    pub fn raise_prefix_bans_until(&mut self, until_ns: u64) -> Result<(), MapsError> {
        if self.prefix_bans_until()? < until_ns {
            self.global_buckets
                .set(global_buckets::PREFIX_BANS_UNTIL, until_ns, 0)
                .map_err(map_err(map_names::GLOBAL_BUCKETS))?;
        }
        Ok(())
    }

    /// Raises the latest prefix-ban end to cover every record in `PREFIX_BANS`: a record left
    /// by an earlier load (or a `GLOBAL_BUCKETS` rebuilt on a layout change) is then enforced
    /// before the payload like the program's own.
    pub(crate) fn cover_prefix_ban_records(&mut self) -> Result<(), MapsError> {
        let latest = self
            .prefix_bans()?
            .iter()
            .map(|(_, record)| record.banned_until_ns)
            .max()
            .unwrap_or(0);
        self.raise_prefix_bans_until(latest)
    }

    /// Removes a prefix's ban record only; `false` when there was none.
    pub fn forget_prefix_ban(&mut self, key: &PrefixKey) -> Result<bool, MapsError> {
        absent_is_false(self.prefix_bans.remove(key), map_names::PREFIX_BANS)
    }

    /// Removes a prefix's bucket only (its ban record stays, and the program rebuilds the
    /// bucket from it at the prefix's next packet).
    pub fn forget_prefix_tracked(&mut self, key: &PrefixKey) -> Result<bool, MapsError> {
        absent_is_false(self.prefixes.remove(key), map_names::PREFIXES)
    }

    /// Lifts a prefix's ban and forgets its strikes: its record in `PREFIX_BANS` and its bucket
    /// in `PREFIXES`. True when either existed.
    pub fn forget_prefix(&mut self, key: &PrefixKey) -> Result<bool, MapsError> {
        let banned = self.forget_prefix_ban(key)?;
        let tracked = self.forget_prefix_tracked(key)?;
        Ok(banned || tracked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_keys_round_trip_as_cidrs() {
        let key = prefix_key(net("198.51.100.77/24"));
        assert_eq!(key.prefix_len, 120);
        assert_eq!(key.addr, sip_xdp_common::ipv4_mapped([198, 51, 100, 0]));
        assert_eq!(prefix_net(&key), Some(net("198.51.100.0/24")));

        let key = prefix_key(net("2001:db8:1:0:abcd::1/64"));
        assert_eq!(key.prefix_len, 64);
        assert_eq!(&key.addr[8..], &[0; 8]);
        assert_eq!(prefix_net(&key), Some(net("2001:db8:1::/64")));
        let key = prefix_key(net("2001:db8:1:ff00::/48"));
        assert_eq!(prefix_net(&key), Some(net("2001:db8:1::/48")));

        // A key the program masked itself: host bits of the address already clear.
        let mut addr = sip_xdp_common::ipv4_mapped([203, 0, 113, 0]);
        addr[15] = 0;
        let kernel = PrefixKey {
            addr,
            prefix_len: 120,
            _pad: [0; 7],
        };
        assert_eq!(prefix_net(&kernel), Some(net("203.0.113.0/24")));
        // Lengths no key has.
        let bad = PrefixKey {
            prefix_len: 129,
            ..kernel
        };
        assert_eq!(prefix_net(&bad), None);
        let bad = PrefixKey {
            prefix_len: 64,
            ..kernel
        };
        assert_eq!(prefix_net(&bad), None);
    }
}
