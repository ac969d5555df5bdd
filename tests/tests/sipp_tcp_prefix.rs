//! SIP over TCP and TLS, and prefix aggregates, against real SIP software (issue 13, parts A-C):
//! sipp plays the registrar and the phones over UDP and TCP (`-t t1`), openssl's `s_client`
//! plays a TLS client on 5061, the kernel's own TCP stack in the server namespace answers (or
//! does not answer) the SYNs, and raw frames play the floods no real client could send (a SYN
//! flood, a /24 of sources, a /64 of rotating /128s).
//!
//! The registrar runs in the server namespace on 203.0.113.1:5060 (UDP, TCP or both: one sipp
//! per transport) or on the server's IPv6 address. sip-xdp runs with its defaults: TCP ports
//! 5060 and 5061, prefix levels /24, /64 and /48 with `Config::DEFAULT.prefix_limits`, the
//! connection bucket read back from `status` (the program's config in force).
//!
//! Every scenario checks what the SIP software saw (sipp's message log and statistics, the
//! bytes a listener read, the SYNs the server's stack queued) against sip-xdp's counters and
//! bans. The scenarios run one at a time (a lock): they time bursts and floods on a 2-core
//! machine.
use std::{
    collections::BTreeSet,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapInfo};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::Value;
use sip_xdp_common::{Config, DurableBan, LimitClass, PrefixKey, map_names};
use sip_xdp_tests::{
    host::{Host, packets},
    netns::{
        CLIENT_MAC, CLIENT_V4_A, CLIENT_V4_B, CLIENT_V6_A, Netns, SERVER_IF, SERVER_MAC, SERVER_V4,
        SERVER_V6,
    },
    packet::Frame,
    raw::{RawSender, mac},
    sipp::{Sipp, SippRun, scenario},
};

/// The office's address, also the flooder's.
const OFFICE: Ipv4Addr = CLIENT_V4_A;
/// A phone at a second address of the same /24.
const ELSEWHERE: Ipv4Addr = CLIENT_V4_B;
/// A phone in another /24 (203.0.113.0/24, added to the client side by the scenario).
const OTHER_NET_PHONE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
const REGISTRAR: &str = "203.0.113.1:5060";
const SIP_PORT: u16 = 5060;
const SIP_TLS_PORT: u16 = 5061;

const DEFAULTS: &str = "";
/// The defaults' REGISTER bucket (README, etc/sip-xdp.toml).
const REGISTER_BURST: u64 = 40;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How a sipp talks SIP: UDP (one socket) or TCP (one connection, sipp's `-t t1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn args(self) -> [&'static str; 2] {
        match self {
            Transport::Udp => ["-t", "u1"],
            Transport::Tcp => ["-t", "t1"],
        }
    }
}

/// The registrar (tests/sipp/registrar.xml, the Kamailio way: 404 for unknown users, a 401
/// challenge, 200 OK for the right password) on `ip`:5060 over `transport`, listening before
/// this returns, keeping its message log.
fn registrar(host: &Host, ip: &str, transport: Transport) -> Sipp {
    let sf = scenario("registrar.xml");
    // A 4 MiB socket buffer (sipp's default is 64 KiB): each datagram takes a page behind an
    // XDP program, and a flood must not overflow the registrar while it writes its log.
    let mut args = vec![
        "-sf",
        &sf,
        "-i",
        ip,
        "-p",
        "5060",
        "-m",
        "500000",
        "-trace_msg",
        "-buff_size",
        "4194304",
    ];
    args.extend_from_slice(&transport.args());
    let mut uas = Sipp::spawn(
        &host.net.server,
        &format!("registrar {transport:?}"),
        &args,
        secs(110),
    );
    uas.wait_ready();
    uas
}

/// `calls` registrations (tests/sipp/phone.xml, users from injection file `csv`) from
/// `source` to `remote`, paced by `rate` (sipp's `-r`/`-rp`). Over UDP from port 5061, over TCP
/// on one connection. sipp retransmits over UDP only.
fn phones(
    host: &Host,
    label: &str,
    source: IpAddr,
    remote: &str,
    transport: Transport,
    (csv, calls): (&str, u32),
    rate: &[&str],
) -> Sipp {
    let (sf, inf, source, m) = (
        scenario("phone.xml"),
        scenario(csv),
        source.to_string(),
        calls.to_string(),
    );
    let mut args = vec![
        remote,
        "-sf",
        &sf,
        "-inf",
        &inf,
        "-i",
        &source,
        "-m",
        &m,
        "-default_behaviors",
        "all,-bye",
    ];
    args.extend_from_slice(&transport.args());
    if transport == Transport::Udp {
        args.extend_from_slice(&["-p", "5061"]);
    }
    args.extend_from_slice(rate);
    Sipp::spawn(&host.net.client, label, &args, secs(60))
}

/// A phone run that must have registered every time.
fn assert_registered(run: &SippRun, calls: u64) {
    assert_eq!(
        (run.successful(), run.failed()),
        (calls, 0),
        "{}: every registration should have succeeded\n{run}",
        run.label
    );
}

/// REGISTERs a phone run sent: two per challenged call, plus the retransmissions.
fn registers_sent(run: &SippRun, calls: u64, challenged: u64) -> u64 {
    calls + challenged + run.retransmissions()
}

