//! The first-fragment table: followers of a datagram share its first fragment's fate.

/// Key of the first-fragment table: a non-first fragment is matched to its first fragment by
/// source address and IP identification.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentKey {
    pub src: [u8; 16],
    pub id: u32,
    pub _pad: u32,
}

/// What happened to a first fragment; its followers get the same fate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragmentFate {
    /// Non-zero when the first fragment was dropped.
    pub dropped: u32,
    pub _pad: u32,
}
