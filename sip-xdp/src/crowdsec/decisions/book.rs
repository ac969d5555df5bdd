//! [`DecisionBook`]: the decisions held by id, folded into the bans to apply; a startup pull
//! replaces, a delta adds and deletes; the feed's quota keeps the longest bans.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use tracing::{info, warn};

use super::{
    screen::{FeedLimits, NetRefusal, Refused, screen_net},
    stream::{DecisionStream, StreamDecision, parse_go_duration},
};
use crate::control::OriginUpdate;

/// Distinct kinds of skipped decisions logged (each once); bounded against a hostile feed.
const MAX_NOTES: usize = 64;
const MAX_REASON_CHARS: usize = 160;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    net: IpNet,
    expires_at: u64,
    reason: String,
}

/// A change for [`Control::update_origin`](crate::control::Control::update_origin), and the
/// set of bans it leaves in force.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crowdsec::MAX_CROWDSEC_NETS;

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
}
