//! `sip-xdp top` in a pseudo-terminal (a tmux session of its own), against a program attached to
//! a veth with traffic running: the screen is read back with `tmux capture-pane` and its rows
//! checked, keys are sent to it, and what they do is read back from `sip-xdp ban list`.
use std::{
    net::IpAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp_tests::{
    host::{Daemon, Host, TEST_CONFIG, sip_xdp_bin},
    netns::{CLIENT_V4_A, CLIENT_V4_B},
    packet,
};

/// A tmux server of this test's own (its socket in a temporary directory, `-S`), killed when
/// dropped, the socket with it.
struct Tmux {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl Tmux {
    fn start(host: &Host, width: u16, height: u16) -> Self {
        let dir = tempfile::tempdir().expect("a directory for tmux's socket");
        let socket = dir.path().join("tmux");
        // The shell then says how `top` exited, and stays (20 s at most, the server is killed
        // before) so that its last words and an early error stay on the screen.
        let command = format!(
            "env SIP_XDP_PIN_DIR={} SIP_XDP_STATE_DIR={} nsenter --net={} -- {} top --interval \
             500ms --config {}; echo top exited with $?; sleep 20",
            host.pin_dir.display(),
            host.state_dir.path().display(),
            host.net.server.path().display(),
            sip_xdp_bin().display(),
            host.config.display()
        );
        let tmux = Self { _dir: dir, socket };
        let out = tmux
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
                &command,
            ])
            .output()
            .expect("running tmux (apt-get install tmux; scripts/setup-toolchain.sh does)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket).args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    /// Waits (a few seconds at most) for a screen on which `ready` holds; returns it.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

/// The line of the screen that shows `addr` in the sources table.
fn source_line<'a>(screen: &'a str, addr: &str) -> Option<&'a str> {
    screen.lines().find(|l| {
        l.trim_start_matches('│')
            .trim_start()
            .starts_with(&format!("{addr} "))
    })
}

#[test]
fn top_shows_the_sources_bans_and_rates_and_acts_on_the_selected_source() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    // Not a terminal: one clear line, a failure.
    let out = host.run(&["top"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs a terminal"), "{err}");

    host.attach();
    // With the daemon running (top reads the same pinned maps either way), serving metrics:
    // the feeds' health comes from them.
    let daemon = Daemon::start(&host, &[]);
    daemon.wait_for(&["sip-xdp running"]);
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
    let server = host.server_socket();
    // B: a phone within its limits; A: a flood past its burst of 10, banned by rate.
    assert_eq!(host.registers_through(&server, b, 3), 3);
    assert_eq!(host.registers_through(&server, a, 30), 10);

    let tmux = Tmux::start(&host, 130, 36);
    // A keeps flooding (bounded: 100/s for at most 6 s) while the screen is read.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let client = host.client(a);
        let sip = host.sip;
        let stop = stop.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut seq = 100;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(6) {
                let _ = client.send_to(&packet::register("100", seq), sip);
                seq += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let a_text = a.to_string();
    let screen = tmux.wait_for("flood's drop rate", |s| {
        source_line(s, &a_text).is_some_and(|l| l.contains(" rate "))
            && s.lines()
                .any(|l| l.starts_with("verdict/s") && l.contains("drop_banned"))
    });
    eprintln!("sip-xdp top, A flooding:\n{screen}");
    let row = source_line(&screen, &a_text).unwrap();
    // Sorted by packets per second: the flood is the first row, with its ban.
    let first = screen.lines().find(|l| l.contains("198.51.100.")).unwrap();
    assert_eq!(first, row, "{screen}");
    assert!(source_line(&screen, &b.to_string()).is_some(), "{screen}");
    assert!(screen.contains("bans       rate 1"), "{screen}");
    assert!(
        screen.contains("feeds: CrowdSec not configured"),
        "{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.starts_with("class/s") && l.contains("unread")),
        "{screen}"
    );
    assert!(screen.contains("bans in force: 1 shown of 1"), "{screen}");
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();

    // Filter to B's address: A's row goes.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &b.to_string()]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the filter", |s| s.contains("sources 198.51.100.11/32"));
    assert!(source_line(&screen, &a_text).is_none(), "{screen}");
    assert!(source_line(&screen, &b.to_string()).is_some(), "{screen}");

    // Select B and ban it for a time typed in, confirmed: the same ban `sip-xdp ban add` makes.
    tmux.keys(&["j", "b"]);
    tmux.wait_for("the length's prompt", |s| {
        s.contains("ban 198.51.100.11 for how long")
    });
    tmux.keys(&["-l", "2h"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains("Ban 198.51.100.11 for 2h? (y/n)")
    });
    tmux.keys(&["y"]);
    tmux.wait_for("the ban's report", |s| {
        s.contains("ban 198.51.100.11/32: banned for 2h")
    });
    let bans: Value = serde_json::from_str(&host.ok(&["ban", "list", "--output", "json"])).unwrap();
    let manual = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["source"] == "198.51.100.11/32")
        .expect("B's ban");
    assert_eq!(manual["origin"], "manual");
    assert_eq!(manual["reason"], "from sip-xdp top");
    assert!(manual["remaining_s"].as_u64().unwrap() > 7100, "{manual}");
    assert_eq!(
        host.registers_through(&server, b, 2),
        0,
        "the ban is in force"
    );
    // Refused ("n"): nothing happens.
    tmux.keys(&["u"]);
    tmux.wait_for("the unban question", |s| {
        s.contains("Lift this node's bans of 198.51.100.11")
    });
    tmux.keys(&["n"]);
    tmux.wait_for("the refusal", |s| s.contains("cancelled"));
    assert_eq!(host.registers_through(&server, b, 1), 0, "still banned");

    // Too small: one line saying so.
    tmux.ok(&["resize-window", "-t", "top", "-x", "60", "-y", "15"]);
    let screen = tmux.wait_for("the size notice", |s| s.contains("terminal too small"));
    assert!(
        screen.starts_with("sip-xdp top: terminal too small (60x15), needs 80x20"),
        "{screen}"
    );

    // q quits, with status 0 (the shell that ran it says which).
    tmux.keys(&["q"]);
    tmux.wait_for("top's exit status", |s| s.contains("top exited with 0"));
}
