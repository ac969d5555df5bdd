//! The egress program's side: what the server answers each client, and what it means.
//!
//! A response is read for its status code and the method its CSeq names. A success to a
//! REGISTER or INVITE that follows a challenge verifies its client (`VERIFIED`); 403, 404 and a
//! second challenge to a flow whose first one was never followed by a success count as failed
//! authentication, and past the configured count the client is banned (an unverified address)
//! or the one flow is (a phone behind a verified address). Challenges and errors to unverified
//! clients are capped per destination and in total, the reflection guard.
use sip_xdp_common::{
    AnswerState, AuthFailure, BAN_CLASS_AUTH, BanEvent, CHALLENGE_OPEN_NS, Config, EventCounter,
    FlowKey, FlowState, MAX_ANSWER_SCAN, SourceKey, SourceState, VerifiedSource, ban_event_kind,
    event_counter_index, failure_counter, flags,
};

use aya_ebpf::{helpers::bpf_skb_load_bytes, macros::map, maps::PerCpuArray, programs::TcContext};

use crate::{
    bans::impose_ban,
    buckets::conforms,
    lists::{is_allowlisted, is_protected},
    maps::opaque,
    maps::{
        ANSWERS, BAN_EVENTS, FLOWS, GLOBAL_BUCKETS_REFLECTION, NEW_SOURCE, SOURCES, VERIFIED, bump,
        global_bucket,
    },
    parse::{Addr16, Answer, byte_flags, lowest_flag_index},
    sources::{key_is_address, masked_key},
};

/// The method a response answers, from its CSeq header.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Answered {
    Register,
    Invite,
    Options,
    Other,
    /// No CSeq header within the scanned bytes, or one the program cannot read.
    Unknown,
}

/// Every read's index is masked with this, so the verifier sees it inside the buffer without a
/// branch. Twice the scan: no index a read starts at (at most 16 bytes past the copy) wraps.
const BUF_MASK: usize = 2 * MAX_ANSWER_SCAN - 1;
/// Bytes of the answer buffer: room for an 8-byte read at any masked index.
const BUF_LEN: usize = BUF_MASK + 1 + 8;
const _: () = assert!(MAX_ANSWER_SCAN.is_power_of_two());

/// The response's first bytes, copied out of the packet: a scan over packet pointers costs the
/// verifier a state per packet range it has seen, one over a map value none, and the copy
/// reads past the linear part of the buffer too.
#[map(name = "ANSWER_BUF")]
static ANSWER_BUF: PerCpuArray<[u8; BUF_LEN]> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn word_at(buf: &[u8; BUF_LEN], at: usize) -> u64 {
    // SAFETY: `at & BUF_MASK` + 8 <= BUF_LEN; any alignment.
    unsafe { core::ptr::read_unaligned(buf.as_ptr().add(at & BUF_MASK) as *const u64) }
}

/// [`read_answer_packed`] unpacked.
#[inline(always)]
pub fn read_answer(ctx: &TcContext, payload: usize, len: usize) -> Option<(u16, Answered)> {
    let packed = read_answer_packed(ctx, payload, len);
    if packed == 0 {
        return None;
    }
    let method = match packed >> 16 {
        0 => Answered::Register,
        1 => Answered::Invite,
        2 => Answered::Options,
        3 => Answered::Other,
        _ => Answered::Unknown,
    };
    Some(((packed & 0xffff) as u16, method))
}

/// The status code (low 16 bits) and the answered method (above them) of a response whose
/// payload starts `payload` bytes into the packet; 0 for anything that is not a response.
/// Packed in an integer: the BTF bpf-linker writes for a returned `Option<(u16, Answered)>`
/// has a member offset the kernel refuses, and the whole object's BTF would go unloaded.
#[inline(never)]
fn read_answer_packed(ctx: &TcContext, payload: usize, len: usize) -> u32 {
    match read_answer_inner(ctx, payload, len) {
        Some((status, method)) => u32::from(status) | (method as u32) << 16,
        None => 0,
    }
}

