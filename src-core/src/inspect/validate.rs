//! Validators: the checks a regex cannot do (checksums, number ranges, decoding).
//!
//! A rule names its validator in the rule file (`validator = "luhn"`); [`Validator::parse`] turns
//! that name into this enum once, at build time. Every function here is pure and allocation-light:
//! they run only on regex matches, never on the whole text.

use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A named check run on a regex match after the entropy floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validator {
    /// GitHub tokens: the last 6 chars are the base62 CRC32 of the 30 random chars.
    GithubCrc32,
    /// Three base64url segments whose header decodes to JSON with an `alg`.
    Jwt,
    /// A PEM/OpenSSH/PGP block with a real base64 body.
    PemBody,
    /// The password part of a URL is not a placeholder.
    UrlPassword,
    /// A generic assignment value that looks machine-made (entropy, classes, not an identifier).
    Random,
    /// `Authorization: Basic` value that decodes to `user:password`.
    BasicAuth,
    /// Payment card: Luhn plus issuer prefix and length.
    Card,
    /// IBAN: per-country length plus ISO 7064 mod-97.
    Iban,
    /// US Social Security Number area/group/serial rules.
    Ssn,
    /// Canadian Social Insurance Number (Luhn, valid first digit).
    Sin,
    /// Indian Aadhaar number (Verhoeff, first digit 2-9).
    Aadhaar,
    /// Brazilian CPF (two mod-11 check digits).
    Cpf,
    /// Spanish DNI check letter.
    Dni,
    /// Spanish NIE check letter.
    Nie,
    /// UK National Insurance number prefix rules.
    Nino,
    /// Indian PAN: entity letter is one of the assigned ones.
    PanIn,
    /// Email with a known top-level domain, not a documentation domain.
    Email,
    /// IPv4 address outside private, loopback, link-local, documentation and reserved ranges.
    Ipv4Public,
    /// IPv6 global unicast outside documentation and benchmarking ranges.
    Ipv6Public,
    /// Any well-formed IPv4 address (when private ranges are in scope).
    Ipv4Any,
    /// Any well-formed IPv6 address with at least two colons.
    Ipv6Any,
    /// Bitcoin legacy address (Base58Check, version 0x00 or 0x05).
    BtcBase58,
    /// Bitcoin segwit address (bech32 / bech32m checksum).
    BtcBech32,
    /// Ethereum address; mixed case must pass the EIP-55 checksum.
    Eth,
    /// Phone number with an international prefix: known country code and length.
    PhoneIntl,
    /// Phone number in one country's national format.
    Phone(Country),
}

/// Countries with a national phone format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Country {
    Nanp,
    Gb,
    De,
    Fr,
    Es,
    It,
    Nl,
    In,
    Jp,
    Br,
    Au,
}

// === impl Validator ===

impl Validator {
    /// Parses the name used in rule files.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "github_crc32" => Self::GithubCrc32,
            "jwt" => Self::Jwt,
            "pem" => Self::PemBody,
            "url_password" => Self::UrlPassword,
            "random" => Self::Random,
            "basic_auth" => Self::BasicAuth,
            "card" => Self::Card,
            "iban" => Self::Iban,
            "ssn" => Self::Ssn,
            "sin" => Self::Sin,
            "aadhaar" => Self::Aadhaar,
            "cpf" => Self::Cpf,
            "dni" => Self::Dni,
            "nie" => Self::Nie,
            "nino" => Self::Nino,
            "pan_in" => Self::PanIn,
            "email" => Self::Email,
            "ipv4_public" => Self::Ipv4Public,
            "ipv6_public" => Self::Ipv6Public,
            "btc_base58" => Self::BtcBase58,
            "btc_bech32" => Self::BtcBech32,
            "eth" => Self::Eth,
            "phone_intl" => Self::PhoneIntl,
            "phone_nanp" => Self::Phone(Country::Nanp),
            "phone_gb" => Self::Phone(Country::Gb),
            "phone_de" => Self::Phone(Country::De),
            "phone_fr" => Self::Phone(Country::Fr),
            "phone_es" => Self::Phone(Country::Es),
            "phone_it" => Self::Phone(Country::It),
            "phone_nl" => Self::Phone(Country::Nl),
            "phone_in" => Self::Phone(Country::In),
            "phone_jp" => Self::Phone(Country::Jp),
            "phone_br" => Self::Phone(Country::Br),
            "phone_au" => Self::Phone(Country::Au),
            _ => return None,
        })
    }

    /// Runs the check on the matched value.
    pub fn check(self, value: &[u8]) -> bool {
        match self {
            Self::GithubCrc32 => github_crc32(value),
            Self::Jwt => jwt(value),
            Self::PemBody => pem_body(value),
            Self::UrlPassword => url_password(value),
            Self::Random => looks_random(value),
            Self::BasicAuth => basic_auth(value),
            Self::Card => card(value),
            Self::Iban => iban(value),
            Self::Ssn => ssn(value),
            Self::Sin => sin(value),
            Self::Aadhaar => aadhaar(value),
            Self::Cpf => cpf(value),
            Self::Dni => dni(value),
            Self::Nie => nie(value),
            Self::Nino => nino(value),
            Self::PanIn => pan_in(value),
            Self::Email => email(value),
            Self::Ipv4Public => ipv4_public(value),
            Self::Ipv6Public => ipv6_public(value),
            Self::Ipv4Any => {
                std::str::from_utf8(value).is_ok_and(|s| s.parse::<Ipv4Addr>().is_ok())
            }
            Self::Ipv6Any => {
                value.iter().filter(|&&b| b == b':').count() >= 2
                    && std::str::from_utf8(value).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok())
            }
            Self::BtcBase58 => btc_base58(value),
            Self::BtcBech32 => btc_bech32(value),
            Self::Eth => eth(value),
            Self::PhoneIntl => phone_intl(value),
            Self::Phone(c) => phone_national(c, value),
        }
    }
}

/// The ASCII digits of `value`, in order, as numbers 0-9, into a fixed buffer (no allocation).
fn digits_of(value: &[u8], buf: &mut [u8; 40]) -> usize {
    let mut n = 0;
    for &b in value {
        if b.is_ascii_digit() {
            if n == buf.len() {
                return n;
            }
            buf[n] = b - b'0';
            n += 1;
        }
    }
    n
}

