//! `cargo xtask demo`: the product at work on the embedded default config, in two throwaway
//! network namespaces joined by veth.
use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::maps::RingBuf;
use sip_xdp::{
    loader::{self, AttachMode, LoadOptions},
    maps::{SipMaps, key_addr},
};
use sip_xdp_common::{BanEvent, Config, EventCounter, LimitClass, MethodClass, Verdict, map_names};
use sip_xdp_tests::{
    netns::{CLIENT_V4_A, CLIENT_V4_B, SERVER_IF, SERVER_V4, VethPair},
    packet,
};

/// REGISTERs in the flood: bounded, sent as fast as one socket goes.
const FLOOD_REGISTERS: u32 = 5_000;
/// The legitimate phone: a digest exchange (two REGISTERs) this often, for this long.
const PHONE_INTERVAL: Duration = Duration::from_millis(250);
const PHONE_ROUNDS: u32 = 8;

pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the demo creates network namespaces and loads XDP: run it as root (sudo ./scripts/demo.sh)"
    );
    let config = Config::DEFAULT;
    println!(
        "sip-xdp demo: default config (REGISTER {}/s, burst {}; first ban {} s)",
        1e9 / config.limits[LimitClass::Register as usize].interval_ns as f64,
        config.limits[LimitClass::Register as usize].burst(),
        config.ban_base_ns / sip_xdp_common::NS_PER_SEC
    );

    let net = VethPair::new().context("creating the demo namespaces")?;
    println!(
        "namespaces {} (server {SERVER_V4}) and {} (phone {CLIENT_V4_B}, attacker {CLIENT_V4_A}) joined by veth",
        net.server.name(),
        net.client.name()
    );
    let mut ebpf = loader::load(&LoadOptions::default())?;
    let mut maps = SipMaps::take_from(&mut ebpf)?;
    maps.write_config(&config)?;
    let mut events = RingBuf::try_from(
        ebpf.take_map(map_names::BAN_EVENTS)
            .context("BAN_EVENTS map missing")?,
    )?;
    let (_, mode) = net
        .server
        .run(|| loader::attach(&mut ebpf, SERVER_IF, AttachMode::Auto))?;
    println!("XDP program attached to {SERVER_IF} in {mode:?} mode\n");

    let sip = SocketAddr::new(IpAddr::V4(SERVER_V4), 5060);
    let rtp = SocketAddr::new(IpAddr::V4(SERVER_V4), 10_000);
    let server_sip = net.server.run(|| bind(sip))?;
    let server_rtp = net.server.run(|| bind(rtp))?;
    let phone = net
        .client
        .run(|| bind(SocketAddr::new(IpAddr::V4(CLIENT_V4_B), 0)))?;
    let attacker = net
        .client
        .run(|| bind(SocketAddr::new(IpAddr::V4(CLIENT_V4_A), 0)))?;

    let mut sent: BTreeMap<&str, u32> = BTreeMap::new();
    let started = Instant::now();
    for round in 0..PHONE_ROUNDS {
        // The phone: REGISTER, (401), REGISTER with credentials.
        for seq in [2 * round, 2 * round + 1] {
            phone.send_to(&packet::register("alice", seq), sip)?;
            *sent.entry("phone REGISTER").or_default() += 1;
        }
        if round == 1 {
            // The attacker: a password-guessing burst, plus some RTP it is entitled to.
            for seq in 0..FLOOD_REGISTERS {
                attacker.send_to(&packet::register("100", seq), sip)?;
            }
            *sent.entry("attacker REGISTER").or_default() += FLOOD_REGISTERS;
            for _ in 0..50 {
                attacker.send_to(&[0x80; 172], rtp)?;
            }
            *sent.entry("attacker RTP").or_default() += 50;
        }
        std::thread::sleep(PHONE_INTERVAL);
    }
    let elapsed = started.elapsed();

    let sip_from = drain(&server_sip);
    let rtp_from = drain(&server_rtp);
    let count = |from: &[IpAddr], who| from.iter().filter(|&&a| a == IpAddr::V4(who)).count();
    println!(
        "sent in {:.1} s, and what reached the server's sockets:",
        elapsed.as_secs_f64()
    );
    println!(
        "  phone    {CLIENT_V4_B}: {:>5} REGISTERs sent, {:>5} received",
        sent["phone REGISTER"],
        count(&sip_from, CLIENT_V4_B)
    );
    println!(
        "  attacker {CLIENT_V4_A}: {:>5} REGISTERs sent, {:>5} received",
        sent["attacker REGISTER"],
        count(&sip_from, CLIENT_V4_A)
    );
    println!(
        "  attacker {CLIENT_V4_A}: {:>5} RTP packets sent, {:>5} received (not SIP: untouched)",
        sent["attacker RTP"],
        count(&rtp_from, CLIENT_V4_A)
    );

    let counters = maps.counters()?;
    println!("\nkernel counters (packets by verdict and method):");
    for verdict in Verdict::ALL {
        for class in MethodClass::ALL {
            let n = counters.packets(verdict, class);
            if n > 0 {
                println!("  {:<17} {:<10} {n:>6}", verdict.name(), class.name());
            }
        }
    }
    for counter in EventCounter::ALL {
        println!("  {:<28} {:>6}", counter.name(), counters.event(counter));
    }

    println!("\nban events (ring buffer):");
    while let Some(item) = events.next() {
        // SAFETY: the program writes whole BanEvent records; read_unaligned copes with layout.
        let event: BanEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        println!(
            "  {} banned for {} s (strike {}), {} bucket ran dry after {} packets in {} ms",
            key_addr(event.addr),
            event.duration_ns / sip_xdp_common::NS_PER_SEC,
            event.strikes,
            LimitClass::from_index(event.limit_class as usize).map_or("?", LimitClass::name),
            event.window_packets,
            event.window_ns / 1_000_000
        );
    }
    println!("\ntracked sources:");
    let now = sip_xdp::time::monotonic_now_ns();
    for (key, state) in maps.sources()? {
        let ban = if state.banned_until_ns > now {
            format!(
                "banned for {} s more",
                (state.banned_until_ns - now) / sip_xdp_common::NS_PER_SEC
            )
        } else {
            "not banned".to_owned()
        };
        println!(
            "  {:<15} {:>5} packets, {:>5} dropped, {ban}",
            key_addr(key.addr).to_string(),
            state.packets,
            state.dropped
        );
    }
    let phone_ok = count(&sip_from, CLIENT_V4_B) == sent["phone REGISTER"] as usize;
    let attacker_cut = count(&sip_from, CLIENT_V4_A)
        <= config.limits[LimitClass::Register as usize].burst() as usize;
    println!(
        "\nresult: phone {}; flood {}. Cleaning up (detach, delete namespaces).",
        if phone_ok {
            "fully served"
        } else {
            "LOST PACKETS"
        },
        if attacker_cut {
            "cut after its burst"
        } else {
            "NOT CUT"
        }
    );
    ensure!(
        phone_ok && attacker_cut,
        "the demo did not behave as expected"
    );
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// Everything queued on `socket`: the senders.
fn drain(socket: &UdpSocket) -> Vec<IpAddr> {
    let mut from = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => from.push(peer.ip()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(_) => break,
        }
    }
    from
}
