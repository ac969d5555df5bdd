//! The operator's TOML configuration (`/etc/sip-xdp/sip-xdp.toml`): parsing with errors that
//! point at the offending line, defaults that equal the program's
//! [`Config::DEFAULT`](sip_xdp_common::Config::DEFAULT), and the translation into the kernel
//! [`Config`](sip_xdp_common::Config) plus the settings only user space needs.
//!
//! Value checks (ranges, rate and duration syntax) live inside the `Deserialize` of each field,
//! so toml attaches the value's span to the error and the operator gets `file:line:column`.
//!
//! The rooms: `settings` (the whole file, [`Settings`]), `sections` (`[sip]`, `[bans]`,
//! `[datapath]`, `[metrics]`, `[log]`), `limits` (`[limits.*]`), `answers` (`[answers]`), `crowdsec` (`[crowdsec]`),
//! `prefixes` (`[prefixes]`), `signatures` (`[signatures]`),
//! `parse` (located errors, key paths), `units` (rates and durations) and `kernel` (the kernel
//! config and its description).
//! Nothing here imports the rest of the crate.
mod answers;
mod crowdsec;
mod kernel;
mod limits;
mod parse;
mod prefixes;
mod sections;
mod settings;
mod signatures;
#[cfg(test)]
mod tests;
mod units;

pub use self::{
    answers::AnswersSection,
    crowdsec::{CROWDSEC_QUOTA, CrowdsecSection, SignalsSection},
    kernel::{KernelConfigView, LimitView, describe_kernel},
    limits::{Limit, LimitsSection},
    parse::{ConfigError, Location},
    prefixes::{MAX_IPV6_PREFIX_LEVELS, PrefixesSection},
    sections::{
        BansSection, DatapathSection, LogFormat, LogSection, MAX_BAN_FACTOR, MetricsSection,
        SipSection,
    },
    settings::{DEFAULT_CONFIG_PATH, EMBEDDED_DEFAULT_TOML, Settings},
    signatures::{
        DEFAULT_FINGERPRINTS, SignaturesSection, list_key, signature_key, token_problem, tokenize,
    },
    units::{Rate, RatePeriod, format_duration, parse_duration},
};
