//! Seeing through evasion: invisible characters, compatibility forms, base64 and
//! percent-encoding.
//!
//! Normalisation builds a second string plus a byte map back into the original, so a finding in
//! the normalised text becomes a span in the original that covers every hidden character. It is
//! only built when the text holds a character that normalisation would change; ASCII text and
//! ordinary non-ASCII prose skip it.

use unicode_normalization::UnicodeNormalization;

/// Characters that render as nothing and are used to split a secret so a scanner misses it.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{E0000}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}')
}

/// Whether `c` changes under NFKC when taken on its own.
fn changes_under_nfkc(c: char) -> bool {
    let mut it = std::iter::once(c).nfkc();
    !(it.next() == Some(c) && it.next().is_none())
}

/// True when [`Normalized::new`] would produce a different string.
pub fn needs_normalization(text: &str) -> bool {
    // Only non-ASCII chars can change, and most text has few: jump from one to the next a
    // word at a time instead of decoding every char (a prompt with one curly quote used to
    // cost a char-by-char walk of the whole text).
    non_ascii_chars(text).any(|(_, c)| is_invisible(c) || changes_under_nfkc(c))
}

/// The non-ASCII chars of `text` with their byte offsets, in order, found without decoding
/// the ASCII between them (most prompts are nearly all ASCII).
pub fn non_ascii_chars(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        at += first_non_ascii(text.as_bytes().get(at..)?)?;
        // `at` follows ASCII or a whole char, so it starts a char.
        let c = text.get(at..)?.chars().next()?;
        let found = (at, c);
        at += c.len_utf8();
        Some(found)
    })
}

/// Offset of the first byte of `bytes` at or above 0x80.
fn first_non_ascii(bytes: &[u8]) -> Option<usize> {
    // `<[u8]>::is_ascii` tests a word at a time; only the block that fails is walked.
    let mut blocks = bytes.chunks_exact(64);
    let mut base = 0;
    for block in &mut blocks {
        if !block.is_ascii() {
            return block.iter().position(|b| !b.is_ascii()).map(|p| base + p);
        }
        base += 64;
    }
    blocks
        .remainder()
        .iter()
        .position(|b| !b.is_ascii())
        .map(|p| base + p)
}

/// Text with invisible characters removed and each character replaced by its NFKC form,
/// with a map from each normalised byte to the original byte offset of its source char.
pub struct Normalized {
    pub text: String,
    /// `map[i]` is the original offset of the char that produced normalised byte `i`;
    /// `map[text.len()]` is the original length.
    map: Vec<u32>,
}

impl Normalized {
    pub fn new(original: &str) -> Self {
        let mut text = String::with_capacity(original.len());
        let mut map = Vec::with_capacity(original.len() + 1);
        let bytes = original.as_bytes();
        let mut off = 0;
        while off < original.len() {
            // ASCII stays as it is: copy the whole run, each byte mapping to itself.
            let run = first_non_ascii(&bytes[off..]).unwrap_or(bytes.len() - off);
            if run > 0 {
                text.push_str(&original[off..off + run]);
                map.extend(off as u32..(off + run) as u32);
                off += run;
                continue;
            }
            let Some(c) = original[off..].chars().next() else {
                break;
            };
            let width = c.len_utf8();
            if !is_invisible(c) {
                let before = text.len();
                // Per-char NFKC: folds fullwidth, mathematical and other compatibility letters.
                // Composition across chars does not matter for the ASCII formats we look for.
                text.extend(std::iter::once(c).nfkc().filter(|&n| !is_invisible(n)));
                map.extend(std::iter::repeat_n(off as u32, text.len() - before));
            }
            off += width;
        }
        map.push(original.len() as u32);
        Self { text, map }
    }

    /// Maps a normalised span back to the smallest original span holding all its source chars.
    pub fn original_span(&self, original: &str, start: usize, end: usize) -> (usize, usize) {
        let o_start = self.map[start] as usize;
        let o_end = if end == 0 {
            o_start
        } else {
            let last = self.map[end - 1] as usize;
            let width = original[last..].chars().next().map_or(0, char::len_utf8);
            last + width
        };
        (o_start, o_end.max(o_start))
    }
}

/// The base64 alphabet, both variants; `=` only as padding.
pub fn is_b64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// The stretch of base64 characters (plus trailing padding) around `[start, end)`, bounded.
pub fn b64_token(text: &[u8], start: usize, end: usize, limit: usize) -> (usize, usize) {
    let mut s = start;
    let floor = start.saturating_sub(limit);
    while s > floor && is_b64_byte(text[s - 1]) {
        s -= 1;
    }
    let mut e = end;
    let ceil = (end + limit).min(text.len());
    while e < ceil && is_b64_byte(text[e]) {
        e += 1;
    }
    while e < ceil && text[e] == b'=' {
        e += 1;
    }
    (s, e)
}

/// Decodes base64 (standard or URL alphabet, padding optional) from `token`; `None` when the
/// two alphabets are mixed or the data is not valid base64.
pub fn decode_b64(token: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine as _};
    let body: &[u8] = match token.iter().position(|&b| b == b'=') {
        Some(i) => &token[..i],
        None => token,
    };
    let url = body.iter().any(|&b| b == b'-' || b == b'_');
    let std = body.iter().any(|&b| b == b'+' || b == b'/');
    if url && std {
        return None;
    }
    // Drop a trailing partial group that cannot be decoded (one stray char).
    let usable = if body.len() % 4 == 1 {
        &body[..body.len() - 1]
    } else {
        body
    };
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true);
    let engine = if url {
        GeneralPurpose::new(&alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&alphabet::STANDARD, config)
    };
    engine.decode(usable).ok()
}

/// Bytes that appear in a percent-encoded token.
pub fn is_pct_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'%' | b'.' | b'_' | b'~' | b'-' | b'+')
}