#[inline(always)]
fn read_answer_inner(ctx: &TcContext, payload: usize, len: usize) -> Option<(u16, Answered)> {
    let copied = if len < MAX_ANSWER_SCAN {
        len
    } else {
        MAX_ANSWER_SCAN
    };
    if copied < 13 {
        return None;
    }
    let buf = ANSWER_BUF.get_ptr_mut(0)?;
    // SAFETY: a per-CPU buffer, used by this packet only; the helper writes `copied` bytes,
    // at most `MAX_ANSWER_SCAN`, into it.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            payload as u32,
            buf as *mut _,
            copied as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: as above.
    let buf = unsafe { &mut *buf };
    // What lies past the copy is the previous packet's: blank 16 bytes of it, so that no header
    // is read there (every read starts below `copied` and ends at most 16 bytes past it).
    let tail = if copied < MAX_ANSWER_SCAN {
        copied
    } else {
        MAX_ANSWER_SCAN
    };
    // SAFETY: `tail` + 16 <= BUF_LEN.
    unsafe {
        core::ptr::write_unaligned(buf.as_mut_ptr().add(tail) as *mut u64, 0);
        core::ptr::write_unaligned(buf.as_mut_ptr().add(tail + 8) as *mut u64, 0);
    }
    let status = status_code(buf)?;
    Some((status, answered_method(buf, copied)))
}

const SIP_VERSION: u64 = u64::from_le_bytes(*b"SIP/2.0 ");
const LOWER_CASE: u64 = 0x2020_2020_2020_2020;