/// Shannon entropy in bits per byte.
///
/// Runs on every candidate of every rule with an entropy floor, so it avoids a `log2` per
/// distinct byte: with counts `c` over `n` bytes, `H = log2(n) - Σ c·log2(c) / n`, and `c·log2(c)`
/// comes from a table for the small counts that short values have.
pub fn shannon_entropy(value: &[u8]) -> f32 {
    let n = value.len();
    if n == 0 {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in value {
        counts[b as usize] += 1;
    }
    // Visit each distinct byte once, through the value itself rather than all 256 counts.
    let mut sum = 0.0f64;
    for &b in value {
        let c = std::mem::take(&mut counts[b as usize]);
        if c > 1 {
            sum += c_log2_c(c);
        }
    }
    ((n as f64).log2() - sum / n as f64).max(0.0) as f32
}

/// `c * log2(c)`, from a table up to [`CLOG_TABLE`].
fn c_log2_c(c: u32) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=CLOG_TABLE)
            .map(|c| {
                if c < 2 {
                    0.0
                } else {
                    c as f64 * (c as f64).log2()
                }
            })
            .collect()
    });
    match table.get(c as usize) {
        Some(&v) => v,
        None => c as f64 * (c as f64).log2(),
    }
}

const CLOG_TABLE: u32 = 512;

/// Luhn (mod 10) over a digit slice.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = d as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

// --- secrets ---

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Base62 encoding of a CRC32, left-padded with `0` to 6 chars, as GitHub appends to its tokens.
pub fn base62_crc32(data: &[u8]) -> [u8; 6] {
    let mut n = crc32fast::hash(data);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

fn github_crc32(value: &[u8]) -> bool {
    // `ghp_` + 30 random + 6 checksum.
    let Some(pos) = value.iter().position(|&b| b == b'_') else {
        return false;
    };
    let body = &value[pos + 1..];
    if body.len() != 36 {
        return false;
    }
    base62_crc32(&body[..30]) == body[30..]
}

fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let trimmed: &[u8] = match s.iter().position(|&b| b == b'=') {
        Some(i) => &s[..i],
        None => s,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
}

fn jwt(value: &[u8]) -> bool {
    let mut parts = value.split(|&b| b == b'.');
    let Some(header) = parts.next() else {
        return false;
    };
    let Some(header) = b64url_decode(header) else {
        return false;
    };
    // A JWT header is a small JSON object naming the algorithm.
    let h = String::from_utf8_lossy(&header);
    h.trim_start().starts_with('{') && h.contains("\"alg\"")
}

fn pem_body(value: &[u8]) -> bool {
    // Count base64 body characters outside header lines; a placeholder body (`...`) has none.
    let mut body = 0usize;
    for line in value.split(|&b| b == b'\n' || b == b'\\') {
        let line = line.strip_prefix(b"n").unwrap_or(line);
        if line.starts_with(b"-----") || line.contains(&b':') {
            continue;
        }
        if line
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b' '))
        {
            body += line.iter().filter(|b| b.is_ascii_alphanumeric()).count();
        }
    }
    body >= 64
}

/// Substrings that mark a documentation value. One case-insensitive automaton, built once:
/// this runs on every candidate secret, so it must not build searchers per call. It is an
/// immutable cache, not shared mutable state.
fn placeholder_markers() -> &'static aho_corasick::AhoCorasick {
    static MARKERS: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    MARKERS.get_or_init(|| {
        const WORDS: &[&str] = &[
            "example",
            "xxxx",
            "your_",
            "your-",
            "yourkey",
            "yourtoken",
            "yoursecret",
            "placeholder",
            "changeme",
            "change_me",
            "change-me",
            "redacted",
            "dummy",
            "<",
            ">",
            "{{",
            "}}",
            "${",
            "$(",
            "...",
            "***",
            "\u{2026}",
            "replace_me",
            "replace-me",
            "replaceme",
            "notreal",
            "not_real",
            "not-real",
            "not-a-real",
            "fake",
            "environ",
            "getenv",
            "process.env",
            "secrets.",
            "insert_",
            "insert-",
            "0123456789",
            "abcdefgh",
            "12345678",
        ];
        match aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(WORDS)
        {
            Ok(ac) => ac,
            // The word list is a constant; building it cannot fail.
            Err(e) => unreachable!("placeholder markers: {e}"),
        }
    })
}

/// Values that are obviously not a real secret: documentation placeholders, templating,
/// environment references, masked values.
pub fn is_placeholder(value: &[u8]) -> bool {
    if value.len() < 4 {
        return true;
    }
    if value[0] == b'$' || value[0] == b'%' && value.last() == Some(&b'%') {
        return true;
    }
    let markers = placeholder_markers();
    few_distinct(value)
        || markers.is_match(value)
            && (markers.find_overlapping_iter(value)).any(|m| marks(value, m.start(), m.end()))
}

/// Whether a placeholder word found at `s..e` marks `value`. A short word (`fake`, `xxxx`,
/// `dummy`: few enough letters for random text to spell, about once in 17,000 random base62
/// tokens) counts only where a placeholder puts it, not inside random text:
///
/// - at the value's start or end, or next to a non-alphanumeric byte (`sk-fake-1`,
///   `ghp_xxxx…`, `FAKE_KEY`);
/// - as a capitalised word after a lowercase letter (`MyFakeApiKey`, `AIzaSyDummyKey…`);
/// - in capitals in a value without lowercase letters (`AKIAFAKEACCESSKEYID2`);
/// - `xxxx` in a run of six or more (`AKIA12345XXXXXXX6789`).
fn marks(value: &[u8], s: usize, e: usize) -> bool {
    let word = &value[s..e];
    if word.len() > 5 || !word.iter().all(u8::is_ascii_alphanumeric) {
        return true;
    }
    let edge = |i: Option<&u8>| i.is_none_or(|b| !b.is_ascii_alphanumeric());
    let before = s.checked_sub(1).map(|i| value[i]);
    if edge(before.as_ref()) || edge(value.get(e)) {
        return true;
    }
    let capitalised = word[0].is_ascii_uppercase() && word[1..].iter().all(u8::is_ascii_lowercase);
    if capitalised && before.is_some_and(|b| b.is_ascii_lowercase()) {
        return true;
    }
    if word.iter().all(u8::is_ascii_uppercase) && !value.iter().any(u8::is_ascii_lowercase) {
        return true;
    }
    let x = |b: &u8| b.eq_ignore_ascii_case(&b'x');
    word.iter().all(x) && {
        let before = value[..s].iter().rev().take_while(|b| x(b)).count();
        before + 4 + value[e..].iter().take_while(|b| x(b)).count() >= 6
    }
}

