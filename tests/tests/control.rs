//! The daemon's housekeeping on a real loaded program's maps.
use sip_xdp::{control::gc_sources, maps::addr_key, time::monotonic_now_ns};
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
