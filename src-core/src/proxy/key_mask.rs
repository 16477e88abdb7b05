//! The last filter on every response: the real provider key and the client's Airlock key never
//! reach the client, in any header or body, whatever the status, the policy or the encoding the
//! upstream chose. An upstream 401 typically echoes the key it was given ("Incorrect API key
//! provided: sk-proj-…"), and that key is the one Airlock exists to hide.
//!
//! Matching is on bytes (keys are plain ASCII, never escaped in JSON), and a key is replaced by
//! a marker of exactly its length, so a `Content-Length` stays true and nothing is reframed. A
//! key split across chunks is caught by holding back only a chunk's tail that is the start of
//! a key; stream chunks end in an event's blank line, so in practice nothing is held.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use zeroize::Zeroizing;

/// Keys shorter than this are not masked (no real key is; masking would hit ordinary text).
const MIN_KEY: usize = 12;
/// A held tail this long that is a key's start is masked if the stream ends there.
const MIN_HELD_MASK: usize = 8;

struct Needle {
    bytes: Zeroizing<Vec<u8>>,
    /// Same length as `bytes`.
    mask: Vec<u8>,
}

/// Masks the given keys in a response, chunk by chunk.
#[derive(Default)]
pub struct KeyMask {
    needles: Vec<Needle>,
    held: Vec<u8>,
}

/// `label` padded with `*` (or cut) to `len` bytes.
fn marker(label: &str, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = format!("[REDACTED:{label}]").into_bytes();
    m.resize(len, b'*');
    m
}

