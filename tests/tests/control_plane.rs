//! The control plane fails closed and keeps its state private: a bad state file still attaches
//! (saying what was not restored), `ban add --require-enforced` tells a caller a ban is not in
//! force, a full disk never leaves the kernel and the state file disagreeing, state files are
//! owner-only, one daemon per pin directory, config writes under the pin directory's lock.
//!
//! Every test runs the real binary in the server namespace of its own veth pair (see
//! `sip_xdp_tests::host`) and checks what the kernel does with real datagrams.
use std::{
    ffi::CString,
    fs::{self, File},
    io::{Read as _, Write as _},
    net::IpAddr,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use sip_xdp_tests::{
    host::{Daemon, Host, TEST_CONFIG, ban_sources, has_xdp, register_burst},
    netns::{CLIENT_V4_A, CLIENT_V4_B, SERVER_IF},
};

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn ban_add_require_enforced_tells_the_caller_a_ban_is_not_in_force() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
    let add = |addr: IpAddr| {
        host.run(&[
            "ban",
            "add",
            &addr.to_string(),
            "--for",
            "1h",
            "--origin",
            "fail2ban",
            "--require-enforced",
        ])
    };

    // Nothing attached: saved, but exit status 3 and one line saying it is not in force.
    let out = add(a);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("NOT in force") && stderr.contains("sip-xdp attach --iface"),
        "{stderr}"
    );
    assert!(ban_sources(&host).contains(&(format!("{a}/32"), "fail2ban".to_owned())));
    // Without the flag: exit 0 and the note, as before.
    let out = host.ok(&["ban", "add", &b.to_string(), "--for", "1h"]);
    assert!(out.contains("not attached"), "{out}");

    // Attached: the saved ban is applied, and a new one is in force (exit 0).
    host.attach();
    let server = host.server_socket();
    assert_eq!(host.registers_through(&server, a, 3), 0);
    host.ok(&["ban", "del", &b.to_string()]);
    let out = add(b);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(host.registers_through(&server, b, 3), 0);

    // Detached, the maps still pinned: written to the kernel's table, yet not in force.
    host.ok(&["detach", "--iface", SERVER_IF]);
    host.ok(&["ban", "del", &a.to_string(), "--origin", "fail2ban"]);
    let out = add(a);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(host.registers_through(&server, a, 3), 3, "nothing attached");
}