/// The status code of `SIP/2.0 NNN `.
#[inline(always)]
fn status_code(buf: &[u8; BUF_LEN]) -> Option<u16> {
    if word_at(buf, 0) != SIP_VERSION {
        return None;
    }
    let (a, b, c) = (buf[8], buf[9], buf[10]);
    if !(b'1'..=b'6').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    if buf[11] != b' ' && buf[11] != b'\r' {
        return None;
    }
    Some((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
}

/// The method of the response's CSeq header, in the first `copied` bytes.
///
/// Eight bytes per step: `LF` flags of the word at `i` and `C`/`c` flags of the word at `i + 1`
/// meet where a line starts with a C. The lowest such place is checked, then the next (flags
/// above the lowest may be false, never missing); a word holding three line starts with a C
/// would need two header lines shorter than eight bytes, which no server sends, and costs at
/// worst a method read as unknown.
#[inline(always)]
fn answered_method(buf: &[u8; BUF_LEN], copied: usize) -> Answered {
    let mut found = 0;
    let mut i = 11;
    while i + 9 <= MAX_ANSWER_SCAN {
        if i + 9 > copied {
            break;
        }
        let mut candidates =
            byte_flags(word_at(buf, i), b'\n') & byte_flags(word_at(buf, i + 1) | LOWER_CASE, b'c');
        if candidates != 0 {
            let line = i + lowest_flag_index(candidates);
            if is_cseq_line(buf, line) {
                found = line + 6;
                break;
            }
            candidates &= candidates - 1;
            if candidates != 0 {
                let line = i + lowest_flag_index(candidates);
                if is_cseq_line(buf, line) {
                    found = line + 6;
                    break;
                }
            }
        }
        i += 8;
    }
    if found == 0 || found >= copied {
        return Answered::Unknown;
    }
    // Laundered, so the verifier walks the method reader once, not once per step of the scan
    // that found the header (each with its own range for `found`).
    let found = opaque(2, found);
    if found >= copied {
        return Answered::Unknown;
    }
    method_after(buf, found, copied)
}

/// Is there `\nCSeq:` (any case) at `at`?
#[inline(always)]
fn is_cseq_line(buf: &[u8; BUF_LEN], at: usize) -> bool {
    // "\ncseq:" in the low six bytes, letters lower-cased (':' and '\n' are unchanged by it).
    let wanted = u64::from_le_bytes(*b"\ncseq:\0\0");
    let case = u64::from_le_bytes([0, 0x20, 0x20, 0x20, 0x20, 0, 0, 0]);
    (word_at(buf, at) | case) & 0xffff_ffff_ffff == wanted
}

/// Reads the method after the CSeq number (`CSeq: 1 REGISTER`): the method starts at the first
/// letter of the value, found without a loop. Digits, space and tab have bit 6 clear, letters
/// have it set, so `word & 0x40..40` flags the letters of a word.
#[inline(always)]
fn method_after(buf: &[u8; BUF_LEN], from: usize, copied: usize) -> Answered {
    const LETTER_BITS: u64 = 0x4040_4040_4040_4040;
    // The caller checked `from < copied`, so LLVM would drop `word_at`'s mask as redundant;
    // Linux 6.1's verifier learns no bound from a comparison of two registers and needs it.
    let from = core::hint::black_box(from) & BUF_MASK;
    let first = word_at(buf, from) & LETTER_BITS;
    let start = if first != 0 {
        from + lowest_flag_index(first << 1)
    } else {
        let second = word_at(buf, from + 8) & LETTER_BITS;
        if second == 0 {
            return Answered::Unknown;
        }
        from + 8 + lowest_flag_index(second << 1)
    };
    if start + 8 > copied + 8 {
        return Answered::Unknown;
    }
    // As for `from`: LLVM knows `start <= copied` and would drop the read's mask; 6.1's verifier
    // does not learn that bound from the comparison of two registers.
    let start = core::hint::black_box(start) & BUF_MASK;
    let word = word_at(buf, start);
    let ends = |b: u8| matches!(b, b'\r' | b'\n' | b' ' | b'\t');
    if word == u64::from_le_bytes(*b"REGISTER") {
        Answered::Register
    } else if word & 0xffff_ffff_ffff == u64::from_le_bytes(*b"INVITE\0\0")
        && ends((word >> 48) as u8)
    {
        Answered::Invite
    } else if word & 0x00ff_ffff_ffff_ffff == u64::from_le_bytes(*b"OPTIONS\0")
        && ends((word >> 56) as u8)
    {
        Answered::Options
    } else {
        Answered::Other
    }
}

/// Whom a response goes to, as the maps key it. BPF calls take five arguments at most, so the
/// non-inlined steps take this by reference.
struct Client<'a> {
    key: &'a SourceKey,
    flow: FlowKey,
    verified: bool,
}

/// What the egress program does with a response: `true` drops it (the reflection guard).
pub fn answer_verdict(
    cfg: &Config,
    answer: &Answer,
    status: u16,
    method: Answered,
    now_ns: u64,
) -> bool {
    bump(event_counter_index(EventCounter::Answers));
    let masked;
    let key = if key_is_address(cfg, answer.ipv4 == 1) {
        // SAFETY: `SourceKey` is `repr(C, align(8))` around exactly these 16 bytes, and
        // `Addr16` is 8-byte aligned too: no copy needed.
        unsafe { &*(&answer.dst as *const Addr16 as *const SourceKey) }
    } else {
        masked = masked_key(cfg, &answer.dst.0);
        &masked
    };
    let flow_key = FlowKey {
        addr: answer.dst.0,
        port: answer.port,
        _pad: [0; 6],
    };
    // SAFETY: a plain read; only this program writes VERIFIED.
    let verified_until_ns = match VERIFIED.get_ptr(key) {
        Some(v) => unsafe { (*v).verified_until_ns },
        None => 0,
    };
    let client = Client {
        key,
        flow: flow_key,
        verified: now_ns < verified_until_ns,
    };

    if status < 200 {
        return false;
    }
    if status < 300 {
        match method {
            Answered::Register | Answered::Invite => success(cfg, &client, now_ns),
            // A success to another method (SUBSCRIBE, MESSAGE) also closes the flow's
            // challenge; OPTIONS is answered without credentials, so it proves nothing.
            Answered::Other => close_challenge(&client.flow),
            Answered::Options | Answered::Unknown => {}
        }
        return false;
    }
    let failure = match status {
        401 | 407 => challenge(cfg, &client, now_ns),
        403 => Some(AuthFailure::Forbidden),
        404 if matches!(
            method,
            Answered::Register | Answered::Invite | Answered::Unknown
        ) =>
        {
            Some(AuthFailure::NotFound)
        }
        // A call that got past authentication and failed for another reason (busy, declined,
        // cancelled, unreachable) closes its challenge.
        480..=699 if method == Answered::Invite => {
            close_challenge(&client.flow);
            None
        }
        _ => None,
    };
    if let Some(kind) = failure {
        count_failure(cfg, &client, kind, now_ns);
    }
    if status >= 400 && !client.verified {
        return !reflection_allowed(cfg, &client, now_ns);
    }
    false
}

/// The client's `ANSWERS` entry, made when missing; `None` only when the LRU refuses it.
#[inline(always)]
fn answers_of(key: &SourceKey, now_ns: u64) -> Option<&'static mut AnswerState> {
    if let Some(state) = ANSWERS.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup; races only lose an update.
        return Some(unsafe { &mut *state });
    }
    let fresh = AnswerState {
        reply_tat_ns: 0,
        window_start_ns: now_ns,
        failures: 0,
        open_challenges: 0,
        answers: 0,
        reflection_drops: 0,
    };
    ANSWERS.insert(key, &fresh, 0).ok()?;
    // SAFETY: as above.
    ANSWERS.get_ptr_mut(key).map(|state| unsafe { &mut *state })
}

