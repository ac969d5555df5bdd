//! The egress program in the model: what a response the host sends does to the client's state,
//! and whether the reflection guard drops it. Specified as the program reads: the first
//! `MAX_ANSWER_SCAN` bytes of the payload, the status line, and the CSeq header found by a scan
//! of 8-byte words (a header line is only seen where its `\n` falls in a scanned word, and at
//! most the first two lines starting with a C in one word are looked at).
use sip_xdp_common::{
    AuthFailure, BAN_CLASS_AUTH, BanEvent, CHALLENGE_OPEN_NS, Config, EventCounter, FlowState,
    MAX_ANSWER_SCAN, MAX_L4_OFFSET, ban_event_kind, failure_counter, flags,
};

use super::{Model, Network, gcra, ipv4_far_end, ipv6_far_end, l3_of, present, u16_at};

/// TC actions, as `BPF_PROG_TEST_RUN` reports them.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// The method a response answers, from its CSeq header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    Register,
    Invite,
    Options,
    Other,
    Unknown,
}

/// What the model decided for one frame the host sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerOutcome {
    /// [`TC_ACT_OK`] or [`TC_ACT_SHOT`].
    pub action: u32,
    /// The status code and method read, for a response from a SIP port.
    pub read: Option<(u16, Answered)>,
}

struct Sent {
    dst: [u8; 16],
    port: u16,
    is_ipv4: bool,
    payload: usize,
    len: usize,
}

/// A UDP datagram from a SIP port that the parser resolves; anything else is not read.
fn parse_sent(frame: &[u8], cfg: &Config) -> Option<Sent> {
    let (l3, ethertype) = l3_of(frame)?;
    let network = match ethertype {
        0x0800 => ipv4_far_end(frame, l3, true)?,
        0x86dd => ipv6_far_end(frame, l3, true)?,
        _ => return None,
    };
    // Only UDP: the server's answers over TCP are not read.
    let Network::L4(t) = network else {
        return None;
    };
    if t.protocol != super::PROTO_UDP {
        return None;
    }
    if !present(frame, t.l4, 8) {
        return None;
    }
    let src_port = u16_at(frame, t.l4)?;
    if src_port == 0 || !cfg.sip_ports.contains(&src_port) {
        return None;
    }
    let udp_len = usize::from(u16_at(frame, t.l4 + 4)?);
    if udp_len < 8 || t.ip_end > frame.len() {
        return None;
    }
    let payload = t.l4 + 8;
    let end = if t.first_fragment_id.is_some() {
        t.ip_end
    } else {
        if t.l4 + udp_len > t.ip_end {
            return None;
        }
        t.l4 + udp_len
    };
    if end < payload || payload > MAX_L4_OFFSET + 8 {
        return None;
    }
    Some(Sent {
        dst: t.src,
        port: u16_at(frame, t.l4 + 2)?,
        is_ipv4: t.is_ipv4,
        payload,
        len: end - payload,
    })
}

/// The copied payload with the 16 zero bytes the program writes past it.
struct Copy(Vec<u8>, usize);

impl Copy {
    fn word(&self, at: usize) -> [u8; 8] {
        let mut w = [0u8; 8];
        for (i, b) in w.iter_mut().enumerate() {
            *b = self.0.get(at + i).copied().unwrap_or(0);
        }
        w
    }
}

fn status_of(copy: &Copy) -> Option<u16> {
    let b = &copy.0;
    if &b[..8] != b"SIP/2.0 " {
        return None;
    }
    let (a, t, u) = (b[8], b[9], b[10]);
    if !(b'1'..=b'6').contains(&a) || !t.is_ascii_digit() || !u.is_ascii_digit() {
        return None;
    }
    if b[11] != b' ' && b[11] != b'\r' {
        return None;
    }
    Some(u16::from(a - b'0') * 100 + u16::from(t - b'0') * 10 + u16::from(u - b'0'))
}

fn is_cseq_line(copy: &Copy, at: usize) -> bool {
    let w = copy.word(at);
    w[0] == b'\n' && w[1..5].eq_ignore_ascii_case(b"cseq") && w[5] == b':'
}

fn method_of(copy: &Copy) -> Answered {
    let copied = copy.1;
    let mut found = None;
    let mut i = 11;
    'scan: while i + 9 <= MAX_ANSWER_SCAN && i + 9 <= copied {
        let here = copy.word(i);
        let next = copy.word(i + 1);
        let mut seen = 0;
        for k in 0..8 {
            if here[k] == b'\n' && next[k] | 0x20 == b'c' {
                if is_cseq_line(copy, i + k) {
                    found = Some(i + k + 6);
                    break 'scan;
                }
                seen += 1;
                if seen == 2 {
                    break;
                }
            }
        }
        i += 8;
    }
    let Some(from) = found.filter(|&f| f < copied) else {
        return Answered::Unknown;
    };
    // The method starts at the first byte with bit 6 set (a letter) in the 16 after "CSeq:".
    let Some(start) = (from..from + 16).find(|&at| copy.word(at)[0] & 0x40 != 0) else {
        return Answered::Unknown;
    };
    if start > copied {
        return Answered::Unknown;
    }
    let w = copy.word(start);
    let ends = |b: u8| matches!(b, b'\r' | b'\n' | b' ' | b'\t');
    if &w == b"REGISTER" {
        Answered::Register
    } else if &w[..6] == b"INVITE" && ends(w[6]) {
        Answered::Invite
    } else if &w[..7] == b"OPTIONS" && ends(w[7]) {
        Answered::Options
    } else {
        Answered::Other
    }
}

