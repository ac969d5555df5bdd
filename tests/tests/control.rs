//! The control plane's housekeeping on a real loaded program's maps.
use ipnet::IpNet;
use sip_xdp::{
    control::{Control, ListKind, forget_sources_in, gc_sources},
    loader::PinDir,
    maps::addr_key,
    time::monotonic_now_ns,
};
use sip_xdp_common::{Config, SourceState};
use sip_xdp_tests::harness::Datapath;

const SECOND_NS: u64 = 1_000_000_000;

#[test]
fn gc_forgets_only_sources_quiet_past_the_strike_decay_and_not_banned() {
    sip_xdp_tests::needs_root!();
    let mut config = Config::DEFAULT;
    config.strike_decay_ns = 10 * SECOND_NS;
    let mut dp = Datapath::load(&config).expect("loading the program");
    let now = monotonic_now_ns();
    // The monotonic clock starts at boot; CI hosts are up for minutes at least.
    assert!(now > 40 * SECOND_NS, "needs a host up for more than 40 s");
    let quiet = |window_start_ns, banned_until_ns| SourceState {
        window_start_ns,
        banned_until_ns,
        strikes: u32::from(banned_until_ns != 0),
        ..SourceState::default()
    };
    let idle = addr_key("198.51.100.1".parse().unwrap());
    let active = addr_key("198.51.100.2".parse().unwrap());
    let recently_banned = addr_key("198.51.100.3".parse().unwrap());
    let long_ago_banned = addr_key("2001:db8::4".parse().unwrap());
    let maps = &mut dp.maps;
    maps.set_source(idle, &quiet(now - 25 * SECOND_NS, 0))
        .unwrap();
    maps.set_source(active, &quiet(now - SECOND_NS, 0)).unwrap();
    // Quiet for 25 s, but banned until 5 s ago: the strikes still count.
    maps.set_source(
        recently_banned,
        &quiet(now - 25 * SECOND_NS, now - 5 * SECOND_NS),
    )
    .unwrap();
    maps.set_source(
        long_ago_banned,
        &quiet(now - 40 * SECOND_NS, now - 30 * SECOND_NS),
    )
    .unwrap();

    assert_eq!(gc_sources(maps).unwrap(), 2);
    assert!(maps.source(idle).unwrap().is_none());
    assert!(maps.source(long_ago_banned).unwrap().is_none());
    assert!(maps.source(active).unwrap().is_some());
    assert_eq!(maps.source(recently_banned).unwrap().unwrap().strikes, 1);
    assert_eq!(gc_sources(maps).unwrap(), 0);
}

#[test]
fn reconcile_forgets_the_sources_of_the_allowlist_entries_it_restores() {
    sip_xdp_tests::needs_root!();
    let mut dp = Datapath::load(&Config::DEFAULT).expect("loading the program");
    let state_dir = tempfile::tempdir().unwrap();
    // No maps pinned here: `allow add` only saves to the state file, as with nothing attached.
    let unpinned = PinDir::new(state_dir.path().join("no-pins"));
    let control = Control::new(unpinned, state_dir.path().to_owned());
    let office: IpNet = "198.51.100.0/28".parse().unwrap();
    assert!(
        !control
            .list_add(ListKind::Allow, &[office], None)
            .unwrap()
            .live
    );

    let now = monotonic_now_ns();
    let banned = SourceState {
        window_start_ns: now,
        banned_until_ns: now + 3600 * SECOND_NS,
        strikes: 1,
        ..SourceState::default()
    };
    let inside = addr_key("198.51.100.10".parse().unwrap());
    let outside = addr_key("198.51.100.20".parse().unwrap());
    dp.maps.set_source(inside, &banned).unwrap();
    dp.maps.set_source(outside, &banned).unwrap();

    control.reconcile(&mut dp.maps).unwrap();
    assert_eq!(dp.maps.allowlist().unwrap(), vec![office]);
    assert!(
        dp.maps.source(inside).unwrap().is_none(),
        "a ban inside the restored allowlist entry would drop an allowlisted source"
    );
    assert_eq!(dp.maps.source(outside).unwrap().unwrap().strikes, 1);
}

