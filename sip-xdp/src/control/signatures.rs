//! Scanner fingerprints and trap accounts: the kernel's `SIGNATURES` table kept equal to the
//! config's `[signatures]` lists plus the runtime additions minus the runtime removals
//! (`sip-xdp signature add|del`, saved in the state file), and the config flag
//! `flags::SIGNATURES` on exactly while the scan program is in place and the table has entries.
use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sip_xdp_common::{CONFIG_VERSION, Config, MAX_SIGNATURES, SignatureKind, flags};

use super::Control;
use crate::{
    config::{Settings, token_problem},
    loader::PinDir,
    maps::{SipMaps, scan_program_in_place},
    state::{self, AppliedSignatures, Clocks, SignatureChange, StateFile},
};

/// One signature as `signature list` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureView {
    pub token: String,
    /// "fingerprint" or "trap".
    pub kind: &'static str,
    /// "config" (the `[signatures]` lists as the last attach applied them) or "runtime" (added
    /// with `signature add`); "kernel" for an entry only the kernel's table holds (written by
    /// another state directory's attach).
    pub origin: &'static str,
    /// In the kernel's table now.
    pub live: bool,
    /// Requests that matched it since it went in (a race between CPUs can lose a count).
    pub hits: u64,
    /// Unix seconds of the last match.
    pub last_hit_at: Option<u64>,
}

/// What `signature list` reports.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureList {
    pub signatures: Vec<SignatureView>,
    /// Config entries taken out with `signature del` (kept out across reattaches).
    pub removed_from_config: Vec<SignatureView>,
    /// The scan program is in place and `flags::SIGNATURES` is set: requests are scanned now.
    pub scanning: bool,
    /// The kernel's table is there (pinned maps of a build with the scan program).
    pub live: bool,
    pub capacity: u32,
}

/// What a `signature add|del` did.
#[derive(Debug, Default)]
pub struct SignatureReport {
    pub lines: Vec<String>,
    /// Tokens `del` found nothing to remove for.
    pub missing: Vec<String>,
    /// False when the kernel's table is not there: the change applies at the next attach.
    pub live: bool,
    /// Requests are scanned now (scan program in place, flag set).
    pub scanning: bool,
}

impl SignatureReport {
    pub fn fail_if_missing(&self) -> Result<()> {
        if self.missing.is_empty() {
            return Ok(());
        }
        bail!(
            "not found: {} (see `sip-xdp signature list`)",
            self.missing.join(", ")
        )
    }
}

fn applied_of(settings: &Settings) -> AppliedSignatures {
    let sig = &settings.signatures;
    AppliedSignatures {
        enabled: sig.enabled,
        fingerprints: sig.tokens(SignatureKind::Fingerprint),
        traps: sig.tokens(SignatureKind::Trap),
    }
}

