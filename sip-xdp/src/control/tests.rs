use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use super::{origins::apply_origin_update, quotas::check_quota, *};
use crate::{state::StateFile, time::now_wall_secs};

fn host(i: u32) -> IpNet {
    IpNet::from(IpAddr::V4(Ipv4Addr::from(0xC633_0000 + i)))
}

#[test]
fn origin_update_replaces_only_its_own_origin() {
    let mut state = StateFile::default();
    let now = 1_000;
    state.add_ban(host(1), BanOrigin::Manual, 5_000, None);
    state.add_ban(host(1), BanOrigin::Crowdsec, 2_000, None);
    state.add_ban(host(2), BanOrigin::Crowdsec, 2_000, None);

    // A full pull that no longer has host 2 and renews host 1 and brings host 3.
    let full = OriginUpdate {
        replace_all: true,
        upsert: vec![(host(1), 3_000, None), (host(3), 4_000, None)],
        remove: Vec::new(),
    };
    let (counts, touched) =
        apply_origin_update(&mut state, BanOrigin::Crowdsec, &full, now, CROWDSEC_QUOTA);
    assert_eq!(counts, (2, 1, 0));
    assert_eq!(touched, vec![host(1), host(2), host(3)]);
    let crowdsec: Vec<(IpNet, u64)> = state
        .bans
        .iter()
        .filter(|b| b.origin == BanOrigin::Crowdsec)
        .map(|b| (b.net, b.expires_at))
        .collect();
    assert_eq!(crowdsec, vec![(host(1), 3_000), (host(3), 4_000)]);
    assert!(
        state
            .bans
            .iter()
            .any(|b| b.origin == BanOrigin::Manual && b.net == host(1)),
        "the manual ban of the same net stays"
    );

    // A delta: the same expiry again is no change; a removal; an already expired upsert.
    let delta = OriginUpdate {
        replace_all: false,
        upsert: vec![(host(3), 4_000, None), (host(4), now, None)],
        remove: vec![host(1)],
    };
    let (counts, touched) =
        apply_origin_update(&mut state, BanOrigin::Crowdsec, &delta, now, CROWDSEC_QUOTA);
    assert_eq!(counts, (0, 1, 0));
    assert_eq!(touched, vec![host(1)]);
    assert_eq!(state.bans_added[&BanOrigin::Crowdsec], 4);
    let entries: HashMap<IpNet, u64> = state.denylist_entries(now).into_iter().collect();
    assert!(entries.contains_key(&host(1)), "kept by its manual ban");
    assert!(!entries.contains_key(&host(2)));
    assert!(entries.contains_key(&host(3)));
    assert!(!entries.contains_key(&host(4)));
}

#[test]
fn a_large_feed_applies_in_one_pass() {
    let mut state = StateFile::default();
    let feed = OriginUpdate {
        replace_all: true,
        upsert: (0..50_000).map(|i| (host(i), 10_000, None)).collect(),
        remove: Vec::new(),
    };
    let (counts, touched) =
        apply_origin_update(&mut state, BanOrigin::Crowdsec, &feed, 1, usize::MAX);
    assert_eq!(counts, (50_000, 0, 0));
    assert_eq!(touched.len(), 50_000);
    assert_eq!(state.denylist_entries(1).len(), 50_000);
    // Reloading such a file keeps every ban (normalise de-duplicates by set).
    let text = serde_json::to_string(&state).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(state::STATE_FILE), text).unwrap();
    assert_eq!(StateFile::load(dir.path()).unwrap().bans.len(), 50_000);
}

#[test]
fn a_feed_stops_at_its_quota_and_renewals_still_apply() {
    let mut state = StateFile::default();
    let now = 1_000;
    state.add_ban(host(900), BanOrigin::Fail2ban, 5_000, None);
    let feed = OriginUpdate {
        replace_all: true,
        upsert: (0..10).map(|i| (host(i), 3_000, None)).collect(),
        remove: Vec::new(),
    };
    let (counts, touched) = apply_origin_update(&mut state, BanOrigin::Crowdsec, &feed, now, 4);
    assert_eq!(counts, (4, 0, 6), "4 applied, 6 left out over the quota");
    assert_eq!(touched.len(), 4);
    let crowdsec = |state: &StateFile| {
        state
            .bans
            .iter()
            .filter(|b| b.origin == BanOrigin::Crowdsec)
            .count()
    };
    assert_eq!(crowdsec(&state), 4);
    // Renewing what it holds still works at the cap; a new net does not.
    let delta = OriginUpdate {
        replace_all: false,
        upsert: vec![(host(0), 4_000, None), (host(20), 4_000, None)],
        remove: Vec::new(),
    };
    let (counts, _) = apply_origin_update(&mut state, BanOrigin::Crowdsec, &delta, now, 4);
    assert_eq!(counts, (1, 0, 1));
    assert_eq!(state.bans_of(host(0), now)[0].expires_at, 4_000);
    assert!(state.bans_of(host(20), now).is_empty());
    // A lifted net makes room again.
    let delta = OriginUpdate {
        replace_all: false,
        upsert: vec![(host(20), 4_000, None)],
        remove: vec![host(1)],
    };
    let (counts, _) = apply_origin_update(&mut state, BanOrigin::Crowdsec, &delta, now, 4);
    assert_eq!(counts, (1, 1, 0));
    assert_eq!(crowdsec(&state), 4);
    assert!(
        state
            .bans
            .iter()
            .any(|b| b.origin == BanOrigin::Fail2ban && b.net == host(900)),
        "other origins untouched"
    );
}