/// At most three distinct bytes: `aaaaaaaa`, `00000000`, `abababab`. Stops at the fourth.
fn few_distinct(value: &[u8]) -> bool {
    let mut seen = [0u64; 4];
    let mut distinct = 0;
    for &b in value {
        let (word, bit) = (usize::from(b >> 6), 1u64 << (b & 63));
        if seen[word] & bit == 0 {
            seen[word] |= bit;
            distinct += 1;
            if distinct > 3 {
                return false;
            }
        }
    }
    true
}

fn url_password(value: &[u8]) -> bool {
    const WEAK: &[&str] = &[
        "password", "pass", "passwd", "pwd", "secret", "pw", "user", "username", "changeme",
        "postgres", "mysql", "root", "admin", "guest", "redis", "mongo", "test", "token",
    ];
    let lower = String::from_utf8_lossy(value).to_ascii_lowercase();
    if WEAK.contains(&lower.as_str()) {
        return false;
    }
    // Masked or templated passwords: `****`, `${DB_PASS}`, `<password>`, `%s`, `{password}`.
    if value.starts_with(b"%") || value.starts_with(b"{") || value.starts_with(b":") {
        return false;
    }
    !(is_placeholder(value) && value.len() >= 4)
}

/// Whether a value from a generic assignment looks machine-made rather than a word, an
/// identifier, a path or a template.
pub fn looks_random(value: &[u8]) -> bool {
    let len = value.len();
    if !(8..=512).contains(&len) || is_placeholder(value) {
        return false;
    }
    let (mut lower, mut upper, mut digit, mut other) = (0, 0, 0, 0);
    for &b in value {
        match b {
            b'a'..=b'z' => lower += 1,
            b'A'..=b'Z' => upper += 1,
            b'0'..=b'9' => digit += 1,
            _ => other += 1,
        }
    }
    let classes = [lower, upper, digit, other]
        .iter()
        .filter(|&&c| c > 0)
        .count();
    if classes < 2 || (len < 16 && classes < 3) {
        return false;
    }
    // Identifiers and dotted paths (`self.password`, `config.db_secret`, `MY_SECRET_NAME`).
    let identifier = value
        .iter()
        .all(|&b| b.is_ascii_alphabetic() || matches!(b, b'_' | b'.' | b'-' | b':'))
        || (value
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            && value.contains(&b'.')
            && digit == 0);
    if identifier {
        return false;
    }
    if is_uuid(value) {
        return false;
    }
    // File paths and URLs are not secrets in an assignment.
    if value.starts_with(b"/") || value.starts_with(b"./") || value.starts_with(b"http") {
        return false;
    }
    let floor = if len >= 20 {
        3.5
    } else {
        0.82 * (len as f32).log2()
    };
    shannon_entropy(value) >= floor
}

/// `8-4-4-4-12` hex.
pub fn is_uuid(value: &[u8]) -> bool {
    value.len() == 36
        && value.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn basic_auth(value: &[u8]) -> bool {
    use base64::Engine as _;
    let trimmed = value.trim_ascii();
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(trimmed) else {
        return false;
    };
    match decoded.iter().position(|&b| b == b':') {
        Some(i) => {
            let pass = &decoded[i + 1..];
            i > 0
                && pass.len() >= 3
                && url_password(pass)
                && !decoded.iter().any(|b| b.is_ascii_control())
        }
        None => false,
    }
}

// --- PII ---

fn card(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    let n = digits_of(value, &mut buf);
    let d = &buf[..n];
    if !(13..=19).contains(&n) || !luhn(d) {
        return false;
    }
    // Separators must be uniform: all spaces or all dashes, never mixed.
    let has_space = value.contains(&b' ');
    let has_dash = value.contains(&b'-');
    if has_space && has_dash {
        return false;
    }
    if d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let prefix = |k: usize| d[..k].iter().fold(0u32, |acc, &x| acc * 10 + x as u32);
    let issuer = match d[0] {
        4 => matches!(n, 13 | 16 | 19),
        5 => {
            (51..=55).contains(&prefix(2)) && n == 16
                || matches!(prefix(2), 50 | 56..=59) && n >= 12
        }
        2 => (2221..=2720).contains(&prefix(4)) && n == 16,
        3 => {
            (matches!(prefix(2), 34 | 37) && n == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&n))
                || ((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39))
                    && (14..=19).contains(&n)
        }
        // Discover 6011/644-649/65, UnionPay 62, RuPay 60, Maestro 6304/6759/6761-6763.
        6 => {
            ((prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 62
                || prefix(2) == 60)
                && (16..=19).contains(&n))
                || (matches!(prefix(4), 6304 | 6759 | 6761..=6763) && (12..=19).contains(&n))
        }
        _ => false,
    };
    issuer && !is_documented_test_card(d)
}

/// Card numbers printed in payment providers' documentation as test numbers.
fn is_documented_test_card(d: &[u8]) -> bool {
    const TEST: &[&str] = &[
        "4111111111111111",
        "4242424242424242",
        "4012888888881881",
        "4000056655665556",
        "5555555555554444",
        "5105105105105100",
        "2223003122003222",
        "378282246310005",
        "371449635398431",
        "6011111111111117",
        "6011000990139424",
        "3530111333300000",
        "30569309025904",
        "38520000023237",
        "6200000000000005",
    ];
    TEST.iter()
        .any(|t| t.len() == d.len() && t.bytes().zip(d).all(|(a, &b)| a - b'0' == b))
}

/// IBAN lengths per country (ISO 13616 registry).
fn iban_length(cc: &[u8]) -> Option<usize> {
    const TABLE: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NL", 18),
        (b"NO", 15),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"SA", 24),
        (b"SC", 31),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
    ];
    TABLE.iter().find(|(c, _)| c[..] == *cc).map(|&(_, n)| n)
}

