//! The program's maps. Sizes here are defaults: the loader may resize `SOURCES` before load.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use sip_xdp_common::{
    AllowEntry, AnswerState, BAN_EVENTS_BYTES, COUNTER_SLOTS, Config, DEFAULT_MAX_BANS,
    DEFAULT_MAX_SOURCES, DEFAULT_MAX_VERIFIED, DenyEntry, DurableBan, FlowKey, FlowState,
    FragmentFate, FragmentKey, MAX_ANSWERED_CLIENTS, MAX_LIST_ENTRIES, MAX_PREFIX_BANS,
    MAX_PREFIXES, MAX_SIGNATURES, MAX_TRACKED_FRAGMENTS, PrefixKey, ScanPending, SignatureEntry,
    SignatureKey, SourceKey, SourceState, VerifiedSource, global_buckets, list_presence,
};

/// Two slots, so user space can fill one completely while packets read the other.
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(2, 0);

/// Which `CONFIG` slot is live. User space flips it after writing the other slot whole; only the
/// low bit is read, and it is the only bit that ever changes, so however the kernel copies the
/// value in, a packet sees the old slot or the new one, never a mix.
#[map(name = "ACTIVE_CONFIG")]
pub static ACTIVE_CONFIG: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "SOURCES")]
pub static SOURCES: LruHashMap<SourceKey, SourceState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_SOURCES, 0);

/// Bans and strike histories, keyed like `SOURCES`. A plain (preallocated) hash, not an LRU: a
/// flood of new sources evicts entries of `SOURCES`, never a ban. Entries leave when their
/// strikes decay (the program on the source's next packet, user space in its sweeps).
#[map(name = "BANS")]
pub static BANS: HashMap<SourceKey, DurableBan> = HashMap::with_max_entries(DEFAULT_MAX_BANS, 0);

/// Prefix buckets and bans (`sip_xdp_common::PrefixKey`): an LRU, so a prefix gone quiet
/// makes room; its ban is also kept in `PREFIX_BANS`, out of reach of the eviction.
#[map(name = "PREFIXES")]
pub static PREFIXES: LruHashMap<PrefixKey, SourceState> =
    LruHashMap::with_max_entries(MAX_PREFIXES, 0);

/// Prefix bans and strike histories, durable like `BANS`.
#[map(name = "PREFIX_BANS")]
pub static PREFIX_BANS: HashMap<PrefixKey, DurableBan> =
    HashMap::with_max_entries(MAX_PREFIX_BANS, 0);

/// Clients the server answered with a success after challenging them, keyed like `SOURCES`.
/// Written by the egress program only, so no forged flood can fill or churn it; an LRU so that
/// when it is full the client that succeeded longest ago makes room.
#[map(name = "VERIFIED")]
pub static VERIFIED: LruHashMap<SourceKey, VerifiedSource> =
    LruHashMap::with_max_entries(DEFAULT_MAX_VERIFIED, 0);

/// What the server's answers say about each client address (egress program).
#[map(name = "ANSWERS")]
pub static ANSWERS: LruHashMap<SourceKey, AnswerState> =
    LruHashMap::with_max_entries(MAX_ANSWERED_CLIENTS, 0);

/// Challenge, failure and ban state per client flow (address and port); the egress program
/// writes it, the XDP program reads a flow's ban.
#[map(name = "FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowState> =
    LruHashMap::with_max_entries(MAX_ANSWERED_CLIENTS, 0);

/// Buckets shared by every source (see `sip_xdp_common::global_buckets`). One shared slot, not
/// per-CPU: a budget split per CPU would admit less than configured when traffic lands unevenly.
/// Updates race between CPUs, which can admit a few packets more than the budget, never fewer.
#[map(name = "GLOBAL_BUCKETS")]
pub static GLOBAL_BUCKETS: Array<u64> = Array::with_max_entries(global_buckets::SLOTS, 0);

pub const GLOBAL_BUCKETS_ADMISSION: u32 = global_buckets::ADMISSION;

/// `global_buckets::PREFIX_BANS_UNTIL`: no prefix ban can be in force at or after it. 0 (no
/// prefix ban yet) when the slot cannot be read: the slot always exists, so that never happens,
/// and if it did the prefix bans would still be read in the draw after the payload.
#[inline(always)]
pub fn prefix_bans_until() -> u64 {
    match GLOBAL_BUCKETS.get(global_buckets::PREFIX_BANS_UNTIL) {
        Some(until) => *until,
        None => 0,
    }
}

