//! `[crowdsec]` with its secrets read ([`ClientConfig`]), the HTTP client for the Local API, and
//! the context the client's tasks share.
use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use reqwest::Url;

use super::{
    credentials::{Machine, bouncer_key, machine_credentials, refuse_readable_inline_secrets},
    decisions::FeedLimits,
    stats::Stats,
};
use crate::{config::CrowdsecSection, control::Control};

/// Sent with every request, so `cscli bouncers list` and the LAPI's access log name us.
pub const USER_AGENT: &str = concat!("sip-xdp/", env!("CARGO_PKG_VERSION"));
/// Most nets the bouncer bans at once unless `crowdsec.max_bans` says fewer: origin
/// `crowdsec`'s quota of the kernel's deny table (see [`crate::config::CROWDSEC_QUOTA`]).
pub const MAX_CROWDSEC_NETS: usize = crate::config::CROWDSEC_QUOTA;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `[crowdsec]` with its secrets read: what the client runs with.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Always ends with "/", so endpoints join below it.
    pub lapi: Url,
    pub(super) api_key: String,
    pub poll_interval: Duration,
    pub max_backoff: Duration,
    pub origins: Vec<String>,
    pub machine: Option<Machine>,
    pub limits: FeedLimits,
    /// `crowdsec.signals.rate_bans`: push the kernel's rate bans (needs `machine`).
    pub push_rate_bans: bool,
    /// `crowdsec.signals.auth_bans`: push the bans for failed authentication.
    pub push_auth_bans: bool,
    /// `crowdsec.signals.prefix_bans`: push the kernel's prefix bans as Range decisions.
    pub push_prefix_bans: bool,
    /// `crowdsec.signals.signature_bans`: push the bans for a fingerprint or a trap account.
    pub push_signature_bans: bool,
    /// `crowdsec.ca_file`'s PEM text: extra roots for an https:// Local API.
    pub(super) ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("lapi", &self.lapi.as_str())
            .field("poll_interval", &self.poll_interval)
            .field("max_backoff", &self.max_backoff)
            .field("origins", &self.origins)
            .field("machine", &self.machine.as_ref().map(|m| &m.login))
            .field("limits", &self.limits)
            .field("push_rate_bans", &self.push_rate_bans)
            .field("push_auth_bans", &self.push_auth_bans)
            .field("push_prefix_bans", &self.push_prefix_bans)
            .field("push_signature_bans", &self.push_signature_bans)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// `None` while `[crowdsec]` is off. Reads the key and credentials files, so a missing or
    /// empty one stops the daemon before it attaches, naming the file and the fix. Secrets in a
    /// file that group or others can read are refused: a key or credentials file, and
    /// `config_file` (the configuration these settings came from) when it holds one inline.
    pub fn from_settings(
        section: &CrowdsecSection,
        config_file: Option<&Path>,
    ) -> Result<Option<Self>> {
        // Even with [crowdsec] off: a secret in a readable file is out either way.
        refuse_readable_inline_secrets(section, config_file)?;
        if !section.enabled {
            return Ok(None);
        }
        let mut lapi = Url::parse(&section.lapi_url)
            .with_context(|| format!("crowdsec.lapi_url {:?} is not a URL", section.lapi_url))?;
        if !lapi.path().ends_with('/') {
            let path = format!("{}/", lapi.path());
            lapi.set_path(&path);
        }
        let api_key = bouncer_key(section)?;
        let ca_pem = match &section.ca_file {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!(
                        "cannot read crowdsec.ca_file {}; point it at the PEM certificate of \
                         the CA that signed the Local API's certificate (or the certificate \
                         itself)",
                        path.display()
                    )
                })?;
                // Builds a client once, so a file that is not PEM fails here, before attaching.
                http_client(Some(&pem)).with_context(|| {
                    format!(
                        "crowdsec.ca_file {} is not usable as PEM certificates",
                        path.display()
                    )
                })?;
                Some(pem)
            }
        };
        let signals = &section.signals;
        let machine = machine_credentials(signals)?;
        Ok(Some(Self {
            lapi,
            api_key,
            poll_interval: section.poll_interval,
            max_backoff: section.max_backoff,
            origins: section.origins.clone(),
            machine,
            limits: FeedLimits {
                min_prefix_v4: section.min_prefix_v4,
                min_prefix_v6: section.min_prefix_v6,
                max_nets: (section.max_bans as usize).min(MAX_CROWDSEC_NETS),
            },
            push_rate_bans: signals.enabled && signals.rate_bans,
            push_auth_bans: signals.enabled && signals.auth_bans,
            push_prefix_bans: signals.enabled && signals.prefix_bans,
            push_signature_bans: signals.enabled && signals.signature_bans,
            ca_pem,
        }))
    }

    pub(super) fn endpoint(&self, path: &str) -> Result<Url> {
        self.lapi
            .join(path)
            .with_context(|| format!("joining {path} to crowdsec.lapi_url {}", self.lapi))
    }
}

