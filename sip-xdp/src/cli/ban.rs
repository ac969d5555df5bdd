//! `sip-xdp ban add|del|list`.
use anyhow::Result;

use super::{BanAction, Cli, NotEnforced, lift_for, load_settings, print, require_privileges};
use crate::{control::Control, loader::PinDir};

pub(super) fn ban(cli: &Cli, action: &BanAction) -> Result<()> {
    let control = Control::new(PinDir::new(&cli.pin_dir), cli.state_dir.clone());
    match action {
        BanAction::Add {
            nets,
            duration,
            reason,
            origin,
            require_enforced,
        } => {
            require_privileges("ban")?;
            let duration = match duration {
                Some(d) => *d,
                None => load_settings(None)?.0.manual_ban_default(),
            };
            let report = control.ban_add(nets, *origin, duration, reason.clone())?;
            print::edit_report(&report);
            if *require_enforced && !report.enforced {
                let list: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
                return Err(NotEnforced(format!(
                    "ban of {} saved to {} but NOT in force: sip-xdp is not attached to any \
                     interface in this network namespace (pin directory {}); run `sip-xdp attach \
                     --iface IFACE` or start sip-xdp.service, and the ban applies then",
                    list.join(", "),
                    cli.state_dir.display(),
                    cli.pin_dir.display()
                ))
                .into());
            }
        }
        BanAction::Del {
            nets,
            origin,
            missing_ok,
        } => {
            let lift = lift_for(origin);
            let every_prefix = nets.is_empty();
            if every_prefix && (!lift.prefix || lift.rate || !lift.origins.is_empty()) {
                anyhow::bail!(
                    "name the addresses or CIDRs whose bans to lift (`sip-xdp ban list` shows \
                     them); only `--origin prefix` alone lifts every prefix ban without one"
                );
            }
            require_privileges("ban")?;
            let report = if every_prefix {
                control.lift_every_prefix_ban()?
            } else {
                control.ban_del(nets, &lift)?
            };
            print::edit_report(&report);
            if !missing_ok && !every_prefix {
                report.fail_if_missing("ban")?;
            }
        }
        BanAction::List(out) => {
            let bans = control.ban_entries()?;
            print::bans(&bans, out.output)?;
        }
    }
    Ok(())
}
