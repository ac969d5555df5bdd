//! `sip-xdp replay`: a capture run through the same compiled programs, on private maps, with
//! the capture's own timestamps as their clock, to see what a config would have done.
//!
//! - `capture.rs`: pcap/pcapng reading, frames made Ethernet.
//! - `run.rs`: the programs loaded with the replay clock (`loader::load_replay`), each frame
//!   through the XDP program (sent to the server) or the TC egress program (sent by it), the ban
//!   events collected.
//!
//! The production programs pay nothing for this: which clock they read is a constant fixed at
//! load (see `sip-xdp-ebpf/src/clock.rs`), and the verifier removes the path not taken.
use std::{net::IpAddr, path::PathBuf};

use serde::Serialize;
use thiserror::Error;

mod capture;
mod run;

pub use capture::{Capture, Frame, read};
pub use run::{ReplayOptions, infer_servers, replay};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot open the capture {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a pcap or pcapng capture: found {found}; write one with `tcpdump -w FILE` \
         (or `-i any`) or Wireshark's pcapng"
    )]
    NotACapture { path: PathBuf, found: String },
    #[error(
        "{path} holds link type {found}; a replay needs Ethernet frames (or Linux cooked or raw \
         IP captures): capture on the SIP interface itself (`tcpdump -i eth0 -w FILE`)"
    )]
    LinkType { path: PathBuf, found: String },
    #[error(
        "{path} is truncated: packet {packet} cannot be read ({detail}); the capture was cut off \
         while written (stop tcpdump with Ctrl-C, not by killing it) or copied incompletely"
    )]
    Truncated {
        path: PathBuf,
        packet: usize,
        detail: String,
    },
    #[error("{path} holds no packets")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Loader(#[from] crate::loader::LoaderError),
    #[error(transparent)]
    Maps(#[from] crate::maps::MapsError),
    #[error("the replay's {what} failed: {detail}")]
    Run { what: &'static str, detail: String },
}

/// Packets of one (verdict, class) pair.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct VerdictCount {
    pub verdict: &'static str,
    pub class: &'static str,
    pub packets: u64,
}

/// A ban the programs imposed (or, in monitor mode, would have).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplayBan {
    /// The banned address or prefix (CIDR for a prefix).
    pub source: String,
    /// Seconds from the capture's first packet.
    pub at_secs: f64,
    /// `ban`, `would_ban`, `flow_ban`, `would_flow_ban`.
    pub kind: &'static str,
    /// `rate`, `auth`, `fingerprint`, `trap` or `prefix`.
    pub origin: &'static str,
    /// The limit class or failure kind behind it.
    pub cause: &'static str,
    pub duration_secs: u64,
    pub strikes: u32,
}

/// A source the replay banned although the capture shows the server accepting its
/// credentials afterwards: the false-positive risk of the config.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BannedThenSucceeded {
    pub source: IpAddr,
    pub banned_at_secs: f64,
    /// The first 2xx to its REGISTER or INVITE after the ban.
    pub succeeded_at_secs: f64,
}

/// What one config did to the capture.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The config file, or "built-in defaults".
    pub config: String,
    /// Frames through the XDP program (sent to the servers) and the egress program.
    pub ingress_frames: u64,
    pub egress_frames: u64,
    /// Answers not replayed because the replay had dropped their client's last request (the
    /// server would never have answered it).
    pub answers_skipped: u64,
    /// Answers the egress program dropped (the reflection guard).
    pub answers_dropped: u64,
    pub packets: Vec<VerdictCount>,
    pub bans: Vec<ReplayBan>,
    pub banned_then_succeeded: Vec<BannedThenSucceeded>,
    /// Ban events lost because the ring buffer filled between two reads (should be 0).
    pub events_lost: u64,
}

impl RunReport {
    /// Packets with this verdict, every class.
    pub fn by_verdict(&self, verdict: &str) -> u64 {
        self.packets
            .iter()
            .filter(|c| c.verdict == verdict)
            .map(|c| c.packets)
            .sum()
    }
}

/// What differs between two configs' runs.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// (verdict, first run, second run) for every verdict whose count differs.
    pub verdicts: Vec<(String, u64, u64)>,
    /// Sources (or prefixes) banned by one run only.
    pub banned_only_first: Vec<String>,
    pub banned_only_second: Vec<String>,
}

/// The whole replay: the capture, the run, and the run of a second config if asked.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub capture: CaptureSummary,
    pub run: RunReport,
    pub second: Option<RunReport>,
    pub comparison: Option<Comparison>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaptureSummary {
    pub file: PathBuf,
    pub format: &'static str,
    pub link_types: Vec<String>,
    pub frames: u64,
    pub duration_secs: f64,
    /// The server addresses: frames from them go through the egress program.
    pub servers: Vec<IpAddr>,
    /// Frames the capture kept shorter than they were (its snap length): their verdicts may
    /// differ from the live program's.
    pub snapped: u64,
}

/// Compares two runs.
pub fn compare(first: &RunReport, second: &RunReport) -> Comparison {
    let mut verdicts = Vec::new();
    for verdict in sip_xdp_common::Verdict::ALL {
        let (a, b) = (
            first.by_verdict(verdict.name()),
            second.by_verdict(verdict.name()),
        );
        if a != b {
            verdicts.push((verdict.name().to_owned(), a, b));
        }
    }
    let banned = |run: &RunReport| -> std::collections::BTreeSet<String> {
        run.bans.iter().map(|b| b.source.clone()).collect()
    };
    let (a, b) = (banned(first), banned(second));
    Comparison {
        verdicts,
        banned_only_first: a.difference(&b).cloned().collect(),
        banned_only_second: b.difference(&a).cloned().collect(),
    }
}
