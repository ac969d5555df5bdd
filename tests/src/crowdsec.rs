//! A real CrowdSec Local API (Debian's `crowdsec` in LAPI-only mode, `cscli` beside it) in a
//! namespace of its own, which sip-xdp test hosts join over veth:
//!
//! ```text
//!   LAPI netns sxdp-lapi-<pid>-<n>                 each Host's server netns
//!   bridge sxdp-br 203.0.113.200/24, crowdsec :8080  <-veth->  sxdp-mgmt 203.0.113.(201+i)/32,
//!   ports sxdp-l<i>                                              route 203.0.113.200/32
//! ```
//!
//! The hosts keep 203.0.113.1/24 on their client-facing interface, so the management link gets
//! a host route: the more specific /32 wins, and nothing of it touches the XDP interface.
//! It serves https with a certificate for 203.0.113.200 from a throwaway CA made with `openssl`
//! at launch ([`Lapi::ca_file`], for `crowdsec.ca_file`); cscli skips verification.
//! Its config, sqlite database and credentials live in a tempdir; the Central API is off and no
//! hub is needed. The process is killed by its pid on drop (also when a test panics), and the
//! namespace goes with it.
use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    harness::require_root,
    host::Host,
    netns::{NAME_PREFIX, Netns, cleanup_stale, ip},
};