fn event(status: &Value, name: &str) -> u64 {
    status["events"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no events.{name}: {status}"))
}

/// The burst of the per-source bucket of `class` in force (`status`' kernel config).
fn source_burst(status: &Value, class: &str) -> u64 {
    status["config"]["limits"]
        .as_array()
        .expect("status config.limits")
        .iter()
        .find(|l| l["class"] == class)
        .and_then(|l| l["burst"].as_u64())
        .unwrap_or_else(|| panic!("no {class} limit in status: {}", status["config"]))
}

/// The default prefix bucket of `class` as (burst, rate per second).
fn prefix_bucket(class: LimitClass) -> (u64, u64) {
    let limit = Config::DEFAULT.prefix_limits[class as usize];
    (limit.burst(), 1_000_000_000 / limit.interval_ns)
}

/// The most a bucket of `burst` and `rate_per_sec` can admit in `elapsed`, with slack for what
/// the test cannot time exactly: 50 ms more of refill (frames still queued on the veth when
/// the sender returns) and 5 packets for the races between the two CPUs' updates of one
/// bucket.
fn bucket_budget(burst: u64, rate_per_sec: u64, elapsed: Duration) -> u64 {
    burst + (rate_per_sec as f64 * (elapsed.as_secs_f64() + 0.05)).ceil() as u64 + 5
}

fn bans(host: &Host) -> Vec<Value> {
    let list: Value = serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"]))
        .expect("ban list JSON");
    list.as_array().expect("ban list is an array").clone()
}

fn ban_of(host: &Host, source: &str) -> Option<Value> {
    bans(host).into_iter().find(|b| b["source"] == source)
}

/// The automatic ban of `source`, which must be for running its `class` bucket dry.
fn rate_ban(host: &Host, source: &str, class: &str) -> Value {
    let ban = ban_of(host, source).unwrap_or_else(|| {
        panic!(
            "{source} should be banned for its {class} rate; bans: {:?}",
            bans(host)
        )
    });
    assert_eq!(ban["origin"], "rate", "{ban}");
    assert_eq!(ban["class"], class, "{ban}");
    ban
}

/// Requests with `method` the registrar received from a top Via host not in `except`.
fn received_except(uas: &SippRun, method: &str, except: &[String]) -> u64 {
    uas.messages
        .iter()
        .filter(|m| m.received && m.method() == Some(method))
        .filter(|m| m.via_host.as_ref().is_none_or(|h| !except.contains(h)))
        .count() as u64
}

/// One durable prefix ban of the program.
#[derive(Debug)]
struct PrefixBan {
    net: IpNet,
    record: DurableBan,
}

/// The program's durable prefix bans (`PREFIX_BANS`): pinned in the host's pin directory when
/// user space pins it, else found among the maps of the program attached to the server's
/// interface.
fn prefix_bans(host: &Host) -> Vec<PrefixBan> {
    let pin = host.pin_dir.join(map_names::PREFIX_BANS);
    let data = if pin.exists() {
        MapData::from_pin(&pin).unwrap_or_else(|e| panic!("opening {}: {e}", pin.display()))
    } else {
        MapData::from_id(attached_map_id(host, map_names::PREFIX_BANS))
            .expect("opening the attached program's PREFIX_BANS")
    };
    let map: BpfHashMap<_, PrefixKey, DurableBan> =
        BpfHashMap::try_from(Map::HashMap(data)).expect("PREFIX_BANS is a hash of PrefixKey");
    map.iter()
        .map(|entry| {
            let (key, record) = entry.expect("reading PREFIX_BANS");
            PrefixBan {
                net: prefix_net(&key),
                record,
            }
        })
        .collect()
}

/// The id of the map `name` of the XDP program attached to the server's interface.
fn attached_map_id(host: &Host, name: &str) -> u32 {
    let link = host
        .net
        .server
        .ip(&["-d", "link", "show", SERVER_IF])
        .unwrap();
    let prog_id: u32 = link
        .split_once("prog/xdp id ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no XDP program attached to {SERVER_IF}: {link}"));
    let program = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .unwrap_or_else(|| panic!("program {prog_id} is not loaded"));
    program
        .map_ids()
        .expect("the program's map ids")
        .expect("this kernel reports a program's map ids")
        .into_iter()
        .find(|&id| MapInfo::from_id(id).is_ok_and(|info| info.name_as_str() == Some(name)))
        .unwrap_or_else(|| panic!("program {prog_id} has no map {name}"))
}

/// A prefix key as a network: IPv4 mapped keys as IPv4 (a /24 is 120 in keys).
fn prefix_net(key: &PrefixKey) -> IpNet {
    let a = key.addr;
    if a[..10] == [0; 10] && a[10..12] == [0xff, 0xff] && key.prefix_len >= 96 {
        let v4 = Ipv4Addr::new(a[12], a[13], a[14], a[15]);
        IpNet::V4(Ipv4Net::new(v4, key.prefix_len - 96).unwrap())
    } else {
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), key.prefix_len).unwrap())
    }
}

/// The prefix `net` is banned: in the program's durable table for running its `class` bucket
/// dry, on its first strike, and in `ban list` as the CIDR with origin `prefix` once user space
/// lists prefix bans (it does when `status` counts banned prefixes).
fn assert_prefix_banned(host: &Host, status: &Value, net: IpNet, class: LimitClass) {
    let all = prefix_bans(host);
    let ban = all
        .iter()
        .find(|b| b.net == net)
        .unwrap_or_else(|| panic!("{net} should be banned; PREFIX_BANS holds {all:?}"));
    assert_eq!(ban.record.ban_class, class as u8, "{ban:?}");
    assert_eq!(ban.record.strikes, 1, "{ban:?}");
    let listed = ban_of(host, &net.to_string());
    if status["tables"].get("banned_prefixes").is_some() {
        let listed = listed
            .unwrap_or_else(|| panic!("`ban list` should show {net}; it shows {:?}", bans(host)));
        assert_eq!(listed["origin"], "prefix", "{listed}");
        assert_eq!(listed["class"], class.name(), "{listed}");
    } else {
        assert!(
            listed.is_none(),
            "user space lists prefix bans but status does not count them: {listed:?}"
        );
        eprintln!("(`ban list` does not list prefix bans yet; {net} read from PREFIX_BANS)");
    }
}

