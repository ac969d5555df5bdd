//! `[answers]`: the egress program that reads the server's answers, and what it does with them
//! (verified sources and their limits, failed-authentication bans, the reflection guard, the
//! admission budget).
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use sip_xdp_common::Config;

use super::{
    limits::{Limit, LimitsSection, de_limit, de_limits, limit_of, limits_of},
    parse::{CrossFieldProblem, int_in_range},
    units::{de_positive_duration, ser_duration},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [answers] table")]
pub struct AnswersSection {
    /// Attach the TC egress program beside the XDP one. Off, nobody is verified, nothing is
    /// counted from answers, and the admission budget does not apply.
    pub enabled: bool,
    /// How long a success (2xx to REGISTER or INVITE after a challenge) keeps its client
    /// verified; each success renews it.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub verified_for: Duration,
    /// Window failed authentication is counted in.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub window: Duration,
    /// Failures in the window that ban an unverified address.
    #[serde(deserialize_with = "de_count")]
    pub max_failures: u32,
    /// Failures in the window that ban a verified address, all its phones together.
    #[serde(deserialize_with = "de_count")]
    pub max_failures_verified: u32,
    /// Failures in the window that ban one phone (address and port) of a verified address.
    #[serde(deserialize_with = "de_count")]
    pub max_flow_failures: u32,
    /// Open challenges an unverified address may hold before each further one is a failure.
    #[serde(deserialize_with = "de_count")]
    pub max_unanswered: u32,
    /// First ban of one phone of a verified address; doubled for each repeat up to `bans.max`.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub flow_ban: Duration,
    /// REGISTER and INVITE from every unverified source together.
    #[serde(deserialize_with = "de_admission")]
    pub admission: Limit,
    /// Challenges and errors to one unverified destination.
    #[serde(deserialize_with = "de_reflection_per_destination")]
    pub reflection_per_destination: Limit,
    /// Challenges and errors to all unverified destinations together.
    #[serde(deserialize_with = "de_reflection_total")]
    pub reflection_total: Limit,
    /// The buckets of verified sources, one per class as in `[limits]`.
    #[serde(deserialize_with = "de_verified_limits")]
    pub verified_limits: LimitsSection,
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(d, 1, 1_000_000, " (1 bans on the first failure)")
}

const DEFAULT_ADMISSION: Limit = limit_of(&Config::DEFAULT.admission);
const DEFAULT_REFLECTION_PER_DESTINATION: Limit =
    limit_of(&Config::DEFAULT.reflection_per_destination);
const DEFAULT_REFLECTION_TOTAL: Limit = limit_of(&Config::DEFAULT.reflection_total);

fn default_verified_limits() -> LimitsSection {
    limits_of(&Config::DEFAULT.verified_limits)
}

fn de_admission<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_ADMISSION)
}

fn de_reflection_per_destination<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_REFLECTION_PER_DESTINATION)
}

fn de_reflection_total<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_REFLECTION_TOTAL)
}

fn de_verified_limits<'de, D: Deserializer<'de>>(d: D) -> Result<LimitsSection, D::Error> {
    de_limits(d, &default_verified_limits())
}

impl Default for AnswersSection {
    fn default() -> Self {
        let d = Config::DEFAULT;
        Self {
            enabled: true,
            verified_for: Duration::from_nanos(d.verified_for_ns),
            window: Duration::from_nanos(d.auth_window_ns),
            max_failures: d.auth_max_failures,
            max_failures_verified: d.auth_max_failures_verified,
            max_flow_failures: d.auth_max_flow_failures,
            max_unanswered: d.auth_max_unanswered,
            flow_ban: Duration::from_nanos(d.flow_ban_ns),
            admission: DEFAULT_ADMISSION,
            reflection_per_destination: DEFAULT_REFLECTION_PER_DESTINATION,
            reflection_total: DEFAULT_REFLECTION_TOTAL,
            verified_limits: default_verified_limits(),
        }
    }
}

