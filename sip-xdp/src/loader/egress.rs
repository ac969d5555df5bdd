//! The TC egress program (the server's answers) on an interface's transmit path: a TCX link
//! pinned in the [`PinDir`] where the kernel has TCX (6.6 and later), a clsact filter (netlink)
//! before, whose program is pinned in its place so that `status` can name it.
use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    programs::{
        ProgramError,
        links::{FdLink, PinnedLink},
    },
};

use super::{
    AttachError, AttachMode, EgressLink, Hook, PinDir, if_index, io_err,
    sys::{link_detach, obj_get},
};

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