fn iban(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    let mut n = 0;
    for &b in value {
        if b == b' ' || b == b'-' {
            continue;
        }
        if n == buf.len() || !b.is_ascii_alphanumeric() {
            return false;
        }
        buf[n] = b.to_ascii_uppercase();
        n += 1;
    }
    let s = &buf[..n];
    if n < 15 || iban_length(&s[..2]) != Some(n) {
        return false;
    }
    // Move the first four chars to the end, letters become 10..35, then mod 97 must be 1.
    let mut rem = 0u32;
    for &c in s[4..].iter().chain(&s[..4]) {
        let v = match c {
            b'0'..=b'9' => (c - b'0') as u32,
            b'A'..=b'Z' => (c - b'A') as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    if digits_of(value, &mut buf) != 9 {
        return false;
    }
    let num = |r: std::ops::Range<usize>| buf[r].iter().fold(0u32, |a, &x| a * 10 + x as u32);
    let (area, group, serial) = (num(0..3), num(3..5), num(5..9));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return false;
    }
    // Numbers published as examples (Woolworth wallet card, ad campaigns, textbook).
    !matches!(
        (area, group, serial),
        (78, 5, 1120) | (219, 9, 9999) | (123, 45, 6789)
    )
}

fn sin(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    if digits_of(value, &mut buf) != 9 {
        return false;
    }
    !matches!(buf[0], 0 | 8) && luhn(&buf[..9])
}

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];
const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];
const VERHOEFF_INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];

/// Verhoeff checksum over a digit slice (the last digit is the check digit).
pub fn verhoeff(digits: &[u8]) -> bool {
    let mut c = 0u8;
    for (i, &d) in digits.iter().rev().enumerate() {
        c = VERHOEFF_D[c as usize][VERHOEFF_P[i % 8][d as usize] as usize];
    }
    c == 0
}

/// The Verhoeff check digit to append to `digits`.
pub fn verhoeff_check_digit(digits: &[u8]) -> u8 {
    let mut c = 0u8;
    for (i, &d) in digits.iter().rev().enumerate() {
        c = VERHOEFF_D[c as usize][VERHOEFF_P[(i + 1) % 8][d as usize] as usize];
    }
    VERHOEFF_INV[c as usize]
}

fn aadhaar(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    if digits_of(value, &mut buf) != 12 {
        return false;
    }
    buf[0] >= 2 && verhoeff(&buf[..12]) && !buf[..12].iter().all(|&d| d == buf[0])
}

/// The two CPF check digits for nine base digits.
pub fn cpf_check_digits(base: &[u8]) -> (u8, u8) {
    let dv = |digits: &[u8], start: u32| {
        let s: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, &d)| d as u32 * (start - i as u32))
            .sum();
        let r = (s * 10) % 11;
        if r == 10 {
            0
        } else {
            r as u8
        }
    };
    let d1 = dv(&base[..9], 10);
    let mut ten = [0u8; 10];
    ten[..9].copy_from_slice(&base[..9]);
    ten[9] = d1;
    (d1, dv(&ten, 11))
}

fn cpf(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    if digits_of(value, &mut buf) != 11 {
        return false;
    }
    let d = &buf[..11];
    if d.iter().all(|&x| x == d[0]) {
        return false;
    }
    cpf_check_digits(d) == (d[9], d[10])
}

const DNI_LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";

/// The Spanish DNI/NIE check letter for a number.
pub fn dni_letter(n: u32) -> u8 {
    DNI_LETTERS[(n % 23) as usize]
}

fn dni(value: &[u8]) -> bool {
    let Some(&letter) = value.last() else {
        return false;
    };
    let mut buf = [0u8; 40];
    if digits_of(value, &mut buf) != 8 {
        return false;
    }
    let n = buf[..8].iter().fold(0u32, |a, &x| a * 10 + x as u32);
    letter.to_ascii_uppercase() == dni_letter(n)
}

fn nie(value: &[u8]) -> bool {
    let (Some(&first), Some(&letter)) = (value.first(), value.last()) else {
        return false;
    };
    let lead = match first.to_ascii_uppercase() {
        b'X' => 0,
        b'Y' => 1,
        b'Z' => 2,
        _ => return false,
    };
    let mut buf = [0u8; 40];
    if digits_of(value, &mut buf) != 7 {
        return false;
    }
    let n = buf[..7].iter().fold(lead, |a, &x| a * 10 + x as u32);
    letter.to_ascii_uppercase() == dni_letter(n)
}

fn nino(value: &[u8]) -> bool {
    let letters: Vec<u8> = value
        .iter()
        .filter(|b| b.is_ascii_alphabetic())
        .map(u8::to_ascii_uppercase)
        .collect();
    if letters.len() != 3 {
        return false;
    }
    let prefix = [letters[0], letters[1]];
    const BAD_PREFIX: &[&[u8; 2]] = &[b"BG", b"GB", b"NK", b"KN", b"TN", b"NT", b"ZZ"];
    if BAD_PREFIX.iter().any(|p| **p == prefix) {
        return false;
    }
    // First letter never D F I Q U V; second never D F I O Q U V.
    !b"DFIQUV".contains(&prefix[0])
        && !b"DFIOQUV".contains(&prefix[1])
        && (b'A'..=b'D').contains(&letters[2])
}

fn pan_in(value: &[u8]) -> bool {
    // Fourth letter is the holder type: Person, Company, HUF, Firm, AOP, Trust, BOI, Local, AJP, Govt.
    value.len() == 10 && b"PCHFATBLJG".contains(&value[3])
}

/// Country-code top-level domains (ISO 3166 alpha-2 plus `uk`, `eu`, `ac`).
const CC_TLDS: &str = "ac ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bm bn bo br bs bt bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg er es et eu fi fj fk fm fo fr ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sk sl sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw";

/// [`CC_TLDS`] as a bit per two-letter pair, built at compile time: a table of 250 names
/// searched one by one was 2% of a scan of text dense with email addresses.
const CC_TLD_BITS: [u64; 11] = {
    let list = CC_TLDS.as_bytes();
    let mut bits = [0u64; 11];
    let mut i = 0;
    while i + 1 < list.len() {
        let pair = (list[i] - b'a') as usize * 26 + (list[i + 1] - b'a') as usize;
        bits[pair / 64] |= 1 << (pair % 64);
        i += 3;
    }
    bits
};

/// Whether `a b` (any case) is a country-code top-level domain.
fn country_tld(a: u8, b: u8) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if !a.is_ascii_lowercase() || !b.is_ascii_lowercase() {
        return false;
    }
    let pair = usize::from(a - b'a') * 26 + usize::from(b - b'a');
    CC_TLD_BITS[pair / 64] >> (pair % 64) & 1 == 1
}

