//! The raw BPF commands h2h issues itself: loading its two tiny XDP programs (the XDP_DROP
//! floor, the frame sender's redirect), a native XDP link, and the live-frames test run.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result};
use sip_xdp::loader;
use sip_xdp_tests::netns::SERVER_IF;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Command `cmd` through sip-xdp's own bpf(2) wrapper: `attr` (one of the repr(C) attrs
/// above, integers only, no padding) is copied into the zero-padded union bpf_attr it takes;
/// what the kernel writes back into the union is not read.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    let mut words = [0u64; 16];
    const { assert!(size_of::<T>() <= size_of::<[u64; 16]>()) };
    // SAFETY: `attr` is a live T of size_of::<T>() initialized bytes (no padding), which fit in
    // `words` (asserted above); the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(attr).cast::<u8>(),
            words.as_mut_ptr().cast::<u8>(),
            size_of::<T>(),
        );
    }
    // SAFETY: the attrs of this file hold integers and pointers to buffers that outlive the
    // call (the callers keep them alive); `words` is the zero-padded union the kernel reads.
    unsafe { loader::bpf_syscall(cmd, &mut words) }
}

/// `bpf` for a command that returns a new fd.
fn bpf_fd<T>(cmd: libc::c_long, attr: &T, what: &str) -> Result<OwnedFd> {
    let fd = bpf(cmd, attr).with_context(|| what.to_owned())?;
    // SAFETY: a new fd the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per batch of the live-frames test run (the kernel's NAPI_POLL_WEIGHT).
pub(super) const FRAME_BATCH: u32 = 64;
/// Kernel-side chunk of repeats per syscall, so a signal or a slow run never waits long.
const FRAME_CHUNK: u32 = 100_000;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Keeps the struct free of padding bytes (what follows batch_size must be zero).
    pad: u32,
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes).
fn load_xdp(insns: &[u64], name: &str, expected_attach_type: u32, what: &str) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type,
        ..Default::default()
    };
    bpf_fd(BPF_PROG_LOAD, &load, what)
}

/// Loads `r0 = bpf_redirect(ifindex, 0); exit` as an XDP program.
pub(super) fn load_redirect_program(ifindex: u32) -> Result<OwnedFd> {
    const BPF_FUNC_REDIRECT: u64 = 23;
    let insns: [u64; 4] = [
        0xb7 | (0x01 << 8) | (u64::from(ifindex) << 32), // mov64 r1, ifindex
        0xb7 | (0x02 << 8),                              // mov64 r2, 0
        0x85 | (BPF_FUNC_REDIRECT << 32),                // call bpf_redirect
        0x95,                                            // exit
    ];
    load_xdp(
        &insns,
        "h2h_redirect",
        0,
        "loading the frame sender's redirect program (BPF_PROG_LOAD)",
    )
}

/// The redirect program of [`load_redirect_program`], first giving the IPv4 frame a random source
/// in `first..first + count` (the last byte of an address whose last byte is 0), and the IP
/// identification's low byte (0xff in the frame) the same amount less: the two 16-bit words
/// move by opposite amounts, so the header checksum stays valid without being recomputed.
pub(super) fn load_forging_redirect_program(ifindex: u32, first: u8, count: u8) -> Result<OwnedFd> {
    const BPF_FUNC_GET_PRANDOM_U32: u64 = 7;
    const BPF_FUNC_REDIRECT: u64 = 23;
    // Offsets in the frame: Ethernet 14 bytes, then the IPv4 header.
    const ID_LOW: u64 = 14 + 5;
    const SRC_LAST: u64 = 14 + 15;
    const HEADERS: u64 = 14 + 20;
    let insns: [u64; 17] = [
        0xbf | (6 << 8) | (1 << 12),                  // mov64 r6, r1 (ctx)
        0x85 | (BPF_FUNC_GET_PRANDOM_U32 << 32),      // call bpf_get_prandom_u32
        0x97 | (u64::from(count) << 32),              // mod64 r0, count
        0x07 | (u64::from(first) << 32),              // add64 r0, first
        0x61 | (2 << 8) | (6 << 12),                  // ldxw r2, [r6 + 0] (data)
        0x61 | (3 << 8) | (6 << 12) | (4 << 16),      // ldxw r3, [r6 + 4] (data_end)
        0xbf | (4 << 8) | (2 << 12),                  // mov64 r4, r2
        0x07 | (4 << 8) | (HEADERS << 32),            // add64 r4, HEADERS
        0x2d | (4 << 8) | (3 << 12) | (4 << 16),      // if r4 > r3 goto +4
        0x73 | (2 << 8) | (SRC_LAST << 16),           // stxb [r2 + SRC_LAST], r0
        0xb7 | (5 << 8) | (0xff << 32),               // mov64 r5, 0xff
        0x1f | (5 << 8),                              // sub64 r5, r0
        0x73 | (2 << 8) | (5 << 12) | (ID_LOW << 16), // stxb [r2 + ID_LOW], r5
        0xb7 | (1 << 8) | (u64::from(ifindex) << 32), // mov64 r1, ifindex
        0xb7 | (2 << 8),                              // mov64 r2, 0
        0x85 | (BPF_FUNC_REDIRECT << 32),             // call bpf_redirect
        0x95,                                         // exit
    ];
    load_xdp(
        &insns,
        "h2h_forge",
        0,
        "loading the forged-source sender's program (BPF_PROG_LOAD)",
    )
}

/// `r0 = XDP_DROP; exit`, loaded and attached in native mode through a BPF link, on the server
/// interface of the calling thread's namespace. Closing the returned link fd detaches it.
pub(super) fn attach_xdp_drop() -> Result<(OwnedFd, OwnedFd)> {
    const XDP_DROP: u64 = 1;
    // mov64 r0, XDP_DROP (opcode 0xb7, imm in the high 32 bits); exit (0x95).
    let insns: [u64; 2] = [0xb7 | (XDP_DROP << 32), 0x95];
    let prog = load_xdp(
        &insns,
        "h2h_drop",
        BPF_XDP,
        "loading the XDP_DROP program (BPF_PROG_LOAD)",
    )?;
    let ifindex = loader::if_index(SERVER_IF).context("in the server namespace")?;
    let link = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    let link = bpf_fd(
        BPF_LINK_CREATE,
        &link,
        "attaching the XDP_DROP program natively (BPF_LINK_CREATE)",
    )?;
    Ok((prog, link))
}

/// `count` runs of `prog` on `frame` with BPF_PROG_TEST_RUN in live-frames mode, FRAME_CHUNK
/// repeats per call: with a redirect program, `count` frames out of its target interface.
pub(super) fn send_live_frames(prog: &OwnedFd, frame: &[u8], count: u32) -> Result<u64> {
    let mut sent = 0u64;
    while sent < u64::from(count) {
        let repeat = (u64::from(count) - sent).min(u64::from(FRAME_CHUNK)) as u32;
        // data_in points at `frame`, alive across the call.
        let attr = TestRunAttr {
            prog_fd: prog.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: FRAME_BATCH,
            ..Default::default()
        };
        bpf(BPF_PROG_TEST_RUN, &attr)
            .context("BPF_PROG_TEST_RUN in live-frames mode (the frame sender)")?;
        sent += u64::from(repeat);
    }
    Ok(sent)
}
