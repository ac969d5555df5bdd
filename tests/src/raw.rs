//! Frames with any source address, sent on the client's veth through a raw AF_PACKET socket:
//! the spoofed floods of the scenario and Prometheus tests.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use crate::{
    host::Host,
    netns::{CLIENT_IF, CLIENT_MAC, Netns, SERVER_MAC},
};

/// `aa:bb:...` as bytes.
pub fn mac(text: &str) -> [u8; 6] {
    let mut bytes = [0u8; 6];
    for (b, part) in bytes.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).expect("a MAC address");
    }
    bytes
}

/// A raw AF_PACKET socket on the client's veth, addressed to the server's MAC.
pub struct RawSender {
    socket: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl RawSender {
    pub fn new(host: &Host) -> Self {
        Self::on(&host.net.client)
    }

    /// A sender on the client veth of the namespace `client` (see [`crate::netns::VethPair`]).
    pub fn on(client: &Netns) -> Self {
        client.run(|| {
            // SAFETY: plain socket creation; protocol 0 receives nothing.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor we own.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new(CLIENT_IF).unwrap();
            // SAFETY: a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex > 0, "{CLIENT_IF} not found in the client namespace");
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&mac(SERVER_MAC));
            Self { socket, addr }
        })
    }

    /// Sends `frame` with its Ethernet addresses set to the client's and the server's veth.
    pub fn send_addressed(&self, frame: &[u8]) {
        let mut frame = frame.to_vec();
        frame[0..6].copy_from_slice(&mac(SERVER_MAC));
        frame[6..12].copy_from_slice(&mac(CLIENT_MAC));
        self.send(&frame);
    }

    /// Sends one whole frame; panics if the kernel takes less.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame and addr outlive the call; lengths match.
        let n = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const self.addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "sending a spoofed frame: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One UDP datagram a [`Capture`] saw arrive.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: std::net::SocketAddr,
    pub dst: std::net::SocketAddr,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// The payload's first line (a SIP request or status line).
    pub fn first_line(&self) -> String {
        let end = self
            .payload
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(self.payload.len());
        String::from_utf8_lossy(&self.payload[..end]).into_owned()
    }
}

/// A packet socket on the client's veth that sees every frame arriving there, whatever its
/// destination address: what reaches the victims of a forged-source flood (addresses no
/// socket owns, routed to the client side). Frames the namespace sends are not captured.
pub struct Capture {
    socket: OwnedFd,
}

/// `PACKET_IGNORE_OUTGOING` (Linux 4.20): leave out the frames this host sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

impl Capture {
    /// Starts capturing on the client veth of `client`, with a 32 MiB receive buffer so that
    /// nothing is lost between [`Capture::drain`]s.
    pub fn on(client: &Netns) -> Self {
        client.run(|| {
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket creation.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all as libc::c_int) };
            assert!(
                fd >= 0,
                "AF_PACKET capture socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor we own.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            let set = |level, name, value: libc::c_int| {
                // SAFETY: an int option, its size given.
                let rc = unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        level,
                        name,
                        (&raw const value).cast(),
                        std::mem::size_of::<libc::c_int>() as u32,
                    )
                };
                assert_eq!(
                    rc,
                    0,
                    "setsockopt({level}, {name}) on the capture socket: {}",
                    std::io::Error::last_os_error()
                );
            };
            set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
            set(libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1);
            let name = std::ffi::CString::new(CLIENT_IF).unwrap();
            // SAFETY: a valid NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex > 0, "{CLIENT_IF} not found in the client namespace");
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = all;
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: addr outlives the call; its size given.
            let rc = unsafe {
                libc::bind(
                    socket.as_raw_fd(),
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                rc,
                0,
                "binding the capture socket to {CLIENT_IF}: {}",
                std::io::Error::last_os_error()
            );
            Self { socket }
        })
    }

    /// The UDP datagrams (IPv4 and IPv6) captured since the last call, read until nothing has
    /// arrived for `quiet`.
    pub fn drain(&self, quiet: std::time::Duration) -> Vec<Datagram> {
        let mut found = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let mut poll = libc::pollfd {
                fd: self.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, quiet.as_millis() as libc::c_int) };
            if ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            if ready <= 0 {
                return found;
            }
            // SAFETY: buf outlives the call; its length given.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0
                && let Some(datagram) = parse_udp(&buf[..n as usize])
            {
                found.push(datagram);
            }
        }
    }
}

/// The UDP datagram in an Ethernet frame (IPv4 without fragments, IPv6 without extension
/// headers), `None` for anything else.
fn parse_udp(frame: &[u8]) -> Option<Datagram> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = frame.get(14..)?;
    let (src, dst, udp) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            if *ip.get(9)? != 17 {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(Ipv4Addr::from(src)),
                IpAddr::from(Ipv4Addr::from(dst)),
                ip.get(ihl..)?,
            )
        }
        0x86dd => {
            if *ip.get(6)? != 17 {
                return None;
            }
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(Ipv6Addr::from(src)),
                IpAddr::from(Ipv6Addr::from(dst)),
                ip.get(40..)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes(udp.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?);
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: udp.get(8..)?.to_vec(),
    })
}
