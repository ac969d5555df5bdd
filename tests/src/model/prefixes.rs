//! Prefix aggregates: the buckets every prefix of a level (an IPv4 /24, IPv6 /64 and /48 by
//! default) shares among its unverified sources, and the bans of the prefixes that run them dry.
//!
//! A prefix's state lives in `PREFIXES` (an LRU, a `SourceState` whose `verified_until_ns` and
//! `flow_bans_until_ns` stay 0) and its ban, with its strikes, in `PREFIX_BANS` (durable, like
//! `BANS`), which brings it back when the LRU evicted the prefix.
//!
//! The order, as the program is specified:
//! - before the payload is read, an unverified source in a banned prefix is dropped
//!   ([`Verdict::DropBanned`](sip_xdp_common::Verdict), counted in the class known then), unless
//!   it is allowlisted or protected ([`Model::prefix_banned`]);
//! - after its own bucket (and admission) let an unverified source's packet through, the packet
//!   draws from each level's bucket of its class; a dry one bans the prefix
//!   ([`Verdict::DropPrefix`](sip_xdp_common::Verdict)), except for a protected source, which
//!   passes ([`Model::prefix_buckets_dry`]).
//!
//! Readings of the spec where it leaves a choice (the lead aligns the kernel or the model):
//! - a protected source meeting a dry prefix bucket passes that level as if it had conformed:
//!   the levels after it are still drawn (the kernel's reading too), and the rest of its path
//!   goes on (a new source's state is made);
//! - a restored prefix whose ban is over but not decayed is drawn from as an existing state
//!   (counted, its expiry reported, then GCRA on its zeroed buckets);
//! - "verified" for the early check and for the draws is the same: `ANSWERS` on and now before
//!   the source's `verified_until_ns` (its entry's copy if tracked, else `VERIFIED`'s).
use sip_xdp_common::{
    Config, DurableBan, EventCounter, LimitClass, PREFIX_LEVEL_IPV4, PREFIX_LEVELS, PrefixKey,
    SourceState, ban_event_kind, ban_flags, flags,
};

use super::{Datagram, Model, Mutant, ban_event, count_packet, escalate, gcra, restored};

/// The levels that apply to a source: the IPv4 one, or the IPv6 ones in order.
fn levels(is_ipv4: bool) -> std::ops::Range<usize> {
    if is_ipv4 {
        PREFIX_LEVEL_IPV4..PREFIX_LEVEL_IPV4 + 1
    } else {
        PREFIX_LEVEL_IPV4 + 1..PREFIX_LEVELS
    }
}

/// The key of `src` (16-byte form) at `level`: the address masked with the level's mask.
pub fn prefix_key(cfg: &Config, src: &[u8; 16], level: usize) -> PrefixKey {
    let mut addr = *src;
    for (b, m) in addr.iter_mut().zip(cfg.prefix_masks[level]) {
        *b &= m;
    }
    PrefixKey {
        addr,
        prefix_len: cfg.prefix_lens[level],
        _pad: [0; 7],
    }
}

/// The prefixes of `src` whose levels are on (`prefix_lens` not 0), in the order they are
/// checked.
pub fn prefix_keys(cfg: &Config, src: &[u8; 16], is_ipv4: bool) -> Vec<PrefixKey> {
    levels(is_ipv4)
        .filter(|&level| cfg.prefix_lens[level] != 0)
        .map(|level| prefix_key(cfg, src, level))
        .collect()
}

impl Model {
    /// Whether the source counts as verified for its prefixes: its tracked entry's copy of the
    /// verification, else `VERIFIED`'s (only with `ANSWERS`).
    fn verified_for_prefixes(&self, cfg: &Config, key: &[u8; 16], now: u64) -> bool {
        let verified_until_ns = match self.sources.get(key) {
            Some(state) => state.verified_until_ns,
            None => self.verified_until(cfg, key),
        };
        Self::is_verified(cfg, verified_until_ns, now)
    }

