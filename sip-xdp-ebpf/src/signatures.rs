//! The scan program, `sip_xdp_scan`: signatures in the headers of a request the XDP program
//! passed, and the ban one of them earns.
//!
//! The XDP program tail-calls it (through `SCANNERS`) for requests from sources that are neither
//! allowlisted nor verified, while `flags::SIGNATURES` is on, handing over its outcome in
//! `SCAN_PENDING`. A program of its own because the verifier's budget is per program: the XDP
//! program's walk of every header path already takes half of Linux 6.1's million instructions,
//! and a byte scan inlined behind it would multiply with them.
//!
//! The scan copies the request's first [`MAX_SCAN_BYTES`] into `SCAN_BUFFER` with
//! `bpf_xdp_load_bytes` and walks them with `bpf_loop`, whose callback the verifier checks once
//! rather than once per byte. It cuts the request line and the User-Agent, From and To headers
//! (compact forms too) into tokens ([`is_token_byte`] runs, lowercased) and looks each candidate
//! up in `SIGNATURES`: every token of User-Agent, the display-name tokens and URI user of From
//! and To as fingerprints; the URI user (the token before `@`) of the Request-URI and of To as a
//! trap account, for REGISTER, INVITE and OPTIONS. A token matches whole or not at all.
use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_loop, bpf_xdp_load_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use sip_xdp_common::{
    BAN_CLASS_SIGNATURE, Config, EventCounter, MAX_SCAN_BYTES, MAX_SCAN_LOOKUPS, MAX_SIGNATURE_LEN,
    MethodClass, ScanPending, SignatureKey, SignatureKind, SourceKey, Verdict, event_counter_index,
    is_token_byte, signature_counter,
};

use crate::{
    bans::{BanKey, impose_ban, new_state},
    buckets::NO_LIMIT,
    lists::is_protected,
    maps::{SCAN_PENDING, SIGNATURES, bump},
    parse::SipPacket,
    sources::Known,
};

/// Set in an outcome (a `COUNTERS` index) the XDP program is to hand to the scan program:
/// far above every index, and above the bits the XDP program packs beside the outcome.
pub const SCAN_REQUEST: usize = 1 << 26;

/// Request classes whose headers are scanned: those that open a dialog or stand alone. ACK,
/// BYE, CANCEL, PRACK, UPDATE and INFO belong to dialogs the server accepted.
const SCANNED_CLASSES: u32 = 1 << MethodClass::Register as u32
    | 1 << MethodClass::Invite as u32
    | 1 << MethodClass::Options as u32
    | 1 << MethodClass::Subscribe as u32
    | 1 << MethodClass::Notify as u32
    | 1 << MethodClass::Message as u32
    | 1 << MethodClass::Refer as u32
    | 1 << MethodClass::Publish as u32;
const _: () = assert!(MethodClass::COUNT <= 32);

/// Offers a request the policy passes to the scan program: with signatures on, for a scanned
/// class of a source neither allowlisted nor verified (`known.draw_prefixes`), it writes
/// `SCAN_PENDING` and sets `known.scan`; the XDP program tail-calls the scan program if the
/// prefixes pass it too. Called from the policy's frame, not the XDP program's: that one's stack
/// with the parser's is at the 512-byte cap.
#[inline(always)]
pub fn offer(cfg: &Config, packet: &SipPacket, known: &mut Known, now_ns: u64) {
    let class = packet.class_index as usize;
    if !known.draw_prefixes
        || !cfg.has_flag(sip_xdp_common::flags::SIGNATURES)
        || class >= MethodClass::COUNT
        || (SCANNED_CLASSES >> class) & 1 == 0
    {
        return;
    }
    let Some(pending) = SCAN_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, read by the scan program this packet tail-calls on this CPU.
    // Written field by field, the addresses a word at a time: no copy on the stack.
    unsafe {
        let pending: &mut ScanPending = &mut *pending;
        copy_words(&mut pending.key, &known.key.addr);
        copy_words(&mut pending.src, &packet.src.0);
        pending.now_ns = now_ns;
        pending.payload_offset = packet.payload as u32;
        pending.payload_len = packet.len as u32;
        // A pass: verdict Pass is 0, so the outcome is the class.
        pending.outcome = class as u32;
        pending.class = class as u8;
        pending.port = packet.port;
    }
    known.scan = true;
}

