//! Signatures the scan program (`sip_xdp_scan`) looks for in a SIP request's headers: scanner
//! fingerprints (whole tokens of User-Agent, and of From and To display names and users) and
//! trap accounts (the user of the Request-URI or of To). One match bans the source at once.
//!
//! Both live in `SIGNATURES`, a hash keyed by ([`SignatureKind`], token): the program cuts the
//! headers into tokens ([`is_token_byte`] runs, lowercased) and looks each candidate up, so a
//! token matches whole or not at all ("sipcli" never matches "sipclient") and the list changes
//! at runtime with map writes, without reloading the program.

use crate::NS_PER_SEC;

crate::classes::labelled_enum! {
    /// What a signature proves, and the origin of the bans it makes.
    pub enum SignatureKind {
        /// A scanner's name in User-Agent, From or To (sipvicious's "friendly-scanner", ...).
        Fingerprint => "fingerprint",
        /// A decoy account no real phone uses, in the Request-URI or To of a REGISTER, INVITE
        /// or OPTIONS.
        Trap => "trap",
    }
}

/// Longest token the program compares; a longer run of token bytes matches nothing.
pub const MAX_SIGNATURE_LEN: usize = 32;
/// Bytes of a request (from its first byte) the scan program reads. Headers past them are not
/// scanned, and such a request counts in `EventCounter::ScanTruncated`.
pub const MAX_SCAN_BYTES: usize = 1024;
/// Token lookups per request at most; the scan stops there (counted in `ScanTruncated`).
pub const MAX_SCAN_LOOKUPS: u32 = 48;
/// Capacity of `SIGNATURES`, both kinds together.
pub const MAX_SIGNATURES: u32 = 4096;
/// Shortest ban a signature match imposes (escalation by strikes still applies on top).
pub const DEFAULT_SIGNATURE_BAN_NS: u64 = 3600 * NS_PER_SEC;

/// `SourceState::ban_class` of a ban for a signature: above every `LimitClass` index and
/// apart from `BAN_CLASS_AUTH`; the low bits hold the [`SignatureKind`].
pub const BAN_CLASS_SIGNATURE: u8 = 0x80;

/// The [`SignatureKind`] behind a signature ban's `ban_class`; `None` for any other ban.
pub const fn signature_ban_kind(ban_class: u8) -> Option<SignatureKind> {
    if ban_class & BAN_CLASS_SIGNATURE == 0 {
        return None;
    }
    SignatureKind::from_index((ban_class & !BAN_CLASS_SIGNATURE) as usize)
}

/// Bytes that make up a token: letters, digits and `-_.!~*'+%` (what SIP allows in a user part
/// and a User-Agent product name, without the separators). Everything else separates tokens.
pub const fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'+' | b'%'
        )
}

/// Key of `SIGNATURES`: the kind and the token, lowercased ASCII, zero-padded.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SignatureKey {
    /// A [`SignatureKind`] index.
    pub kind: u8,
    pub _pad: [u8; 7],
    pub token: [u8; MAX_SIGNATURE_LEN],
}

/// Why a token cannot be a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    Empty,
    TooLong,
    /// The byte at this index is not a token byte ([`is_token_byte`]).
    BadByte(usize),
}

impl SignatureKey {
    /// The key of `token`, lowercased; an error for what the program can never match.
    pub fn new(kind: SignatureKind, token: &[u8]) -> Result<Self, SignatureError> {
        if token.is_empty() {
            return Err(SignatureError::Empty);
        }
        if token.len() > MAX_SIGNATURE_LEN {
            return Err(SignatureError::TooLong);
        }
        let mut key = SignatureKey {
            kind: kind as u8,
            ..Default::default()
        };
        for (i, &b) in token.iter().enumerate() {
            if !is_token_byte(b) {
                return Err(SignatureError::BadByte(i));
            }
            key.token[i] = b.to_ascii_lowercase();
        }
        Ok(key)
    }

    /// The token's bytes, without the padding.
    pub fn token_bytes(&self) -> &[u8] {
        let len = self
            .token
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_SIGNATURE_LEN);
        &self.token[..len]
    }
}

/// Value of `SIGNATURES`: how often the signature matched, written by the scan program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SignatureEntry {
    /// Requests that matched (a race between CPUs can lose a count).
    pub hits: u64,
    /// Monotonic time of the last match; 0 = never.
    pub last_hit_ns: u64,
}

/// Handed from the XDP program to the scan program it tail-calls, through the per-CPU
/// `SCAN_PENDING` slot: what the XDP program decided about the request and where its payload is.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScanPending {
    /// The source's `SOURCES` key.
    pub key: [u8; 16],
    /// The source address (the key may be an IPv6 prefix).
    pub src: [u8; 16],
    pub now_ns: u64,
    /// Offset of the payload from the start of the frame.
    pub payload_offset: u32,
    /// Payload bytes as the headers give them.
    pub payload_len: u32,
    /// The `COUNTERS` index of the XDP program's outcome, counted by the scan program.
    pub outcome: u32,
    /// The request's `MethodClass`.
    pub class: u8,
    pub _pad: u8,
    /// The source's port.
    pub port: u16,
}
