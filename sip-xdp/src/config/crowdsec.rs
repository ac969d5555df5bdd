//! `[crowdsec]` and `[crowdsec.signals]`: the Local API the bouncer polls, the credentials the
//! signal pusher logs in with, the checks across their keys, and the feed's quota of the kernel's
//! deny table. The secrets themselves are read by the CrowdSec client at daemon start.
use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, de};

use super::{
    parse::{CrossFieldProblem, int_in_range},
    units::{de_positive_duration, format_duration, ser_duration},
};

/// Most nets origin `crowdsec` bans at once: half the kernel's deny table, so a feed can never
/// take the room manual and fail2ban bans need (`crowdsec.max_bans` may lower it).
pub const CROWDSEC_QUOTA: usize = sip_xdp_common::MAX_LIST_ENTRIES as usize / 2;

/// `[crowdsec]`: decisions from a CrowdSec Local API become bans of origin `crowdsec` (the
/// bouncer), and with `[crowdsec.signals]` this node's own rate-limit bans go to the Local API as
/// alerts. Secrets are read at daemon start, so `config check` needs no access to them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "the [crowdsec] table")]
pub struct CrowdsecSection {
    pub enabled: bool,
    #[serde(deserialize_with = "de_lapi_url")]
    pub lapi_url: String,
    /// The bouncer key itself; `api_key_file` keeps it out of a world-readable config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// PEM certificates to trust for an https:// Local API (a private CA, or crowdsec's own
    /// self-signed certificate), besides the usual public roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub poll_interval: Duration,
    /// Failed polls double the wait up to this.
    #[serde(
        serialize_with = "ser_duration",
        deserialize_with = "de_positive_duration"
    )]
    pub max_backoff: Duration,
    /// Only decisions of these origins ("crowdsec", "cscli", "CAPI", "lists"); empty: all.
    #[serde(deserialize_with = "de_origins")]
    pub origins: Vec<String>,
    /// Plain `http://` to a Local API that is not on loopback: the bouncer key and every
    /// decision cross the network in clear. Off: such a URL is refused.
    pub allow_insecure_http: bool,
    /// IPv4 decisions wider than this prefix length are refused (logged and counted).
    #[serde(deserialize_with = "de_min_prefix_v4")]
    pub min_prefix_v4: u8,
    /// IPv6 decisions wider than this prefix length are refused (logged and counted).
    #[serde(deserialize_with = "de_min_prefix_v6")]
    pub min_prefix_v6: u8,
    /// Most nets the feed bans at once (its quota of the kernel's deny table); at most
    /// [`CROWDSEC_QUOTA`], so the rest of the table stays free for manual and fail2ban bans.
    #[serde(deserialize_with = "de_crowdsec_max_bans")]
    pub max_bans: u32,
    pub signals: SignalsSection,
}

/// `[crowdsec.signals]`: the machine (watcher) credentials this node pushes alerts with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "the [crowdsec.signals] table"
)]
pub struct SignalsSection {
    pub enabled: bool,
    /// Push the kernel's rate-limit bans. Off by default: a rate ban is evidence that forged
    /// UDP sources can create, and a pushed one bans the real peer on the whole fleet.
    pub rate_bans: bool,
    /// Push the bans for failed authentication the egress program counted from the server's
    /// answers (scenarios sip-xdp/sip-bruteforce and sip-xdp/sip-scan). Off by default for the
    /// same reason: a forged REGISTER is answered to the address it names, so 404s and
    /// unanswered challenges can be made to pile up against a victim.
    pub auth_bans: bool,
    /// Push the kernel's prefix bans (`[prefixes]`) as Range decisions (scenario
    /// sip-xdp/sip-prefix-flood). Off by default, like `rate_bans`: forged sources spread over
    /// a prefix make its ban as easily as a real flood.
    pub prefix_bans: bool,
    /// Push the bans for a scanner's fingerprint or a trap account (`[signatures]`; scenarios
    /// sip-xdp/sip-scanner-fingerprint and sip-xdp/sip-trap-account). On by default: the
    /// request itself is the proof, not a rate.
    pub signature_bans: bool,
    /// cscli's local_api_credentials.yaml format (`url`, `login`, `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl Default for SignalsSection {
    fn default() -> Self {
        Self {
            enabled: false,
            rate_bans: false,
            auth_bans: false,
            prefix_bans: false,
            signature_bans: true,
            credentials_file: None,
            machine_id: None,
            password: None,
        }
    }
}

