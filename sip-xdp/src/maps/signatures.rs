//! `SIGNATURES` (scanner fingerprints and trap accounts the scan program looks up, with their
//! hit counters) and whether the scan program sits in `SCANNERS`.
//!
//! A program built before the scan has neither map: [`SipMaps`] then holds no `SIGNATURES`,
//! and every call here says so instead of failing the whole set of maps.
use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::MapData;
use sip_xdp_common::{SCAN_SLOT, SignatureEntry, SignatureKey, map_names};

use super::{MapsError, SipMaps, absent_is_false, map_err};
use crate::loader::PinDir;

impl SipMaps {
    /// True when the program has a `SIGNATURES` table (a build with the scan program).
    pub fn has_signatures(&self) -> bool {
        self.signatures.is_some()
    }

    fn signatures_map(
        &self,
    ) -> Result<&aya::maps::HashMap<MapData, SignatureKey, SignatureEntry>, MapsError> {
        self.signatures
            .as_ref()
            .ok_or(MapsError::Missing(map_names::SIGNATURES))
    }

    fn signatures_map_mut(
        &mut self,
    ) -> Result<&mut aya::maps::HashMap<MapData, SignatureKey, SignatureEntry>, MapsError> {
        self.signatures
            .as_mut()
            .ok_or(MapsError::Missing(map_names::SIGNATURES))
    }

    /// Every signature in the kernel's table, with its hits.
    pub fn signatures(&self) -> Result<Vec<(SignatureKey, SignatureEntry)>, MapsError> {
        self.signatures_map()?
            .iter()
            .map(|kv| kv.map_err(map_err(map_names::SIGNATURES)))
            .collect()
    }

    /// Capacity of `SIGNATURES` (0 without one).
    pub fn signatures_capacity(&self) -> u32 {
        self.signatures_capacity
    }

    /// Puts `key` in the table; an entry already there keeps its hits. False when it was there.
    pub fn add_signature(&mut self, key: &SignatureKey) -> Result<bool, MapsError> {
        let map = self.signatures_map_mut()?;
        match map.get(key, 0) {
            Ok(_) => return Ok(false),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(map_names::SIGNATURES)(e)),
        }
        map.insert(key, SignatureEntry::default(), 0)
            .map_err(map_err(map_names::SIGNATURES))?;
        Ok(true)
    }

    /// Takes `key` out of the table; false when it was not there.
    pub fn remove_signature(&mut self, key: &SignatureKey) -> Result<bool, MapsError> {
        absent_is_false(
            self.signatures_map_mut()?.remove(key),
            map_names::SIGNATURES,
        )
    }

    /// Makes the table hold exactly `wanted`: what is missing goes in (hits 0), what is not
    /// wanted goes out, and the entries that stay keep their hit counters. Returns (added,
    /// removed).
    pub fn sync_signatures(
        &mut self,
        wanted: &[SignatureKey],
    ) -> Result<(usize, usize), MapsError> {
        let present: Vec<SignatureKey> = self.signatures()?.into_iter().map(|(k, _)| k).collect();
        let mut removed = 0;
        for key in present.iter().filter(|k| !wanted.contains(k)) {
            if self.remove_signature(key)? {
                removed += 1;
            }
        }
        let mut added = 0;
        for key in wanted.iter().filter(|k| !present.contains(k)) {
            if self.add_signature(key)? {
                added += 1;
            }
        }
        Ok((added, removed))
    }
}

/// True when the scan program sits in the pinned `SCANNERS` array, so the XDP program's tail
/// call reaches it. False without the array (a build without the scan) or with its slot empty.
pub fn scan_program_in_place(pins: &PinDir) -> bool {
    let path = pins.map_path(map_names::SCANNERS);
    if !path.exists() {
        return false;
    }
    let Ok(map) = MapData::from_pin(&path) else {
        return false;
    };
    // From user space a program array's lookup gives the id of the program in the slot, or
    // ENOENT when the slot is empty.
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let key: u32 = SCAN_SLOT;
    let mut prog_id: u32 = 0;
    // union bpf_attr, map_elem form: { __u32 map_fd; __aligned_u64 key; __aligned_u64 value;
    // __u64 flags; }.
    let mut attr = [0u64; 4];
    attr[0] = u64::from(map.fd().as_fd().as_raw_fd() as u32);
    attr[1] = std::ptr::from_ref(&key) as u64;
    attr[2] = std::ptr::from_mut(&mut prog_id) as u64;
    // SAFETY: a zero-padded bpf_attr in the map_elem form; key and value point at u32s that
    // outlive the call, the sizes a program array has (4-byte key, 4-byte id on lookup).
    let found = unsafe { crate::loader::bpf_syscall(BPF_MAP_LOOKUP_ELEM, &mut attr) };
    found.is_ok() && prog_id != 0
}