/// Generic and popular new top-level domains.
const G_TLDS: &str = "com org net edu gov mil int info biz name pro mobi aero coop museum jobs travel tel asia cat app dev io ai xyz online site tech store cloud email live blog shop page news media agency digital solutions services company group network systems software studio design world today life space website club team work global center academy health law finance bank capital consulting codes tools zone one art moe";

fn email(value: &[u8]) -> bool {
    let Some(at) = value.iter().rposition(|&b| b == b'@') else {
        return false;
    };
    let (local, domain) = (&value[..at], &value[at + 1..]);
    // RFC 5321 limits: 64 bytes of local part, 63 per domain label (the rule's regex leaves
    // them to this check, which keeps its automaton small).
    if local.is_empty()
        || local.len() > 64
        || local.starts_with(b".")
        || local.ends_with(b".")
        || local.windows(2).any(|w| w == b"..")
        || local.eq_ignore_ascii_case(b"git")
    {
        return false;
    }
    if domain
        .split(|&b| b == b'.')
        .any(|label| label.is_empty() || label.len() > 63 || label[0] == b'-')
    {
        return false;
    }
    let tld = domain.rsplit(|&b| b == b'.').next().unwrap_or(b"");
    let known = match tld {
        [a, b] => country_tld(*a, *b),
        _ => G_TLDS
            .split(' ')
            .any(|t| t.as_bytes().eq_ignore_ascii_case(tld)),
    };
    if !known {
        return false;
    }
    // RFC 2606 documentation domains are not personal data.
    let doc = |d: &[u8]| {
        domain.eq_ignore_ascii_case(d)
            || domain.len() > d.len()
                && domain[domain.len() - d.len() - 1] == b'.'
                && domain[domain.len() - d.len()..].eq_ignore_ascii_case(d)
    };
    ![b"example.com", b"example.org", b"example.net"]
        .iter()
        .any(|d| doc(&d[..]))
}

fn ipv4_public(value: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(value) else {
        return false;
    };
    // Leading zeros (`010.1.1.1`) are ambiguous and usually version strings, not addresses.
    if s.split('.').any(|p| p.len() > 1 && p.starts_with('0')) {
        return false;
    }
    let Ok(ip) = s.parse::<Ipv4Addr>() else {
        return false;
    };
    let o = ip.octets();
    let reserved = ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_unspecified()
        || ip.is_multicast()
        || o[0] == 0
        || o[0] >= 240
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        || (o[0] == 198 && (18..20).contains(&o[1]));
    !reserved
}

