//! `sip-xdp allow|deny|protect add|del|list`.
use anyhow::Result;

use super::{Cli, ListAction, print, require_privileges};
use crate::{
    control::{Control, ListKind},
    loader::PinDir,
};

pub(super) fn list(cli: &Cli, kind: ListKind, action: &ListAction) -> Result<()> {
    let control = Control::new(PinDir::new(&cli.pin_dir), cli.state_dir.clone());
    match action {
        ListAction::Add { nets, comment } => {
            require_privileges(kind.command())?;
            let report = control.list_add(kind, nets, comment.clone())?;
            print::edit_report(&report);
        }
        ListAction::Del { nets } => {
            require_privileges(kind.command())?;
            let report = control.list_del(kind, nets)?;
            print::edit_report(&report);
            report.fail_if_missing(kind.command())?;
        }
        ListAction::List(out) => {
            let entries = control.list_entries(kind)?;
            print::list(kind, &entries, out.output)?;
        }
    }
    Ok(())
}