/// The outcome [`offer`] handed over, for the XDP program when its tail call failed.
#[inline(always)]
pub fn pending_outcome() -> usize {
    match SCAN_PENDING.get_ptr(0) {
        // SAFETY: per-CPU slot this packet's `offer` wrote.
        Some(pending) => unsafe { (*pending).outcome as usize },
        None => 0,
    }
}

/// Copies an address a word at a time. Both sides are 8-byte aligned (`SourceKey`, `Addr16`,
/// `ScanPending`).
#[inline(always)]
fn copy_words(to: &mut [u8; 16], from: &[u8; 16]) {
    let (to, from) = (to.as_mut_ptr() as *mut u64, from.as_ptr() as *const u64);
    // SAFETY: 16 bytes each, 8-byte aligned.
    unsafe {
        *to = *from;
        *to.add(1) = *from.add(1);
    }
}

const _: () = assert!(MAX_SCAN_BYTES.is_power_of_two() && MAX_SIGNATURE_LEN == 32);

/// The scan program's working memory: the request's first bytes, copied out of the packet so
/// the scan indexes a map value (one bounds mask) rather than packet memory (a bounds check the
/// verifier must follow per byte), and the key of the token being read.
#[repr(C, align(8))]
pub struct ScanBuffer {
    pub bytes: [u8; MAX_SCAN_BYTES],
    pub tokens: Tokens,
    pub scan: Scan,
}

/// The token being read and the key it is looked up with.
#[repr(C, align(8))]
pub struct Tokens {
    pub key: SignatureKey,
    /// The token being read (its first `MAX_SIGNATURE_LEN` bytes count).
    pub token: [u8; 2 * sip_xdp_common::MAX_SIGNATURE_LEN],
}

#[map(name = "SCAN_BUFFER")]
static SCAN_BUFFER: PerCpuArray<ScanBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Where the scan is in the request.
mod mode {
    /// The request line.
    pub const REQUEST: u8 = 0;
    /// The first byte of a header line.
    pub const LINE_START: u8 = 1;
    /// A header's name, up to its colon.
    pub const NAME: u8 = 2;
    /// The value of a header of interest (`Scan::field`), cut into tokens.
    pub const VALUE: u8 = 3;
    /// The rest of a line nothing is read from.
    pub const SKIP: u8 = 4;
}

/// The headers whose values are read.
mod field {
    pub const NONE: u8 = 0;
    pub const USER_AGENT: u8 = 1;
    pub const FROM: u8 = 2;
    pub const TO: u8 = 3;
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
const fn fold(hash: u64, lower: u8) -> u64 {
    (hash ^ lower as u64).wrapping_mul(FNV_PRIME)
}

/// FNV-1a of a lowercased header name: the scan folds a name as it reads it and compares one
/// word at the colon. A collision with another header's name (1 in 2^64) only means that
/// header's tokens are looked up too.
const fn name_hash(name: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < name.len() {
        hash = fold(hash, name[i].to_ascii_lowercase());
        i += 1;
    }
    hash
}

const USER_AGENT: u64 = name_hash(b"user-agent");
const FROM: u64 = name_hash(b"from");
const FROM_COMPACT: u64 = name_hash(b"f");
const TO: u64 = name_hash(b"to");
const TO_COMPACT: u64 = name_hash(b"t");

#[inline(always)]
fn field_of(hash: u64) -> u8 {
    if hash == USER_AGENT {
        field::USER_AGENT
    } else if hash == FROM || hash == FROM_COMPACT {
        field::FROM
    } else if hash == TO || hash == TO_COMPACT {
        field::TO
    } else {
        field::NONE
    }
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    if b.is_ascii_uppercase() { b | 0x20 } else { b }
}

/// The scan's state, in the per-CPU `SCAN_BUFFER` slot rather than on the stack: the verifier
/// tracks the constants stored in stack slots, and would walk the callback once per combination
/// of them until they converge; what it reads from a map value is one unknown number.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scan {
    name_hash: u64,
    /// The next byte to read, and how many there are.
    pos: u32,
    len: u32,
    /// Bytes of the current token so far; past `MAX_SIGNATURE_LEN` it can match nothing.
    token_len: u32,
    lookups: u32,
    mode: u8,
    field: u8,
    /// A `<` was seen in the current value: the display name is over.
    seen_angle: u8,
    /// The method may hit a trap account (REGISTER, INVITE, OPTIONS).
    traps: u8,
    /// The kind that matched, plus one; 0 while nothing has.
    hit: u8,
    /// The empty line that ends the headers was reached.
    ended: u8,
    /// The lookups ran out before the headers did.
    out_of_lookups: u8,
    /// A byte of the request line other than CR or LF was seen (TCP segments may start with
    /// keep-alive CRLFs).
    started: u8,
}