/// The tokens of the command line, lowercased, each checked to be one the program can match.
fn checked_tokens(kind: SignatureKind, tokens: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for token in tokens {
        if let Some(problem) = token_problem(kind, token, "the command line") {
            bail!("{problem}");
        }
        let lower = token.to_ascii_lowercase();
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

impl Control {
    /// The signatures in force and in the kernel, with their hits. `settings` stands in for
    /// the config lists when no attach has recorded them yet.
    pub fn signatures(&self, settings: &Settings) -> Result<SignatureList> {
        let mut state = StateFile::load(&self.state_dir)?;
        if state.signatures.applied.is_none() {
            state.signatures.applied = Some(applied_of(settings));
        }
        let maps = self.live_maps()?;
        let live_entries = match &maps {
            Some(maps) if maps.has_signatures() => Some(maps.signatures()?),
            _ => None,
        };
        let clocks = Clocks::now();
        let entry_of = |key: &sip_xdp_common::SignatureKey| {
            live_entries
                .as_ref()
                .and_then(|entries| entries.iter().find(|(k, _)| k == key))
                .map(|(_, e)| *e)
        };
        let view = |kind: SignatureKind, token: String, origin, key| {
            let entry = entry_of(&key);
            SignatureView {
                token,
                kind: kind.name(),
                origin,
                live: entry.is_some(),
                hits: entry.map_or(0, |e| e.hits),
                last_hit_at: entry
                    .filter(|e| e.last_hit_ns != 0)
                    .map(|e| clocks.mono_to_wall_secs(e.last_hit_ns)),
            }
        };
        let sig = &state.signatures;
        let wanted = sig.wanted();
        let mut signatures: Vec<SignatureView> = wanted
            .iter()
            .map(|(kind, token, key)| view(*kind, token.clone(), sig.origin(*kind, token), *key))
            .collect();
        for (key, _) in live_entries.iter().flatten() {
            if wanted.iter().any(|(_, _, k)| k == key) {
                continue;
            }
            let Some(kind) = SignatureKind::from_index(usize::from(key.kind)) else {
                continue;
            };
            let token = String::from_utf8_lossy(key.token_bytes()).into_owned();
            signatures.push(view(kind, token, "kernel", *key));
        }
        let removed_from_config = sig
            .removed
            .iter()
            .filter_map(|e| {
                let key = sip_xdp_common::SignatureKey::new(e.kind, e.token.as_bytes()).ok()?;
                Some(view(e.kind, e.token.clone(), "config", key))
            })
            .collect();
        let (scanning, capacity) = match &maps {
            Some(maps) => (scanning_now(maps, &self.pins), maps.signatures_capacity()),
            None => (false, 0),
        };
        Ok(SignatureList {
            signatures,
            removed_from_config,
            scanning,
            live: live_entries.is_some(),
            capacity,
        })
    }

    /// `signature add KIND TOKEN...`: in force at once and after every restart.
    pub fn signature_add(
        &self,
        settings: &Settings,
        kind: SignatureKind,
        tokens: &[String],
    ) -> Result<SignatureReport> {
        let tokens = checked_tokens(kind, tokens)?;
        self.signature_edit(settings, |state, report| {
            for token in &tokens {
                match state.signatures.add(kind, token) {
                    SignatureChange::AlreadyThere => report
                        .lines
                        .push(format!("{} {token:?} is already listed", kind.name())),
                    _ => report
                        .lines
                        .push(format!("added {} {token:?}", kind.name())),
                }
            }
            let total = state.signatures.wanted().len();
            if total > MAX_SIGNATURES as usize {
                bail!(
                    "{total} signatures would be listed, more than the {MAX_SIGNATURES} the \
                     kernel's SIGNATURES table holds; remove some first (`sip-xdp signature \
                     del`, or shorten [signatures] in the config)"
                );
            }
            Ok(())
        })
    }

    /// `signature del KIND TOKEN...`: out of force at once and after every restart, config
    /// entries included.
    pub fn signature_del(
        &self,
        settings: &Settings,
        kind: SignatureKind,
        tokens: &[String],
    ) -> Result<SignatureReport> {
        let tokens = checked_tokens(kind, tokens)?;
        self.signature_edit(settings, |state, report| {
            for token in &tokens {
                let origin = state.signatures.origin(kind, token);
                match state.signatures.remove(kind, token) {
                    SignatureChange::NotFound => {
                        report.missing.push(format!("{} {token:?}", kind.name()))
                    }
                    _ if origin == "config" => report.lines.push(format!(
                        "removed {} {token:?} (a config entry: kept out until `sip-xdp \
                         signature add` puts it back)",
                        kind.name()
                    )),
                    _ => report
                        .lines
                        .push(format!("removed {} {token:?}", kind.name())),
                }
            }
            Ok(())
        })
    }

    /// Under the state lock: the edit on the state file, the kernel's table brought to the new
    /// set, the flag set to match, the state saved; the table is put back if the save fails.
    fn signature_edit(
        &self,
        settings: &Settings,
        edit: impl FnOnce(&mut StateFile, &mut SignatureReport) -> Result<()>,
    ) -> Result<SignatureReport> {
        let _lock = state::lock(&self.state_dir)?;
        let mut state = StateFile::load(&self.state_dir)?;
        if state.signatures.applied.is_none() {
            // Never attached from this state directory: the CLI's config is the best guess of
            // the lists the next attach applies (which records its own).
            state.signatures.applied = Some(applied_of(settings));
        }
        let before = state.signatures.wanted();
        let mut report = SignatureReport::default();
        edit(&mut state, &mut report)?;
        let wanted: Vec<_> = state
            .signatures
            .wanted()
            .into_iter()
            .map(|(_, _, k)| k)
            .collect();
        let mut maps = self.live_maps()?.filter(SipMaps::has_signatures);
        report.live = maps.is_some();
        if let Some(maps) = maps.as_mut() {
            maps.sync_signatures(&wanted)
                .context("cannot write the kernel's SIGNATURES table; nothing was saved")?;
        }
        if let Err(e) = state.save(&self.state_dir) {
            if let Some(maps) = maps.as_mut() {
                let back: Vec<_> = before.into_iter().map(|(_, _, k)| k).collect();
                if let Err(undo) = maps.sync_signatures(&back) {
                    bail!(
                        "{e}; and the kernel's SIGNATURES table could not be put back as it was \
                         ({undo}): run `sip-xdp attach` again to bring it in line with the \
                         state file"
                    );
                }
            }
            bail!("{e}; the kernel's SIGNATURES table was left as it was");
        }
        if let Some(maps) = maps.as_mut() {
            let enabled = state.signatures.applied.as_ref().is_some_and(|a| a.enabled);
            set_signatures_flag(maps, &self.pins, enabled && !wanted.is_empty())?;
            report.scanning = scanning_now(maps, &self.pins);
        }
        Ok(report)
    }
}

/// True when requests are scanned now: the scan program in place and the flag set.
fn scanning_now(maps: &SipMaps, pins: &PinDir) -> bool {
    maps.read_config()
        .is_ok_and(|c| c.version == CONFIG_VERSION && c.has_flag(flags::SIGNATURES))
        && scan_program_in_place(pins)
}

/// Sets `flags::SIGNATURES` in the config in force to `wanted` (and the scan program in
/// place), rewriting the config the way every config change does; a config never written
/// (the program on its defaults) is left alone.
fn set_signatures_flag(maps: &mut SipMaps, pins: &PinDir, wanted: bool) -> Result<()> {
    let on = wanted && scan_program_in_place(pins);
    let _config_lock = pins.lock_config()?;
    let mut config = maps.read_config()?;
    if config.version != CONFIG_VERSION || config.has_flag(flags::SIGNATURES) == on {
        return Ok(());
    }
    config.flags ^= flags::SIGNATURES;
    maps.write_config(&config)?;
    Ok(())
}

/// At attach and at every config reload, under the state lock: records the config's lists in
/// the state file, brings the kernel's table to config ∪ runtime additions − runtime removals
/// (hit counters of the entries that stay are kept), and returns the config to write, its
/// `flags::SIGNATURES` on only when enabled, the scan program in place and the table not
/// empty. A warning when the lists cannot be applied.
pub fn apply_signatures(
    settings: &Settings,
    state: &mut StateFile,
    maps: &mut SipMaps,
    pins: &PinDir,
) -> Result<(Config, Option<String>)> {
    let mut config = settings.kernel_config();
    state.signatures.apply_config(applied_of(settings));
    let wanted: Vec<_> = state
        .signatures
        .wanted()
        .into_iter()
        .map(|(_, _, k)| k)
        .collect();
    let mut warning = None;
    if maps.has_signatures() {
        maps.sync_signatures(&wanted)
            .context("cannot write the kernel's SIGNATURES table")?;
    } else if settings.signatures.enabled {
        warning = Some(
            "signatures.enabled is on but this sip-xdp program has no SIGNATURES table (a build \
             before the scan program): no request is scanned for fingerprints or trap accounts; \
             rebuild sip-xdp and attach again"
                .to_owned(),
        );
    }
    let on = settings.signatures.enabled
        && maps.has_signatures()
        && !wanted.is_empty()
        && scan_program_in_place(pins);
    if settings.signatures.enabled && maps.has_signatures() && !wanted.is_empty() && !on {
        warning = Some(
            "signatures.enabled is on but the scan program is not in SCANNERS: no request is \
             scanned for fingerprints or trap accounts; run `sip-xdp check` to see whether the \
             kernel refuses it"
                .to_owned(),
        );
    }
    if on {
        config.flags |= flags::SIGNATURES;
    } else {
        config.flags &= !flags::SIGNATURES;
    }
    Ok((config, warning))
}
