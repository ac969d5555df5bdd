//! The raw bpf(2) calls aya does not make for us (its link types keep their descriptor private).
use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// The bpf(2) syscall: `cmd` with `attr` (passed with its size); returns what the kernel
/// returned (a new descriptor for the commands that create one).
///
/// # Safety
///
/// `attr` must be a `#[repr(C)]` prefix of `union bpf_attr` in the form `cmd` reads (the kernel
/// takes the bytes past its size as zero), and every pointer in it must be valid for what the
/// kernel does with it for `cmd`: reads, and for some commands writes of the sizes given.
pub unsafe fn bpf_syscall<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr`'s form and pointers; its size goes alongside.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// [`bpf_syscall`] for the commands that return a new descriptor (BPF_PROG_LOAD,
/// BPF_LINK_CREATE, BPF_OBJ_GET), owned by the caller.
///
/// # Safety
///
/// As for [`bpf_syscall`]; and `cmd` must be one that returns a new descriptor.
pub unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: as the caller vouches.
    let fd = unsafe { bpf_syscall(cmd, attr) }?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// BPF_OBJ_GET: opens a pinned object.
pub(super) fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    const BPF_OBJ_GET: libc::c_long = 7;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // obj_pin/obj_get form: { __aligned_u64 pathname; __u32 bpf_fd; __u32 file_flags; }
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    // SAFETY: a zero-padded bpf_attr whose one pointer is a NUL-terminated path that outlives
    // the call; BPF_OBJ_GET returns a new descriptor.
    unsafe { bpf_fd(BPF_OBJ_GET, &mut attr) }
}

/// BPF_LINK_DETACH: ends the attachment now, whoever else holds the link.
pub(super) fn link_detach(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    const BPF_LINK_DETACH: libc::c_long = 34;
    // union bpf_attr, link_detach form: { __u32 link_fd; }; the rest must be zero.
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u32 as u64;
    // SAFETY: a zero-padded bpf_attr without pointers.
    unsafe { bpf_syscall(BPF_LINK_DETACH, &mut attr) }.map(drop)
}
