//! Loads the embedded XDP object into the kernel, pins its maps and links on bpffs and attaches
//! it to interfaces.
//!
//! - `load.rs`: the object on its own ([`load`]), or against the pinned maps ([`load_pinned`]).
//! - `pins.rs`: the pin directory, the maps pinned there with their layouts, its locks.
//! - `migrate.rs`: maps an older build pinned, checked and carried over.
//! - `attach.rs`: XDP links to interfaces, owned by this process or pinned, and detaching.
//! - `btf.rs`: the object's BTF mended so the kernel takes it (the scan program needs it).
//! - `egress.rs`: the TC egress program on the same interfaces (TCX link or clsact filter).
//! - `links.rs`: what applies to the links of both: detaching an interface, link ids.
//! - `sys.rs`: the raw bpf(2) calls aya does not make ([`sys::bpf_syscall`], public for xtask).
mod attach;
mod btf;
mod egress;
mod links;
mod load;
mod migrate;
mod pins;
pub mod sys;

pub use attach::{AttachError, AttachMode, AttachOutcome, attach, attach_pinned, if_index};
pub use egress::{attach_egress_pinned, detach_egress};
pub use links::{attachment_ids, detach_pinned};
pub use load::{
    EBPF_OBJECT, LoadOptions, LoaderError, MAX_SOURCES_LIMIT, PinnedLoad, PinnedLoadError,
    egress_program, load, load_pinned, load_replay, scan_program, xdp_program,
};
pub use migrate::Migration;
pub use pins::{
    BPFFS_MOUNT, CONFIG_LOCK_DIR, CONFIG_LOCK_TIMEOUT, DEFAULT_PIN_DIR, EgressLink, Hook,
    PINNED_MAPS, PinDir, PinError, PinLock, PinnedAttachment, lock_holder, reachable_pin_dir,
};
pub use sys::{bpf_fd, bpf_syscall};

use pins::{PINNED, io_err};
