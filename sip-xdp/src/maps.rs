//! Typed access to the program's maps, shared by the daemon, the CLI and the tests.
//!
//! `prefixes.rs`: the prefix buckets (`PREFIXES`) and prefix bans (`PREFIX_BANS`).
//! `signatures.rs`: scanner fingerprints and trap accounts (`SIGNATURES`, `SCANNERS`).
mod prefixes;
mod signatures;

use std::net::{IpAddr, Ipv6Addr};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::Key},
};
use ipnet::IpNet;
use sip_xdp_common::{
    AllowEntry, AnswerState, Config, DENY_HOLE_EXPIRES_AT_NS, DenyEntry, DurableBan, EventCounter,
    FlowKey, FlowState, MAPPED_HOLE_PREFIX, MethodClass, PrefixKey, SignatureEntry, SignatureKey,
    SourceKey, SourceState, Verdict, VerifiedSource, allow_flags, event_counter_index, ipv4_mapped,
    list_presence, map_names, packet_counter_index,
};
use thiserror::Error;

use crate::loader::PinDir;

pub use prefixes::{prefix_key, prefix_net};
pub use signatures::scan_program_in_place;

#[derive(Debug, Error)]
pub enum MapsError {
    #[error("map {0} is missing from the sip-xdp object; rebuild sip-xdp")]
    Missing(&'static str),
    #[error(
        "sip-xdp has no pinned map {path}: it is not attached on this host yet; run `sip-xdp \
         attach --iface IFACE` (or start the daemon) first"
    )]
    NotPinned { path: std::path::PathBuf },
    #[error(
        "cannot open the pinned map {path}: {source} (sip-xdp needs root, or CAP_BPF and \
         CAP_NET_ADMIN)"
    )]
    OpenPinned {
        path: std::path::PathBuf,
        #[source]
        source: MapError,
    },
    #[error(
        "{net} is an IPv4-mapped IPv6 range, which never matches: IPv4 sources are listed as \
         IPv4 (write {ipv4}), and IPv6 packets from ::ffff:0:0/96 are dropped as unparsed"
    )]
    MappedRange { net: IpNet, ipv4: String },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// The 16-byte key form of an address: IPv4 as IPv4-mapped IPv6.
