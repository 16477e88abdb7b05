//! Every string value of a JSON document with its path and exact byte span, and splicing new
//! strings into those spans. Rewriting this way changes only the strings that need it: key
//! order, numbers, whitespace and every other byte of the document stay as the client sent them.

use std::fmt::Write;
use std::ops::Range;

/// One step of a path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A string value (or an object key): where it is, and its decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonString {
    /// For a key, the path of its value (the key is the last segment).
    pub path: Vec<Seg>,
    /// The span of the token in the document, quotes included.
    pub span: Range<usize>,
    pub text: String,
    /// An object key rather than a value.
    pub key: bool,
}

/// Where a document stops being readable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    #[error("not valid JSON at byte {0}")]
    Syntax(usize),
    #[error("nested more than {MAX_DEPTH} levels deep at byte {0}")]
    TooDeep(usize),
}

/// `messages[2].content[0].text`, the location format shown to users.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                let _infallible = write!(out, "[{i}]");
            }
        }
    }
    if out.is_empty() {
        out.push('$');
    }
    out
}

/// All string values (not keys) of `doc`, in document order.
pub fn strings(doc: &[u8]) -> Result<Vec<JsonString>, JsonError> {
    walk(doc, false)
}

/// All string values of `doc` and the object keys that could hold a value, in document order.
/// A key that is a plain word (ASCII letters and `_`, up to 32 bytes: every schema key such as
/// `messages` or `tool_call_id`) is left out: no detector matches one, and there are many.
pub fn strings_and_keys(doc: &[u8]) -> Result<Vec<JsonString>, JsonError> {
    walk(doc, true)
}

/// Whether a key or name is a plain word (ASCII letters and `_`, up to 32 bytes) that cannot
/// hold a value worth scanning: no detector matches one.
pub fn plain_word(key: &str) -> bool {
    key.len() <= 32 && key.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
}

fn walk(doc: &[u8], keys: bool) -> Result<Vec<JsonString>, JsonError> {
    let mut p = Parser {
        b: doc,
        i: 0,
        path: Vec::new(),
        out: Vec::new(),
        keys,
    };
    p.ws();
    p.value(0)?;
    p.ws();
    if p.i != doc.len() {
        return Err(JsonError::Syntax(p.i));
    }
    Ok(p.out)
}

/// Arrays and objects nested deeper than this are refused rather than risking the stack. It is
/// serde_json's limit too, so a body is refused at the same depth wherever the nesting is.
pub const MAX_DEPTH: usize = 127;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    path: Vec<Seg>,
    out: Vec<JsonString>,
    /// Report object keys too.
    keys: bool,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.b.get(self.i) {
            // `depth` containers enclose this one.
            Some(b'{' | b'[') if depth >= MAX_DEPTH => Err(JsonError::TooDeep(self.i)),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => {
                let start = self.i;
                let text = self.string()?;
                self.out.push(JsonString {
                    path: self.path.clone(),
                    span: start..self.i,
                    text,
                    key: false,
                });
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(JsonError::Syntax(self.i)),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), JsonError> {
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return Err(JsonError::Syntax(self.i));
            }
            let start = self.i;
            let key = self.string()?;
            self.path.push(Seg::Key(key));
            if self.keys {
                if let Some(Seg::Key(k)) = self.path.last() {
                    if !plain_word(k) {
                        self.out.push(JsonString {
                            path: self.path.clone(),
                            span: start..self.i,
                            text: k.clone(),
                            key: true,
                        });
                    }
                }
            }
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return Err(JsonError::Syntax(self.i));
            }
            self.i += 1;
            self.ws();
            self.value(depth + 1)?;
            self.path.pop();
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(JsonError::Syntax(self.i)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(());
        }
        let mut n = 0;
        loop {
            self.ws();
            self.path.push(Seg::Index(n));
            self.value(depth + 1)?;
            self.path.pop();
            n += 1;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(JsonError::Syntax(self.i)),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(JsonError::Syntax(self.i))
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        while self.i < self.b.len()
            && matches!(
                self.b[self.i],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.i += 1;
        }
        if self.i == start {
            Err(JsonError::Syntax(start))
        } else {
            Ok(())
        }
    }

    /// Decodes a string token starting at the opening quote; leaves `i` after the closing one.
    fn string(&mut self) -> Result<String, JsonError> {
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        let mut run = self.i;
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return Err(JsonError::Syntax(start));
            };
            match c {
                b'"' => {
                    out.push_str(
                        std::str::from_utf8(&self.b[run..self.i])
                            .map_err(|_| JsonError::Syntax(run))?,
                    );
                    self.i += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(
                        std::str::from_utf8(&self.b[run..self.i])
                            .map_err(|_| JsonError::Syntax(run))?,
                    );
                    let esc = *self.b.get(self.i + 1).ok_or(JsonError::Syntax(self.i))?;
                    self.i += 2;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.b[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    // Unpaired surrogates become U+FFFD, as in every JSON parser.
                                    out.push('\u{FFFD}');
                                    lo
                                }
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(JsonError::Syntax(self.i - 1)),
                    }
                    run = self.i;
                }
                0x00..=0x1F => return Err(JsonError::Syntax(self.i)),
                _ => self.i += 1,
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or(JsonError::Syntax(self.i))?;
        let s = std::str::from_utf8(h).map_err(|_| JsonError::Syntax(self.i))?;
        let v = u32::from_str_radix(s, 16).map_err(|_| JsonError::Syntax(self.i))?;
        self.i += 4;
        Ok(v)
    }
}

