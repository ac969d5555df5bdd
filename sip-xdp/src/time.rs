//! The kernel side stamps state with `bpf_ktime_get_coarse_ns`, i.e. CLOCK_MONOTONIC_COARSE.
//! User space compares against the same clock.
use std::time::Duration;

/// Now, in the clock the XDP program uses.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer; CLOCK_MONOTONIC_COARSE exists on every Linux we support.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Monotonic deadline `after` from now.
pub fn deadline_ns(after: Duration) -> u64 {
    monotonic_now_ns().saturating_add(after.as_nanos().min(u64::MAX as u128) as u64)
}