pub fn addr_key(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a 16-byte key stands for (IPv4-mapped keys come back as IPv4).
pub fn key_addr(key: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// LPM trie key of a CIDR, in the one-trie-for-both-families form the program looks up.
pub fn cidr_key(net: IpNet) -> Key<[u8; 16]> {
    let net = net.trunc();
    match net {
        IpNet::V4(v4) => Key::new(
            96 + u32::from(v4.prefix_len()),
            ipv4_mapped(v4.addr().octets()),
        ),
        IpNet::V6(v6) => Key::new(u32::from(v6.prefix_len()), v6.addr().octets()),
    }
}

/// `::ffff:0:0/96`: where IPv4 keys live (see `sip_xdp_common::MAPPED_HOLE_PREFIX`).
fn mapped_range() -> IpNet {
    IpNet::new(IpAddr::V6(Ipv6Addr::from(ipv4_mapped([0; 4]))), 96).expect("/96 is valid")
}

/// An IPv6 CIDR wider than `::ffff:0:0/96` that contains it (`::/0`, `::/8`): as a trie entry
/// it would match every IPv4 source, unless the hole stops it.
fn covers_mapped(net: &IpNet) -> bool {
    matches!(net, IpNet::V6(v6) if v6.prefix_len() < 96) && net.contains(&mapped_range())
}

/// IPv4 `0.0.0.0/0`: its key is the hole's key.
fn is_ipv4_any(net: &IpNet) -> bool {
    matches!(net, IpNet::V4(v4) if v4.prefix_len() == 0)
}

/// Refuses IPv6 CIDRs inside `::ffff:0:0/96`: no IPv6 source there is ever looked up (the
/// program drops them), and as keys they would list IPv4 sources under an IPv6 name.
pub fn check_listable(net: IpNet) -> Result<IpNet, MapsError> {
    let mapped = mapped_range();
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && mapped.contains(&net)
    {
        let v4 = v6
            .addr()
            .to_ipv4_mapped()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        return Err(MapsError::MappedRange {
            net,
            ipv4: format!("{v4}/{}", v6.prefix_len() - 96),
        });
    }
    Ok(net)
}

/// The CIDR an LPM trie key stands for.
pub fn key_cidr(key: &Key<[u8; 16]>) -> IpNet {
    let prefix = key.prefix_len();
    match key_addr(key.data()) {
        IpAddr::V4(v4) if prefix >= 96 => IpNet::new(IpAddr::V4(v4), (prefix - 96) as u8),
        addr => IpNet::new(addr, prefix.min(128) as u8),
    }
    .unwrap_or_else(|_| {
        IpNet::new(IpAddr::V6(Ipv6Addr::from(key.data())), 128).expect("/128 is valid")
    })
}

/// Packet and event counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    slots: Vec<u64>,
}

impl Counters {
    /// Counters from raw slot values, indexed as in `COUNTERS` (summed over CPUs).
    pub fn from_slots(slots: Vec<u64>) -> Self {
        Self { slots }
    }

    pub fn packets(&self, verdict: Verdict, class: MethodClass) -> u64 {
        self.slots
            .get(packet_counter_index(verdict, class) as usize)
            .copied()
            .unwrap_or(0)
    }

    pub fn by_verdict(&self, verdict: Verdict) -> u64 {
        MethodClass::ALL
            .iter()
            .map(|&c| self.packets(verdict, c))
            .sum()
    }

    pub fn by_class(&self, class: MethodClass) -> u64 {
        Verdict::ALL.iter().map(|&v| self.packets(v, class)).sum()
    }

    pub fn total(&self) -> u64 {
        Verdict::ALL.iter().map(|&v| self.by_verdict(v)).sum()
    }

    pub fn event(&self, counter: EventCounter) -> u64 {
        self.slots
            .get(event_counter_index(counter) as usize)
            .copied()
            .unwrap_or(0)
    }
}

/// The program's maps, typed.
pub struct SipMaps {
    config: Array<MapData, Config>,
    active_config: Array<MapData, u32>,
    sources: HashMap<MapData, SourceKey, SourceState>,
    allowlist: LpmTrie<MapData, [u8; 16], AllowEntry>,
    denylist: LpmTrie<MapData, [u8; 16], DenyEntry>,
    protected: LpmTrie<MapData, [u8; 16], AllowEntry>,
    bans: HashMap<MapData, SourceKey, DurableBan>,
    bans_capacity: u32,
    counters: PerCpuArray<MapData, u64>,
    list_presence: Array<MapData, u32>,
    sources_capacity: u32,
    verified: HashMap<MapData, SourceKey, VerifiedSource>,
    answers: HashMap<MapData, SourceKey, AnswerState>,
    flows: HashMap<MapData, FlowKey, FlowState>,
    verified_capacity: u32,
    prefixes: HashMap<MapData, PrefixKey, SourceState>,
    prefixes_capacity: u32,
    prefix_bans: HashMap<MapData, PrefixKey, DurableBan>,
    prefix_bans_capacity: u32,
    global_buckets: Array<MapData, u64>,
    /// `None` for a program built before the scan program.
    signatures: Option<HashMap<MapData, SignatureKey, SignatureEntry>>,
    signatures_capacity: u32,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, MapsError> {
    ebpf.take_map(name).ok_or(MapsError::Missing(name))
}

fn open_pin(pins: &PinDir, name: &'static str) -> Result<Map, MapsError> {
    let path = pins.map_path(name);
    if !path.exists() {
        return Err(MapsError::NotPinned { path });
    }
    MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|source| MapsError::OpenPinned { path, source })
}

/// The trace's source trie pinned in `pins` (`sip-xdp trace`).
pub fn open_traced(pins: &PinDir) -> Result<LpmTrie<MapData, [u8; 16], u32>, MapsError> {
    LpmTrie::try_from(open_pin(pins, map_names::TRACED)?).map_err(map_err(map_names::TRACED))
}

/// The trace's ring buffer pinned in `pins`.
pub fn open_trace_events(pins: &PinDir) -> Result<RingBuf<MapData>, MapsError> {
    RingBuf::try_from(open_pin(pins, map_names::TRACE_EVENTS)?)
        .map_err(map_err(map_names::TRACE_EVENTS))
}

/// The ban event ring buffer pinned in `pins`.
pub fn open_ban_events(pins: &PinDir) -> Result<RingBuf<MapData>, MapsError> {
    RingBuf::try_from(open_pin(pins, map_names::BAN_EVENTS)?)
        .map_err(map_err(map_names::BAN_EVENTS))
}

fn capacity(map: &Map) -> u32 {
    match map {
        Map::LruHashMap(data) | Map::HashMap(data) => {
            data.info().map(|info| info.max_entries()).unwrap_or(0)
        }
        _ => 0,
    }
}

impl SipMaps {
    /// Opens the maps pinned in `pins` (those of an attached program, or of a running daemon).
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapsError> {
        Self::build(|name| open_pin(pins, name))
    }

    /// Takes the maps out of a freshly loaded object.
    pub fn take_from(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Self::build(|name| take(ebpf, name))
    }

    fn build(
        mut take: impl FnMut(&'static str) -> Result<Map, MapsError>,
    ) -> Result<Self, MapsError> {
        let sources = take(map_names::SOURCES)?;
        let sources_capacity = capacity(&sources);
        let bans = take(map_names::BANS)?;
        let bans_capacity = capacity(&bans);
        let verified = take(map_names::VERIFIED)?;
        let verified_capacity = capacity(&verified);
        let prefixes = take(map_names::PREFIXES)?;
        let prefixes_capacity = capacity(&prefixes);
        let prefix_bans = take(map_names::PREFIX_BANS)?;
        let prefix_bans_capacity = capacity(&prefix_bans);
        let signatures = match take(map_names::SIGNATURES) {
            Ok(map) => Some(map),
            Err(MapsError::Missing(_) | MapsError::NotPinned { .. }) => None,
            Err(e) => return Err(e),
        };
        let signatures_capacity = signatures.as_ref().map_or(0, capacity);
        let mut maps = Self {
            signatures: signatures
                .map(HashMap::try_from)
                .transpose()
                .map_err(map_err(map_names::SIGNATURES))?,
            signatures_capacity,
            prefixes: HashMap::try_from(prefixes).map_err(map_err(map_names::PREFIXES))?,
            prefixes_capacity,
            prefix_bans: HashMap::try_from(prefix_bans).map_err(map_err(map_names::PREFIX_BANS))?,
            prefix_bans_capacity,
            verified_capacity,
            verified: HashMap::try_from(verified).map_err(map_err(map_names::VERIFIED))?,
            answers: HashMap::try_from(take(map_names::ANSWERS)?)
                .map_err(map_err(map_names::ANSWERS))?,
            flows: HashMap::try_from(take(map_names::FLOWS)?).map_err(map_err(map_names::FLOWS))?,
            sources_capacity,
            bans_capacity,
            config: Array::try_from(take(map_names::CONFIG)?)
                .map_err(map_err(map_names::CONFIG))?,
            active_config: Array::try_from(take(map_names::ACTIVE_CONFIG)?)
                .map_err(map_err(map_names::ACTIVE_CONFIG))?,
            sources: HashMap::try_from(sources).map_err(map_err(map_names::SOURCES))?,
            allowlist: LpmTrie::try_from(take(map_names::ALLOWLIST)?)
                .map_err(map_err(map_names::ALLOWLIST))?,
            denylist: LpmTrie::try_from(take(map_names::DENYLIST)?)
                .map_err(map_err(map_names::DENYLIST))?,
            protected: LpmTrie::try_from(take(map_names::PROTECTED)?)
                .map_err(map_err(map_names::PROTECTED))?,
            bans: HashMap::try_from(bans).map_err(map_err(map_names::BANS))?,
            counters: PerCpuArray::try_from(take(map_names::COUNTERS)?)
                .map_err(map_err(map_names::COUNTERS))?,
            list_presence: Array::try_from(take(map_names::LIST_PRESENCE)?)
                .map_err(map_err(map_names::LIST_PRESENCE))?,
            global_buckets: Array::try_from(take(map_names::GLOBAL_BUCKETS)?)
                .map_err(map_err(map_names::GLOBAL_BUCKETS))?,
        };
        // Lists pinned by a build without LIST_PRESENCE (or filled while a flag was lost) must
        // be looked up again. Only ever set here: clearing could race a locked writer's insert.
        if !maps.allowlist_is_empty() {
            maps.set_presence(list_presence::ALLOWLIST, true)?;
        }
        if !maps.denylist_is_empty() {
            maps.set_presence(list_presence::DENYLIST, true)?;
        }
        if maps.protected.keys().next().is_some() {
            maps.set_presence(list_presence::PROTECTED, true)?;
        }
        // Likewise the latest prefix-ban end: raised to cover the records there, never lowered.
        maps.cover_prefix_ban_records()?;
        Ok(maps)
    }

    fn set_presence(&mut self, slot: u32, present: bool) -> Result<(), MapsError> {
        self.list_presence
            .set(slot, u32::from(present), 0)
            .map_err(map_err(map_names::LIST_PRESENCE))
    }

    /// True only when the trie certainly has no key (an error reading it counts as entries).
    fn allowlist_is_empty(&self) -> bool {
        self.allowlist.keys().next().is_none()
    }

    fn denylist_is_empty(&self) -> bool {
        self.denylist.keys().next().is_none()
    }

    /// Capacity of the per-source LRU map.
    pub fn sources_capacity(&self) -> u32 {
        self.sources_capacity
    }

    /// Replaces the configuration the program reads, atomically for every packet: the idle
    /// `CONFIG` slot is written whole, then `ACTIVE_CONFIG` is flipped to it. When this returns,
    /// no packet is still using the previous configuration.
    pub fn write_config(&mut self, config: &Config) -> Result<(), MapsError> {
        let active = self
            .active_config
            .get(&0, 0)
            .map_err(map_err(map_names::ACTIVE_CONFIG))?
            & 1;
        let idle = active ^ 1;
        self.config
            .set(idle, config, 0)
            .map_err(map_err(map_names::CONFIG))?;
        self.active_config
            .set(0, idle, 0)
            .map_err(map_err(map_names::ACTIVE_CONFIG))?;
        // The next write reuses the slot just retired: wait until no packet can still be
        // reading it. MEMBARRIER_CMD_GLOBAL waits for an RCU grace period, which outlasts every
        // XDP run that began before it; where the kernel refuses it (nohz_full), a pause far
        // longer than one packet's run does in practice.
        const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
        // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
        if unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) } != 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }

    /// The configuration the program reads now (zeroed, version 0, until one was written).
    pub fn read_config(&self) -> Result<Config, MapsError> {
        let active = self
            .active_config
            .get(&0, 0)
            .map_err(map_err(map_names::ACTIVE_CONFIG))?
            & 1;
        self.config
            .get(&active, 0)
            .map_err(map_err(map_names::CONFIG))
    }

    pub fn counters(&self) -> Result<Counters, MapsError> {
        let mut slots = Vec::with_capacity(self.counters.len() as usize);
        for per_cpu in self.counters.iter() {
            let per_cpu = per_cpu.map_err(map_err(map_names::COUNTERS))?;
            slots.push(per_cpu.iter().sum());
        }
        Ok(Counters { slots })
    }

    pub fn allow(&mut self, net: IpNet) -> Result<(), MapsError> {
        let net = check_listable(net)?;
        // Before the insert: the program must never skip a list that has entries.
        self.set_presence(list_presence::ALLOWLIST, true)?;
        self.allowlist
            .insert(&cidr_key(net), AllowEntry::default(), 0)
            .map_err(map_err(map_names::ALLOWLIST))?;
        if covers_mapped(&net) {
            sync_allow_hole(&mut self.allowlist, map_names::ALLOWLIST)?;
        }
        Ok(())
    }

    /// Removes an allowlist entry; `false` when there was none.
    pub fn unallow(&mut self, net: IpNet) -> Result<bool, MapsError> {
        let removed = absent_is_false(self.allowlist.remove(&cidr_key(net)), map_names::ALLOWLIST)?;
        if covers_mapped(&net) || is_ipv4_any(&net) {
            sync_allow_hole(&mut self.allowlist, map_names::ALLOWLIST)?;
        }
        // After the removal, and only once the trie reads empty.
        if self.allowlist_is_empty() {
            self.set_presence(list_presence::ALLOWLIST, false)?;
        }
        Ok(removed)
    }

    pub fn allowlist(&self) -> Result<Vec<IpNet>, MapsError> {
        listed_nets(&self.allowlist, map_names::ALLOWLIST)
    }

    /// Puts a CIDR on the protected list: rate-limited, never banned.
    pub fn protect(&mut self, net: IpNet) -> Result<(), MapsError> {
        let net = check_listable(net)?;
        self.set_presence(list_presence::PROTECTED, true)?;
        self.protected
            .insert(&cidr_key(net), AllowEntry::default(), 0)
            .map_err(map_err(map_names::PROTECTED))?;
        if covers_mapped(&net) {
            sync_allow_hole(&mut self.protected, map_names::PROTECTED)?;
        }
        Ok(())
    }

    pub fn unprotect(&mut self, net: IpNet) -> Result<bool, MapsError> {
        let removed = absent_is_false(self.protected.remove(&cidr_key(net)), map_names::PROTECTED)?;
        if covers_mapped(&net) || is_ipv4_any(&net) {
            sync_allow_hole(&mut self.protected, map_names::PROTECTED)?;
        }
        if self.protected.keys().next().is_none() {
            self.set_presence(list_presence::PROTECTED, false)?;
        }
        Ok(removed)
    }

    pub fn protected(&self) -> Result<Vec<IpNet>, MapsError> {
        listed_nets(&self.protected, map_names::PROTECTED)
    }

    /// Denies a CIDR until `expires_at_ns` (monotonic), or for good with 0.
    pub fn deny(&mut self, net: IpNet, expires_at_ns: u64) -> Result<(), MapsError> {
        let net = check_listable(net)?;
        self.set_presence(list_presence::DENYLIST, true)?;
        self.denylist
            .insert(&cidr_key(net), DenyEntry { expires_at_ns }, 0)
            .map_err(map_err(map_names::DENYLIST))?;
        if covers_mapped(&net) {
            self.sync_deny_hole()?;
        }
        Ok(())
    }

    pub fn undeny(&mut self, net: IpNet) -> Result<bool, MapsError> {
        let removed = absent_is_false(self.denylist.remove(&cidr_key(net)), map_names::DENYLIST)?;
        if covers_mapped(&net) || is_ipv4_any(&net) {
            self.sync_deny_hole()?;
        }
        if self.denylist_is_empty() {
            self.set_presence(list_presence::DENYLIST, false)?;
        }
        Ok(removed)
    }

    /// The denylist's entries, without the hole.
    pub fn denylist(&self) -> Result<Vec<(IpNet, DenyEntry)>, MapsError> {
        let mut entries = Vec::new();
        for kv in self.denylist.iter() {
            let (key, entry) = kv.map_err(map_err(map_names::DENYLIST))?;
            if !is_hole_key(&key) || entry.expires_at_ns != DENY_HOLE_EXPIRES_AT_NS {
                entries.push((key_cidr(&key), entry));
            }
        }
        Ok(entries)
    }

    /// Keeps the deny hole in step (see [`sync_hole`]).
    fn sync_deny_hole(&mut self) -> Result<(), MapsError> {
        let hole = DenyEntry {
            expires_at_ns: DENY_HOLE_EXPIRES_AT_NS,
        };
        sync_hole(&mut self.denylist, map_names::DENYLIST, hole, |entry| {
            entry.expires_at_ns == DENY_HOLE_EXPIRES_AT_NS
        })
    }

    /// Bans and strike histories in the durable `BANS` table, keyed like `SOURCES`.
    pub fn bans(&self) -> Result<Vec<(SourceKey, DurableBan)>, MapsError> {
        self.bans
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::BANS)))
            .collect()
    }

    /// One source's durable ban record (keyed like `SOURCES`), if it has one.
    pub fn ban(&self, key: [u8; 16]) -> Result<Option<DurableBan>, MapsError> {
        match self.bans.get(&SourceKey { addr: key }, 0) {
            Ok(ban) => Ok(Some(ban)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::BANS)(e)),
        }
    }

    /// The admission budget's arrival time (`global_buckets::ADMISSION`), 0 before its first
    /// draw.
    pub fn admission_tat_ns(&self) -> Result<u64, MapsError> {
        self.global_buckets
            .get(&sip_xdp_common::global_buckets::ADMISSION, 0)
            .map_err(map_err(map_names::GLOBAL_BUCKETS))
    }

    /// Writes a ban record (restoring saved bans, migrating an older source table).
    pub fn set_ban(&mut self, key: [u8; 16], record: &DurableBan) -> Result<(), MapsError> {
        self.bans
            .insert(SourceKey { addr: key }, record, 0)
            .map_err(map_err(map_names::BANS))
    }

    /// Removes a ban record; `false` when there was none.
    pub fn forget_ban(&mut self, key: [u8; 16]) -> Result<bool, MapsError> {
        absent_is_false(self.bans.remove(&SourceKey { addr: key }), map_names::BANS)
    }

    /// Capacity of the ban table.
    pub fn bans_capacity(&self) -> u32 {
        self.bans_capacity
    }

    /// Per-source state, keyed as the program keys it (IPv6 masked by the config's prefix).
    pub fn source(&self, key: [u8; 16]) -> Result<Option<SourceState>, MapsError> {
        match self.sources.get(&SourceKey { addr: key }, 0) {
            Ok(state) => Ok(Some(state)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::SOURCES)(e)),
        }
    }

    pub fn sources(&self) -> Result<Vec<(SourceKey, SourceState)>, MapsError> {
        self.sources
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::SOURCES)))
            .collect()
    }

    /// At most `limit` entries of `SOURCES` (a bounded walk, for live views), and whether the
    /// table held more.
    pub fn sources_bounded(
        &self,
        limit: usize,
    ) -> Result<(Vec<(SourceKey, SourceState)>, bool), MapsError> {
        let mut entries = Vec::new();
        for kv in self.sources.iter() {
            if entries.len() == limit {
                return Ok((entries, true));
            }
            entries.push(kv.map_err(map_err(map_names::SOURCES))?);
        }
        Ok((entries, false))
    }

    /// Writes a source's state (restoring saved bans after a reboot).
    pub fn set_source(&mut self, key: [u8; 16], state: &SourceState) -> Result<(), MapsError> {
        self.sources
            .insert(SourceKey { addr: key }, state, 0)
            .map_err(map_err(map_names::SOURCES))
    }

    /// Removes the source's `SOURCES` entry only (its buckets); its ban record stays.
    pub fn forget_tracked(&mut self, key: [u8; 16]) -> Result<bool, MapsError> {
        absent_is_false(
            self.sources.remove(&SourceKey { addr: key }),
            map_names::SOURCES,
        )
    }

    /// Lifts a ban the program imposed (rate or auth) and forgets the source's strikes: its
    /// entry in `SOURCES`, its record in `BANS`, the failures counted from its answers and the
    /// bans of its flows. True when any existed.
    pub fn forget_source(&mut self, key: [u8; 16]) -> Result<bool, MapsError> {
        let banned = self.forget_ban(key)?;
        let tracked = absent_is_false(
            self.sources.remove(&SourceKey { addr: key }),
            map_names::SOURCES,
        )?;
        let answered = absent_is_false(
            self.answers.remove(&SourceKey { addr: key }),
            map_names::ANSWERS,
        )?;
        let mut flows = false;
        for (flow, _) in self.flows_of(key)? {
            flows |= self.forget_flow(&flow)?;
        }
        Ok(banned || tracked || answered || flows)
    }

    /// Clients verified by the egress program, keyed like `SOURCES`.
    pub fn verified(&self) -> Result<Vec<(SourceKey, VerifiedSource)>, MapsError> {
        self.verified
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::VERIFIED)))
            .collect()
    }

    /// One client's verification, if it has one.
    pub fn verified_source(&self, key: [u8; 16]) -> Result<Option<VerifiedSource>, MapsError> {
        match self.verified.get(&SourceKey { addr: key }, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::VERIFIED)(e)),
        }
    }

    /// Capacity of `VERIFIED`.
    pub fn verified_capacity(&self) -> u32 {
        self.verified_capacity
    }

    /// What the answers say about each client, keyed like `SOURCES`.
    pub fn answer_states(&self) -> Result<Vec<(SourceKey, AnswerState)>, MapsError> {
        self.answers
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::ANSWERS)))
            .collect()
    }

    /// One client's answer state.
    pub fn answer_state(&self, key: [u8; 16]) -> Result<Option<AnswerState>, MapsError> {
        match self.answers.get(&SourceKey { addr: key }, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::ANSWERS)(e)),
        }
    }

    /// Every client flow (address and port) the egress program tracks.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowState)>, MapsError> {
        self.flows
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::FLOWS)))
            .collect()
    }

    /// The flows of one address.
    /// Lifts one phone's ban (a flow of a verified address): its `FLOWS` entry goes, with its
    /// failures and strikes; the address's verification stays.
    pub fn forget_flow(&mut self, flow: &FlowKey) -> Result<bool, MapsError> {
        absent_is_false(self.flows.remove(flow), map_names::FLOWS)
    }

    /// A flow as `ban list` names it: `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
    pub fn flow_name(flow: &FlowKey) -> String {
        std::net::SocketAddr::new(key_addr(flow.addr), flow.port).to_string()
    }

    pub fn flows_of(&self, addr: [u8; 16]) -> Result<Vec<(FlowKey, FlowState)>, MapsError> {
        Ok(self
            .flows()?
            .into_iter()
            .filter(|(flow, _)| flow.addr == addr)
            .collect())
    }
}

