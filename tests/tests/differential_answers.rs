//! Differential test of the answers-aware datapath: the real XDP and TC egress programs
//! (through BPF_PROG_TEST_RUN) against the reference model (`sip_xdp_tests::model`) on generated
//! sequences of requests from a small population of clients and the server's answers to them.
//!
//! Each request's XDP action and (verdict, class) counter, each answer's TC action, every event
//! counter and every ban event must match the model; every few hundred steps (and at the end)
//! the per-source state, the verified table, the answer states, the flows and the prefix tables
//! (`PREFIXES`, `PREFIX_BANS`: the clients and the forged flood share a /24, whose bucket the
//! verified clients do not draw from) are compared whole.
//!
//! Time: buckets refill one token per hour and windows, verifications and open challenges last
//! minutes to hours, so nothing either side decides during a run depends on how fast it goes.
//! The model runs on one `now`; timestamps the kernel stores may be later by the run's length.
//!
//! Knobs (environment): `SIP_XDP_DIFF_ANSWER_STEPS` (steps per phase, default 6000),
//! `SIP_XDP_DIFF_SEED` (shared with the other differential test).
use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use ipnet::IpNet;
use sip_xdp::time::monotonic_now_ns;
use sip_xdp_common::{
    BanEvent, Config, DurableBan, EventCounter, LimitClass, MethodClass, PrefixKey, RateLimit,
    SourceState, Verdict, flags, map_names, packet_counter_index,
};
use sip_xdp_tests::{
    harness::Datapath,
    model::{Model, key_of},
    packet::{Frame, Ipv6Ext, request},
    rng::{DEFAULT_SEED, Rng, env_u64},
};

const SECOND_NS: u64 = 1_000_000_000;
const HOUR_NS: u64 = 3600 * SECOND_NS;
const DEFAULT_STEPS: u64 = 6_000;
const CHECK_EVERY: u64 = 500;
const CLOCK_SLACK_NS: u64 = 50_000_000;

const SERVER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 250);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0, 0, 0, 0, 0x10);
/// Clients: phones, guessers, scanners, an allowlisted and a protected one, IPv6 in one /64.
const CLIENTS: [&str; 8] = [
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.3",
    "198.51.100.4", // allowlisted
    "198.51.100.5", // protected
    "203.0.113.9",  // a scanner changing ports, never answered with a success
    "2001:db8:5::1",
    "2001:db8:5::2",
];
const PORTS: [u16; 4] = [5060, 5062, 6100, 40_000];
const METHODS: [&str; 6] = [
    "REGISTER",
    "INVITE",
    "OPTIONS",
    "SUBSCRIBE",
    "MESSAGE",
    "BYE",
];
const STATUSES: [u16; 14] = [
    100, 180, 200, 202, 401, 401, 407, 403, 404, 486, 487, 500, 603, 302,
];

fn slow(burst: u64) -> RateLimit {
    RateLimit::per_interval(1, HOUR_NS, burst)
}

/// Answers on, small thresholds so every mechanism fires within a run, slow buckets.
fn config(monitor: bool) -> Config {
    let mut cfg = Config::DEFAULT;
    cfg.flags |= flags::ANSWERS;
    if monitor {
        cfg.flags |= flags::MONITOR;
    }
    cfg.limits = [slow(12); LimitClass::COUNT];
    cfg.verified_limits = [slow(60); LimitClass::COUNT];
    cfg.admission = slow(60);
    cfg.reflection_per_destination = slow(25);
    cfg.reflection_total = slow(400);
    cfg.ban_base_ns = HOUR_NS;
    cfg.ban_max_ns = 16 * HOUR_NS;
    cfg.auth_window_ns = HOUR_NS;
    cfg.auth_max_failures = 4;
    cfg.auth_max_failures_verified = 12;
    cfg.auth_max_flow_failures = 3;
    cfg.auth_max_unanswered = 5;
    cfg.flow_ban_ns = HOUR_NS;
    cfg.ipv6_source_mask = [0xff; 16];
    // Unverified sources' requests spread over 198.51.100.0/24 run its buckets dry late in the
    // run; verified ones never draw from them.
    cfg.prefix_limits = [slow(PREFIX_BURST); LimitClass::COUNT];
    cfg
}

/// The prefix buckets' burst in [`config`].
const PREFIX_BURST: u64 = 90;

/// One generated step.
enum Step {
    /// A request at XDP.
    Request(Vec<u8>),
    /// A frame the server sends, at TC egress.
    Answer(Vec<u8>),
}

struct Gen {
    rng: Rng,
}

