//! REPORT.md: the machine, the summary against issue 4's target, the setups, the medians per
//! mode, sip-xdp's memory, every run, the method and the caveats.
use std::{collections::BTreeMap, fmt::Write as _, process::Command, time::Duration};

use sip_xdp_tests::netns::{SERVER_IF, SERVER_V4};

use super::{
    bpf::FRAME_BATCH,
    context::{Context, FLOOD_SOURCE, IDLE_SAMPLE, Mode, PHONE_SOURCE, SIP_PORT},
    measurement::{Sample, Summary, find},
    memory::Memory,
    setups::{ALLOWLISTED, Setup},
    traffic::{
        PHONE_INTERVAL, RECV_BATCH, RECV_QUIET, SEND_BATCH, SERVER_RCVBUF_BYTES, flood_payload,
    },
};
use crate::host::{Machine, Untracked, command_output, read_trimmed};

/// The machine, and the netfilter tools measured against sip-xdp.
pub(super) struct Environment {
    machine: Machine,
    loadavg: String,
    nft: String,
    iptables: String,
}

pub(super) fn environment() -> Environment {
    let unknown = || "unknown".to_owned();
    Environment {
        machine: Machine::read(Untracked::Ignore),
        loadavg: read_trimmed("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        nft: command_output("nft", &["-v"]).unwrap_or_else(unknown),
        iptables: command_output("iptables", &["-V"]).unwrap_or_else(unknown),
    }
}

/// 1234567 -> "1,234,567".
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(value: f64, reference: f64) -> String {
    if value.is_finite() && reference.is_finite() && reference > 0.0 {
        format!("{:.2}", value / reference)
    } else {
        "n/a".to_owned()
    }
}

fn ns(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        "n/a".to_owned()
    }
}

/// sip-xdp's kernel CPU per dropped packet over nftables'.
fn target_ratio(summaries: &[Summary], mode: Mode) -> f64 {
    find(summaries, mode, Setup::SipXdp).softirq_per_dropped
        / find(summaries, mode, Setup::Nftables).softirq_per_dropped
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= 0.25 { "met" } else { "not met" }
}