#[test]
fn each_origin_has_its_own_quota_and_manual_bans_keep_room() {
    let quotas = Quotas {
        crowdsec: 3,
        fail2ban: 2,
    };
    let now = 1_000;
    let mut state = StateFile::default();
    for i in 0..3 {
        state.add_ban(host(i), BanOrigin::Crowdsec, 5_000, None);
    }
    // CrowdSec at its cap does not take fail2ban's room.
    check_quota(&state, BanOrigin::Fail2ban, &[host(10)], now, &quotas).unwrap();
    state.add_ban(host(10), BanOrigin::Fail2ban, 5_000, None);
    check_quota(&state, BanOrigin::Fail2ban, &[host(11)], now, &quotas).unwrap();
    state.add_ban(host(11), BanOrigin::Fail2ban, 5_000, None);
    let err = check_quota(&state, BanOrigin::Fail2ban, &[host(12)], now, &quotas)
        .unwrap_err()
        .to_string();
    for needle in [
        "cannot ban 198.51.0.12/32 for fail2ban",
        "fail2ban already bans 2 nets and its quota is 2",
        "sip-xdp ban del --origin fail2ban",
    ] {
        assert!(err.contains(needle), "{err}");
    }
    // A renewal at the cap is fine; so is a net another origin already holds.
    check_quota(&state, BanOrigin::Fail2ban, &[host(11)], now, &quotas).unwrap();
    let err = check_quota(&state, BanOrigin::Crowdsec, &[host(10)], now, &quotas)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("crowdsec already bans 3 nets and its quota is 3"),
        "{err}"
    );
    // Manual bans have no quota of their own.
    check_quota(
        &state,
        BanOrigin::Manual,
        &[host(12), host(13)],
        now,
        &quotas,
    )
    .unwrap();
    // Expired bans free their slot.
    check_quota(&state, BanOrigin::Fail2ban, &[host(12)], 5_000, &quotas).unwrap();
    // Two new nets when one slot is left: refused as a whole, before anything changes.
    state.bans.retain(|b| b.net != host(11));
    assert!(
        check_quota(
            &state,
            BanOrigin::Fail2ban,
            &[host(12), host(13)],
            now,
            &quotas
        )
        .is_err()
    );
    // The defaults leave a quarter of the table to manual bans and the denylist.
    let d = Quotas::default();
    assert_eq!(d.crowdsec + d.fail2ban, DENY_TABLE / 4 * 3);
}

#[test]
fn control_quotas_are_capped_at_the_defaults() {
    let control = Control::new(PinDir::new("/nonexistent"), PathBuf::from("/nonexistent"))
        .with_quotas(Quotas {
            crowdsec: usize::MAX,
            fail2ban: 7,
        });
    assert_eq!(
        control.quotas,
        Quotas {
            crowdsec: CROWDSEC_QUOTA,
            fail2ban: 7
        }
    );
}

#[test]
fn a_full_feed_leaves_fail2ban_and_manual_bans_working() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::new(
        PinDir::new(dir.path().join("no-pins")),
        dir.path().to_owned(),
    )
    .with_quotas(Quotas {
        crowdsec: 3,
        fail2ban: 2,
    });
    let until = now_wall_secs() + 3_600;
    let feed = OriginUpdate {
        replace_all: true,
        upsert: (0..5).map(|i| (host(i), until, None)).collect(),
        remove: Vec::new(),
    };
    assert_eq!(
        control.update_origin(BanOrigin::Crowdsec, &feed).unwrap(),
        (3, 0, 2),
        "the feed stops at its quota"
    );
    let hour = Duration::from_secs(3_600);
    for i in [10, 11] {
        control
            .ban_add(&[host(i)], BanOrigin::Fail2ban, hour, None)
            .expect("fail2ban has its own room while the feed is full");
    }
    let err = control
        .ban_add(&[host(12)], BanOrigin::Fail2ban, hour, None)
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("fail2ban already bans 2 nets and its quota is 2"),
        "{err}"
    );
    let state = StateFile::load(dir.path()).unwrap();
    assert!(
        state.bans_of(host(12), now_wall_secs()).is_empty(),
        "nothing saved"
    );
    control
        .ban_add(&[host(12)], BanOrigin::Manual, hour, None)
        .expect("manual bans still have room");
    let state = StateFile::load(dir.path()).unwrap();
    let count = |origin| state.bans.iter().filter(|b| b.origin == origin).count();
    assert_eq!(
        (
            count(BanOrigin::Crowdsec),
            count(BanOrigin::Fail2ban),
            count(BanOrigin::Manual)
        ),
        (3, 2, 1)
    );
}
