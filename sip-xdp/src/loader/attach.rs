//! Attaching the loaded program to an interface: directly (a link this process owns) or
//! through a link pinned in the [`PinDir`], which outlives the process.
use std::{ffi::CString, path::PathBuf};

use aya::{
    Ebpf,
    programs::{
        ProgramError,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use thiserror::Error;

use super::{Hook, LoaderError, PinDir, PinError, xdp_program};

/// How to attach: native (driver) XDP, generic (skb) XDP, or native falling back to generic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    #[default]
    Auto,
    Native,
    Skb,
}

#[derive(Debug, Error)]
pub enum AttachError {
    #[error("network interface {0} does not exist in this network namespace (see `ip link`)")]
    NoSuchInterface(String),
    #[error(
        "{iface} already has an XDP program that this sip-xdp did not attach (another tool, or \
         a sip-xdp with another --pin-dir); see `ip link show dev {iface}`, and remove it with \
         `ip link set dev {iface} xdp off` if it is not needed"
    )]
    Busy { iface: String },
    #[error("cannot attach XDP to {iface} in {mode} mode: {source}{hint}", hint = mode_hint(*.mode))]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error(
        "sip-xdp is already attached to {iface} in {existing} mode; run `sip-xdp detach --iface \
         {iface}` first to switch to {requested}"
    )]
    ModeMismatch {
        iface: String,
        existing: AttachMode,
        requested: AttachMode,
    },
    #[error(
        "the pinned link {path} is not a usable XDP link ({source}); remove it with `rm {path}` \
         and attach again"
    )]
    StaleLink {
        path: PathBuf,
        #[source]
        source: LinkError,
    },
    #[error(
        "the kernel attached XDP to {iface} without a BPF link, which cannot be pinned; sip-xdp \
         needs Linux 5.9 or newer for daemonless operation"
    )]
    NoLinkSupport { iface: String },
    #[error("cannot pin the XDP link at {path}: {source}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("cannot detach sip-xdp from {iface}: {source}")]
    Detach {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot attach the TC egress program (the server's answers) to {iface}: {source} (the \
         clsact qdisc needs the sch_ingress and cls_bpf modules before Linux 6.6: `modprobe -a \
         sch_ingress cls_bpf`); `[answers] enabled = false` runs the XDP filter without it"
    )]
    Egress { iface: String, source: ProgramError },
    #[error(transparent)]
    Pin(PinError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

fn mode_hint(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Native => {
            " (the driver may not support native XDP; try --mode skb or --mode auto)"
        }
        _ => "",
    }
}

fn is_busy(error: &ProgramError) -> bool {
    matches!(error, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EBUSY))
}

/// Attaches the loaded program to `iface` (a link owned by `ebpf`). Returns the mode that took
/// effect: Auto tries native first and falls back to generic (skb) XDP.
pub fn attach(
    ebpf: &mut Ebpf,
    iface: &str,
    mode: AttachMode,
) -> Result<(XdpLinkId, AttachMode), AttachError> {
    use aya::programs::XdpMode;
    // Resolved in the caller's network namespace (unlike /sys/class/net, which shows the
    // namespace sysfs was mounted in).
    if_index(iface)?;
    let program = xdp_program(ebpf)?;
    let attached = match mode {
        AttachMode::Native => program.attach(iface, XdpMode::Driver).map(|id| (id, mode)),
        AttachMode::Skb => program.attach(iface, XdpMode::Skb).map(|id| (id, mode)),
        AttachMode::Auto => match program.attach(iface, XdpMode::Driver) {
            Ok(id) => Ok((id, AttachMode::Native)),
            // Another program on the interface refuses both modes alike: say so, not "skb failed".
            Err(e) if is_busy(&e) => Err(e),
            Err(_) => program
                .attach(iface, XdpMode::Skb)
                .map(|id| (id, AttachMode::Skb)),
        },
    };
    attached.map_err(|source| {
        if is_busy(&source) {
            AttachError::Busy {
                iface: iface.to_owned(),
            }
        } else {
            AttachError::Attach {
                iface: iface.to_owned(),
                mode,
                source,
            }
        }
    })
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Self> {
        match name {
            "native" => Some(AttachMode::Native),
            "skb" => Some(AttachMode::Skb),
            "auto" => Some(AttachMode::Auto),
            _ => None,
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttachMode::from_name(s)
            .ok_or_else(|| format!("unknown XDP mode {s:?}: use auto, native or skb"))
    }
}

/// What `attach_pinned` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachOutcome {
    /// The mode in effect (never Auto).
    pub mode: AttachMode,
    /// True when the interface already had a sip-xdp link whose program was replaced in place
    /// (no moment without filtering); false for a new attachment.
    pub replaced: bool,
    /// True when Auto fell back to generic (skb) XDP because the driver refused native mode.
    pub fell_back: bool,
    /// How the egress program went on, when it did (the caller attaches it).
    pub egress: Option<super::EgressLink>,
}

/// Attaches `ebpf`'s program to `iface` through a link pinned in `pins`, so it stays attached
/// after this process exits. An interface that already has a sip-xdp link gets the new program
/// atomically (`bpf_link_update`).
pub fn attach_pinned(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    iface: &str,
    mode: AttachMode,
) -> Result<AttachOutcome, AttachError> {
    if_index(iface)?;
    if let Some(existing) = pins.attachment(iface).map_err(AttachError::Pin)? {
        if mode != AttachMode::Auto && mode != existing.mode {
            return Err(AttachError::ModeMismatch {
                iface: iface.to_owned(),
                existing: existing.mode,
                requested: mode,
            });
        }
        let pinned =
            PinnedLink::from_pin(&existing.path).map_err(|source| AttachError::StaleLink {
                path: existing.path.clone(),
                source,
            })?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|source| AttachError::StaleLink {
                path: existing.path.clone(),
                source,
            })?;
        let program = xdp_program(ebpf)?;
        let id = program
            .attach_to_link(link)
            .map_err(|source| AttachError::Attach {
                iface: iface.to_owned(),
                mode: existing.mode,
                source,
            })?;
        // The pin keeps the link; this process's handle goes when the program is dropped.
        let _ = program.take_link(id);
        return Ok(AttachOutcome {
            mode: existing.mode,
            replaced: true,
            fell_back: false,
            egress: None,
        });
    }
    let (id, effective) = attach(ebpf, iface, mode)?;
    let program = xdp_program(ebpf)?;
    let link = program
        .take_link(id)
        .map_err(|source| AttachError::Attach {
            iface: iface.to_owned(),
            mode,
            source,
        })?;
    let fd_link = FdLink::try_from(link).map_err(|_| AttachError::NoLinkSupport {
        iface: iface.to_owned(),
    })?;
    let path = pins.link_path(Hook::XdpIngress, iface, effective);
    fd_link.pin(&path).map_err(|source| AttachError::PinLink {
        path: path.clone(),
        source,
    })?;
    Ok(AttachOutcome {
        mode: effective,
        replaced: false,
        fell_back: mode == AttachMode::Auto && effective == AttachMode::Skb,
        egress: None,
    })
}

/// The index of `iface` in the caller's network namespace (unlike /sys/class/net, which shows
/// the namespace sysfs was mounted in).
pub fn if_index(iface: &str) -> Result<u32, AttachError> {
    let name = CString::new(iface).map_err(|_| AttachError::NoSuchInterface(iface.to_owned()))?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(AttachError::NoSuchInterface(iface.to_owned())),
        index => Ok(index),
    }
}
