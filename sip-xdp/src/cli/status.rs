//! `sip-xdp status`.
use anyhow::Result;

use super::{Cli, StatusArgs, print};
use crate::status;

pub(super) fn status(cli: &Cli, args: &StatusArgs) -> Result<()> {
    let status = status::gather(&cli.pin_dir, &cli.state_dir)?;
    print::status_text(&status, args.output)?;
    if args.require_attached {
        status::require_attached(&status)?;
    }
    Ok(())
}
