use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::mpsc,
    thread,
    time::Instant,
};

use ipnet::IpNet;

use super::{store::TMP_SUFFIX, *};
use crate::time::{NS_PER_SEC, monotonic_now_ns, now_wall_ns};

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn sample() -> StateFile {
    let mut state = StateFile::default();
    state.add_allow(net("192.0.2.0/24"), Some("carrier".into()));
    state.add_allow(net("2001:db8::/32"), None);
    state.add_deny(net("198.51.100.7/32"), Some("scanner".into()));
    state.add_protected(net("198.51.100.200/32"), Some("trunk".into()));
    state.add_ban(
        net("203.0.113.0/24"),
        BanOrigin::Manual,
        4_000_000_000,
        Some("brute force".into()),
    );
    state.set_auto_bans(vec![AutoBanRecord {
        addr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        banned_until: 1_900_000_000,
        ban_duration_ns: 120 * NS_PER_SEC,
        strikes: 2,
        limit_class: 1,
        monitor_only: false,
    }]);
    state
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("nested/state");
    let state = sample();
    state.save(&state_dir).expect("save");
    assert_eq!(StateFile::load(&state_dir).expect("load"), state);

    let path = state_dir.join(STATE_FILE);
    let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!state_dir.join("state.json.tmp").exists());
    let text = fs::read_to_string(&path).expect("read");
    assert!(text.contains("\"version\": 1"), "{text}");
    assert!(text.contains("\"203.0.113.0/24\""), "{text}");

    // A second save replaces, not appends.
    let mut smaller = state.clone();
    assert!(smaller.remove_allow(net("192.0.2.0/24")));
    smaller.save(&state_dir).expect("save again");
    assert_eq!(StateFile::load(&state_dir).expect("load"), smaller);
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn state_dirs_and_files_are_owner_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("var/lib/sip-xdp");
    // Whatever the caller's umask lets through.
    let old = unsafe { libc::umask(0o022) };
    let _lock = lock(&state_dir).expect("lock");
    sample().save(&state_dir).expect("save");
    sample()
        .save(&state_dir)
        .expect("save again (keeps state.json.prev)");
    unsafe { libc::umask(old) };
    assert_eq!(mode_of(&state_dir), 0o700, "state directory");
    assert_eq!(
        mode_of(&dir.path().join("var/lib")),
        0o700,
        "created parents"
    );
    assert_eq!(mode_of(&state_dir.join(STATE_FILE)), 0o600, "state file");
    assert_eq!(mode_of(&state_dir.join(LOCK_FILE)), 0o600, "lock file");
    assert_eq!(
        mode_of(&state_dir.join(PREV_FILE)),
        0o600,
        "previous version"
    );
}

#[test]
fn a_symlink_at_the_temporary_path_is_not_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious\n").expect("write");
    let state_dir = dir.path().join("state");
    fs::create_dir(&state_dir).unwrap();
    let tmp = state_dir.join(format!("{STATE_FILE}{TMP_SUFFIX}"));
    std::os::unix::fs::symlink(&victim, &tmp).expect("plant symlink");
    sample()
        .save(&state_dir)
        .expect("save past a planted symlink");
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious\n",
        "target written through"
    );
    assert!(
        fs::symlink_metadata(&tmp).is_err(),
        "temporary name left behind"
    );
    assert_eq!(StateFile::load(&state_dir).unwrap(), sample());
    assert!(
        !fs::symlink_metadata(state_dir.join(STATE_FILE))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A stale regular temporary file (a crash between write and rename) is replaced.
    fs::write(&tmp, b"half a file").unwrap();
    StateFile::default()
        .save(&state_dir)
        .expect("save past a stale temp file");
    assert_eq!(StateFile::load(&state_dir).unwrap(), StateFile::default());
    assert!(fs::symlink_metadata(&tmp).is_err());
}

