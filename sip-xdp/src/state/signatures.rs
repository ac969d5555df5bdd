//! The signatures part of the state file: what `sip-xdp signature add|del` changed at runtime
//! (kept across restarts and reattaches), and the config's lists as the last `attach` applied
//! them, so that the CLI edits against the set the kernel holds whatever config file it reads.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sip_xdp_common::{SignatureKey, SignatureKind};

use crate::time::now_wall_secs;

/// The config's `[signatures]` lists as the last attach (or reload) applied them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedSignatures {
    pub enabled: bool,
    /// Lowercased, each once.
    #[serde(default)]
    pub fingerprints: Vec<String>,
    #[serde(default)]
    pub traps: Vec<String>,
}

impl AppliedSignatures {
    pub fn tokens(&self, kind: SignatureKind) -> &[String] {
        match kind {
            SignatureKind::Fingerprint => &self.fingerprints,
            SignatureKind::Trap => &self.traps,
        }
    }

    pub fn contains(&self, kind: SignatureKind, token: &str) -> bool {
        self.tokens(kind).iter().any(|t| t == token)
    }
}

/// One runtime edit: a signature added, or a config entry removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEdit {
    #[serde(serialize_with = "ser_kind", deserialize_with = "de_kind")]
    pub kind: SignatureKind,
    /// Lowercased.
    pub token: String,
    /// Unix seconds.
    pub at: u64,
}

fn ser_kind<S: Serializer>(kind: &SignatureKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

fn de_kind<'de, D: Deserializer<'de>>(d: D) -> Result<SignatureKind, D::Error> {
    let name = String::deserialize(d)?;
    SignatureKind::ALL
        .into_iter()
        .find(|kind| kind.name() == name)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{name:?} is not a signature kind (\"fingerprint\" or \"trap\")"
            ))
        })
}

/// Runtime signature edits and the config set they apply to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedSignatures>,
    /// Added with `signature add` (and not in the config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<SignatureEdit>,
    /// Config entries taken out with `signature del`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<SignatureEdit>,
}

/// What one `add` or `del` of a token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureChange {
    /// Added at runtime (or a runtime removal of a config entry undone).
    Added,
    /// Already in force: nothing changed.
    AlreadyThere,
    /// A runtime addition taken back, or a config entry removed at runtime.
    Removed,
    /// Neither in the config nor added: nothing to remove.
    NotFound,
}

impl SignatureState {
    pub fn is_empty(&self) -> bool {
        self.applied.is_none() && self.added.is_empty() && self.removed.is_empty()
    }

    fn in_config(&self, kind: SignatureKind, token: &str) -> bool {
        self.applied
            .as_ref()
            .is_some_and(|applied| applied.contains(kind, token))
    }

    fn position(list: &[SignatureEdit], kind: SignatureKind, token: &str) -> Option<usize> {
        list.iter().position(|e| e.kind == kind && e.token == token)
    }

    /// True when `token` is in force: in the config and not removed, or added.
    pub fn holds(&self, kind: SignatureKind, token: &str) -> bool {
        let added = Self::position(&self.added, kind, token).is_some();
        let removed = Self::position(&self.removed, kind, token).is_some();
        added || (self.in_config(kind, token) && !removed)
    }

