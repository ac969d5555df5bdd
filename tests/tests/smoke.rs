use sip_xdp_common::Config;
use sip_xdp_tests::{harness::*, packet::*};

#[test]
fn loads() {
    let mut dp = Datapath::load(&Config::DEFAULT).unwrap();
    let f = Frame::sip(
        "198.51.100.10".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
        &register("100", 1),
    )
    .build();
    assert_eq!(dp.run(&f).unwrap(), XDP_PASS);
}