pub const LAPI_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
pub const LAPI_PORT: u16 = 8080;
const BRIDGE: &str = "sxdp-br";
/// The management interface inside a host's server namespace.
pub const MGMT_IF: &str = "sxdp-mgmt";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Panics with the fix when crowdsec is not installed.
pub fn require_crowdsec() {
    for bin in ["crowdsec", "cscli"] {
        let found = Command::new(bin)
            .arg(if bin == "crowdsec" {
                "-version"
            } else {
                "version"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "{bin} is not installed: run scripts/setup-toolchain.sh (or `apt-get install \
             crowdsec`; its service need not run)"
        );
    }
}

/// A CrowdSec Local API and the bridge the hosts join.
pub struct Lapi {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// The CA that signed the Local API's certificate (PEM).
    pub ca_file: PathBuf,
    child: Option<Child>,
    /// crowdsec's own log lines (stdout and stderr), for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
    links: u32,
}

impl Lapi {
    /// Creates the namespace, the bridge and the config, and starts the Local API.
    pub fn launch() -> Self {
        require_root();
        require_crowdsec();
        cleanup_stale();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let ns = Netns::create(&format!("{NAME_PREFIX}lapi-{}-{id}", std::process::id()))
            .expect("creating the LAPI namespace");
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"]).unwrap();
        ns.ip(&["addr", "add", &format!("{LAPI_V4}/24"), "dev", BRIDGE])
            .unwrap();
        ns.ip(&["link", "set", BRIDGE, "up"]).unwrap();
        let dir = tempfile::tempdir().expect("LAPI dir");
        let config = dir.path().join("config.yaml");
        let ca_file = make_certificates(dir.path());
        write_config(dir.path(), &config);
        let mut lapi = Self {
            ns,
            dir,
            config,
            ca_file,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            links: 0,
        };
        lapi.start();
        // cscli's own machine, for `cscli decisions ...` (which go through the Local API).
        let url = lapi.url();
        lapi.cscli(&["machines", "add", "cscli-test", "--auto", "--url", &url]);
        lapi
    }

    pub fn url(&self) -> String {
        format!("https://{LAPI_V4}:{LAPI_PORT}/")
    }

    fn ns_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Starts `crowdsec -no-cs` (Local API only) and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the Local API already runs");
        let mut child = self
            .ns_command("crowdsec")
            .args(["-c", self.config.to_str().unwrap(), "-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting crowdsec");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from((LAPI_V4, LAPI_PORT));
        loop {
            let up = self
                .ns
                .run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok());
            if up {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "crowdsec exited ({status}) before listening; its log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "crowdsec does not listen on {addr} after {READY_TIMEOUT:?}; its log:\n{}",
                self.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the Local API by its pid and waits for it: an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn cscli_output(&self, args: &[&str]) -> Output {
        self.ns_command("cscli")
            .args(["-c", self.config.to_str().unwrap()])
            .args(args)
            .output()
            .expect("running cscli")
    }

    /// `cscli -c CONFIG args` inside the namespace; asserts success, returns stdout.
    pub fn cscli(&self, args: &[&str]) -> String {
        let out = self.cscli_output(args);
        assert!(
            out.status.success(),
            "cscli {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Registers a bouncer with a known key and writes the key to `key_file`, mode 0600 (sip-xdp
    /// refuses a key file group or others can read).
    pub fn add_bouncer(&self, name: &str, key: &str, key_file: &Path) {
        self.cscli(&["bouncers", "add", name, "-k", key]);
        std::fs::write(key_file, format!("{key}\n")).unwrap();
        make_private(key_file);
    }

    /// Registers a (validated) machine; cscli writes its credentials file.
    pub fn add_machine(&self, name: &str, password: &str, credentials_file: &Path) {
        self.cscli(&[
            "machines",
            "add",
            name,
            "-p",
            password,
            "-f",
            credentials_file.to_str().unwrap(),
        ]);
        make_private(credentials_file);
    }

    /// Joins `host`'s server namespace to the bridge; returns the host's management address.
    pub fn connect(&mut self, host: &Host) -> Ipv4Addr {
        let index = self.links;
        self.links += 1;
        let port = format!("sxdp-l{index}");
        let addr = Ipv4Addr::new(203, 0, 113, 201 + u8::try_from(index).unwrap());
        let server = &host.net.server;
        ip(&[
            "link",
            "add",
            MGMT_IF,
            "netns",
            server.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.ns.name(),
        ])
        .unwrap();
        self.ns
            .ip(&["link", "set", &port, "master", BRIDGE])
            .unwrap();
        self.ns.ip(&["link", "set", &port, "up"]).unwrap();
        server
            .ip(&["addr", "add", &format!("{addr}/32"), "dev", MGMT_IF])
            .unwrap();
        server.ip(&["link", "set", MGMT_IF, "up"]).unwrap();
        server
            .ip(&[
                "route",
                "add",
                &format!("{LAPI_V4}/32"),
                "dev",
                MGMT_IF,
                "src",
                &addr.to_string(),
            ])
            .unwrap();
        addr
    }

    /// Refuses (TCP reset) every connection to the Local API that comes over the bridge, while
    /// cscli inside the namespace still reaches it: the hosts are cut off, the API runs.
    pub fn cut_off_hosts(&self, cut: bool) {
        let script = if cut {
            format!(
                "table inet sxdp_cut {{\n  chain input {{\n    type filter hook input priority 0;\n    \
                 iifname \"{BRIDGE}\" tcp dport {LAPI_PORT} reject with tcp reset\n  }}\n}}\n"
            )
        } else {
            "delete table inet sxdp_cut\n".to_owned()
        };
        let mut child = self
            .ns_command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("running nft in the LAPI namespace");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "nft {script:?} failed");
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `chmod 600`, as the README tells operators for secret files.
pub fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", path.display()));
}

/// A CA and a server certificate for [`LAPI_V4`] signed by it (EC P-256, valid two days), in
/// `dir`: `ca.pem`, `lapi.pem`, `lapi.key`. Returns the CA's path.
fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-subj",
        "/CN=sip-xdp test CA",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    let cn = format!("/CN={LAPI_V4}");
    csr.extend(["-subj", &cn, "-keyout", "lapi.key", "-out", "lapi.csr"]);
    openssl(&csr);
    std::fs::write(
        dir.join("lapi.ext"),
        format!(
            "subjectAltName=IP:{LAPI_V4}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "lapi.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "lapi.ext",
        "-out",
        "lapi.pem",
    ]);
    dir.join("ca.pem")
}

fn write_config(dir: &Path, config: &Path) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::create_dir_all(dir.join("hub")).unwrap();
    std::fs::write(dir.join("simulation.yaml"), "simulation: false\n").unwrap();
    std::fs::write(dir.join("acquis.yaml"), "").unwrap();
    // The stock profile: alerts without decisions get a 4h ban; ours carry their own.
    std::fs::write(
        dir.join("profiles.yaml"),
        "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && \
         Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: \
         break\n",
    )
    .unwrap();
    let text = format!(
        "common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: /usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: {d}/acquis.yaml
cscli:
  output: human
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
api:
  client:
    insecure_skip_verify: true
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: {LAPI_V4}:{LAPI_PORT}
    tls:
      cert_file: {d}/lapi.pem
      key_file: {d}/lapi.key
    profiles_path: {d}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
prometheus:
  enabled: false
"
    );
    std::fs::write(config, text).unwrap();
}
