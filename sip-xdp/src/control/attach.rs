//! `attach`: the program loaded against the pinned maps, the config and the saved lists and
//! bans applied, every interface attached, or the host left as it was.
use std::net::IpAddr;

use anyhow::Result;
use sip_xdp_common::Config;

use super::{
    AttachReport, Control, check_interface, forget_sources_in, prefixes::restore_prefix_bans,
    reconcile::reconcile_locked, signatures::apply_signatures,
};
use crate::{
    config::Settings,
    loader::{self, AttachMode, AttachOutcome, LoadOptions},
    maps::SipMaps,
    state::{self, Clocks, StateFile},
};

impl Control {
    /// Loads the program against the pinned maps, applies the config and the saved lists, and
    /// attaches (or updates in place) every interface. Either all interfaces end up attached or
    /// the host is left as it was.
    pub fn attach(
        &self,
        settings: &Settings,
        ifaces: &[String],
        mode: AttachMode,
    ) -> Result<AttachReport> {
        for iface in ifaces {
            check_interface(iface)?;
        }
        // Before anything else is touched: a pin directory that would vanish with this command
        // refuses here.
        self.pins.ensure()?;
        // A bad state file must not leave the host unfiltered: attach with what can be trusted
        // (the program, the config, the previous version of the file, the pinned maps) and say
        // what was not restored.
        let loaded = state::lock(&self.state_dir).and_then(|lock| {
            let (state, recovery) = StateFile::load_or_recover(&self.state_dir)?;
            Ok((lock, state, recovery))
        });
        let (_lock, mut state, recovery) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                // Leave no empty pin directory behind (a no-op when anything is in it).
                self.pins.remove_if_empty();
                return Err(e.into());
            }
        };
        let recovered = !recovery.warnings.is_empty();
        let mut warnings = recovery.warnings;
        warnings.extend(settings.warnings());
        let options = LoadOptions {
            max_sources: settings.datapath.max_sources,
            egress: settings.answers.enabled,
            scan: settings.signatures.enabled,
        };
        let mut load = loader::load_pinned(&options, &self.pins)?;
        let prepared = (|| -> Result<()> {
            let mut maps = SipMaps::take_from(&mut load.ebpf)?;
            if maps.sources_capacity() != options.max_sources {
                warnings.push(format!(
                    "datapath.max_sources is {} but the pinned SOURCES table holds {}; the new \
                     size applies after `sip-xdp detach --all --purge`",
                    options.max_sources,
                    maps.sources_capacity()
                ));
            }
            // The signatures table first, so the flag never points the scan at a stale set.
            let (config, warning) = apply_signatures(settings, &mut state, &mut maps, &self.pins)?;
            warnings.extend(warning);
            {
                let _config_lock = self.pins.lock_config()?;
                maps.write_config(&config)?;
            }
            let shortened = reconcile_locked(&mut state, &mut maps)?;
            if shortened > 0 {
                warnings.push(format!(
                    "{shortened} saved bans would have outlasted their duration (the wall clock is \
                     behind the time of the last save, or was set back): shortened to what they \
                     can have left"
                ));
            }
            for (key, record) in &load.migration.bans {
                maps.set_ban(key.addr, record)?;
            }
            if !load.adopted_maps || load.created_bans {
                restore_auto_bans(&state, &mut maps)?;
            }
            if !load.adopted_maps || load.created_prefix_bans {
                restore_prefix_bans(&state, &mut maps)?;
            }
            // Restored bans of allowlisted addresses, and entries pinned by a build that read the
            // allowlist first, would otherwise drop allowlisted sources.
            let allowed = maps.allowlist()?;
            forget_sources_in(&mut maps, &allowed)?;
            state.save(&self.state_dir)?;
            Ok(())
        })();
        if let Err(e) = prepared {
            if self.pins.attachments()?.is_empty() {
                load.rollback(&self.pins);
            }
            return Err(e);
        }
        if recovered && load.adopted_maps {
            warnings.push(
                "the lists and bans still in the pinned maps were kept and saved to the new \
                 state file"
                    .to_owned(),
            );
        }
        let mut done: Vec<(String, AttachOutcome)> = Vec::new();
        for iface in ifaces {
            let attached = loader::attach_pinned(&mut load.ebpf, &self.pins, iface, mode).and_then(
                |mut outcome| {
                    // With the answers on, the egress program is part of the filter: the
                    // config tells the XDP program to trust what it learns.
                    if options.egress {
                        match loader::attach_egress_pinned(&mut load.ebpf, &self.pins, iface) {
                            Ok(link) => outcome.egress = Some(link),
                            Err(e) => {
                                if !outcome.replaced {
                                    let _ = loader::detach_pinned(&self.pins, iface);
                                }
                                return Err(e);
                            }
                        }
                    } else {
                        // Turned off: an egress program left from before goes too.
                        let _ = loader::detach_egress(&self.pins, iface);
                    }
                    Ok(outcome)
                },
            );
            match attached {
                Ok(outcome) => done.push((iface.clone(), outcome)),
                Err(e) => {
                    // Undo what this command attached; replaced links keep working as before.
                    for (iface, outcome) in &done {
                        if !outcome.replaced {
                            let _ = loader::detach_pinned(&self.pins, iface);
                        }
                    }
                    if self.pins.attachments()?.is_empty() && !load.adopted_maps {
                        load.rollback(&self.pins);
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(AttachReport {
            outcomes: done,
            warnings,
        })
    }
}

/// Puts saved automatic bans back into a freshly created SOURCES table (after a reboot or a
/// purge), with their remaining time and strike count.
fn restore_auto_bans(state: &StateFile, maps: &mut SipMaps) -> Result<usize> {
    let clocks = Clocks::now();
    let config = maps.read_config().unwrap_or(Config::DEFAULT);
    let mut restored = 0;
    for record in &state.auto_bans {
        let banned_until_ns = clocks.wall_to_mono_ns(record.banned_until);
        if banned_until_ns.saturating_add(config.strike_decay_ns) <= clocks.mono_ns {
            continue;
        }
        let key = match record.addr {
            IpAddr::V4(v4) => sip_xdp_common::ipv4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        };
        let ban = super::restored_ban(
            banned_until_ns,
            record.ban_duration_ns,
            record.strikes,
            record.limit_class,
            record.monitor_only,
            clocks.mono_ns,
        );
        // Into the durable table only: the program rebuilds the source's entry from it at the
        // source's next packet. An entry left in SOURCES would shadow it.
        maps.set_ban(key, &ban)?;
        maps.forget_tracked(key)?;
        restored += 1;
    }
    Ok(restored)
}
