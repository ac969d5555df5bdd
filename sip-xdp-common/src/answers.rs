//! What the TC egress program learns from the server's answers: verified sources (`VERIFIED`),
//! per-client answer state (`ANSWERS`), per-flow challenge state (`FLOWS`), and the kinds of
//! failed authentication it counts.

use crate::NS_PER_SEC;

crate::classes::labelled_enum! {
    /// What in the server's answers counts against a client.
    pub enum AuthFailure {
        /// 403 Forbidden, to any request.
        Forbidden => "forbidden",
        /// 404 Not Found to a REGISTER or an INVITE (or to a request whose CSeq the program
        /// cannot read): an extension that does not exist.
        NotFound => "not_found",
        /// A 401/407 challenge to a flow whose previous challenge was never followed by a
        /// success: wrong credentials answered with another challenge (Asterisk's
        /// `alwaysauthreject`, Kamailio's default), or a scanner collecting challenges.
        Rechallenged => "rechallenged",
        /// A challenge to an unverified address that already holds
        /// `Config::auth_max_unanswered` open challenges: a scanner spreading its requests over
        /// many source ports.
        Unanswered => "unanswered",
    }
}

/// `SourceState::ban_class` of a ban the egress program imposed for failed authentication: the
/// bit is set above every [`crate::LimitClass`] index, and the low bits hold the
/// [`AuthFailure`] that tipped the count.
pub const BAN_CLASS_AUTH: u8 = 0x40;

/// The [`AuthFailure`] behind an auth ban's `ban_class`; `None` for a rate ban.
pub const fn auth_ban_kind(ban_class: u8) -> Option<AuthFailure> {
    if ban_class & BAN_CLASS_AUTH == 0 {
        return None;
    }
    AuthFailure::from_index((ban_class & !BAN_CLASS_AUTH) as usize)
}

/// Value of `VERIFIED`, keyed like `SOURCES`: a client the server answered with a 2xx to a
/// REGISTER or INVITE after challenging it. Only the egress program writes it; a forged source
/// never gets there, since it cannot answer a challenge it never receives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VerifiedSource {
    /// Monotonic time the verification runs out; each success moves it `verified_for_ns` on.
    pub verified_until_ns: u64,
    /// When the source was first verified (this run of verification).
    pub verified_since_ns: u64,
    /// Successes counted while verified.
    pub successes: u64,
}

/// Value of `ANSWERS`, keyed like `SOURCES`: what the server's answers say about one client
/// address. Written by the egress program only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AnswerState {
    /// GCRA arrival time of the per-destination reflection bucket.
    pub reply_tat_ns: u64,
    /// Start of the failure window (`Config::auth_window_ns`).
    pub window_start_ns: u64,
    /// Failures counted in the window, every kind.
    pub failures: u32,
    /// Challenges sent in the window and not yet followed by a success.
    pub open_challenges: u32,
    /// Challenges and successes the program has seen to this client.
    pub answers: u32,
    /// Answers dropped by the reflection guard.
    pub reflection_drops: u32,
}

/// Key of `FLOWS`: a client's address (whole, never masked) and UDP port. Behind a NAT each
/// phone has a port of its own, so a flow is one phone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Value of `FLOWS`: one client flow's challenge and failure state, and its ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowState {
    /// When the flow's open challenge was sent; 0 when none is open.
    pub challenged_at_ns: u64,
    /// Start of the flow's failure window.
    pub window_start_ns: u64,
    /// Monotonic time the flow's own ban ends (a flow of a verified address is banned alone,
    /// so one phone with a wrong password does not take its office's address down).
    pub banned_until_ns: u64,
    /// Failures counted in the window.
    pub failures: u32,
    /// Flow bans so far.
    pub strikes: u32,
}

/// An open challenge older than this no longer makes the next challenge a failure: a phone that
/// gave up on a registration and retries much later starts afresh.
pub const CHALLENGE_OPEN_NS: u64 = 300 * NS_PER_SEC;
/// Bytes of a response the egress program scans for its CSeq header.
pub const MAX_ANSWER_SCAN: usize = 1024;

/// Why the program banned a source: a bucket that ran dry, or failed authentication counted
/// from the server's answers. Stored in one byte (`ban_class`) of the ban's state and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BanCause {
    Rate(crate::LimitClass),
    Auth(AuthFailure),
    /// A signature in the request's headers (scan program).
    Signature(crate::SignatureKind),
}

impl BanCause {
    /// `None` for a byte this build does not know (a program built from other sources).
    pub const fn from_ban_class(ban_class: u8) -> Option<Self> {
        if ban_class & crate::BAN_CLASS_SIGNATURE != 0 {
            match crate::signature_ban_kind(ban_class) {
                Some(kind) => Some(Self::Signature(kind)),
                None => None,
            }
        } else if ban_class & BAN_CLASS_AUTH != 0 {
            match auth_ban_kind(ban_class) {
                Some(kind) => Some(Self::Auth(kind)),
                None => None,
            }
        } else {
            match crate::LimitClass::from_index(ban_class as usize) {
                Some(class) => Some(Self::Rate(class)),
                None => None,
            }
        }
    }

    pub const fn ban_class(self) -> u8 {
        match self {
            Self::Rate(class) => class as u8,
            Self::Auth(kind) => BAN_CLASS_AUTH | kind as u8,
            Self::Signature(kind) => crate::BAN_CLASS_SIGNATURE | kind as u8,
        }
    }

    /// The ban's origin as `ban list` shows it: `rate`, `auth`, `fingerprint` or `trap`.
    pub const fn origin(self) -> &'static str {
        match self {
            Self::Rate(_) => "rate",
            Self::Auth(_) => "auth",
            Self::Signature(kind) => kind.name(),
        }
    }

    /// The limit class or failure kind: `register`, `rechallenged`, ...
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rate(class) => class.name(),
            Self::Auth(kind) => kind.name(),
            Self::Signature(kind) => kind.name(),
        }
    }
}