fn ipv6_public(value: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(value) else {
        return false;
    };
    if s.bytes().filter(|&b| b == b':').count() < 2 {
        return false;
    }
    let Ok(ip) = s.parse::<Ipv6Addr>() else {
        return false;
    };
    let seg = ip.segments();
    let global_unicast = (seg[0] & 0xe000) == 0x2000;
    let documentation = (seg[0] == 0x2001 && seg[1] == 0x0db8) || (seg[0] & 0xfff0) == 0x3ff0;
    let benchmarking = seg[0] == 0x2001 && seg[1] == 0x0002 && seg[2] == 0;
    let orchid = seg[0] == 0x2001 && (seg[1] & 0xfff0) == 0x0010;
    global_unicast && !documentation && !benchmarking && !orchid
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Decodes Base58 (Bitcoin alphabet) into bytes.
pub fn base58_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    for &c in s {
        let mut carry = BASE58.iter().position(|&x| x == c)? as u32;
        for byte in out.iter_mut().rev() {
            carry += *byte as u32 * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            out.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.iter().take_while(|&&c| c == b'1').count();
    let mut full = vec![0u8; zeros];
    full.extend(out);
    Some(full)
}

/// Encodes bytes as Base58 (Bitcoin alphabet).
pub fn base58_encode(data: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new();
    for &byte in data {
        let mut carry = byte as u32;
        for d in digits.iter_mut() {
            carry += (*d as u32) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut s: String = data.iter().take_while(|&&b| b == 0).map(|_| '1').collect();
    s.extend(digits.iter().rev().map(|&d| BASE58[d as usize] as char));
    s
}

/// The 4-byte Base58Check checksum (double SHA-256).
pub fn base58check_sum(payload: &[u8]) -> [u8; 4] {
    let h = Sha256::digest(Sha256::digest(payload));
    [h[0], h[1], h[2], h[3]]
}

fn btc_base58(value: &[u8]) -> bool {
    let Some(raw) = base58_decode(value) else {
        return false;
    };
    if raw.len() != 25 || !matches!(raw[0], 0x00 | 0x05) {
        return false;
    }
    base58check_sum(&raw[..21]) == raw[21..]
}

const BECH32_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn bech32_polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let mut chk: u32 = 1;
    for &v in values {
        let top = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ v as u32;
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn bech32_hrp_expand(hrp: &[u8]) -> Vec<u8> {
    let mut v: Vec<u8> = hrp.iter().map(|c| c >> 5).collect();
    v.push(0);
    v.extend(hrp.iter().map(|c| c & 31));
    v
}

/// The bech32 (`m = false`) or bech32m (`m = true`) checksum chars for `hrp` and 5-bit data.
pub fn bech32_checksum(hrp: &[u8], data: &[u8], m: bool) -> [u8; 6] {
    let mut values = bech32_hrp_expand(hrp);
    values.extend_from_slice(data);
    values.extend_from_slice(&[0; 6]);
    let constant = if m { 0x2bc8_30a3 } else { 1 };
    let polymod = bech32_polymod(&values) ^ constant;
    let mut out = [0u8; 6];
    for (i, o) in out.iter_mut().enumerate() {
        *o = BECH32_CHARSET[((polymod >> (5 * (5 - i))) & 31) as usize];
    }
    out
}

fn btc_bech32(value: &[u8]) -> bool {
    let lower: Vec<u8> = value.iter().map(u8::to_ascii_lowercase).collect();
    if value.iter().any(u8::is_ascii_lowercase) && value.iter().any(u8::is_ascii_uppercase) {
        return false;
    }
    let Some(sep) = lower.iter().rposition(|&b| b == b'1') else {
        return false;
    };
    let (hrp, data) = (&lower[..sep], &lower[sep + 1..]);
    if hrp != b"bc" || data.len() < 7 {
        return false;
    }
    let Some(values) = data
        .iter()
        .map(|c| BECH32_CHARSET.iter().position(|x| x == c).map(|p| p as u8))
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut all = bech32_hrp_expand(hrp);
    all.extend_from_slice(&values);
    let pm = bech32_polymod(&all);
    // Witness version 0 uses bech32, later versions bech32m (BIP-350).
    match values[0] {
        0 => pm == 1,
        1..=16 => pm == 0x2bc8_30a3,
        _ => false,
    }
}

/// EIP-55 mixed-case checksum of a 40-hex-char address body (lowercase in).
pub fn eip55(lower_hex: &[u8]) -> String {
    use sha3::Keccak256;
    let hash = Keccak256::digest(lower_hex);
    lower_hex
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let nibble = (hash[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0xf;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase() as char
            } else {
                c as char
            }
        })
        .collect()
}

fn eth(value: &[u8]) -> bool {
    let body = value.strip_prefix(b"0x").unwrap_or(value);
    if body.len() != 40 || !body.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    // All zeros or a run of one digit is a burn/null address, not a person's.
    if body.iter().all(|&b| b == body[0]) {
        return false;
    }
    let has_lower = body.iter().any(u8::is_ascii_lowercase);
    let has_upper = body.iter().any(u8::is_ascii_uppercase);
    if has_lower && has_upper {
        let lower: Vec<u8> = body.iter().map(u8::to_ascii_lowercase).collect();
        return eip55(&lower).as_bytes() == body;
    }
    // Single-case: a hash-looking value needs letters and digits both.
    body.iter().any(u8::is_ascii_digit) && body.iter().any(u8::is_ascii_alphabetic)
}

/// Country calling codes with the national significant number length range.
const CALLING_CODES: &[(&str, u8, u8)] = &[
    ("1", 10, 10),
    ("7", 10, 10),
    ("20", 10, 10),
    ("27", 9, 9),
    ("30", 10, 10),
    ("31", 9, 9),
    ("32", 8, 9),
    ("33", 9, 9),
    ("34", 9, 9),
    ("36", 8, 9),
    ("39", 6, 11),
    ("40", 9, 9),
    ("41", 9, 9),
    ("43", 4, 13),
    ("44", 9, 10),
    ("45", 8, 8),
    ("46", 7, 9),
    ("47", 8, 8),
    ("48", 9, 9),
    ("49", 6, 13),
    ("51", 9, 9),
    ("52", 10, 10),
    ("54", 10, 10),
    ("55", 10, 11),
    ("56", 9, 9),
    ("57", 10, 10),
    ("58", 10, 10),
    ("60", 9, 10),
    ("61", 9, 9),
    ("62", 9, 12),
    ("63", 10, 10),
    ("64", 8, 10),
    ("65", 8, 8),
    ("66", 9, 9),
    ("81", 9, 10),
    ("82", 9, 10),
    ("84", 9, 10),
    ("86", 11, 11),
    ("90", 10, 10),
    ("91", 10, 10),
    ("92", 10, 10),
    ("234", 10, 10),
    ("351", 9, 9),
    ("353", 7, 9),
    ("358", 6, 10),
    ("380", 9, 9),
    ("420", 9, 9),
    ("880", 10, 10),
    ("971", 8, 9),
    ("972", 8, 9),
];

fn phone_intl(value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    let n = digits_of(value, &mut buf);
    let mut d = &buf[..n];
    // `00` international prefix.
    if !value.starts_with(b"+") {
        match d.strip_prefix(&[0, 0]) {
            Some(rest) => d = rest,
            None => return false,
        }
    }
    for len in 1..=3 {
        if d.len() <= len {
            break;
        }
        let cc: String = d[..len].iter().map(|&x| (x + b'0') as char).collect();
        if let Some(&(_, lo, hi)) = CALLING_CODES.iter().find(|(c, _, _)| *c == cc) {
            let mut nsn = &d[len..];
            // A trunk zero written in brackets, `+44 (0)20 …`, is not part of the number.
            if nsn.first() == Some(&0) && cc != "39" {
                nsn = &nsn[1..];
            }
            if !(lo as usize..=hi as usize).contains(&nsn.len()) {
                return false;
            }
            if cc == "1" {
                return nanp_ok(nsn);
            }
            if cc == "44" && uk_drama(nsn) {
                return false;
            }
            return nsn.first().is_some_and(|&f| f != 0);
        }
    }
    false
}

/// Ofcom's ranges reserved for drama (TV, film, books): never a real subscriber.
fn uk_drama(nsn: &[u8]) -> bool {
    const RANGES: &[&[u8]] = &[
        &[2, 0, 7, 9, 4, 6, 0],
        &[1, 1, 3, 4, 9, 6, 0],
        &[1, 6, 1, 4, 9, 6, 0],
        &[1, 1, 7, 4, 9, 6, 0],
        &[7, 7, 0, 0, 9, 0, 0],
        &[8, 0, 8, 1, 5, 7, 0],
    ];
    RANGES.iter().any(|r| nsn.starts_with(r))
}

/// North American numbering plan: NXX-NXX-XXXX, no N11 codes, not the 555-01xx fiction range.
fn nanp_ok(d: &[u8]) -> bool {
    if d.len() != 10 || d[0] < 2 || d[3] < 2 {
        return false;
    }
    if (d[1] == 1 && d[2] == 1) || (d[4] == 1 && d[5] == 1) {
        return false;
    }
    !(d[3..6] == [5, 5, 5] && d[6] == 0 && d[7] == 1)
}

fn phone_national(country: Country, value: &[u8]) -> bool {
    let mut buf = [0u8; 40];
    let n = digits_of(value, &mut buf);
    let d = &buf[..n];
    if n == 0 || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    match country {
        Country::Nanp => nanp_ok(d),
        // 11 digits with the trunk 0: geographic 01/02/03, mobile 07, non-geographic 08.
        Country::Gb => {
            n == 11 && d[0] == 0 && matches!(d[1], 1 | 2 | 3 | 7 | 8) && !uk_drama(&d[1..])
        }
        Country::De => (10..=12).contains(&n) && d[0] == 0 && d[1] != 0,
        Country::Fr => n == 10 && d[0] == 0 && (1..=9).contains(&d[1]),
        Country::Es => n == 9 && (6..=9).contains(&d[0]),
        Country::It => (9..=11).contains(&n) && (d[0] == 3 || d[0] == 0),
        Country::Nl => n == 10 && d[0] == 0 && d[1] != 0,
        Country::In => n == 10 && d[0] >= 6,
        Country::Jp => (10..=11).contains(&n) && d[0] == 0 && d[1] != 0,
        Country::Br => (10..=11).contains(&n) && d[0] != 0 && d[1] != 0 && (n == 10 || d[2] == 9),
        Country::Au => n == 10 && d[0] == 0 && matches!(d[1], 2 | 3 | 4 | 7 | 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_tlds_are_exactly_the_listed_pairs() {
        let listed: Vec<&str> = CC_TLDS.split(' ').collect();
        assert!(listed.len() > 200 && listed.iter().all(|t| t.len() == 2));
        for a in b'a'..=b'z' {
            for b in b'a'..=b'z' {
                let name = [a, b];
                let want = listed.iter().any(|t| t.as_bytes() == name);
                assert_eq!(
                    country_tld(a, b),
                    want,
                    "{}",
                    String::from_utf8_lossy(&name)
                );
                assert_eq!(country_tld(a.to_ascii_uppercase(), b), want);
            }
        }
        assert!(!country_tld(b'1', b'a') && !country_tld(b'.', b'a'));
    }

    #[test]
    fn luhn_edge_cases() {
        assert!(luhn(&[0]));
        assert!(!luhn(&[]));
        assert!(luhn(&[1, 8])); // 18: 1*2=2, +8 = 10
        assert!(!luhn(&[1, 9]));
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3])); // the classic textbook value
    }

    #[test]
    fn card_rules() {
        assert!(
            !card(b"4111111111111111"),
            "documented test card is not PII"
        );
        assert!(!card(b"4111 1111 1111 1112"), "Luhn failure");
        assert!(!card(b"0000000000000000"));
        assert!(!card(b"4539 1488-0343 6467"), "mixed separators");
        // Luhn-valid but unknown issuer (first digit 1, 7, 8, 9).
        assert!(!card(b"1234567812345670"));
        assert!(card(b"4539148803436467")); // airlock:allow
        assert!(card(b"4539 1488 0343 6467")); // airlock:allow
        assert!(!card(b"4539 1488 0343 646"), "wrong length for Visa");
    }

    #[test]
    fn iban_rules() {
        assert!(iban(b"DE89370400440532013000")); // airlock:allow
        assert!(iban(b"DE89 3704 0044 0532 0130 00")); // airlock:allow
        assert!(iban(b"GB82 WEST 1234 5698 7654 32")); // airlock:allow
        assert!(!iban(b"DE88370400440532013000"), "mod-97 failure");
        assert!(!iban(b"DE8937040044053201300"), "wrong length for DE");
        assert!(!iban(b"QQ89370400440532013000"), "unknown country");
        assert!(!iban(b"DE89_3704"));
    }

    #[test]
    fn ssn_rules() {
        assert!(ssn(b"536-22-1234")); // airlock:allow
        assert!(!ssn(b"000-22-1234"));
        assert!(!ssn(b"666-22-1234"));
        assert!(!ssn(b"912-22-1234"));
        assert!(!ssn(b"536-00-1234"));
        assert!(!ssn(b"536-22-0000"));
        assert!(!ssn(b"078-05-1120"), "the Woolworth wallet number");
        assert!(!ssn(b"536-22-123"));
    }

    #[test]
    fn sin_and_aadhaar_and_cpf() {
        assert!(sin(b"130 692 544")); // airlock:allow
        assert!(!sin(b"130 692 545"));
        assert!(!sin(b"046 454 286"), "first digit 0 is not issued");
        assert!(!sin(b"846 454 280"), "first digit 8 is not issued");
        let base = [2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4];
        let mut full = base.to_vec();
        full.push(verhoeff_check_digit(&base));
        assert!(verhoeff(&full));
        let s: String = full.iter().map(|d| (d + b'0') as char).collect();
        assert!(aadhaar(s.as_bytes()));
        full[11] = (full[11] + 1) % 10;
        assert!(!verhoeff(&full));
        let s: String = full.iter().map(|d| (d + b'0') as char).collect();
        assert!(!aadhaar(s.as_bytes()));
        assert!(!aadhaar(b"1234 5678 9012"), "first digit must be 2-9");
        assert!(cpf(b"529.982.247-25")); // airlock:allow
        assert!(!cpf(b"529.982.247-26"));
        assert!(
            !cpf(b"111.111.111-11"),
            "repeated digits pass mod-11 but are invalid"
        );
    }

    #[test]
    fn spanish_ids() {
        assert!(dni(b"12345678Z")); // airlock:allow
        assert!(!dni(b"12345678A"));
        assert!(nie(b"X1234567L")); // airlock:allow
        assert!(!nie(b"X1234567A"));
        assert!(!nie(b"A1234567L"));
    }

    #[test]
    fn nino_and_pan() {
        assert!(nino(b"AB 12 34 56 C")); // airlock:allow
        assert!(!nino(b"GB123456A"), "GB prefix not allocated");
        assert!(!nino(b"DA123456A"), "D is never a first letter");
        assert!(!nino(b"AB123456E"), "suffix is A-D");
        assert!(pan_in(b"ABCPE1234F")); // airlock:allow
        assert!(!pan_in(b"ABCDE1234F"), "D is not a holder type");
    }

    #[test]
    fn email_tlds() {
        assert!(email(b"jane.doe@gmail.com")); // airlock:allow
        assert!(email(b"a@b.co.uk")); // airlock:allow
        assert!(!email(b"logo@2x.png"));
        assert!(!email(b"user@example.com"));
        assert!(!email(b"git@github.com"));
        assert!(!email(b"a..b@mail.com"));
        assert!(!email(b"x@host.internal"));
        assert!(!email(b"GIT@github.com"));
        assert!(!email(b"ops@mail.EXAMPLE.org"));
        assert!(email(b"ops@myexample.org")); // airlock:allow
        assert!(!email(b"a@-bad.com"));
        let long_local = format!("{}@mail.com", "a".repeat(65));
        assert!(!email(long_local.as_bytes()));
        assert!(email(format!("{}@mail.com", "a".repeat(64)).as_bytes()));
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert!(!email(long_label.as_bytes()));
        assert!(email(format!("a@{}.com", "b".repeat(63)).as_bytes()));
    }

    #[test]
    fn ip_ranges() {
        assert!(ipv4_public(b"8.8.8.8")); // airlock:allow
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "172.16.5.4",
            "169.254.1.1",
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.9",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
            "01.2.3.4",
        ] {
            assert!(!ipv4_public(ip.as_bytes()), "{ip}");
        }
        assert!(ipv6_public(b"2a00:1450:4001:80b::200e")); // airlock:allow
        assert!(!ipv6_public(b"2001:db8::1"));
        assert!(!ipv6_public(b"fe80::1"));
        assert!(!ipv6_public(b"::1"));
        assert!(!ipv6_public(b"fd00::1"));
        assert!(!ipv6_public(b"3fff::1"));
    }

    #[test]
    fn crypto_addresses() {
        // The genesis block address: a well-known public value.
        assert!(btc_base58(b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")); // airlock:allow
        assert!(!btc_base58(b"1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb"));
        assert!(btc_bech32(b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")); // airlock:allow
        assert!(!btc_bech32(b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5"));
        let body = b"5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
        let good = format!("0x{}", eip55(body));
        assert!(eth(good.as_bytes()));
        let bad = good.replacen('A', "a", 1);
        assert!(!eth(bad.as_bytes()), "a broken EIP-55 case pattern");
        assert!(!eth(b"0x0000000000000000000000000000000000000000"));
    }

    #[test]
    fn github_checksum() {
        let random = b"abcdefghijABCDEFGHIJ0123456789";
        let sum = base62_crc32(random);
        let tok = [&b"ghp_"[..], random, &sum].concat();
        assert!(github_crc32(&tok));
        let mut bad = tok.clone();
        bad[10] = b'Z';
        assert!(!github_crc32(&bad));
    }

    #[test]
    fn phones() {
        assert!(phone_intl(b"+44 20 3123 4567")); // airlock:allow
        assert!(!phone_intl(b"+44 20 7946 0958"), "Ofcom drama range"); // airlock:allow
        assert!(phone_intl(b"+49 30 901820")); // airlock:allow
        assert!(phone_intl(b"+1 (415) 555-2671")); // airlock:allow
        assert!(
            !phone_intl(b"+1 (415) 555-0123"),
            "555-01xx is reserved for fiction"
        );
        assert!(!phone_intl(b"+44 12"));
        assert!(phone_intl(b"0044 20 3123 4567")); // airlock:allow
        assert!(!phone_intl(b"+999 123456789"));
        assert!(phone_national(Country::Fr, b"01 42 68 53 00")); // airlock:allow
        assert!(!phone_national(Country::Fr, b"00 42 68 53 00"));
        assert!(phone_national(Country::Jp, b"03-1234-5678")); // airlock:allow
        assert!(!phone_national(Country::Jp, b"01-02-2024"));
        assert!(phone_national(Country::Br, b"(11) 91234-5678")); // airlock:allow
        assert!(!phone_national(Country::Nanp, b"(415) 155-2671"));
    }

    #[test]
    fn random_values() {
        assert!(looks_random(b"q8Zr2pLx9TfV4mWc7Ks1"));
        assert!(!looks_random(b"hunter2"));
        assert!(!looks_random(b"correcthorsebatterystaple"));
        assert!(!looks_random(b"self.db_password"));
        assert!(!looks_random(b"your-api-key-here"));
        assert!(!looks_random(b"123e4567-e89b-12d3-a456-426614174000"));
        assert!(!looks_random(b"${DB_PASSWORD}"));
    }

    #[test]
    fn placeholders() {
        assert!(is_placeholder(b"AKIAIOSFODNN7EXAMPLE"));
        assert!(is_placeholder(b"sk-..."));
        assert!(is_placeholder(b"<API_KEY>"));
        assert!(is_placeholder(b"xxxxxxxxxxxxxxxx"));
        assert!(!is_placeholder(b"q8Zr2pLx9TfV4mWc7Ks1"));
        assert!(is_placeholder(b"abcabcabcabc"));
        assert!(is_placeholder(b"\xff\x80\xff\x80\x7f\x7f"));
        assert!(!is_placeholder(b"abcdabcdabcd"));
        assert!(!is_placeholder(b"\xff\x80\x7f\x00\xff"));
        // Short words count where a placeholder puts them, not inside random text.
        let all = |values: &[&[u8]], placeholder: bool| {
            for v in values {
                let s = String::from_utf8_lossy(v);
                assert_eq!(is_placeholder(v), placeholder, "{s}");
            }
        };
        all(
            &[
                &b"sk-fake-1234567890"[..],
                b"fakeToken9f8e7d6c",
                b"q8Zr2pLx9TfV4mWcFAKE",
                b"tok_DUMMY_9f8e7d6c5b",
                b"AKIAXXXXXXXXXXXXXXXX",
                b"ab12xxxxxxcd34",
                b"MyFakeApiKey2024",
                b"myFakePassword1",
                b"AKIAFAKEACCESSKEYID2",
                b"AIzaSyDummyKeyForLocalTesting123456789",
                b"AKIA12345XXXXXXX6789",
            ],
            true,
        );
        all(
            &[
                &b"q8Zr2pLx9fakEV4mWc7Ks1"[..],
                b"3igKZSCe0hLoIoompVasMmSc7fakEE0BvIgO",
                b"q8Zr2pLxXxXTfV4mWc7Ks1",
                b"Zr2pLdummy9TfV4mWc7K",
                b"Zr2pL9FakeTfV4mWc7K",
                b"ZR2PL9FAKETFV4MWC7k",
            ],
            false,
        );
    }

    #[test]
    fn entropy_bounds() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"ab") - 1.0).abs() < 1e-6);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-6);
    }

    /// The counting form agrees with the textbook sum `-Σ p·log2(p)`, on short values (table)
    /// and on long ones (counts past the table).
    #[test]
    fn entropy_matches_the_definition() {
        let textbook = |v: &[u8]| -> f64 {
            let mut counts = [0u64; 256];
            v.iter().for_each(|&b| counts[b as usize] += 1);
            let n = v.len() as f64;
            counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| -(c as f64 / n) * (c as f64 / n).log2())
                .sum()
        };
        let mut g = crate::inspect::testgen::Gen::new(7);
        for len in [1usize, 2, 3, 7, 16, 40, 64, 200, 513, 4000] {
            for alphabet in [1usize, 2, 5, 16, 62, 256] {
                let v: Vec<u8> = (0..len).map(|_| g.below(alphabet) as u8).collect();
                let (got, want) = (shannon_entropy(&v) as f64, textbook(&v));
                assert!(
                    (got - want).abs() < 1e-5,
                    "len {len} alphabet {alphabet}: {got} vs {want}"
                );
            }
        }
    }
}
