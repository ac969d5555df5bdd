//! What applies to an interface's sip-xdp links of every hook: detaching them all, and the ids
//! `status` shows.
use std::os::fd::AsFd as _;

use aya::programs::links::{FdLink, PinnedLink};

use super::{
    AttachError, EgressLink, Hook, PinDir, PinnedAttachment, detach_egress, io_err,
    sys::{link_detach, obj_get},
};

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
    if attachment.hook == Hook::TcEgress && attachment.egress_link() == EgressLink::Netlink {
        let info = aya::programs::ProgramInfo::from_pin(&attachment.path).ok()?;
        return Some((info.id(), 0));
    }
    let pinned = PinnedLink::from_pin(&attachment.path).ok()?;
    let info = FdLink::from(pinned).info().ok()?;
    Some((info.program_id(), info.id()))
}
