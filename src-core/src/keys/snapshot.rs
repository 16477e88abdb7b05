//! The server's in-memory view of live Airlock keys, rebuilt whenever the database changes.

use super::store::{now_ms, IssuedKey};
use super::token;
use crate::config::ModelGlobs;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who a request runs as, once its Airlock key is verified.
#[derive(Debug)]
pub struct Identity {
    pub key_id: i64,
    /// The key's own name.
    pub key_name: String,
    /// The name use is attributed to: the parent's for a child key made with `--as`.
    pub account: String,
    providers: Vec<String>,
    /// `None`: any model.
    models: Option<ModelGlobs>,
    expires_at: Option<i64>,
    /// Whether the key (or its parent) is paused, why, and which of them to resume.
    pub paused: Option<Pause>,
    /// This key's own lifetime budget and rate, from `airlock exec --budget/--rpm`.
    pub budget_micros: Option<i64>,
    pub rpm: Option<u32>,
    /// For a child key (`airlock exec --as`, `env --as`): the parent, whose own budget and rpm
    /// bind the child's requests too.
    pub parent: Option<ParentKey>,
    /// The `[policy]` of the project the key was issued in (`airlock exec`), which can only
    /// tighten the configured policy.
    pub project_policy: Option<Arc<crate::protect::policy::LayerFile>>,
}

/// A pause on a key: why, and the key to resume (the key itself, or the parent a child key
/// inherits it from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub reason: String,
    pub key: String,
}

/// A child key's parent, as far as its limits go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentKey {
    pub key_id: i64,
    pub name: String,
    /// The parent's own lifetime budget and rate (`keys issue --budget/--rpm`).
    pub budget_micros: Option<i64>,
    pub rpm: Option<u32>,
}

/// The outcome of checking a presented Airlock key against the snapshot.
#[derive(Debug)]
pub enum Verdict {
    Allowed(Arc<Identity>),
    Unknown,
    Expired(Arc<Identity>),
}

impl Identity {
    pub fn allows_provider(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|p| p == provider)
    }

    /// Matched as the config's model lists are (`ModelGlobs::matches`): the normalized name or
    /// any of its prefix-peeled names.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.matches(model))
    }

    pub fn providers(&self) -> &[String] {
        &self.providers
    }

    pub fn model_patterns(&self) -> &[String] {
        self.models.as_ref().map_or(&[], ModelGlobs::patterns)
    }
}

#[derive(Debug, Default)]
pub struct KeySnapshot {
    by_hash: HashMap<[u8; 32], Arc<Identity>>,
    pub generation: i64,
}

