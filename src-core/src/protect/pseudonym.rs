//! Reversible pseudonyms: a value becomes `<EMAIL_1>` on the way out and is put back on the way
//! in. Numbering is kept per Airlock key and conversation (so a value keeps its placeholder across
//! turns), in memory only, expiring after a configurable idle time; it holds keyed hashes of the
//! values, not the values. What a response may restore is the request's own [`Mapping`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Placeholder text to original value, for restoring one response: only the values that
/// response's own request carried.
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
    /// Keyed hash of a value to its placeholder. Values are not kept here: a response restores
    /// only the values its own request carried (`request::Outcome::restore`), so one user's
    /// value can never come back in another request that merely shares the opening text.
    by_value: HashMap<u64, String>,
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

    /// The placeholder for `value` in this conversation; the same value gets the same one on
    /// every turn, unless that text is `taken` (it already appears in the request, typed by the
    /// user): then the value gets a fresh number, so a placeholder in the upstream text always
    /// stands for exactly one value and text the user typed is never restored into a value.
    #[allow(clippy::too_many_arguments)]
    pub fn placeholder(
        &self,
        key: &ConversationKey,
        family: &str,
        value: &str,
        ttl: Duration,
        now: Instant,
        taken: impl Fn(&str) -> bool,
    ) -> String {
        let Ok(mut convs) = self.conversations.lock() else {
            return format!("<{}_0>", label(family));
        };
        convs.retain(|_, c| c.last_used.is_none_or(|t| now.duration_since(t) < ttl));
        let conv = convs.entry(key.clone()).or_default();
        conv.last_used = Some(now);
        let value_hash = self.hasher.hash_one(value);
        if let Some(p) = conv.by_value.get(&value_hash) {
            if !taken(p) {
                return p.clone();
            }
        }
        let l = label(family);
        let n = conv.counters.entry(l.clone()).or_insert(0);
        let p = loop {
            *n += 1;
            let p = format!("<{l}_{n}>");
            if !taken(&p) {
                break p;
            }
        };
        conv.by_value.insert(value_hash, p.clone());
        p
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
        let free = |_: &str| false;
        let a = v.placeholder(&c, "email", "a@example.org", ttl, now, free);
        let b = v.placeholder(&c, "email", "b@example.org", ttl, now, free);
        let p = v.placeholder(&c, "phone", "+44 20 7946 0958", ttl, now, free);
        assert_eq!(
            (a.as_str(), b.as_str(), p.as_str()),
            ("<EMAIL_1>", "<EMAIL_2>", "<PHONE_1>")
        );
        assert_eq!(
            v.placeholder(&c, "email", "a@example.org", ttl, now, free),
            "<EMAIL_1>"
        );
        // Another key or conversation starts from 1.
        let other = v.conversation("other", "first message");
        assert_eq!(
            v.placeholder(&other, "email", "b@example.org", ttl, now, free),
            "<EMAIL_1>"
        );
    }

    #[test]
    fn idle_conversations_expire() {
        let v = Vault::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let c = v.conversation("app", "x");
        v.placeholder(&c, "email", "a@example.org", ttl, t0, |_| false);
        let d = v.conversation("app", "y");
        v.placeholder(
            &d,
            "email",
            "z@example.org",
            ttl,
            t0 + Duration::from_secs(11),
            |_| false,
        );
        assert_eq!(v.conversations(), 1, "the idle one expired");
    }

    /// QA defect 12: a placeholder the user typed literally is never handed to a value.
    #[test]
    fn placeholders_already_in_the_request_are_skipped() {
        let v = Vault::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        let c = v.conversation("app", "first message");
        let a = v.placeholder(&c, "email", "a@example.org", ttl, now, |p| p == "<EMAIL_1>");
        assert_eq!(a, "<EMAIL_2>");
        // An earlier turn gave b `<EMAIL_3>`; a later turn with `<EMAIL_3>` typed in it gets a
        // fresh one for b.
        let b = v.placeholder(&c, "email", "b@example.org", ttl, now, |_| false);
        assert_eq!(b, "<EMAIL_3>");
        let b2 = v.placeholder(&c, "email", "b@example.org", ttl, now, |p| p == "<EMAIL_3>");
        assert_eq!(b2, "<EMAIL_4>");
    }
}