/// `text` as a JSON string token, quotes included.
pub fn encode(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// `text` escaped for the inside of a JSON string (no quotes): for values restored into text that
/// is itself JSON source, such as tool-call arguments.
pub fn escape_inner(text: &str) -> String {
    let quoted = encode(text);
    quoted[1..quoted.len() - 1].to_owned()
}

/// Replaces string tokens: each `(span, new text)` becomes the JSON encoding of the new text.
/// Spans must not overlap; they are applied in order of position.
pub fn splice(doc: &[u8], mut edits: Vec<(Range<usize>, String)>) -> Vec<u8> {
    edits.sort_by_key(|(span, _)| span.start);
    let mut out = Vec::with_capacity(doc.len() + 64 * edits.len());
    let mut at = 0;
    for (span, text) in edits {
        if span.start < at || span.end > doc.len() {
            continue;
        }
        out.extend_from_slice(&doc[at..span.start]);
        out.extend_from_slice(encode(&text).as_bytes());
        at = span.end;
    }
    out.extend_from_slice(&doc[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_strings_with_paths_and_spans() {
        let doc = br#"{"model":"m","messages":[{"role":"user","content":"hi \"there\" \u00e9\ud83d\ude00"},{"content":[{"type":"text","text":"b"}]}],"n":1.5e3,"ok":true}"#;
        let s = strings(doc).expect("valid");
        let found: Vec<(String, String)> = s
            .iter()
            .map(|j| (path_string(&j.path), j.text.clone()))
            .collect();
        assert_eq!(found[0], ("model".into(), "m".into()));
        assert_eq!(
            found[2],
            ("messages[0].content".into(), "hi \"there\" é😀".into())
        );
        assert_eq!(found[4], ("messages[1].content[0].text".into(), "b".into()));
        for j in &s {
            assert_eq!(doc[j.span.start], b'"');
            assert_eq!(doc[j.span.end - 1], b'"');
            let back: String = serde_json::from_slice(&doc[j.span.clone()]).expect("token");
            assert_eq!(back, j.text);
        }
    }

    #[test]
    fn keys_that_can_hold_a_value_are_reported() {
        let doc = br#"{"messages":[{"role":"user"}],"metadata":{"k-1":"v","tool_call_id":"c"}}"#;
        assert!(strings(doc).expect("valid").iter().all(|s| !s.key));
        let s = strings_and_keys(doc).expect("valid");
        let keys: Vec<(String, &str)> = s
            .iter()
            .filter(|s| s.key)
            .map(|s| (path_string(&s.path), s.text.as_str()))
            .collect();
        assert_eq!(keys, [("metadata.k-1".to_owned(), "k-1")]);
        let k = s.iter().find(|s| s.key).expect("key");
        assert_eq!(&doc[k.span.clone()], b"\"k-1\"");
    }

    #[test]
    fn splice_changes_only_the_edited_strings() {
        let doc = br#"{ "a" : "x",  "n": 1.000000000000000000001, "b":["keep","y"] }"#;
        let s = strings(doc).expect("valid");
        let out = splice(
            doc,
            vec![
                (s[0].span.clone(), "new \"q\"".into()),
                (s[2].span.clone(), "z".into()),
            ],
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{ "a" : "new \"q\"",  "n": 1.000000000000000000001, "b":["keep","z"] }"#
        );
    }

    #[test]
    fn rejects_broken_documents() {
        for bad in [
            &b"{"[..],
            b"{\"a\":}",
            b"[1,]",
            b"\"abc",
            b"{\"a\":1} x",
            b"{\"a\":\"\x01\"}",
        ] {
            assert!(strings(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(
            strings(deep(10_000).as_bytes()).map_err(|e| e.to_string()),
            Err("nested more than 127 levels deep at byte 127".to_owned())
        );
        assert!(strings(deep(MAX_DEPTH).as_bytes()).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&deep(MAX_DEPTH)).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&deep(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn agrees_with_serde_on_arbitrary_values() {
        use proptest::prelude::*;
        proptest!(|(text in ".{0,40}")| {
            let doc = serde_json::json!({"k": [text.clone(), {"x": text.clone()}]}).to_string();
            let s = strings(doc.as_bytes()).expect("serde output is valid");
            prop_assert_eq!(s.len(), 2);
            prop_assert_eq!(&s[0].text, &text);
            let out = splice(doc.as_bytes(), vec![(s[1].span.clone(), format!("{text}!"))]);
            let v: serde_json::Value = serde_json::from_slice(&out).expect("still valid");
            let expected = format!("{text}!");
            prop_assert_eq!(v["k"][1]["x"].as_str(), Some(expected.as_str()));
        });
    }
}
