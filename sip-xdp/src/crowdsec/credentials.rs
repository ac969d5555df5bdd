//! The secrets: the bouncer key and the watcher credentials, read from files that only their owner
//! may read, or inline from a configuration file held to the same rule.
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::config::{CrowdsecSection, SignalsSection};

/// Watcher credentials for the signal pusher.
#[derive(Clone, PartialEq, Eq)]
pub struct Machine {
    pub login: String,
    pub(super) password: String,
}

/// Refuses `config_file` (the configuration `section` came from) when it sets a secret inline and
/// group or others can read it.
pub(super) fn refuse_readable_inline_secrets(
    section: &CrowdsecSection,
    config_file: Option<&Path>,
) -> Result<()> {
    let inline = [
        ("crowdsec.api_key", section.api_key.is_some()),
        (
            "crowdsec.signals.password",
            section.signals.password.is_some(),
        ),
    ];
    if let (Some(file), Some((key, _))) = (config_file, inline.iter().find(|(_, set)| *set)) {
        let fix = if *key == "crowdsec.api_key" {
            "move the key to a file of mode 0600 named by crowdsec.api_key_file"
        } else {
            "move the credentials to a file of mode 0600 named by \
             crowdsec.signals.credentials_file"
        };
        check_private(
            file,
            &format!("the configuration (which sets {key} inline)"),
            fix,
        )?;
    }
    Ok(())
}

/// The bouncer key: `crowdsec.api_key`, or the private file `crowdsec.api_key_file` names.
pub(super) fn bouncer_key(section: &CrowdsecSection) -> Result<String> {
    let key = match (&section.api_key, &section.api_key_file) {
        (Some(key), _) => key.trim().to_owned(),
        (None, Some(path)) => {
            check_private(path, "crowdsec.api_key_file", BOUNCER_KEY_FIX)?;
            read_secret(path, "crowdsec.api_key_file", BOUNCER_KEY_FIX)?
        }
        (None, None) => bail!(
            "crowdsec.enabled is true but no bouncer key is set: {BOUNCER_KEY_FIX} and set \
             crowdsec.api_key_file"
        ),
    };
    Ok(key)
}

/// The watcher credentials the signal pusher logs in with; `None` while signals are off.
pub(super) fn machine_credentials(signals: &SignalsSection) -> Result<Option<Machine>> {
    let machine = if !signals.enabled {
        None
    } else if let Some(path) = &signals.credentials_file {
        check_private(path, "crowdsec.signals.credentials_file", MACHINE_FIX)?;
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read crowdsec.signals.credentials_file {}; {MACHINE_FIX}",
                path.display()
            )
        })?;
        let creds = parse_credentials(&text).with_context(|| {
            format!(
                "crowdsec.signals.credentials_file {} is not a credentials file; \
                 {MACHINE_FIX}",
                path.display()
            )
        })?;
        Some(creds)
    } else {
        match (&signals.machine_id, &signals.password) {
            (Some(login), Some(password)) => Some(Machine {
                login: login.clone(),
                password: password.clone(),
            }),
            _ => bail!(
                "crowdsec.signals.enabled is true but no machine credentials are set; \
                 {MACHINE_FIX}"
            ),
        }
    };
    Ok(machine)
}

pub(super) const BOUNCER_KEY_FIX: &str = "create a key with `cscli bouncers add \
                                          sip-xdp-$(hostname) -o raw > \
                                          /etc/sip-xdp/crowdsec-bouncer.key` (one per node)";
pub(super) const MACHINE_FIX: &str = "create one with `cscli machines add sip-xdp-$(hostname) \
                                      -p PASSWORD -f /etc/sip-xdp/crowdsec-machine.yaml` and set \
                                      crowdsec.signals.credentials_file to that file";

/// Refuses a file holding a secret that group or others may read (or write).
fn check_private(path: &Path, what: &str, fix: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}; {fix}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} holds a secret but group or others can access it (mode {mode:04o}): run \
             `chmod 600 {}` (owned by the user sip-xdp runs as), or {fix}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn read_secret(path: &Path, key: &str, fix: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {key} {}; {fix}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        bail!(
            "{key} {} must hold the key alone on one line; {fix}",
            path.display()
        );
    }
    Ok(secret.to_owned())
}

/// cscli's `local_api_credentials.yaml`: flat `login:` and `password:` (and `url:`, unused:
/// `crowdsec.lapi_url` names the API). A plain or quoted scalar per line is all cscli writes.
fn parse_credentials(text: &str) -> Result<Machine> {
    let (mut login, mut password) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            bail!("line {line:?} is not `key: value`");
        };
        let value = unquote(value.trim());
        match key.trim() {
            "login" => login = Some(value),
            "password" => password = Some(value),
            _ => {}
        }
    }
    match (login, password) {
        (Some(login), Some(password)) if !login.is_empty() && !password.is_empty() => {
            Ok(Machine { login, password })
        }
        _ => bail!("it needs both `login:` and `password:`"),
    }
}

fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].replace("''", "'");
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return value[1..value.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
    }
    value.to_owned()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::crowdsec::ClientConfig;

    #[test]
    fn credentials_file_as_cscli_writes_it() {
        let m = parse_credentials(
            "url: http://203.0.113.200:8080\nlogin: sipxdp-a\npassword: passA123456\n",
        )
        .unwrap();
        assert_eq!(
            (m.login.as_str(), m.password.as_str()),
            ("sipxdp-a", "passA123456")
        );
        let m = parse_credentials("# c\nlogin: 'it''s'\npassword: \"p:w\"\n").unwrap();
        assert_eq!((m.login.as_str(), m.password.as_str()), ("it's", "p:w"));
        assert!(parse_credentials("url: x\nlogin: a\n").is_err());
        assert!(parse_credentials("garbage\n").is_err());
    }

    pub(in crate::crowdsec) fn section_with_key_file(key_file: &Path) -> CrowdsecSection {
        CrowdsecSection {
            enabled: true,
            api_key_file: Some(key_file.to_owned()),
            ..CrowdsecSection::default()
        }
    }

    pub(in crate::crowdsec) fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn secrets_readable_by_group_or_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bouncer.key");
        std::fs::write(&key, "k0123456789\n").unwrap();
        let creds = dir.path().join("machine.yaml");
        std::fs::write(&creds, "login: m\npassword: p\n").unwrap();
        let config = dir.path().join("sip-xdp.toml");
        std::fs::write(&config, "").unwrap();

        for mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(&key, mode);
            let err = ClientConfig::from_settings(&section_with_key_file(&key), Some(&config))
                .unwrap_err()
                .to_string();
            for needle in [
                "crowdsec.api_key_file",
                &key.display().to_string(),
                &format!("mode {mode:04o}"),
                &format!("chmod 600 {}", key.display()),
            ] {
                assert!(err.contains(needle), "{mode:o}: {err}");
            }
        }
        chmod(&key, 0o600);
        chmod(&config, 0o644);
        let ok = ClientConfig::from_settings(&section_with_key_file(&key), Some(&config)).unwrap();
        assert!(
            ok.is_some(),
            "a 0600 key file with no inline secret is fine"
        );

        // The machine credentials file.
        let mut section = section_with_key_file(&key);
        section.signals.enabled = true;
        section.signals.credentials_file = Some(creds.clone());
        chmod(&creds, 0o644);
        let err = ClientConfig::from_settings(&section, Some(&config))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("crowdsec.signals.credentials_file")
                && err.contains(&format!("chmod 600 {}", creds.display())),
            "{err}"
        );
        chmod(&creds, 0o600);
        assert!(ClientConfig::from_settings(&section, Some(&config)).is_ok());

        // Inline secrets in a config file others can read.
        let inline_key = CrowdsecSection {
            enabled: true,
            api_key: Some("k0123456789".to_owned()),
            ..CrowdsecSection::default()
        };
        let mut inline_password = section_with_key_file(&key);
        inline_password.signals.enabled = true;
        inline_password.signals.machine_id = Some("m".to_owned());
        inline_password.signals.password = Some("p".to_owned());
        for (section, key_name, fix) in [
            (&inline_key, "crowdsec.api_key", "crowdsec.api_key_file"),
            (
                &inline_password,
                "crowdsec.signals.password",
                "crowdsec.signals.credentials_file",
            ),
        ] {
            chmod(&config, 0o644);
            let err = ClientConfig::from_settings(section, Some(&config))
                .unwrap_err()
                .to_string();
            for needle in [
                key_name,
                &config.display().to_string(),
                &format!("chmod 600 {}", config.display()),
                fix,
            ] {
                assert!(err.contains(needle), "{key_name}: {err}");
            }
            chmod(&config, 0o600);
            assert!(
                ClientConfig::from_settings(section, Some(&config)).is_ok(),
                "{key_name} inline in a 0600 config"
            );
        }
    }

    #[test]
    fn an_inline_secret_in_a_readable_config_is_refused_even_with_crowdsec_off() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sip-xdp.toml");
        std::fs::write(&config, "").unwrap();
        chmod(&config, 0o644);
        let section = CrowdsecSection {
            api_key: Some("k0123456789".to_owned()),
            ..CrowdsecSection::default()
        };
        let err = ClientConfig::from_settings(&section, Some(&config))
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
        chmod(&config, 0o600);
        assert!(
            ClientConfig::from_settings(&section, Some(&config))
                .unwrap()
                .is_none()
        );
    }
}
