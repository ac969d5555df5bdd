//! Loading the embedded XDP object: on its own (tests, `sip-xdp check`) or against the maps
//! pinned in a [`PinDir`], which is how `attach` and the daemon run it.
use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapError, ProgramArray},
    programs::{ProgramError, SchedClassifier, Xdp},
};
use sip_xdp_common::{
    DEFAULT_MAX_SOURCES, EGRESS_PROGRAM_NAME, PROGRAM_NAME, SCAN_PROGRAM_NAME, SCAN_SLOT, map_names,
};
use thiserror::Error;

use super::{Migration, PINNED_MAPS, PinDir, PinError};

/// The XDP program, built from `sip-xdp-ebpf` by build.rs. Empty when the eBPF toolchain was
/// missing at build time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sip-xdp-ebpf"));

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error(
        "this sip-xdp binary was built without its XDP program (the eBPF toolchain was missing at \
         build time); run scripts/setup-toolchain.sh as root, then rebuild"
    )]
    NoObject,
    #[error(
        "cannot load the sip-xdp eBPF object: {0} (are you root, or do you have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Object(#[from] aya::EbpfError),
    #[error(
        "the kernel rejected the sip-xdp XDP program: {0} (tested on Linux 6.1, 6.12 and 6.18 with XDP; `sip-xdp check` prints the verifier log)"
    )]
    Program(#[from] ProgramError),
    #[error(
        "the kernel rejected the sip-xdp TC egress program (the server's answers): {0}; `sip-xdp \
         check` prints the verifier log, and `[answers] enabled = false` runs the XDP filter \
         without it"
    )]
    EgressProgram(#[source] ProgramError),
    #[error(
        "the kernel rejected the sip-xdp scan program (scanner fingerprints and trap accounts): \
         {0}; `sip-xdp check` prints the verifier log, and `[signatures] enabled = false` runs \
         the XDP filter without it"
    )]
    ScanProgram(#[source] ProgramError),
    #[error(
        "cannot put the sip-xdp scan program into the SCANNERS program array: {0}; the XDP \
         program would pass every request unscanned"
    )]
    ScanSlot(#[source] MapError),
    #[error("the sip-xdp eBPF object has no program named {0}; rebuild sip-xdp")]
    MissingProgram(&'static str),
    #[error("max_sources must be between 1 and {max}, got {got}")]
    BadMaxSources { got: u32, max: u32 },
}

/// What can be chosen before the program is loaded (map sizes are fixed at creation).
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Capacity of the per-source LRU map; the least recently seen source is evicted past it.
    pub max_sources: u32,
    /// Load the TC egress program too (`[answers] enabled`).
    pub egress: bool,
    /// Load the scan program and put it in `SCANNERS` (`[signatures] enabled`). Without it the
    /// XDP program must not be told to scan (`flags::SIGNATURES`): each request would count a
    /// scan failure and pass unscanned.
    pub scan: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_sources: DEFAULT_MAX_SOURCES,
            egress: true,
            scan: true,
        }
    }
}

pub use sip_xdp_common::MAX_SOURCES_LIMIT;

impl LoadOptions {
    /// What every load checks before it touches the kernel: the object is embedded and the
    /// options are in range.
    fn check(&self) -> Result<(), LoaderError> {
        if EBPF_OBJECT.is_empty() {
            return Err(LoaderError::NoObject);
        }
        if self.max_sources == 0 || self.max_sources > MAX_SOURCES_LIMIT {
            return Err(LoaderError::BadMaxSources {
                got: self.max_sources,
                max: MAX_SOURCES_LIMIT,
            });
        }
        Ok(())
    }

    /// A loader for the embedded object with these options applied.
    fn loader<'a>(&self) -> EbpfLoader<'a> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(map_names::SOURCES, self.max_sources);
        loader
    }
}

/// Loads the object and the XDP program into the kernel (running the verifier), unattached.
pub fn load(options: &LoadOptions) -> Result<Ebpf, LoaderError> {
    options.check()?;
    load_with(options.loader(), options)
}

/// Loads a private copy of the programs whose clock is the replay slot (`REPLAY_NOW`), not the
/// system's: `sip-xdp replay` drives them with a capture's timestamps. Its maps are its own
/// (nothing pinned, nothing shared with an attached filter).
pub fn load_replay(options: &LoadOptions) -> Result<Ebpf, LoaderError> {
    options.check()?;
    let mut loader = options.loader();
    loader.override_global(sip_xdp_common::REPLAY_CLOCK_GLOBAL, &1u32, true);
    load_with(loader, options)
}