#[test]
fn a_corrupt_file_is_moved_aside_and_the_previous_version_restored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = sample();
    first.save(dir.path()).unwrap();
    let mut second = first.clone();
    second.add_deny(net("203.0.113.99/32"), None);
    second.save(dir.path()).unwrap();
    let path = dir.path().join(STATE_FILE);
    let garbage = b"{\"version\": 1, \"allow\": [\xff oops";
    fs::write(&path, garbage).unwrap();

    let (state, recovery) = StateFile::load_or_recover(dir.path()).expect("recovers");
    assert_eq!(state, first, "the version the last save replaced");
    let text = recovery.warnings.join("\n");
    assert!(text.contains("not valid"), "{text}");
    assert!(text.contains("moved it aside"), "{text}");
    assert!(
        text.contains("changes made after that were NOT restored"),
        "{text}"
    );
    let rejected = rejected_files(dir.path());
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(fs::read(&rejected[0]).unwrap(), garbage, "kept as it was");
    assert!(!path.exists(), "moved, not copied");
    // A good file loads as before, with no warnings.
    state.save(dir.path()).unwrap();
    let (again, recovery) = StateFile::load_or_recover(dir.path()).unwrap();
    assert_eq!(again, first);
    assert!(recovery.warnings.is_empty());
}

#[test]
fn a_newer_file_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    let newer = br#"{"version": 2, "allow": "something new"}"#;
    fs::write(&path, newer).unwrap();
    let (state, recovery) = StateFile::load_or_recover(dir.path()).expect("recovers");
    assert_eq!(state, StateFile::default());
    let text = recovery.warnings.join("\n");
    assert!(text.contains("version 2"), "{text}");
    assert!(text.contains("were NOT restored"), "{text}");
    state.save(dir.path()).unwrap();
    let rejected = rejected_files(dir.path());
    assert_eq!(rejected.len(), 1);
    assert_eq!(fs::read(&rejected[0]).unwrap(), newer);
    // Permissions and I/O errors are not "corrupt": nothing is moved.
    let unreadable = tempfile::tempdir().unwrap();
    fs::create_dir(unreadable.path().join(STATE_FILE)).unwrap();
    assert!(matches!(
        StateFile::load_or_recover(unreadable.path()),
        Err(StateError::Read { .. })
    ));
    assert!(rejected_files(unreadable.path()).is_empty());
}

#[test]
fn restored_bans_are_clamped_to_what_they_can_have_left() {
    let hour = 3_600;
    let mut state = StateFile::default();
    state.add_ban(net("198.51.100.1/32"), BanOrigin::Fail2ban, 0, None);
    state.bans[0].added_at = 10_000;
    state.bans[0].expires_at = 10_000 + hour;
    state.set_auto_bans(vec![AutoBanRecord {
        addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
        banned_until: 10_000 + 600,
        ban_duration_ns: 600 * NS_PER_SEC,
        strikes: 1,
        limit_class: 1,
        monitor_only: false,
    }]);
    state.saved = Some(SavedClock {
        boot_id: Some("boot-a".into()),
        wall_ns: 10_000 * NS_PER_SEC,
        mono_ns: 50 * NS_PER_SEC,
    });
    let at = |boot: &str, wall_s: u64, mono_s: u64| SavedClock {
        boot_id: Some(boot.into()),
        wall_ns: wall_s * NS_PER_SEC,
        mono_ns: mono_s * NS_PER_SEC,
    };
    let left = |s: &StateFile, now: &SavedClock| {
        let now_s = now.wall_ns / NS_PER_SEC;
        (
            s.bans[0].expires_at.saturating_sub(now_s),
            s.auto_bans[0].banned_until.saturating_sub(now_s),
        )
    };

    // Another boot, the wall clock 900 s behind the last save: at most what was left then.
    let mut s = state.clone();
    let now = at("boot-b", 9_100, 5);
    assert_eq!(s.clamp_restored_bans(&now), 2);
    assert_eq!(left(&s, &now), (hour, 600));
    assert_eq!(
        s.bans[0].expires_at - s.bans[0].added_at,
        hour,
        "duration kept"
    );

    // Another boot, no save time known, the clock 9000 s behind: never more than the ban.
    let mut s = state.clone();
    s.saved = None;
    let now = at("boot-b", 10_000 - 9_000, 5);
    assert_eq!(s.clamp_restored_bans(&now), 2);
    assert_eq!(left(&s, &now), (hour, 600));

    // The same boot, the wall clock stepped back 2000 s, 100 s after the save: the
    // monotonic clock knows 100 s passed.
    let mut s = state.clone();
    let now = at("boot-a", 10_000 + 100 - 2_000, 150);
    assert_eq!(s.clamp_restored_bans(&now), 2);
    assert_eq!(left(&s, &now), (hour - 100, 500));

    // A right clock changes nothing; nor does one that is ahead (bans are never lengthened).
    for now in [
        at("boot-a", 10_100, 150),
        at("boot-b", 10_100, 5),
        at("boot-b", 20_000, 5),
    ] {
        let mut s = state.clone();
        assert_eq!(s.clamp_restored_bans(&now), 0, "{now:?}");
        assert_eq!(s, state);
    }

    // Saved with its clocks, loaded back: the save time is in the file.
    let dir = tempfile::tempdir().unwrap();
    state.save(dir.path()).unwrap();
    let loaded = StateFile::load(dir.path()).unwrap();
    let saved = loaded.saved.expect("save time written");
    assert!(saved.wall_ns.abs_diff(now_wall_ns()) < 5 * NS_PER_SEC);
    assert_eq!(saved.boot_id, boot_id());
}