#[inline(always)]
fn flow_of(flow_key: &FlowKey, now_ns: u64) -> Option<&'static mut FlowState> {
    if let Some(flow) = FLOWS.get_ptr_mut(flow_key) {
        // SAFETY: pointer from a successful lookup; races only lose an update.
        return Some(unsafe { &mut *flow });
    }
    let fresh = FlowState {
        challenged_at_ns: 0,
        window_start_ns: now_ns,
        banned_until_ns: 0,
        failures: 0,
        strikes: 0,
    };
    FLOWS.insert(flow_key, &fresh, 0).ok()?;
    // SAFETY: as above.
    FLOWS
        .get_ptr_mut(flow_key)
        .map(|flow| unsafe { &mut *flow })
}

#[inline(always)]
fn challenge_open(flow: &FlowState, now_ns: u64) -> bool {
    flow.challenged_at_ns != 0 && now_ns.wrapping_sub(flow.challenged_at_ns) < CHALLENGE_OPEN_NS
}

#[inline(always)]
fn close_challenge(flow_key: &FlowKey) {
    if let Some(flow) = FLOWS.get_ptr_mut(flow_key) {
        // SAFETY: pointer from a successful lookup.
        unsafe { (*flow).challenged_at_ns = 0 };
    }
}

/// A 2xx to a REGISTER or INVITE. It verifies the client when it answers a challenge to the
/// same flow (proof that the client received the challenge, so it is not forged), and renews a
/// verified client's verification either way.
#[inline(never)]
fn success(cfg: &Config, client: &Client, now_ns: u64) {
    let (key, verified) = (client.key, client.verified);
    let mut answered_challenge = false;
    if let Some(flow) = FLOWS.get_ptr_mut(&client.flow) {
        // SAFETY: pointer from a successful lookup.
        let flow = unsafe { &mut *flow };
        answered_challenge = challenge_open(flow, now_ns);
        flow.challenged_at_ns = 0;
        flow.failures = 0;
    }
    if let Some(answers) = ANSWERS.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup.
        let answers = unsafe { &mut *answers };
        answers.answers += 1;
        if answers.open_challenges > 0 {
            answers.open_challenges -= 1;
        }
    }
    if !verified && !answered_challenge {
        return;
    }
    let until = now_ns + cfg.verified_for_ns;
    let record = match VERIFIED.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup.
        Some(record) => unsafe { &mut *record },
        None => {
            let fresh = VerifiedSource {
                verified_until_ns: until,
                verified_since_ns: now_ns,
                successes: 0,
            };
            if VERIFIED.insert(key, &fresh, 0).is_err() {
                bump(event_counter_index(EventCounter::VerifiedTableFull));
                return;
            }
            match VERIFIED.get_ptr_mut(key) {
                // SAFETY: as above.
                Some(record) => unsafe { &mut *record },
                None => return,
            }
        }
    };
    if !verified {
        record.verified_since_ns = now_ns;
    }
    record.verified_until_ns = until;
    record.successes += 1;
    if let Some(state) = SOURCES.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup; the XDP program reads this copy.
        unsafe { (*state).verified_until_ns = until };
    }
    bump(event_counter_index(EventCounter::Verifications));
}

