//! `sip-xdp attach`: load, pin and attach, then exit; the filter stays.
use anyhow::Result;

use super::{AttachArgs, Cli, load_settings, require_privileges};
use crate::{control::Control, loader::PinDir};

pub(super) fn attach(cli: &Cli, args: &AttachArgs) -> Result<()> {
    require_privileges("attach")?;
    let (settings, _) = load_settings(args.config.as_deref())?;
    let pins = PinDir::new(&cli.pin_dir);
    let control = Control::new(pins.clone(), cli.state_dir.clone());
    let report = control.attach(&settings, &args.ifaces, args.mode)?;
    for warning in &report.warnings {
        eprintln!("sip-xdp: warning: {warning}");
    }
    for (iface, outcome) in report.outcomes {
        if outcome.fell_back {
            eprintln!(
                "warning: {iface}: the driver refused native XDP; attached in generic (skb) mode, \
                 which filters after the kernel allocates the packet (slower under floods)"
            );
        }
        let verb = if outcome.replaced {
            "updated in place (counters, bans and lists kept)"
        } else {
            "attached"
        };
        let answers = match outcome.egress {
            Some(link) => format!("; answers read at TC egress ({})", link.name()),
            None => "; answers off ([answers] enabled = false)".to_owned(),
        };
        println!(
            "{iface}: {verb}, {} mode{answers}; pinned under {}",
            outcome.mode,
            pins.path().display()
        );
    }
    Ok(())
}
