//! Benchmark reference: the least a per-source rate limiter can do. Reads the IPv4 source of an
//! untagged frame, maps it into a 16-byte key (as sip-xdp keys sources), looks the key up in an
//! LRU hash and writes the counter back with one update: one lookup + one update per packet.
//! `cargo xtask bench` divides sip-xdp's per-packet cost by this program's.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, macros::map, macros::xdp, maps::LruHashMap, programs::XdpContext,
};

/// Same capacity as sip-xdp's default `SOURCES`. The key is the 16-byte IPv4-mapped address,
/// built as words so the compiler needs no byte-wise memset for it.
#[map(name = "REF_SOURCES")]
static REF_SOURCES: LruHashMap<[u32; 4], u64> = LruHashMap::with_max_entries(131_072, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
/// Ethernet header + the IPv4 header up to and including the source address.
const NEEDED: usize = ETH_HLEN + 16;

#[xdp]
pub fn ref_lru(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + NEEDED > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: the NEEDED bytes from `start` are inside the packet, checked just above.
    let (ether_type, src) = unsafe {
        let p = start as *const u8;
        (
            core::ptr::read_unaligned(p.add(12) as *const [u8; 2]),
            core::ptr::read_unaligned(p.add(ETH_HLEN + 12) as *const [u8; 4]),
        )
    };
    if ether_type != ETH_P_IPV4 {
        return xdp_action::XDP_PASS;
    }
    // ::ffff:a.b.c.d, the same bytes as sip-xdp's SourceKey.
    let key = [
        0,
        0,
        u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        u32::from_ne_bytes(src),
    ];
    let count = match REF_SOURCES.get_ptr(&key) {
        // SAFETY: pointer from a successful lookup; a lost increment does not matter here.
        Some(value) => unsafe { *value + 1 },
        None => 1,
    };
    let _ = REF_SOURCES.insert(&key, &count, 0);
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
