//! Airlock key tokens: generation, hashing and a display hint.

use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "alk_";
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 43 base62 characters carry 256 bits.
const BODY_LEN: usize = 43;

/// A new random key, `alk_` followed by 43 base62 characters (about 256 bits).
pub fn generate() -> SecretString {
    let mut rng = rand::rngs::OsRng;
    let mut out = String::with_capacity(PREFIX.len() + BODY_LEN);
    out.push_str(PREFIX);
    let mut buf = [0u8; 64];
    while out.len() < PREFIX.len() + BODY_LEN {
        rng.fill_bytes(&mut buf);
        // Rejection sampling keeps every character equally likely.
        for b in buf {
            if b < 248 && out.len() < PREFIX.len() + BODY_LEN {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    SecretString::from(out)
}

pub fn is_airlock_key(candidate: &str) -> bool {
    candidate.starts_with(PREFIX)
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// `alk_Ab12…`: enough to tell keys apart in a list, far too little to use.
pub fn hint(key: &str) -> String {
    let body: String = key
        .strip_prefix(PREFIX)
        .unwrap_or(key)
        .chars()
        .take(4)
        .collect();
    format!("{PREFIX}{body}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn keys_are_long_unique_and_base62() {
        let a = generate();
        let b = generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let a = a.expose_secret();
        assert_eq!(a.len(), 47);
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(is_airlock_key(a));
        assert_eq!(hint(a).chars().count(), 9);
        assert!(!hint(a).contains(&a[8..]));
    }
}
