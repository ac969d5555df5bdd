//! What every run of the head-to-head shares: the addresses and ports of the scene, the two
//! ways the flood reaches the server (`Mode`), and the workspace paths and CPU choices
//! (`Context`).
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use sip_xdp_tests::netns::{CLIENT_V4_A, CLIENT_V4_B};

/// The flooding source and the phone that keeps registering through the flood.
pub(super) const FLOOD_SOURCE: Ipv4Addr = CLIENT_V4_A;
/// The forged flood's sources: `FORGED_FIRST..=FORGED_LAST` of this /24, one at random per
/// frame (the server's /24; its own .1 and the network and broadcast addresses left out).
pub(super) const FORGED_NET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 0);
pub(super) const FORGED_FIRST: u8 = 2;
pub(super) const FORGED_SOURCES: u8 = 250;
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
    /// As `Frames`, but every frame from a forged source: one of `FORGED_SOURCES` addresses of
    /// `FORGED_NET`, drawn at random by the sender's XDP program.
    Forged,
}

impl Mode {
    pub(super) const ALL: [Mode; 3] = [Mode::Frames, Mode::Socket, Mode::Forged];
    /// The modes the chart draws (one column each).
    pub(super) const CHARTED: [Mode; 2] = [Mode::Frames, Mode::Socket];

    pub(super) fn packets(self, ctx: &Context) -> u32 {
        match self {
            Mode::Frames | Mode::Forged => ctx.frame_packets,
            Mode::Socket => ctx.socket_packets,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Frames => "frames",
            Mode::Socket => "socket",
            Mode::Forged => "forged",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            Mode::Frames => "NIC-like path: pre-built frames arrive as XDP frames",
            Mode::Socket => "socket path: packets arrive as socket buffers from a local UDP socket",
            Mode::Forged => {
                "forged-source flood on the NIC-like path: each frame from a random one of 250 \
                 addresses of 203.0.113.0/24"
            }
        }
    }

    /// How many sources the flood comes from.
    pub(super) fn sources(self) -> u64 {
        match self {
            Mode::Frames | Mode::Socket => 1,
            Mode::Forged => u64::from(FORGED_SOURCES),
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
