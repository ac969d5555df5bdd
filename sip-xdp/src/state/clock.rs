//! Wall clock and kernel clock: the conversions between them, the clocks saved with the file,
//! and the clamp that keeps a wall clock that is behind from lengthening restored bans.
use std::fs;

use serde::{Deserialize, Serialize};

use super::StateFile;
use crate::time::{NS_PER_SEC, monotonic_now_ns, now_wall_ns};

/// Restored bans are shortened only by more than this (rounding and clock drift are not skew).
const CLAMP_TOLERANCE_NS: u64 = 2 * NS_PER_SEC;

/// The kernel's boot id and both clocks, read together at a save.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedClock {
    /// /proc/sys/kernel/random/boot_id; the monotonic clock only compares within one boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    pub wall_ns: u64,
    pub mono_ns: u64,
}

impl SavedClock {
    /// Now.
    pub fn now() -> Self {
        let clocks = Clocks::now();
        Self {
            boot_id: boot_id(),
            wall_ns: clocks.wall_ns,
            mono_ns: clocks.mono_ns,
        }
    }
}

/// This boot's id, if the kernel tells it.
pub fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl StateFile {
    /// Shortens restored bans to what they can have left. The file stores wall-clock ends, and
    /// a wall clock that is behind (an RTC without a battery, NTP not synced yet at boot) would
    /// lengthen every ban by the skew. Now is taken as the latest of: the wall clock; the time
    /// of the last save (time does not run backwards); and, on the same boot, the time of the
    /// last save plus the monotonic time elapsed since. No ban keeps more than its whole
    /// duration either. Returns how many bans were shortened. Bans are never lengthened.
    pub fn clamp_restored_bans(&mut self, now: &SavedClock) -> usize {
        let mut now_ns = now.wall_ns;
        if let Some(saved) = &self.saved {
            now_ns = now_ns.max(saved.wall_ns);
            let same_boot = saved.boot_id.is_some() && saved.boot_id == now.boot_id;
            if same_boot && now.mono_ns >= saved.mono_ns {
                now_ns = now_ns.max(saved.wall_ns.saturating_add(now.mono_ns - saved.mono_ns));
            }
        }
        // The wall-clock end (seconds, in today's possibly skewed clock) that leaves `left_ns`.
        let end_for = |left_ns: u64| now.wall_ns.saturating_add(left_ns).div_ceil(NS_PER_SEC);
        let mut shortened = 0;
        for ban in &mut self.bans {
            let end_ns = ban.expires_at.saturating_mul(NS_PER_SEC);
            let whole_ns = ban
                .expires_at
                .saturating_sub(ban.added_at)
                .saturating_mul(NS_PER_SEC);
            let left_ns = end_ns.saturating_sub(now_ns).min(whole_ns);
            let current_ns = end_ns.saturating_sub(now.wall_ns);
            if current_ns > left_ns.saturating_add(CLAMP_TOLERANCE_NS) {
                let end = end_for(left_ns);
                let cut = ban.expires_at - end;
                ban.added_at = ban.added_at.saturating_sub(cut);
                ban.expires_at = end;
                shortened += 1;
            }
        }
        let automatic = self
            .auto_bans
            .iter_mut()
            .map(|b| (&mut b.banned_until, b.ban_duration_ns))
            .chain(
                self.prefix_bans
                    .iter_mut()
                    .map(|b| (&mut b.banned_until, b.ban_duration_ns)),
            );
        for (banned_until, ban_duration_ns) in automatic {
            let end_ns = banned_until.saturating_mul(NS_PER_SEC);
            let left_ns = end_ns.saturating_sub(now_ns).min(ban_duration_ns);
            let current_ns = end_ns.saturating_sub(now.wall_ns);
            if current_ns > left_ns.saturating_add(CLAMP_TOLERANCE_NS) {
                *banned_until = end_for(left_ns);
                shortened += 1;
            }
        }
        shortened
    }
}

/// One reading of the wall clock and the kernel's monotonic clock, taken together, so that a
/// batch of conversions agrees with itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    pub wall_ns: u64,
    pub mono_ns: u64,
}

impl Clocks {
    pub fn now() -> Self {
        Self {
            wall_ns: now_wall_ns(),
            mono_ns: monotonic_now_ns(),
        }
    }

    /// The monotonic time of wall-clock second `unix_secs`; a time already past gives the
    /// monotonic now (callers decide whether that means "expired").
    pub fn wall_to_mono_ns(&self, unix_secs: u64) -> u64 {
        let target_ns = unix_secs.saturating_mul(NS_PER_SEC);
        self.mono_ns
            .saturating_add(target_ns.saturating_sub(self.wall_ns))
    }

    /// The wall-clock second of monotonic time `mono_ns`, rounded up so that a ban converted
    /// to the file and back never ends earlier than it did.
    pub fn mono_to_wall_secs(&self, mono_ns: u64) -> u64 {
        let wall_ns = if mono_ns >= self.mono_ns {
            self.wall_ns.saturating_add(mono_ns - self.mono_ns)
        } else {
            self.wall_ns.saturating_sub(self.mono_ns - mono_ns)
        };
        wall_ns.div_ceil(NS_PER_SEC)
    }
}

/// [`Clocks::wall_to_mono_ns`] with the clocks read now.
pub fn wall_to_mono_ns(unix_secs: u64) -> u64 {
    Clocks::now().wall_to_mono_ns(unix_secs)
}

/// [`Clocks::mono_to_wall_secs`] with the clocks read now.
pub fn mono_to_wall_secs(mono_ns: u64) -> u64 {
    Clocks::now().mono_to_wall_secs(mono_ns)
}
