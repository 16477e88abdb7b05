//! Test-value generator: expands the `examples`/`negatives` templates of the rule files into
//! realistic-looking values with correct checksums, at test time.
//!
//! Rule files hold templates such as `ghp_{{m:36}}` or `{{card:visa}}`, never literal
//! credentials, so no committed file trips a secret scanner. The unit tests, the corpus test,
//! the benchmarks and the fuzz seeds all draw values from here. Not part of the stable API.
//!
//! Template fields, `{{name}}` or `{{name:arg}}`:
//! - random chars, `{{C:N}}` with class `C`: `m` base62, `a` lower+digit, `A` upper+digit,
//!   `l` lower, `u` upper, `L` letters, `h` hex, `H` upper hex, `d` digit, `n` digit 2-9,
//!   `b` base64, `B` base64url, `z` base32, `w` lower base32, `c`/`C` bech32, `s` password chars;
//! - checksummed values: `gh:PREFIX`, `card:visa|mc|amex|discover|jcb|visa_spaced|bad`,
//!   `iban:CC`, `iban:CC_spaced`, `iban:bad`, `ssn`, `ssn:bad`, `sin`, `sin:bad`, `aadhaar`,
//!   `aadhaar:bad`, `cpf`, `cpf:bad`, `dni`, `dni:bad`, `nie`, `nie:bad`, `btc`, `btc:bad`,
//!   `bech32`, `bech32:bad`, `eth`, `eth:bad`, `jwt`, `pem:LABEL`, `pemjson:LABEL`, `ipv4`, `ipv6`,
//!   `b64:TEXT` (base64 of an expanded inner template, with `[[`/`]]` for inner braces).

use super::validate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded generator.
pub struct Gen {
    rng: StdRng,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.gen_range(0..n.max(1))
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `n` random chars from a class letter (see module docs).
    pub fn chars(&mut self, class: char, n: usize) -> Option<String> {
        let alphabet: &[u8] = match class {
            'm' => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            'a' => b"0123456789abcdefghijklmnopqrstuvwxyz",
            'A' => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            'l' => b"abcdefghijklmnopqrstuvwxyz",
            'u' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            'L' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            'h' => b"0123456789abcdef",
            'H' => b"0123456789ABCDEF",
            'd' => b"0123456789",
            'n' => b"23456789",
            'b' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            'B' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            'z' => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
            'c' => b"qpzry9x8gf2tvdw0s3jn54khce6mua7l",
            'C' => b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
            'w' => b"abcdefghijklmnopqrstuvwxyz234567",
            's' => b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%^*_+",
            _ => return None,
        };
        Some(
            (0..n)
                .map(|_| alphabet[self.below(alphabet.len())] as char)
                .collect(),
        )
    }