/// What the bouncer and pusher tasks share: the config, one HTTP client, the endpoints.
pub(super) struct Ctx {
    pub(super) cfg: ClientConfig,
    pub(super) http: reqwest::Client,
    pub(super) stream_url: Url,
    pub(super) login_url: Url,
    pub(super) alerts_url: Url,
    pub(super) control: Control,
    pub(super) stats: Arc<Stats>,
}

/// The client for the Local API, trusting `ca_pem`'s certificates besides the public roots.
pub(super) fn http_client(ca_pem: Option<&[u8]>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).context("reading the PEM")?;
        if certs.is_empty() {
            bail!("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .context("cannot set up the HTTP client for the CrowdSec Local API")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crowdsec::credentials::tests::{chmod, section_with_key_file};

    /// A throwaway self-signed certificate made for this test (`openssl req -x509 -newkey ec`).
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUbEVuxcpy9MVXYeEg0Cm6HABOnX0wCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPc2lwLXhkcC10ZXN0LWNhMCAXDTI2MTIwMTA4MzAwN1oYDzIx
MjYxMTA3MDgzMDA3WjAaMRgwFgYDVQQDDA9zaXAteGRwLXRlc3QtY2EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAT/oOeUVjPtAIra3D8ECud6DjpN2hgm7iENjje1
1IsSsb71uAVIWB0vm1VmOpfAXILuehlhCDQxcx5hoktnbqUwo1MwUTAdBgNVHQ4E
FgQUpbPmYnv5i+5tOhahbKIe8i+ER48wHwYDVR0jBBgwFoAUpbPmYnv5i+5tOhah
bKIe8i+ER48wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAhQXh
q0eTBthw/OfbDdCk9djtU+Ev0P7wUBySqcFiVbACIAWCQFKWluMyZzFrdopcqvd6
2JTfPPOgb3pONZY0nG1m
-----END CERTIFICATE-----
";

    #[test]
    fn ca_file_is_read_and_checked_before_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bouncer.key");
        std::fs::write(&key, "k0123456789\n").unwrap();
        chmod(&key, 0o600);
        let ca = dir.path().join("ca.pem");
        let mut section = section_with_key_file(&key);
        section.lapi_url = "https://203.0.113.200:8080/".to_owned();
        section.ca_file = Some(ca.clone());

        let err = format!(
            "{:#}",
            ClientConfig::from_settings(&section, None).unwrap_err()
        );
        assert!(err.contains("cannot read crowdsec.ca_file"), "{err}");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let err = format!(
            "{:#}",
            ClientConfig::from_settings(&section, None).unwrap_err()
        );
        assert!(
            err.contains("crowdsec.ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        std::fs::write(&ca, TEST_CA_PEM).unwrap();
        let cfg = ClientConfig::from_settings(&section, None)
            .unwrap()
            .unwrap();
        assert_eq!(cfg.ca_pem.as_deref(), Some(TEST_CA_PEM.as_bytes()));
    }
}