struct Client {
    key: [u8; 16],
    flow: ([u8; 16], u16),
    verified: bool,
}

impl Model {
    /// One frame the host sends, through the model's egress program at `now`.
    pub fn answer(&mut self, frame: &[u8], now: u64) -> AnswerOutcome {
        let cfg = self.effective_config();
        let pass = AnswerOutcome {
            action: TC_ACT_OK,
            read: None,
        };
        let Some(sent) = parse_sent(frame, &cfg) else {
            return pass;
        };
        let copied = sent.len.min(MAX_ANSWER_SCAN);
        if copied < 13 {
            return pass;
        }
        let mut bytes = frame[sent.payload..sent.payload + copied].to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let copy = Copy(bytes, copied);
        let Some(status) = status_of(&copy) else {
            return pass;
        };
        let method = method_of(&copy);
        let drop = self.answer_verdict(&cfg, &sent, status, method, now);
        AnswerOutcome {
            action: if drop { TC_ACT_SHOT } else { TC_ACT_OK },
            read: Some((status, method)),
        }
    }

    fn bump(&mut self, counter: EventCounter) {
        self.events[counter as usize] += 1;
    }

    fn answer_verdict(
        &mut self,
        cfg: &Config,
        sent: &Sent,
        status: u16,
        method: Answered,
        now: u64,
    ) -> bool {
        self.bump(EventCounter::Answers);
        let key = self.source_key(&sent.dst, sent.is_ipv4);
        let verified = self
            .verified
            .get(&key)
            .is_some_and(|v| now < v.verified_until_ns);
        let client = Client {
            key,
            flow: (sent.dst, sent.port),
            verified,
        };
        if status < 200 {
            return false;
        }
        if status < 300 {
            match method {
                Answered::Register | Answered::Invite => self.success(cfg, &client, now),
                Answered::Other => self.close_challenge(&client),
                Answered::Options | Answered::Unknown => {}
            }
            return false;
        }
        let failure = match status {
            401 | 407 => self.challenge(cfg, &client, now),
            403 => Some(AuthFailure::Forbidden),
            404 if matches!(
                method,
                Answered::Register | Answered::Invite | Answered::Unknown
            ) =>
            {
                Some(AuthFailure::NotFound)
            }
            480..=699 if method == Answered::Invite => {
                self.close_challenge(&client);
                None
            }
            _ => None,
        };
        if let Some(kind) = failure {
            self.count_failure(cfg, &client, kind, now);
        }
        if status >= 400 && !client.verified {
            return !self.reflection_allowed(cfg, &client, now);
        }
        false
    }

    fn answers_of(&mut self, key: [u8; 16], now: u64) -> &mut sip_xdp_common::AnswerState {
        self.answers
            .entry(key)
            .or_insert_with(|| sip_xdp_common::AnswerState {
                window_start_ns: now,
                ..Default::default()
            })
    }

    fn flow_of(&mut self, flow: ([u8; 16], u16), now: u64) -> &mut FlowState {
        self.flows.entry(flow).or_insert_with(|| FlowState {
            window_start_ns: now,
            ..Default::default()
        })
    }

    fn close_challenge(&mut self, client: &Client) {
        if let Some(flow) = self.flows.get_mut(&client.flow) {
            flow.challenged_at_ns = 0;
        }
    }

    fn success(&mut self, cfg: &Config, client: &Client, now: u64) {
        let mut answered_challenge = false;
        if let Some(flow) = self.flows.get_mut(&client.flow) {
            answered_challenge = challenge_open(flow, now);
            flow.challenged_at_ns = 0;
            flow.failures = 0;
        }
        if let Some(answers) = self.answers.get_mut(&client.key) {
            answers.answers += 1;
            answers.open_challenges = answers.open_challenges.saturating_sub(1);
        }
        if !client.verified && !answered_challenge {
            return;
        }
        let until = now + cfg.verified_for_ns;
        let record = self
            .verified
            .entry(client.key)
            .or_insert(sip_xdp_common::VerifiedSource {
                verified_until_ns: until,
                verified_since_ns: now,
                successes: 0,
            });
        if !client.verified {
            record.verified_since_ns = now;
        }
        record.verified_until_ns = until;
        record.successes += 1;
        if let Some(state) = self.sources.get_mut(&client.key) {
            state.verified_until_ns = until;
        }
        self.bump(EventCounter::Verifications);
    }