impl Gen {
    fn client(&mut self) -> (IpAddr, u16) {
        let addr: IpAddr = self.rng.pick(&CLIENTS).parse().unwrap();
        // Now and then a port of its own, as a scanner changing ports does.
        let port = if self.rng.percent(15) {
            10_000 + self.rng.below(20_000) as u16
        } else {
            *self.rng.pick(&PORTS)
        };
        (addr, port)
    }

    fn server_of(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) => IpAddr::V4(SERVER4),
            IpAddr::V6(_) => IpAddr::V6(SERVER6),
        }
    }

    fn request(&mut self) -> Vec<u8> {
        let (mut client, port) = self.client();
        // A forged flood: a new source for nearly every packet, never answered back.
        if self.rng.percent(20) {
            client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 128 + self.rng.below(120) as u8));
        }
        let method = *self.rng.pick(&METHODS);
        let payload = request(method, "sip:100@example.com", self.rng.below(1000) as u32);
        let mut frame = Frame::sip(client, Self::server_of(client), &payload);
        frame.src_port = port;
        if self.rng.percent(10) {
            frame = frame.vlan(7);
        }
        frame.build()
    }

    /// The CSeq line in one of the shapes servers send, or none.
    fn cseq(&mut self, method: &str) -> String {
        let name = *self.rng.pick(&["CSeq", "cseq", "CSEQ", "CSeq"]);
        let gap = *self.rng.pick(&[" ", "  ", "\t", " "]);
        let after = *self.rng.pick(&[" ", " ", "   "]);
        format!("{name}:{gap}{}{after}{method}", self.rng.below(100_000))
    }

    fn answer(&mut self) -> Vec<u8> {
        let (client, mut port) = self.client();
        let mut status = *self.rng.pick(&STATUSES);
        // 203.0.113.9 is a scanner changing its port for every request: only challenged.
        if client == IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)) {
            status = 401;
            port = 10_000 + self.rng.below(20_000) as u16;
        }
        let method = *self.rng.pick(&METHODS);
        let mut headers = String::new();
        for n in 0..self.rng.below(5) {
            let branch = "z".repeat(self.rng.range(4, 120));
            let _ = write!(
                headers,
                "Via: SIP/2.0/UDP 198.51.100.{n}:5060;branch={branch}\r\n"
            );
        }
        headers.push_str("From: <sip:100@example.com>;tag=1\r\nTo: <sip:100@example.com>\r\n");
        headers.push_str("Call-ID: 42@example.com\r\n");
        let shape = self.rng.below(100);
        if shape < 3 {
            // CSeq past the bytes the program scans.
            let pad = "p".repeat(self.rng.range(900, 1100));
            let _ = write!(headers, "X-Pad: {pad}\r\n");
        }
        if shape >= 5 {
            headers.push_str(&self.cseq(method));
            headers.push_str("\r\n");
        }
        if status == 401 {
            headers.push_str("WWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n");
        }
        headers.push_str("Content-Length: 0\r\n\r\n");
        let reason = *self.rng.pick(&["OK", "Unauthorized", "Nope", "Not Found"]);
        let payload = match self.rng.below(100) {
            // The server's own request (an OPTIONS ping), and a non-SIP datagram.
            0..=2 => format!("OPTIONS sip:{client} SIP/2.0\r\n{headers}"),
            3 => "garbage, not SIP at all".to_owned(),
            _ => format!("SIP/2.0 {status} {reason}\r\n{headers}"),
        };
        let mut frame = Frame::udp(Self::server_of(client), client, port, payload.as_bytes());
        frame.src_port = if self.rng.percent(3) { 5099 } else { 5060 };
        if self.rng.percent(8) {
            frame = frame.vlan(9);
        }
        if client.is_ipv6() && self.rng.percent(10) {
            frame.ipv6_ext = vec![Ipv6Ext::DestinationOptions { len_units: 0 }];
        }
        frame.build()
    }

    fn next(&mut self) -> Step {
        if self.rng.percent(45) {
            Step::Request(self.request())
        } else {
            Step::Answer(self.answer())
        }
    }
}

struct Run {
    dp: Datapath,
    model: Model,
    events: RingBuf<MapData>,
    prefixes: BpfHashMap<MapData, PrefixKey, SourceState>,
    prefix_bans: BpfHashMap<MapData, PrefixKey, DurableBan>,
    now: u64,
    mismatches: Vec<String>,
}

