//! `sip-xdp`: command-line entry point.
use std::process::ExitCode;

use clap::Parser as _;
use sip_xdp::{
    cli::{self, Cli, Command},
    control::ListKind,
    daemon, status,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => daemon::run(&cli, args),
        Command::Attach(args) => cli::attach(&cli, args),
        Command::Detach(args) => cli::detach(&cli, args),
        Command::Status(args) => status::print_status(&cli, args),
        Command::Allow(action) => cli::list(&cli, ListKind::Allow, action),
        Command::Deny(action) => cli::list(&cli, ListKind::Deny, action),
        Command::Protect(action) => cli::list(&cli, ListKind::Protect, action),
        Command::Ban(action) => cli::ban(&cli, action),
        Command::Config(action) => cli::config(action),
        Command::Check => cli::check(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, cause chain included: what failed and why, ending in the fix.
            eprintln!("sip-xdp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
