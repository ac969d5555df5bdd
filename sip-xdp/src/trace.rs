//! `sip-xdp trace`: the kernel's decision for each packet of chosen sources, as it happens.
//!
//! The CIDRs go into the pinned `TRACED` trie, and `Config::trace_until_ns` (in both config
//! slots' live one) is kept a few seconds ahead while the trace runs: the XDP program tests it
//! once per SIP packet and reports the traced sources' packets in `TRACE_EVENTS`. A trace whose
//! process dies stops by itself when that end passes; [`Trace::stop`] ends it at once.
use std::{net::IpAddr, time::Duration};

use aya::maps::{LpmTrie, MapData, RingBuf};
use ipnet::IpNet;
use serde::Serialize;
use sip_xdp_common::{
    BanCause, CONFIG_VERSION, Config, LimitClass, MethodClass, TraceEvent, Verdict, trace_lists,
};
use thiserror::Error;

use crate::{
    loader::{PinDir, PinError},
    maps::{self, MapsError, SipMaps, cidr_key, key_addr},
    time::monotonic_now_ns,
};

/// How far ahead a running trace keeps `trace_until_ns`: a dead trace stops within this.
pub const TRACE_LEASE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum TraceError {
    #[error(
        "nothing is attached here ({0}): `sip-xdp trace` follows the attached program; attach \
         first (`sip-xdp attach --iface IFACE`)"
    )]
    NotAttached(#[source] MapsError),
    #[error(
        "the attached program predates `sip-xdp trace` (no TRACED map pinned): attach again with \
         this build"
    )]
    OldProgram,
    #[error("cannot trace more than {max} CIDRs at once")]
    TooMany { max: u32 },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("the kernel refused the trace entry for {net}: {detail}")]
    Traced { net: IpNet, detail: String },
}

/// One traced packet, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct TraceRecord {
    /// Monotonic nanoseconds (the program's clock).
    pub at_mono_ns: u64,
    pub source: IpAddr,
    pub port: u16,
    pub class: &'static str,
    pub verdict: &'static str,
    /// The bucket the class draws from and the tokens left in it after this packet (whole
    /// tokens; `None` when the class has no bucket or the source is not tracked).
    pub bucket: Option<&'static str>,
    pub tokens_left: Option<u64>,
    pub burst: Option<u64>,
    /// Seconds the source's ban still runs (0: not banned), with its cause and strikes.
    pub banned_for_secs: u64,
    pub ban: Option<String>,
    pub strikes: u8,
    pub allowlisted: bool,
    pub denylisted: bool,
    pub protected: bool,
    pub verified: bool,
    /// Reported by the scan program, after it read the request's headers.
    pub scanned: bool,
    /// An answer the server sent to the source (TC egress): its status code, and whether the
    /// egress program dropped it (the reflection guard); `class` is then `response`.
    pub answer: Option<u16>,
    pub answer_dropped: bool,
}

/// A running trace.
pub struct Trace {
    pins: PinDir,
    /// Opened once: the live config is read for every poll and rewritten at every renewal.
    maps: SipMaps,
    traced: LpmTrie<MapData, [u8; 16], u32>,
    events: RingBuf<MapData>,
    nets: Vec<IpNet>,
}

fn lists(bits: u8, bit: u8) -> bool {
    bits & bit != 0
}

/// Sets the live config's `trace_until_ns`, under the config lock.
fn set_trace_until(pins: &PinDir, maps: &mut SipMaps, until_ns: u64) -> Result<(), TraceError> {
    let _lock = pins.lock_config()?;
    let mut config = maps.read_config()?;
    if config.version != CONFIG_VERSION {
        // Nothing written yet: the defaults, which trace nothing.
        config = Config::DEFAULT;
    }
    config.trace_until_ns = until_ns;
    maps.write_config(&config)?;
    Ok(())
}