    /// A prefix missing from `PREFIXES` whose ban or strikes are still in `PREFIX_BANS` comes
    /// back with them (full buckets, no counts); a record whose strikes decayed is removed.
    /// True when it restored one.
    fn restore_prefix(&mut self, cfg: &Config, key: &PrefixKey, now: u64) -> bool {
        if self.prefixes.contains_key(key) {
            return false;
        }
        let Some(record) = self.prefix_bans.get(key).copied() else {
            return false;
        };
        if now > record.banned_until_ns && now - record.banned_until_ns > cfg.strike_decay_ns {
            self.prefix_bans.remove(key);
            return false;
        }
        self.prefixes.insert(*key, restored(&record, now));
        self.events[EventCounter::BansRestored as usize] += 1;
        true
    }

    /// Step 1b: whether an unverified source's prefix is banned, which drops the packet before
    /// its payload is read (an allowlisted or protected source is not dropped by it). Looks up
    /// (and restores) the prefix of every level on the way.
    pub(crate) fn prefix_banned(
        &mut self,
        cfg: &Config,
        d: &Datagram,
        key: &[u8; 16],
        now: u64,
    ) -> bool {
        // A tracked verified source skips the prefixes; an untracked one has them looked up
        // (and restored) like any other, and is exempt only from a ban that holds.
        if self
            .sources
            .get(key)
            .is_some_and(|state| Self::is_verified(cfg, state.verified_until_ns, now))
        {
            return false;
        }
        // No recorded prefix ban lies ahead: the kernel skips the lookups (and restores).
        if now >= self.prefix_bans_until {
            return false;
        }
        for prefix in prefix_keys(cfg, &d.src, d.is_ipv4) {
            self.restore_prefix(cfg, &prefix, now);
            let banned = self
                .prefixes
                .get_mut(&prefix)
                .is_some_and(|state| Self::ban_holds(cfg, state, now));
            if !banned {
                continue;
            }
            let exempt = self.verified_for_prefixes(cfg, key, now)
                || (self.mutant != Mutant::PrefixBanIgnoresAllowlist
                    && self.allowlist.lookup(&d.src).is_some())
                || self.protected.lookup(&d.src).is_some();
            if exempt {
                continue;
            }
            let mutant = self.mutant;
            let state = self.prefixes.get_mut(&prefix).expect("banned, looked up");
            count_packet(state, now);
            if Self::drop_banned(cfg, state, &cfg.prefix_limits, now, mutant) {
                let record = DurableBan::of(state);
                self.record_prefix_ban(prefix, record);
            }
            self.events[EventCounter::PrefixBannedDrops as usize] += 1;
            return true;
        }
        false
    }

    /// Step 3b, for an unverified source whose own bucket let the packet through: the packet
    /// draws from each level's bucket of `limit` (when that is limited). True when one ran dry:
    /// the prefix is banned and the packet dropped (`DropPrefix`); the levels after it are not
    /// drawn. A protected source passes a dry bucket, without a ban, on to the next level.
    pub(crate) fn prefix_buckets_dry(
        &mut self,
        cfg: &Config,
        d: &Datagram,
        limit: LimitClass,
        now: u64,
    ) -> bool {
        let rate = cfg.prefix_limits[limit as usize];
        if rate.interval_ns == 0 {
            return false;
        }
        for prefix in prefix_keys(cfg, &d.src, d.is_ipv4) {
            // A prefix the LRU lost comes back from its record (if its strikes have not
            // decayed); a ban in force found here raises the latest end, as the kernel does.
            if self.restore_prefix(cfg, &prefix, now) {
                let until = self.prefixes.peek(&prefix).map_or(0, |s| s.banned_until_ns);
                self.prefix_bans_until = self.prefix_bans_until.max(until);
            }
            let Some(state) = self.prefixes.get_mut(&prefix) else {
                let mut state = SourceState {
                    window_start_ns: now,
                    packets: 1,
                    window_packets: 1,
                    ..SourceState::default()
                };
                // A burst is at least one packet: the first conforms.
                state.tat_ns[limit as usize] = now + rate.interval_ns;
                self.prefixes.insert(prefix, state);
                continue;
            };
            count_packet(state, now);
            if state.ban_flags & ban_flags::EXPIRY_PENDING != 0 && now >= state.banned_until_ns {
                state.ban_flags &= !ban_flags::EXPIRY_PENDING;
                let event = ban_event(
                    prefix.addr,
                    prefix.prefix_len,
                    state,
                    ban_event_kind::EXPIRED,
                    now,
                );
                if let Some(record) = self.prefix_bans.get_mut(&prefix) {
                    record.ban_flags &= !ban_flags::EXPIRY_PENDING;
                }
                self.ban_events.push(event);
            }
            let state = self.prefixes.get_mut(&prefix).expect("looked up above");
            if gcra(&mut state.tat_ns[limit as usize], &rate, now) {
                continue;
            }
            if self.protected.lookup(&d.src).is_some() {
                continue;
            }
            state.dropped += 1;
            self.impose_prefix_ban(cfg, &prefix, limit as u8, now);
            return true;
        }
        false
    }