fn mode_section(w: &mut String, mode: Mode, summaries: &[Summary], packets: u32) {
    let get = |setup| find(summaries, mode, setup);
    let (nft, ipt, xdp) = (
        get(Setup::Nftables),
        get(Setup::Iptables),
        get(Setup::SipXdp),
    );
    let (unfiltered, nft_floor, xdp_floor) = (
        get(Setup::NoFilter),
        get(Setup::NftDropFloor),
        get(Setup::XdpDropFloor),
    );
    let _ = writeln!(w, "\n### {}\n", mode.title());
    let _ = writeln!(
        w,
        "| Setup | kernel softirq | server thread | total | total, min–max | × nftables (total) \
         | flood delivered to the socket | phone delivered | dropped | softirq per dropped \
         packet, ns | × nftables (per dropped) | sending CPU, exact | flood sent at |"
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for setup in Setup::ALL {
        let s = get(setup);
        let _ = writeln!(
            w,
            "| {} | {} | {} | **{}** | {}–{} | {} | {} of {} | {:.0} of {:.0} | {:.4} % | {} | {} \
             | {} | {} pkt/s |",
            setup.name(),
            ns(s.softirq),
            ns(s.receiver),
            ns(s.total),
            ns(s.total_min),
            ns(s.total_max),
            ratio(s.total, nft.total),
            thousands(s.flood_delivered as u64),
            thousands(u64::from(packets)),
            s.phone_delivered,
            s.phone_sent,
            s.drop_fraction * 100.0,
            ns(s.softirq_per_dropped),
            ratio(s.softirq_per_dropped, nft.softirq_per_dropped),
            ns(s.sender_cpu),
            thousands(s.send_rate_pps as u64),
        );
    }
    let target = target_ratio(summaries, mode);
    let _ = writeln!(
        w,
        "\n**Kernel CPU per dropped packet, sip-xdp vs nftables: {} ns vs {} ns = {}×** ({}). \
         Against iptables: {}×. Total receiver-side CPU per packet: {}× nftables, \
         {}× iptables, {}× the unfiltered server.",
        ns(xdp.softirq_per_dropped),
        ns(nft.softirq_per_dropped),
        ratio(xdp.softirq_per_dropped, nft.softirq_per_dropped),
        if mode == Mode::Forged {
            "issue 4 set no target for a forged flood".to_owned()
        } else {
            format!("target ≤ 0.25×: {}", verdict(target))
        },
        ratio(xdp.softirq_per_dropped, ipt.softirq_per_dropped),
        ratio(xdp.total, nft.total),
        ratio(xdp.total, ipt.total),
        ratio(xdp.total, unfiltered.total),
    );
    let _ = writeln!(
        w,
        "\nWithout a filter the server's socket took {} of {} flood REGISTERs ({:.0} lost to a \
         full socket buffer, median) and the thread reading it spent {} ns per packet — before \
         any SIP parsing, which a real server adds.",
        thousands(unfiltered.flood_delivered as u64),
        thousands(u64::from(packets)),
        unfiltered.rcvbuf_errors,
        ns(unfiltered.receiver),
    );
    let nft_above = nft.softirq_per_dropped - nft_floor.softirq_per_dropped;
    let xdp_above = xdp.softirq_per_dropped - xdp_floor.softirq_per_dropped;
    let _ = writeln!(
        w,
        "\nThe floors drop every packet at the same hooks with no logic: {} ns per drop at \
         nftables' netdev ingress, {} ns for an XDP program (XDP_DROP floor ÷ nft drop floor = \
         {}×). Above its own floor the nftables ruleset adds {} ns per drop and sip-xdp {} ns.",
        ns(nft_floor.softirq_per_dropped),
        ns(xdp_floor.softirq_per_dropped),
        ratio(xdp_floor.softirq_per_dropped, nft_floor.softirq_per_dropped),
        ns(nft_above),
        ns(xdp_above),
    );
    let _ = writeln!(
        w,
        "\nExact-clock cross-check (*sending CPU*, differences only): sip-xdp − nftables = {} ns \
         per packet (softirq figures: {} ns); sip-xdp − iptables = {} ns ({} ns); sip-xdp − \
         XDP_DROP floor = {} ns ({} ns); nftables − nft drop floor = {} ns ({} ns).",
        ns(xdp.sender_cpu - nft.sender_cpu),
        ns(xdp.softirq - nft.softirq),
        ns(xdp.sender_cpu - ipt.sender_cpu),
        ns(xdp.softirq - ipt.softirq),
        ns(xdp.sender_cpu - xdp_floor.sender_cpu),
        ns(xdp.softirq - xdp_floor.softirq),
        ns(nft.sender_cpu - nft_floor.sender_cpu),
        ns(nft.softirq - nft_floor.softirq),
    );
}

/// REPORT.md, section by section.
#[allow(clippy::too_many_arguments)]
pub(super) fn report(
    env: &Environment,
    ctx: &Context,
    samples: &BTreeMap<(Mode, Setup), Vec<Sample>>,
    summaries: &[Summary],
    memory: &Memory,
    idle_softirq_ms_per_s: f64,
    elapsed: Duration,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    header_section(w, env, ctx, elapsed);
    summary_section(w, ctx, samples, summaries);
    setups_section(w);
    results_section(w, ctx, summaries);
    memory_section(w, memory);
    runs_section(w, samples);
    method_section(w, ctx, samples);
    caveats_section(w, env, ctx, idle_softirq_ms_per_s);
    out
}

/// The title, the chart and the machine.
fn header_section(w: &mut String, env: &Environment, ctx: &Context, elapsed: Duration) {
    let _ = writeln!(
        w,
        "# Head to head: sip-xdp, nftables and iptables on one REGISTER flood\n"
    );
    let _ = writeln!(
        w,
        "Generated by `cargo xtask h2h` (xtask/src/h2h/); rerun it to refresh this file and \
         [h2h.png](h2h.png).\n"
    );
    let _ = writeln!(
        w,
        "![receiver-side CPU per packet and packets delivered, per setup](h2h.png)\n"
    );
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| Date | {} |", env.machine.date);
    let _ = writeln!(
        w,
        "| Command | `sudo cargo xtask h2h --frame-packets {} --socket-packets {} --runs {}` (as \
         root; {:.0} s, not counting the sip-xdp release build) |",
        ctx.frame_packets,
        ctx.socket_packets,
        ctx.runs,
        elapsed.as_secs_f64()
    );
    let _ = writeln!(w, "| Kernel | {} |", env.machine.kernel);
    let _ = writeln!(
        w,
        "| CPU | {}, {} cores online |",
        env.machine.cpu_model, env.machine.cpus
    );
    let _ = writeln!(
        w,
        "| Load average at start | {} (other work shared the machine's CPUs) |",
        env.loadavg
    );
    let _ = writeln!(w, "| Commit | {} |", env.machine.commit);
    let _ = writeln!(w, "| Tools | {}; {} |", env.nft, env.iptables);
    let _ = writeln!(w, "| sip-xdp binary | `{}` |", ctx.bin.display());
}

/// Issue 4's target per mode, and what the limiters let through.
fn summary_section(
    w: &mut String,
    ctx: &Context,
    samples: &BTreeMap<(Mode, Setup), Vec<Sample>>,
    summaries: &[Summary],
) {
    let _ = writeln!(w, "\n## Summary\n");
    let frames = target_ratio(summaries, Mode::Frames);
    let socket = target_ratio(summaries, Mode::Socket);
    let _ = writeln!(
        w,
        "Issue 4's target: sip-xdp spends at most a quarter of nftables' kernel CPU per dropped \
         packet. Measured (median of {} runs of {} packets in frames mode, {} in socket \
         mode):\n",
        ctx.runs,
        thousands(u64::from(ctx.frame_packets)),
        thousands(u64::from(ctx.socket_packets)),
    );
    let _ = writeln!(
        w,
        "* **{}: {}×** nftables' — target {}.",
        Mode::Frames.title(),
        ratio(frames, 1.0),
        verdict(frames)
    );
    let _ = writeln!(
        w,
        "* **{}: {}×** nftables' — target {}.",
        Mode::Socket.title(),
        ratio(socket, 1.0),
        verdict(socket)
    );
    let forged = target_ratio(summaries, Mode::Forged);
    let delivered = |setup| find(summaries, Mode::Forged, setup).flood_delivered as u64;
    let _ = writeln!(
        w,
        "* **{}: {}×** nftables' (issue 13's case; issue 4 set no target for it). Of {} forged \
         REGISTERs, nftables let {} through, iptables {}, sip-xdp {}: each source has a bucket \
         of its own in every limiter, and sip-xdp's /24 bucket bans the prefix once the \
         sources together have sent its burst.",
        Mode::Forged.title(),
        ratio(forged, 1.0),
        thousands(u64::from(ctx.frame_packets)),
        thousands(delivered(Setup::Nftables)),
        thousands(delivered(Setup::Iptables)),
        thousands(delivered(Setup::SipXdp)),
    );
    let limiter_runs = || {
        samples
            .iter()
            .filter(|((mode, setup), _)| setup.limits() && *mode != Mode::Forged)
            .flat_map(|(_, runs)| runs)
    };
    let phone_sent: u64 = limiter_runs().map(|s| s.phone_sent).sum();
    let phone_delivered: u64 = limiter_runs().map(|s| s.phone_delivered).sum();
    let max_flood: u64 = limiter_runs().map(|s| s.flood_delivered).max().unwrap_or(0);
    let _ = writeln!(
        w,
        "\nEvery limiter run cut the flood to its burst plus 5/s (at most {max_flood} flood \
         REGISTERs reached the socket in any run) and the phone below the limit got {} of its \
         {} REGISTERs through{}. Every setup of a mode was sent the same number of packets.",
        phone_delivered,
        phone_sent,
        if phone_delivered == phone_sent {
            ""
        } else {
            " (the rest were refused by veth for a full ring, before any filter)"
        }
    );
}

/// What each setup puts in the way of the flood.
fn setups_section(w: &mut String) {
    let _ = writeln!(w, "\n## Setups\n");
    let _ = writeln!(w, "| Setup | What filters the flood |\n|---|---|");
    for setup in Setup::ALL {
        let _ = writeln!(w, "| {} | {} |", setup.name(), setup.what());
    }
}

/// The medians, one table per mode.
fn results_section(w: &mut String, ctx: &Context, summaries: &[Summary]) {
    let _ = writeln!(w, "\n## Results (median of {} runs)", ctx.runs);
    let _ = writeln!(
        w,
        "\nCPU figures are receiver-side CPU time per packet that reached the server's veth, in \
         ns (the same number is ms per million packets). *Kernel softirq* is machine-wide softirq time from /proc/stat over \
         the run; *server thread* is the CPU time of the thread reading the SIP socket; *total* \
         is the two together. The sender's own CPU is not counted in them. *Sending CPU* is the \
         exact CPU time of the sending thread plus its CPU's ksoftirqd: it holds the sender's \
         own work (the same in every setup of a mode) and the receive path that runs on its \
         back, so its differences between setups are exact where the softirq figures are \
         tick-sampled."
    );
    for mode in Mode::ALL {
        mode_section(w, mode, summaries, mode.packets(ctx));
    }
}

/// sip-xdp's memory: the daemon's resident set and the pinned maps.
fn memory_section(w: &mut String, memory: &Memory) {
    let _ = writeln!(w, "\n## sip-xdp's memory\n");
    let total_memlock: u64 = memory.maps.iter().map(|m| m.memlock_bytes).sum();
    let _ = writeln!(
        w,
        "Daemon (`sip-xdp run --iface {SERVER_IF} --mode native --no-metrics`, release build, \
         adopting the attachment, read 2 s after it logged `sip-xdp running`): **VmRSS {} KiB** \
         (VmHWM {} KiB).\n",
        thousands(memory.daemon_rss_kib),
        thousands(memory.daemon_hwm_kib)
    );
    let _ = writeln!(
        w,
        "Kernel memory of the pinned maps at the configured sizes (`memlock:` in the fdinfo of \
         each map opened from the pin directory; preallocated maps are charged in full whether \
         used or not): **{:.1} MiB** in all.\n",
        total_memlock as f64 / (1 << 20) as f64
    );
    let _ = writeln!(
        w,
        "| Map | type | max entries | memlock |\n|---|---|---:|---:|"
    );
    for m in &memory.maps {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} KiB |",
            m.name,
            m.map_type,
            thousands(m.max_entries),
            thousands(m.memlock_bytes.div_ceil(1024))
        );
    }
    let _ = writeln!(
        w,
        "\nThe nftables meter and the hashlimit table allocate a small entry per source as \
         sources appear (one source here), so they have no comparable fixed cost."
    );
}