#[test]
fn missing_file_is_empty_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateFile::load(dir.path()).expect("load");
    assert_eq!(state, StateFile::default());
    assert_eq!(state.version, STATE_VERSION);
    assert!(state.allow.is_empty() && state.bans.is_empty());
    assert!(
        !dir.path().join(STATE_FILE).exists(),
        "load must not create"
    );
}

#[test]
fn corrupt_file_is_an_error_and_left_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    let garbage = b"{\n  \"version\": 1,\n  \"allow\": [ oops ]\n}\n";
    fs::write(&path, garbage).expect("write");

    let err = StateFile::load(dir.path()).expect_err("corrupt file must not load");
    let StateError::Corrupt { line, .. } = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert_eq!(*line, 3);
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("move it aside"), "{message}");

    // The locked update path must not overwrite it either.
    let edited = StateFile::update(dir.path(), |s| s.add_allow(net("10.0.0.0/8"), None));
    assert!(matches!(edited, Err(StateError::Corrupt { .. })));
    assert_eq!(fs::read(&path).expect("read"), garbage);
}

#[test]
fn bad_field_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"{"version": 1, "deny": [{"net": "300.1.1.1/8", "added_at": 0}]}"#;
    fs::write(dir.path().join(STATE_FILE), text).expect("write");
    let err = StateFile::load(dir.path()).expect_err("bad CIDR");
    assert!(err.to_string().contains("300.1.1.1/8"), "{err}");
}