    /// Writes a prefix's record to `PREFIX_BANS` and raises the latest prefix-ban end, as the
    /// kernel's persist does.
    pub fn record_prefix_ban(&mut self, prefix: PrefixKey, record: DurableBan) {
        self.prefix_bans_until = self.prefix_bans_until.max(record.banned_until_ns);
        self.prefix_bans.insert(prefix, record);
    }

    /// Bans a prefix (its state must exist) with the escalation of a source's ban, records it in
    /// `PREFIX_BANS` and reports it.
    fn impose_prefix_ban(&mut self, cfg: &Config, prefix: &PrefixKey, ban_class: u8, now: u64) {
        let mutant = self.mutant;
        let state = self
            .prefixes
            .get_mut(prefix)
            .expect("the banned prefix's state");
        if mutant == Mutant::PrefixBansDoNotEscalate {
            state.banned_until_ns = 0;
        }
        let event = escalate(cfg, prefix.addr, prefix.prefix_len, state, ban_class, now);
        let record = DurableBan::of(state);
        self.record_prefix_ban(*prefix, record);
        self.count_ban(cfg);
        self.events[EventCounter::PrefixBans as usize] += 1;
        self.ban_events.push(event);
    }

    /// What the LRU does to a prefix under pressure: it is gone from `PREFIXES` (its ban record,
    /// if any, stays in `PREFIX_BANS`).
    pub fn evict_prefix(&mut self, key: &PrefixKey) {
        self.prefixes.remove(key);
    }

    /// A prefix forgotten wholly (its state and its ban), as lifting its ban does.
    pub fn forget_prefix(&mut self, key: &PrefixKey) {
        self.prefixes.remove(key);
        self.prefix_bans.remove(key);
    }

