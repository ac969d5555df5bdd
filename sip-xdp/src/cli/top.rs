//! `sip-xdp top`.
use anyhow::{Result, bail};

use super::{Cli, TopArgs};

pub(super) fn top(_cli: &Cli, _args: &TopArgs) -> Result<()> {
    bail!("not yet")
}
