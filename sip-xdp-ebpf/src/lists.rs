//! The allowlist, denylist and protected list (LPM tries), as the program reads them.
use aya_ebpf::maps::lpm_trie::Key;
use sip_xdp_common::{allow_flags, list_presence};

use crate::maps::{ALLOWLIST, DENYLIST, PROTECTED, list_may_have_entries};

#[inline(always)]
fn list_key(src: &[u8; 16]) -> Key<[u8; 16]> {
    Key::new(128, *src)
}

/// An entry flagged as a hole (see `sip_xdp_common::MAPPED_HOLE_PREFIX`) lists nothing.
#[inline(always)]
pub fn is_allowlisted(src: &[u8; 16]) -> bool {
    list_may_have_entries(list_presence::ALLOWLIST)
        && ALLOWLIST
            .get(list_key(src))
            .is_some_and(|entry| entry.flags & allow_flags::HOLE == 0)
}

#[inline(always)]
pub fn is_protected(src: &[u8; 16]) -> bool {
    list_may_have_entries(list_presence::PROTECTED)
        && PROTECTED
            .get(list_key(src))
            .is_some_and(|entry| entry.flags & allow_flags::HOLE == 0)
}

/// A hole's expiry lies in the past, so it never denies.
#[inline(always)]
pub fn is_denylisted(src: &[u8; 16], now_ns: u64) -> bool {
    if !list_may_have_entries(list_presence::DENYLIST) {
        return false;
    }
    match DENYLIST.get(list_key(src)) {
        Some(entry) => entry.expires_at_ns == 0 || now_ns < entry.expires_at_ns,
        None => false,
    }
}