    /// Whether `src`'s prefix at some level is banned now (for the tests' bookkeeping).
    pub fn in_banned_prefix(&self, src: &[u8; 16], is_ipv4: bool, now: u64) -> bool {
        let cfg = self.effective_config();
        prefix_keys(&cfg, src, is_ipv4).iter().any(|key| {
            self.prefixes.peek(key).is_some_and(|state| {
                now < state.banned_until_ns
                    && (state.ban_flags & ban_flags::MONITOR_ONLY == 0
                        || cfg.has_flag(flags::MONITOR))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use sip_xdp_common::{
        BAN_CLASS_AUTH, LimitClass, MethodClass, RateLimit, Verdict, VerifiedSource, ipv4_mapped,
    };

    use super::*;
    use crate::{
        model::key_of,
        packet::{Frame, register, request, tcp_flags},
    };

    const SECOND_NS: u64 = 1_000_000_000;
    const HOUR_NS: u64 = 3600 * SECOND_NS;
    const NOW: u64 = 1_000 * SECOND_NS;

    fn slow(burst: u64) -> RateLimit {
        RateLimit::per_interval(1, HOUR_NS, burst)
    }

    /// Per-source REGISTER burst 5, the /24's burst 8, both refilling once an hour.
    fn cfg() -> Config {
        let mut cfg = Config::DEFAULT;
        cfg.limits = [slow(5); LimitClass::COUNT];
        cfg.prefix_limits = [slow(8); LimitClass::COUNT];
        cfg.prefix_limits[LimitClass::KeepAlive as usize] = RateLimit::UNLIMITED;
        cfg.ban_base_ns = HOUR_NS;
        cfg.ban_max_ns = 8 * HOUR_NS;
        cfg.ban_extend_ns = 2 * HOUR_NS;
        cfg
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reg(src: &str) -> Vec<u8> {
        let dst = if src.contains(':') {
            "2001:db8::ff"
        } else {
            "203.0.113.1"
        };
        Frame::sip(ip(src), ip(dst), &register("1", 1)).build()
    }

    fn net24(cfg: &Config, src: &str) -> PrefixKey {
        prefix_key(cfg, &key_of(ip(src)), PREFIX_LEVEL_IPV4)
    }

    #[test]
    fn a_spread_flood_bans_its_prefix() {
        let cfg = cfg();
        let mut m = Model::new(cfg);
        // Eight sources of one /24, one REGISTER each: the prefix's burst.
        for i in 1..=8 {
            let o = m.process(&reg(&format!("198.51.100.{i}")), NOW);
            assert_eq!(o.verdict, Verdict::Pass, "source {i}");
        }
        let o = m.process(&reg("198.51.100.9"), NOW);
        assert_eq!(
            (o.verdict, o.class),
            (Verdict::DropPrefix, MethodClass::Register)
        );
        // The new source keeps the state it made before its prefix's draw (its drop counts on
        // the prefix); the prefix is banned, recorded and reported.
        assert_eq!(m.sources[&key_of(ip("198.51.100.9"))].dropped, 0);
        let key = net24(&cfg, "198.51.100.9");
        assert_eq!(key.prefix_len, 120);
        assert_eq!(key.addr, ipv4_mapped([198, 51, 100, 0]));
        let state = *m.prefixes.peek(&key).unwrap();
        assert_eq!((state.packets, state.dropped, state.strikes), (9, 1, 1));
        assert_eq!(state.banned_until_ns, NOW + HOUR_NS);
        assert_eq!(m.prefix_bans[&key], DurableBan::of(&state));
        let events = std::mem::take(&mut m.ban_events);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (
                events[0].addr,
                events[0].prefix_len,
                events[0].limit_class,
                events[0].kind
            ),
            (
                key.addr,
                120,
                LimitClass::Register as u8,
                ban_event_kind::BAN
            )
        );
        assert_eq!(m.event(EventCounter::PrefixBans), 1);
        assert_eq!(m.event(EventCounter::BansIssued), 1);
        // Now every source of the /24 is dropped on its addresses: a UDP datagram unread, garbage
        // included, and TCP by its flags.
        let o = m.process(&reg("198.51.100.1"), NOW);
        assert_eq!(
            (o.verdict, o.class),
            (Verdict::DropBanned, MethodClass::Unread)
        );
        let garbage = Frame::sip(
            ip("198.51.100.77"),
            ip("203.0.113.1"),
            b"\x01\x02garbage garbage",
        )
        .build();
        let o = m.process(&garbage, NOW);
        assert_eq!(
            (o.verdict, o.class),
            (Verdict::DropBanned, MethodClass::Unread)
        );
        let syn = Frame::tcp(
            ip("198.51.100.5"),
            ip("203.0.113.1"),
            5061,
            tcp_flags::SYN,
            b"",
        )
        .build();
        assert_eq!(m.process(&syn, NOW).class, MethodClass::TcpSyn);
        assert_eq!(m.event(EventCounter::PrefixBannedDrops), 3);
        // Another /24 is not concerned.
        assert_eq!(m.process(&reg("198.51.101.1"), NOW).verdict, Verdict::Pass);
    }

    #[test]
    fn allowlisted_protected_and_verified_sources_pass_a_banned_prefix() {
        let mut cfg = cfg();
        cfg.flags |= flags::ANSWERS;
        cfg.admission = RateLimit::UNLIMITED;
        let mut m = Model::new(cfg);
        m.allow("198.51.100.200/32".parse().unwrap());
        m.protect("198.51.100.201/32".parse().unwrap());
        m.verified.insert(
            key_of(ip("198.51.100.202")),
            VerifiedSource {
                verified_until_ns: NOW + HOUR_NS,
                verified_since_ns: NOW,
                successes: 1,
            },
        );
        for i in 1..=9 {
            m.process(&reg(&format!("198.51.100.{i}")), NOW);
        }
        assert_eq!(m.event(EventCounter::PrefixBans), 1);
        let before = *m.prefixes.peek(&net24(&cfg, "198.51.100.1")).unwrap();
        assert_eq!(
            m.process(&reg("198.51.100.200"), NOW).verdict,
            Verdict::PassAllowlisted
        );
        // The protected source draws from the (dry) prefix bucket and passes, unbanned.
        assert_eq!(
            m.process(&reg("198.51.100.201"), NOW).verdict,
            Verdict::Pass
        );
        assert_eq!(
            m.process(&reg("198.51.100.202"), NOW).verdict,
            Verdict::Pass
        );
        let after = *m.prefixes.peek(&net24(&cfg, "198.51.100.1")).unwrap();
        assert_eq!(
            after.packets,
            before.packets + 1,
            "only the protected one drew"
        );
        assert_eq!(after.strikes, 1);
        assert_eq!(m.event(EventCounter::ProtectedDrops), 0);
        assert!(m.sources.contains_key(&key_of(ip("198.51.100.201"))));
        // A verified source never touches its prefix, even a banned one.
        assert!(m.sources[&key_of(ip("198.51.100.202"))].verified_until_ns > NOW);
    }

    #[test]
    fn a_rotation_inside_a_64_bans_the_64_then_its_48() {
        let cfg = cfg();
        let mut m = Model::new(cfg);
        for i in 1..=8u16 {
            let src = format!("2001:db8:7:1::{i:x}");
            assert_eq!(m.process(&reg(&src), NOW).verdict, Verdict::Pass);
        }
        let o = m.process(&reg("2001:db8:7:1::99"), NOW);
        assert_eq!(o.verdict, Verdict::DropPrefix);
        let events = std::mem::take(&mut m.ban_events);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].prefix_len, 64);
        // The /48 drew eight packets (not the one its /64 refused).
        let p48 = prefix_key(&cfg, &key_of(ip("2001:db8:7:1::1")), 2);
        assert_eq!(p48.prefix_len, 48);
        assert_eq!(m.prefixes.peek(&p48).unwrap().packets, 8);
        // Another /64 of the same /48: its first packet runs the /48 dry (its own /64 drew one).
        let o = m.process(&reg("2001:db8:7:2::1"), NOW);
        assert_eq!(o.verdict, Verdict::DropPrefix);
        let p64 = prefix_key(&cfg, &key_of(ip("2001:db8:7:2::1")), 1);
        assert_eq!(m.prefixes.peek(&p64).unwrap().packets, 1);
        assert_eq!(std::mem::take(&mut m.ban_events)[0].prefix_len, 48);
        // Every /64 of that /48 is dropped before its payload.
        let o = m.process(&reg("2001:db8:7:ffff::1"), NOW);
        assert_eq!(
            (o.verdict, o.class),
            (Verdict::DropBanned, MethodClass::Unread)
        );
    }

    #[test]
    fn prefix_bans_escalate_survive_eviction_and_expire() {
        let mut cfg = cfg();
        cfg.ban_factor = 3;
        let mut m = Model::new(cfg);
        for i in 1..=9 {
            m.process(&reg(&format!("198.51.100.{i}")), NOW);
        }
        let key = net24(&cfg, "198.51.100.1");
        let until = m.prefixes.peek(&key).unwrap().banned_until_ns;
        // Evicted: the next packet brings the ban back from PREFIX_BANS.
        m.evict_prefix(&key);
        let o = m.process(&reg("198.51.100.50"), NOW + 1);
        assert_eq!(
            (o.verdict, o.class),
            (Verdict::DropBanned, MethodClass::Unread)
        );
        assert_eq!(m.event(EventCounter::BansRestored), 1);
        let state = *m.prefixes.peek(&key).unwrap();
        assert_eq!((state.packets, state.dropped, state.strikes), (1, 1, 1));
        // After the ban: the first packet reports its end, then draws (the restored buckets are
        // full again), and the next dry bucket bans for three times as long.
        let later = until + 1;
        m.evict_prefix(&key);
        m.ban_events.clear();
        for i in 0..8 {
            let o = m.process(&reg(&format!("198.51.100.{}", 100 + i)), later);
            assert_eq!(o.verdict, Verdict::Pass, "packet {i}");
        }
        let events = std::mem::take(&mut m.ban_events);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].kind, events[0].prefix_len),
            (ban_event_kind::EXPIRED, 120)
        );
        assert_eq!(m.prefix_bans[&key].ban_flags & ban_flags::EXPIRY_PENDING, 0);
        assert_eq!(
            m.process(&reg("198.51.100.120"), later).verdict,
            Verdict::DropPrefix
        );
        let state = *m.prefixes.peek(&key).unwrap();
        assert_eq!((state.strikes, state.ban_duration_ns), (2, 3 * HOUR_NS));
        // Decayed: the record goes, nothing is restored.
        m.evict_prefix(&key);
        let decayed = state.banned_until_ns + cfg.strike_decay_ns + 1;
        assert_eq!(
            m.process(&reg("198.51.100.121"), decayed).verdict,
            Verdict::Pass
        );
        assert!(!m.prefix_bans.contains_key(&key));
        assert_eq!(m.prefixes.peek(&key).unwrap().strikes, 0);
    }