/// Every run of every setup.
fn runs_section(w: &mut String, samples: &BTreeMap<(Mode, Setup), Vec<Sample>>) {
    let _ = writeln!(w, "\n## Every run\n");
    let _ = writeln!(
        w,
        "| Mode | Setup | run | softirq ms | of it on the sender's CPU, ms | server thread ms | \
         sending CPU ms | window s | flood sent at | not handed over by veth | flood \
         delivered | phone | socket-buffer drops | sip-xdp drop counters |"
    );
    let _ = writeln!(
        w,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((mode, setup), runs) in samples {
        for (i, s) in runs.iter().enumerate() {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.2} | {} pkt/s | {} | {} | \
                 {}/{} | {} | {} |",
                mode.name(),
                setup.name(),
                i + 1,
                s.softirq_ns as f64 / 1e6,
                s.sender_cpu_softirq_ns as f64 / 1e6,
                s.receiver_cpu_ns as f64 / 1e6,
                s.sender_cpu_ns as f64 / 1e6,
                s.window.as_secs_f64(),
                thousands(s.send_rate_pps() as u64),
                thousands(s.veth_dropped),
                thousands(s.flood_delivered),
                s.phone_delivered,
                s.phone_sent,
                thousands(s.rcvbuf_errors),
                s.xdp_counted
                    .map_or_else(|| "–".to_owned(), |(_, dropped)| thousands(dropped)),
            );
        }
    }
}

