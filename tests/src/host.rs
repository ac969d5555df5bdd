//! The `sip-xdp` binary on a test host: a veth pair plus an isolated installation (its own pin
//! directory on bpffs, state directory and config file), commands run inside the server
//! namespace with `nsenter --net` (which keeps the host's /sys/fs/bpf visible), and a daemon
//! whose log lines the test can wait for.
use std::{
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    harness::require_root,
    netns::{SERVER_IF, SERVER_V4, VethPair},
    packet,
};

pub const QUIET: Duration = Duration::from_millis(150);
pub const SETTLE: Duration = Duration::from_secs(5);
pub const BURST: usize = 10;

/// Register limit 1/s with a burst of 10, one-minute bans: a 50-packet flood is cut to 10.
pub const TEST_CONFIG: &str = r#"
[limits.register]
rate = "1/s"
burst = 10

[bans]
base = "60s"
extend = "60s"
"#;

pub static NEXT: AtomicU32 = AtomicU32::new(0);

/// The built `sip-xdp` binary: `SIP_XDP_BIN`, else next to this test's directory in the target
/// dir (scripts/test.sh builds it before `cargo test`).
pub fn find_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SIP_XDP_BIN") {
        return Some(path.into());
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("sip-xdp");
    bin.exists().then_some(bin)
}

pub fn sip_xdp_bin() -> PathBuf {
    find_bin().expect(
        "the sip-xdp binary is missing from the target directory: build it first \
         (`cargo build -p sip-xdp --bin sip-xdp`; scripts/test.sh does) or set SIP_XDP_BIN",
    )
}

/// A veth pair plus an isolated sip-xdp installation (pin dir, state dir, config file).
pub struct Host {
    pub net: VethPair,
    pub pin_dir: PathBuf,
    pub state_dir: tempfile::TempDir,
    pub config: PathBuf,
    pub sip: SocketAddr,
}

impl Host {
    /// A fresh host whose config file holds `config_toml`.
    pub fn new(config_toml: &str) -> Self {
        require_root();
        let net = VethPair::new().expect("creating the test namespaces");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/sxdp-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let state_dir = tempfile::tempdir().expect("state dir");
        let config = state_dir.path().join("sip-xdp.toml");
        std::fs::write(&config, config_toml).unwrap();
        Self {
            net,
            pin_dir,
            state_dir,
            config,
            sip: SocketAddr::new(IpAddr::V4(SERVER_V4), 5060),
        }
    }

    /// `sip-xdp args` inside the server namespace, this host's directories in the environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.net.server.path().display()))
            .arg("--")
            .arg(sip_xdp_bin())
            .args(args)
            .env("SIP_XDP_PIN_DIR", &self.pin_dir)
            .env("SIP_XDP_STATE_DIR", self.state_dir.path())
            .env_remove("SIP_XDP_LOG_FORMAT");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running sip-xdp")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sip-xdp {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "sip-xdp {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn attach(&self) -> String {
        let config = self.config.to_str().unwrap();
        self.ok(&[
            "attach", "--iface", SERVER_IF, "--mode", "native", "--config", config,
        ])
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "--output", "json"])).expect("status JSON")
    }

    pub fn server_socket(&self) -> UdpSocket {
        let sip = self.sip;
        self.net.server.run(move || {
            let socket = UdpSocket::bind(sip).expect("binding the server socket");
            socket.set_read_timeout(Some(QUIET)).unwrap();
            socket
        })
    }

    pub fn client(&self, source: IpAddr) -> UdpSocket {
        self.net.client.run(move || {
            UdpSocket::bind(SocketAddr::new(source, 0)).expect("binding a client socket")
        })
    }

    /// Sends `count` REGISTERs from `source` and returns how many reached the server socket.
    pub fn registers_through(&self, server: &UdpSocket, source: IpAddr, count: u32) -> usize {
        let client = self.client(source);
        for seq in 0..count {
            client
                .send_to(&packet::register("100", seq + 1), self.sip)
                .expect("sending a REGISTER");
        }
        drain_from(server, source)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Detach and drop pinned maps; the namespaces go when `net` drops. No panics here: this
        // also runs while a failed test unwinds.
        if find_bin().is_some() {
            let _ = self.command(&["detach", "--all", "--purge"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Datagrams from `source` until the socket stays quiet.
pub fn drain_from(socket: &UdpSocket, source: IpAddr) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) if peer.ip() == source => n += 1,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            // A signal (the test's child processes exiting) interrupted the wait: wait again.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("receiving: {e}"),
        }
    }
    n
}

/// `ip link` shows "prog/xdp id N" (or "xdp"/"xdpgeneric" flags) while a program is attached.
pub fn has_xdp(host: &Host) -> bool {
    let link = host
        .net
        .server
        .ip(&["-d", "link", "show", SERVER_IF])
        .unwrap();
    link.contains("prog/xdp") || link.contains(" xdp ") || link.contains(" xdpgeneric ")
}

pub fn register_burst(status: &Value) -> u64 {
    status["config"]["limits"]
        .as_array()
        .expect("config.limits")
        .iter()
        .find(|l| l["class"] == "register")
        .and_then(|l| l["burst"].as_u64())
        .expect("a register limit")
}

pub fn packets(status: &Value, verdict: &str, method: &str) -> u64 {
    status["packets"][verdict][method].as_u64().unwrap_or(0)
}

pub fn ban_sources(host: &Host) -> Vec<(String, String)> {
    let bans: Value =
        serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).expect("ban JSON");
    bans.as_array()
        .expect("ban list is an array")
        .iter()
        .map(|b| {
            (
                b["source"].as_str().unwrap().to_owned(),
                b["origin"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A running `sip-xdp run`, its stderr collected line by line.
pub struct Daemon {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(host: &Host, extra: &[&str]) -> Self {
        Self::start_with_nofile(host, extra, None)
    }

    /// [`Daemon::start`] with RLIMIT_NOFILE set to `nofile` (soft and hard) for the daemon.
    pub fn start_with_nofile(host: &Host, extra: &[&str], nofile: Option<u64>) -> Self {
        let config = host.config.to_str().unwrap();
        let mut args = vec![
            "run",
            "--iface",
            SERVER_IF,
            "--mode",
            "native",
            "--config",
            config,
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let mut command = host.command(&args);
        if let Some(limit) = nofile {
            use std::os::unix::process::CommandExt as _;
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe; the closure touches only its copy.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the daemon");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no daemon log line with {needles:?}; log so far:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // The pid is nsenter's, which execs sip-xdp in place: the same process.
        // SAFETY: a pid we started and still own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn scrape(host: &Host) -> String {
    host.net.server.run(|| {
        let mut stream = TcpStream::connect("127.0.0.1:9433").expect("connecting to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        body
    })
}