    #[test]
    fn bans_are_extended_from_their_own_class() {
        let cfg = cfg();
        let mut m = Model::new(cfg);
        let src = "198.51.100.1";
        // Banned on OPTIONS (burst 5), then REGISTERs keep coming: unknown class, they draw from
        // the OPTIONS bucket, dry, so the ban is extended.
        let options =
            Frame::sip(ip(src), ip("203.0.113.1"), &request("OPTIONS", "sip:a", 1)).build();
        for _ in 0..6 {
            m.process(&options, NOW);
        }
        let key = key_of(ip(src));
        assert_eq!(m.sources[&key].ban_class, LimitClass::Options as u8);
        let later = NOW + SECOND_NS * 10;
        assert_eq!(m.process(&reg(src), later).class, MethodClass::Unread);
        assert_eq!(m.sources[&key].banned_until_ns, later + 2 * HOUR_NS);
        // An auth ban draws from REGISTER's: full, so no extension.
        let other = key_of(ip("198.51.100.2"));
        m.process(&reg("198.51.100.2"), NOW);
        m.impose_ban(&cfg, other, BAN_CLASS_AUTH | 1, NOW);
        let until = m.sources[&other].banned_until_ns;
        m.process(&reg("198.51.100.2"), later);
        assert_eq!(m.sources[&other].banned_until_ns, until);
        assert_eq!(
            m.sources[&other].tat_ns[LimitClass::Register as usize],
            NOW + 2 * HOUR_NS
        );
    }