impl KeyMask {
    /// Adds a key to mask; `label` names it in the marker (`provider-key`, `airlock-key`).
    pub fn add(&mut self, key: &str, label: &str) {
        let key = key.trim();
        if key.len() < MIN_KEY
            || self
                .needles
                .iter()
                .any(|n| n.bytes.as_slice() == key.as_bytes())
        {
            return;
        }
        self.needles.push(Needle {
            bytes: Zeroizing::new(key.as_bytes().to_vec()),
            mask: marker(label, key.len()),
        });
        // Longest first, so a key that contains another is masked whole.
        self.needles
            .sort_by_key(|n| std::cmp::Reverse(n.bytes.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Whether bytes are held back waiting for the next chunk.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Masks every header value that holds a key (in place, same length).
    pub fn headers(&self, headers: &mut HeaderMap) {
        if self.needles.is_empty() {
            return;
        }
        for v in headers.values_mut() {
            // Copied only when a key is in it: most responses have none.
            if !self.contains(v.as_bytes()) {
                continue;
            }
            let mut bytes = v.as_bytes().to_vec();
            if self.replace_all(&mut bytes) {
                if let Ok(nv) = HeaderValue::from_bytes(&bytes) {
                    *v = nv;
                }
            }
        }
    }

    /// Whether a whole key is in `bytes`.
    fn contains(&self, bytes: &[u8]) -> bool {
        self.needles
            .iter()
            .any(|n| memchr::memmem::find(bytes, &n.bytes).is_some())
    }

    /// Replaces every whole key in `buf`; whether anything changed.
    fn replace_all(&self, buf: &mut [u8]) -> bool {
        let mut changed = false;
        for n in &self.needles {
            let mut from = 0;
            while let Some(i) = memchr::memmem::find(&buf[from..], &n.bytes) {
                let at = from + i;
                buf[at..at + n.bytes.len()].copy_from_slice(&n.mask);
                from = at + n.bytes.len();
                changed = true;
            }
        }
        changed
    }

    /// Where the tail of `buf` that could be the start of a key begins.
    fn partial_start(&self, buf: &[u8]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for n in &self.needles {
            let first = n.bytes[0];
            let window = buf.len().saturating_sub(n.bytes.len() - 1);
            for p in memchr::memchr_iter(first, &buf[window..]).map(|i| window + i) {
                if n.bytes.starts_with(&buf[p..]) {
                    best = Some(best.map_or(p, |b| b.min(p)));
                    break;
                }
            }
        }
        best
    }

    /// One chunk in; what may go to the client now out (possibly empty).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.needles.is_empty() {
            return chunk;
        }
        if self.held.is_empty() {
            let whole = self.contains(&chunk);
            let partial = self.partial_start(&chunk);
            if !whole && partial.is_none() {
                return chunk; // the usual case: no copy
            }
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(&chunk);
        self.replace_all(&mut buf);
        if let Some(p) = self.partial_start(&buf) {
            self.held = buf.split_off(p);
        }
        Bytes::from(buf)
    }

    /// The body ended (or broke): what is still held goes out, masked if it is a long enough
    /// start of a key.
    pub fn finish(&mut self) -> Bytes {
        let mut held = std::mem::take(&mut self.held);
        if held.len() >= MIN_HELD_MASK {
            if let Some(n) = self.needles.iter().find(|n| n.bytes.starts_with(&held)) {
                let len = held.len();
                held.copy_from_slice(&n.mask[..len]);
            }
        }
        Bytes::from(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        // Built at test time: no credential-shaped literal in the source.
        let body: String = (0..48)
            .map(|i| {
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        [(i * 7 + 3) % 62],
                )
            })
            .collect();
        format!("sk-proj-{body}")
    }

    fn mask_for(k: &str) -> KeyMask {
        let mut m = KeyMask::default();
        m.add(k, "provider-key");
        m
    }

    #[test]
    fn a_whole_key_is_masked_at_the_same_length() {
        let k = key();
        let mut m = mask_for(&k);
        let body =
            format!("{{\"error\":{{\"message\":\"Incorrect API key provided: Bearer {k}\"}}}}");
        let mut out = m.push(Bytes::from(body.clone())).to_vec();
        out.extend_from_slice(&m.finish());
        let out = String::from_utf8(out).expect("utf8");
        assert_eq!(out.len(), body.len());
        assert!(!out.contains(&k[8..]), "{out}");
        assert!(out.contains("Bearer [REDACTED:provider-key]*"), "{out}");
    }

    /// Every split of the body into two chunks (the chunk-boundary tester).
    #[test]
    fn a_key_split_at_any_byte_is_masked() {
        let k = key();
        let body = format!("data: {{\"text\":\"x {k} y\"}}\n\n");
        for cut in 0..=body.len() {
            let mut m = mask_for(&k);
            let mut out = m
                .push(Bytes::copy_from_slice(&body.as_bytes()[..cut]))
                .to_vec();
            out.extend_from_slice(&m.push(Bytes::copy_from_slice(&body.as_bytes()[cut..])));
            out.extend_from_slice(&m.finish());
            let out = String::from_utf8(out).expect("utf8");
            assert_eq!(out.len(), body.len(), "cut {cut}");
            assert!(!out.contains(&k[4..]), "cut {cut}: {out}");
        }
    }

    #[test]
    fn ordinary_chunks_pass_without_hold_and_a_cut_key_start_is_masked() {
        let k = key();
        let mut m = mask_for(&k);
        let c = Bytes::from_static(b"data: {\"a\":\"sk is fine\"}\n\n");
        assert_eq!(m.push(c.clone()), c);
        // The stream breaks after most of the key: that start is masked, not sent.
        let part = format!("text {}", &k[..30]);
        let first = m.push(Bytes::from(part));
        assert_eq!(first, Bytes::from_static(b"text "));
        let rest = m.finish();
        assert!(!String::from_utf8_lossy(&rest).contains(&k[..30]));
        assert_eq!(rest.len(), 30);
    }

    #[test]
    fn header_values_are_masked() {
        let k = key();
        let m = mask_for(&k);
        let mut h = HeaderMap::new();
        h.insert(
            "x-echo",
            HeaderValue::from_str(&format!("Bearer {k}")).expect("hv"),
        );
        m.headers(&mut h);
        let v = h.get("x-echo").expect("kept").to_str().expect("ascii");
        assert!(
            !v.contains(&k[8..]) && v.starts_with("Bearer [REDACTED"),
            "{v}"
        );
    }
}
