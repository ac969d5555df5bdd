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