impl Run {
    fn new(cfg: &Config) -> Self {
        let mut dp = Datapath::load(cfg).expect("load both programs");
        let events = RingBuf::try_from(dp.ebpf().take_map(map_names::BAN_EVENTS).unwrap()).unwrap();
        let prefixes = BpfHashMap::try_from(dp.open_map(map_names::PREFIXES).unwrap()).unwrap();
        let prefix_bans =
            BpfHashMap::try_from(dp.open_map(map_names::PREFIX_BANS).unwrap()).unwrap();
        let mut model = Model::new(*cfg);
        let allowed: IpNet = "198.51.100.4/32".parse().unwrap();
        let protected: IpNet = "198.51.100.5/32".parse().unwrap();
        dp.maps.allow(allowed).unwrap();
        dp.maps.protect(protected).unwrap();
        model.allow(allowed);
        model.protect(protected);
        Self {
            dp,
            model,
            events,
            prefixes,
            prefix_bans,
            now: monotonic_now_ns(),
            mismatches: Vec::new(),
        }
    }

    fn kernel_events(&mut self) -> Vec<BanEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            // SAFETY: the programs submit whole `BanEvent`s.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
        }
        out
    }

    fn elapsed(&self) -> u64 {
        monotonic_now_ns() - self.now + CLOCK_SLACK_NS
    }

    fn step(&mut self, index: u64, step: &Step) {
        let (what, kernel, model, bytes) = match step {
            Step::Request(frame) => {
                let expected = self.model.process(frame, self.now);
                let action = self.dp.run(frame).unwrap();
                let slot = packet_counter_index(expected.verdict, expected.class);
                let counters = self.dp.maps.counters().unwrap();
                let counted = counters.packets(expected.verdict, expected.class)
                    == self.model.packets(expected.verdict, expected.class);
                let note = if counted {
                    String::new()
                } else {
                    format!(" (counter slot {slot} differs)")
                };
                (
                    format!("request {:?}/{:?}{note}", expected.verdict, expected.class),
                    action + if counted { 0 } else { 100 },
                    expected.action,
                    frame,
                )
            }
            Step::Answer(frame) => {
                let expected = self.model.answer(frame, self.now);
                let action = self.dp.run_egress(frame).unwrap();
                (
                    format!("answer {:?}", expected.read),
                    action,
                    expected.action,
                    frame,
                )
            }
        };
        let model_events = std::mem::take(&mut self.model.ban_events);
        let kernel_events = self.kernel_events();
        let events = events_diff(&model_events, &kernel_events, self.elapsed());
        let counters = self.counters_diff();
        if kernel == model && events.is_none() && counters.is_none() {
            return;
        }
        let mut report = format!("step #{index}: {what}: kernel action {kernel}, model {model}");
        if let Some(e) = events {
            let _ = write!(report, "\n  events: {e}");
        }
        if let Some(c) = counters {
            let _ = write!(report, "\n  counters: {c}");
        }
        let _ = write!(
            report,
            "\n  frame: {}",
            String::from_utf8_lossy(&bytes[bytes.len().min(42)..])
        );
        self.mismatches.push(report);
    }

    fn counters_diff(&self) -> Option<String> {
        let kernel = self.dp.maps.counters().unwrap();
        let mut d = Vec::new();
        for counter in EventCounter::ALL {
            let (k, m) = (kernel.event(counter), self.model.event(counter));
            if k != m {
                d.push(format!("{}: kernel {k}, model {m}", counter.name()));
            }
        }
        for verdict in Verdict::ALL {
            for class in MethodClass::ALL {
                let (k, m) = (
                    kernel.packets(verdict, class),
                    self.model.packets(verdict, class),
                );
                if k != m {
                    d.push(format!(
                        "{}/{}: kernel {k}, model {m}",
                        verdict.name(),
                        class.name()
                    ));
                }
            }
        }
        (!d.is_empty()).then(|| d.join(", "))
    }

    /// Every table both programs keep, whole.
    fn check_tables(&mut self, index: u64) {
        let elapsed = self.elapsed();
        let close = |m: u64, k: u64| {
            if m == 0 || k == 0 {
                m == k
            } else {
                k + CLOCK_SLACK_NS >= m && k <= m + elapsed
            }
        };
        let maps = &self.dp.maps;
        let model = &self.model;
        let mut d = Vec::new();
        compare(
            "VERIFIED",
            &model.verified,
            &by_addr(maps.verified().unwrap()),
            |m, k| {
                m.successes == k.successes
                    && close(m.verified_until_ns, k.verified_until_ns)
                    && close(m.verified_since_ns, k.verified_since_ns)
            },
            fmt_key,
            &mut d,
        );
        compare(
            "ANSWERS",
            &model.answers,
            &by_addr(maps.answer_states().unwrap()),
            |m, k| {
                (m.failures, m.open_challenges, m.answers, m.reflection_drops)
                    == (k.failures, k.open_challenges, k.answers, k.reflection_drops)
                    && close(m.reply_tat_ns, k.reply_tat_ns)
                    && close(m.window_start_ns, k.window_start_ns)
            },
            fmt_key,
            &mut d,
        );
        let flows = maps
            .flows()
            .unwrap()
            .into_iter()
            .map(|(k, v)| ((k.addr, k.port), v))
            .collect();
        compare(
            "FLOWS",
            &model.flows,
            &flows,
            |m, k| {
                (m.failures, m.strikes) == (k.failures, k.strikes)
                    && close(m.challenged_at_ns, k.challenged_at_ns)
                    && close(m.banned_until_ns, k.banned_until_ns)
                    && close(m.window_start_ns, k.window_start_ns)
            },
            |(addr, port)| format!("{}:{port}", fmt_key(addr)),
            &mut d,
        );
        compare(
            "SOURCES",
            &model.sources,
            &by_addr(maps.sources().unwrap()),
            |m, k| {
                (m.packets, m.dropped, m.strikes, m.ban_class, m.ban_flags)
                    == (k.packets, k.dropped, k.strikes, k.ban_class, k.ban_flags)
                    && close(m.banned_until_ns, k.banned_until_ns)
                    && close(m.verified_until_ns, k.verified_until_ns)
                    && close(m.flow_bans_until_ns, k.flow_bans_until_ns)
            },
            fmt_key,
            &mut d,
        );
        let by_prefix = |key: &PrefixKey| (key.addr, key.prefix_len);
        let kernel_prefixes = self
            .prefixes
            .iter()
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (by_prefix(&k), v))
            .collect();
        let model_prefixes = model
            .prefixes
            .iter()
            .map(|(k, v)| (by_prefix(k), *v))
            .collect();
        compare(
            "PREFIXES",
            &model_prefixes,
            &kernel_prefixes,
            |m, k| {
                (m.packets, m.dropped, m.strikes, m.ban_class, m.ban_flags)
                    == (k.packets, k.dropped, k.strikes, k.ban_class, k.ban_flags)
                    && m.ban_duration_ns == k.ban_duration_ns
                    && close(m.banned_until_ns, k.banned_until_ns)
                    && m.tat_ns.iter().zip(k.tat_ns).all(|(&m, k)| close(m, k))
            },
            fmt_prefix,
            &mut d,
        );
        let kernel_records = self
            .prefix_bans
            .iter()
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (by_prefix(&k), v))
            .collect();
        let model_records = model
            .prefix_bans
            .iter()
            .map(|(k, v)| (by_prefix(k), *v))
            .collect();
        compare(
            "PREFIX_BANS",
            &model_records,
            &kernel_records,
            |m, k| {
                (m.ban_duration_ns, m.strikes, m.ban_class, m.ban_flags)
                    == (k.ban_duration_ns, k.strikes, k.ban_class, k.ban_flags)
                    && close(m.banned_until_ns, k.banned_until_ns)
            },
            fmt_prefix,
            &mut d,
        );
        if !d.is_empty() {
            self.mismatches
                .push(format!("tables after step #{index}:\n  {}", d.join("\n  ")));
        }
    }
}

