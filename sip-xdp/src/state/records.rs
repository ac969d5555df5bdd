//! What the state file holds: the list records, the bans and their origins, and the edits the
//! CLI, the daemon and the feeds make to them.
use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Clocks, STATE_VERSION, SavedClock, SignatureState};
use crate::time::now_wall_secs;

/// A CIDR allowed through without rate limiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRecord {
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Unix seconds.
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A CIDR denied for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRecord {
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Unix seconds.
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Who put a ban in the ban list. Bans of different origins on the same net are kept apart, so
/// that fail2ban's unban or a deleted CrowdSec decision never lifts the operator's own ban.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BanOrigin {
    /// `sip-xdp ban add` by an operator.
    #[default]
    Manual,
    /// fail2ban's action (contrib/fail2ban/action.d/sip-xdp.conf).
    Fail2ban,
    /// A decision from a CrowdSec Local API.
    Crowdsec,
}

impl BanOrigin {
    pub const ALL: [BanOrigin; 3] = [BanOrigin::Manual, BanOrigin::Fail2ban, BanOrigin::Crowdsec];

    pub const fn name(self) -> &'static str {
        match self {
            BanOrigin::Manual => "manual",
            BanOrigin::Fail2ban => "fail2ban",
            BanOrigin::Crowdsec => "crowdsec",
        }
    }
}

impl std::fmt::Display for BanOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A ban from the ban list (not the rate limiter); it lives in the kernel's denylist until
/// `expires_at`. One record per (net, origin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListBan {
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Older files have no origin: their bans were all made with `sip-xdp ban add`.
    #[serde(default)]
    pub origin: BanOrigin,
    /// Unix seconds; the ban no longer applies from this second on.
    pub expires_at: u64,
    /// Unix seconds.
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A rate-limit ban the program imposed, saved so that a source's escalation (strikes, last
/// duration) survives a reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoBanRecord {
    /// The `SOURCES` key as an address (IPv4-mapped keys as IPv4; IPv6 already masked).
    pub addr: IpAddr,
    /// Unix seconds the ban ends.
    pub banned_until: u64,
    pub ban_duration_ns: u64,
    pub strikes: u32,
    pub limit_class: u8,
    pub monitor_only: bool,
}

/// A ban the program imposed on a whole prefix (`[prefixes]`), saved like [`AutoBanRecord`] so
/// its escalation survives a reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixBanRecord {
    /// The banned prefix (`198.51.100.0/24`, `2001:db8:1::/64`).
    #[serde(deserialize_with = "de_net")]
    pub net: IpNet,
    /// Unix seconds the ban ends.
    pub banned_until: u64,
    pub ban_duration_ns: u64,
    pub strikes: u32,
    pub limit_class: u8,
    pub monitor_only: bool,
}

/// Contents of `state.json`.
#[derive(Clone, Debug, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    #[serde(default)]
    pub allow: Vec<AllowRecord>,
    #[serde(default)]
    pub deny: Vec<DenyRecord>,
    /// Rate-limited, never banned (trunks, registrar peers, monitoring hosts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protected: Vec<AllowRecord>,
    #[serde(default)]
    pub bans: Vec<ListBan>,
    /// Bans ever added per origin (renewals included); the exporter serves it as a counter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bans_added: BTreeMap<BanOrigin, u64>,
    #[serde(default)]
    pub auto_bans: Vec<AutoBanRecord>,
    /// Prefix bans and their strikes; left out of the file while there are none, so a file
    /// without them still reads in a sip-xdp that knows no prefix bans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_bans: Vec<PrefixBanRecord>,
    /// Runtime signature edits (`sip-xdp signature add|del`) and the config lists they apply
    /// to; left out while there are none, like `prefix_bans`.
    #[serde(default, skip_serializing_if = "SignatureState::is_empty")]
    pub signatures: SignatureState,
    /// The clocks when the file was saved (written by every save): lets a restore tell how much
    /// time can have passed since, whatever the wall clock says now (see
    /// [`StateFile::clamp_restored_bans`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedClock>,
}

/// Equal contents; when the file was last saved does not count (every save rewrites it).
impl PartialEq for StateFile {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.allow == other.allow
            && self.deny == other.deny
            && self.protected == other.protected
            && self.bans == other.bans
            && self.bans_added == other.bans_added
            && self.auto_bans == other.auto_bans
            && self.prefix_bans == other.prefix_bans
            && self.signatures == other.signatures
    }
}

impl Default for StateFile {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            allow: Vec::new(),
            deny: Vec::new(),
            protected: Vec::new(),
            bans: Vec::new(),
            bans_added: BTreeMap::new(),
            auto_bans: Vec::new(),
            prefix_bans: Vec::new(),
            signatures: SignatureState::default(),
            saved: None,
        }
    }
}

/// Hand-edited files may hold a bare address where a CIDR belongs.
fn de_net<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpNet, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is neither a CIDR (10.0.0.0/8) nor an address"
        ))
    })
}

impl StateFile {
    /// `false` if `net` was already allowed (its record is left as it was).
    pub fn add_allow(&mut self, net: IpNet, comment: Option<String>) -> bool {
        let net = net.trunc();
        if self.allow.iter().any(|r| r.net == net) {
            return false;
        }
        self.allow.push(AllowRecord {
            net,
            added_at: now_wall_secs(),
            comment,
        });
        true
    }

    pub fn remove_allow(&mut self, net: IpNet) -> bool {
        remove_net(&mut self.allow, net.trunc(), |r| r.net)
    }

    /// `false` if `net` was already protected (its record is left as it was).
    pub fn add_protected(&mut self, net: IpNet, comment: Option<String>) -> bool {
        let net = net.trunc();
        if self.protected.iter().any(|r| r.net == net) {
            return false;
        }
        self.protected.push(AllowRecord {
            net,
            added_at: now_wall_secs(),
            comment,
        });
        true
    }

