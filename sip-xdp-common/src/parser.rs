//! The bounds of the packet parser: what it reads, how far, and which ports.

/// The SIP port used when the configuration names none.
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// SIP over TLS's port (RFC 3261), inspected on TCP by default with 5060.
pub const DEFAULT_SIP_TLS_PORT: u16 = 5061;
/// How many destination ports the XDP program inspects at most.
pub const MAX_SIP_PORTS: usize = 8;
/// Longest prefix of a request line the program scans for its ` SIP/2.0` ending. A line that is
/// longer is classified by its method alone: it cannot be proven truncated, and dropping a valid
/// request with a long Request-URI would hurt more than passing one odd packet.
pub const MAX_REQUEST_LINE_SCAN: usize = 192;
/// CR and LF bytes skipped at the start of a TCP segment before its request line is looked for
/// (keep-alive pings a SIP stream reader skips): a segment with more is not classified (`tcp`).
pub const MAX_TCP_LEADING_CRLF: usize = 16;
/// Payloads of at most this many bytes made only of CR, LF, SP, TAB or NUL are keep-alives.
pub const MAX_KEEPALIVE_LEN: usize = 16;
/// How many IPv6 extension headers the parser walks. A chain that does not reach its
/// upper-layer header within this many (or within [`MAX_L4_OFFSET`] bytes) cannot be proven not
/// to be SIP: it is counted as [`MethodClass::Unparsed`](crate::MethodClass::Unparsed) and dropped unless
/// [`flags::PASS_UNPARSED`](crate::flags::PASS_UNPARSED) is set.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
/// Deepest offset (from the start of the frame) at which the parser reads a UDP header; it keeps
/// every packet offset provably small for the verifier. No real SIP packet needs more.
pub const MAX_L4_OFFSET: usize = 512;
/// Nanoseconds in a second: the unit of every `_ns` value the program and user space exchange.
pub const NS_PER_SEC: u64 = 1_000_000_000;
