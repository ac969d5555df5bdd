//! Maps pinned by an older build: checked against this build's layouts, rebuilt where their
//! contents are, and the bans of a sip-xdp 0.1 source table carried over.
use std::path::Path;

use aya::maps::{MapError, MapInfo};
use sip_xdp_common::map_names;

use super::{PINNED, PinDir, PinError, io_err};

/// What `PinDir::migrate_incompatible` carried over from maps pinned by an older build.
#[derive(Debug, Default)]
pub struct Migration {
    /// Maps unpinned because their layout changed; the load creates them anew.
    pub replaced: Vec<&'static str>,
    /// Bans (with strikes) read out of an older source table, for the new `BANS` table.
    pub bans: Vec<(sip_xdp_common::SourceKey, sip_xdp_common::DurableBan)>,
}

/// Value size of `SourceState` in sip-xdp 0.1 (four buckets), whose bans a new build keeps.
const SOURCE_STATE_V1_SIZE: u32 = 88;

/// The bans and strike histories of a sip-xdp 0.1 source table (`SourceState` with four
/// buckets: `tat_ns[4]`, then `banned_until_ns`, `ban_duration_ns` at bytes 32 and 40,
/// `strikes` at 76, `ban_class` at 80, `ban_flags` at 81). Any other layout carries nothing.
fn read_v1_bans(
    path: &Path,
    value_size: u32,
) -> Result<Vec<(sip_xdp_common::SourceKey, sip_xdp_common::DurableBan)>, MapError> {
    if value_size != SOURCE_STATE_V1_SIZE {
        return Ok(Vec::new());
    }
    let map = aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(path)?)?;
    let table: aya::maps::HashMap<_, sip_xdp_common::SourceKey, [u8; 88]> =
        aya::maps::HashMap::try_from(map)?;
    let u64_at = |v: &[u8; 88], at: usize| u64::from_ne_bytes(v[at..at + 8].try_into().unwrap());
    let mut bans = Vec::new();
    for entry in table.iter() {
        let (key, v) = entry?;
        let banned_until_ns = u64_at(&v, 32);
        if banned_until_ns == 0 {
            continue;
        }
        bans.push((
            key,
            sip_xdp_common::DurableBan {
                banned_until_ns,
                ban_duration_ns: u64_at(&v, 40),
                strikes: u32::from_ne_bytes(v[76..80].try_into().unwrap()),
                ban_class: v[80],
                ban_flags: v[81],
                _pad: [0; 2],
            },
        ));
    }
    Ok(bans)
}

impl PinDir {
    /// Checks that maps pinned by an earlier run have the layout this binary's program expects,
    /// so a program never runs against maps whose values it would misread. A map whose contents
    /// are rebuilt at every attach (config, counters, presence flags, fragment fates) or carried
    /// over here (the bans of an older source table) is unpinned, to be created anew; the lists
    /// must match.
    pub(super) fn migrate_incompatible(&self) -> Result<Migration, PinError> {
        let mut migration = Migration::default();
        for layout in PINNED.iter().filter(|layout| layout.checked) {
            let path = self.map_path(layout.name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|source| PinError::Map {
                path: path.clone(),
                source,
            })?;
            let entries_differ = layout
                .max_entries
                .is_some_and(|max| info.max_entries() != max);
            if info.key_size() == layout.key_size
                && info.value_size() == layout.value_size
                && !entries_differ
            {
                continue;
            }
            let what = format!(
                "key/value size {}/{} and {} entries, expected {}/{}",
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                layout.key_size,
                layout.value_size
            );
            if !layout.rebuildable {
                return Err(PinError::Incompatible { path, what });
            }
            if layout.name == map_names::SOURCES {
                migration.bans =
                    read_v1_bans(&path, info.value_size()).map_err(|source| PinError::Map {
                        path: path.clone(),
                        source,
                    })?;
            }
            std::fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
            migration.replaced.push(layout.name);
        }
        Ok(migration)
    }
}
