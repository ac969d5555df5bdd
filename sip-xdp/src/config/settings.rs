//! [`Settings`]: the whole file, read from disk or text, checked across its keys, and written
//! back as TOML.
use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    answers::AnswersSection,
    crowdsec::CrowdsecSection,
    limits::{LimitsSection, de_default_limits},
    parse::{ConfigError, CrossFieldProblem, invalid_across_fields, invalid_toml},
    sections::{BansSection, DatapathSection, LogSection, MetricsSection, SipSection},
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
    #[serde(deserialize_with = "de_default_limits")]
    pub limits: LimitsSection,
    pub bans: BansSection,
    pub datapath: DatapathSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    pub crowdsec: CrowdsecSection,
    pub answers: AnswersSection,
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
            answers: AnswersSection::default(),
        }
    }
}

impl Settings {
    /// Parses a configuration; `origin` (usually the file path) prefixes every error.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let settings: Settings =
            toml::from_str(text).map_err(|err| invalid_toml(text, origin, &err))?;
        if let Err(problem) = settings.check_across_fields() {
            return Err(invalid_across_fields(text, origin, problem));
        }
        Ok(settings)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

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
        self.answers.check()?;
        self.crowdsec.check()
    }
}