impl AnswersSection {
    pub(super) fn check(&self) -> Result<(), CrossFieldProblem> {
        if self.max_failures_verified < self.max_failures {
            return Err(CrossFieldProblem {
                keys: vec![
                    &["answers", "max_failures_verified"],
                    &["answers", "max_failures"],
                ],
                message: format!(
                    "answers.max_failures_verified ({}) must be at least answers.max_failures \
                     ({}): a verified address would be banned sooner than an unknown one",
                    self.max_failures_verified, self.max_failures
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sip_xdp_common::{Config, LimitClass, RateLimit, flags};

    use crate::config::{
        Settings,
        kernel::describe_kernel,
        tests::{at, parse, reject},
        units::{HOUR_NS, MINUTE_NS},
    };

    const EVERY_KEY: &str = r#"
[answers]
enabled = true
verified_for = "30m"
window = "5m"
max_failures = 3
max_failures_verified = 30
max_flow_failures = 4
max_unanswered = 7
flow_ban = "2m"
[answers.admission]
rate = "100/s"
burst = 150
[answers.reflection_per_destination]
rate = "2/s"
burst = 4
[answers.reflection_total]
rate = "60/min"
burst = 90
[answers.verified_limits.register]
rate = "20/s"
burst = 300
[answers.verified_limits.invite]
rate = "unlimited"
[answers.verified_limits.options]
burst = 11
[answers.verified_limits.other]
rate = "1000/h"
burst = 2
[answers.verified_limits.in_dialog]
rate = "400/s"
burst = 800
[answers.verified_limits.response]
rate = "300/s"
burst = 600
[answers.verified_limits.keepalive]
rate = "100/s"
burst = 500
[answers.verified_limits.malformed]
rate = "5/s"
burst = 6
"#;

    #[test]
    fn every_answers_key_reaches_the_kernel_config() {
        let s = parse(EVERY_KEY).unwrap();
        let a = &s.answers;
        assert!(a.enabled);
        assert_eq!(a.verified_for, Duration::from_secs(1800));
        assert_eq!(a.window, Duration::from_secs(300));
        assert_eq!(
            (
                a.max_failures,
                a.max_failures_verified,
                a.max_flow_failures,
                a.max_unanswered
            ),
            (3, 30, 4, 7)
        );
        assert_eq!(a.flow_ban, Duration::from_secs(120));

        let k = s.kernel_config();
        assert!(k.has_flag(flags::ANSWERS));
        assert_eq!(k.verified_for_ns, 30 * MINUTE_NS);
        assert_eq!(k.auth_window_ns, 5 * MINUTE_NS);
        assert_eq!(k.auth_max_failures, 3);
        assert_eq!(k.auth_max_failures_verified, 30);
        assert_eq!(k.auth_max_flow_failures, 4);
        assert_eq!(k.auth_max_unanswered, 7);
        assert_eq!(k.flow_ban_ns, 2 * MINUTE_NS);
        assert_eq!(k.admission, RateLimit::per_second(100, 150));
        assert_eq!(k.reflection_per_destination, RateLimit::per_second(2, 4));
        assert_eq!(
            k.reflection_total,
            RateLimit::per_interval(60, MINUTE_NS, 90)
        );
        let v = &k.verified_limits;
        assert_eq!(
            v[LimitClass::Register as usize],
            RateLimit::per_second(20, 300)
        );
        assert_eq!(v[LimitClass::Invite as usize], RateLimit::UNLIMITED);
        // A partial table keeps its class's verified default (50/s) for the missing key.
        assert_eq!(
            v[LimitClass::Options as usize],
            RateLimit::per_second(50, 11)
        );
        assert_eq!(
            v[LimitClass::Other as usize],
            RateLimit::per_interval(1000, HOUR_NS, 2)
        );
        assert_eq!(
            v[LimitClass::InDialog as usize],
            RateLimit::per_second(400, 800)
        );
        assert_eq!(
            v[LimitClass::Response as usize],
            RateLimit::per_second(300, 600)
        );
        assert_eq!(
            v[LimitClass::KeepAlive as usize],
            RateLimit::per_second(100, 500)
        );
        assert_eq!(
            v[LimitClass::Malformed as usize],
            RateLimit::per_second(5, 6)
        );
        // The ingress limits of unverified sources are not touched by the section.
        assert_eq!(k.limits, Config::DEFAULT.limits);

        // What `sip-xdp status` prints of the config the kernel holds.
        let view = describe_kernel(&k);
        assert!(view.answers_enabled);
        assert_eq!(view.verified_for, "30m");
        assert_eq!(view.auth_window, "5m");
        assert_eq!(view.flow_ban, "2m");
        let text = view.to_string();
        for line in [
            "answers                 on (verified for 30m after a success)",
            "verified register       20/s, burst 300",
            "verified invite         unlimited",
            "admission budget        100/s, burst 150",
            "reflection cap          2/s, burst 4 per destination, 1/s, burst 90 in total",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains("3 in 5m ban an address (30 if verified, 4 ban one"),
            "{text}"
        );

        // `sip-xdp config show` prints the section, and what it prints reads back the same.
        let shown = s.to_toml();
        for needle in [
            "[answers]",
            "verified_for = \"30m\"",
            "max_unanswered = 7",
            "[answers.reflection_total]",
            "rate = \"60/min\"",
            "[answers.verified_limits.invite]",
        ] {
            assert!(shown.contains(needle), "no {needle:?} in\n{shown}");
        }
        assert_eq!(parse(&shown).unwrap(), s, "{shown}");
    }

    #[test]
    fn answers_off_clears_the_flag_and_says_so() {
        let s = parse("[answers]\nenabled = false\n").unwrap();
        let k = s.kernel_config();
        assert!(!k.has_flag(flags::ANSWERS), "flags {:#x}", k.flags);
        assert_eq!(
            k.flags | flags::ANSWERS,
            parse("").unwrap().kernel_config().flags
        );
        let view = describe_kernel(&k);
        assert!(!view.answers_enabled);
        assert!(
            view.to_string()
                .ends_with("answers                 off (no egress program)"),
            "{view}"
        );
        assert!(
            s.to_toml().contains("[answers]\nenabled = false\n"),
            "{}",
            s.to_toml()
        );
        // Only the flag: monitor mode and the other flags are left as configured.
        let s = parse("[answers]\nenabled = false\n[datapath]\nmonitor = true\n").unwrap();
        let k = s.kernel_config();
        assert!(k.has_flag(flags::MONITOR) && !k.has_flag(flags::ANSWERS));
    }

    #[test]
    fn verified_threshold_below_the_unverified_one_is_refused_at_its_line() {
        let (location, message) =
            reject("[answers]\nmax_failures = 10\nmax_failures_verified = 9\n");
        assert_eq!(location, at(3, 25), "{message}");
        assert!(
            message.contains(
                "answers.max_failures_verified (9) must be at least answers.max_failures (10)"
            ),
            "{message}"
        );
        // Only the unverified threshold set: the error points at it (the default 50 is below).
        let (location, message) = reject("[answers]\n\nmax_failures = 60\n");
        assert_eq!(location, at(3, 16), "{message}");
        assert!(message.contains("(50) must be at least"), "{message}");
        // Equal is fine: a verified address is then banned no sooner than an unknown one.
        let s = parse("[answers]\nmax_failures = 9\nmax_failures_verified = 9\n").unwrap();
        assert_eq!(s.kernel_config().auth_max_failures_verified, 9);
    }

    #[test]
    fn bad_answers_values_are_refused_with_file_and_line() {
        #[rustfmt::skip]
        let cases: &[(&str, usize, usize, &str)] = &[
            ("[answers]\nenabled = \"yes\"\n", 2, 11, "answers.enabled: invalid type"),
            ("[answers]\nverified_for = \"0s\"\n", 2, 16, "answers.verified_for must be longer than zero"),
            ("[answers]\nwindow = \"soon\"\n", 2, 10, "answers.window must be a duration"),
            ("[answers]\nflow_ban = 600\n", 2, 12, "a duration string"),
            ("[answers]\nmax_failures = 0\n", 2, 16, "answers.max_failures must be between 1 and 1000000, got 0"),
            ("[answers]\nmax_flow_failures = 1000001\n", 2, 21, "got 1000001"),
            ("[answers]\nmax_unanswered = -1\n", 2, 18, "answers.max_unanswered must be between 1"),
            ("[answers.admission]\nrate = \"lots\"\n", 2, 8, "answers.admission.rate must be a rate"),
            ("[answers.reflection_total]\nburst = 0\n", 2, 9, "answers.reflection_total.burst must be between 1"),
            ("[answers.verified_limits.register]\nbrust = 3\n", 2, 1, "answers.verified_limits.register.brust"),
            ("[answers]\nmax_failure = 3\n", 2, 1, "`answers.max_failure`"),
        ];
        for &(text, line, column, needle) in cases {
            let (location, message) = reject(text);
            assert_eq!(location, at(line, column), "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }

        // From a file: the path, line and column lead the message.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sip-xdp.toml");
        std::fs::write(
            &path,
            "[answers]\nmax_failures = 8\nmax_failures_verified = 2\n",
        )
        .unwrap();
        let err = Settings::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}:3:25: answers.max_failures_verified (2)",
                path.display()
            )),
            "{err}"
        );
        std::fs::write(&path, "[answers]\nverified_for = \"0s\"\n").unwrap();
        let err = Settings::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:2:16: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn auth_ban_signals_are_off_unless_configured() {
        let s = Settings::default();
        assert!(!s.crowdsec.signals.auth_bans && !s.crowdsec.signals.rate_bans);
        let s = parse("[crowdsec.signals]\nauth_bans = true\n").unwrap();
        assert!(s.crowdsec.signals.auth_bans && !s.crowdsec.signals.rate_bans);
        assert!(s.to_toml().contains("auth_bans = true"), "{}", s.to_toml());
        assert_eq!(parse(&s.to_toml()).unwrap(), s);
        let (location, message) = reject("[crowdsec.signals]\n\nauth_bans = 1\n");
        assert_eq!(location, at(3, 13), "{message}");
        assert!(
            message.contains("crowdsec.signals.auth_bans: invalid type"),
            "{message}"
        );
    }
}