/// The stretch of percent-encoded characters around `[start, end)`, bounded.
pub fn pct_token(text: &[u8], start: usize, end: usize, limit: usize) -> (usize, usize) {
    let mut s = start;
    let floor = start.saturating_sub(limit);
    while s > floor && is_pct_byte(text[s - 1]) {
        s -= 1;
    }
    let mut e = end;
    let ceil = (end + limit).min(text.len());
    while e < ceil && is_pct_byte(text[e]) {
        e += 1;
    }
    (s, e)
}

/// Decodes `%XX` escapes; other bytes pass through.
pub fn decode_pct(token: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(token.len());
    let mut i = 0;
    while i < token.len() {
        if token[i] == b'%' && i + 2 < token.len() {
            if let (Some(h), Some(l)) = (hex(token[i + 1]), hex(token[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(token[i]);
        i += 1;
    }
    out
}

/// The base64 characters fully determined by `keyword` when it starts at each of the three byte
/// alignments inside a base64 group, with the char offset of that run inside its group
/// (0, 2 or 3). Runs shorter than 4 chars are dropped: they would match too often.
pub fn b64_variants(keyword: &[u8]) -> Vec<(String, usize)> {
    use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine as _};
    let mut out = Vec::new();
    for (align, skip_chars) in [(0usize, 0usize), (1, 2), (2, 3)] {
        // Pad with zero bytes in front; chars that depend on the pad or on the unknown byte after
        // the keyword are cut off.
        let mut buf = vec![0u8; align];
        buf.extend_from_slice(keyword);
        let total_bits = buf.len() * 8;
        let full_chars = total_bits / 6; // chars fully inside the known bytes
        let enc = STANDARD_NO_PAD.encode(&buf);
        if full_chars <= skip_chars {
            continue;
        }
        let run = &enc[skip_chars..full_chars];
        if run.len() >= 4 {
            out.push((run.to_string(), skip_chars));
        }
    }
    out
}

/// Percent-encoded forms of `keyword`: reserved chars encoded, and every byte encoded.
pub fn pct_variants(keyword: &[u8]) -> Vec<String> {
    let reserved: String = keyword
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let all: String = keyword.iter().map(|b| format!("%{b:02X}")).collect();
    let mut out = vec![all];
    if reserved.as_bytes() != keyword {
        out.push(reserved);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn the_skipping_check_agrees_with_a_walk_over_every_char(
            s in "([a-z0-9 ]{0,40}[\u{80}-\u{10FFFF}]?){0,8}[a-z ]{0,70}",
            junk in "[\u{200B}\u{FEFF}\u{FF41}é’]?",
            at in 0usize..400,
        ) {
            let mut text = s.clone();
            let mut i = at.min(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            text.insert_str(i, &junk);
            let walk = text.chars().any(|c| !c.is_ascii() && (is_invisible(c) || changes_under_nfkc(c)));
            proptest::prop_assert_eq!(needs_normalization(&text), walk, "{:?}", text);
            let first = text.bytes().position(|b| !b.is_ascii());
            proptest::prop_assert_eq!(first_non_ascii(text.as_bytes()), first);
            let all: Vec<(usize, char)> = text.char_indices().filter(|(_, c)| !c.is_ascii()).collect();
            proptest::prop_assert_eq!(non_ascii_chars(&text).collect::<Vec<_>>(), all);
        }
    }

    #[test]
    fn zero_width_is_removed_and_spans_map_back() {
        let original = "key: gh\u{200B}p_abc";
        assert!(needs_normalization(original));
        let n = Normalized::new(original);
        assert_eq!(n.text, "key: ghp_abc");
        let start = n.text.find("ghp_").unwrap_or(0);
        let (s, e) = n.original_span(original, start, n.text.len());
        assert_eq!(&original[s..e], "gh\u{200B}p_abc");
    }

    #[test]
    fn ascii_runs_map_byte_for_byte() {
        let original = "ab\u{200B}cd ｓｋ－x é’ end\u{FEFF}";
        let n = Normalized::new(original);
        let mut text = String::new();
        let mut map = Vec::new();
        for (off, c) in original.char_indices() {
            if is_invisible(c) {
                continue;
            }
            let before = text.len();
            text.extend(std::iter::once(c).nfkc().filter(|&n| !is_invisible(n)));
            map.extend(std::iter::repeat_n(off as u32, text.len() - before));
        }
        map.push(original.len() as u32);
        assert_eq!(n.text, text);
        assert_eq!(n.map, map);
    }

    #[test]
    fn fullwidth_folds() {
        let original = "ｓｋ－ant";
        let n = Normalized::new(original);
        assert_eq!(n.text, "sk-ant");
        let (s, e) = n.original_span(original, 0, 3);
        assert_eq!(&original[s..e], "ｓｋ－");
    }

    #[test]
    fn plain_prose_skips_normalization() {
        assert!(!needs_normalization("don’t — “quoted” café"));
    }

    #[test]
    fn base64_variants_decode_back() {
        use base64::{engine::general_purpose::STANDARD, Engine as _};
        let kw = b"ghp_";
        let vars = b64_variants(kw);
        assert!(!vars.is_empty());
        for pre in ["", "x", "xy"] {
            let enc = STANDARD.encode(format!("{pre}ghp_0123456789"));
            assert!(
                vars.iter().any(|(v, _)| enc.contains(v.as_str())),
                "{pre:?} {enc}"
            );
        }
    }

    #[test]
    fn percent_roundtrip() {
        assert_eq!(decode_pct(b"a%2Fb%3d%zz%"), b"a/b=%zz%".to_vec());
        assert_eq!(pct_variants(b"sk-"), vec!["%73%6B%2D".to_string()]);
    }
}