/// Copies a key's worth of token bytes a word at a time, with volatile stores: a plain copy
/// becomes a call of `memset`/`memcpy`, a global function Linux 6.1 will not pass a map value
/// to.
#[inline(always)]
fn set_words(to: &mut [u8; MAX_SIGNATURE_LEN], from: &[u8]) {
    let to = to.as_mut_ptr() as *mut u64;
    let from = from.as_ptr() as *const u64;
    let mut i = 0;
    while i < MAX_SIGNATURE_LEN / 8 {
        // SAFETY: both hold at least MAX_SIGNATURE_LEN bytes, 8-byte aligned (`ScanBuffer`).
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
        i += 1;
    }
}

/// Zeroes a key's worth of token bytes, as [`set_words`] copies them.
#[inline(always)]
fn zero_words(to: &mut [u8; 2 * MAX_SIGNATURE_LEN]) {
    let to = to.as_mut_ptr() as *mut u64;
    let mut i = 0;
    while i < MAX_SIGNATURE_LEN / 8 {
        // SAFETY: the scratch holds 2 * MAX_SIGNATURE_LEN bytes, 8-byte aligned.
        unsafe { core::ptr::write_volatile(to.add(i), 0) };
        i += 1;
    }
}

/// Looks the current token up as `kind`; 1 (stop the loop) on a match or when the lookups run
/// out.
#[inline(always)]
fn lookup(scan: &mut Scan, tokens: &mut Tokens, kind: SignatureKind) -> i64 {
    if scan.lookups >= MAX_SCAN_LOOKUPS {
        scan.out_of_lookups = 1;
        return 1;
    }
    scan.lookups += 1;
    tokens.key.kind = kind as u8;
    set_words(&mut tokens.key.token, &tokens.token);
    if SIGNATURES.get_ptr(&tokens.key).is_some() {
        scan.hit = kind as u8 + 1;
        return 1;
    }
    0
}

/// A token ended at `delimiter`: looked up in the roles its place gives it.
#[inline(always)]
fn token_ended(scan: &mut Scan, tokens: &mut Tokens, delimiter: u8) -> i64 {
    let user = delimiter == b'@';
    let fingerprint = scan.mode == mode::VALUE
        && (scan.field == field::USER_AGENT
            || ((scan.field == field::FROM || scan.field == field::TO)
                && (user || scan.seen_angle == 0)));
    if fingerprint && lookup(scan, tokens, SignatureKind::Fingerprint) != 0 {
        return 1;
    }
    let trap = scan.traps != 0
        && user
        && (scan.mode == mode::REQUEST || (scan.mode == mode::VALUE && scan.field == field::TO));
    if trap {
        return lookup(scan, tokens, SignatureKind::Trap);
    }
    0
}

