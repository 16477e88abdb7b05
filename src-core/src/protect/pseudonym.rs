//! Reversible pseudonyms: a value becomes `<EMAIL_1>` on the way out and is put back on the way
//! in. The mapping lives only in memory, per Airlock key and conversation, and expires after a
//! configurable idle time. It is never written anywhere.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Placeholder text to original value, for restoring one response.
pub type Mapping = HashMap<String, Zeroizing<String>>;

/// Identifies a conversation without keeping its text: the account and a keyed hash of the
/// conversation's opening text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConversationKey {
    account: String,
    opening: u64,
}

#[derive(Default)]
struct Conversation {
    /// Keyed hash of a value to its placeholder (the value itself is kept once, below).
    by_value: HashMap<u64, String>,
    by_placeholder: HashMap<String, Zeroizing<String>>,
    counters: HashMap<String, u32>,
    last_used: Option<Instant>,
}

pub struct Vault {
    conversations: Mutex<HashMap<ConversationKey, Conversation>>,
    /// Random per process, so the hashes mean nothing outside it.
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Vault {
    fn default() -> Self {
        Vault {
            conversations: Mutex::new(HashMap::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// `email` → `EMAIL`, `credit_card` → `CREDIT_CARD`.
pub fn label(family: &str) -> String {
    let l: String = family
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if l.is_empty() {
        "VALUE".to_owned()
    } else {
        l
    }
}

impl Vault {
    pub fn conversation(&self, account: &str, opening_text: &str) -> ConversationKey {
        ConversationKey {
            account: account.to_owned(),
            opening: self.hasher.hash_one(opening_text),
        }
    }

    /// The placeholder for `value` in this conversation; the same value always gets the same one.
    pub fn placeholder(
        &self,
        key: &ConversationKey,
        family: &str,
        value: &str,
        ttl: Duration,
        now: Instant,
    ) -> String {
        let Ok(mut convs) = self.conversations.lock() else {
            return format!("<{}_0>", label(family));
        };
        convs.retain(|_, c| c.last_used.is_none_or(|t| now.duration_since(t) < ttl));
        let conv = convs.entry(key.clone()).or_default();
        conv.last_used = Some(now);
        let value_hash = self.hasher.hash_one(value);
        if let Some(p) = conv.by_value.get(&value_hash) {
            return p.clone();
        }
        let l = label(family);
        let n = conv.counters.entry(l.clone()).or_insert(0);
        *n += 1;
        let p = format!("<{l}_{n}>");
        conv.by_placeholder
            .insert(p.clone(), Zeroizing::new(value.to_owned()));
        conv.by_value.insert(value_hash, p.clone());
        p
    }

    /// A copy of the conversation's mapping for restoring a response, if it has any.
    pub fn mapping(&self, key: &ConversationKey, now: Instant) -> Option<Arc<Mapping>> {
        let mut convs = self.conversations.lock().ok()?;
        let conv = convs.get_mut(key)?;
        conv.last_used = Some(now);
        (!conv.by_placeholder.is_empty()).then(|| Arc::new(conv.by_placeholder.clone()))
    }

    pub fn conversations(&self) -> usize {
        self.conversations.lock().map(|c| c.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_placeholder_and_types_count_apart() {
        let v = Vault::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let c = v.conversation("app", "first message");
        let a = v.placeholder(&c, "email", "a@example.org", ttl, now);
        let b = v.placeholder(&c, "email", "b@example.org", ttl, now);
        let p = v.placeholder(&c, "phone", "+44 20 7946 0958", ttl, now);
        assert_eq!(
            (a.as_str(), b.as_str(), p.as_str()),
            ("<EMAIL_1>", "<EMAIL_2>", "<PHONE_1>")
        );
        assert_eq!(
            v.placeholder(&c, "email", "a@example.org", ttl, now),
            "<EMAIL_1>"
        );
        let m = v.mapping(&c, now).expect("mapping");
        assert_eq!(
            m.get("<EMAIL_2>").map(|s| s.as_str()),
            Some("b@example.org")
        );
        // Another key or conversation starts from 1 and cannot see this mapping.
        let other = v.conversation("other", "first message");
        assert!(v.mapping(&other, now).is_none());
        assert_eq!(
            v.placeholder(&other, "email", "b@example.org", ttl, now),
            "<EMAIL_1>"
        );
    }

    #[test]
    fn idle_conversations_expire() {
        let v = Vault::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let c = v.conversation("app", "x");
        v.placeholder(&c, "email", "a@example.org", ttl, t0);
        let d = v.conversation("app", "y");
        v.placeholder(
            &d,
            "email",
            "z@example.org",
            ttl,
            t0 + Duration::from_secs(11),
        );
        assert!(
            v.mapping(&c, t0 + Duration::from_secs(11)).is_none(),
            "expired"
        );
        assert_eq!(v.conversations(), 1);
    }
}
