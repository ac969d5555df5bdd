//! The clocks and how durations are written. The kernel side stamps state with
//! `bpf_ktime_get_coarse_ns`, i.e. CLOCK_MONOTONIC_COARSE; user space compares against the same
//! clock, and converts to the wall clock (the state file, logs) through [`now_wall_ns`].
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use sip_xdp_common::NS_PER_SEC;

/// Now, in the clock the XDP program uses.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer; CLOCK_MONOTONIC_COARSE exists on every Linux we support.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE) failed");
    ts.tv_sec as u64 * NS_PER_SEC + ts.tv_nsec as u64
}

/// Monotonic deadline `after` from now.
pub fn deadline_ns(after: Duration) -> u64 {
    monotonic_now_ns().saturating_add(after.as_nanos().min(u64::MAX as u128) as u64)
}

/// Wall-clock now, in unix nanoseconds (0 if the clock is set before 1970).
pub fn now_wall_ns() -> u64 {
    now_wall().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Wall-clock now, since the unix epoch (zero if the clock is set before 1970).
pub fn now_wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Wall-clock now, in unix seconds (0 if the clock is set before 1970).
pub fn now_wall_secs() -> u64 {
    now_wall_ns() / NS_PER_SEC
}

/// Formats a duration the way an operator writes it, exactly: "1h30m", "1m", "500ms", "0s".
/// Hours are the largest unit, so the text never depends on how long a day or year is.
pub fn format_duration(duration: Duration) -> String {
    let total_ns = duration.as_nanos();
    if total_ns == 0 {
        return "0s".to_owned();
    }
    let second = u128::from(NS_PER_SEC);
    let units: [(&str, u128); 6] = [
        ("h", 3600 * second),
        ("m", 60 * second),
        ("s", second),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut rest = total_ns;
    let mut out = String::new();
    for (unit, unit_ns) in units {
        let count = rest / unit_ns;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            rest %= unit_ns;
        }
    }
    out
}

/// A duration for people reading a message or a table: "1h 30m", "2days 3h".
pub fn human_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// [`human_duration`] of nanoseconds: whole seconds for anything a second or longer (ban
/// durations are configured in seconds and "1m 0s 3ms" would only be clock noise), whole
/// milliseconds below.
pub fn human_duration_ns(duration_ns: u64) -> String {
    let duration = if duration_ns >= NS_PER_SEC {
        Duration::from_secs(duration_ns / NS_PER_SEC)
    } else {
        Duration::from_millis(duration_ns / 1_000_000)
    };
    human_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_exactly_and_for_people() {
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_secs(5_400)), "1h 30m");
        assert_eq!(human_duration_ns(90 * NS_PER_SEC + 5), "1m 30s");
        assert_eq!(human_duration_ns(250_400_000), "250ms");
    }

    #[test]
    fn the_wall_clock_in_seconds_follows_nanoseconds() {
        let ns = now_wall_ns();
        let secs = now_wall_secs();
        assert!(secs >= ns / NS_PER_SEC && secs - ns / NS_PER_SEC <= 1);
    }
}