/// One byte of the request. Returns 1 to stop the loop.
#[inline(always)]
fn step(scan: &mut Scan, tokens: &mut Tokens, b: u8) -> i64 {
    match scan.mode {
        mode::LINE_START => {
            match b {
                b'\r' => {}
                b'\n' => {
                    scan.ended = 1;
                    return 1;
                }
                // A folded line continues the previous header's value (its field is kept);
                // one of a header nothing is read from is skipped like it.
                b' ' | b'\t' => {
                    scan.mode = if scan.field == field::NONE {
                        mode::SKIP
                    } else {
                        mode::VALUE
                    }
                }
                // Every header read starts with `u`, `f` or `t` (User-Agent, From, To and
                // their compact forms): any other is skipped from its first byte.
                b'u' | b'U' | b'f' | b'F' | b't' | b'T' => {
                    scan.field = field::NONE;
                    scan.name_hash = fold(FNV_OFFSET, lower(b));
                    scan.mode = mode::NAME;
                }
                _ => {
                    scan.field = field::NONE;
                    scan.mode = mode::SKIP;
                }
            }
            return 0;
        }
        mode::NAME => {
            if is_token_byte(b) {
                scan.name_hash = fold(scan.name_hash, lower(b));
                return 0;
            }
            match b {
                b' ' | b'\t' => {}
                b':' => {
                    scan.field = field_of(scan.name_hash);
                    scan.seen_angle = 0;
                    scan.token_len = 0;
                    scan.mode = if scan.field == field::NONE {
                        mode::SKIP
                    } else {
                        mode::VALUE
                    };
                }
                b'\n' => scan.mode = mode::LINE_START,
                _ => scan.mode = mode::SKIP,
            }
            return 0;
        }
        mode::SKIP => {
            if b == b'\n' {
                scan.mode = mode::LINE_START;
            }
            return 0;
        }
        _ => {}
    }
    // The request line or a value of interest: tokens.
    if is_token_byte(b) {
        if scan.token_len == 0 {
            zero_words(&mut tokens.token);
        }
        // Written whatever the length, into a scratch twice a key's size: no bounds branch for
        // the compiler to turn into one the verifier cannot follow, and the bytes past a key's
        // end (a token too long to match) are never copied into the key.
        tokens.token[scan.token_len as usize & (2 * MAX_SIGNATURE_LEN - 1)] = lower(b);
        if scan.token_len <= MAX_SIGNATURE_LEN as u32 {
            scan.token_len += 1;
        }
        scan.started = 1;
        return 0;
    }
    if scan.mode == mode::REQUEST && scan.started == 0 && (b == b'\r' || b == b'\n') {
        return 0;
    }
    if scan.token_len != 0 {
        let whole = scan.token_len <= MAX_SIGNATURE_LEN as u32;
        scan.token_len = 0;
        if whole && token_ended(scan, tokens, b) != 0 {
            return 1;
        }
    }
    match b {
        b'<' => scan.seen_angle = 1,
        b'\n' => scan.mode = mode::LINE_START,
        _ => {}
    }
    0
}

/// Bytes a line nothing is read from is skipped by per callback: the callback's own cost (an
/// indirect call, the buffer's lookup) is paid once for them.
const SKIP_STRIDE: u32 = 8;
/// Words of 8 bytes without a line feed skipped per callback before the byte-wise skip.
const SKIP_WORDS: u32 = 8;
/// Bytes of the request line or a value of interest read per callback.
const READ_STRIDE: u32 = 4;

