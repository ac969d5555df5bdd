//! The allowlist, denylist and protected list (LPM tries): their values, the IPv4-mapped hole, and
//! the presence flags that let the program skip an empty list.

/// Value of a denylist entry. The denylist also holds manual bans, which expire in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DenyEntry {
    /// Monotonic time the entry stops applying; 0 = never.
    pub expires_at_ns: u64,
}

/// Value of an allowlist or protected-list entry (present = listed, unless it is a hole).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllowEntry {
    /// Bits from [`allow_flags`].
    pub flags: u32,
}

/// Bits of [`AllowEntry::flags`].
pub mod allow_flags {
    /// Not a listing: the entry for `::ffff:0:0/96` (IPv4 keys) that keeps an IPv6 CIDR such
    /// as `::/0` or `::/8` from matching every IPv4 source. See [`crate::MAPPED_HOLE_PREFIX`].
    pub const HOLE: u32 = 1 << 0;
}

/// IPv4 sources are keyed as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so an IPv6 CIDR that covers
/// `::ffff:0:0/96` (`::/0`, `::/8`) would match every IPv4 source. User space then writes a
/// hole at this prefix: the longest match for every IPv4 key, which reads as "not listed" (an
/// allowlist entry with [`allow_flags::HOLE`], a deny entry with [`DENY_HOLE_EXPIRES_AT_NS`]).
/// IPv4 `0.0.0.0/0` has the same key and replaces the hole with a real entry.
pub const MAPPED_HOLE_PREFIX: u32 = 96;
/// `expires_at_ns` of a denylist hole: long past on the monotonic clock, so never in force.
pub const DENY_HOLE_EXPIRES_AT_NS: u64 = 1;

/// Slots of `LIST_PRESENCE`: nonzero while the allowlist (or denylist) may hold entries, so the
/// program skips the trie lookup of an empty list. User space sets a slot before inserting and
/// clears it only after a removal left the trie empty: it is never clear while the list has
/// entries.
pub mod list_presence {
    pub const ALLOWLIST: u32 = 0;
    pub const DENYLIST: u32 = 1;
    pub const PROTECTED: u32 = 2;
    pub const SLOTS: u32 = 3;
}
