//! The programs' clock: CLOCK_MONOTONIC_COARSE, or in a replay (`sip-xdp replay`) the
//! capture's own time.
//!
//! Which one is decided when the object is loaded, not per packet: `REPLAY_CLOCK` is a constant
//! in `.rodata`, which the loader may set before the programs are verified. The kernel freezes
//! that map, so the verifier knows the value and removes the branch it does not take: a program
//! loaded for production never looks at the replay slot, and one loaded for a replay never reads
//! the system clock.
use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, macros::map, maps::Array};

/// 0 in production; `sip-xdp replay` loads its private copy of the programs with 1
/// (`sip_xdp_common::REPLAY_CLOCK_GLOBAL`).
#[unsafe(no_mangle)]
static REPLAY_CLOCK: u32 = 0;

/// The replay's clock: the capture timestamp of the packet about to run, written by user space
/// before each `BPF_PROG_TEST_RUN`.
#[map(name = "REPLAY_NOW")]
static REPLAY_NOW: Array<u64> = Array::with_max_entries(1, 0);

/// Now, in monotonic nanoseconds (or the capture's nanoseconds in a replay).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a read of a constant the loader may have set; volatile, so that the compiler
    // leaves the decision to the verifier, which knows the frozen value.
    if unsafe { core::ptr::read_volatile(&REPLAY_CLOCK) } != 0 {
        return match REPLAY_NOW.get(0) {
            Some(now_ns) => *now_ns,
            None => 0,
        };
    }
    // Coarse time (jiffies resolution) costs a memory read, not a clock read; bans and
    // buckets work in milliseconds and up, so the resolution is plenty.
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}