/// Raises [`prefix_bans_until`] to `until_ns` (a race between CPUs can lose a raise only to a
/// later end, which covers it).
#[inline(always)]
pub fn raise_prefix_bans_until(until_ns: u64) {
    if let Some(slot) = GLOBAL_BUCKETS.get_ptr_mut(global_buckets::PREFIX_BANS_UNTIL) {
        // SAFETY: an array slot lives as long as the map.
        unsafe {
            if *slot < until_ns {
                *slot = until_ns;
            }
        }
    }
}
pub const GLOBAL_BUCKETS_REFLECTION: u32 = global_buckets::REFLECTION;

/// The arrival time of a shared bucket, to update in place.
#[inline(always)]
pub fn global_bucket(slot: u32) -> Option<&'static mut u64> {
    // SAFETY: an array slot lives as long as the map; races only lose an update.
    GLOBAL_BUCKETS
        .get_ptr_mut(slot)
        .map(|tat| unsafe { &mut *tat })
}

/// Sources held to their buckets but never banned (trunks, registrar peers, monitoring).
#[map(name = "PROTECTED")]
pub static PROTECTED: LpmTrie<[u8; 16], AllowEntry> =
    LpmTrie::with_max_entries(MAX_LIST_ENTRIES, 0);

#[map(name = "ALLOWLIST")]
pub static ALLOWLIST: LpmTrie<[u8; 16], AllowEntry> =
    LpmTrie::with_max_entries(MAX_LIST_ENTRIES, 0);

#[map(name = "DENYLIST")]
pub static DENYLIST: LpmTrie<[u8; 16], DenyEntry> = LpmTrie::with_max_entries(MAX_LIST_ENTRIES, 0);

/// Whether each list may have entries (see `sip_xdp_common::list_presence`): an array read the
/// verifier inlines, against a trie walk under RCU per lookup.
#[map(name = "LIST_PRESENCE")]
pub static LIST_PRESENCE: Array<u32> = Array::with_max_entries(list_presence::SLOTS, 0);

/// False only when user space has said the list is empty; a missing slot counts as non-empty.
#[inline(always)]
pub fn list_may_have_entries(slot: u32) -> bool {
    match LIST_PRESENCE.get(slot) {
        Some(present) => *present != 0,
        None => true,
    }
}

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "FRAGMENTS")]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentFate> =
    LruHashMap::with_max_entries(MAX_TRACKED_FRAGMENTS, 0);

#[map(name = "BAN_EVENTS")]
pub static BAN_EVENTS: RingBuf = RingBuf::with_byte_size(BAN_EVENTS_BYTES, 0);

/// Staging area for a new source's state: building it on the stack would push the call chain
/// past the 512-byte BPF stack.
#[map(name = "NEW_SOURCE")]
pub static NEW_SOURCE: PerCpuArray<SourceState> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and XDP programs do not preempt each other on one CPU.
        unsafe { *slot += 1 };
    }
}

/// Per-CPU scratch slots used by [`opaque`].
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(6, 0);

/// Returns `value`, laundered through a map so the verifier sees an unknown scalar.
///
/// Every parse path (VLAN depth, IPv4 options, each IPv6 extension header chain) reaches the
/// payload at a differently bounded offset, and the verifier would walk the payload scan once per
/// distinct bound, past its instruction budget. After this, and the caller's explicit clamp,
/// every path enters the scan in the same state and the verifier prunes them into one.
///
/// The lookup never fails (a constant index of a per-CPU array), but the verifier walks that
/// path too: it returns `usize::MAX`, which every caller's clamp rejects, rather than `value`,
/// whose bounds would come along and split the states again.
#[inline(always)]
pub fn opaque(slot: u32, value: usize) -> usize {
    match SCRATCH.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent user; volatile so the store is not forwarded.
        Some(ptr) => unsafe {
            core::ptr::write_volatile(ptr, value as u64);
            core::ptr::read_volatile(ptr) as usize
        },
        None => usize::MAX,
    }
}

/// Scanner fingerprints and trap accounts (`sip_xdp_common::SignatureKey`); user space writes
/// them, the scan program counts its matches in the values.
#[map(name = "SIGNATURES")]
pub static SIGNATURES: HashMap<SignatureKey, SignatureEntry> =
    HashMap::with_max_entries(MAX_SIGNATURES, 0);

/// The scan program, in slot `sip_xdp_common::SCAN_SLOT`, put there by user space after load.
#[map(name = "SCANNERS")]
pub static SCANNERS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What the XDP program hands the scan program it tail-calls (one per CPU: a tail call runs on
/// the CPU of its caller, before any other packet).
#[map(name = "SCAN_PENDING")]
pub static SCAN_PENDING: PerCpuArray<ScanPending> = PerCpuArray::with_max_entries(1, 0);