/// The key of the hole, which is also IPv4 `0.0.0.0/0`'s.
fn hole_key() -> Key<[u8; 16]> {
    Key::new(MAPPED_HOLE_PREFIX, ipv4_mapped([0; 4]))
}

fn is_hole_key(key: &Key<[u8; 16]>) -> bool {
    key.prefix_len() == MAPPED_HOLE_PREFIX && key.data() == ipv4_mapped([0; 4])
}

/// The nets of an allowlist-shaped trie, without its hole.
fn listed_nets(
    trie: &LpmTrie<MapData, [u8; 16], AllowEntry>,
    name: &'static str,
) -> Result<Vec<IpNet>, MapsError> {
    let mut nets = Vec::new();
    for kv in trie.iter() {
        let (key, entry) = kv.map_err(map_err(name))?;
        if entry.flags & allow_flags::HOLE == 0 {
            nets.push(key_cidr(&key));
        }
    }
    Ok(nets)
}

/// [`sync_hole`] for the allowlist and the protected list.
fn sync_allow_hole(
    trie: &mut LpmTrie<MapData, [u8; 16], AllowEntry>,
    name: &'static str,
) -> Result<(), MapsError> {
    let hole = AllowEntry {
        flags: allow_flags::HOLE,
    };
    sync_hole(trie, name, hole, |entry| {
        entry.flags & allow_flags::HOLE != 0
    })
}

/// Keeps a list's hole in step: present while an IPv6 entry covers `::ffff:0:0/96` and no IPv4
/// `0.0.0.0/0` entry holds its key (`is_hole` tells the hole's value from a real entry's).
fn sync_hole<V: aya::Pod>(
    trie: &mut LpmTrie<MapData, [u8; 16], V>,
    name: &'static str,
    hole: V,
    is_hole: impl Fn(&V) -> bool,
) -> Result<(), MapsError> {
    let mut covered = false;
    let mut at_hole = None;
    for kv in trie.iter() {
        let (key, entry) = kv.map_err(map_err(name))?;
        if is_hole_key(&key) {
            at_hole = Some(is_hole(&entry));
        } else if covers_mapped(&key_cidr(&key)) {
            covered = true;
        }
    }
    match (covered, at_hole) {
        (true, None) => trie.insert(&hole_key(), hole, 0).map_err(map_err(name)),
        (false, Some(true)) => absent_is_false(trie.remove(&hole_key()), name).map(drop),
        _ => Ok(()),
    }
}

fn absent_is_false(result: Result<(), MapError>, name: &'static str) -> Result<bool, MapsError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(map_err(name)(e)),
    }
}