/// A TCP connection from `source` (a port the kernel picks) to `to`, made in `ns` without
/// waiting past `timeout`: `TimedOut` when no SYN-ACK came, the connect error otherwise.
fn connect_from(
    ns: &Netns,
    source: Ipv4Addr,
    to: SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let sockaddr = |addr: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    ns.run(move || {
        let error = std::io::Error::last_os_error;
        // SAFETY: plain socket creation.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(error());
        }
        // SAFETY: a fresh descriptor we own.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let local = sockaddr(SocketAddrV4::new(source, 0));
        // SAFETY: a valid sockaddr_in and its size.
        if unsafe { libc::bind(socket.as_raw_fd(), (&raw const local).cast(), len) } != 0 {
            return Err(error());
        }
        let remote = sockaddr(to);
        // SAFETY: as above.
        if unsafe { libc::connect(socket.as_raw_fd(), (&raw const remote).cast(), len) } != 0 {
            let e = error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let mut poll = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) } {
            0 => return Err(std::io::ErrorKind::TimedOut.into()),
            n if n < 0 => return Err(error()),
            _ => {}
        }
        let mut so_error: libc::c_int = 0;
        let mut so_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int option with its size.
        if unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut so_error).cast(),
                &mut so_len,
            )
        } != 0
        {
            return Err(error());
        }
        if so_error != 0 {
            return Err(std::io::Error::from_raw_os_error(so_error));
        }
        let stream = TcpStream::from(socket);
        stream.set_nonblocking(false)?;
        Ok(stream)
    })
}

/// A connection a [`Listener`] accepted: the peer and the first bytes it sent.
type Accepted = (SocketAddr, Vec<u8>);

/// A plain TCP listener in the server namespace that records every connection it accepts and
/// the first bytes each sent (a TLS ClientHello starts 0x16 0x03).
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Accepted>>>,
}

impl Listener {
    fn on(ns: &Netns, at: SocketAddr) -> Self {
        let listener = ns.run(move || {
            TcpListener::bind(at).unwrap_or_else(|e| panic!("listening on {at}: {e}"))
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut accepted = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_millis(1000)))
                            .unwrap();
                        let mut first = vec![0u8; 512];
                        let n = stream.read(&mut first).unwrap_or(0);
                        first.truncate(n);
                        accepted.push((peer, first));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            accepted
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// The connections accepted so far, and the first bytes each sent.
    fn stop(mut self) -> Vec<Accepted> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("the listener thread")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `openssl s_client` from `source` to the server's TLS port, given `limit` to finish by
/// itself, then killed (by its pid). Returns what it printed.
fn tls_client(host: &Host, source: Ipv4Addr, limit: Duration) -> String {
    let (to, bind) = (format!("{SERVER_V4}:{SIP_TLS_PORT}"), format!("{source}:0"));
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("s_client.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            host.net.client.name(),
            "openssl",
            "s_client",
        ])
        .args([
            "-connect",
            &to,
            "-bind",
            &bind,
            "-servername",
            "sip-xdp.test",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting openssl s_client (apt-get install openssl)");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        // Our child, by its pid.
        let _ = child.kill();
    }
    let _ = child.wait();
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

/// The server namespace's `/proc/net/netstat` and `/proc/net/snmp`: `Group.Name` → value.
fn server_net_counters(host: &Host) -> std::collections::BTreeMap<String, u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", host.net.server.name(), "cat"])
        .args(["/proc/net/netstat", "/proc/net/snmp"])
        .output()
        .expect("reading the server namespace's TCP counters");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let mut counters = std::collections::BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((group, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse() {
                counters.insert(format!("{group}.{name}"), value);
            }
        }
    }
    counters
}

/// The connections in SYN-RECV at the server from `peer`: the SYNs its listener queued.
fn syn_recv_from(host: &Host, peer: Ipv4Addr) -> usize {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            host.net.server.name(),
            "ss",
            "-Htn",
            "state",
        ])
        .arg("syn-recv")
        .output()
        .expect("running ss in the server namespace");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(" {peer}:")))
        .count()
}

/// The Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP SYN from `src:src_port` to `dst`, with valid IP and TCP checksums (the server's stack
/// answers it), addressed from the client's veth to the server's.
fn syn_frame(src: Ipv4Addr, src_port: u16, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());

    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());

    let mut frame = Vec::with_capacity(60);
    frame.extend_from_slice(&mac(SERVER_MAC));
    frame.extend_from_slice(&mac(CLIENT_MAC));
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame.resize(60, 0);
    frame
}

