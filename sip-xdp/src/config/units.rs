//! Rates ("5/s", "300/min", "unlimited") and durations ("10m", "1h30m", "500ms") as the operator
//! writes them: parsed with errors that read after the key's name, formatted back exactly, and
//! (de)serialised for the config file.
use std::{fmt, str::FromStr, time::Duration};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, Visitor},
};
use sip_xdp_common::{BAN_DURATION_CEILING_NS, RateLimit};

pub(super) const SECOND_NS: u64 = sip_xdp_common::NS_PER_SEC;
pub(super) const MINUTE_NS: u64 = 60 * SECOND_NS;
pub(super) const HOUR_NS: u64 = 60 * MINUTE_NS;

// ---- rates ----

/// The period of a [`Rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatePeriod {
    Second,
    Minute,
    Hour,
}

impl RatePeriod {
    pub const fn period_ns(self) -> u64 {
        match self {
            Self::Second => SECOND_NS,
            Self::Minute => MINUTE_NS,
            Self::Hour => HOUR_NS,
        }
    }

    /// The unit as written after the slash.
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "min",
            Self::Hour => "h",
        }
    }
}

/// A sustained rate as the operator writes it: "5/s", "300/min", "1000/h", "unlimited".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Unlimited,
    /// `count` requests per `per`; `count` is at least 1 ("0/s" parses as `Unlimited`).
    Limited {
        count: u64,
        per: RatePeriod,
    },
}

const RATE_EXAMPLES: &str = "\"5/s\", \"300/min\", \"1000/h\" or \"unlimited\"";

impl Rate {
    /// The kernel token bucket for this rate with `burst`.
    pub const fn rate_limit(self, burst: u32) -> RateLimit {
        match self {
            Self::Unlimited => RateLimit::UNLIMITED,
            Self::Limited { count, per } => {
                RateLimit::per_interval(count, per.period_ns(), burst as u64)
            }
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    /// Errors read after the name of the thing parsed: "must be a rate such as ...".
    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("unlimited") {
            return Ok(Self::Unlimited);
        }
        let bad = |why: &str| format!("must be a rate such as {RATE_EXAMPLES}, got {s:?}{why}");
        let Some((count, unit)) = text.split_once('/') else {
            return Err(bad(" (no \"/\" between count and unit)"));
        };
        let per = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => RatePeriod::Second,
            "m" | "min" | "minute" => RatePeriod::Minute,
            "h" | "hour" => RatePeriod::Hour,
            _ => return Err(bad(" (the unit after \"/\" must be s, min or h)")),
        };
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| bad(" (the count before \"/\" must be a whole number)"))?;
        if count == 0 {
            return Ok(Self::Unlimited);
        }
        if count > per.period_ns() {
            return Err(format!(
                "must be at most {}/{} (one request per nanosecond), got {s:?}",
                per.period_ns(),
                per.unit()
            ));
        }
        Ok(Self::Limited { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("unlimited"),
            Self::Limited { count, per } => write!(f, "{count}/{}", per.unit()),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a rate string such as {RATE_EXAMPLES}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(RateVisitor)
    }
}

/// The kernel bucket in operator units: the shortest "N/unit" that maps to exactly this
/// interval, or a decimal per-second rate when none does.
pub(super) fn describe_rate(limit: &RateLimit) -> String {
    if limit.is_unlimited() {
        return "unlimited".to_owned();
    }
    let interval_ns = limit.interval_ns;
    for per in [RatePeriod::Second, RatePeriod::Minute, RatePeriod::Hour] {
        let period_ns = per.period_ns();
        let guess = period_ns / interval_ns;
        for count in [guess, guess + 1] {
            if count > 0 && RateLimit::per_interval(count, period_ns, 1).interval_ns == interval_ns
            {
                return Rate::Limited { count, per }.to_string();
            }
        }
    }
    format!("{:.3}/s", SECOND_NS as f64 / interval_ns as f64)
}

// ---- durations ----

const DURATION_EXAMPLES: &str = "\"60s\", \"10m\", \"1h30m\" or \"500ms\"";

/// Parses an operator duration ("10m", "1h30m", "500ms") that must be longer than zero and at
/// most about 10 years (the program's ban ceiling). Errors read after the name of the thing
/// parsed: "must be longer than zero, ...".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_in_range(s, false)
}

fn parse_duration_in_range(s: &str, allow_zero: bool) -> Result<Duration, String> {
    let duration = humantime::parse_duration(s.trim()).map_err(|err| {
        format!("must be a duration such as {DURATION_EXAMPLES}, got {s:?} ({err})")
    })?;
    if !allow_zero && duration.is_zero() {
        return Err(format!("must be longer than zero, got {s:?}"));
    }
    if duration.as_nanos() > u128::from(BAN_DURATION_CEILING_NS) {
        return Err(format!(
            "must be at most {} (about 10 years), got {s:?}",
            format_duration(Duration::from_nanos(BAN_DURATION_CEILING_NS))
        ));
    }
    Ok(duration)
}

/// Durations as the config writes them ("1h30m", "500ms"): one home, in `time`.
pub use crate::time::format_duration;

pub(super) fn ser_duration<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_duration(*duration))
}

struct DurationVisitor {
    allow_zero: bool,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration string such as {DURATION_EXAMPLES}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration_in_range(v, self.allow_zero).map_err(E::custom)
    }
}

pub(super) fn de_positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor { allow_zero: false })
}

pub(super) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor { allow_zero: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_map_to_kernel_buckets() {
        let rate = |s: &str| s.parse::<Rate>().unwrap();
        assert_eq!(rate("unlimited").rate_limit(40), RateLimit::UNLIMITED);
        assert_eq!(rate("0/s").rate_limit(40), RateLimit::UNLIMITED);
        assert_eq!(rate("300/min").rate_limit(1).interval_ns, 200_000_000);
        assert_eq!(rate("300/m"), rate("300/min"));
        assert_eq!(rate(" 10 / h ").rate_limit(1).interval_ns, 360 * SECOND_NS);
        assert_eq!(rate("5/s").rate_limit(40), RateLimit::per_second(5, 40));
        for bad in ["5", "5/x", "five/s", "-5/s", "5.5/s", "", "2000000000/s"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.starts_with("must be"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn durations_parse_with_limits() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert!(parse_duration("11y").unwrap_err().contains("at most"));
        assert!(
            parse_duration("10")
                .unwrap_err()
                .starts_with("must be a duration")
        );
        assert!(parse_duration("").is_err());
        for d in [
            Duration::from_secs(60),
            Duration::from_secs(5400),
            Duration::from_nanos(3_600_000_000_123),
            Duration::from_millis(1500),
            Duration::from_nanos(BAN_DURATION_CEILING_NS),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
