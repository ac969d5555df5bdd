//! `[answers]`: the egress program that reads the server's answers, and what it does with them
//! (verified sources and their limits, failed-authentication bans, the reflection guard, the
//! admission budget).
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use sip_xdp_common::Config;

use super::{
    limits::{Limit, LimitsSection, de_limit, de_limits},
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

const fn limit_of(limit: &sip_xdp_common::RateLimit) -> Limit {
    Limit::per_second(
        sip_xdp_common::NS_PER_SEC / limit.interval_ns,
        limit.burst() as u32,
    )
}

const DEFAULT_ADMISSION: Limit = limit_of(&Config::DEFAULT.admission);
const DEFAULT_REFLECTION_PER_DESTINATION: Limit =
    limit_of(&Config::DEFAULT.reflection_per_destination);
const DEFAULT_REFLECTION_TOTAL: Limit = limit_of(&Config::DEFAULT.reflection_total);

fn default_verified_limits() -> LimitsSection {
    let l = &Config::DEFAULT.verified_limits;
    LimitsSection {
        register: limit_of(&l[0]),
        invite: limit_of(&l[1]),
        options: limit_of(&l[2]),
        other: limit_of(&l[3]),
        in_dialog: limit_of(&l[4]),
        response: limit_of(&l[5]),
        keepalive: limit_of(&l[6]),
        malformed: limit_of(&l[7]),
    }
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