/// A REGISTER for an unknown user (the registrar answers 404) whose Via names `src`, so the
/// registrar's log tells the senders apart.
fn register_from(src: IpAddr, to: IpAddr, i: u32) -> Vec<u8> {
    let host = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let (src, to) = (host(src), host(to));
    format!(
        "REGISTER sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src}:5062;branch=z9hG4bK-spread-{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:spread{i}@sip-xdp.test>;tag=spread{i}\r\n\
         To: <sip:spread{i}@sip-xdp.test>\r\n\
         Call-ID: spread-{i}@sip-xdp.test\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:spread{i}@{src}:5062>\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A UDP frame from `src` to the registrar's `dst`:5060 (checksummed: IPv6 requires it).
fn sip_frame(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
    let mut frame = Frame::sip(src, dst, payload).build_checksummed();
    frame[0..6].copy_from_slice(&mac(SERVER_MAC));
    frame[6..12].copy_from_slice(&mac(CLIENT_MAC));
    frame
}

/// Sends `frames` on the client's veth, frame `k` at `k * spacing` after the start (never
/// faster than the veth's XDP ring takes them). Returns when each was sent, from the start.
fn send_paced(host: &Host, frames: &[Vec<u8>], spacing: Duration) -> Vec<Duration> {
    let sender = RawSender::new(host);
    let started = Instant::now();
    frames
        .iter()
        .enumerate()
        .map(|(k, frame)| {
            let due = spacing * k as u32;
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
            sender.send(frame);
            started.elapsed()
        })
        .collect()
}

/// Scenario 1: SIP over TCP. A registrar listening on TCP 5060 (sipp `-t t1`), a phone
/// registering over TCP throughout (8 registrations over 4 s, digest auth), and a REGISTER
/// flood over TCP from another address of the same /24 (sipp `-t t1`, 5,000 REGISTERs asked
/// at 5,000/s, each a segment that starts with the request line). Outcome: the phone registers
/// every time; each of its REGISTER segments is counted in the REGISTER bucket; the flood is
/// cut at its REGISTER burst and its source banned (origin rate, class register); every
/// later segment of it is dropped before its payload is read (class tcp), nothing more of it
/// reaches the registrar, and a new TCP connection from it gets no answer.
#[test]
fn a_register_flood_over_tcp_is_cut_at_its_burst_while_a_tcp_phone_keeps_registering() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    let host = Host::new(DEFAULTS);
    host.attach();
    let uas = registrar(&host, "203.0.113.1", Transport::Tcp);

    let phone = phones(
        &host,
        "tcp phone",
        ELSEWHERE.into(),
        REGISTRAR,
        Transport::Tcp,
        ("homeworker.csv", 8),
        &["-r", "2"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (sf, office) = (scenario("register_flood.xml"), OFFICE.to_string());
    let started = Instant::now();
    let flood = Sipp::spawn(
        &host.net.client,
        "tcp register flood",
        &[
            REGISTRAR, "-sf", &sf, "-i", &office, "-t", "t1", "-m", "5000", "-r", "5000",
        ],
        secs(10),
    )
    .wait(secs(20));
    let flood_time = started.elapsed();
    let phone = phone.wait(secs(30));
    // A new connection from the banned source, to the registrar and to the TLS port.
    let retry = connect_from(
        &host.net.client,
        OFFICE,
        SocketAddrV4::new(SERVER_V4, SIP_PORT),
        Duration::from_millis(1500),
    );
    let uas = uas.stop();
    let status = host.status();

    assert_registered(&phone, 8);
    let phone_sent = registers_sent(&phone, 8, 8);
    assert_eq!(phone.retransmissions(), 0, "sipp retransmits over UDP only");
    assert_eq!(
        uas.received_requests("REGISTER", &ELSEWHERE.to_string()) as u64,
        phone_sent,
        "{uas}"
    );
    let reached = uas.received_requests("REGISTER", &office) as u64;
    // Each REGISTER segment that passed is one of the phone's or one of the flood's (the flood
    // may pack several REGISTERs into one segment; only its first is classified).
    let passed = packets(&status, "pass", "register");
    let flood_segments = passed - phone_sent;
    assert!(
        (REGISTER_BURST..=REGISTER_BURST + 1).contains(&flood_segments),
        "the flood should have passed its REGISTER burst of {REGISTER_BURST} (+1) segments, \
         passed {flood_segments}: {}",
        status["packets"]
    );
    // A passed segment is at most one MSS (1,448 bytes here) and sipp's flood REGISTERs are
    // over 300 bytes: at most 5 of them start or end in one segment.
    assert!(
        (flood_segments..=5 * flood_segments).contains(&reached),
        "the registrar should have received every REGISTER of the {flood_segments} segments \
         that passed, and no more than they can carry, received {reached}\n{uas}"
    );
    assert_eq!(packets(&status, "drop_rate", "register"), 1, "{status}");
    rate_ban(&host, &office, "register");
    assert!(
        ban_of(&host, &ELSEWHERE.to_string()).is_none(),
        "the TCP phone was banned: {:?}",
        bans(&host)
    );
    // After the ban every segment of the flood's connection (retransmissions, ACKs) and the
    // new connection's SYNs are dropped on the addresses alone.
    let banned_tcp = packets(&status, "drop_banned", "tcp");
    let banned_syn = packets(&status, "drop_banned", "tcp_syn");
    assert!(
        banned_tcp > 0,
        "the flood's segments after its ban should be dropped as banned tcp: {}",
        status["packets"]
    );
    assert!(
        matches!(&retry, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "a new connection from the banned source should get no answer, got {retry:?}"
    );
    assert!(
        banned_syn >= 1,
        "the new connection's SYN should be dropped as banned: {}",
        status["packets"]
    );
    // The phone's connection: one SYN, never limited.
    assert_eq!(packets(&status, "drop_rate", "tcp_syn"), 0, "{status}");
    eprintln!(
        "TCP REGISTER flood: sipp queued {} REGISTERs on one connection in {flood_time:.1?}; \
         {flood_segments} REGISTER segments passed carrying {reached} REGISTERs to the \
         registrar, the next one banned the source (origin rate, register) and the connection \
         stalled: {banned_tcp} later segments (retransmissions) and the {banned_syn} SYNs of a \
         new connection dropped as banned; the TCP phone's 8 registrations ({phone_sent} \
         REGISTERs) all succeeded",
        flood.successful(),
    );
}

/// Scenario 2: a source banned on UDP (a REGISTER flood past its burst) moves to TCP 5060,
/// where a registrar listens (sipp `-t t1`), and to TLS 5061, where a listener waits for a
/// ClientHello from `openssl s_client`. Outcome: both connects from the banned source time out
/// (their SYNs dropped as banned, class tcp_syn), neither listener sees a connection or a byte
/// of it; an unbanned source of the same /24 registers over TCP and its ClientHello reaches the
/// TLS port in the same test.
#[test]
fn a_source_banned_on_udp_gets_no_answer_on_tcp_5060_or_tls_5061_while_another_connects() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    let host = Host::new(DEFAULTS);
    host.attach();
    let udp = registrar(&host, "203.0.113.1", Transport::Udp);
    let tcp = registrar(&host, "203.0.113.1", Transport::Tcp);
    let tls = Listener::on(
        &host.net.server,
        SocketAddr::new(SERVER_V4.into(), SIP_TLS_PORT),
    );

    let (sf, office) = (scenario("register_flood.xml"), OFFICE.to_string());
    let flood = Sipp::spawn(
        &host.net.client,
        "udp register flood",
        &[
            REGISTRAR, "-sf", &sf, "-i", &office, "-p", "5070", "-m", "2000", "-r", "2000",
        ],
        secs(20),
    )
    .wait(secs(20));
    flood.assert_code(0);
    let ban = ban_of(&host, &office).unwrap_or_else(|| {
        panic!(
            "the UDP flooder should be banned: {:?}\n{flood}",
            bans(&host)
        )
    });
    assert!(
        matches!(ban["origin"].as_str(), Some("rate" | "auth")),
        "the flooder should be banned by its REGISTER bucket or its 404s: {ban}"
    );
    let before = host.status();

    // The banned source moves to TCP and TLS.
    let started = Instant::now();
    let banned_tcp = connect_from(
        &host.net.client,
        OFFICE,
        SocketAddrV4::new(SERVER_V4, SIP_PORT),
        secs(2),
    );
    let banned_tls = tls_client(&host, OFFICE, secs(3));
    let banned_time = started.elapsed();
    // Another source of the same /24, never banned.
    let phone = phones(
        &host,
        "tcp phone",
        ELSEWHERE.into(),
        REGISTRAR,
        Transport::Tcp,
        ("homeworker.csv", 2),
        &["-r", "2"],
    )
    .wait(secs(30));
    let tls_ok = tls_client(&host, ELSEWHERE, secs(3));
    let plain_ok = connect_from(
        &host.net.client,
        ELSEWHERE,
        SocketAddrV4::new(SERVER_V4, SIP_TLS_PORT),
        secs(2),
    );
    let (udp, tcp) = (udp.stop(), tcp.stop());
    let accepted = tls.stop();
    let after = host.status();

    assert!(
        matches!(&banned_tcp, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "the banned source's connect to TCP {SIP_PORT} should time out, got {banned_tcp:?}"
    );
    assert!(
        !banned_tls.contains("CONNECTED("),
        "the banned source's TLS client should never connect:\n{banned_tls}"
    );
    assert_eq!(
        tcp.received_requests("REGISTER", &office),
        0,
        "the TCP registrar heard from the banned source\n{tcp}"
    );
    assert!(
        accepted
            .iter()
            .all(|(peer, _)| peer.ip() == IpAddr::from(ELSEWHERE)),
        "the TLS listener accepted a connection from someone else than {ELSEWHERE}: \
         {accepted:?}"
    );
    // The unbanned source: registered over TCP, its ClientHello and its plain connect reached
    // the TLS port.
    assert_registered(&phone, 2);
    assert_eq!(
        tcp.received_requests("REGISTER", &ELSEWHERE.to_string()),
        4,
        "{tcp}"
    );
    assert!(tls_ok.contains("CONNECTED("), "{tls_ok}");
    assert!(plain_ok.is_ok(), "{plain_ok:?}");
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(
        accepted
            .iter()
            .any(|(_, first)| first.starts_with(&[0x16, 0x03])),
        "the TLS client's ClientHello should have reached the listener: {accepted:?}"
    );

    // Counted: every SYN of the banned source dropped as banned (two attempts, each with at
    // least one retransmission after 1 s), the unbanned source's three connections passed.
    let delta = |verdict: &str, class: &str| {
        packets(&after, verdict, class) - packets(&before, verdict, class)
    };
    let banned_syns = delta("drop_banned", "tcp_syn");
    assert!(
        banned_syns >= 4,
        "the banned source's SYNs (2 attempts, at least 2 each) should be dropped as banned, \
         {banned_syns} were: {}",
        after["packets"]
    );
    assert_eq!(delta("pass", "tcp_syn"), 3, "{}", after["packets"]);
    assert_eq!(delta("drop_rate", "tcp_syn"), 0, "{}", after["packets"]);
    assert!(udp.received_requests("REGISTER", &office) as u64 <= REGISTER_BURST + 1);
    eprintln!(
        "banned on UDP (origin {}, class {}) after {} of 2000 REGISTERs; then TCP {SIP_PORT} \
         and TLS {SIP_TLS_PORT} from it: both timed out over {banned_time:.1?}, {banned_syns} \
         SYNs dropped as banned, no connection accepted; {ELSEWHERE} in the same test: \
         registered twice over TCP, its ClientHello reached {SIP_TLS_PORT}",
        ban["origin"].as_str().unwrap_or("?"),
        ban["class"].as_str().unwrap_or("?"),
        udp.received_requests("REGISTER", &office),
    );
}

/// A spoofed address of the clients' /24 that no host owns: the SYN flooder of scenario 3.
const SYN_FLOODER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
const SYN_FLOOD_FRAMES: u16 = 3000;

/// Scenario 3: a bounded SYN flood, 3,000 SYNs from one source (each from a new port) to the
/// registrar's TCP port in about 60 ms. The server's answers to the spoofed source go to the
/// client side, which drops them, so every SYN the listener took stays in SYN-RECV. Outcome:
/// the connection bucket's burst of SYNs passes, the next one bans the source (origin rate,
/// class connection), the rest are dropped as banned; the server's stack queued exactly the
/// SYNs that passed, no SYN cookie was needed; a second source's TCP registration works right
/// after.
#[test]
fn a_bounded_syn_flood_bans_its_source_as_connection_after_the_burst() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    let host = Host::new(DEFAULTS);
    host.attach();
    let uas = registrar(&host, "203.0.113.1", Transport::Tcp);
    host.net
        .server
        .ip(&[
            "neigh",
            "replace",
            &SYN_FLOODER.to_string(),
            "lladdr",
            CLIENT_MAC,
            "dev",
            SERVER_IF,
            "nud",
            "permanent",
        ])
        .expect("a neighbour entry for the spoofed source");
    let burst = source_burst(&host.status(), "connection");
    let counters_before = server_net_counters(&host);

    let to = SocketAddrV4::new(SERVER_V4, SIP_PORT);
    let frames: Vec<Vec<u8>> = (0..SYN_FLOOD_FRAMES)
        .map(|k| syn_frame(SYN_FLOODER, 20_000 + k, to, u32::from(k) * 7919))
        .collect();
    let sent_at = send_paced(&host, &frames, Duration::from_micros(20));
    let flood_time = *sent_at.last().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let queued = syn_recv_from(&host, SYN_FLOODER) as u64;
    let counters_after = server_net_counters(&host);
    let status = host.status();

    let phone = phones(
        &host,
        "tcp phone",
        ELSEWHERE.into(),
        REGISTRAR,
        Transport::Tcp,
        ("homeworker.csv", 2),
        &["-r", "2"],
    )
    .wait(secs(30));
    let uas = uas.stop();
    let after = host.status();

    let passed = packets(&status, "pass", "tcp_syn");
    assert!(
        (burst..=burst + 1).contains(&passed),
        "the connection burst of {burst} (+1 refilled) SYNs should have passed, {passed} did: \
         {}",
        status["packets"]
    );
    assert_eq!(packets(&status, "drop_rate", "tcp_syn"), 1, "{status}");
    assert_eq!(
        packets(&status, "drop_banned", "tcp_syn"),
        u64::from(SYN_FLOOD_FRAMES) - passed - 1,
        "every SYN after the ban should be dropped as banned: {}",
        status["packets"]
    );
    rate_ban(&host, &SYN_FLOODER.to_string(), "connection");
    let delta = |name: &str| {
        counters_after.get(name).copied().unwrap_or(0)
            - counters_before.get(name).copied().unwrap_or(0)
    };
    let cookies = delta("TcpExt.SyncookiesSent");
    assert_eq!(
        (queued, cookies),
        (passed, 0),
        "the server's SYN queue should hold exactly the {passed} SYNs that passed, without SYN \
         cookies (listen drops {})",
        delta("TcpExt.ListenDrops")
    );

    assert_registered(&phone, 2);
    assert_eq!(
        uas.received_requests("REGISTER", &ELSEWHERE.to_string()),
        4,
        "{uas}"
    );
    assert_eq!(
        packets(&after, "pass", "tcp_syn") - passed,
        1,
        "the phone's one connection: {}",
        after["packets"]
    );
    let ban_at = sent_at[passed as usize];
    eprintln!(
        "SYN flood: {SYN_FLOOD_FRAMES} SYNs in {flood_time:.1?}; {passed} passed (burst \
         {burst}), banned (origin rate, connection) at SYN {} ({ban_at:.1?} in), the server \
         queued {queued} in SYN-RECV, {cookies} SYN cookies; a TCP phone registered right \
         after",
        passed + 1
    );
}

/// The /24 the spread flood of scenario 4 comes from: the clients' own, so OFFICE (verified)
/// and ELSEWHERE (not) are inside it.
const SPREAD_NET: &str = "198.51.100.0/24";
const SPREAD_SOURCES: usize = 250;
/// REGISTERs per spread source: 4 over the flood's 2 s, below its own 5/s and burst of 40.
const SPREAD_PER_SOURCE: usize = 4;

/// The 250 spoofed sources of [`SPREAD_NET`]: every host but the real clients OFFICE and
/// ELSEWHERE.
fn spread_sources() -> Vec<IpAddr> {
    (1..=254u8)
        .filter(|&h| ![OFFICE.octets()[3], ELSEWHERE.octets()[3]].contains(&h))
        .take(SPREAD_SOURCES)
        .map(|h| IpAddr::V4(Ipv4Addr::new(198, 51, 100, h)))
        .collect()
}

/// Scenario 4: a REGISTER flood spread over one /24, 250 spoofed sources sending 4 REGISTERs
/// each (1,000 in 2 s, round robin: every source at 2/s, under its own 5/s limit and burst).
/// Around it: the office (198.51.100.10, inside the /24) registered with digest auth before the
/// flood, so the answers verified it, and registers during and after it; a phone of another
/// /24 (203.0.113.50) registers during it; a phone inside the /24 that never registered
/// (198.51.100.11) tries after it. Outcome: the prefix's REGISTER burst (200) reaches the
/// registrar, the next REGISTER bans 198.51.100.0/24 (drop_prefix, then everything of the
/// prefix dropped before its payload is read), the verified office and the other /24 register
/// every time, the unverified phone inside the banned /24 is dropped with it.
#[test]
fn a_register_flood_spread_over_a_24_is_cut_at_the_prefix_burst_and_the_24_banned() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    let host = Host::new(DEFAULTS);
    host.attach();
    host.net
        .client
        .ip(&[
            "addr",
            "add",
            &format!("{OTHER_NET_PHONE}/32"),
            "dev",
            sip_xdp_tests::netns::CLIENT_IF,
        ])
        .expect("the other /24's phone address on the client side");
    host.net
        .server
        .ip(&[
            "neigh",
            "replace",
            &OTHER_NET_PHONE.to_string(),
            "lladdr",
            CLIENT_MAC,
            "dev",
            SERVER_IF,
            "nud",
            "permanent",
        ])
        .expect("a neighbour entry for the other /24's phone");
    let uas = registrar(&host, "203.0.113.1", Transport::Udp);
    let lost_before = server_net_counters(&host)["Udp.RcvbufErrors"];
    let (burst, rate) = prefix_bucket(LimitClass::Register);
    let udp_phone = |label: &str, source: Ipv4Addr, user: (&str, u32)| {
        phones(
            &host,
            label,
            source.into(),
            REGISTRAR,
            Transport::Udp,
            user,
            &["-r", "2"],
        )
    };

    let before = udp_phone("office before", OFFICE, ("office.csv", 2)).wait(secs(30));
    assert_registered(&before, 2);
    let verified = host.status();
    assert_eq!(
        verified["tables"]["verified_sources"], 1,
        "the office should be verified by its 200 OK: {}",
        verified["tables"]
    );

    let sources = spread_sources();
    let frames: Vec<Vec<u8>> = (0..SPREAD_SOURCES * SPREAD_PER_SOURCE)
        .map(|k| {
            let src = sources[k % SPREAD_SOURCES];
            sip_frame(
                src,
                SERVER_V4.into(),
                &register_from(src, SERVER_V4.into(), k as u32),
            )
        })
        .collect();
    let office = udp_phone("office during", OFFICE, ("office.csv", 4));
    let other_net = udp_phone("other 24", OTHER_NET_PHONE, ("homeworker.csv", 4));
    std::thread::sleep(Duration::from_millis(300));
    let sent_at = send_paced(&host, &frames, Duration::from_millis(2));
    let flood_time = *sent_at.last().unwrap();
    let (office, other_net) = (office.wait(secs(30)), other_net.wait(secs(30)));
    let office_after = udp_phone("office after", OFFICE, ("office.csv", 2)).wait(secs(30));
    let inside = udp_phone("unverified inside", ELSEWHERE, ("homeworker.csv", 1)).wait(secs(30));
    let uas = uas.stop();
    let status = host.status();

    let lost = server_net_counters(&host)["Udp.RcvbufErrors"] - lost_before;

    // What the filter passed: the phones' REGISTERs (with their retransmissions) and the
    // flood's up to its ban; it dropped the rest of the flood and the unverified phone inside
    // the /24, on the prefix's ban before their payload was read.
    let office_sent = registers_sent(&before, 2, 2)
        + registers_sent(&office, 4, 4)
        + registers_sent(&office_after, 2, 2);
    let other_sent = registers_sent(&other_net, 4, 4);
    let inside_sent = registers_sent(&inside, 1, 0);
    let prefix_dropped = packets(&status, "drop_banned", "unread");
    let flood_passed = (frames.len() as u64 - 1)
        .checked_sub(prefix_dropped - inside_sent)
        .unwrap_or_else(|| panic!("more drops than frames: {}", status["packets"]));
    assert_eq!(
        packets(&status, "pass", "register"),
        flood_passed + office_sent + other_sent,
        "the filter should have passed every REGISTER of the phones and the flood's up to its          ban: {}",
        status["packets"]
    );
    assert_eq!(
        event(&status, "prefix_banned_drops"),
        prefix_dropped,
        "{status}"
    );
    assert_eq!(packets(&status, "drop_rate", "register"), 0, "{status}");
    assert_eq!(
        packets(&status, "drop_admission", "register"),
        0,
        "{status}"
    );
    let ban_at = sent_at[flood_passed as usize];
    let budget = bucket_budget(burst, rate, ban_at);
    assert!(
        (burst..=budget).contains(&flood_passed),
        "the filter should have passed between the prefix burst of {burst} and {budget}          ({rate}/s over {ban_at:.2?}) of the spread REGISTERs, passed {flood_passed}: {}",
        status["packets"]
    );
    // What the registrar received of them: all, but for what its full socket buffer dropped.
    let phones_at: Vec<String> = [OFFICE, ELSEWHERE, OTHER_NET_PHONE]
        .iter()
        .map(Ipv4Addr::to_string)
        .collect();
    let reached = received_except(&uas, "REGISTER", &phones_at);
    assert!(
        reached <= flood_passed && flood_passed - reached <= lost,
        "the registrar received {reached} of the {flood_passed} spread REGISTERs the filter          passed, its socket dropped {lost}\n{uas}"
    );
    assert_eq!(packets(&status, "drop_prefix", "register"), 1, "{status}");
    assert_eq!(event(&status, "prefix_bans"), 1, "{status}");
    assert_prefix_banned(
        &host,
        &status,
        SPREAD_NET.parse().unwrap(),
        LimitClass::Register,
    );
    for phone in [OFFICE, ELSEWHERE, OTHER_NET_PHONE] {
        assert!(
            ban_of(&host, &phone.to_string()).is_none(),
            "{phone} has a ban of its own: {:?}",
            bans(&host)
        );
    }

    // The verified office and the other /24 registered every time; the unverified phone
    // inside the banned /24 never reached the registrar.
    assert_registered(&office, 4);
    assert_registered(&office_after, 2);
    assert_registered(&other_net, 4);
    assert_eq!(inside.successful(), 0, "{inside}");
    assert_eq!(
        uas.received_requests("REGISTER", &ELSEWHERE.to_string()),
        0,
        "{uas}"
    );
    eprintln!(
        "/24 spread flood: {} REGISTERs from {SPREAD_SOURCES} sources ({SPREAD_PER_SOURCE} \
         each) in {flood_time:.1?}; {flood_passed} passed (prefix burst {burst}, {rate}/s), \
         {reached} reached the registrar ({lost} lost in its socket buffer), {SPREAD_NET} \
         banned at REGISTER {} ({ban_at:.2?} in); the verified office registered 4 + 2 times \
         through it, the other /24's phone 4 times; the unverified phone inside the /24 lost \
         its {inside_sent} REGISTERs",
        frames.len(),
        flood_passed + 1
    );
}

/// The /64 the rotation of scenario 5 comes from, inside the clients' /48 (2001:db8:c633::/48),
/// routed from the server to the client side.
const ROTATION_NET: &str = "2001:db8:c633:beef::/64";
const ROTATION_FRAMES: usize = 3000;

/// Scenario 5: /128 rotation inside one IPv6 /64: 3,000 REGISTERs in 1.5 s, each from a new
/// /128 of 2001:db8:c633:beef::/64 (IPv6 sources keyed by /128, so every one has a full
/// bucket of its own), against the registrar on the server's IPv6 address. Outcome: the /64's
/// REGISTER burst (200) reaches the registrar, the next REGISTER bans the /64, the rest are
/// dropped before their payload is read; the /48 around it is not banned, and a phone in
/// another /64 of that /48 (2001:db8:c633:6400::10), not verified yet, registers right after.
#[test]
fn a_128_rotation_inside_a_64_is_cut_at_the_prefix_burst_and_the_64_banned() {
    sip_xdp_tests::needs_root!();
    let _serial = serial();
    // Keyed by /128 whatever the default: the rotation then meets the prefix levels.
    let host = Host::new("[sip]\nipv6_source_prefix = 128\n");
    host.attach();
    host.net
        .server
        .ip(&[
            "-6",
            "route",
            "add",
            ROTATION_NET,
            "via",
            &CLIENT_V6_A.to_string(),
            "dev",
            SERVER_IF,
        ])
        .expect("routing the rotation's /64 to the client side");
    let uas = registrar(&host, &SERVER_V6.to_string(), Transport::Udp);
    let lost_before = server_net_counters(&host)["Udp.RcvbufErrors"];
    let (burst, rate) = prefix_bucket(LimitClass::Register);

    let net: Ipv6Net = ROTATION_NET.parse().unwrap();
    let base = u128::from(net.network());
    let mut rng = sip_xdp_tests::rng::Rng::new(0x5eed_0128);
    let mut seen = BTreeSet::new();
    let frames: Vec<Vec<u8>> = (0..ROTATION_FRAMES)
        .map(|k| {
            let src = loop {
                let host_bits = u128::from(rng.next_u64()) | 1;
                if seen.insert(host_bits) {
                    break Ipv6Addr::from(base | host_bits);
                }
            };
            sip_frame(
                src.into(),
                SERVER_V6.into(),
                &register_from(src.into(), SERVER_V6.into(), k as u32),
            )
        })
        .collect();
    let sent_at = send_paced(&host, &frames, Duration::from_micros(500));
    let flood_time = *sent_at.last().unwrap();
    let remote = format!("[{SERVER_V6}]:5060");
    let phone = phones(
        &host,
        "phone in another 64",
        CLIENT_V6_A.into(),
        &remote,
        Transport::Udp,
        ("homeworker.csv", 2),
        &["-r", "2"],
    )
    .wait(secs(30));
    let uas = uas.stop();
    let status = host.status();

    let lost = server_net_counters(&host)["Udp.RcvbufErrors"] - lost_before;

    // What the filter passed: the phone's REGISTERs and the rotation's up to the /64's ban;
    // the rest of it was dropped on that ban before its payload was read.
    assert_registered(&phone, 2);
    let phone_sent = registers_sent(&phone, 2, 2);
    let flood_passed = packets(&status, "pass", "register") - phone_sent;
    let banned = ROTATION_FRAMES as u64 - flood_passed - 1;
    assert_eq!(
        packets(&status, "drop_banned", "unread"),
        banned,
        "every REGISTER of the rotation after the /64's ban should be dropped as banned: {}",
        status["packets"]
    );
    assert_eq!(event(&status, "prefix_banned_drops"), banned, "{status}");
    assert_eq!(
        packets(&status, "drop_admission", "register"),
        0,
        "{status}"
    );
    assert_eq!(packets(&status, "drop_rate", "register"), 0, "{status}");
    let ban_at = sent_at[flood_passed as usize];
    let budget = bucket_budget(burst, rate, ban_at);
    assert!(
        (burst..=budget).contains(&flood_passed),
        "the filter should have passed between the /64's burst of {burst} and {budget} \
         ({rate}/s over {ban_at:.2?}) of the rotation's REGISTERs, passed {flood_passed}: {}",
        status["packets"]
    );
    let phone_via = format!("[{CLIENT_V6_A}]");
    let reached = received_except(&uas, "REGISTER", std::slice::from_ref(&phone_via));
    assert!(
        reached <= flood_passed && flood_passed - reached <= lost,
        "the registrar received {reached} of the {flood_passed} REGISTERs of the rotation the \
         filter passed, its socket dropped {lost}\n{uas}"
    );
    assert!(
        uas.received_requests("REGISTER", &phone_via) >= 4,
        "the phone's 4 REGISTERs should have reached the registrar\n{uas}"
    );
    assert_eq!(packets(&status, "drop_prefix", "register"), 1, "{status}");
    assert_eq!(event(&status, "prefix_bans"), 1, "{status}");
    assert_prefix_banned(&host, &status, IpNet::V6(net), LimitClass::Register);
    let around: IpNet = "2001:db8:c633::/48".parse().unwrap();
    assert!(
        prefix_bans(&host).iter().all(|b| b.net != around),
        "the /48 around the rotation should not be banned: {:?}",
        prefix_bans(&host)
    );
    eprintln!(
        "/128 rotation: {ROTATION_FRAMES} REGISTERs from as many /128s of {ROTATION_NET} in \
         {flood_time:.1?}; {flood_passed} passed (prefix burst {burst}, {rate}/s), {reached} \
         reached the registrar ({lost} lost in its socket buffer), the /64 banned at REGISTER \
         {} ({ban_at:.2?} in), its /48 not; a phone in another /64 of the /48 registered \
         twice right after",
        flood_passed + 1
    );
}