#[test]
fn newer_version_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    // A newer format may change fields freely; the version must be reported, not the fields.
    let text = br#"{"version": 2, "allow": "something new"}"#;
    fs::write(&path, text).expect("write");
    let err = StateFile::load(dir.path()).expect_err("newer version");
    assert!(
        matches!(err, StateError::TooNew { version: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade sip-xdp"), "{err}");
    assert_eq!(fs::read(&path).expect("read"), text);

    fs::write(&path, br#"{"version": 0}"#).expect("write");
    let err = StateFile::load(dir.path()).expect_err("version 0");
    assert!(
        matches!(err, StateError::UnknownVersion { version: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn hand_edited_file_is_normalised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"{"version": 1,
        "allow": [{"net": "10.1.2.3/8", "added_at": 5}, {"net": "10.0.0.0/8", "added_at": 6}],
        "bans": [{"net": "192.0.2.1", "expires_at": 9, "added_at": 1}]}"#;
    fs::write(dir.path().join(STATE_FILE), text).expect("write");
    let state = StateFile::load(dir.path()).expect("load");
    assert_eq!(state.allow.len(), 1);
    assert_eq!(state.allow[0].net, net("10.0.0.0/8"));
    assert_eq!(state.allow[0].added_at, 5);
    assert_eq!(state.bans[0].net, net("192.0.2.1/32"));
}

#[test]
fn lock_excludes_a_second_locker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let first = lock(&state_dir).expect("first lock");

    let path = state_dir.clone();
    let err = thread::spawn(move || lock_with_timeout(&path, Duration::from_millis(200)))
        .join()
        .expect("thread")
        .expect_err("second lock must time out");
    assert!(matches!(err, StateError::LockTimeout { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("state.lock"), "{message}");
    assert!(message.contains("another sip-xdp command"), "{message}");

    // A waiter gets the lock once the holder lets go.
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = state_dir.clone();
    let waiter = thread::spawn(move || {
        ready_tx.send(()).expect("send");
        let started = Instant::now();
        let lock = lock_with_timeout(&path, Duration::from_secs(5));
        (lock, started.elapsed())
    });
    ready_rx.recv().expect("recv");
    thread::sleep(Duration::from_millis(300));
    drop(first);
    let (second, waited) = waiter.join().expect("thread");
    second.expect("lock after release");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
}

#[test]
fn allow_and_deny_add_remove() {
    let mut state = StateFile::default();
    assert!(state.add_allow(net("10.1.2.3/8"), Some("office".into())));
    assert_eq!(state.allow[0].net, net("10.0.0.0/8"));
    assert_eq!(state.allow[0].comment.as_deref(), Some("office"));
    assert!(!state.add_allow(net("10.0.0.0/8"), None), "already present");
    assert!(
        !state.add_allow(net("10.9.9.9/8"), None),
        "same net, other host bits"
    );
    assert_eq!(state.allow.len(), 1);
    assert_eq!(state.allow[0].comment.as_deref(), Some("office"));
    assert!(state.add_allow(net("10.0.0.0/16"), None), "other prefix");
    assert!(state.remove_allow(net("10.200.0.0/8")));
    assert!(!state.remove_allow(net("10.0.0.0/8")));
    assert_eq!(state.allow.len(), 1);
    let now = now_wall_secs();
    assert!(state.allow[0].added_at.abs_diff(now) <= 1);

    assert!(state.add_deny(net("2001:db8::1/32"), None));
    assert_eq!(state.deny[0].net, net("2001:db8::/32"));
    assert!(!state.add_deny(net("2001:db8::/32"), None));
    assert!(state.remove_deny(net("2001:db8::/32")));
    assert!(!state.remove_deny(net("2001:db8::/32")));
    assert!(state.deny.is_empty());
}

#[test]
fn latest_ban_wins_and_bans_are_removed() {
    let mut state = StateFile::default();
    state.add_ban(
        net("192.0.2.55/24"),
        BanOrigin::Manual,
        2_000,
        Some("first".into()),
    );
    state.add_ban(
        net("192.0.2.0/24"),
        BanOrigin::Manual,
        1_000,
        Some("second".into()),
    );
    assert_eq!(state.bans.len(), 1);
    assert_eq!(state.bans[0].net, net("192.0.2.0/24"));
    assert_eq!(
        state.bans[0].expires_at, 1_000,
        "shorter ban replaces longer"
    );
    assert_eq!(state.bans[0].reason.as_deref(), Some("second"));
    assert!(state.remove_ban(net("192.0.2.1/24"), BanOrigin::Manual));
    assert!(!state.remove_ban(net("192.0.2.0/24"), BanOrigin::Manual));
}

#[test]
fn origins_are_kept_apart() {
    let mut state = StateFile::default();
    let n = net("198.51.100.9/32");
    state.add_ban(n, BanOrigin::Fail2ban, 2_000, Some("asterisk".into()));
    state.add_ban(n, BanOrigin::Crowdsec, 5_000, None);
    state.add_ban(n, BanOrigin::Crowdsec, 3_000, None);
    assert_eq!(state.bans.len(), 2, "one record per (net, origin)");
    assert_eq!(state.bans_added[&BanOrigin::Crowdsec], 2);
    let clocks = Clocks {
        wall_ns: 1_000 * NS_PER_SEC,
        mono_ns: 50 * NS_PER_SEC,
    };
    // The longest origin sets the kernel entry.
    assert_eq!(
        state.denylist_value_at(&n, 1_000, clocks),
        Some(clocks.wall_to_mono_ns(3_000))
    );
    assert!(state.remove_ban(n, BanOrigin::Crowdsec));
    assert!(!state.remove_ban(n, BanOrigin::Manual));
    assert_eq!(
        state.denylist_value_at(&n, 1_000, clocks),
        Some(clocks.wall_to_mono_ns(2_000)),
        "fail2ban's ban survives the CrowdSec lift"
    );
    assert_eq!(state.bans_of(n, 1_000).len(), 1);
    assert!(state.remove_ban(n, BanOrigin::Fail2ban));
    assert_eq!(state.denylist_value_at(&n, 1_000, clocks), None);
}

#[test]
fn ban_without_origin_reads_as_manual() {
    let text = r#"{"version":1,"bans":[{"net":"203.0.113.4","expires_at":9,"added_at":1}]}"#;
    let state = StateFile::parse(Path::new("state.json"), text).expect("parses");
    assert_eq!(state.bans[0].origin, BanOrigin::Manual);
}

#[test]
fn prune_removes_only_ended_bans() {
    let mut state = StateFile::default();
    state.add_ban(net("192.0.2.1/32"), BanOrigin::Manual, 100, None);
    state.add_ban(net("192.0.2.2/32"), BanOrigin::Manual, 150, None);
    state.add_ban(net("192.0.2.3/32"), BanOrigin::Manual, 151, None);
    let mut pruned = state.prune_expired_bans(150);
    pruned.sort();
    assert_eq!(pruned, vec![net("192.0.2.1/32"), net("192.0.2.2/32")]);
    assert_eq!(state.bans.len(), 1);
    assert_eq!(state.bans[0].net, net("192.0.2.3/32"));
    assert!(state.prune_expired_bans(150).is_empty());
}

#[test]
fn denylist_value_merges_deny_and_bans() {
    let clocks = Clocks {
        wall_ns: 1_000 * NS_PER_SEC,
        mono_ns: 50 * NS_PER_SEC,
    };
    let now_wall = 1_000;
    let mut state = StateFile::default();
    let n = net("198.51.100.0/24");

    assert_eq!(state.denylist_value_at(&n, now_wall, clocks), None);

    state.add_ban(n, BanOrigin::Manual, 1_010, None);
    assert_eq!(
        state.denylist_value_at(&n, now_wall, clocks),
        Some(60 * NS_PER_SEC),
        "live ban: its end in monotonic time"
    );
    assert_eq!(
        state.denylist_value_at(&net("198.51.100.9/24"), now_wall, clocks),
        Some(60 * NS_PER_SEC),
        "lookup normalises"
    );
    assert_eq!(
        state.denylist_value_at(&n, 1_010, clocks),
        None,
        "ended ban"
    );

    state.add_deny(n, None);
    assert_eq!(state.denylist_value_at(&n, now_wall, clocks), Some(0));
    assert_eq!(
        state.denylist_value_at(&n, 1_010, clocks),
        Some(0),
        "deny outlives the ban"
    );
    state.remove_ban(n, BanOrigin::Manual);
    assert_eq!(state.denylist_value_at(&n, now_wall, clocks), Some(0));
    assert_eq!(
        state.denylist_value_at(&net("198.51.100.0/25"), now_wall, clocks),
        None,
        "exact net only"
    );

    // The public form reads the real clocks.
    let mut live = StateFile::default();
    let now = now_wall_secs();
    live.add_ban(n, BanOrigin::Manual, now + 3_600, None);
    let value = live.denylist_value(&n, now).expect("live ban");
    let expected = monotonic_now_ns() + 3_600 * NS_PER_SEC;
    assert!(
        value.abs_diff(expected) <= 2 * NS_PER_SEC,
        "{value} vs {expected}"
    );

    let entries = {
        let mut s = live.clone();
        s.add_deny(net("192.0.2.0/24"), None);
        s.add_ban(
            net("203.0.113.0/24"),
            BanOrigin::Manual,
            now.saturating_sub(1),
            None,
        );
        s.denylist_entries(now)
    };
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.contains(&(net("192.0.2.0/24"), 0)));
    let (_, ban_value) = entries
        .iter()
        .find(|&&(e, _)| e == n)
        .expect("the live ban");
    assert!(
        ban_value.abs_diff(value) <= NS_PER_SEC,
        "{ban_value} vs {value}"
    );
}

#[test]
fn clock_conversions() {
    let clocks = Clocks {
        wall_ns: 1_000 * NS_PER_SEC + 400_000_000,
        mono_ns: 7 * NS_PER_SEC,
    };
    assert_eq!(clocks.wall_to_mono_ns(1_010), 16 * NS_PER_SEC + 600_000_000);
    assert_eq!(
        clocks.wall_to_mono_ns(900),
        clocks.mono_ns,
        "past saturates to now"
    );
    assert_eq!(
        clocks.mono_to_wall_secs(17 * NS_PER_SEC),
        1_011,
        "rounded up"
    );
    assert_eq!(clocks.mono_to_wall_secs(2 * NS_PER_SEC), 996);
    assert_eq!(
        Clocks {
            wall_ns: 3,
            mono_ns: 10 * NS_PER_SEC
        }
        .mono_to_wall_secs(0),
        0,
        "before the epoch saturates"
    );
    // A ban written to the file and read back never ends earlier.
    let banned_until_ns = 123 * NS_PER_SEC + 1;
    let back = clocks.wall_to_mono_ns(clocks.mono_to_wall_secs(banned_until_ns));
    assert!(back >= banned_until_ns && back - banned_until_ns < NS_PER_SEC);

    // The free functions agree with the real clocks within a second.
    let wall = now_wall_secs();
    let mono = monotonic_now_ns();
    let in_an_hour = wall_to_mono_ns(wall + 3_600);
    assert!(in_an_hour.abs_diff(mono + 3_600 * NS_PER_SEC) <= NS_PER_SEC);
    assert!(mono_to_wall_secs(mono + 60 * NS_PER_SEC).abs_diff(wall + 60) <= 1);
    assert!(wall_to_mono_ns(wall.saturating_sub(10)) >= mono);
}

fn prefix_record(cidr: &str, banned_until: u64, strikes: u32) -> PrefixBanRecord {
    PrefixBanRecord {
        net: net(cidr),
        banned_until,
        ban_duration_ns: 120 * NS_PER_SEC,
        strikes,
        limit_class: sip_xdp_common::LimitClass::Register as u8,
        monitor_only: false,
    }
}

#[test]
fn prefix_bans_round_trip_and_stay_out_of_files_without_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No prefix bans: the file has no key for them, so an older sip-xdp still reads it.
    let state = sample();
    state.save(dir.path()).expect("save");
    let text = fs::read_to_string(dir.path().join(STATE_FILE)).expect("read");
    assert!(!text.contains("prefix_bans"), "{text}");
    assert!(StateFile::load(dir.path()).unwrap().prefix_bans.is_empty());

    let mut state = sample();
    state.set_prefix_bans(vec![
        prefix_record("198.51.100.0/24", 1_900_000_000, 2),
        prefix_record("2001:db8:1::/64", 1_900_000_100, 1),
    ]);
    state.save(dir.path()).expect("save");
    let text = fs::read_to_string(dir.path().join(STATE_FILE)).expect("read");
    assert!(text.contains("\"prefix_bans\""), "{text}");
    assert!(text.contains("\"198.51.100.0/24\""), "{text}");
    assert!(text.contains("\"2001:db8:1::/64\""), "{text}");
    let loaded = StateFile::load(dir.path()).expect("load");
    assert_eq!(loaded, state);
    assert_eq!(loaded.prefix_bans[0].strikes, 2);
    // A save with the prefix bans changed is a change (the daemon saves only then).
    let mut fewer = loaded.clone();
    fewer.set_prefix_bans(vec![prefix_record("198.51.100.0/24", 1_900_000_000, 2)]);
    assert_ne!(fewer, loaded);

    // `ban del` of a net forgets the saved prefix bans inside it, and only those.
    let mut s = loaded.clone();
    assert_eq!(s.remove_prefix_bans_in(net("198.51.100.7/32")), 0);
    assert_eq!(s.remove_prefix_bans_in(net("198.51.0.0/16")), 1);
    assert_eq!(s.prefix_bans.len(), 1);
    assert_eq!(s.remove_prefix_bans_in(net("2001:db8:1::/64")), 1);
    assert!(s.prefix_bans.is_empty());
}

#[test]
fn a_hand_written_prefix_ban_is_read_and_a_bad_one_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(STATE_FILE);
    fs::write(
        &path,
        r#"{"version": 1, "prefix_bans": [{"net": "203.0.113.0/24", "banned_until": 5,
            "ban_duration_ns": 60000000000, "strikes": 1, "limit_class": 0,
            "monitor_only": false}]}"#,
    )
    .unwrap();
    let state = StateFile::load(dir.path()).expect("load");
    assert_eq!(state.prefix_bans[0].net, net("203.0.113.0/24"));
    fs::write(
        &path,
        r#"{"version": 1, "prefix_bans": [{"net": "a /24", "banned_until": 5,
            "ban_duration_ns": 1, "strikes": 1, "limit_class": 0, "monitor_only": false}]}"#,
    )
    .unwrap();
    let err = StateFile::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("neither a CIDR"), "{err}");
}

#[test]
fn restored_prefix_bans_are_clamped_like_source_bans() {
    let mut state = StateFile::default();
    state.set_prefix_bans(vec![prefix_record("198.51.100.0/24", 10_000 + 120, 1)]);
    state.saved = Some(SavedClock {
        boot_id: Some("boot-a".into()),
        wall_ns: 10_000 * NS_PER_SEC,
        mono_ns: 50 * NS_PER_SEC,
    });
    // Another boot, the wall clock 900 s behind: at most its duration is left, not 1020 s.
    let now = SavedClock {
        boot_id: Some("boot-b".into()),
        wall_ns: 9_100 * NS_PER_SEC,
        mono_ns: 5 * NS_PER_SEC,
    };
    assert_eq!(state.clamp_restored_bans(&now), 1);
    assert_eq!(state.prefix_bans[0].banned_until - 9_100, 120);
}
