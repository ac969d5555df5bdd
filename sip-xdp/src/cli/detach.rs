//! `sip-xdp detach`: end attachments; with `--purge`, drop the pinned maps too.
use anyhow::{Result, bail};

use super::{Cli, DetachArgs, require_privileges};
use crate::{control::Control, loader, loader::PinDir, maps::SipMaps};

pub(super) fn detach(cli: &Cli, args: &DetachArgs) -> Result<()> {
    require_privileges("detach")?;
    let pins = PinDir::new(&cli.pin_dir);
    let control = Control::new(pins.clone(), cli.state_dir.clone());
    let ifaces: Vec<String> = if args.all {
        let mut ifaces: Vec<String> = pins.attachments()?.into_iter().map(|a| a.iface).collect();
        ifaces.dedup();
        ifaces
    } else {
        args.ifaces.clone()
    };
    // Save automatic bans first: after a purge, or a reboot, they are restored from the file.
    if pins.has_maps() {
        let maps = SipMaps::open_pinned(&pins)?;
        control.save_auto_bans(&maps)?;
    }
    let mut missing = Vec::new();
    for iface in &ifaces {
        if loader::detach_pinned(&pins, iface)? {
            println!("{iface}: detached");
        } else {
            missing.push(iface.as_str());
        }
    }
    if args.purge {
        let removed = pins.remove_maps()?;
        pins.remove_if_empty();
        println!(
            "removed {} pinned maps from {}; lists and manual bans remain in {}",
            removed.len(),
            pins.path().display(),
            cli.state_dir.display()
        );
    } else if ifaces.is_empty() {
        println!("sip-xdp is not attached to any interface");
    }
    if !missing.is_empty() {
        bail!(
            "sip-xdp is not attached to {} (see `sip-xdp status`)",
            missing.join(", ")
        );
    }
    Ok(())
}
