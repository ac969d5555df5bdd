//! Each map's name (as the program declares it and user space looks it up) and capacity.

/// Map names, as the program declares them and user space looks them up.
pub mod map_names {
    pub const CONFIG: &str = "CONFIG";
    pub const ACTIVE_CONFIG: &str = "ACTIVE_CONFIG";
    pub const SOURCES: &str = "SOURCES";
    pub const ALLOWLIST: &str = "ALLOWLIST";
    pub const DENYLIST: &str = "DENYLIST";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FRAGMENTS: &str = "FRAGMENTS";
    pub const BAN_EVENTS: &str = "BAN_EVENTS";
    pub const LIST_PRESENCE: &str = "LIST_PRESENCE";
    pub const BANS: &str = "BANS";
    pub const PROTECTED: &str = "PROTECTED";
    pub const VERIFIED: &str = "VERIFIED";
    pub const ANSWERS: &str = "ANSWERS";
    pub const FLOWS: &str = "FLOWS";
    pub const GLOBAL_BUCKETS: &str = "GLOBAL_BUCKETS";
    pub const PREFIXES: &str = "PREFIXES";
    pub const PREFIX_BANS: &str = "PREFIX_BANS";
    /// Scanner fingerprints and trap accounts (`SignatureKey` → `SignatureEntry`).
    pub const SIGNATURES: &str = "SIGNATURES";
    /// The program array the XDP program tail-calls the scan program through (slot
    /// [`SCAN_SLOT`](crate::SCAN_SLOT)). Pinned: the kernel empties a program array when the
    /// last file descriptor or pin of it goes, which would switch the scan off silently.
    pub const SCANNERS: &str = "SCANNERS";
    /// The replay's clock (one `u64`), read only by programs loaded for `sip-xdp replay`.
    pub const REPLAY_NOW: &str = "REPLAY_NOW";
    /// The sources `sip-xdp trace` follows (an LPM trie like the lists).
    pub const TRACED: &str = "TRACED";
    /// The ring buffer of `TraceEvent`s.
    pub const TRACE_EVENTS: &str = "TRACE_EVENTS";
}

/// The `.rodata` constant (`u32`) that switches the programs to the replay clock
/// (`REPLAY_NOW`) when set to 1 before load; 0, the verifier removes the replay path.
pub const REPLAY_CLOCK_GLOBAL: &str = "REPLAY_CLOCK";

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "sip_xdp";
/// Name of the TC egress program (the server's answers) in the object file.
pub const EGRESS_PROGRAM_NAME: &str = "sip_xdp_egress";
/// Name of the scan program (signatures in a request's headers), tail-called by the XDP program.
pub const SCAN_PROGRAM_NAME: &str = "sip_xdp_scan";
/// The scan program's slot in `SCANNERS`.
pub const SCAN_SLOT: u32 = 0;

/// Default capacity of the per-source LRU map (`SOURCES`).
pub const DEFAULT_MAX_SOURCES: u32 = 131_072;
/// Upper bound for `datapath.max_sources`: about 2 GiB of kernel memory at 120+16 bytes per
/// entry.
pub const MAX_SOURCES_LIMIT: u32 = 16 * 1024 * 1024;
/// Default capacity of the durable ban table (`BANS`): bans and their strikes live there until
/// their strikes decay, out of reach of the source table's LRU eviction.
pub const DEFAULT_MAX_BANS: u32 = 65_536;
/// Capacity of the allowlist, denylist and protected tries.
pub const MAX_LIST_ENTRIES: u32 = 16_384;
/// Capacity of the first-fragment tracking LRU map.
pub const MAX_TRACKED_FRAGMENTS: u32 = 8_192;
/// Size of the ban event ring buffer in bytes (a power of two, a multiple of the page size).
pub const BAN_EVENTS_BYTES: u32 = 256 * 1024;
/// Capacity of `VERIFIED`: only sources the server answered with a success get there.
pub const DEFAULT_MAX_VERIFIED: u32 = 65_536;
/// Capacity of the `ANSWERS` and `FLOWS` LRU maps.
pub const MAX_ANSWERED_CLIENTS: u32 = 65_536;
/// Capacity of `PREFIXES`, the prefix buckets (an LRU hash: a prefix that went quiet makes room).
pub const MAX_PREFIXES: u32 = 65_536;
/// Capacity of `TRACED`: sources (CIDRs) traced at once.
pub const MAX_TRACED: u32 = 64;
/// Size of the trace ring buffer in bytes.
pub const TRACE_EVENTS_BYTES: u32 = 256 * 1024;
/// Trace events the program sends per second at most (burst the same): beyond it they are
/// counted in `EventCounter::TraceDropped`, and a trace of a flooding CIDR costs the datapath a
/// bounded amount.
pub const TRACE_EVENTS_PER_SEC: u64 = 2000;
/// Capacity of `PREFIX_BANS`, the durable prefix bans (a plain hash, like `BANS`).
pub const MAX_PREFIX_BANS: u32 = 16_384;
/// Slots of `GLOBAL_BUCKETS`, an array of GCRA arrival times shared by every source.
pub mod global_buckets {
    /// The admission budget of unverified REGISTER and INVITE (`Config::admission`).
    pub const ADMISSION: u32 = 0;
    /// Answers to unverified destinations (`Config::reflection_total`).
    pub const REFLECTION: u32 = 1;
    /// Not a bucket: the latest end (monotonic ns) of any prefix ban or would-ban recorded in
    /// `PREFIX_BANS`. While it lies in the past no prefix ban can be in force, and the program
    /// skips looking up a packet's prefixes before its payload is read. Raised by the program
    /// with every prefix ban and extension, and by user space when it writes `PREFIX_BANS`
    /// records itself (at attach); never lowered while a record it covers may be in force.
    pub const PREFIX_BANS_UNTIL: u32 = 2;
    /// The trace's rate limit (`crate::TRACE_EVENTS_PER_SEC`): a GCRA arrival time.
    pub const TRACE: u32 = 3;
    pub const SLOTS: u32 = 4;
}
