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