#[test]
fn a_corrupt_or_newer_state_file_still_attaches_and_says_what_was_not_restored() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let (a, b) = (IpAddr::V4(CLIENT_V4_A), IpAddr::V4(CLIENT_V4_B));
    host.ok(&["allow", "add", &b.to_string(), "--comment", "office"]);
    host.ok(&["ban", "add", &a.to_string(), "--for", "1h"]);
    host.attach();
    // As after a reboot: nothing pinned, the state file the only copy; then it is damaged.
    host.ok(&["detach", "--all", "--purge"]);
    let state = host.state_dir.path().join("state.json");
    let garbage = b"{\"version\": 1, \"allow\": [ {\"net\": \x00\xff";
    fs::write(&state, garbage).unwrap();

    let out = host.run(&[
        "attach",
        "--iface",
        SERVER_IF,
        "--mode",
        "native",
        "--config",
        host.config.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "attach refused: {stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("moved it aside"),
        "{stderr}"
    );
    assert!(stderr.contains("NOT restored"), "{stderr}");
    assert!(has_xdp(&host), "nothing attached");
    // The lists came back from the version before, and filter.
    let server = host.server_socket();
    assert_eq!(
        host.registers_through(&server, a, 3),
        0,
        "the ban came back"
    );
    assert_eq!(
        host.registers_through(&server, b, 30),
        30,
        "the allowlist came back"
    );
    // The bad file is kept as it was, and status says so until it is dealt with.
    let rejected: Vec<PathBuf> = fs::read_dir(host.state_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.json.rejected-"))
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(fs::read(&rejected[0]).unwrap(), garbage);
    let status = host.status();
    let warnings = status["state_warnings"].as_array().expect("state_warnings");
    assert_eq!(warnings.len(), 1, "{status}");
    assert!(host.ok(&["status"]).contains("WARNING"));
    fs::remove_file(&rejected[0]).unwrap();

    // A file of a newer version: attach, never overwrite it.
    host.ok(&["detach", "--all", "--purge"]);
    let newer = br#"{"version": 7, "allow": {"format": "from the future"}}"#;
    fs::write(&state, newer).unwrap();
    let out = host.run(&["attach", "--iface", SERVER_IF, "--mode", "native"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "attach refused: {stderr}");
    assert!(stderr.contains("version 7"), "{stderr}");
    assert!(has_xdp(&host));
    let kept = fs::read_dir(host.state_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("state.json.rejected-"))
        .expect("the newer file moved aside");
    assert_eq!(
        fs::read(&kept).unwrap(),
        newer,
        "the newer file was changed"
    );
    let now: Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(now["version"], 1);

    // The daemon too: a corrupt file at `run` is logged, moved aside, and the daemon filters.
    host.ok(&["detach", "--all", "--purge"]);
    fs::write(&state, b"not json at all").unwrap();
    let daemon = Daemon::start(&host, &["--no-metrics"]);
    let line = daemon.wait_for(&["WARN", "moved it aside"]);
    assert!(line.contains("not valid"), "{line}");
    daemon.wait_for(&["sip-xdp running"]);
    assert!(has_xdp(&host));
    assert_eq!(
        host.registers_through(&server, a, 30),
        0,
        "the ban is still saved"
    );
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().to_str().unwrap()).unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let options = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: NUL-terminated strings the kernel copies.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = File::create(&path).unwrap();
        let block = [0u8; 4096];
        while file.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_full_disk_never_leaves_the_kernel_and_the_state_file_disagreeing() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let a = IpAddr::V4(CLIENT_V4_A);
    let disk = Tmpfs::mount("64k");
    let state_dir = disk.path().join("state");
    let sd = state_dir.to_str().unwrap();
    let config = host.config.to_str().unwrap();
    host.ok(&[
        "--state-dir",
        sd,
        "attach",
        "--iface",
        SERVER_IF,
        "--mode",
        "native",
        "--config",
        config,
    ]);
    let server = host.server_socket();
    let filler = disk.fill();

    let a_str = a.to_string();
    let ban = [
        "--state-dir",
        sd,
        "ban",
        "add",
        &a_str,
        "--for",
        "1h",
        "--origin",
        "fail2ban",
    ];
    let err = host.fails(&ban);
    assert!(err.contains("cannot write state file"), "{err}");
    // The kernel did not keep a ban the state file does not have.
    assert_eq!(
        host.registers_through(&server, a, 3),
        3,
        "the kernel kept a ban that was never saved"
    );

    // Space again; a reconcile (attach) must not find a stray ban to adopt as "manual".
    fs::remove_file(filler).unwrap();
    host.ok(&["--state-dir", sd, "attach", "--iface", SERVER_IF]);
    let bans: Value =
        serde_json::from_str(&host.ok(&["--state-dir", sd, "ban", "list", "--output", "json"]))
            .unwrap();
    assert_eq!(bans.as_array().unwrap().len(), 0, "{bans}");
    // Saved this time: in force, with its own origin.
    host.ok(&ban);
    assert_eq!(host.registers_through(&server, a, 3), 0);
    let bans: Value =
        serde_json::from_str(&host.ok(&["--state-dir", sd, "ban", "list", "--output", "json"]))
            .unwrap();
    assert_eq!(bans[0]["origin"], "fail2ban", "{bans}");
    host.ok(&["--state-dir", sd, "detach", "--all", "--purge"]);
}

#[test]
fn state_directories_and_files_made_by_the_cli_are_owner_only() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let root = tempfile::tempdir().unwrap();
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let state_dir = root.path().join("var/lib/sip-xdp");
    let sd = state_dir.to_str().unwrap();
    host.ok(&["--state-dir", sd, "allow", "add", "198.51.100.0/24"]);
    host.ok(&["--state-dir", sd, "deny", "add", "203.0.113.0/24"]);
    assert_eq!(mode_of(&state_dir), 0o700);
    assert_eq!(mode_of(&root.path().join("var")), 0o700);
    for file in ["state.json", "state.lock", "state.json.prev"] {
        assert_eq!(mode_of(&state_dir.join(file)), 0o600, "{file}");
    }
    // A symlink planted at the temporary file's name is not written through.
    let victim = root.path().join("victim");
    fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, state_dir.join("state.json.tmp")).unwrap();
    host.ok(&["--state-dir", sd, "allow", "add", "198.51.100.77"]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep\n");
    assert!(fs::symlink_metadata(state_dir.join("state.json.tmp")).is_err());
    let list = host.ok(&["--state-dir", sd, "allow", "list"]);
    assert!(list.contains("198.51.100.77/32"), "{list}");
}

#[test]
fn a_second_daemon_on_the_same_pin_dir_is_refused_naming_the_first() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    let daemon = Daemon::start(&host, &["--no-metrics"]);
    daemon.wait_for(&["sip-xdp running"]);
    let program = host.status()["attached"][0]["program_id"].as_u64().unwrap();

    let other_state = tempfile::tempdir().unwrap();
    let mut second = host
        .command(&[
            "--state-dir",
            other_state.path().to_str().unwrap(),
            "run",
            "--iface",
            SERVER_IF,
            "--no-metrics",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = exited.unwrap_or_else(|| panic!("a second daemon kept running: {err}"));
    assert!(!status.success(), "a second daemon started: {err}");
    assert!(
        err.contains(&format!("pid {}", daemon.child.id()))
            && err.contains(&host.pin_dir.display().to_string()),
        "{err}"
    );
    // The first one's program is the one still attached.
    let status = host.status();
    assert_eq!(
        status["attached"][0]["program_id"].as_u64().unwrap(),
        program
    );
}

#[test]
fn config_writes_wait_for_the_pin_dir_config_lock() {
    sip_xdp_tests::needs_root!();
    let host = Host::new(TEST_CONFIG);
    host.attach();
    assert_eq!(register_burst(&host.status()), 10);
    let other = host.state_dir.path().join("other.toml");
    fs::write(&other, "[limits.register]\nrate = \"1/s\"\nburst = 20\n").unwrap();

    // Another writer holds the lock (a flock on <pin dir>/config_lock) for two seconds.
    let lock_dir = host.pin_dir.join("config_lock");
    match fs::create_dir(&lock_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("mkdir {}: {e}", lock_dir.display()),
    }
    let held = File::open(&lock_dir).unwrap();
    // SAFETY: a valid descriptor we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(held);
    });
    let started = Instant::now();
    host.ok(&[
        "attach",
        "--iface",
        SERVER_IF,
        "--config",
        other.to_str().unwrap(),
    ]);
    let waited = started.elapsed();
    release.join().unwrap();
    assert!(
        waited >= Duration::from_millis(1_800),
        "attach wrote the config while another writer held the lock ({waited:?})"
    );
    assert_eq!(register_burst(&host.status()), 20);
}
