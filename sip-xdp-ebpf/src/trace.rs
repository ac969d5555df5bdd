//! `sip-xdp trace`: the program's decision for each packet of the traced sources, with the
//! source's state after it, sent through `TRACE_EVENTS`.
//!
//! Off unless a trace runs: the XDP program tests `Config::trace_until_ns != 0` once per SIP
//! packet and calls [`record`] only then. `sip-xdp trace` keeps that end a few seconds ahead
//! while it runs, so a trace whose process died stops on its own; the events are rate-limited
//! (`TRACE_EVENTS_PER_SEC`) so tracing a flooding CIDR costs the datapath a bounded amount.
use aya_ebpf::{
    macros::map,
    maps::{LpmTrie, RingBuf, lpm_trie::Key},
};
use sip_xdp_common::{
    Config, EventCounter, MAX_TRACED, MethodClass, RateLimit, SourceKey, TRACE_EVENTS_BYTES,
    TRACE_EVENTS_PER_SEC, TraceEvent, event_counter_index, global_buckets, trace_lists,
};

use crate::{
    buckets::{NO_LIMIT, conforms, limit_index},
    clock,
    lists::{is_allowlisted, is_denylisted, is_protected},
    maps::{SOURCES, bump, global_bucket},
    sources::is_verified,
};

/// The traced sources (CIDRs), written by `sip-xdp trace`.
#[map(name = "TRACED")]
static TRACED: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_TRACED, 0);

#[map(name = "TRACE_EVENTS")]
static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(TRACE_EVENTS_BYTES, 0);

const TRACE_LIMIT: RateLimit = RateLimit::per_second(TRACE_EVENTS_PER_SEC, TRACE_EVENTS_PER_SEC);

/// What [`record`] reports of a packet besides its source, in one argument (a BPF call takes
/// five at most): its `outcome` (a `COUNTERS` index), the source's `port`, and `trace_lists`
/// bits to add.
#[inline(always)]
pub fn packed(outcome: usize, port: u16, extra: u8) -> u64 {
    (outcome as u64 & 0xffff_ffff) | (port as u64) << 32 | (extra as u64) << 48
}

/// Reports an answer the server sends to `client` (a traced source): its status code, and
/// whether the egress program dropped it. Not inlined, as [`record`].
#[inline(never)]
pub fn record_answer(cfg: &Config, client: &[u8; 16], port: u16, status: u32, dropped: bool) {
    let extra = trace_lists::ANSWER
        | if dropped {
            trace_lists::ANSWER_DROPPED
        } else {
            0
        };
    let key = SourceKey { addr: *client };
    record(cfg, client, &key, packed(status as usize, port, extra));
}

/// Reports the packet of `src` (its per-source `key`) with what [`packed`] packs, if a trace
/// runs and follows the source. Not inlined: the traced path's lookups stay out of the callers'
/// frames and walks.
#[inline(never)]
pub fn record(cfg: &Config, src: &[u8; 16], key: &SourceKey, packed: u64) {
    let outcome = (packed & 0xffff_ffff) as usize;
    let port = (packed >> 32) as u16;
    let extra = (packed >> 48) as u8;
    let now_ns = clock::now_ns();
    if now_ns >= cfg.trace_until_ns || TRACED.get(Key::new(128, *src)).is_none() {
        return;
    }
    let within = match global_bucket(global_buckets::TRACE) {
        Some(tat) => conforms(tat, &TRACE_LIMIT, now_ns),
        None => false,
    };
    if !within {
        bump(event_counter_index(EventCounter::TraceDropped));
        return;
    }
    let Some(mut entry) = TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        bump(event_counter_index(EventCounter::TraceDropped));
        return;
    };
    // An answer carries its status code where a request carries its outcome.
    let answer = extra & trace_lists::ANSWER != 0;
    let class = if answer {
        MethodClass::Response as usize
    } else {
        outcome % MethodClass::COUNT
    };
    let limit = if answer { NO_LIMIT } else { limit_index(class) };
    let mut lists = extra;
    if is_allowlisted(src) {
        lists |= trace_lists::ALLOWLISTED;
    }
    if is_denylisted(src, now_ns) {
        lists |= trace_lists::DENYLISTED;
    }
    if is_protected(src) {
        lists |= trace_lists::PROTECTED;
    }
    let mut event = TraceEvent {
        addr: *src,
        now_ns,
        port,
        verdict: if answer {
            0
        } else {
            (outcome / MethodClass::COUNT) as u8
        },
        status: if answer { outcome as u16 } else { 0 },
        class: class as u8,
        limit: limit as u8,
        ..TraceEvent::default()
    };
    if let Some(state) = SOURCES.get_ptr(key) {
        // SAFETY: a copy out of a value that concurrent writers update in place.
        let state = unsafe { &*state };
        lists |= trace_lists::TRACKED;
        if is_verified(cfg, state.verified_until_ns, now_ns) {
            lists |= trace_lists::VERIFIED;
        }
        event.tat_ns = match state.tat_ns.get(limit) {
            Some(tat) => *tat,
            None => 0,
        };
        event.banned_until_ns = state.banned_until_ns;
        event.ban_class = state.ban_class;
        event.strikes = if state.strikes > 255 {
            255
        } else {
            state.strikes as u8
        };
    }
    event.lists = lists;
    entry.write(event);
    entry.submit(0);
}
