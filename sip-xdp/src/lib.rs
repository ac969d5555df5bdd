//! sip-xdp user space: loading and attaching the XDP program, typed access to its maps.
pub mod config;
pub mod loader;
pub mod maps;
pub mod reference;
pub mod time;

pub use sip_xdp_common as common;
