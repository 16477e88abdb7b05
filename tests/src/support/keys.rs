//! Fake credentials, generated at test time so nothing that looks like a real key is committed.
//! They have the shapes of the real ones, so Airlock's "client sent a real provider key" check
//! recognises them.

use rand::distributions::{Alphanumeric, DistString};
use rand::Rng;

fn alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), n)
}

fn urlsafe(n: usize) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| SET[rng.gen_range(0..SET.len())] as char)
        .collect()
}

/// `sk-proj-…T3BlbkFJ…`, the shape of an OpenAI project key.
pub fn openai() -> String {
    format!("sk-proj-{}T3BlbkFJ{}", urlsafe(74), urlsafe(74))
}

/// `sk-ant-api03-…AA`, the shape of an Anthropic API key.
pub fn anthropic() -> String {
    format!("sk-ant-api03-{}AA", urlsafe(93))
}

/// `AIza…`, the shape of a Google API key (39 characters).
pub fn gemini() -> String {
    format!("AIza{}", urlsafe(35))
}

/// A key for an OpenAI-compatible provider.
pub fn compat() -> String {
    format!("sk-{}", alnum(48))
}

/// A random suffix for names that must not collide between tests.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{n}-{}",
        std::process::id(),
        alnum(6).to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        assert!(super::openai().starts_with("sk-proj-"));
        assert_eq!(super::gemini().len(), 39);
        assert!(super::anthropic().ends_with("AA"));
        assert_ne!(super::unique_suffix(), super::unique_suffix());
    }
}
