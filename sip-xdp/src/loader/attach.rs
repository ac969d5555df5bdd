//! Attaching the loaded program to an interface: directly (a link this process owns) or
//! through a link pinned in the [`PinDir`], which outlives the process.
use std::{ffi::CString, os::fd::AsFd as _, path::PathBuf};

use aya::{
    Ebpf,
    programs::{
        ProgramError,
        links::{FdLink, LinkError, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use thiserror::Error;

use super::{
    Hook, LoaderError, PinDir, PinError, PinnedAttachment, io_err,
    sys::{link_detach, obj_get},
    xdp_program,
};

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
    pub egress: Option<EgressLink>,
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

/// How the egress program went on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressLink {
    /// A TCX link (Linux 6.6 and later), pinned.
    Tcx,
    /// A netlink filter on the clsact qdisc (older kernels); it lasts until removed.
    Netlink,
}

impl EgressLink {
    pub const fn name(self) -> &'static str {
        match self {
            EgressLink::Tcx => "tcx",
            EgressLink::Netlink => "netlink",
        }
    }
}

fn egress_error(iface: &str) -> impl FnOnce(ProgramError) -> AttachError {
    let iface = iface.to_owned();
    move |source| AttachError::Egress { iface, source }
}

/// Puts the egress program on `iface`'s transmit path, so that it stays there after this
/// process exits: a TCX link pinned in `pins` where the kernel has TCX (replaced atomically
/// when one is there), else a netlink filter on the clsact qdisc (a previous one is replaced).
pub fn attach_egress_pinned(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    iface: &str,
) -> Result<EgressLink, AttachError> {
    use aya::programs::{
        LinkOrder, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    };
    if_index(iface)?;
    // aya attaches by TCX from 6.6 on; the same test decides how the link is kept.
    let tcx = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    let program = super::egress_program(ebpf)?;
    let link_path = pins.link_path(Hook::TcEgress, iface, AttachMode::Auto);
    if tcx && link_path.exists() {
        let pinned = PinnedLink::from_pin(&link_path).map_err(|source| AttachError::StaleLink {
            path: link_path.clone(),
            source,
        })?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|source| {
            AttachError::StaleLink {
                path: link_path.clone(),
                source,
            }
        })?;
        let id = program.attach_to_link(link).map_err(egress_error(iface))?;
        let _ = program.take_link(id);
        return Ok(EgressLink::Tcx);
    }
    if tcx {
        let id = program
            .attach_with_options(
                iface,
                TcAttachType::Egress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(egress_error(iface))?;
        let link = program.take_link(id).map_err(egress_error(iface))?;
        let fd_link = FdLink::try_from(link).map_err(|_| AttachError::NoLinkSupport {
            iface: iface.to_owned(),
        })?;
        fd_link
            .pin(&link_path)
            .map_err(|source| AttachError::PinLink {
                path: link_path.clone(),
                source,
            })?;
        return Ok(EgressLink::Tcx);
    }
    // No TCX: a clsact filter. An existing clsact qdisc is fine. A previous sip-xdp filter is
    // removed first (the XDP filter is not touched: only answers sent in that moment go unread).
    if let Err(e) = tc::qdisc_add_clsact(iface)
        && !matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST))
    {
        return Err(egress_error(iface)(ProgramError::from(e)));
    }
    let _ = tc::qdisc_detach_program(
        iface,
        TcAttachType::Egress,
        sip_xdp_common::EGRESS_PROGRAM_NAME,
    );
    let id = program
        .attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .map_err(egress_error(iface))?;
    let link = program.take_link(id).map_err(egress_error(iface))?;
    // Dropping the link would remove the filter: it is meant to outlive this process.
    std::mem::forget(link);
    let path = pins.netlink_egress_path(iface);
    let _ = std::fs::remove_file(&path);
    program
        .pin(&path)
        .map_err(|source| AttachError::PinLink { path, source })?;
    Ok(EgressLink::Netlink)
}

/// Detaches the egress program from `iface`: its TCX link, or its netlink filters. Returns false
/// when none was there.
pub fn detach_egress(pins: &PinDir, iface: &str) -> Result<bool, AttachError> {
    use aya::programs::{TcAttachType, tc};
    let mut detached = false;
    if let Some(existing) = pins.egress_attachment(iface).map_err(AttachError::Pin)? {
        if let Ok(fd) = obj_get(&existing.path) {
            // A link detaches; the netlink case's pin is the program, which has no links.
            if link_detach(fd.as_fd()).is_ok() {
                detached = true;
            }
        }
        std::fs::remove_file(&existing.path)
            .map_err(|e| AttachError::Pin(io_err("cannot remove", &existing.path)(e)))?;
    }
    if if_index(iface).is_ok()
        && tc::qdisc_detach_program(
            iface,
            TcAttachType::Egress,
            sip_xdp_common::EGRESS_PROGRAM_NAME,
        )
        .is_ok()
    {
        detached = true;
    }
    Ok(detached)
}

/// Detaches sip-xdp from `iface`: the link is detached in the kernel (even if some process
/// still holds it open) and its pin removed, and the egress program with it. Returns false when
/// it was not attached.
pub fn detach_pinned(pins: &PinDir, iface: &str) -> Result<bool, AttachError> {
    let egress = detach_egress(pins, iface)?;
    let Some(existing) = pins.attachment(iface).map_err(AttachError::Pin)? else {
        return Ok(egress);
    };
    if let Ok(fd) = obj_get(&existing.path) {
        link_detach(fd.as_fd()).map_err(|source| AttachError::Detach {
            iface: iface.to_owned(),
            source,
        })?;
    }
    std::fs::remove_file(&existing.path)
        .map_err(|e| AttachError::Pin(io_err("cannot remove", &existing.path)(e)))?;
    Ok(true)
}

/// Program id and link id of a pinned attachment, for status output. A netlink filter has no
/// link: its pin is the program's, and the link id is 0.
pub fn attachment_ids(attachment: &PinnedAttachment) -> Option<(u32, u32)> {
    if attachment.hook == Hook::TcEgress && egress_link_of(attachment) == EgressLink::Netlink {
        let info = aya::programs::ProgramInfo::from_pin(&attachment.path).ok()?;
        return Some((info.id(), 0));
    }
    let pinned = PinnedLink::from_pin(&attachment.path).ok()?;
    let info = FdLink::from(pinned).info().ok()?;
    Some((info.program_id(), info.id()))
}

/// How a pinned egress attachment is kept, from its pin's name.
pub fn egress_link_of(attachment: &PinnedAttachment) -> EgressLink {
    let netlink = attachment
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("netlink_"));
    if netlink {
        EgressLink::Netlink
    } else {
        EgressLink::Tcx
    }
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
