//! The `sip-xdp` command line: clap's types in [`args`], one small module per command that
//! turns them into the library's plain options, calls the library, and prints what it reports.
//! Nothing in the library imports from here.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, bail};

use crate::config::{DEFAULT_CONFIG_PATH, Settings};

pub mod args;
mod attach;
mod ban;
mod check;
mod config;
mod detach;
mod explain;
mod lists;
mod print;
mod replay;
mod run;
mod signature;
mod status;
mod top;
mod trace;

pub use args::*;

/// Runs the command the operator typed; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_settled();
    if !matches!(cli.command, Command::Run(_)) {
        // A one-shot command piped into `head` ends quietly, as a Unix tool does, rather than
        // panicking on its next print. Not for the daemon: its sockets need EPIPE as an error.
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match &cli.command {
        Command::Run(args) => run::run(&cli, args),
        Command::Attach(args) => attach::attach(&cli, args),
        Command::Detach(args) => detach::detach(&cli, args),
        Command::Status(args) => status::status(&cli, args),
        Command::Allow(action) => lists::list(&cli, crate::control::ListKind::Allow, action),
        Command::Deny(action) => lists::list(&cli, crate::control::ListKind::Deny, action),
        Command::Protect(action) => lists::list(&cli, crate::control::ListKind::Protect, action),
        Command::Ban(action) => ban::ban(&cli, action),
        Command::Signature(action) => signature::signature(&cli, action),
        Command::Config(action) => config::config(action),
        Command::Check => check::check(),
        Command::Replay(args) => replay::replay(args),
        Command::Trace(args) => trace::trace(&cli, args),
        Command::Explain(args) => explain::explain(&cli, args),
        Command::Top(args) => top::top(&cli, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<NotEnforced>().is_some() => {
            eprintln!("sip-xdp: {e:#}");
            ExitCode::from(NotEnforced::EXIT_CODE)
        }
        Err(e) => {
            // One line, cause chain included: what failed and why, ending in the fix.
            eprintln!("sip-xdp: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ban add --require-enforced` found nothing attached: the ban is saved but not in force.
/// `main` exits with [`NotEnforced::EXIT_CODE`] for it, so callers can tell it from a failure.
#[derive(Debug)]
pub struct NotEnforced(pub String);

impl NotEnforced {
    pub const EXIT_CODE: u8 = 3;
}

impl std::fmt::Display for NotEnforced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotEnforced {}

/// Loads the config the operator means: the given file, else the default path if present,
/// else the built-in defaults.
pub fn load_settings(path: Option<&Path>) -> Result<(Settings, Option<PathBuf>)> {
    match path {
        Some(path) => Ok((Settings::load(path)?, Some(path.to_owned()))),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            let path = PathBuf::from(DEFAULT_CONFIG_PATH);
            Ok((Settings::load(&path)?, Some(path)))
        }
        None => Ok((Settings::default(), None)),
    }
}

/// Fails early, with the fix, when the process cannot use BPF.
pub fn require_privileges(command: &str) -> Result<()> {
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        return Ok(());
    }
    bail!("`sip-xdp {command}` needs root (or CAP_BPF and CAP_NET_ADMIN); run it with sudo")
}
