//! sip-xdp user space: loading and attaching the XDP program, typed access to its maps, ban events.
pub mod events;
pub mod loader;
pub mod maps;
pub mod reference;
pub mod time;

pub use sip_xdp_common as common;
