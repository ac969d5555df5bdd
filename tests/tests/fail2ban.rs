//! Debian's real fail2ban banning at the NIC through `contrib/fail2ban/action.d/sip-xdp.conf`.
//!
//! Each test starts its own `fail2ban-server` (config dir, socket, pid file, log and an in-memory
//! database in a tempdir) inside the server namespace of its own [`Host`], with one jail,
//! `asterisk`: fail2ban's shipped `asterisk` filter, unmodified, reading a log file the test
//! writes Asterisk's "Registration ... failed ... Wrong password" lines into, and the sip-xdp
//! action as its only action (no iptables or nftables banaction), pointed at the test's binary,
//! pin dir and state dir through the action's [Init] parameters. The filter runs on a real
//! attachment and the test's REGISTERs come from the client namespace.
use std::{
    fs::File,
    io::Write as _,
    net::{IpAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp_tests::{
    host::{Host, packets, sip_xdp_bin},
    netns::{CLIENT_V4_A, CLIENT_V4_B, SERVER_IF},
};

const FAIL2BAN_SERVER: &str = "/usr/bin/fail2ban-server";
const JAIL: &str = "asterisk";
const BANTIME_S: u64 = 600;
const MAXRETRY: u32 = 3;
/// fail2ban's polling backend looks at the log about once a second; its start takes one or two.
const WAIT: Duration = Duration::from_secs(20);
/// What `bantime = -1` becomes: sip-xdp's longest ban, 3650 days.
const MAX_BANTIME_S: u64 = 3650 * 24 * 3600;

fn contrib_action() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/fail2ban/action.d/sip-xdp.conf")
}

/// A `fail2ban-server` of our own, killed by PID on drop (SIGTERM, which makes it unban
/// everything through the action first; SIGKILL if it does not exit in time).
struct Fail2ban {
    child: Child,
    dir: tempfile::TempDir,
    conf: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    asterisk_log: PathBuf,
}

impl Fail2ban {
    fn start(host: &Host) -> Self {
        assert!(
            Path::new(FAIL2BAN_SERVER).exists(),
            "fail2ban is not installed: run scripts/setup-toolchain.sh (or `apt-get install fail2ban`)"
        );
        let dir = tempfile::tempdir().expect("fail2ban dir");
        let conf = dir.path().join("conf");
        std::fs::create_dir_all(conf.join("action.d")).unwrap();
        copy_dir(Path::new("/etc/fail2ban/filter.d"), &conf.join("filter.d"));
        std::fs::copy("/etc/fail2ban/fail2ban.conf", conf.join("fail2ban.conf"))
            .expect("copying /etc/fail2ban/fail2ban.conf");
        std::fs::copy(contrib_action(), conf.join("action.d/sip-xdp.conf"))
            .expect("copying contrib/fail2ban/action.d/sip-xdp.conf");

        let socket = dir.path().join("fail2ban.sock");
        let log = dir.path().join("fail2ban.log");
        let asterisk_log = dir.path().join("asterisk-messages");
        File::create(&asterisk_log).unwrap();
        // TRACEDEBUG: fail2ban then logs every command it runs and how it returned.
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[DEFAULT]\nloglevel = TRACEDEBUG\nlogtarget = {}\nsocket = {}\npidfile = {}\n\
                 dbfile = :memory:\n",
                log.display(),
                socket.display(),
                dir.path().join("fail2ban.pid").display()
            ),
        )
        .unwrap();
        // Our own jail.conf replaces Debian's: no default banaction, so nothing but the sip-xdp
        // action can run.
        std::fs::write(
            conf.join("jail.conf"),
            format!(
                "[DEFAULT]\nallowipv6 = auto\n\n[{JAIL}]\nenabled = true\nfilter = asterisk\n\
                 backend = polling\nlogpath = {}\nmaxretry = {MAXRETRY}\nfindtime = 10m\n\
                 bantime = {BANTIME_S}\n\
                 action = sip-xdp[sip_xdp={}, pin_dir={}, state_dir={}]\n",
                asterisk_log.display(),
                sip_xdp_bin().display(),
                host.pin_dir.display(),
                host.state_dir.path().display()
            ),
        )
        .unwrap();

        // Inside the server namespace, like every sip-xdp command of the Host, so the start
        // check sees the attached interface. nsenter execs fail2ban-server in place: the child's
        // PID is the server's. The environment is cleared of sip-xdp's variables so that only
        // the action's [Init] parameters point it at this host.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", host.net.server.path().display()))
            .arg("--")
            .arg(FAIL2BAN_SERVER)
            .arg("-c")
            .arg(&conf)
            .args(["-f", "-x", "start"])
            .env_remove("SIP_XDP_PIN_DIR")
            .env_remove("SIP_XDP_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("server.out")).unwrap())
            .stderr(File::create(dir.path().join("server.err")).unwrap())
            .spawn()
            .expect("starting fail2ban-server");
        let f2b = Self {
            child,
            dir,
            conf,
            socket,
            log,
            asterisk_log,
        };
        f2b.wait_log("the jail to start", |log| {
            log.contains(&format!("Jail '{JAIL}' started"))
        });
        f2b
    }

    /// `fail2ban-client args` against this server; asserts success, returns stdout.
    fn client(&self, args: &[&str]) -> String {
        let out = Command::new("fail2ban-client")
            .arg("-c")
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running fail2ban-client");
        assert!(
            out.status.success(),
            "fail2ban-client {args:?} failed ({}): {}{}\nfail2ban log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "fail2ban: no {what} within {WAIT:?}; log:\n{log}\nserver stderr:\n{}",
                std::fs::read_to_string(self.dir.path().join("server.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Appends `count` failed registrations from `addr` to the Asterisk log, stamped now in
    /// Asterisk's format (local time, as fail2ban reads it).
    fn failed_registrations(&self, addr: IpAddr, count: u32) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.asterisk_log)
            .unwrap();
        for n in 0..count {
            writeln!(
                file,
                "[{}] NOTICE[1638] chan_sip.c: Registration from '<sip:10{n}@203.0.113.1>' \
                 failed for '{addr}:5060' - Wrong password",
                local_timestamp()
            )
            .unwrap();
        }
    }

    /// Outcomes of the start checks (`status --require-attached`) fail2ban ran, in order: true
    /// for success, None while one has not returned yet. Each `-- exec:` line is paired with its
    /// `-- returned` line by fail2ban's command id.
    fn start_checks(&self) -> Vec<Option<bool>> {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let mut outcomes = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let Some((head, cmd)) = line.split_once(" -- exec: ") else {
                continue;
            };
            if !cmd.contains("status --require-attached") {
                continue;
            }
            let id = head.rsplit(' ').next().unwrap();
            let returned = format!("{id} -- returned ");
            outcomes.push(lines[i..].iter().find_map(|l| {
                l.split_once(&returned)
                    .map(|(_, rest)| rest.starts_with("successfully"))
            }));
        }
        outcomes
    }

    /// The start checks' outcomes once `count` of them have returned.
    fn wait_start_checks(&self, count: usize) -> Vec<bool> {
        let deadline = Instant::now() + WAIT;
        loop {
            let checks = self.start_checks();
            if checks.len() >= count && checks.iter().all(Option::is_some) {
                return checks.into_iter().flatten().collect();
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {count} start checks returned after {WAIT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every command fail2ban ran was the sip-xdp action's (no firewall command, no other
    /// action), and none failed except the start checks the caller expects to.
    fn assert_only_sip_xdp_ran(&self, failed_start_checks: usize) {
        self.assert_only_sip_xdp_ran_with(failed_start_checks, 0);
    }

    /// [`Self::assert_only_sip_xdp_ran`], with `unenforced_bans` bans that `ban add
    /// --require-enforced` reported as saved but not in force (exit 3).
    fn assert_only_sip_xdp_ran_with(&self, failed_start_checks: usize, unenforced_bans: usize) {
        let log = self.log();
        let bin = sip_xdp_bin().display().to_string();
        let mut execs = 0;
        for line in log.lines() {
            if let Some((_, cmd)) = line.split_once(" -- exec: ") {
                execs += 1;
                assert!(
                    cmd.starts_with(&bin) || cmd.starts_with("bantime_s="),
                    "fail2ban ran something other than the sip-xdp action: {line}"
                );
            }
        }
        assert!(execs > 0, "no command logged; log:\n{log}");
        let failures = log.matches(" -- returned 1").count();
        assert_eq!(
            failures, failed_start_checks,
            "failed commands in the fail2ban log:\n{log}"
        );
        // fail2ban runs a failed ban a second time (after its invariant check) before it gives up.
        let not_in_force = log.matches(" -- returned 3").count();
        assert!(
            (unenforced_bans..=2 * unenforced_bans).contains(&not_in_force),
            "{not_in_force} bans not in force, expected {unenforced_bans}:\n{log}"
        );
        assert_eq!(
            log.matches("Failed to execute ban").count(),
            unenforced_bans,
            "{log}"
        );
        assert!(!log.contains("Failed to execute unban"), "{log}");
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        // No panics here: this also runs while a failed test unwinds.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: a pid we started and have not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Now as "YYYY-MM-DD HH:MM:SS" in local time: Asterisk's log stamp.
fn local_timestamp() -> String {
    // SAFETY: time and localtime_r write only into the values we pass.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `sip-xdp ban list --output json`.
fn bans(host: &Host) -> Vec<Value> {
    let list: Value =
        serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).expect("ban JSON");
    list.as_array().expect("ban list is an array").clone()
}

fn ban_of<'a>(bans: &'a [Value], addr: &str, origin: &str) -> Option<&'a Value> {
    bans.iter()
        .find(|b| b["source"] == addr && b["origin"] == origin)
}

/// Waits until `addr` has (or no longer has) a ban of `origin`; returns the ban list then.
fn wait_ban(host: &Host, f2b: &Fail2ban, addr: &str, origin: &str, present: bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = bans(host);
        if ban_of(&list, addr, origin).is_some() == present {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} {} a {origin} ban after {WAIT:?}: {list:?}\nfail2ban log:\n{}",
            if present { "never got" } else { "still has" },
            f2b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn remaining_s(ban: &Value) -> u64 {
    ban["remaining_s"].as_u64().expect("remaining_s")
}

#[test]
fn start_check_fails_until_attached_and_bans_wait_for_the_attach() {
    sip_xdp_tests::needs_root!();
    let host = Host::new("");
    let f2b = Fail2ban::start(&host);
    let a = IpAddr::V4(CLIENT_V4_A);

    // Nothing attached: fail2ban reports the action's failed start with sip-xdp's message.
    let log = f2b.wait_log("failed start of the sip-xdp action", |log| {
        log.contains(&format!("Failed to start jail '{JAIL}' action 'sip-xdp'"))
    });
    let stderr = log
        .lines()
        .find(|l| l.contains("-- stderr:"))
        .unwrap_or_else(|| panic!("no stderr of the start check in the log:\n{log}"));
    assert!(
        stderr.contains("sip-xdp is not attached to any interface")
            && stderr.contains("run `sip-xdp attach --iface IFACE` or start sip-xdp.service"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&host.pin_dir.display().to_string()),
        "{stderr}"
    );
    assert_eq!(f2b.wait_start_checks(1), vec![false]);

    // The jail still bans: sip-xdp saves the ban and applies it at the attach; but the action
    // fails (`ban add --require-enforced` exits 3), so fail2ban's log says it is not in force.
    f2b.failed_registrations(a, MAXRETRY);
    let list = wait_ban(&host, &f2b, &format!("{a}/32"), "fail2ban", true);
    assert_eq!(list.len(), 1, "{list:?}");
    let log = f2b.wait_log("the failed ban", |log| {
        log.contains(&format!(
            "Failed to execute ban jail '{JAIL}' action 'sip-xdp'"
        ))
    });
    assert!(
        log.lines()
            .any(|l| l.contains("-- stderr:") && l.contains("NOT in force")),
        "{log}"
    );
    host.attach();
    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 3), 0);
    assert_eq!(packets(&host.status(), "drop_denylisted", "register"), 3);
    assert_eq!(
        host.registers_through(&server, IpAddr::V4(CLIENT_V4_B), 3),
        3
    );

    // Restarted once attached, the jail's start check passes and logs nothing.
    f2b.client(&["restart", JAIL]);
    assert_eq!(f2b.wait_start_checks(2), vec![false, true]);
    assert_eq!(
        f2b.log()
            .matches(&format!("Failed to start jail '{JAIL}'"))
            .count(),
        1
    );
    f2b.assert_only_sip_xdp_ran_with(1, 1);
}

#[test]
fn asterisk_jail_bans_at_the_nic_and_unbans_only_its_own() {
    sip_xdp_tests::needs_root!();
    let host = Host::new("");
    host.attach();
    let server = host.server_socket();
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
    let (a_net, b_net) = (format!("{a}/32"), format!("{b}/32"));
    assert_eq!(host.registers_through(&server, a, 2), 2, "A before any ban");

    let f2b = Fail2ban::start(&host);
    assert_eq!(
        f2b.wait_start_checks(1),
        vec![true],
        "start check while attached"
    );

    // A fails maxretry times, B once less: only A is banned.
    f2b.failed_registrations(b, MAXRETRY - 1);
    f2b.failed_registrations(a, MAXRETRY);
    let list = wait_ban(&host, &f2b, &a_net, "fail2ban", true);
    let ban = ban_of(&list, &a_net, "fail2ban").unwrap();
    assert!(
        (BANTIME_S - 10..=BANTIME_S).contains(&remaining_s(ban)),
        "{ban}"
    );
    assert_eq!(ban["reason"], format!("fail2ban {JAIL}"));
    assert_eq!(list.len(), 1, "only A is banned: {list:?}");
    let jail = f2b.client(&["status", JAIL]);
    assert!(jail.contains(&format!("Banned IP list:\t{a}")), "{jail}");
    assert!(
        jail.contains("Currently failed:\t1"),
        "B's two failures: {jail}"
    );

    // At the NIC: A's REGISTERs are dropped as denylisted, B's pass.
    assert_eq!(host.registers_through(&server, a, 5), 0);
    assert_eq!(host.registers_through(&server, b, 3), 3);
    let status = host.status();
    assert_eq!(packets(&status, "drop_denylisted", "register"), 5);
    assert_eq!(status["tables"]["list_bans"], 1);
    // Over TCP too (SIP over TCP and TLS, the ports of [datapath] tcp_ports): the client
    // namespace connects from A, and A's SYNs get no answer.
    let sip = host.sip;
    let _listener = host
        .net
        .server
        .run(move || TcpListener::bind(sip).expect("binding the SIP TCP listener"));
    let tcp_from_a = || {
        host.net
            .client
            .run(move || TcpStream::connect_timeout(&sip, Duration::from_secs(2)).is_ok())
    };
    assert!(!tcp_from_a(), "A connected over TCP while banned");
    assert!(packets(&host.status(), "drop_denylisted", "tcp_syn") >= 1);

    // An operator's own ban of A outlives fail2ban's unban.
    host.ok(&[
        "ban",
        "add",
        &a.to_string(),
        "--for",
        "1h",
        "--reason",
        "by hand",
    ]);
    f2b.client(&["set", JAIL, "unbanip", &a.to_string()]);
    let list = wait_ban(&host, &f2b, &a_net, "fail2ban", false);
    assert!(ban_of(&list, &a_net, "manual").is_some(), "{list:?}");
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "the manual ban holds"
    );
    host.ok(&["ban", "del", &a.to_string()]);
    assert_eq!(
        host.registers_through(&server, a, 3),
        3,
        "A registers again"
    );
    assert!(tcp_from_a(), "A connects over TCP again");
    assert!(bans(&host).is_empty());
    assert_eq!(
        packets(&host.status(), "drop_denylisted", "register"),
        5 + 3
    );

    // fail2ban's unban after the ban is already gone (lifted by hand here; the same as after
    // sip-xdp's own expiry) succeeds: --missing-ok.
    f2b.client(&["set", JAIL, "banip", &b.to_string()]);
    wait_ban(&host, &f2b, &b_net, "fail2ban", true);
    assert_eq!(host.registers_through(&server, b, 3), 0);
    host.ok(&["ban", "del", &b.to_string(), "--origin", "fail2ban"]);
    f2b.client(&["set", JAIL, "unbanip", &b.to_string()]);
    f2b.wait_log("B's unban", |log| {
        log.contains(&format!("[{JAIL}] Unban {b}"))
    });

    // Expiry: fail2ban unbans when its bantime runs out.
    f2b.client(&["set", JAIL, "bantime", "2"]);
    f2b.client(&["set", JAIL, "banip", &b.to_string()]);
    let list = wait_ban(&host, &f2b, &b_net, "fail2ban", true);
    assert!(remaining_s(ban_of(&list, &b_net, "fail2ban").unwrap()) <= 2);
    f2b.wait_log("B's unban on expiry", |log| {
        log.matches(&format!("[{JAIL}] Unban {b}")).count() == 2
    });
    wait_ban(&host, &f2b, &b_net, "fail2ban", false);
    assert_eq!(
        host.registers_through(&server, b, 3),
        3,
        "B registers again"
    );

    // bantime = -1 (permanent): sip-xdp's longest ban, lifted by fail2ban's unban.
    let v6 = "2001:db8:bad::1";
    f2b.client(&["set", JAIL, "bantime", "-1"]);
    f2b.client(&["set", JAIL, "banip", v6]);
    let list = wait_ban(&host, &f2b, &format!("{v6}/128"), "fail2ban", true);
    let permanent = remaining_s(ban_of(&list, &format!("{v6}/128"), "fail2ban").unwrap());
    assert!(
        (MAX_BANTIME_S - 10..=MAX_BANTIME_S).contains(&permanent),
        "{permanent}"
    );
    f2b.client(&["unban", v6]);
    wait_ban(&host, &f2b, &format!("{v6}/128"), "fail2ban", false);

    let jail = f2b.client(&["status", JAIL]);
    assert!(jail.contains("Currently banned:\t0"), "{jail}");
    assert!(bans(&host).is_empty());
    f2b.assert_only_sip_xdp_ran(0);
}

/// The start check itself: `status --require-attached` fails, naming the fix, while nothing is
/// attached, after a detach, and where the attached interface does not exist (the root
/// namespace, from which the test's veth is invisible); it passes while attached.
#[test]
fn status_require_attached_names_the_fix() {
    sip_xdp_tests::needs_root!();
    let host = Host::new("");
    let err = host.fails(&["status", "--require-attached"]);
    assert!(
        err.contains("sip-xdp is not attached to any interface")
            && err.contains("no attachment pinned under")
            && err.contains("run `sip-xdp attach --iface IFACE` or start sip-xdp.service"),
        "{err}"
    );

    host.attach();
    let out = host.ok(&["status", "--require-attached", "--output", "json"]);
    let status: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["attached"][0]["iface"], SERVER_IF);

    let root_ns = Command::new(sip_xdp_bin())
        .args(["status", "--require-attached"])
        .env("SIP_XDP_PIN_DIR", &host.pin_dir)
        .env("SIP_XDP_STATE_DIR", host.state_dir.path())
        .output()
        .expect("running sip-xdp");
    assert!(!root_ns.status.success());
    let err = String::from_utf8_lossy(&root_ns.stderr);
    assert!(
        err.contains(&format!("({SERVER_IF})")) && err.contains("interfaces are missing"),
        "{err}"
    );

    host.ok(&["detach", "--iface", SERVER_IF]);
    let err = host.fails(&["status", "--require-attached"]);
    assert!(err.contains("not attached to any interface"), "{err}");
}
