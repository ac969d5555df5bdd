//! The model of the scan program: which signature, if any, a request's headers carry.
//!
//! Written from the specification (README's "Scanner fingerprints and trap accounts" and
//! `sip_xdp_common::signatures`), line by line rather than byte by byte as the kernel walks:
//! the request's first `MAX_SCAN_BYTES` bytes are cut into lines; the request line (after any
//! CR/LF before it) and the User-Agent, From and To headers (any case, compact `f`/`t`, folded
//! continuation lines) are cut into tokens, maximal runs of token bytes, each followed by its
//! delimiter. A token of 1..=32 bytes is looked up, lowercased: every User-Agent token, and in
//! From and To the tokens before any `<` and the one before an `@` as fingerprints; the token
//! before an `@` in the request line or in To as a trap account, for REGISTER, INVITE and
//! OPTIONS. Fingerprint first, then trap; the scan stops at the first match, or when it would
//! make its `MAX_SCAN_LOOKUPS + 1`th lookup (then it is cut short), and at the empty line that
//! ends the headers. Headers that run past the bytes scanned are cut short too.
use std::collections::HashSet;

use sip_xdp_common::{
    MAX_SCAN_BYTES, MAX_SCAN_LOOKUPS, MAX_SIGNATURE_LEN, MethodClass, SignatureKind, is_token_byte,
};

/// What the scan of one request finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scanned {
    Nothing,
    /// Nothing, but the scan did not reach the end of the headers.
    CutShort,
    Match(SignatureKind),
}

/// The signatures the model knows: (kind, lowercased token).
#[derive(Clone, Debug, Default)]
pub struct Signatures(HashSet<(SignatureKind, Vec<u8>)>);

impl Signatures {
    pub fn insert(&mut self, kind: SignatureKind, token: &str) {
        self.0
            .insert((kind, token.to_ascii_lowercase().into_bytes()));
    }

    pub fn remove(&mut self, kind: SignatureKind, token: &str) {
        self.0
            .remove(&(kind, token.to_ascii_lowercase().into_bytes()));
    }

    fn contains(&self, kind: SignatureKind, token: &[u8]) -> bool {
        self.0.contains(&(kind, token.to_ascii_lowercase()))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    RequestLine,
    UserAgent,
    From,
    To,
    Other,
}

fn field_of(name: &[u8]) -> Field {
    match name.to_ascii_lowercase().as_slice() {
        b"user-agent" => Field::UserAgent,
        b"from" | b"f" => Field::From,
        b"to" | b"t" => Field::To,
        _ => Field::Other,
    }
}

/// A token and the byte that ended it (`None`: the scanned bytes ended inside it).
fn tokens(text: &[u8]) -> Vec<(&[u8], Option<u8>, bool)> {
    // (token, delimiter, a '<' came before the delimiter)
    let mut out = Vec::new();
    let mut start = None;
    let mut seen_angle = false;
    for (i, &b) in text.iter().enumerate() {
        if is_token_byte(b) {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            out.push((&text[s..i], Some(b), seen_angle));
        }
        if b == b'<' {
            seen_angle = true;
        }
    }
    if let Some(s) = start {
        out.push((&text[s..], None, seen_angle));
    }
    out
}

/// The model's verdict on `payload`, a request of `class`.
pub fn scan(payload: &[u8], class: MethodClass, signatures: &Signatures) -> Scanned {
    let whole = payload.len() <= MAX_SCAN_BYTES;
    let bytes = &payload[..payload.len().min(MAX_SCAN_BYTES)];
    let traps = matches!(
        class,
        MethodClass::Register | MethodClass::Invite | MethodClass::Options
    );
    // The request line: CR and LF before its first token byte are skipped; it ends at the first
    // LF after that.
    let first_token = bytes.iter().position(|&b| is_token_byte(b));
    let mut lookups = 0u32;
    let mut look = |kind: SignatureKind, token: &[u8]| -> Option<Scanned> {
        if lookups >= MAX_SCAN_LOOKUPS {
            return Some(Scanned::CutShort);
        }
        lookups += 1;
        signatures
            .contains(kind, token)
            .then_some(Scanned::Match(kind))
    };
    // Segments of (field, text) in scan order; a value's text runs across its folded lines
    // (the line break between is a delimiter like any other).
    // (field, text, a folded continuation of the segment before)
    let mut segments: Vec<(Field, Vec<u8>, bool)> = Vec::new();
    let mut ended = false;
    let rest = match first_token {
        None => {
            // No token at all: nothing but delimiters, CR and LF.
            segments.push((Field::RequestLine, bytes.to_vec(), false));
            &bytes[bytes.len()..]
        }
        Some(first) => {
            let line_end = bytes[first..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| first + p);
            match line_end {
                Some(end) => {
                    segments.push((Field::RequestLine, bytes[..=end].to_vec(), false));
                    &bytes[end + 1..]
                }
                None => {
                    segments.push((Field::RequestLine, bytes.to_vec(), false));
                    &bytes[bytes.len()..]
                }
            }
        }
    };
    let mut lines: Vec<&[u8]> = rest.split_inclusive(|&b| b == b'\n').collect();
    // `split_inclusive` on an empty slice yields nothing; a line without its LF is the last.
    let mut current = Field::Other;
    for line in lines.drain(..) {
        // CR at the start of a line is skipped; an empty line ends the headers.
        let trimmed: &[u8] = {
            let skip = line.iter().take_while(|&&b| b == b'\r').count();
            &line[skip..]
        };
        if trimmed.is_empty() {
            // Only CRs: the line is not over yet (the scanned bytes ended inside it).
            break;
        }
        if trimmed[0] == b'\n' {
            ended = true;
            break;
        }
        if trimmed[0] == b' ' || trimmed[0] == b'\t' {
            // A folded line: more of the current value (or of a header nothing is read from).
            segments.push((current, trimmed.to_vec(), true));
            continue;
        }
        if !is_token_byte(trimmed[0]) {
            current = Field::Other;
            continue;
        }
        let Some(colon) = trimmed.iter().position(|&b| b == b':') else {
            current = Field::Other;
            continue;
        };
        let name: Vec<u8> = trimmed[..colon]
            .iter()
            .copied()
            .filter(|&b| b != b' ' && b != b'\t')
            .collect();
        if !name.iter().all(|&b| is_token_byte(b)) {
            current = Field::Other;
            continue;
        }
        current = field_of(&name);
        segments.push((current, trimmed[colon + 1..].to_vec(), false));
    }
    // Folded lines continue a value whose '<' state carries over: join each header's segments.
    let mut joined: Vec<(Field, Vec<u8>)> = Vec::new();
    for (field, text, folded) in segments {
        match joined.last_mut() {
            Some((last, acc)) if folded && *last == field => acc.extend(text),
            _ => joined.push((field, text)),
        }
    }
    for (field, text) in &joined {
        for (token, delimiter, seen_angle) in tokens(text) {
            let Some(delimiter) = delimiter else {
                continue;
            };
            if token.len() > MAX_SIGNATURE_LEN {
                continue;
            }
            let user = delimiter == b'@';
            let fingerprint = match field {
                Field::UserAgent => true,
                Field::From | Field::To => user || !seen_angle,
                _ => false,
            };
            if fingerprint && let Some(found) = look(SignatureKind::Fingerprint, token) {
                return found;
            }
            let trap = traps && user && matches!(field, Field::RequestLine | Field::To);
            if trap && let Some(found) = look(SignatureKind::Trap, token) {
                return found;
            }
        }
    }
    if !whole && !ended {
        Scanned::CutShort
    } else {
        Scanned::Nothing
    }
}