/// A table keyed by `SourceKey`, by its address.
fn by_addr<V>(rows: Vec<(sip_xdp_common::SourceKey, V)>) -> HashMap<[u8; 16], V> {
    rows.into_iter().map(|(k, v)| (k.addr, v)).collect()
}

/// Every key of either table: present in both with `same` values, or a difference in `d`.
fn compare<K: Ord + Copy + std::hash::Hash + Eq, V: std::fmt::Debug>(
    table: &str,
    model: &HashMap<K, V>,
    kernel: &HashMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
    name: impl Fn(&K) -> String,
    d: &mut Vec<String>,
) {
    let keys: BTreeSet<K> = model.keys().chain(kernel.keys()).copied().collect();
    for key in keys {
        match (model.get(&key), kernel.get(&key)) {
            (Some(m), Some(k)) if same(m, k) => {}
            (m, k) => d.push(format!("{table} {}: model {m:?}, kernel {k:?}", name(&key))),
        }
    }
}

fn fmt_key(key: &[u8; 16]) -> String {
    IpAddr::from(*key).to_canonical().to_string()
}

fn fmt_prefix((addr, prefix_len): &([u8; 16], u8)) -> String {
    match IpAddr::from(*addr).to_canonical() {
        IpAddr::V4(v4) if *prefix_len >= 96 => format!("{v4}/{}", prefix_len - 96),
        _ => format!("{}/{prefix_len}", Ipv6Addr::from(*addr)),
    }
}