#[test]
fn forget_sources_in_compares_keys_as_the_kernel_does() {
    sip_xdp_tests::needs_root!();
    let mut dp = Datapath::load(&Config::DEFAULT).expect("loading the program");
    let tracked = [
        "198.51.100.10",
        "198.51.100.99",
        "2001:db8:1::10",
        "2001:db8:2::10",
    ];
    for addr in tracked {
        dp.maps
            .set_source(addr_key(addr.parse().unwrap()), &SourceState::default())
            .unwrap();
    }
    let nets: Vec<IpNet> = [
        "198.51.100.0/28",
        "2001:db8:1::/48",
        "::ffff:198.51.100.96/126",
    ]
    .iter()
    .map(|n| n.parse().unwrap())
    .collect();
    assert_eq!(forget_sources_in(&mut dp.maps, &nets).unwrap(), 3);
    let left: Vec<_> = dp
        .maps
        .sources()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.addr)
        .collect();
    assert_eq!(left, vec![addr_key("2001:db8:2::10".parse().unwrap())]);
    assert_eq!(forget_sources_in(&mut dp.maps, &nets).unwrap(), 0);
}

/// BPF_MAP_CREATE + BPF_OBJ_PIN by hand: a map with the layout an older build pinned.
fn pin_raw_map(
    path: &std::path::Path,
    map_type: u32,
    key: u32,
    value: u32,
    entries: u32,
    flags: u32,
) {
    use std::{ffi::CString, os::unix::ffi::OsStrExt as _};
    let bpf = |cmd: libc::c_long, attr: &mut [u64; 16]| -> libc::c_long {
        // SAFETY: a zero-padded union bpf_attr of the size passed.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128u32) }
    };
    // map_create: { u32 map_type, key_size, value_size, max_entries, map_flags, ... }
    let mut attr = [0u64; 16];
    attr[0] = u64::from(map_type) | (u64::from(key) << 32);
    attr[1] = u64::from(value) | (u64::from(entries) << 32);
    attr[2] = u64::from(flags);
    let fd = bpf(0, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    attr[1] = fd as u64;
    assert_eq!(
        bpf(6, &mut attr),
        0,
        "BPF_OBJ_PIN: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd as i32) };
}

/// An upgrade from a build whose source table had four buckets (88-byte values), whose config,
/// counters and presence flags had other sizes: the new program loads against the pins, the
/// maps whose layout changed are replaced, the old table's bans come over with their strikes,
/// and the lists (same layout) are kept as they are.
#[test]
fn an_upgrade_carries_bans_and_lists_over_maps_of_an_older_layout() {
    sip_xdp_tests::needs_root!();
    use aya::maps::{HashMap as BpfHashMap, LpmTrie, Map, MapData};
    use sip_xdp::loader::{self, LoadOptions};
    use sip_xdp_common::{AllowEntry, SourceKey, map_names};
    const LRU_HASH: u32 = 9;
    const ARRAY: u32 = 2;
    const PERCPU_ARRAY: u32 = 6;
    const LPM_TRIE: u32 = 11;
    const NO_PREALLOC: u32 = 1;

    let dir = std::path::PathBuf::from(format!("/sys/fs/bpf/sxdp-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a pin directory on bpffs");
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let pins = PinDir::new(&dir);
    pin_raw_map(
        &pins.map_path(map_names::SOURCES),
        LRU_HASH,
        16,
        88,
        1024,
        0,
    );
    pin_raw_map(&pins.map_path(map_names::CONFIG), ARRAY, 4, 144, 2, 0);
    pin_raw_map(
        &pins.map_path(map_names::COUNTERS),
        PERCPU_ARRAY,
        4,
        8,
        156,
        0,
    );
    pin_raw_map(&pins.map_path(map_names::LIST_PRESENCE), ARRAY, 4, 4, 2, 0);
    pin_raw_map(
        &pins.map_path(map_names::ALLOWLIST),
        LPM_TRIE,
        20,
        4,
        16_384,
        NO_PREALLOC,
    );

    let office: IpNet = "198.51.100.0/24".parse().unwrap();
    let attacker = addr_key("203.0.113.9".parse().unwrap());
    let until = monotonic_now_ns() + 3600 * SECOND_NS;
    {
        let map = Map::from_map_data(MapData::from_pin(pins.map_path(map_names::SOURCES)).unwrap())
            .unwrap();
        let mut old: BpfHashMap<_, SourceKey, [u8; 88]> = BpfHashMap::try_from(map).unwrap();
        let mut value = [0u8; 88];
        value[32..40].copy_from_slice(&until.to_ne_bytes());
        value[40..48].copy_from_slice(&(1800 * SECOND_NS).to_ne_bytes());
        value[76..80].copy_from_slice(&3u32.to_ne_bytes());
        value[80] = 0; // register
        value[81] = 2; // expiry pending
        old.insert(SourceKey { addr: attacker }, value, 0).unwrap();
        let map =
            Map::from_map_data(MapData::from_pin(pins.map_path(map_names::ALLOWLIST)).unwrap())
                .unwrap();
        let mut allow: LpmTrie<_, [u8; 16], AllowEntry> = LpmTrie::try_from(map).unwrap();
        allow
            .insert(&sip_xdp::maps::cidr_key(office), AllowEntry::default(), 0)
            .unwrap();
    }

    let mut load =
        loader::load_pinned(&LoadOptions::default(), &pins).expect("loads over old pins");
    let mut replaced = load.migration.replaced.clone();
    replaced.sort_unstable();
    assert_eq!(
        replaced,
        [
            map_names::CONFIG,
            map_names::COUNTERS,
            map_names::LIST_PRESENCE,
            map_names::SOURCES
        ]
    );
    assert_eq!(load.migration.bans.len(), 1);
    let (key, record) = load.migration.bans[0];
    assert_eq!(key.addr, attacker);
    assert_eq!(
        (
            record.banned_until_ns,
            record.ban_duration_ns,
            record.strikes,
            record.ban_flags
        ),
        (until, 1800 * SECOND_NS, 3, 2)
    );
    assert!(load.created_bans);
    // An old pin set has no prefix tables: the load creates and pins them, empty.
    assert!(load.created_prefix_bans);
    for name in [map_names::PREFIXES, map_names::PREFIX_BANS] {
        assert!(pins.map_path(name).exists(), "{name} not pinned");
    }
    // The allowlist is the old map itself, entry and all.
    let mut maps = sip_xdp::maps::SipMaps::take_from(&mut load.ebpf).unwrap();
    assert_eq!(maps.allowlist().unwrap(), vec![office]);
    for (key, record) in &load.migration.bans {
        maps.set_ban(key.addr, record).unwrap();
    }
    assert_eq!(maps.bans().unwrap().len(), 1);
    assert_eq!(maps.sources_capacity(), sip_xdp_common::DEFAULT_MAX_SOURCES);
    assert!(maps.prefix_bans().unwrap().is_empty());
    assert_eq!(maps.prefixes_capacity(), sip_xdp_common::MAX_PREFIXES);
    assert_eq!(maps.prefix_bans_capacity(), sip_xdp_common::MAX_PREFIX_BANS);
    // A second load adopts the new pins as they are.
    drop(maps);
    drop(load);
    let again = loader::load_pinned(&LoadOptions::default(), &pins).unwrap();
    assert!(again.migration.replaced.is_empty() && again.adopted_maps && !again.created_bans);
    assert!(!again.created_prefix_bans);
}
