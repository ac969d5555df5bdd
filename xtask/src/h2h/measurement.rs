//! One run of one setup in one mode (`measure`), what it must show to count (`check`), and the
//! medians over a setup's runs (`Summary`).
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use sip_xdp_tests::netns::{SERVER_IF, SERVER_V4, VethPair};

use super::{
    context::{Context, FLOOD_SOURCE, Mode, PHONE_SOURCE, SIP_PORT},
    counters::{CpuTimes, VethStats, ksoftirqd_runtime_ns, thread_cpu_ns, udp_rcvbuf_errors},
    setups::{Installed, REGISTER_BURST, REGISTER_RATE_PER_S, Setup, install},
    traffic::{
        client_socket, flood_payload, receive, run_phone, send_flood, send_forged_frames,
        send_frames, server_socket, set_gro,
    },
};
use crate::host;

/// One run of one setup.
#[derive(Clone, Debug, Default)]
pub(super) struct Sample {
    pub(super) flood_sent: u64,
    pub(super) phone_sent: u64,
    pub(super) flood_delivered: u64,
    pub(super) phone_delivered: u64,
    pub(super) softirq_ns: u64,
    /// The part of softirq_ns on the sender's CPU, where veth runs the receive path.
    pub(super) sender_cpu_softirq_ns: u64,
    pub(super) receiver_cpu_ns: u64,
    /// The flood thread's CPU time plus its CPU's ksoftirqd's, both exact (scheduler clock).
    /// Without IRQ time accounting a softirq run on the back of a send is charged to the
    /// sending thread, so this is the send path (the same in every setup) plus the receive
    /// path that ran on that CPU.
    pub(super) sender_cpu_ns: u64,
    pub(super) send_wall: Duration,
    pub(super) window: Duration,
    pub(super) rcvbuf_errors: u64,
    /// Packets the client veth could not hand over (the server side's ring was full while its
    /// softirq waited for the CPU): they never reached a filter, so they are not counted as
    /// received.
    pub(super) veth_dropped: u64,
    /// Packets the server veth received (flood, phone, and the odd neighbour message).
    pub(super) server_rx_packets: u64,
    /// sip-xdp's own counters, sip-xdp runs only: (all verdicts, drop verdicts).
    pub(super) xdp_counted: Option<(u64, u64)>,
}

