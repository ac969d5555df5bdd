//! The traffic of a run: the flood (pre-built frames through BPF_PROG_TEST_RUN live frames, or
//! `sendmmsg` on a UDP socket), the phone registering through it, and the SIP server's
//! `recvmmsg` loop that counts what arrives.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use sip_xdp::loader;
use sip_xdp_tests::{
    netns::{CLIENT_IF, CLIENT_MAC, SERVER_MAC, SERVER_V4},
    packet,
};

use super::{
    bpf,
    context::{
        CLIENT_PORT, FLOOD_SOURCE, FORGED_FIRST, FORGED_NET, FORGED_SOURCES, PHONE_SOURCE, SIP_PORT,
    },
    counters::thread_cpu_ns,
};
use crate::host;

/// The phone: one REGISTER this often, below the 5/s limit, so every one of them must arrive.
pub(super) const PHONE_INTERVAL: Duration = Duration::from_millis(250);
pub(super) const SEND_BATCH: usize = 256;
pub(super) const RECV_BATCH: usize = 256;
/// The receiver stops after this much silence once the senders are done.
pub(super) const RECV_QUIET: Duration = Duration::from_millis(50);
/// A large buffer, so the unfiltered server loses as little as possible to overflow (counted
/// anyway: RcvbufErrors).
pub(super) const SERVER_RCVBUF_BYTES: libc::c_int = 16 << 20;

/// Every flood packet: the same REGISTER.
pub(super) fn flood_payload() -> Vec<u8> {
    packet::register("100", 1)
}

pub(super) fn server_socket(addr: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    socket.set_read_timeout(Some(RECV_QUIET))?;
    let rcvbuf_bytes = SERVER_RCVBUF_BYTES;
    // SAFETY: a valid socket and a pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf_bytes).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting SO_RCVBUFFORCE");
    }
    Ok(socket)
}

pub(super) fn client_socket(source: Ipv4Addr, server: SocketAddr) -> Result<UdpSocket> {
    let local = SocketAddr::new(IpAddr::V4(source), CLIENT_PORT);
    let socket = UdpSocket::bind(local).with_context(|| format!("binding {local}"))?;
    socket
        .connect(server)
        .with_context(|| format!("connecting to {server}"))?;
    Ok(socket)
}

/// Turns GRO on for `iface` in the calling thread's namespace (ETHTOOL_SGRO; no ethtool binary
/// needed).
pub(super) fn set_gro(iface: &str) -> Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: 1,
    };
    let socket = UdpSocket::bind("0.0.0.0:0").context("a socket for the ethtool ioctl")?;
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(iface.len() < ifr.ifr_name.len(), "interface name too long");
    for (dst, src) in ifr.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: a valid socket, an ifreq naming the interface and pointing at a live
    // ethtool_value.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("ETHTOOL_SGRO on {iface}"));
    }
    Ok(())
}

/// `count` copies of a pre-built REGISTER frame, redirected by XDP to the client veth of the
/// calling thread's namespace with BPF_PROG_TEST_RUN in live-frames mode (what xdp-trafficgen
/// does): the peer receives them as XDP frames, with no socket buffer built on the way.
pub(super) fn send_frames(payload: &[u8], count: u32) -> Result<u64> {
    let frame = flood_frame(FLOOD_SOURCE, payload)?;
    let ifindex = loader::if_index(CLIENT_IF).context("in the client namespace")?;
    let prog = bpf::load_redirect_program(ifindex)?;
    bpf::send_live_frames(&prog, &frame, count)
}

/// The flood frame from `source` to the server, addressed to its veth.
fn flood_frame(source: Ipv4Addr, payload: &[u8]) -> Result<Vec<u8>> {
    let mut frame =
        packet::Frame::udp(IpAddr::V4(source), IpAddr::V4(SERVER_V4), SIP_PORT, payload);
    frame.src_port = CLIENT_PORT;
    let mut frame = frame.build();
    frame[0..6].copy_from_slice(&mac_bytes(SERVER_MAC)?);
    frame[6..12].copy_from_slice(&mac_bytes(CLIENT_MAC)?);
    Ok(frame)
}

