//! The operator's TOML configuration (`/etc/sip-xdp/sip-xdp.toml`): parsing with errors that
//! point at the offending line, defaults that equal the program's
//! [`Config::DEFAULT`](sip_xdp_common::Config::DEFAULT), and the translation into the kernel
//! [`Config`](sip_xdp_common::Config) plus the settings only user space needs.
//!
//! Value checks (ranges, rate and duration syntax) live inside the `Deserialize` of each field,
//! so toml attaches the value's span to the error and the operator gets `file:line:column`.
//!
//! The rooms: `sections` (`[sip]`, `[bans]`, `[datapath]`, `[metrics]`, `[log]`), `limits`
//! (`[limits.*]`), `crowdsec` (`[crowdsec]`), `parse` (text to [`Settings`], located errors),
//! `units` (rates and durations) and `kernel` (the kernel config and its description).
//! Nothing here imports the rest of the crate.
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod crowdsec;
mod kernel;
mod limits;
mod parse;
mod sections;
#[cfg(test)]
mod tests;
mod units;

use self::parse::CrossFieldProblem;
pub use self::{
    crowdsec::{CROWDSEC_QUOTA, CrowdsecSection, SignalsSection},
    kernel::{KernelConfigView, LimitView, MAX_BAN_FACTOR, describe_kernel},
    limits::{Limit, LimitsSection},
    parse::{ConfigError, Location},
    sections::{BansSection, DatapathSection, LogFormat, LogSection, MetricsSection, SipSection},
    units::{Rate, RatePeriod, format_duration, parse_duration},
};

/// Where the daemon and the CLI look for the configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sip-xdp/sip-xdp.toml";
/// The commented example file; parsing it gives [`Settings::default`].
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../etc/sip-xdp.toml");

/// The whole operator configuration. Every field is optional in the file. Parse it with
/// [`Settings::from_toml_str`] or [`Settings::load`]: a bare `toml::from_str` skips the
/// cross-field checks (`bans.max >= bans.base`) and the file/line in errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub sip: SipSection,
    pub limits: LimitsSection,
    pub bans: BansSection,
    pub datapath: DatapathSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub crowdsec: CrowdsecSection,
}

/// Equal to parsing [`EMBEDDED_DEFAULT_TOML`] (a test holds the two together).
impl Default for Settings {
    fn default() -> Self {
        Self {
            sip: SipSection::default(),
            limits: LimitsSection::default(),
            bans: BansSection::default(),
            datapath: DatapathSection::default(),
            metrics: MetricsSection::default(),
            log: LogSection::default(),
            crowdsec: CrowdsecSection::default(),
        }
    }
}

impl Settings {
    /// The effective configuration as TOML, every key present, in the units an operator writes
    /// ("5/s", "1m"); parsing it gives back an equal `Settings`.
    pub fn to_toml(&self) -> String {
        // Every field is a string, integer, bool or table of those: serialising cannot fail.
        toml::to_string(self).expect("Settings serialises to TOML")
    }

    /// Duration of a manual ban when the operator gives none.
    pub fn manual_ban_default(&self) -> Duration {
        self.bans.manual_default
    }

    fn check_across_fields(&self) -> Result<(), CrossFieldProblem> {
        self.bans.check()?;
        self.crowdsec.check()
    }
}