impl Sample {
    pub(super) fn sent(&self) -> u64 {
        self.flood_sent + self.phone_sent
    }
    /// Flood and phone packets that reached the server's interface: what the receiver's CPU
    /// figures are divided by.
    pub(super) fn packets(&self) -> u64 {
        self.sent().saturating_sub(self.veth_dropped).max(1)
    }
    pub(super) fn delivered(&self) -> u64 {
        self.flood_delivered + self.phone_delivered
    }
    pub(super) fn dropped(&self) -> u64 {
        self.packets().saturating_sub(self.delivered())
    }
    pub(super) fn softirq_ns_per_packet(&self) -> f64 {
        self.softirq_ns as f64 / self.packets() as f64
    }
    pub(super) fn receiver_ns_per_packet(&self) -> f64 {
        self.receiver_cpu_ns as f64 / self.packets() as f64
    }
    pub(super) fn sender_cpu_ns_per_packet(&self) -> f64 {
        self.sender_cpu_ns as f64 / self.packets() as f64
    }
    pub(super) fn total_ns_per_packet(&self) -> f64 {
        self.softirq_ns_per_packet() + self.receiver_ns_per_packet()
    }
    /// Only for setups that filter: without one the few packets lost to a full socket
    /// buffer are no measure of anything.
    pub(super) fn softirq_ns_per_dropped(&self, setup: Setup) -> Option<f64> {
        (setup != Setup::NoFilter && self.dropped() > 0)
            .then(|| self.softirq_ns as f64 / self.dropped() as f64)
    }
    pub(super) fn drop_fraction(&self) -> f64 {
        self.dropped() as f64 / self.packets() as f64
    }
    pub(super) fn send_rate_pps(&self) -> f64 {
        self.flood_sent as f64 / self.send_wall.as_secs_f64()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if !values.len().is_multiple_of(2) {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians over one setup's runs (each metric on its own).
pub(super) struct Summary {
    pub(super) mode: Mode,
    pub(super) setup: Setup,
    pub(super) softirq: f64,
    pub(super) receiver: f64,
    pub(super) total: f64,
    pub(super) total_min: f64,
    pub(super) total_max: f64,
    pub(super) softirq_per_dropped: f64,
    pub(super) sender_cpu: f64,
    pub(super) flood_delivered: f64,
    pub(super) phone_delivered: f64,
    pub(super) phone_sent: f64,
    pub(super) drop_fraction: f64,
    pub(super) send_rate_pps: f64,
    pub(super) rcvbuf_errors: f64,
}

pub(super) fn summarize(mode: Mode, setup: Setup, samples: &[Sample]) -> Summary {
    let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    let totals: Vec<f64> = samples.iter().map(Sample::total_ns_per_packet).collect();
    Summary {
        mode,
        setup,
        softirq: m(&Sample::softirq_ns_per_packet),
        receiver: m(&Sample::receiver_ns_per_packet),
        total: m(&Sample::total_ns_per_packet),
        total_min: totals.iter().copied().fold(f64::INFINITY, f64::min),
        total_max: totals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        softirq_per_dropped: m(&|s| s.softirq_ns_per_dropped(setup).unwrap_or(f64::NAN)),
        sender_cpu: m(&Sample::sender_cpu_ns_per_packet),
        flood_delivered: m(&|s| s.flood_delivered as f64),
        phone_delivered: m(&|s| s.phone_delivered as f64),
        phone_sent: m(&|s| s.phone_sent as f64),
        drop_fraction: m(&Sample::drop_fraction),
        send_rate_pps: m(&Sample::send_rate_pps),
        rcvbuf_errors: m(&|s| s.rcvbuf_errors as f64),
    }
}

/// The summary of `setup` in `mode`.
pub(super) fn find(summaries: &[Summary], mode: Mode, setup: Setup) -> &Summary {
    summaries
        .iter()
        .find(|s| s.mode == mode && s.setup == setup)
        .expect("a summary per mode and setup")
}

pub(super) fn measure(mode: Mode, setup: Setup, ctx: &Context) -> Result<Sample> {
    let net = VethPair::new().context("creating the namespaces")?;
    // GRO on the server side, as on a NIC; on veth it also turns on the NAPI receive path that
    // takes XDP frames from the peer even when no XDP program runs here.
    net.server
        .run(|| set_gro(SERVER_IF))
        .context("enabling GRO on the server veth")?;
    let installed = install(setup, ctx, &net)?;
    let sip = SocketAddr::new(IpAddr::V4(SERVER_V4), SIP_PORT);
    let server = net.server.run(|| server_socket(sip))?;
    let flood = net.client.run(|| client_socket(FLOOD_SOURCE, sip))?;
    let phone = net.client.run(|| client_socket(PHONE_SOURCE, sip))?;
    let rcvbuf_before = net.server.run(udp_rcvbuf_errors)?;
    let veth_before = VethStats::read(&net)?;

    let flood_payload = flood_payload();
    let stop_receiver = AtomicBool::new(false);
    let before = CpuTimes::read()?;
    let started = Instant::now();
    let ksoftirqd_before = ksoftirqd_runtime_ns(ctx.ksoftirqd_pid)?;
    let (flood_sent, send_wall, sender_thread_ns, phone_sent, received) =
        std::thread::scope(|s| -> Result<_> {
            let receiver = s.spawn(|| receive(&server, &stop_receiver, ctx.receiver_cpu));
            let (stop_phone, phone_stop) = mpsc::channel::<()>();
            let phone_thread = s.spawn(move || run_phone(&phone, &phone_stop));
            let flood_thread = s.spawn(|| -> Result<(u64, Duration, u64)> {
                let timed = |send: &dyn Fn() -> Result<u64>| {
                    host::pin_to_cpu(ctx.sender_cpu)?;
                    let start = Instant::now();
                    let cpu_start = thread_cpu_ns();
                    let sent = send()?;
                    Ok((sent, start.elapsed(), thread_cpu_ns() - cpu_start))
                };
                match mode {
                    Mode::Socket => {
                        timed(&|| send_flood(&flood, &flood_payload, ctx.socket_packets))
                    }
                    Mode::Frames => net
                        .client
                        .run(|| timed(&|| send_frames(&flood_payload, ctx.frame_packets))),
                    Mode::Forged => net
                        .client
                        .run(|| timed(&|| send_forged_frames(&flood_payload, ctx.frame_packets))),
                }
            });
            let flood_result = flood_thread.join().expect("the flood thread panicked");
            drop(stop_phone);
            let phone_sent = phone_thread.join().expect("the phone thread panicked");
            stop_receiver.store(true, Ordering::Relaxed);
            let received = receiver.join().expect("the receiver thread panicked");
            let (flood_sent, send_wall, sender_thread_ns) = flood_result?;
            Ok((
                flood_sent,
                send_wall,
                sender_thread_ns,
                phone_sent?,
                received?,
            ))
        })?;
    let ksoftirqd_after = ksoftirqd_runtime_ns(ctx.ksoftirqd_pid)?;
    let window = started.elapsed();
    let after = CpuTimes::read()?;
    let rcvbuf_after = net.server.run(udp_rcvbuf_errors)?;
    let veth_after = VethStats::read(&net)?;
    let veth = veth_after.minus(&veth_before);
    let xdp_counted = match &installed {
        Installed::SipXdp(install) => Some(install.counted()?),
        _ => None,
    };
    let sample = Sample {
        flood_sent,
        phone_sent,
        flood_delivered: received.flood,
        phone_delivered: received.phone,
        softirq_ns: (after.softirq - before.softirq) * sip_xdp_common::NS_PER_SEC / ctx.user_hz,
        sender_cpu_softirq_ns: (after.per_cpu.get(ctx.sender_cpu).copied().unwrap_or(0)
            - before.per_cpu.get(ctx.sender_cpu).copied().unwrap_or(0))
            * sip_xdp_common::NS_PER_SEC
            / ctx.user_hz,
        receiver_cpu_ns: received.cpu_ns,
        sender_cpu_ns: sender_thread_ns + (ksoftirqd_after - ksoftirqd_before),
        send_wall,
        window,
        rcvbuf_errors: rcvbuf_after.saturating_sub(rcvbuf_before),
        veth_dropped: veth.client_tx_dropped,
        server_rx_packets: veth.server_rx_packets,
        xdp_counted,
    };
    check(mode, setup, &sample)?;
    drop(installed);
    drop(net);
    Ok(sample)
}

const VETH_OTHER_SLACK: u64 = 16;

/// What every run must show, or its figures mean nothing.
fn check(mode: Mode, setup: Setup, sample: &Sample) -> Result<()> {
    if let Some((seen, dropped)) = sample.xdp_counted {
        // The program sees every packet the server veth receives and drops all it does not
        // deliver: its counters and the socket must tell the same story, but for neighbour
        // messages that arrive between reading the veth's counter and the program's.
        ensure!(
            seen.abs_diff(sample.server_rx_packets) <= VETH_OTHER_SLACK,
            "sip-xdp counted {seen} packets but the server veth received {}",
            sample.server_rx_packets
        );
        // Exact but for packets veth refused that were neither flood nor phone (neighbour
        // messages: a handful per run at most).
        ensure!(
            (dropped + sample.delivered() + sample.rcvbuf_errors).abs_diff(sample.packets())
                <= VETH_OTHER_SLACK,
            "sip-xdp dropped {dropped}, the socket got {} and overflowed {} times, but {} \
             flood and phone packets reached the server veth",
            sample.delivered(),
            sample.rcvbuf_errors,
            sample.packets()
        );
    }
    if setup.is_floor() {
        ensure!(
            sample.delivered() == 0,
            "{} let {} packets through: it must drop everything to port {SIP_PORT}",
            setup.name(),
            sample.delivered()
        );
        return Ok(());
    }
    ensure!(
        sample.flood_delivered > 0,
        "no flood packet reached the server socket: the path through veth is broken"
    );
    if setup.limits() {
        // The burst, plus the rate over the whole window, plus slack for timer granularity;
        // per source (a forged flood's sources each have their own).
        let allowed = mode.sources()
            * (REGISTER_BURST + (REGISTER_RATE_PER_S * sample.window.as_secs_f64()).ceil() as u64)
            + 5;
        ensure!(
            sample.flood_delivered <= allowed,
            "{} let {} of {} flood REGISTERs through (at most {allowed} expected): the filter \
             is not limiting",
            setup.name(),
            sample.flood_delivered,
            sample.flood_sent
        );
        // A phone packet veth refused for a full ring never met the filter.
        ensure!(
            sample.phone_sent.saturating_sub(sample.phone_delivered) <= sample.veth_dropped,
            "{} delivered {} of the phone's {} REGISTERs (sent below the limit): it dropped \
             legitimate traffic",
            setup.name(),
            sample.phone_delivered,
            sample.phone_sent
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_skips_what_is_not_a_number() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(vec![f64::NAN]).is_nan());
    }

    #[test]
    fn per_packet_figures_count_what_reached_the_server_veth() {
        let sample = Sample {
            flood_sent: 1000,
            phone_sent: 10,
            flood_delivered: 40,
            phone_delivered: 10,
            veth_dropped: 10,
            softirq_ns: 100_000,
            ..Sample::default()
        };
        assert_eq!(sample.packets(), 1000);
        assert_eq!(sample.dropped(), 950);
        assert_eq!(sample.softirq_ns_per_packet(), 100.0);
        assert_eq!(sample.softirq_ns_per_dropped(Setup::NoFilter), None);
        assert!(sample.softirq_ns_per_dropped(Setup::SipXdp).is_some());
    }
}
