//! Benchmark reference: the cheapest XDP program there is. `cargo xtask bench` measures it on
//! the same frame as sip-xdp, so the harness's own per-packet cost (the BPF_PROG_TEST_RUN loop,
//! context setup) shows up as the floor that sip-xdp's figures are divided by.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn ref_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