impl Trace {
    /// Starts tracing `nets` on the program attached with `pins`.
    pub fn start(pins: &PinDir, nets: &[IpNet]) -> Result<Trace, TraceError> {
        if nets.len() > sip_xdp_common::MAX_TRACED as usize {
            return Err(TraceError::TooMany {
                max: sip_xdp_common::MAX_TRACED,
            });
        }
        let maps = SipMaps::open_pinned(pins).map_err(TraceError::NotAttached)?;
        let mut traced = maps::open_traced(pins).map_err(|_| TraceError::OldProgram)?;
        let events = maps::open_trace_events(pins).map_err(|_| TraceError::OldProgram)?;
        for net in nets {
            traced
                .insert(&cidr_key(*net), 1, 0)
                .map_err(|e| TraceError::Traced {
                    net: *net,
                    detail: e.to_string(),
                })?;
        }
        let mut trace = Trace {
            pins: pins.clone(),
            maps,
            traced,
            events,
            nets: nets.iter().map(|n| n.trunc()).collect(),
        };
        // Events left from an earlier trace are not this one's.
        while trace.events.next().is_some() {}
        trace.renew()?;
        Ok(trace)
    }

    /// Moves the trace's end [`TRACE_LEASE`] ahead; call it every second or so.
    pub fn renew(&mut self) -> Result<(), TraceError> {
        let until = monotonic_now_ns() + TRACE_LEASE.as_nanos() as u64;
        set_trace_until(&self.pins, &mut self.maps, until)
    }

    /// The events sent since the last call, decoded against the live config (for the buckets'
    /// sizes); only those of this trace's CIDRs.
    pub fn poll(&mut self) -> Result<Vec<TraceRecord>, TraceError> {
        let config = self.maps.read_config()?;
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() != size_of::<TraceEvent>() {
                continue;
            }
            // SAFETY: the programs submit whole `TraceEvent`s (size checked above).
            let event: TraceEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let record = decode(&event, &config);
            if self.nets.iter().any(|net| net.contains(&record.source)) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Ends the trace: its CIDRs leave `TRACED`, and the program stops looking when no other
    /// trace's entries remain.
    pub fn stop(mut self) -> Result<(), TraceError> {
        for net in &self.nets {
            let _ = self.traced.remove(&cidr_key(*net));
        }
        let others = self.traced.keys().next().is_some();
        if !others {
            set_trace_until(&self.pins, &mut self.maps, 0)?;
        }
        Ok(())
    }
}

/// An event as the operator reads it.
pub fn decode(event: &TraceEvent, config: &Config) -> TraceRecord {
    let now = event.now_ns;
    let verified = lists(event.lists, trace_lists::VERIFIED);
    let tracked = lists(event.lists, trace_lists::TRACKED);
    let bucket = LimitClass::from_index(event.limit as usize);
    let limits = if verified {
        &config.verified_limits
    } else {
        &config.limits
    };
    let (tokens_left, burst) = match bucket.and_then(|b| limits.get(b as usize)) {
        Some(limit) if tracked && !limit.is_unlimited() => {
            let burst = limit.burst();
            let ahead = event.tat_ns.saturating_sub(now);
            let used = ahead.div_ceil(limit.interval_ns);
            (Some(burst.saturating_sub(used)), Some(burst))
        }
        _ => (None, None),
    };
    let banned_for_secs = event.banned_until_ns.saturating_sub(now) / 1_000_000_000;
    TraceRecord {
        at_mono_ns: now,
        source: key_addr(event.addr),
        port: event.port,
        class: MethodClass::from_index(event.class as usize).map_or("?", |c| c.name()),
        verdict: if lists(event.lists, trace_lists::ANSWER) {
            if lists(event.lists, trace_lists::ANSWER_DROPPED) {
                "answer_dropped"
            } else {
                "answer_sent"
            }
        } else {
            Verdict::from_index(event.verdict as usize).map_or("?", |v| v.name())
        },
        bucket: bucket.map(|b| b.name()),
        tokens_left,
        burst,
        banned_for_secs,
        ban: (banned_for_secs > 0)
            .then(|| BanCause::from_ban_class(event.ban_class))
            .flatten()
            .map(|cause| format!("{} ({})", cause.origin(), cause.name())),
        strikes: event.strikes,
        allowlisted: lists(event.lists, trace_lists::ALLOWLISTED),
        denylisted: lists(event.lists, trace_lists::DENYLISTED),
        protected: lists(event.lists, trace_lists::PROTECTED),
        verified,
        scanned: lists(event.lists, trace_lists::SCANNED),
        answer: lists(event.lists, trace_lists::ANSWER).then_some(event.status),
        answer_dropped: lists(event.lists, trace_lists::ANSWER_DROPPED),
    }
}
