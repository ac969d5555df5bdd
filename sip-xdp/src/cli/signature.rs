//! `sip-xdp signature list|add|del`.
use anyhow::Result;

use super::{Cli, SignatureAction, load_settings, print, require_privileges};
use crate::{control::Control, loader::PinDir};

pub(super) fn signature(cli: &Cli, action: &SignatureAction) -> Result<()> {
    let control = Control::new(PinDir::new(&cli.pin_dir), cli.state_dir.clone());
    match action {
        SignatureAction::List {
            kind,
            output,
            config,
        } => {
            let (settings, _) = load_settings(config.config.as_deref())?;
            let mut list = control.signatures(&settings)?;
            if let Some(kind) = kind {
                let name = sip_xdp_common::SignatureKind::from(*kind).name();
                list.signatures.retain(|s| s.kind == name);
                list.removed_from_config.retain(|s| s.kind == name);
            }
            print::signatures(&list, *output)?;
        }
        SignatureAction::Add {
            kind,
            tokens,
            config,
        } => {
            require_privileges("signature add")?;
            let (settings, _) = load_settings(config.config.as_deref())?;
            let report = control.signature_add(&settings, (*kind).into(), tokens)?;
            print::signature_report(&report);
        }
        SignatureAction::Del {
            kind,
            tokens,
            config,
        } => {
            require_privileges("signature del")?;
            let (settings, _) = load_settings(config.config.as_deref())?;
            let report = control.signature_del(&settings, (*kind).into(), tokens)?;
            print::signature_report(&report);
            report.fail_if_missing()?;
        }
    }
    Ok(())
}
