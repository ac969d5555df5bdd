//! sip-xdp user space: loading, attaching and pinning the XDP program, typed access to its
//! maps, the config file, the state file, ban-event logging, metrics, the daemon and the CLI.
pub mod cli;
pub mod config;
pub mod control;
pub mod crowdsec;
pub mod daemon;
pub mod events;
pub mod explain;
pub mod feeds;
pub mod instance;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod namespaces;
pub mod reference;
pub mod replay;
pub mod state;
pub mod status;
pub mod time;
pub mod top;
pub mod trace;

pub use sip_xdp_common as common;
