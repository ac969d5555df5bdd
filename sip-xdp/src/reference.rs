//! Reference XDP programs for `cargo xtask bench`: `ref_pass` (returns XDP_PASS) and `ref_lru`
//! (one LRU-hash lookup + one update per packet, keyed by the IPv4 source). Built from
//! `sip-xdp-ebpf/src/bin/` alongside the real program; sip-xdp's figures are reported as ratios
//! to these two, measured in the same run on the same frame.

/// Object of the `ref_pass` program (program name `ref_pass`). Empty when the eBPF toolchain was
/// missing at build time.
#[cfg(not(sip_xdp_no_ebpf))]
pub static REF_PASS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ref_pass"));

/// Object of the `ref_lru` program (program name `ref_lru`, map `REF_SOURCES`). Empty when the
/// eBPF toolchain was missing at build time.
#[cfg(not(sip_xdp_no_ebpf))]
pub static REF_LRU_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ref_lru"));

#[cfg(sip_xdp_no_ebpf)]
pub static REF_PASS_OBJECT: &[u8] = &[];

#[cfg(sip_xdp_no_ebpf)]
pub static REF_LRU_OBJECT: &[u8] = &[];

/// Program names inside the reference objects.
pub const REF_PASS_PROGRAM: &str = "ref_pass";
pub const REF_LRU_PROGRAM: &str = "ref_lru";