    #[test]
    fn syn_floods_ban_with_class_connection() {
        let cfg = cfg();
        let mut m = Model::new(cfg);
        let syn = Frame::tcp(
            ip("198.51.100.1"),
            ip("203.0.113.1"),
            5060,
            tcp_flags::SYN,
            b"",
        )
        .build();
        for _ in 0..5 {
            assert_eq!(m.process(&syn, NOW).verdict, Verdict::Pass);
        }
        let o = m.process(&syn, NOW);
        assert_eq!(
            (o.verdict, o.class),
            (Verdict::DropRate, MethodClass::TcpSyn)
        );
        let state = m.sources[&key_of(ip("198.51.100.1"))];
        assert_eq!(state.ban_class, LimitClass::Connection as u8);
        // An ACK of the same source: dropped by its flags alone.
        let ack = Frame::tcp(
            ip("198.51.100.1"),
            ip("203.0.113.1"),
            5060,
            tcp_flags::ACK,
            b"",
        )
        .build();
        assert_eq!(m.process(&ack, NOW).class, MethodClass::Tcp);
        // Segments that start no SIP message pass an unbanned source without state.
        let ack2 = Frame::tcp(
            ip("198.51.100.3"),
            ip("203.0.113.1"),
            5060,
            tcp_flags::ACK,
            b"",
        )
        .build();
        assert_eq!(m.process(&ack2, NOW).verdict, Verdict::Pass);
        assert!(!m.sources.contains_key(&key_of(ip("198.51.100.3"))));
    }
}
