//! `[limits.*]`: one token bucket per limit class; a key left out of a table keeps its own
//! class's default, not a shared one.
use serde::{Deserialize, Deserializer, Serialize};
use sip_xdp_common::{LimitClass, RateLimit};

use super::{
    parse::int_in_range,
    units::{Rate, RatePeriod},
};

/// One bucket per [`LimitClass`]. Deserialized against a set of defaults (see [`de_limits`]):
/// `[limits]` has the program's defaults, `[answers.verified_limits]` looser ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitsSection {
    pub register: Limit,
    pub invite: Limit,
    pub options: Limit,
    pub other: Limit,
    pub in_dialog: Limit,
    pub response: Limit,
    pub keepalive: Limit,
    pub malformed: Limit,
    pub connection: Limit,
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
            LimitClass::Connection => &self.connection,
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
    pub(super) const fn per_second(count: u64, burst: u32) -> Self {
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
pub(super) const DEFAULT_CONNECTION_LIMIT: Limit = Limit::per_second(5, 50);

/// The operator form of a kernel bucket whose interval is a whole fraction of a second (every
/// default is): `UNLIMITED` comes back as "unlimited" with a burst of 1, which it ignores.
pub(super) const fn limit_of(limit: &RateLimit) -> Limit {
    if limit.is_unlimited() {
        return Limit {
            rate: Rate::Unlimited,
            burst: 1,
        };
    }
    Limit::per_second(
        sip_xdp_common::NS_PER_SEC / limit.interval_ns,
        limit.burst() as u32,
    )
}

/// A limits table holding the kernel buckets `limits` (one per [`LimitClass`]), for defaults
/// taken from `Config::DEFAULT`.
pub(super) fn limits_of(limits: &[RateLimit; LimitClass::COUNT]) -> LimitsSection {
    let at = |class: LimitClass| limit_of(&limits[class as usize]);
    LimitsSection {
        register: at(LimitClass::Register),
        invite: at(LimitClass::Invite),
        options: at(LimitClass::Options),
        other: at(LimitClass::Other),
        in_dialog: at(LimitClass::InDialog),
        response: at(LimitClass::Response),
        keepalive: at(LimitClass::KeepAlive),
        malformed: at(LimitClass::Malformed),
        connection: at(LimitClass::Connection),
    }
}

impl LimitsSection {
    /// The buckets in kernel form, indexed by [`LimitClass`].
    pub fn rate_limits(&self) -> [RateLimit; LimitClass::COUNT] {
        LimitClass::ALL.map(|class| self.get(class).rate_limit())
    }
}

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
            connection: DEFAULT_CONNECTION_LIMIT,
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

impl PartialLimit {
    fn or(self, default: Limit) -> Limit {
        Limit {
            rate: self.rate.unwrap_or(default.rate),
            burst: self.burst.unwrap_or(default.burst),
        }
    }
}

/// A `[limits]`-shaped table as written: each class's table is optional.
#[derive(Deserialize, Default)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a table of limits, one per class"
)]
struct PartialLimits {
    register: Option<PartialLimit>,
    invite: Option<PartialLimit>,
    options: Option<PartialLimit>,
    other: Option<PartialLimit>,
    in_dialog: Option<PartialLimit>,
    response: Option<PartialLimit>,
    keepalive: Option<PartialLimit>,
    malformed: Option<PartialLimit>,
    connection: Option<PartialLimit>,
}

/// Reads a limits table; a class left out, or a key left out of a class's table, keeps that
/// class's own default from `defaults`.
pub(super) fn de_limits<'de, D: Deserializer<'de>>(
    d: D,
    defaults: &LimitsSection,
) -> Result<LimitsSection, D::Error> {
    let p = PartialLimits::deserialize(d)?;
    let pick = |partial: Option<PartialLimit>, default: Limit| match partial {
        Some(partial) => partial.or(default),
        None => default,
    };
    Ok(LimitsSection {
        register: pick(p.register, defaults.register),
        invite: pick(p.invite, defaults.invite),
        options: pick(p.options, defaults.options),
        other: pick(p.other, defaults.other),
        in_dialog: pick(p.in_dialog, defaults.in_dialog),
        response: pick(p.response, defaults.response),
        keepalive: pick(p.keepalive, defaults.keepalive),
        malformed: pick(p.malformed, defaults.malformed),
        connection: pick(p.connection, defaults.connection),
    })
}

/// `[limits]`, against the program's defaults.
pub(super) fn de_default_limits<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<LimitsSection, D::Error> {
    de_limits(d, &LimitsSection::default())
}

/// A single bucket table (`rate`, `burst`), keys left out taking `default`.
pub(super) fn de_limit<'de, D: Deserializer<'de>>(d: D, default: Limit) -> Result<Limit, D::Error> {
    Ok(PartialLimit::deserialize(d)?.or(default))
}