    fn digits(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.below(10) as u8).collect()
    }

    fn digit_string(d: &[u8]) -> String {
        d.iter().map(|x| (x + b'0') as char).collect()
    }

    /// Expands every `{{…}}` field of a template.
    pub fn expand(&mut self, template: &str) -> Result<String, String> {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed field in {template:?}"))?;
            let field = &after[..close];
            out.push_str(&self.field(field)?);
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn field(&mut self, field: &str) -> Result<String, String> {
        let (name, arg) = match field.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (field, None),
        };
        if name.chars().count() == 1 {
            let n: usize = arg
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("bad length in {field:?}"))?;
            let c = name.chars().next().unwrap_or('?');
            return self
                .chars(c, n)
                .ok_or_else(|| format!("unknown class in {field:?}"));
        }
        let arg = arg.unwrap_or("");
        Ok(match name {
            "gh" => self.github(arg),
            "card" => self.card(arg),
            "iban" => self.iban(arg),
            "ssn" => self.ssn(arg == "bad"),
            "sin" => self.sin(arg == "bad"),
            "aadhaar" => self.aadhaar(arg == "bad"),
            "cpf" => self.cpf(arg == "bad"),
            "dni" => self.dni(arg == "bad"),
            "nie" => self.nie(arg == "bad"),
            "btc" => self.btc(arg == "bad"),
            "bech32" => self.bech32(arg == "bad"),
            "eth" => self.eth(arg == "bad"),
            "jwt" => self.jwt(),
            "pem" => self.pem(arg, "\n"),
            "pemjson" => self.pem(arg, "\\n"),
            "ipv4" => self.ipv4(),
            "ipv6" => self.ipv6(),
            "b64" => {
                use base64::{engine::general_purpose::STANDARD, Engine as _};
                let inner = self.expand(&arg.replace("[[", "{{").replace("]]", "}}"))?;
                STANDARD.encode(inner)
            }
            _ => return Err(format!("unknown field {field:?}")),
        })
    }

    /// A GitHub token with a valid CRC32 checksum.
    pub fn github(&mut self, prefix: &str) -> String {
        let random = self.chars('m', 30).unwrap_or_default();
        let sum = validate::base62_crc32(random.as_bytes());
        format!("{prefix}{random}{}", String::from_utf8_lossy(&sum))
    }

    /// A Luhn-valid card of an issuer (or a Luhn-failing one for `bad`).
    pub fn card(&mut self, kind: &str) -> String {
        let (prefix, len): (&str, usize) = match kind {
            "mc" => (
                *self.pick(&["51", "52", "53", "54", "55", "2221", "2720"]),
                16,
            ),
            "amex" => (*self.pick(&["34", "37"]), 15),
            "discover" => (*self.pick(&["6011", "65", "644"]), 16),
            "jcb" => ("3530", 16),
            _ => ("4", 16),
        };
        let mut d: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
        while d.len() < len - 1 {
            d.push(self.below(10) as u8);
        }
        d.push(0);
        for check in 0..10 {
            d[len - 1] = check;
            if validate::luhn(&d) {
                break;
            }
        }
        if kind == "bad" {
            d[len - 1] = (d[len - 1] + 1 + self.below(8) as u8) % 10;
        }
        let s = Self::digit_string(&d);
        match kind {
            "visa_spaced" | "bad" => s
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            "amex" => format!("{} {} {}", &s[..4], &s[4..10], &s[10..]),
            _ => s,
        }
    }

    /// An IBAN with valid mod-97 check digits (`bad` breaks them).
    pub fn iban(&mut self, arg: &str) -> String {
        let (cc, spaced) = match arg.split_once('_') {
            Some((c, _)) => (c, true),
            None => (arg, false),
        };
        let bad = cc == "bad";
        let (cc, bban) = match cc {
            "GB" => (
                "GB",
                format!(
                    "{}{}",
                    self.chars('u', 4).unwrap_or_default(),
                    Self::digit_string(&self.digits(14))
                ),
            ),
            "FR" => ("FR", Self::digit_string(&self.digits(23))),
            "NL" => (
                "NL",
                format!(
                    "{}{}",
                    self.chars('u', 4).unwrap_or_default(),
                    Self::digit_string(&self.digits(10))
                ),
            ),
            "ES" => ("ES", Self::digit_string(&self.digits(20))),
            "IT" => (
                "IT",
                format!(
                    "{}{}",
                    self.chars('u', 1).unwrap_or_default(),
                    Self::digit_string(&self.digits(22))
                ),
            ),
            _ => ("DE", Self::digit_string(&self.digits(18))),
        };
        let numeric: String = format!("{bban}{cc}00")
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    c.to_string()
                } else {
                    (c as u32 - 'A' as u32 + 10).to_string()
                }
            })
            .collect();
        let rem = numeric
            .bytes()
            .fold(0u32, |r, b| (r * 10 + (b - b'0') as u32) % 97);
        let mut check = 98 - rem;
        if bad {
            check = (check + 1 + self.below(90) as u32) % 100;
            if check == 98 - rem {
                check = (check + 1) % 100;
            }
        }
        let iban = format!("{cc}{check:02}{bban}");
        if spaced || bad {
            iban.as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            iban
        }
    }

    pub fn ssn(&mut self, bad: bool) -> String {
        let area = if bad {
            *self.pick(&[0, 666, 901, 955])
        } else {
            100 + self.below(565)
        };
        let area = if area == 666 && !bad { 667 } else { area };
        let group = 1 + self.below(99);
        let serial = 1 + self.below(9999);
        format!("{area:03}-{group:02}-{serial:04}")
    }

    pub fn sin(&mut self, bad: bool) -> String {
        let mut d = vec![1 + self.below(7) as u8];
        d.extend(self.digits(7));
        d.push(0);
        for c in 0..10 {
            d[8] = c;
            if validate::luhn(&d) {
                break;
            }
        }
        if bad {
            d[8] = (d[8] + 5) % 10;
        }
        let s = Self::digit_string(&d);
        format!("{} {} {}", &s[..3], &s[3..6], &s[6..])
    }

    pub fn aadhaar(&mut self, bad: bool) -> String {
        let mut d = vec![2 + self.below(8) as u8];
        d.extend(self.digits(10));
        let mut c = validate::verhoeff_check_digit(&d);
        if bad {
            c = (c + 1 + self.below(8) as u8) % 10;
        }
        d.push(c);
        let s = Self::digit_string(&d);
        format!("{} {} {}", &s[..4], &s[4..8], &s[8..])
    }

    pub fn cpf(&mut self, bad: bool) -> String {
        let mut d = self.digits(9);
        if d.iter().all(|&x| x == d[0]) {
            d[0] = (d[0] + 1) % 10;
        }
        let (a, mut b) = validate::cpf_check_digits(&d);
        if bad {
            b = (b + 1) % 10;
        }
        let s = Self::digit_string(&d);
        format!("{}.{}.{}-{a}{b}", &s[..3], &s[3..6], &s[6..])
    }

    pub fn dni(&mut self, bad: bool) -> String {
        let n = self.below(100_000_000) as u32;
        let mut letter = validate::dni_letter(n);
        if bad {
            letter = validate::dni_letter(n + 1);
        }
        format!("{n:08}{}", letter as char)
    }

    pub fn nie(&mut self, bad: bool) -> String {
        let lead = self.below(3) as u32;
        let n = self.below(10_000_000) as u32;
        let mut letter = validate::dni_letter(lead * 10_000_000 + n);
        if bad {
            letter = validate::dni_letter(lead * 10_000_000 + n + 1);
        }
        format!("{}{n:07}{}", ['X', 'Y', 'Z'][lead as usize], letter as char)
    }

    pub fn btc(&mut self, bad: bool) -> String {
        let mut payload = vec![0u8];
        payload.extend((0..20).map(|_| self.below(256) as u8));
        let mut sum = validate::base58check_sum(&payload);
        if bad {
            sum[0] ^= 1;
        }
        payload.extend_from_slice(&sum);
        validate::base58_encode(&payload)
    }

    pub fn bech32(&mut self, bad: bool) -> String {
        const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        let mut data = vec![0u8];
        data.extend((0..32).map(|_| self.below(32) as u8));
        let mut sum = validate::bech32_checksum(b"bc", &data, false);
        if bad {
            sum[5] = if sum[5] == b'q' { b'p' } else { b'q' };
        }
        let body: String = data.iter().map(|&v| CHARSET[v as usize] as char).collect();
        format!("bc1{body}{}", String::from_utf8_lossy(&sum))
    }

    pub fn eth(&mut self, bad: bool) -> String {
        let lower = self.chars('h', 40).unwrap_or_default();
        let mixed = validate::eip55(lower.as_bytes());
        if bad {
            // Flip the case of one letter so the EIP-55 pattern breaks.
            let mut flipped = String::new();
            let mut done = false;
            for c in mixed.chars() {
                if !done && c.is_ascii_alphabetic() {
                    flipped.push(if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    });
                    done = true;
                } else {
                    flipped.push(c);
                }
            }
            if !flipped.chars().any(|c| c.is_ascii_uppercase())
                || !flipped.chars().any(|c| c.is_ascii_lowercase())
            {
                // Single-case after the flip would be accepted; force mixed and wrong.
                return format!("0x{}{}", flipped[..39].to_ascii_uppercase(), "a");
            }
            return format!("0x{flipped}");
        }
        format!("0x{mixed}")
    }

    pub fn jwt(&mut self) -> String {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let sub = self.chars('a', 12).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"{sub}","iat":{}}}"#,
            1_600_000_000 + self.below(100_000_000)
        ));
        let sig = self.chars('B', 43).unwrap_or_default();
        format!("{header}.{payload}.{sig}")
    }

    pub fn pem(&mut self, label: &str, newline: &str) -> String {
        let label = if label.is_empty() {
            "PRIVATE KEY"
        } else {
            label
        };
        let mut body = String::new();
        for _ in 0..6 {
            body.push_str(&self.chars('b', 64).unwrap_or_default());
            body.push_str(newline);
        }
        body.push_str(&self.chars('b', 20).unwrap_or_default());
        body.push_str("==");
        format!("-----BEGIN {label}-----{newline}{body}{newline}-----END {label}-----")
    }

    pub fn ipv4(&mut self) -> String {
        // First octets outside private, shared, loopback, multicast and reserved space.
        let first = *self.pick(&[8u8, 23, 31, 45, 52, 64, 81, 91, 104, 142, 151, 185, 212]);
        format!(
            "{first}.{}.{}.{}",
            self.below(256),
            self.below(256),
            1 + self.below(254)
        )
    }

    pub fn ipv6(&mut self) -> String {
        let first = *self.pick(&["2a00", "2a01", "2607", "2604", "2400", "2c0f"]);
        format!(
            "{first}:{:x}:{:x}:{:x}::{:x}",
            self.below(0xffff),
            self.below(0xffff),
            1 + self.below(0xfffe),
            1 + self.below(0xfffe)
        )
    }
}