/// `bpf_loop`'s callback: the next byte of the buffer (`Scan::pos`), or up to
/// [`SKIP_STRIDE`] of a line nothing is read from. Verified once, whatever the count; 1 stops
/// the loop, at the end of the bytes or of the scan.
#[inline(never)]
extern "C" fn scan_byte(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(buffer) = SCAN_BUFFER.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: the per-CPU `SCAN_BUFFER` slot, used by this packet only; its fields are
    // borrowed apart.
    let buffer = unsafe { &mut *buffer };
    let ScanBuffer {
        bytes,
        tokens,
        scan,
    } = buffer;
    if scan.mode == mode::SKIP {
        // A word at a time while no line feed is in it (the classic zero-byte test on the word
        // XOR '\n'; its false positives only send a word to the byte-wise loop).
        let mut w = 0;
        while w < SKIP_WORDS {
            let pos = scan.pos;
            if pos + 8 > scan.len {
                break;
            }
            // SAFETY: `pos + 8 <= len <= MAX_SCAN_BYTES`, inside `bytes`; the mask keeps the
            // bound the verifier checks inside the map value.
            let word = unsafe {
                core::ptr::read_unaligned(
                    bytes.as_ptr().add(pos as usize & (MAX_SCAN_BYTES - 1)) as *const u64
                )
            };
            let x = word ^ 0x0a0a_0a0a_0a0a_0a0a;
            if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0 {
                break;
            }
            scan.pos = pos + 8;
            w += 1;
        }
        let mut i = 0;
        while i < SKIP_STRIDE {
            let pos = scan.pos;
            if pos >= scan.len {
                return 1;
            }
            scan.pos = pos + 1;
            if bytes[pos as usize & (MAX_SCAN_BYTES - 1)] == b'\n' {
                scan.mode = mode::LINE_START;
                return 0;
            }
            i += 1;
        }
        return 0;
    }
    let mut i = 0;
    while i < READ_STRIDE {
        let pos = scan.pos;
        if pos >= scan.len {
            return 1;
        }
        scan.pos = pos + 1;
        if step(scan, tokens, bytes[pos as usize & (MAX_SCAN_BYTES - 1)]) != 0 {
            return 1;
        }
        // The rest of a line nothing is read from goes at the skip's stride.
        if scan.mode == mode::SKIP {
            return 0;
        }
        i += 1;
    }
    0
}

/// What the scan found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    Nothing,
    /// Nothing, but the headers went on past what was scanned.
    Truncated,
    /// The payload could not be read: nothing was scanned.
    Unreadable,
    Signature(SignatureKind),
}

