//! `sip-xdp run`: the daemon, in the foreground.
use anyhow::Result;

use super::{Cli, RunArgs, load_settings, require_privileges};
use crate::daemon::{self, RunOptions};

pub(super) fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    require_privileges("run")?;
    let (settings, config_path) = load_settings(args.attach.config.as_deref())?;
    daemon::run(RunOptions {
        pin_dir: cli.pin_dir.clone(),
        state_dir: cli.state_dir.clone(),
        ifaces: args.attach.ifaces.clone(),
        mode: args.attach.mode,
        settings,
        config_path,
        log_format: cli.log_format.map(Into::into),
        keep_attached: args.keep_attached,
        no_metrics: args.no_metrics,
        metrics_listen: args.metrics_listen,
    })
}