    /// Where a token in force comes from: "config" or "runtime".
    pub fn origin(&self, kind: SignatureKind, token: &str) -> &'static str {
        if self.in_config(kind, token) {
            "config"
        } else {
            "runtime"
        }
    }

    /// `token` (lowercased) in force from now on.
    pub fn add(&mut self, kind: SignatureKind, token: &str) -> SignatureChange {
        if self.holds(kind, token) {
            return SignatureChange::AlreadyThere;
        }
        if let Some(at) = Self::position(&self.removed, kind, token) {
            self.removed.remove(at);
        }
        if !self.in_config(kind, token) {
            self.added.push(SignatureEdit {
                kind,
                token: token.to_owned(),
                at: now_wall_secs(),
            });
        }
        SignatureChange::Added
    }

    /// `token` (lowercased) out of force from now on, config entry or not.
    pub fn remove(&mut self, kind: SignatureKind, token: &str) -> SignatureChange {
        if !self.holds(kind, token) {
            return SignatureChange::NotFound;
        }
        if let Some(at) = Self::position(&self.added, kind, token) {
            self.added.remove(at);
        }
        if self.in_config(kind, token) {
            self.removed.push(SignatureEdit {
                kind,
                token: token.to_owned(),
                at: now_wall_secs(),
            });
        }
        SignatureChange::Removed
    }

    /// Records the config's lists as applied now. Runtime additions the config now holds, and
    /// removals of entries it no longer has, are dropped: they no longer change anything.
    pub fn apply_config(&mut self, applied: AppliedSignatures) {
        self.added.retain(|e| !applied.contains(e.kind, &e.token));
        self.removed.retain(|e| applied.contains(e.kind, &e.token));
        self.applied = Some(applied);
    }

    /// Every signature in force (config ∪ added − removed), as the kernel's keys, each once.
    pub fn wanted(&self) -> Vec<(SignatureKind, String, SignatureKey)> {
        let mut wanted = Vec::new();
        for kind in SignatureKind::ALL {
            let config = self
                .applied
                .as_ref()
                .map(|a| a.tokens(kind).to_vec())
                .unwrap_or_default();
            let added = self
                .added
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.token.clone());
            for token in config.into_iter().chain(added) {
                if !self.holds(kind, &token)
                    || wanted
                        .iter()
                        .any(|(k, t, _): &(SignatureKind, String, _)| *k == kind && *t == token)
                {
                    continue;
                }
                if let Ok(key) = SignatureKey::new(kind, token.as_bytes()) {
                    wanted.push((kind, token, key));
                }
            }
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(fingerprints: &[&str], traps: &[&str]) -> AppliedSignatures {
        AppliedSignatures {
            enabled: true,
            fingerprints: fingerprints.iter().map(|t| t.to_string()).collect(),
            traps: traps.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn tokens(state: &SignatureState) -> Vec<(SignatureKind, String)> {
        state.wanted().into_iter().map(|(k, t, _)| (k, t)).collect()
    }

    #[test]
    fn runtime_edits_apply_on_top_of_the_config_and_survive_its_reload() {
        use SignatureKind::{Fingerprint as F, Trap as T};
        let mut state = SignatureState::default();
        state.apply_config(applied(&["sipcli", "pplsip"], &[]));
        assert_eq!(state.add(T, "100"), SignatureChange::Added);
        assert_eq!(state.add(T, "100"), SignatureChange::AlreadyThere);
        assert_eq!(state.add(F, "sipcli"), SignatureChange::AlreadyThere);
        assert_eq!(state.remove(F, "sipcli"), SignatureChange::Removed);
        assert_eq!(state.remove(F, "sipcli"), SignatureChange::NotFound);
        assert_eq!(state.remove(F, "nothing"), SignatureChange::NotFound);
        assert_eq!(
            tokens(&state),
            [(F, "pplsip".to_owned()), (T, "100".to_owned())]
        );
        assert_eq!(state.origin(T, "100"), "runtime");
        assert_eq!(state.origin(F, "pplsip"), "config");

        // Through the file and back.
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains(r#""kind":"trap","token":"100""#), "{json}");
        let back: SignatureState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);

        // Re-adding a removed config entry undoes the removal, adds nothing.
        let mut again = state.clone();
        assert_eq!(again.add(F, "sipcli"), SignatureChange::Added);
        assert!(again.removed.is_empty() && again.added.len() == 1);

        // A new config: the runtime addition it now holds and the removal of an entry it no
        // longer has are dropped; the rest stays.
        state.apply_config(applied(&["pplsip"], &["100"]));
        assert!(state.added.is_empty() && state.removed.is_empty());
        assert_eq!(
            tokens(&state),
            [(F, "pplsip".to_owned()), (T, "100".to_owned())]
        );
        assert!(
            serde_json::from_str::<SignatureState>(
                r#"{"added":[{"kind":"ua","token":"x","at":1}]}"#
            )
            .is_err()
        );
    }
}