/// Copies the request's first bytes and scans them.
#[inline(always)]
fn scan_payload(ctx: &XdpContext, pending: &ScanPending) -> Found {
    let Some(buffer) = SCAN_BUFFER.get_ptr_mut(0) else {
        return Found::Unreadable;
    };
    let data_len = ctx.data_end().saturating_sub(ctx.data());
    let offset = pending.payload_offset as usize;
    if offset >= data_len {
        return Found::Unreadable;
    }
    let mut len = data_len - offset;
    if len > pending.payload_len as usize {
        len = pending.payload_len as usize;
    }
    let whole = len <= MAX_SCAN_BYTES;
    if len > MAX_SCAN_BYTES {
        len = MAX_SCAN_BYTES;
    }
    if len == 0 {
        return Found::Unreadable;
    }
    // The same number, in a form whose bounds (1..=MAX_SCAN_BYTES) every verifier sees: Linux
    // 6.1's does not learn the lower bound from the test above. Read back through a volatile
    // load so the compiler, which knows the range, cannot fold the arithmetic away.
    // SAFETY: a read of a local.
    let len = unsafe { core::ptr::read_volatile(&len) };
    let len = ((len.wrapping_sub(1)) & (MAX_SCAN_BYTES - 1)) + 1;
    // SAFETY: copies `len` (1..=MAX_SCAN_BYTES) bytes into the per-CPU buffer's byte array.
    let copied = unsafe {
        bpf_xdp_load_bytes(
            ctx.as_ptr() as *mut _,
            offset as u32,
            buffer as *mut ScanBuffer as *mut c_void,
            len as u32,
        )
    };
    if copied != 0 {
        return Found::Unreadable;
    }
    let class = pending.class as usize;
    // SAFETY: per-CPU slot, used by this packet only.
    let buffer = unsafe { &mut *buffer };
    buffer.scan = Scan {
        name_hash: 0,
        pos: 0,
        len: len as u32,
        token_len: 0,
        lookups: 0,
        mode: mode::REQUEST,
        field: field::NONE,
        seen_angle: 0,
        traps: (class == MethodClass::Register as usize
            || class == MethodClass::Invite as usize
            || class == MethodClass::Options as usize) as u8,
        hit: 0,
        ended: 0,
        out_of_lookups: 0,
        started: 0,
    };
    // SAFETY: the callback reads the buffer only, for `len` iterations.
    unsafe {
        bpf_loop(
            len as u32,
            scan_byte as *const () as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    let scan = &buffer.scan;
    match scan.hit {
        1 => Found::Signature(SignatureKind::Fingerprint),
        2 => Found::Signature(SignatureKind::Trap),
        _ if scan.out_of_lookups != 0 || (!whole && scan.ended == 0) => Found::Truncated,
        _ => Found::Nothing,
    }
}

/// The outcome (a `COUNTERS` index) of the request the XDP program handed over: its own, or
/// `DropSignature` with the source banned.
#[inline(always)]
pub fn scan(ctx: &XdpContext, cfg: &Config) -> usize {
    let Some(pending) = SCAN_PENDING.get_ptr(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot the XDP program wrote just before its tail call on this CPU.
    let pending = unsafe { *pending };
    bump(event_counter_index(EventCounter::Scans));
    let kind = match scan_payload(ctx, &pending) {
        Found::Signature(kind) => kind,
        Found::Nothing => return pending.outcome as usize,
        Found::Truncated => {
            bump(event_counter_index(EventCounter::ScanTruncated));
            return pending.outcome as usize;
        }
        Found::Unreadable => {
            bump(event_counter_index(EventCounter::ScanFailures));
            return pending.outcome as usize;
        }
    };
    count_hit(pending.now_ns);
    let class = pending.class as usize % MethodClass::COUNT;
    let key = SourceKey { addr: pending.key };
    // A protected source (a trunk, a registrar peer) is never banned: its request is dropped.
    if !is_protected(&pending.src) {
        ban(cfg, &key, kind, pending.now_ns);
    } else {
        bump(event_counter_index(EventCounter::ProtectedDrops));
    }
    let outcome = Verdict::DropSignature as usize * MethodClass::COUNT + class;
    // The XDP program's trace event said `pass`; this one says what the scan decided.
    if cfg.trace_until_ns != 0 {
        crate::trace::record(
            cfg,
            &pending.src,
            &key,
            crate::trace::packed(outcome, pending.port, sip_xdp_common::trace_lists::SCANNED),
        );
    }
    outcome
}

/// Counts the match in the entry that matched (its key is still in the buffer).
#[inline(always)]
fn count_hit(now_ns: u64) {
    let Some(buffer) = SCAN_BUFFER.get_ptr(0) else {
        return;
    };
    // SAFETY: per-CPU slot; the key the scan stopped on.
    let key = unsafe { &(*buffer).tokens.key };
    if let Some(entry) = SIGNATURES.get_ptr_mut(key) {
        // SAFETY: a value of a preallocated hash lives while it is in the map; a race between
        // CPUs only loses a count.
        unsafe {
            (*entry).hits += 1;
            (*entry).last_hit_ns = now_ns;
        }
    }
}

/// Bans the source for a signature: at least `signature_ban_ns`, escalating like every ban.
#[inline(always)]
fn ban(cfg: &Config, key: &SourceKey, kind: SignatureKind, now_ns: u64) {
    let state = match key.state() {
        Some(state) => state,
        // The XDP program keeps no state for a source whose class has no bucket: made here,
        // with no bucket drawn, to hold the ban.
        None => {
            if !new_state(key, NO_LIMIT, 0, 0, now_ns) {
                bump(event_counter_index(EventCounter::TrackFailures));
                return;
            }
            match key.state() {
                Some(state) => state,
                None => return,
            }
        }
    };
    state.dropped += 1;
    impose_ban(
        cfg,
        key,
        state,
        BAN_CLASS_SIGNATURE | kind as u8,
        cfg.signature_ban_ns,
        now_ns,
    );
    bump(event_counter_index(signature_counter(kind)));
}
