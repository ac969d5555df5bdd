//! What a packet is (its method class), which bucket it draws from (its limit class), and what
//! the program did with it (its verdict).

/// A `repr(u8)` enum whose variants index the counter and bucket arrays, with every variant
/// in `ALL` (in order), `COUNT`, the label metrics and logs use (`name`) and `from_index`: a new
/// variant is one line.
macro_rules! labelled_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$(Self::$variant),+];
            pub const COUNT: usize = Self::ALL.len();

            /// Label used in metrics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
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
    };
}
pub(crate) use labelled_enum;

labelled_enum! {
    /// What a UDP datagram to a SIP port is, read from its first line.
    pub enum MethodClass {
        Register => "register",
        Invite => "invite",
        Options => "options",
        Subscribe => "subscribe",
        Notify => "notify",
        Message => "message",
        Ack => "ack",
        Bye => "bye",
        Cancel => "cancel",
        Prack => "prack",
        Update => "update",
        Info => "info",
        Refer => "refer",
        Publish => "publish",
        /// `SIP/2.0 NNN ...`
        Response => "response",
        /// RFC 5626 CRLF ping/pong, STUN binding keep-alive, or an empty datagram.
        KeepAlive => "keepalive",
        /// Anything else sent to a SIP port: garbage, binary, truncated request lines.
        Malformed => "malformed",
        /// A non-first IP fragment: it carries no UDP header, so nothing can be read from it.
        Fragment => "fragment",
        /// Not UDP to a SIP port: never inspected further.
        NotSip => "not_sip",
        /// What the parser cannot resolve within its bounds, so it cannot prove the packet is not
        /// UDP to a SIP port: IPv6 extension-header chains longer than
        /// [`MAX_IPV6_EXT_HEADERS`](crate::MAX_IPV6_EXT_HEADERS) or past
        /// [`MAX_L4_OFFSET`](crate::MAX_L4_OFFSET), a first fragment that does not hold its UDP
        /// header, an IPv6 source in the IPv4-mapped range (`::ffff:0:0/96`, never valid on the
        /// wire).
        Unparsed => "unparsed",
        /// A TCP SYN (without ACK) to a SIP TCP port (`Config::tcp_ports`): a new connection.
        TcpSyn => "tcp_syn",
        /// Any other TCP segment to a SIP TCP port whose payload does not start with a SIP
        /// request or status line (TLS, WebSocket frames, a message's continuation, ACKs).
        Tcp => "tcp",
        /// A UDP datagram to a SIP port from a banned source or prefix: dropped on its addresses
        /// alone, before its payload was read, so its method is not known.
        Unread => "unread",
    }
}

labelled_enum! {
    /// The token buckets a source has: each limited method class draws from one of them.
    pub enum LimitClass {
        Register => "register",
        Invite => "invite",
        Options => "options",
        /// Every other request method: SUBSCRIBE, NOTIFY, MESSAGE, PRACK, UPDATE, INFO, REFER,
        /// PUBLISH.
        Other => "other",
        /// ACK, BYE and CANCEL: requests inside dialogs the server accepted (high default).
        InDialog => "in_dialog",
        /// Responses (`SIP/2.0 NNN`): answers to the server's own requests (high default).
        Response => "response",
        /// CRLF and STUN keep-alives and empty datagrams.
        KeepAlive => "keepalive",
        /// Malformed datagrams, when `DROP_MALFORMED` is off.
        Malformed => "malformed",
        /// New TCP connections (SYNs) to the SIP TCP ports.
        Connection => "connection",
    }
}

labelled_enum! {
    /// What the program did with a packet. In monitor mode the counters record what it would have
    /// done, while every packet passes.
    pub enum Verdict {
        Pass => "pass",
        PassAllowlisted => "pass_allowlisted",
        PassNotSip => "pass_not_sip",
        DropBanned => "drop_banned",
        DropRate => "drop_rate",
        DropDenylisted => "drop_denylisted",
        DropMalformed => "drop_malformed",
        DropFragment => "drop_fragment",
        /// The parser could not resolve the packet within its bounds ([`MethodClass::Unparsed`]).
        DropUnparsed => "drop_unparsed",
        /// An unverified source's REGISTER or INVITE beyond the admission budget.
        DropAdmission => "drop_admission",
        /// Within its own bucket, but its prefix's bucket (`Config::prefix_limits`) ran dry.
        DropPrefix => "drop_prefix",
        /// The request carried a signature (a scanner's fingerprint, a trap account): its
        /// source is banned from this packet on.
        DropSignature => "drop_signature",
    }
}

impl Verdict {
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Self::DropBanned
                | Self::DropRate
                | Self::DropDenylisted
                | Self::DropMalformed
                | Self::DropFragment
                | Self::DropUnparsed
                | Self::DropAdmission
                | Self::DropPrefix
                | Self::DropSignature
        )
    }
}
