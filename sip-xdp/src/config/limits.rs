//! `[limits.*]`: one token bucket per limit class; a key left out of a table keeps its own
//! class's default, not a shared one.
use serde::{Deserialize, Deserializer, Serialize};
use sip_xdp_common::{LimitClass, RateLimit};

use super::{
    parse::int_in_range,
    units::{Rate, RatePeriod},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [limits] table")]
pub struct LimitsSection {
    #[serde(deserialize_with = "de_register_limit")]
    pub register: Limit,
    #[serde(deserialize_with = "de_invite_limit")]
    pub invite: Limit,
    #[serde(deserialize_with = "de_options_limit")]
    pub options: Limit,
    #[serde(deserialize_with = "de_other_limit")]
    pub other: Limit,
    #[serde(deserialize_with = "de_in_dialog_limit")]
    pub in_dialog: Limit,
    #[serde(deserialize_with = "de_response_limit")]
    pub response: Limit,
    #[serde(deserialize_with = "de_keepalive_limit")]
    pub keepalive: Limit,
    #[serde(deserialize_with = "de_malformed_limit")]
    pub malformed: Limit,
}

impl LimitsSection {
    pub fn get(&self, class: LimitClass) -> &Limit {
        match class {
            LimitClass::Register => &self.register,
            LimitClass::Invite => &self.invite,
            LimitClass::Options => &self.options,
            LimitClass::Other => &self.other,
            LimitClass::InDialog => &self.in_dialog,
            LimitClass::Response => &self.response,
            LimitClass::KeepAlive => &self.keepalive,
            LimitClass::Malformed => &self.malformed,
        }
    }
}

/// One token bucket: `rate` sustained, `burst` back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub rate: Rate,
    pub burst: u32,
}

impl Limit {
    const fn per_second(count: u64, burst: u32) -> Self {
        Self {
            rate: Rate::Limited {
                count,
                per: RatePeriod::Second,
            },
            burst,
        }
    }

    pub const fn rate_limit(&self) -> RateLimit {
        self.rate.rate_limit(self.burst)
    }
}

// Kept equal to `Config::DEFAULT.limits` (a test holds them together); spelled out because a
// kernel interval does not always map back to one operator rate.
pub(super) const DEFAULT_REGISTER_LIMIT: Limit = Limit::per_second(5, 40);
pub(super) const DEFAULT_INVITE_LIMIT: Limit = Limit::per_second(5, 20);
pub(super) const DEFAULT_OPTIONS_LIMIT: Limit = Limit::per_second(5, 30);
pub(super) const DEFAULT_OTHER_LIMIT: Limit = Limit::per_second(50, 100);
pub(super) const DEFAULT_IN_DIALOG_LIMIT: Limit = Limit::per_second(100, 200);
pub(super) const DEFAULT_RESPONSE_LIMIT: Limit = Limit::per_second(100, 200);
pub(super) const DEFAULT_KEEPALIVE_LIMIT: Limit = Limit::per_second(50, 100);
pub(super) const DEFAULT_MALFORMED_LIMIT: Limit = Limit::per_second(10, 20);

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            register: DEFAULT_REGISTER_LIMIT,
            invite: DEFAULT_INVITE_LIMIT,
            options: DEFAULT_OPTIONS_LIMIT,
            other: DEFAULT_OTHER_LIMIT,
            in_dialog: DEFAULT_IN_DIALOG_LIMIT,
            response: DEFAULT_RESPONSE_LIMIT,
            keepalive: DEFAULT_KEEPALIVE_LIMIT,
            malformed: DEFAULT_MALFORMED_LIMIT,
        }
    }
}

fn de_burst<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(
        d,
        1,
        u32::MAX,
        " (use rate = \"unlimited\" to turn a bucket off)",
    )
}

/// A `[limits.*]` table as written; missing keys take the class's own default.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a limit table with `rate` and `burst`"
)]
struct PartialLimit {
    rate: Option<Rate>,
    #[serde(default, deserialize_with = "de_burst_some")]
    burst: Option<u32>,
}

fn de_burst_some<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_burst(d).map(Some)
}

fn de_limit<'de, D: Deserializer<'de>>(d: D, default: Limit) -> Result<Limit, D::Error> {
    let partial = PartialLimit::deserialize(d)?;
    Ok(Limit {
        rate: partial.rate.unwrap_or(default.rate),
        burst: partial.burst.unwrap_or(default.burst),
    })
}

fn de_register_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_REGISTER_LIMIT)
}

fn de_invite_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_INVITE_LIMIT)
}

fn de_options_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_OPTIONS_LIMIT)
}

fn de_other_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_OTHER_LIMIT)
}

fn de_in_dialog_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_IN_DIALOG_LIMIT)
}

fn de_response_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_RESPONSE_LIMIT)
}

fn de_keepalive_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_KEEPALIVE_LIMIT)
}

fn de_malformed_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
    de_limit(d, DEFAULT_MALFORMED_LIMIT)
}