/// How the runs were made and measured.
fn method_section(w: &mut String, ctx: &Context, samples: &BTreeMap<(Mode, Setup), Vec<Sample>>) {
    let _ = writeln!(w, "\n## Method\n");
    let _ = writeln!(
        w,
        "* Each run builds fresh namespaces with `sip_xdp_tests::netns::VethPair` (client \
         {FLOOD_SOURCE} and {PHONE_SOURCE}, server {SERVER_V4}, joined by veth), turns GRO on \
         for the server's veth (as on a NIC; on veth this also gives it the NAPI receive path), \
         loads one setup's filter in the server namespace only (`ip netns exec SRV nft -f \
         bench/h2h/nftables.nft`, `ip netns exec SRV iptables-restore < \
         bench/h2h/iptables.rules`, or the `sip-xdp` binary through `nsenter --net` with its own \
         pin directory under /sys/fs/bpf and its own state directory, detached and purged after \
         the run), and deletes the namespaces afterwards, so no meter, hashlimit entry or ban \
         carries over. Runs interleave the setups (round 1: every setup, round 2: every setup, \
         ...), first in frames mode, then in socket mode, then in forged mode."
    );
    let _ = writeln!(
        w,
        "* The flood: {} (frames mode) or {} (socket mode) identical REGISTERs from {FLOOD_SOURCE} ({} bytes of UDP payload, \
         `sip_xdp_tests::packet::register`), sent as fast as one thread pinned to CPU {} goes. \
         **Frames mode**: the full frame is built once (`sip_xdp_tests::packet::Frame`) and a \
         four-instruction XDP program (`return bpf_redirect(client veth)`) runs on it with \
         BPF_PROG_TEST_RUN in live-frames mode (the xdp-trafficgen technique), {FRAME_BATCH} \
         frames per batch: veth hands each frame to the server side as an XDP frame, so the \
         server's XDP program runs before any socket buffer exists, and without one the kernel \
         builds the socket buffer from the frame — as a NIC driver does. **Socket mode**: \
         `sendmmsg` ({SEND_BATCH} per call) on a connected UDP socket, so each packet is a \
         socket buffer built by the client's stack before it crosses the veth.",
        thousands(u64::from(ctx.frame_packets)),
        thousands(u64::from(ctx.socket_packets)),
        flood_payload().len(),
        ctx.sender_cpu,
    );
    let _ = writeln!(
        w,
        "* The phone: one REGISTER every {} ms from {PHONE_SOURCE} (below the 5/s limit) on a \
         UDP socket while the flood runs. Every limiter must deliver all of them and cut the \
         flood to its burst plus 5/s, the floors must deliver nothing, or the run fails. Every \
         allowlist holds {ALLOWLISTED}, which never sends.",
        PHONE_INTERVAL.as_millis()
    );
    let _ = writeln!(
        w,
        "* The server: a thread pinned to CPU {} reading a UDP socket bound to \
         {SERVER_V4}:{SIP_PORT} in the server namespace with `recvmmsg` ({RECV_BATCH} per call, \
         SO_RCVBUF forced to {} MiB), counting datagrams by source, until the senders are done \
         and the socket has been quiet for {} ms. Its CPU time is CLOCK_THREAD_CPUTIME_ID over \
         its loop.",
        ctx.receiver_cpu,
        SERVER_RCVBUF_BYTES >> 20,
        RECV_QUIET.as_millis()
    );
    let _ = writeln!(
        w,
        "* Kernel CPU: the softirq column of the `cpu` line of /proc/stat, read before the \
         senders start and after the server thread stops. The whole receive path runs in \
         softirq here — veth's NAPI poll with the XDP program, netfilter's ingress and \
         PREROUTING hooks, IP and UDP receive, queueing on the socket — and on veth it runs on \
         the sending CPU, right after each batch is handed over (the *of it on the sender's CPU* \
         column). *Per packet* means per packet that reached the server's veth: when the \
         server side's ring is full because its softirq is waiting for the CPU, veth refuses \
         the packet at the sender (the *not handed over by veth* column, at most {:.1} % of a \
         run here; no filter ever saw those). *Per dropped packet* divides the softirq time by the \
         packets that reached the veth but not the socket; the few delivered ones cost more, \
         so this slightly overstates the cost of a drop, alike for every setup. In sip-xdp \
         runs the program's own counters must account for every packet the server veth \
         received, or the run fails.",
        samples
            .values()
            .flatten()
            .map(|s| s.veth_dropped as f64 * 100.0 / s.sent() as f64)
            .fold(0.0, f64::max)
    );
}

