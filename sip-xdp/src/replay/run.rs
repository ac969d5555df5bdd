//! One config's run over a capture: the programs loaded with the replay clock on private maps,
//! every frame through `BPF_PROG_TEST_RUN` at its capture time.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use ipnet::IpNet;
use sip_xdp_common::{BanEvent, EventCounter, MethodClass, Verdict, map_names};

use super::{BannedThenSucceeded, Capture, ReplayBan, ReplayError, RunReport, VerdictCount};
use crate::{
    config::Settings,
    events::{BanEventKind, BanRecord},
    loader::{self, LoadOptions},
    maps::SipMaps,
};

const XDP_DROP: u32 = 1;
const TC_ACT_SHOT: u32 = 2;

/// What one run needs besides the capture.
pub struct ReplayOptions<'a> {
    pub settings: &'a Settings,
    /// How the report names the config ("built-in defaults" or the file).
    pub config_name: String,
    /// Frames from these addresses are the server's: they go through the egress program.
    pub servers: &'a [IpAddr],
    /// Allowlisted for the run (the config holds no lists; the operator's live ones are in the
    /// state file).
    pub allow: &'a [IpNet],
    /// Called every few thousand frames with (frames done, frames in all).
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

/// A frame's addresses, ports and payload, read in user space (for its direction and, for the
/// server's answers, whether it accepts a client's credentials).
struct Endpoints<'a> {
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    payload: &'a [u8],
}

fn endpoints(frame: &[u8]) -> Option<Endpoints<'_>> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = match packet.net? {
        NetSlice::Ipv4(ip) => (
            IpAddr::V4(ip.header().source_addr()),
            IpAddr::V4(ip.header().destination_addr()),
        ),
        NetSlice::Ipv6(ip) => (
            IpAddr::V6(ip.header().source_addr()),
            IpAddr::V6(ip.header().destination_addr()),
        ),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let (dst_port, payload) = match packet.transport {
        Some(TransportSlice::Udp(udp)) => (udp.destination_port(), udp.payload()),
        Some(TransportSlice::Tcp(tcp)) => (tcp.destination_port(), tcp.payload()),
        _ => (0, &[][..]),
    };
    Some(Endpoints {
        src,
        dst,
        dst_port,
        payload,
    })
}

/// A 2xx answering a REGISTER or an INVITE: the server accepted the client's credentials.
fn is_success(payload: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(&payload[..payload.len().min(2048)]) else {
        return false;
    };
    let mut lines = text.lines();
    let Some(status) = lines.next() else {
        return false;
    };
    let ok = status
        .strip_prefix("SIP/2.0 ")
        .is_some_and(|rest| rest.starts_with('2'));
    ok && lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("cseq:")
            && (lower.trim_end().ends_with(" register") || lower.trim_end().ends_with(" invite"))
    })
}

/// The servers of a capture when the operator names none: the address most SIP-port packets
/// go to.
pub fn infer_servers(capture: &Capture, settings: &Settings) -> Vec<IpAddr> {
    let kernel = settings.kernel_config();
    let sip_port = |port: u16| {
        port != 0 && (kernel.sip_ports.contains(&port) || kernel.tcp_ports.contains(&port))
    };
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for frame in &capture.frames {
        if let Some(e) = endpoints(&frame.data)
            && sip_port(e.dst_port)
        {
            *counts.entry(e.dst).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(addr, n)| (n, std::cmp::Reverse(addr)))
        .map(|(addr, _)| vec![addr])
        .unwrap_or_default()
}

fn run_error(what: &'static str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Run {
        what,
        detail: e.to_string(),
    }
}

fn test_run<P>(program: &P, frame: &[u8]) -> Result<u32, ReplayError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    program
        .test_run(opts)
        .map(|result| result.return_value)
        .map_err(|e| run_error("BPF_PROG_TEST_RUN", e))
}

/// The private programs and maps of one run.
struct Programs {
    ebpf: Ebpf,
    maps: SipMaps,
    clock: Array<MapData, u64>,
    events: RingBuf<MapData>,
    egress: bool,
}

fn load(options: &ReplayOptions) -> Result<Programs, ReplayError> {
    let settings = options.settings;
    let load_options = LoadOptions {
        max_sources: settings.datapath.max_sources,
        egress: settings.answers.enabled,
        scan: settings.signatures.enabled,
    };
    let mut ebpf = loader::load_replay(&load_options)?;
    let take = |ebpf: &mut Ebpf, name: &'static str| {
        ebpf.take_map(name).ok_or(ReplayError::Run {
            what: "map lookup",
            detail: format!("the object has no map {name}; rebuild sip-xdp"),
        })
    };
    let events = RingBuf::try_from(take(&mut ebpf, map_names::BAN_EVENTS)?)
        .map_err(|e| run_error("ban event ring", e))?;
    let clock = Array::try_from(take(&mut ebpf, map_names::REPLAY_NOW)?)
        .map_err(|e| run_error("replay clock", e))?;
    let mut maps = SipMaps::take_from(&mut ebpf)?;
    // The config's signatures (runtime edits live in the operator's state file, not here).
    let mut config = settings.kernel_config();
    let signatures = if settings.signatures.enabled {
        settings.signatures.keys()
    } else {
        Vec::new()
    };
    if maps.has_signatures() {
        maps.sync_signatures(&signatures)?;
    }
    if signatures.is_empty() || !maps.has_signatures() {
        config.flags &= !sip_xdp_common::flags::SIGNATURES;
    } else {
        config.flags |= sip_xdp_common::flags::SIGNATURES;
    }
    maps.write_config(&config)?;
    for net in options.allow {
        maps.allow(*net)?;
    }
    Ok(Programs {
        ebpf,
        maps,
        clock,
        events,
        egress: load_options.egress,
    })
}