impl KeySnapshot {
    /// Builds the snapshot. A child key inherits its parent's scope (and is attributed to it), so
    /// narrowing or revoking the parent applies to every child at once.
    pub fn build(keys: Vec<(IssuedKey, [u8; 32])>, generation: i64) -> KeySnapshot {
        let by_name: HashMap<&str, &IssuedKey> =
            keys.iter().map(|(k, _)| (k.name.as_str(), k)).collect();
        let mut by_hash = HashMap::with_capacity(keys.len());
        for (k, hash) in &keys {
            let scope_from = match &k.parent {
                Some(parent) => match by_name.get(parent.as_str()) {
                    Some(p) => *p,
                    None => continue, // parent revoked: the child is dead too
                },
                None => k,
            };
            // A child expires when either it or its parent does.
            let expires_at = match (k.expires_at, scope_from.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let models = compile_globs(&scope_from.models);
            by_hash.insert(
                *hash,
                Arc::new(Identity {
                    key_id: k.id,
                    key_name: k.name.clone(),
                    account: scope_from.name.clone(),
                    providers: scope_from.providers.clone(),
                    models,
                    expires_at,
                    paused: match (k.paused_at, scope_from.paused_at) {
                        (Some(_), _) => Some(Pause {
                            reason: k.paused_reason.clone().unwrap_or_else(|| "paused".into()),
                            key: k.name.clone(),
                        }),
                        (None, Some(_)) => Some(Pause {
                            reason: format!(
                                "parent {} paused: {}",
                                scope_from.name,
                                scope_from.paused_reason.as_deref().unwrap_or("paused")
                            ),
                            key: scope_from.name.clone(),
                        }),
                        (None, None) => None,
                    },
                    budget_micros: k.budget_micros,
                    rpm: k.rpm,
                    parent: k.parent.as_ref().map(|_| ParentKey {
                        key_id: scope_from.id,
                        name: scope_from.name.clone(),
                        budget_micros: scope_from.budget_micros,
                        rpm: scope_from.rpm,
                    }),
                    project_policy: k
                        .policy
                        .as_deref()
                        .and_then(|p| serde_json::from_str(p).ok())
                        .map(Arc::new),
                }),
            );
        }
        KeySnapshot {
            by_hash,
            generation,
        }
    }

    pub fn verify(&self, presented: &str) -> Verdict {
        let h = token::hash(presented);
        match self.by_hash.get_key_value(&h) {
            // The map lookup found the entry by hash; confirm in constant time regardless.
            Some((stored, identity)) if bool::from(stored.ct_eq(&h)) => {
                if identity.expires_at.is_some_and(|t| t <= now_ms()) {
                    Verdict::Expired(identity.clone())
                } else {
                    Verdict::Allowed(identity.clone())
                }
            }
            _ => Verdict::Unknown,
        }
    }

    /// Keys whose pause state differs from `before`: (key name, Some(reason) if now paused).
    /// Only a key's own pause counts, not one inherited from a parent.
    pub fn pause_changes(&self, before: &KeySnapshot) -> Vec<(String, Option<String>)> {
        let own = |s: &KeySnapshot| -> HashMap<String, Option<String>> {
            s.by_hash
                .values()
                .filter(|i| i.account == i.key_name)
                .map(|i| {
                    (
                        i.key_name.clone(),
                        i.paused.as_ref().map(|p| p.reason.clone()),
                    )
                })
                .collect()
        };
        let (now, then) = (own(self), own(before));
        let mut out: Vec<_> = now
            .into_iter()
            .filter(|(k, p)| then.get(k).is_some_and(|old| old != p))
            .collect();
        out.sort();
        out
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// A key's model patterns, `None` when it has none (any model). Patterns were validated at
/// issue time; one that no longer parses is left out, and a key left with none matches nothing.
fn compile_globs(patterns: &[String]) -> Option<ModelGlobs> {
    if patterns.is_empty() {
        return None;
    }
    let valid: Vec<String> = patterns
        .iter()
        .filter(|p| crate::config::model_glob(p).is_ok())
        .cloned()
        .collect();
    Some(ModelGlobs::new(&valid).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::store::{IssueRequest, KeyStore};
    use secrecy::ExposeSecret;

    #[test]
    fn verifies_scopes_expiry_and_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = KeyStore::open(dir.path()).expect("open");
        let (_, app) = s
            .issue(&IssueRequest {
                name: "app".into(),
                providers: vec!["openai".into()],
                models: vec!["gpt-4o*".into()],
                rpm: Some(2),
                ..Default::default()
            })
            .expect("app");
        let (_, child) = s
            .issue(&IssueRequest {
                name: "exec-1".into(),
                parent: Some("app".into()),
                ..Default::default()
            })
            .expect("child");
        let (_, old) = s
            .issue(&IssueRequest {
                name: "old".into(),
                expires_in: Some(std::time::Duration::from_millis(1)),
                ..Default::default()
            })
            .expect("old");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let snap = KeySnapshot::build(s.live_with_hashes().expect("live"), 1);

        let Verdict::Allowed(id) = snap.verify(app.expose_secret()) else {
            panic!("app must verify")
        };
        assert!(id.allows_provider("openai") && !id.allows_provider("anthropic"));
        assert!(id.allows_model("gpt-4o-mini") && !id.allows_model("o3"));

        let Verdict::Allowed(c) = snap.verify(child.expose_secret()) else {
            panic!("child must verify")
        };
        assert_eq!(c.account, "app");
        assert_eq!(
            c.parent.as_ref().map(|p| (p.name.as_str(), p.rpm)),
            Some(("app", Some(2))),
            "the parent's own limits travel with the child"
        );
        assert!(id.parent.is_none());
        assert!(
            !c.allows_model("o3"),
            "child inherits the parent's model scope"
        );

        assert_eq!(c.paused, None);

        // QA: a child whose parent was paused was told to resume itself, which does nothing.
        // The key to resume is the one whose pause it is.
        s.pause("app", "by hand").expect("pause app");
        let paused = KeySnapshot::build(s.live_with_hashes().expect("live"), 2);
        let Verdict::Allowed(c) = paused.verify(child.expose_secret()) else {
            panic!("child must verify")
        };
        let p = c.paused.as_ref().expect("paused through its parent");
        assert_eq!(p.reason, "parent app paused: by hand");
        assert_eq!(p.key, "app");
        s.pause("exec-1", "its own").expect("pause child");
        let both = KeySnapshot::build(s.live_with_hashes().expect("live"), 3);
        let Verdict::Allowed(c) = both.verify(child.expose_secret()) else {
            panic!("child must verify")
        };
        let p = c.paused.as_ref().expect("paused itself");
        assert_eq!(p.reason, "its own");
        assert_eq!(p.key, "exec-1");

        assert!(matches!(
            snap.verify(old.expose_secret()),
            Verdict::Expired(_)
        ));
        assert!(matches!(
            snap.verify("alk_not_a_real_key"),
            Verdict::Unknown
        ));
    }
}
