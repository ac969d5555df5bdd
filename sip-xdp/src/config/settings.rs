//! [`Settings`]: the whole file, read from disk or text, checked across its keys, and written
//! back as TOML.
use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    answers::AnswersSection,
    crowdsec::CrowdsecSection,
    limits::{LimitsSection, de_default_limits},
    parse::{ConfigError, CrossFieldProblem, invalid_across_fields, invalid_toml},
    prefixes::PrefixesSection,
    sections::{BansSection, DatapathSection, LogSection, MetricsSection, SipSection},
    signatures::SignaturesSection,
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
    pub prefixes: PrefixesSection,
    pub signatures: SignaturesSection,
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
            prefixes: PrefixesSection::default(),
            signatures: SignaturesSection::default(),
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

    /// What a valid configuration may still do that the operator should hear of (logged by
    /// `attach`, `run` and every reload, printed by `config check`): one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.datapath.tcp_ports.is_empty() {
            warnings.push(
                "datapath.tcp_ports is empty: SIP over TCP and TLS is not inspected, no SYN is \
                 rate-limited, and a source banned on UDP can carry on over TCP; list the SIP \
                 TCP ports (default [5060, 5061]) to cover them"
                    .to_owned(),
            );
        }
        for &len in &self.prefixes.ipv6 {
            if len >= self.sip.ipv6_source_prefix {
                warnings.push(format!(
                    "prefixes.ipv6 lists /{len}, which is no wider than sip.ipv6_source_prefix \
                     (/{}): every such prefix holds a single source, so its bucket only adds \
                     to the source's own; list shorter prefixes (such as 64 and 48)",
                    self.sip.ipv6_source_prefix
                ));
            }
        }
        warnings.extend(self.signatures.warnings());
        warnings
    }

    fn check_across_fields(&self) -> Result<(), CrossFieldProblem> {
        self.bans.check()?;
        self.answers.check()?;
        self.signatures.check(self.bans.max)?;
        self.crowdsec.check()
    }
}
