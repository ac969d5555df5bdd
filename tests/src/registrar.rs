//! A scripted registrar for system tests of the answers-aware defences: real REGISTERs from
//! client sockets in the client namespace cross the XDP program, and the server socket bound to
//! the SIP port in the server namespace answers each with the status the test chooses, so the
//! answers leave through the TC egress program the way a registrar's do.
use std::{
    io::ErrorKind,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use crate::{host::Host, packet};

/// How long a REGISTER may take to reach the server socket before it counts as dropped.
const ARRIVAL: Duration = Duration::from_millis(300);

pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        _ => "Error",
    }
}

/// The server socket on the host's SIP address and the client sockets that talk to it.
pub struct Registrar<'h> {
    host: &'h Host,
    server: UdpSocket,
    seq: u32,
}

impl<'h> Registrar<'h> {
    pub fn new(host: &'h Host) -> Self {
        let server = host.server_socket();
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Self {
            host,
            server,
            seq: 0,
        }
    }

    /// A registrar answering on `server`, a socket the test already bound to the SIP port
    /// (its read timeout is kept).
    pub fn on(host: &'h Host, server: UdpSocket) -> Self {
        Self {
            host,
            server,
            seq: 0,
        }
    }

    /// A phone: a client socket on `source` (one flow: address and port).
    pub fn phone(&self, source: IpAddr) -> UdpSocket {
        self.host.client(source)
    }

    /// One REGISTER from `phone`; if it reaches the server, the server answers it with `code`.
    /// Returns whether the REGISTER got through (false: the XDP program dropped it).
    pub fn register(&mut self, phone: &UdpSocket, code: u16) -> bool {
        self.seq += 1;
        let seq = self.seq;
        let from = phone.local_addr().unwrap();
        phone
            .send_to(&packet::register("100", seq), self.host.sip)
            .expect("sending a REGISTER");
        let Some(peer) = self.receive_from(from) else {
            return false;
        };
        self.answer(peer, code, seq);
        true
    }

    /// `count` REGISTERs from `phone`, each answered with `code`; returns how many got through.
    pub fn registers(&mut self, phone: &UdpSocket, code: u16, count: u32) -> u32 {
        (0..count).filter(|_| self.register(phone, code)).count() as u32
    }

    /// A phone logging in: a REGISTER challenged with 401, then one accepted with 200. Panics
    /// with the step that failed.
    pub fn log_in(&mut self, phone: &UdpSocket) {
        let at = phone.local_addr().unwrap();
        assert!(
            self.register(phone, 401),
            "the first REGISTER of {at} did not reach the registrar"
        );
        assert!(
            self.register(phone, 200),
            "the authenticated REGISTER of {at} did not reach the registrar"
        );
    }

    /// An answer sent by the server with no request before it (what a registrar answering
    /// forged sources sends to their real owners).
    pub fn answer(&self, to: SocketAddr, code: u16, seq: u32) {
        self.server
            .send_to(&packet::answer(code, reason(code), "REGISTER", seq), to)
            .expect("sending an answer");
    }

    fn receive_from(&self, from: SocketAddr) -> Option<SocketAddr> {
        let deadline = Instant::now() + ARRIVAL;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            match self.server.recv_from(&mut buf) {
                Ok((_, peer)) if peer == from => return Some(peer),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("receiving at the registrar: {e}"),
            }
        }
        None
    }
}
