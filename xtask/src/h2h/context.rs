//! What every run of the head-to-head shares: the addresses and ports of the scene, the two
//! ways the flood reaches the server (`Mode`), and the workspace paths and CPU choices
//! (`Context`).
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use sip_xdp_tests::netns::{CLIENT_V4_A, CLIENT_V4_B};

/// The flooding source and the phone that keeps registering through the flood.
pub(super) const FLOOD_SOURCE: Ipv4Addr = CLIENT_V4_A;
pub(super) const PHONE_SOURCE: Ipv4Addr = CLIENT_V4_B;
pub(super) const SIP_PORT: u16 = 5060;
pub(super) const CLIENT_PORT: u16 = 5062;
/// Idle softirq is measured over this long before the runs (reported, not subtracted).
pub(super) const IDLE_SAMPLE: Duration = Duration::from_secs(2);

/// How the flood reaches the server's interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Mode {
    /// Pre-built frames handed to the client veth by XDP (BPF_PROG_TEST_RUN live frames):
    /// they reach the server side as XDP frames, with no socket buffer yet, as from a NIC.
    Frames,
    /// `sendmmsg` on a UDP socket: every packet is a socket buffer built by the client's stack
    /// before it crosses the veth.
    Socket,
}

impl Mode {
    pub(super) const ALL: [Mode; 2] = [Mode::Frames, Mode::Socket];

    pub(super) fn packets(self, ctx: &Context) -> u32 {
        match self {
            Mode::Frames => ctx.frame_packets,
            Mode::Socket => ctx.socket_packets,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Frames => "frames",
            Mode::Socket => "socket",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Mode::Frames => "NIC-like path: pre-built frames arrive as XDP frames",
            Mode::Socket => "socket path: packets arrive as socket buffers from a local UDP socket",
        }
    }
}

/// Workspace paths and the choices every run shares.
pub(super) struct Context {
    pub(super) root: PathBuf,
    pub(super) bin: PathBuf,
    pub(super) frame_packets: u32,
    pub(super) socket_packets: u32,
    /// Runs per setup (--runs).
    pub(super) runs: usize,
    pub(super) sender_cpu: usize,
    pub(super) receiver_cpu: usize,
    pub(super) user_hz: u64,
    pub(super) ksoftirqd_pid: u32,
}