    pub fn remove_protected(&mut self, net: IpNet) -> bool {
        remove_net(&mut self.protected, net.trunc(), |r| r.net)
    }

    /// `false` if `net` was already denied (its record is left as it was).
    pub fn add_deny(&mut self, net: IpNet, comment: Option<String>) -> bool {
        let net = net.trunc();
        if self.deny.iter().any(|r| r.net == net) {
            return false;
        }
        self.deny.push(DenyRecord {
            net,
            added_at: now_wall_secs(),
            comment,
        });
        true
    }

    pub fn remove_deny(&mut self, net: IpNet) -> bool {
        remove_net(&mut self.deny, net.trunc(), |r| r.net)
    }

    /// Bans `net` on behalf of `origin` until `expires_at` (unix seconds). An existing ban of the
    /// same net and origin is replaced, even by a shorter one: that origin's latest word wins.
    /// Bans of other origins are left alone.
    pub fn add_ban(
        &mut self,
        net: IpNet,
        origin: BanOrigin,
        expires_at: u64,
        reason: Option<String>,
    ) {
        let net = net.trunc();
        let ban = ListBan {
            net,
            origin,
            expires_at,
            added_at: now_wall_secs(),
            reason,
        };
        *self.bans_added.entry(origin).or_default() += 1;
        match self
            .bans
            .iter_mut()
            .find(|b| b.net == net && b.origin == origin)
        {
            Some(existing) => *existing = ban,
            None => self.bans.push(ban),
        }
    }

    /// Lifts `origin`'s ban of exactly `net`; `false` if it had none.
    pub fn remove_ban(&mut self, net: IpNet, origin: BanOrigin) -> bool {
        let net = net.trunc();
        let before = self.bans.len();
        self.bans.retain(|b| !(b.net == net && b.origin == origin));
        self.bans.len() != before
    }

    /// The live bans of `net` (any origin) at `now_wall`, longest first.
    pub fn bans_of(&self, net: IpNet, now_wall: u64) -> Vec<&ListBan> {
        let net = net.trunc();
        let mut bans: Vec<&ListBan> = self
            .bans
            .iter()
            .filter(|b| b.net == net && b.expires_at > now_wall)
            .collect();
        bans.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
        bans
    }

    /// Drops the bans that ended at or before `now_wall` (unix seconds); returns their nets.
    pub fn prune_expired_bans(&mut self, now_wall: u64) -> Vec<IpNet> {
        let mut pruned = Vec::new();
        self.bans.retain(|b| {
            let live = b.expires_at > now_wall;
            if !live {
                pruned.push(b.net);
            }
            live
        });
        pruned
    }

    pub fn set_auto_bans(&mut self, auto_bans: Vec<AutoBanRecord>) {
        self.auto_bans = auto_bans;
    }

    pub fn set_prefix_bans(&mut self, prefix_bans: Vec<PrefixBanRecord>) {
        self.prefix_bans = prefix_bans;
    }

    /// Forgets the saved prefix bans inside `net` (lifted by `ban del`, so that a restore does
    /// not bring them back); returns how many.
    pub fn remove_prefix_bans_in(&mut self, net: IpNet) -> usize {
        let net = net.trunc();
        let before = self.prefix_bans.len();
        self.prefix_bans.retain(|b| !net.contains(&b.net));
        before - self.prefix_bans.len()
    }

    /// The kernel DENYLIST entry `net` must have: `Some(expires_at_ns)` (monotonic, 0 = never)
    /// or `None` for no entry. A permanent deny wins over a ban of the same net; a ban that ended
    /// at or before `now_wall` counts as absent.
    pub fn denylist_value(&self, net: &IpNet, now_wall: u64) -> Option<u64> {
        self.denylist_value_at(net, now_wall, Clocks::now())
    }

    pub(super) fn denylist_value_at(
        &self,
        net: &IpNet,
        now_wall: u64,
        clocks: Clocks,
    ) -> Option<u64> {
        let net = net.trunc();
        if self.deny.iter().any(|r| r.net == net) {
            return Some(0);
        }
        // Bans of several origins on one net: the kernel entry lasts as long as the longest.
        let expires_at = self
            .bans
            .iter()
            .filter(|b| b.net == net && b.expires_at > now_wall)
            .map(|b| b.expires_at)
            .max()?;
        // 0 would mean "never" to the kernel.
        Some(clocks.wall_to_mono_ns(expires_at).max(1))
    }

    /// Every DENYLIST entry the kernel must have, deny and live bans merged as in
    /// [`StateFile::denylist_value`], converted with one clock reading.
    pub fn denylist_entries(&self, now_wall: u64) -> Vec<(IpNet, u64)> {
        let clocks = Clocks::now();
        // One pass, not one per net: this runs every reconcile, with feeds of many bans.
        let mut entries: BTreeMap<IpNet, u64> = BTreeMap::new();
        for ban in self.bans.iter().filter(|b| b.expires_at > now_wall) {
            let longest = entries.entry(ban.net).or_insert(0);
            *longest = (*longest).max(ban.expires_at);
        }
        for value in entries.values_mut() {
            // 0 would mean "never" to the kernel.
            *value = clocks.wall_to_mono_ns(*value).max(1);
        }
        for record in &self.deny {
            entries.insert(record.net, 0);
        }
        entries.into_iter().collect()
    }
}

fn remove_net<T>(records: &mut Vec<T>, net: IpNet, net_of: impl Fn(&T) -> IpNet) -> bool {
    let before = records.len();
    records.retain(|r| net_of(r) != net);
    records.len() != before
}