    fn challenge(&mut self, cfg: &Config, client: &Client, now: u64) -> Option<AuthFailure> {
        let mut failure = None;
        let flow = self.flow_of(client.flow, now);
        if challenge_open(flow, now) {
            failure = Some(AuthFailure::Rechallenged);
        }
        flow.challenged_at_ns = now;
        let answers = self.answers_of(client.key, now);
        restart_window_if_over(cfg, answers, now);
        answers.open_challenges += 1;
        answers.answers += 1;
        if failure.is_none()
            && !client.verified
            && answers.open_challenges > cfg.auth_max_unanswered
        {
            failure = Some(AuthFailure::Unanswered);
        }
        failure
    }

    fn count_failure(&mut self, cfg: &Config, client: &Client, kind: AuthFailure, now: u64) {
        self.bump(failure_counter(kind));
        let answers = self.answers_of(client.key, now);
        restart_window_if_over(cfg, answers, now);
        answers.failures += 1;
        let failures = answers.failures;
        if client.verified {
            let flow = self.flow_of(client.flow, now);
            if now.wrapping_sub(flow.window_start_ns) >= cfg.auth_window_ns {
                flow.window_start_ns = now;
                flow.failures = 0;
            }
            flow.failures += 1;
            if flow.failures >= cfg.auth_max_flow_failures && now >= flow.banned_until_ns {
                flow.failures = 0;
                self.ban_flow(cfg, client, kind, now);
            }
            if failures < cfg.auth_max_failures_verified {
                return;
            }
        } else if failures < cfg.auth_max_failures {
            return;
        }
        let answers = self.answers_of(client.key, now);
        answers.failures = 0;
        answers.open_challenges = 0;
        self.ban_address(cfg, client.key, kind, now);
    }

    fn ban_address(&mut self, cfg: &Config, key: [u8; 16], kind: AuthFailure, now: u64) {
        let state = self
            .sources
            .entry(key)
            .or_insert(sip_xdp_common::SourceState {
                window_start_ns: now,
                ..Default::default()
            });
        if now < state.banned_until_ns {
            return;
        }
        self.impose_ban(cfg, key, BAN_CLASS_AUTH | kind as u8, now);
        self.bump(EventCounter::AuthBans);
    }

    fn ban_flow(&mut self, cfg: &Config, client: &Client, kind: AuthFailure, now: u64) {
        let monitor = cfg.has_flag(flags::MONITOR);
        let flow = self
            .flows
            .get_mut(&client.flow)
            .expect("the flow being banned");
        let shift = flow.strikes.min(10);
        let duration = (cfg.flow_ban_ns << shift).min(cfg.ban_max_ns);
        flow.strikes += 1;
        let strikes = flow.strikes;
        let until = now + duration;
        if !monitor {
            flow.banned_until_ns = until;
        }
        self.bump(EventCounter::FlowBans);
        if !monitor && let Some(state) = self.sources.get_mut(&client.key) {
            state.flow_bans_until_ns = state.flow_bans_until_ns.max(until);
        }
        self.ban_events.push(BanEvent {
            addr: client.flow.0,
            now_ns: now,
            banned_until_ns: until,
            duration_ns: duration,
            window_ns: 0,
            window_packets: 0,
            strikes,
            kind: if monitor {
                ban_event_kind::WOULD_FLOW_BAN
            } else {
                ban_event_kind::FLOW_BAN
            },
            limit_class: BAN_CLASS_AUTH | kind as u8,
            port: client.flow.1,
            prefix_len: 0,
            _pad: [0; 3],
        });
    }

    fn reflection_allowed(&mut self, cfg: &Config, client: &Client, now: u64) -> bool {
        let mut counter = None;
        let per_destination = cfg.reflection_per_destination;
        let answers = self.answers_of(client.key, now);
        if per_destination.interval_ns != 0
            && !gcra(&mut answers.reply_tat_ns, &per_destination, now)
        {
            counter = Some(EventCounter::ReflectionDestinationDrops);
        }
        if counter.is_none()
            && cfg.reflection_total.interval_ns != 0
            && !gcra(&mut self.global_tat_ns[1], &cfg.reflection_total, now)
        {
            counter = Some(EventCounter::ReflectionTotalDrops);
        }
        let Some(counter) = counter else {
            return true;
        };
        let dst = client.flow.0;
        if self.allowlist.lookup(&dst).is_some() || self.protected.lookup(&dst).is_some() {
            return true;
        }
        self.bump(counter);
        if let Some(answers) = self.answers.get_mut(&client.key) {
            answers.reflection_drops += 1;
        }
        cfg.has_flag(flags::MONITOR)
    }
}

fn challenge_open(flow: &FlowState, now: u64) -> bool {
    flow.challenged_at_ns != 0 && now.wrapping_sub(flow.challenged_at_ns) < CHALLENGE_OPEN_NS
}

fn restart_window_if_over(cfg: &Config, answers: &mut sip_xdp_common::AnswerState, now: u64) {
    if now.wrapping_sub(answers.window_start_ns) >= cfg.auth_window_ns {
        answers.window_start_ns = now;
        answers.failures = 0;
        answers.open_challenges = 0;
    }
}