impl Default for CrowdsecSection {
    fn default() -> Self {
        Self {
            enabled: false,
            lapi_url: "http://127.0.0.1:8080/".to_owned(),
            api_key: None,
            api_key_file: None,
            ca_file: None,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            origins: Vec::new(),
            allow_insecure_http: false,
            min_prefix_v4: 16,
            min_prefix_v6: 32,
            max_bans: CROWDSEC_QUOTA as u32,
            signals: SignalsSection::default(),
        }
    }
}

impl CrowdsecSection {
    pub(super) fn check(&self) -> Result<(), CrossFieldProblem> {
        let problem = |keys: Vec<&'static [&'static str]>, message: String| {
            Err(CrossFieldProblem { keys, message })
        };
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return problem(
                vec![&["crowdsec", "api_key"]],
                "set crowdsec.api_key_file or crowdsec.api_key, not both".to_owned(),
            );
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return problem(
                vec![&["crowdsec", "api_key"]],
                "crowdsec.api_key is empty; paste the key `cscli bouncers add sip-xdp` printed"
                    .to_owned(),
            );
        }
        if self.enabled && self.api_key.is_none() && self.api_key_file.is_none() {
            return problem(
                vec![&["crowdsec", "enabled"]],
                "crowdsec.enabled is true but no bouncer key is set: create one with `cscli \
                 bouncers add sip-xdp` (one per node) and put it in the file named by \
                 crowdsec.api_key_file (preferred) or in crowdsec.api_key"
                    .to_owned(),
            );
        }
        if !self.allow_insecure_http && !lapi_url_is_safe(&self.lapi_url) {
            return problem(
                vec![&["crowdsec", "lapi_url"]],
                format!(
                    "crowdsec.lapi_url {:?} is plain http:// to a host that is not loopback: the \
                     bouncer key and every decision would cross the network in clear; use \
                     https:// (crowdsec's api.server.tls; crowdsec.ca_file names a private \
                     CA), or a Local API on 127.0.0.1, or, on a link you trust (a VPN), set \
                     crowdsec.allow_insecure_http = true",
                    self.lapi_url
                ),
            );
        }
        if self.max_backoff < self.poll_interval {
            return problem(
                vec![&["crowdsec", "max_backoff"], &["crowdsec", "poll_interval"]],
                format!(
                    "crowdsec.max_backoff must be at least crowdsec.poll_interval ({}), got {}",
                    format_duration(self.poll_interval),
                    format_duration(self.max_backoff)
                ),
            );
        }
        let signals = &self.signals;
        if signals.credentials_file.is_some()
            && (signals.machine_id.is_some() || signals.password.is_some())
        {
            return problem(
                vec![&["crowdsec", "signals", "credentials_file"]],
                "set crowdsec.signals.credentials_file or crowdsec.signals.machine_id and \
                 password, not both"
                    .to_owned(),
            );
        }
        if signals.machine_id.is_some() != signals.password.is_some() {
            return problem(
                vec![
                    &["crowdsec", "signals", "machine_id"],
                    &["crowdsec", "signals", "password"],
                ],
                "crowdsec.signals.machine_id and crowdsec.signals.password go together; set \
                 both, or use crowdsec.signals.credentials_file"
                    .to_owned(),
            );
        }
        if signals.enabled {
            if !self.enabled {
                return problem(
                    vec![&["crowdsec", "signals", "enabled"]],
                    "crowdsec.signals.enabled needs crowdsec.enabled = true (and its bouncer key)"
                        .to_owned(),
                );
            }
            if signals.credentials_file.is_none() && signals.machine_id.is_none() {
                return problem(
                    vec![&["crowdsec", "signals", "enabled"]],
                    "crowdsec.signals.enabled is true but no machine credentials are set: \
                     create them with `cscli machines add sip-xdp-NODE -p PASSWORD -f FILE` and \
                     set crowdsec.signals.credentials_file = FILE"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }
}

const LAPI_URL_EXAMPLE: &str = "\"http://127.0.0.1:8080/\"";

fn de_lapi_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let url = reqwest::Url::parse(text.trim()).map_err(|e| {
        de::Error::custom(format!(
            "must be a URL such as {LAPI_URL_EXAMPLE}, got {text:?} ({e})"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(de::Error::custom(format!(
            "must be an http:// or https:// URL such as {LAPI_URL_EXAMPLE}, got {text:?}"
        )));
    }
    Ok(text.trim().to_owned())
}

/// https, or http to a loopback host (`localhost`, 127.0.0.0/8, ::1).
fn lapi_url_is_safe(text: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(text.trim()) else {
        // Parsing already refused it; nothing to add.
        return true;
    };
    if url.scheme() != "http" {
        return true;
    }
    let Some(host) = url.host_str() else {
        return true;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(addr) => addr.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn de_min_prefix_v4<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    int_in_range(
        d,
        1,
        32,
        " (a decision for 0.0.0.0/0 would drop every IPv4 source)",
    )
}

fn de_min_prefix_v6<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    int_in_range(
        d,
        1,
        128,
        " (a decision for ::/0 would drop every IPv6 source)",
    )
}

fn de_crowdsec_max_bans<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int_in_range(
        d,
        1,
        CROWDSEC_QUOTA as u32,
        " (turn the feed off with crowdsec.enabled = false)",
    )
}

fn de_origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let origins = Vec::<String>::deserialize(d)?;
    if let Some(bad) = origins
        .iter()
        .find(|o| o.trim().is_empty() || o.contains(',') || o.contains(char::is_whitespace))
    {
        return Err(de::Error::custom(format!(
            "must only hold origin names such as \"crowdsec\", \"cscli\" or \"CAPI\", got {bad:?}"
        )));
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::CROWDSEC_QUOTA;
    use crate::config::{
        settings::Settings,
        tests::{at, parse, reject},
    };

    #[test]
    fn crowdsec_section_parses_and_checks() {
        let s = parse(
            r#"
[crowdsec]
enabled = true
lapi_url = "https://203.0.113.200:8080"
api_key_file = "/etc/sip-xdp/crowdsec-bouncer.key"
poll_interval = "500ms"
max_backoff = "8s"
origins = ["crowdsec", "cscli"]

[crowdsec.signals]
enabled = true
credentials_file = "/etc/sip-xdp/crowdsec-machine.yaml"
"#,
        )
        .unwrap();
        let c = &s.crowdsec;
        assert!(c.enabled && c.signals.enabled);
        assert_eq!(c.lapi_url, "https://203.0.113.200:8080");
        assert_eq!(
            c.api_key_file.as_deref(),
            Some(Path::new("/etc/sip-xdp/crowdsec-bouncer.key"))
        );
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.max_backoff, Duration::from_secs(8));
        assert_eq!(c.origins, ["crowdsec", "cscli"]);
        assert_eq!(parse(&s.to_toml()).unwrap(), s);

        #[rustfmt::skip]
        let cases: &[(&str, usize, usize, &str)] = &[
            ("[crowdsec]\nenabled = true\n", 2, 11, "no bouncer key is set: create one with `cscli bouncers add sip-xdp`"),
            ("[crowdsec]\napi_key = \"k\"\napi_key_file = \"/k\"\n", 2, 11, "not both"),
            ("[crowdsec]\napi_key = \" \"\n", 2, 11, "crowdsec.api_key is empty"),
            ("[crowdsec]\nlapi_url = \"127.0.0.1:8080\"\n", 2, 12, "crowdsec.lapi_url must be"),
            ("[crowdsec]\nlapi_url = \"ftp://h/\"\n", 2, 12, "http:// or https://"),
            ("[crowdsec]\npoll_interval = \"0s\"\n", 2, 17, "crowdsec.poll_interval must be longer than zero"),
            ("[crowdsec]\npoll_interval = \"1m\"\n", 2, 17, "crowdsec.max_backoff must be at least crowdsec.poll_interval (1m)"),
            ("[crowdsec]\norigins = [\"a,b\"]\n", 2, 11, "crowdsec.origins must only hold origin names"),
            ("[crowdsec]\nenabled = true\napi_key = \"k\"\n[crowdsec.signals]\nenabled = true\n", 5, 11, "cscli machines add"),
            ("[crowdsec.signals]\nenabled = true\nmachine_id = \"m\"\npassword = \"p\"\n", 2, 11, "needs crowdsec.enabled = true"),
            ("[crowdsec.signals]\nmachine_id = \"m\"\n", 2, 14, "go together"),
            ("[crowdsec.signals]\ncredentials_file = \"/f\"\npassword = \"p\"\n", 2, 20, "not both"),
            ("[crowdsec]\napi_kye = \"k\"\n", 2, 1, "unknown key `crowdsec.api_kye`"),
            ("[crowdsec]\nmin_prefix_v4 = 0\n", 2, 17, "crowdsec.min_prefix_v4 must be between 1 and 32"),
            ("[crowdsec]\nmin_prefix_v6 = 129\n", 2, 17, "crowdsec.min_prefix_v6 must be between 1 and 128"),
            ("[crowdsec]\nmax_bans = 8193\n", 2, 12, "crowdsec.max_bans must be between 1 and 8192"),
            ("[crowdsec]\nmax_bans = 0\n", 2, 12, "crowdsec.enabled = false"),
        ];
        for &(text, line, column, needle) in cases {
            let (location, message) = reject(text);
            assert_eq!(location, at(line, column), "{text:?}: {message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        for url in [
            "http://203.0.113.200:8080/",
            "http://lapi.example.net:8080/",
            "http://[2001:db8::1]:8080/",
        ] {
            let text = format!("[crowdsec]\nlapi_url = \"{url}\"\n");
            let (location, message) = reject(&text);
            assert_eq!(location, at(2, 12), "{url}: {message}");
            for needle in [
                "crowdsec.lapi_url",
                "not loopback",
                "use https://",
                "crowdsec.allow_insecure_http = true",
            ] {
                assert!(message.contains(needle), "{url}: {message}");
            }
            let allowed = format!("{text}allow_insecure_http = true\n");
            assert!(parse(&allowed).unwrap().crowdsec.allow_insecure_http);
        }
        for url in [
            "http://127.0.0.1:8080/",
            "http://127.1.2.3:8080/",
            "http://localhost:8080/",
            "http://[::1]:8080/",
            "https://203.0.113.200:8080/",
            "https://lapi.example.net/",
        ] {
            let text = format!("[crowdsec]\nlapi_url = \"{url}\"\n");
            assert_eq!(parse(&text).unwrap().crowdsec.lapi_url, url);
        }
    }

    #[test]
    fn feed_limits_and_rate_ban_signals_have_safe_defaults() {
        let c = Settings::default().crowdsec;
        assert_eq!((c.min_prefix_v4, c.min_prefix_v6), (16, 32));
        assert_eq!(c.max_bans as usize, CROWDSEC_QUOTA);
        assert!(
            !c.signals.rate_bans,
            "rate bans are not signalled unless configured"
        );
        assert!(!c.allow_insecure_http);
        let s = parse(
            "[crowdsec]\nmin_prefix_v4 = 24\nmin_prefix_v6 = 48\nmax_bans = 10\n\
             [crowdsec.signals]\nrate_bans = true\n",
        )
        .unwrap();
        let c = &s.crowdsec;
        assert_eq!((c.min_prefix_v4, c.min_prefix_v6, c.max_bans), (24, 48, 10));
        assert!(c.signals.rate_bans);
        assert_eq!(parse(&s.to_toml()).unwrap(), s);
    }
}