/// What the figures do not show, or show only roughly.
fn caveats_section(w: &mut String, env: &Environment, ctx: &Context, idle_softirq_ms_per_s: f64) {
    let _ = writeln!(w, "\n## Caveats\n");
    let _ = writeln!(
        w,
        "* **Machine-wide, tick-sampled softirq.** The VM has {} CPUs and the kernel has no \
         CONFIG_IRQ_TIME_ACCOUNTING, so /proc/stat's softirq is sampled by the {} Hz scheduler \
         tick and printed in 1/{} s units: several percent of noise per run (the min–max \
         column), more on the shorter frames-mode runs. It also counts every other softirq on \
         the machine in the window: idle, that ran at {:.1} ms per second over {} s before the \
         runs (not subtracted). The load average above says how busy the rest of the machine \
         was. The *sending CPU* column is exact and backs the differences.",
        env.machine.cpus,
        kernel_hz().map_or_else(|| "?".to_owned(), |hz| hz.to_string()),
        ctx.user_hz,
        idle_softirq_ms_per_s,
        IDLE_SAMPLE.as_secs()
    );
    let _ = writeln!(
        w,
        "* **veth is not a NIC.** Frames mode is the closer model: the frame arrives without a \
         socket buffer and sip-xdp drops it before one is built, while nftables and iptables \
         see the socket buffer the kernel builds for them, as from a NIC. What frames mode lacks \
         is the driver's own work (DMA, descriptor rings, interrupts), the same for every setup. \
         In socket mode the packet already is a socket buffer when it reaches the server's veth, \
         and veth copies it into an XDP frame (its headroom is smaller than XDP's 256 bytes) \
         before an XDP program can run: sip-xdp pays an allocation and a copy per packet there \
         that it would not pay on hardware, which is why the two modes disagree."
    );
    let _ = writeln!(
        w,
        "* **The sender shares the softirq CPU.** A cheaper receive path lets the sender go \
         faster (the *flood sent at* column); every setup still sends the same count, and the \
         CPU figures are per packet."
    );
    let _ = writeln!(
        w,
        "* **iptables is iptables-nft** (Debian's default): `iptables-restore` turns the rules \
         into an nftables table of family `ip` at the raw PREROUTING hook; `hashlimit` becomes \
         a native nftables meter, `u32` runs as an xtables match inside nftables. \
         iptables-legacy is not measured."
    );
    let _ = writeln!(
        w,
        "* **What sip-xdp does with the flood:** the 41st REGISTER empties the bucket and bans \
         the source (first ban 60 s, extended while it keeps sending), so every later packet \
         takes the banned path; nftables and iptables keep passing 5 per second after the \
         burst. Both show in the *flood delivered* column. The banned path reads the source's \
         entry before the lists, so a banned source costs sip-xdp no allowlist lookup (`allow \
         add` forgets the entries of the sources it allowlists), while the nftables and \
         iptables rulesets look the allowlist set up first for every packet, as a ruleset must."
    );
    let _ = writeln!(
        w,
        "* Every packet here is IPv4 and a REGISTER. In the frames and socket modes it comes from \
         one source; in the forged mode from 250 addresses of one /24 drawn at random per frame \
         (the documentation ranges hold no more), which makes each limiter keep a bucket per \
         address, and sip-xdp ban the /24 by its prefix bucket. A flood over millions of \
         addresses (an LRU that churns) is measured in `cargo xtask bench`, not here."
    );
}

/// CONFIG_HZ, from /proc/config.gz if the kernel exposes it.
fn kernel_hz() -> Option<u64> {
    let out = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep '^CONFIG_HZ='",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("CONFIG_HZ=")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn ratios_and_ns_say_n_a_for_no_figure() {
        assert_eq!(ratio(1.0, 4.0), "0.25");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        assert_eq!(ratio(f64::NAN, 4.0), "n/a");
        assert_eq!(ns(12.6), "13");
        assert_eq!(ns(f64::NAN), "n/a");
        assert_eq!(verdict(0.25), "met");
        assert_eq!(verdict(0.26), "not met");
    }
}
