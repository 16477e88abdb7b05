//! Fake credentials and personal data for the prompt-protection tests, generated at run time in
//! the exact shapes Airlock's rules accept (GitHub CRC32 checksum, Luhn-valid card, high-entropy
//! AWS secret), so nothing key-shaped is committed and every value is fresh per test.

use rand::Rng;

const UPPER_B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

fn pick(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// `AKIA` + 16 base32 chars: rule `aws-access-key-id`.
pub fn aws_access_key_id() -> String {
    format!("AKIA{}", pick(UPPER_B32, 16))
}

/// 40 base64 chars; found after `aws_secret_access_key = `: rule `aws-secret-access-key`.
pub fn aws_secret_access_key() -> String {
    loop {
        let s = pick(B64, 40);
        // Keep well above the rule's entropy floor (4.0 bits/char).
        if entropy(&s) > 4.5 {
            return s;
        }
    }
}

fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for b in s.bytes() {
        *counts.entry(b).or_insert(0usize) += 1;
    }
    let n = s.len() as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// CRC-32 (IEEE), as GitHub's token checksum uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `ghp_` + 30 base62 chars + their CRC32 in 6 base62 digits: rule `github-pat`.
pub fn github_pat() -> String {
    let random = pick(BASE62, 30);
    let mut n = crc32(random.as_bytes());
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    format!("ghp_{random}{}", String::from_utf8_lossy(&sum))
}

/// A personal-looking address on a real mail domain: rule `email`.
pub fn email() -> String {
    format!("{}.{}@gmail.com", pick(LOWER, 6), pick(LOWER, 8))
}

/// A Luhn-valid 16-digit Visa number, unspaced: rule `payment-card`.
pub fn card() -> String {
    let mut rng = rand::thread_rng();
    let mut d: Vec<u32> = vec![4];
    while d.len() < 15 {
        d.push(rng.gen_range(0..10));
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    d.push((10 - sum % 10) % 10);
    d.iter().map(|x| char::from(b'0' + *x as u8)).collect()
}

/// A PEM RSA private key block (random body): rule `private-key-rsa`, family `private_key`.
pub fn rsa_private_key() -> String {
    let label = ["RSA", "PRIVATE", "KEY"].join(" ");
    let mut body = String::new();
    for _ in 0..6 {
        body.push_str(&pick(B64, 64));
        body.push('\n');
    }
    body.push_str(&pick(B64, 20));
    body.push_str("==");
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----")
}

/// One prompt's worth of sensitive values.
#[derive(Debug, Clone)]
pub struct Sensitive {
    pub aws_id: String,
    pub aws_secret: String,
    pub github: String,
    pub email: String,
    pub card: String,
}

impl Default for Sensitive {
    fn default() -> Self {
        Self::new()
    }
}

impl Sensitive {
    pub fn new() -> Self {
        Self {
            aws_id: aws_access_key_id(),
            aws_secret: aws_secret_access_key(),
            github: github_pat(),
            email: email(),
            card: card(),
        }
    }

    fn fill(
        &self,
        aws_id: &str,
        aws_secret: &str,
        github: &str,
        email: &str,
        card: &str,
    ) -> String {
        format!(
            "deploy with aws_access_key_id = {aws_id} and aws_secret_access_key = {aws_secret} \
             then GITHUB_TOKEN={github} ; mail the receipt to {email} and charge card {card} today"
        )
    }

    /// The prompt holding every value.
    pub fn prompt(&self) -> String {
        self.fill(
            &self.aws_id,
            &self.aws_secret,
            &self.github,
            &self.email,
            &self.card,
        )
    }

    /// The prompt as the upstream must receive it: secrets redacted, PII as placeholders.
    pub fn upstream_prompt(&self) -> String {
        self.fill(
            "[REDACTED:aws-access-key-id]",
            "[REDACTED:aws-secret-access-key]",
            "[REDACTED:github-pat]",
            "<EMAIL_1>",
            "<CARD_1>",
        )
    }

    /// The prompt as the client must see it echoed back: secrets still redacted, PII restored.
    pub fn restored_prompt(&self) -> String {
        self.fill(
            "[REDACTED:aws-access-key-id]",
            "[REDACTED:aws-secret-access-key]",
            "[REDACTED:github-pat]",
            &self.email,
            &self.card,
        )
    }

    pub fn secrets(&self) -> [&str; 3] {
        [&self.aws_id, &self.aws_secret, &self.github]
    }

    pub fn all(&self) -> [&str; 5] {
        [
            &self.aws_id,
            &self.aws_secret,
            &self.github,
            &self.email,
            &self.card,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_hold() {
        // Known CRC-32 check value.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let c = card();
        let digits: Vec<u32> = c.chars().filter_map(|ch| ch.to_digit(10)).collect();
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &x)| {
                if i % 2 == 1 {
                    let y = x * 2;
                    if y > 9 {
                        y - 9
                    } else {
                        y
                    }
                } else {
                    x
                }
            })
            .sum();
        assert_eq!(sum % 10, 0, "{c}");
        assert_eq!(github_pat().len(), 40);
        assert!(aws_access_key_id().starts_with("AKIA"));
    }
}