/// Runs the capture through one config.
pub fn replay(capture: &Capture, options: &ReplayOptions) -> Result<RunReport, ReplayError> {
    let mut programs = load(options)?;
    let servers: HashSet<IpAddr> = options.servers.iter().copied().collect();
    let first_ns = capture.frames.first().map_or(0, |f| f.ts_ns);
    let secs = |ns: u64| ns.saturating_sub(first_ns) as f64 / 1e9;
    let mut report = RunReport {
        config: options.config_name.clone(),
        ingress_frames: 0,
        egress_frames: 0,
        answers_skipped: 0,
        answers_dropped: 0,
        packets: Vec::new(),
        bans: Vec::new(),
        banned_then_succeeded: Vec::new(),
        events_lost: 0,
    };
    // The last XDP action on each client's request, and when the server accepted each client.
    let mut last_dropped: HashMap<IpAddr, bool> = HashMap::new();
    let mut successes: HashMap<IpAddr, Vec<u64>> = HashMap::new();
    let mut ban_times: Vec<(IpAddr, u64)> = Vec::new();
    let mut now_ns = 0u64;
    let total = capture.frames.len();
    for (done, frame) in capture.frames.iter().enumerate() {
        if let Some(progress) = options.progress
            && done % 4096 == 0
        {
            progress(done, total);
        }
        // The programs' clock never runs backwards, even where a capture's does.
        now_ns = now_ns.max(frame.ts_ns);
        programs
            .clock
            .set(0, now_ns, 0)
            .map_err(|e| run_error("replay clock", e))?;
        let ends = endpoints(&frame.data);
        let from_server = ends.as_ref().is_some_and(|e| servers.contains(&e.src));
        if from_server {
            let e = ends.as_ref().expect("checked");
            if is_success(e.payload) {
                successes.entry(e.dst).or_default().push(frame.ts_ns);
            }
            if !programs.egress {
                continue;
            }
            if last_dropped.get(&e.dst).copied().unwrap_or(false) {
                report.answers_skipped += 1;
                continue;
            }
            let program = loader::egress_program(&mut programs.ebpf)?;
            if test_run(program, &frame.data)? == TC_ACT_SHOT {
                report.answers_dropped += 1;
            }
            report.egress_frames += 1;
        } else {
            let program = loader::xdp_program(&mut programs.ebpf)?;
            let action = test_run(program, &frame.data)?;
            report.ingress_frames += 1;
            if let Some(e) = &ends {
                last_dropped.insert(e.src, action == XDP_DROP);
            }
        }
        while let Some(item) = programs.events.next() {
            if item.len() != size_of::<BanEvent>() {
                continue;
            }
            // SAFETY: the programs submit whole `BanEvent`s (size checked above).
            let event: BanEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let Some(record) = BanRecord::decode(&event) else {
                continue;
            };
            if record.kind == BanEventKind::Expired {
                continue;
            }
            let source = match record.prefix_len {
                Some(len) => format!("{}/{len}", record.source),
                None => record.source.to_string(),
            };
            if record.prefix_len.is_none() {
                ban_times.push((record.source, event.now_ns));
            }
            report.bans.push(ReplayBan {
                source,
                at_secs: secs(event.now_ns),
                kind: record.kind.name(),
                origin: if record.prefix_len.is_some() {
                    "prefix"
                } else {
                    record.cause.origin()
                },
                cause: record.cause.name(),
                duration_secs: record.duration_ns / 1_000_000_000,
                strikes: record.strikes,
            });
        }
    }
    if let Some(progress) = options.progress {
        progress(total, total);
    }
    let counters = programs.maps.counters()?;
    for verdict in Verdict::ALL {
        for class in MethodClass::ALL {
            let packets = counters.packets(verdict, class);
            if packets > 0 {
                report.packets.push(VerdictCount {
                    verdict: verdict.name(),
                    class: class.name(),
                    packets,
                });
            }
        }
    }
    report.events_lost = counters.event(EventCounter::EventsLost);
    for (source, banned_ns) in ban_times {
        if let Some(&succeeded_ns) = successes
            .get(&source)
            .and_then(|times| times.iter().find(|&&t| t > banned_ns))
        {
            report.banned_then_succeeded.push(BannedThenSucceeded {
                source,
                banned_at_secs: secs(banned_ns),
                succeeded_at_secs: secs(succeeded_ns),
            });
        }
    }
    Ok(report)
}