/// Loads the embedded object with `loader`, then the XDP program and, as `options` say, the
/// TC egress program and the scan program (running the verifier on each).
fn load_with(mut loader: EbpfLoader<'_>, options: &LoadOptions) -> Result<Ebpf, LoaderError> {
    let mut ebpf = loader.load(&super::btf::loadable(EBPF_OBJECT))?;
    xdp_program(&mut ebpf)?.load()?;
    if options.egress {
        egress_program(&mut ebpf)?
            .load()
            .map_err(LoaderError::EgressProgram)?;
    }
    if options.scan {
        load_scan(&mut ebpf)?;
    } else if let Some(map) = ebpf.map_mut(map_names::SCANNERS)
        && let Ok(mut slots) = ProgramArray::try_from(map)
    {
        // A scan program an earlier load left in the pinned array goes: nothing may reach it
        // while signatures are off (an empty slot is not an error).
        let _ = slots.clear_index(&SCAN_SLOT);
    }
    Ok(ebpf)
}

/// Loads the scan program and puts it in its `SCANNERS` slot, where the XDP program's tail call
/// finds it (the slot of a pinned array serves every later load until replaced).
fn load_scan(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    let program = scan_program(ebpf)?;
    program.load().map_err(LoaderError::ScanProgram)?;
    let fd = program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(LoaderError::ScanProgram)?;
    let map = ebpf
        .map_mut(map_names::SCANNERS)
        .ok_or(LoaderError::MissingProgram(SCAN_PROGRAM_NAME))?;
    let mut slots = ProgramArray::try_from(map).map_err(LoaderError::ScanSlot)?;
    slots
        .set(SCAN_SLOT, &fd, 0)
        .map_err(LoaderError::ScanSlot)?;
    Ok(())
}

/// The scan program inside a loaded object (loaded only with `LoadOptions::scan`).
pub fn scan_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    let program = ebpf
        .program_mut(SCAN_PROGRAM_NAME)
        .ok_or(LoaderError::MissingProgram(SCAN_PROGRAM_NAME))?;
    program.try_into().map_err(LoaderError::ScanProgram)
}

/// The TC egress program inside a loaded object (loaded only with `LoadOptions::egress`).
pub fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoaderError> {
    let program = ebpf
        .program_mut(EGRESS_PROGRAM_NAME)
        .ok_or(LoaderError::MissingProgram(EGRESS_PROGRAM_NAME))?;
    program.try_into().map_err(LoaderError::EgressProgram)
}

/// The sip-xdp XDP program inside a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoaderError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(LoaderError::MissingProgram(PROGRAM_NAME))?;
    Ok(program.try_into()?)
}

/// A program loaded against the pinned maps.
pub struct PinnedLoad {
    pub ebpf: Ebpf,
    /// True when the maps already existed: counters, bans and lists carried over.
    pub adopted_maps: bool,
    /// What was carried over from maps an older build pinned.
    pub migration: Migration,
    /// True when this load created the ban table: saved automatic bans go back into it.
    pub created_bans: bool,
    /// The same for the prefix ban table (created anew, or for the first time over a pin set
    /// an older build left): saved prefix bans go back into it.
    pub created_prefix_bans: bool,
    created_pins: Vec<PathBuf>,
}

impl PinnedLoad {
    /// Undoes what this load created (pins of maps that did not exist before), so a failed
    /// attach leaves the host as it found it.
    pub fn rollback(self, pins: &PinDir) {
        for path in &self.created_pins {
            let _ = std::fs::remove_file(path);
        }
        pins.remove_if_empty();
    }
}

#[derive(Debug, Error)]
pub enum PinnedLoadError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// Loads the program so that it uses the maps pinned in `pins`, creating and pinning any that
/// are missing. A program loaded this way shares counters, bans and lists with every earlier
/// and later load against the same directory.
pub fn load_pinned(options: &LoadOptions, pins: &PinDir) -> Result<PinnedLoad, PinnedLoadError> {
    options.check()?;
    pins.ensure()?;
    let migration = pins.migrate_incompatible()?;
    let created_bans = !pins.map_path(map_names::BANS).exists();
    let created_prefix_bans = !pins.map_path(map_names::PREFIX_BANS).exists();
    let adopted_maps =
        pins.map_path(map_names::SOURCES).exists() && pins.map_path(map_names::ALLOWLIST).exists();
    let created_pins: Vec<PathBuf> = PINNED_MAPS
        .iter()
        .map(|name| pins.map_path(name))
        .filter(|path| !path.exists())
        .collect();
    let paths: Vec<(&str, PathBuf)> = PINNED_MAPS
        .iter()
        .map(|&name| (name, pins.map_path(name)))
        .collect();
    let mut loader = options.loader();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    match load_with(loader, options) {
        Ok(ebpf) => Ok(PinnedLoad {
            ebpf,
            adopted_maps,
            migration,
            created_bans,
            created_prefix_bans,
            created_pins,
        }),
        Err(e) => {
            for path in &created_pins {
                let _ = std::fs::remove_file(path);
            }
            pins.remove_if_empty();
            Err(e.into())
        }
    }
}