/// As [`send_frames`], each frame from a random address of `FORGED_NET` (the sender's XDP
/// program writes it): a forged-source flood.
pub(super) fn send_forged_frames(payload: &[u8], count: u32) -> Result<u64> {
    let mut frame = flood_frame(FORGED_NET, payload)?;
    // The IP identification's low byte 0xff, the UDP checksum off (IPv4 allows it): the
    // program then moves the source's last byte and the identification in opposite
    // directions, and the header checksum stays right.
    frame[19] = 0xff;
    frame[40..42].copy_from_slice(&[0, 0]);
    frame[24..26].copy_from_slice(&[0, 0]);
    let checksum = ipv4_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&checksum.to_be_bytes());
    let ifindex = loader::if_index(CLIENT_IF).context("in the client namespace")?;
    let prog = bpf::load_forging_redirect_program(ifindex, FORGED_FIRST, FORGED_SOURCES)?;
    bpf::send_live_frames(&prog, &frame, count)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let mut bytes = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut bytes {
        *byte = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .with_context(|| format!("bad MAC address {mac}"))?;
    }
    Ok(bytes)
}

/// `count` copies of `payload` through `sendmmsg`, as fast as one thread goes.
pub(super) fn send_flood(socket: &UdpSocket, payload: &[u8], count: u32) -> Result<u64> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let iov_ptr = &raw mut iov;
    let mut msgs: Vec<libc::mmsghdr> = (0..SEND_BATCH)
        .map(|_| {
            // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov_ptr;
            msg.msg_hdr.msg_iovlen = 1;
            msg
        })
        .collect();
    let mut sent = 0u64;
    let mut retries = 0u64;
    while sent < u64::from(count) {
        let batch = (u64::from(count) - sent).min(SEND_BATCH as u64) as libc::c_uint;
        // SAFETY: `msgs` holds SEND_BATCH valid headers, each pointing at `iov`, which points at
        // `payload`; all outlive the call. The socket is connected, so no msg_name is needed.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), batch, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                    retries += 1;
                    ensure!(
                        retries < 1_000_000,
                        "sendmmsg keeps failing with {err}: the client side is stuck"
                    );
                    std::thread::yield_now();
                    continue;
                }
                _ => return Err(err).context("sendmmsg (the flood)"),
            }
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// One REGISTER every PHONE_INTERVAL until `stop` is dropped; returns how many it sent.
pub(super) fn run_phone(socket: &UdpSocket, stop: &mpsc::Receiver<()>) -> Result<u64> {
    let mut sent = 0u64;
    loop {
        socket
            .send(&packet::register("alice", sent as u32 + 1))
            .context("sending the phone's REGISTER")?;
        sent += 1;
        match stop.recv_timeout(PHONE_INTERVAL) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return Ok(sent),
        }
    }
}

pub(super) struct Received {
    pub(super) flood: u64,
    pub(super) phone: u64,
    pub(super) cpu_ns: u64,
}

/// The SIP server's reading loop: `recvmmsg` until `stop` is set and the socket has been quiet
/// for RECV_QUIET. Counts datagrams by source; its own CPU time is the server thread's cost.
pub(super) fn receive(socket: &UdpSocket, stop: &AtomicBool, cpu: usize) -> Result<Received> {
    host::pin_to_cpu(cpu)?;
    let mut buffers = vec![[0u8; 2048]; RECV_BATCH];
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut addrs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; RECV_BATCH];
    let mut iovs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(addrs.iter_mut())
        .map(|(iov, addr)| {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
            msg
        })
        .collect();
    let flood = u32::from(FLOOD_SOURCE).to_be();
    let phone = u32::from(PHONE_SOURCE).to_be();
    let forged = |source: u32| {
        let source = Ipv4Addr::from(u32::from_be(source)).octets();
        source[..3] == FORGED_NET.octets()[..3]
            && (FORGED_FIRST..FORGED_FIRST + FORGED_SOURCES).contains(&source[3])
    };
    let mut received = Received {
        flood: 0,
        phone: 0,
        cpu_ns: 0,
    };
    let start = thread_cpu_ns();
    loop {
        for msg in &mut msgs {
            msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        // SAFETY: every header points at its own live buffer and address slot; MSG_WAITFORONE
        // blocks (up to SO_RCVTIMEO) for the first datagram only.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                _ => return Err(err).context("recvmmsg (the server)"),
            }
        }
        // The kernel filled `addrs` through the raw pointers in `msgs`.
        for addr in &addrs[..n as usize] {
            let source = std::hint::black_box(addr.sin_addr.s_addr);
            if source == flood || forged(source) {
                received.flood += 1;
            } else if source == phone {
                received.phone += 1;
            }
        }
    }
    received.cpu_ns = thread_cpu_ns() - start;
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_bytes_reads_six_hex_octets() {
        assert_eq!(
            mac_bytes("02:00:5e:00:53:0a").unwrap(),
            [0x02, 0x00, 0x5e, 0x00, 0x53, 0x0a]
        );
        assert!(mac_bytes("02:00:5e:00:53").is_err());
        assert!(mac_bytes("02:00:5e:00:53:zz").is_err());
    }
}
