//! What a packet is (its method class), which bucket it draws from (its limit class), and what
//! the program did with it (its verdict).

/// What a UDP datagram to a SIP port is, read from its first line.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodClass {
    Register = 0,
    Invite,
    Options,
    Subscribe,
    Notify,
    Message,
    Ack,
    Bye,
    Cancel,
    Prack,
    Update,
    Info,
    Refer,
    Publish,
    /// `SIP/2.0 NNN ...`
    Response,
    /// RFC 5626 CRLF ping/pong, STUN binding keep-alive, or an empty datagram.
    KeepAlive,
    /// Anything else sent to a SIP port: garbage, binary, truncated request lines.
    Malformed,
    /// A non-first IP fragment: it carries no UDP header, so nothing can be read from it.
    Fragment,
    /// Not UDP to a SIP port: never inspected further.
    NotSip,
    /// What the parser cannot resolve within its bounds, so it cannot prove the packet is not
    /// UDP to a SIP port: IPv6 extension-header chains longer than [`MAX_IPV6_EXT_HEADERS`](crate::MAX_IPV6_EXT_HEADERS) or
    /// past [`MAX_L4_OFFSET`](crate::MAX_L4_OFFSET), a first fragment that does not hold its UDP header, an IPv6
    /// source in the IPv4-mapped range (`::ffff:0:0/96`, never valid on the wire).
    Unparsed,
}

impl MethodClass {
    pub const COUNT: usize = 20;
    pub const ALL: [MethodClass; Self::COUNT] = [
        Self::Register,
        Self::Invite,
        Self::Options,
        Self::Subscribe,
        Self::Notify,
        Self::Message,
        Self::Ack,
        Self::Bye,
        Self::Cancel,
        Self::Prack,
        Self::Update,
        Self::Info,
        Self::Refer,
        Self::Publish,
        Self::Response,
        Self::KeepAlive,
        Self::Malformed,
        Self::Fragment,
        Self::NotSip,
        Self::Unparsed,
    ];

    /// Label used in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Invite => "invite",
            Self::Options => "options",
            Self::Subscribe => "subscribe",
            Self::Notify => "notify",
            Self::Message => "message",
            Self::Ack => "ack",
            Self::Bye => "bye",
            Self::Cancel => "cancel",
            Self::Prack => "prack",
            Self::Update => "update",
            Self::Info => "info",
            Self::Refer => "refer",
            Self::Publish => "publish",
            Self::Response => "response",
            Self::KeepAlive => "keepalive",
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::NotSip => "not_sip",
            Self::Unparsed => "unparsed",
        }
    }

    pub const fn from_index(index: usize) -> Option<Self> {
        if index < Self::COUNT {
            Some(Self::ALL[index])
        } else {
            None
        }
    }
}

/// The token buckets a source has: each limited method class draws from one of them.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitClass {
    Register = 0,
    Invite,
    Options,
    /// Every other request method: SUBSCRIBE, NOTIFY, MESSAGE, PRACK, UPDATE, INFO, REFER,
    /// PUBLISH.
    Other,
    /// ACK, BYE and CANCEL: requests inside dialogs the server accepted (high default).
    InDialog,
    /// Responses (`SIP/2.0 NNN`): answers to the server's own requests (high default).
    Response,
    /// CRLF and STUN keep-alives and empty datagrams.
    KeepAlive,
    /// Malformed datagrams, when `DROP_MALFORMED` is off.
    Malformed,
}

impl LimitClass {
    pub const COUNT: usize = 8;
    pub const ALL: [LimitClass; Self::COUNT] = [
        Self::Register,
        Self::Invite,
        Self::Options,
        Self::Other,
        Self::InDialog,
        Self::Response,
        Self::KeepAlive,
        Self::Malformed,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Invite => "invite",
            Self::Options => "options",
            Self::Other => "other",
            Self::InDialog => "in_dialog",
            Self::Response => "response",
            Self::KeepAlive => "keepalive",
            Self::Malformed => "malformed",
        }
    }

    pub const fn from_index(index: usize) -> Option<Self> {
        if index < Self::COUNT {
            Some(Self::ALL[index])
        } else {
            None
        }
    }
}

/// What the program did with a packet. In monitor mode the counters record what it would have
/// done, while every packet passes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass = 0,
    PassAllowlisted,
    PassNotSip,
    DropBanned,
    DropRate,
    DropDenylisted,
    DropMalformed,
    DropFragment,
    /// The parser could not resolve the packet within its bounds ([`MethodClass::Unparsed`]).
    DropUnparsed,
}

impl Verdict {
    pub const COUNT: usize = 9;
    pub const ALL: [Verdict; Self::COUNT] = [
        Self::Pass,
        Self::PassAllowlisted,
        Self::PassNotSip,
        Self::DropBanned,
        Self::DropRate,
        Self::DropDenylisted,
        Self::DropMalformed,
        Self::DropFragment,
        Self::DropUnparsed,
    ];

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Self::DropBanned
                | Self::DropRate
                | Self::DropDenylisted
                | Self::DropMalformed
                | Self::DropFragment
                | Self::DropUnparsed
        )
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::PassAllowlisted => "pass_allowlisted",
            Self::PassNotSip => "pass_not_sip",
            Self::DropBanned => "drop_banned",
            Self::DropRate => "drop_rate",
            Self::DropDenylisted => "drop_denylisted",
            Self::DropMalformed => "drop_malformed",
            Self::DropFragment => "drop_fragment",
            Self::DropUnparsed => "drop_unparsed",
        }
    }

    pub const fn from_index(index: usize) -> Option<Self> {
        if index < Self::COUNT {
            Some(Self::ALL[index])
        } else {
            None
        }
    }
}