/// A 401 or 407. A second one to a flow whose first was never followed by a success is a
/// failure (a wrong password answered with another challenge, or a scanner collecting them);
/// so is any one past `auth_max_unanswered` open challenges at an unverified address (a scanner
/// changing its port for each request).
#[inline(always)]
fn challenge(cfg: &Config, client: &Client, now_ns: u64) -> Option<AuthFailure> {
    let mut failure = None;
    if let Some(flow) = flow_of(&client.flow, now_ns) {
        if challenge_open(flow, now_ns) {
            failure = Some(AuthFailure::Rechallenged);
        }
        flow.challenged_at_ns = now_ns;
    }
    if let Some(answers) = answers_of(client.key, now_ns) {
        restart_window_if_over(cfg, answers, now_ns);
        answers.open_challenges += 1;
        answers.answers += 1;
        if failure.is_none()
            && !client.verified
            && answers.open_challenges > cfg.auth_max_unanswered
        {
            failure = Some(AuthFailure::Unanswered);
        }
    }
    failure
}

#[inline(always)]
fn restart_window_if_over(cfg: &Config, answers: &mut AnswerState, now_ns: u64) {
    if now_ns.wrapping_sub(answers.window_start_ns) >= cfg.auth_window_ns {
        answers.window_start_ns = now_ns;
        answers.failures = 0;
        answers.open_challenges = 0;
    }
}

/// Counts a failure against the client and bans past the thresholds: an unverified address as a
/// whole, or one flow of a verified address (and the address only past its own, higher, count).
#[inline(never)]
fn count_failure(cfg: &Config, client: &Client, kind: AuthFailure, now_ns: u64) {
    bump(event_counter_index(failure_counter(kind)));
    let Some(answers) = answers_of(client.key, now_ns) else {
        return;
    };
    restart_window_if_over(cfg, answers, now_ns);
    answers.failures += 1;
    if client.verified {
        if let Some(flow) = flow_of(&client.flow, now_ns) {
            if now_ns.wrapping_sub(flow.window_start_ns) >= cfg.auth_window_ns {
                flow.window_start_ns = now_ns;
                flow.failures = 0;
            }
            flow.failures += 1;
            if flow.failures >= cfg.auth_max_flow_failures && now_ns >= flow.banned_until_ns {
                flow.failures = 0;
                ban_flow(cfg, client, flow, kind, now_ns);
            }
        }
        if answers.failures < cfg.auth_max_failures_verified {
            return;
        }
    } else if answers.failures < cfg.auth_max_failures {
        return;
    }
    answers.failures = 0;
    answers.open_challenges = 0;
    ban_address(cfg, client.key, kind, now_ns);
}

/// Bans the client's address for failed authentication, with the escalation of rate bans.
#[inline(always)]
fn ban_address(cfg: &Config, key: &SourceKey, kind: AuthFailure, now_ns: u64) {
    let state = match SOURCES.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup; races only lose an update.
        Some(state) => unsafe { &mut *state },
        None => {
            let Some(staged) = NEW_SOURCE.get_ptr_mut(0) else {
                return;
            };
            // SAFETY: per-CPU scratch entry, used by this packet only.
            let staged: &mut SourceState = unsafe { &mut *staged };
            *staged = SourceState {
                window_start_ns: now_ns,
                ..SourceState::default()
            };
            if SOURCES.insert(key, &*staged, 0).is_err() {
                bump(event_counter_index(EventCounter::TrackFailures));
                return;
            }
            match SOURCES.get_ptr_mut(key) {
                // SAFETY: as above.
                Some(state) => unsafe { &mut *state },
                None => return,
            }
        }
    };
    // Answers to requests that passed before the ban still go out; they do not ban again.
    if now_ns < state.banned_until_ns {
        return;
    }
    impose_ban(cfg, key, state, BAN_CLASS_AUTH | kind as u8, 0, now_ns);
    bump(event_counter_index(EventCounter::AuthBans));
}