fn events_diff(model: &[BanEvent], kernel: &[BanEvent], elapsed: u64) -> Option<String> {
    let close = |m: u64, k: u64| k + CLOCK_SLACK_NS >= m && k <= m + elapsed;
    let same = model.len() == kernel.len()
        && model.iter().zip(kernel).all(|(m, k)| {
            (
                m.addr,
                m.prefix_len,
                m.kind,
                m.limit_class,
                m.strikes,
                m.duration_ns,
                m.port,
            ) == (
                k.addr,
                k.prefix_len,
                k.kind,
                k.limit_class,
                k.strikes,
                k.duration_ns,
                k.port,
            ) && close(m.now_ns, k.now_ns)
                && close(m.banned_until_ns, k.banned_until_ns)
        });
    (!same).then(|| format!("model {model:?}\n  kernel {kernel:?}"))
}

fn run(monitor: bool, seed_offset: u64) {
    let steps = env_u64("SIP_XDP_DIFF_ANSWER_STEPS", DEFAULT_STEPS);
    let seed = env_u64("SIP_XDP_DIFF_SEED", DEFAULT_SEED) ^ seed_offset;
    let mut run = Run::new(&config(monitor));
    let mut generator = Gen {
        rng: Rng::new(seed),
    };
    for index in 0..steps {
        let step = generator.next();
        run.step(index, &step);
        if index % CHECK_EVERY == CHECK_EVERY - 1 {
            run.check_tables(index);
        }
        if !run.mismatches.is_empty() {
            break;
        }
    }
    run.check_tables(steps);
    assert!(
        run.mismatches.is_empty(),
        "kernel and model differ (seed {seed:#x}, monitor {monitor}):\n{}",
        run.mismatches.join("\n")
    );
    exercised(&run.model, steps, monitor);
}

/// Every mechanism was exercised, or the run proved little.
fn exercised(m: &Model, steps: u64, monitor: bool) {
    let exercised = [
        ("verifications", m.event(EventCounter::Verifications)),
        ("rechallenged", m.event(EventCounter::FailuresRechallenged)),
        ("not_found", m.event(EventCounter::FailuresNotFound)),
        ("forbidden", m.event(EventCounter::FailuresForbidden)),
        ("unanswered", m.event(EventCounter::FailuresUnanswered)),
        ("auth bans", m.event(EventCounter::AuthBans)),
        ("flow bans", m.event(EventCounter::FlowBans)),
        (
            "reflection drops",
            m.event(EventCounter::ReflectionDestinationDrops)
                + m.event(EventCounter::ReflectionTotalDrops),
        ),
        (
            "admission drops",
            MethodClass::ALL
                .iter()
                .map(|&c| m.packets(Verdict::DropAdmission, c))
                .sum(),
        ),
        ("prefix bans", m.event(EventCounter::PrefixBans)),
        (
            "prefix drops",
            MethodClass::ALL
                .iter()
                .map(|&c| m.packets(Verdict::DropPrefix, c))
                .sum::<u64>()
                + m.event(EventCounter::PrefixBannedDrops),
        ),
    ];
    eprintln!("answers differential (monitor {monitor}, {steps} steps): {exercised:?}");
    for (name, n) in exercised {
        assert!(
            n > 0,
            "no {name} in {steps} steps: the generator misses a mechanism"
        );
    }
    let _ = key_of;
}

/// The model alone on the generated steps reaches every mechanism (no BPF needed).
#[test]
fn model_reaches_every_answer_mechanism() {
    let steps = env_u64("SIP_XDP_DIFF_ANSWER_STEPS", DEFAULT_STEPS);
    for (monitor, seed_offset) in [(false, 0), (true, 0x77)] {
        let seed = env_u64("SIP_XDP_DIFF_SEED", DEFAULT_SEED) ^ seed_offset;
        let mut model = Model::new(config(monitor));
        model.allow("198.51.100.4/32".parse().unwrap());
        model.protect("198.51.100.5/32".parse().unwrap());
        let mut generator = Gen {
            rng: Rng::new(seed),
        };
        let now = 10 * HOUR_NS;
        for _ in 0..steps {
            match generator.next() {
                Step::Request(frame) => {
                    model.process(&frame, now);
                }
                Step::Answer(frame) => {
                    model.answer(&frame, now);
                }
            }
        }
        exercised(&model, steps, monitor);
    }
}

#[test]
fn answers_enforcing() {
    sip_xdp_tests::needs_root!();
    run(false, 0);
}

#[test]
fn answers_monitor() {
    sip_xdp_tests::needs_root!();
    run(true, 0x77);
}