/// Bans one flow of a verified address: the phone with the wrong password, not its office.
#[inline(always)]
fn ban_flow(cfg: &Config, client: &Client, flow: &mut FlowState, kind: AuthFailure, now_ns: u64) {
    let flow_key = &client.flow;
    let monitor = cfg.has_flag(flags::MONITOR);
    let shift = if flow.strikes < 10 { flow.strikes } else { 10 };
    let mut duration_ns = cfg.flow_ban_ns << shift;
    if duration_ns > cfg.ban_max_ns {
        duration_ns = cfg.ban_max_ns;
    }
    flow.strikes += 1;
    bump(event_counter_index(EventCounter::FlowBans));
    let until = now_ns + duration_ns;
    // In monitor mode the ban is reported, never recorded, so turning enforcement on later
    // does not enforce it.
    if !monitor {
        flow.banned_until_ns = until;
        if let Some(state) = SOURCES.get_ptr_mut(client.key) {
            // SAFETY: pointer from a successful lookup; the XDP program reads it.
            let state = unsafe { &mut *state };
            if state.flow_bans_until_ns < until {
                state.flow_bans_until_ns = until;
            }
        }
    }
    let Some(mut entry) = BAN_EVENTS.reserve::<BanEvent>(0) else {
        bump(event_counter_index(EventCounter::EventsLost));
        return;
    };
    entry.write(BanEvent {
        addr: flow_key.addr,
        now_ns,
        banned_until_ns: until,
        duration_ns,
        window_ns: 0,
        window_packets: 0,
        strikes: flow.strikes,
        kind: if monitor {
            ban_event_kind::WOULD_FLOW_BAN
        } else {
            ban_event_kind::FLOW_BAN
        },
        limit_class: BAN_CLASS_AUTH | kind as u8,
        port: flow_key.port,
        prefix_len: 0,
        _pad: [0; 3],
    });
    entry.submit(0);
}

/// The reflection guard: one more challenge or error to this unverified destination? Allowlisted
/// and protected destinations are never capped (looked up only when a bucket runs dry).
#[inline(never)]
fn reflection_allowed(cfg: &Config, client: &Client, now_ns: u64) -> bool {
    let (key, dst) = (client.key, &client.flow.addr);
    let mut counter = None;
    if let Some(answers) = answers_of(key, now_ns)
        && !cfg.reflection_per_destination.is_unlimited()
        && !conforms(
            &mut answers.reply_tat_ns,
            &cfg.reflection_per_destination,
            now_ns,
        )
    {
        counter = Some(EventCounter::ReflectionDestinationDrops);
    }
    if counter.is_none()
        && !cfg.reflection_total.is_unlimited()
        && let Some(tat) = global_bucket(GLOBAL_BUCKETS_REFLECTION)
        && !conforms(tat, &cfg.reflection_total, now_ns)
    {
        counter = Some(EventCounter::ReflectionTotalDrops);
    }
    let Some(counter) = counter else {
        return true;
    };
    if is_allowlisted(dst) || is_protected(dst) {
        return true;
    }
    bump(event_counter_index(counter));
    if let Some(answers) = ANSWERS.get_ptr_mut(key) {
        // SAFETY: pointer from a successful lookup.
        unsafe { (*answers).reflection_drops += 1 };
    }
    // Monitor mode counts what it would drop and sends everything.
    cfg.has_flag(flags::MONITOR)
}
