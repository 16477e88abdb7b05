//! Gemini streams without `alt=sse` as one JSON array whose elements arrive one by one
//! (`[{…}\r\n,\r\n{…}]`). [`JsonArraySplitter`] reports each top-level element as soon as its last
//! byte arrives (not when the next comma does), so it can be metered, guarded and restored like
//! an SSE event, whatever the chunking.
//!
//! ```
//! use airlock::sse::array::JsonArraySplitter;
//!
//! let mut s = JsonArraySplitter::default();
//! let mut seen = Vec::new();
//! for chunk in [&b"[{\"a\":\"x]"[..], b"}\"}\r\n", b",{\"b\":[1]}]"] {
//!     s.push(chunk, |e| seen.push(String::from_utf8_lossy(e).into_owned()));
//! }
//! assert_eq!(seen, vec![r#"{"a":"x]}"}"#, r#"{"b":[1]}"#]);
//! assert!(s.closed());
//! ```

/// Splits a streamed JSON array into its top-level elements.
#[derive(Debug, Default)]
pub struct JsonArraySplitter {
    started: bool,
    closed: bool,
    /// Nesting inside the current element (0: between elements).
    depth: u32,
    in_string: bool,
    escaped: bool,
    current: Vec<u8>,
    elements: usize,
    /// In the last chunk pushed: the offset just past the last element (or the opening `[`).
    settled: Option<usize>,
}

impl JsonArraySplitter {
    /// Whether the array's closing `]` has been seen.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Elements reported so far.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Whether the opening `[` has been seen.
    pub fn started(&self) -> bool {
        self.started
    }

    /// How much of the last chunk pushed can be passed on so that, if the stream breaks after
    /// it, what went out is a prefix of the array that ends after a whole element (or its
    /// opening `[`): the offset just past the last such point, `None` if the chunk holds none.
    /// The bytes after it (separators, a partial element) are held until more arrives.
    pub fn settled(&self) -> Option<usize> {
        self.settled
    }

    pub fn push(&mut self, chunk: &[u8], mut on_element: impl FnMut(&[u8])) {
        self.settled = None;
        for (i, &b) in chunk.iter().enumerate() {
            if self.closed {
                continue;
            }
            if !self.started {
                self.started = b == b'[';
                self.settled = Some(i + 1);
                continue;
            }
            if self.in_string {
                self.current.push(b);
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.current.push(b);
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    self.current.push(b);
                }
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    self.current.push(b);
                    if self.depth == 0 {
                        on_element(&self.current);
                        self.current.clear();
                        self.elements += 1;
                        self.settled = Some(i + 1);
                    }
                }
                b']' | b',' if self.depth == 0 => {
                    // A scalar element ends here (an object or array one was reported already).
                    if !self.current.is_empty() {
                        on_element(&self.current);
                        self.current.clear();
                        self.elements += 1;
                        self.settled = Some(i);
                    }
                    self.closed = b == b']';
                }
                _ if self.depth == 0 && b.is_ascii_whitespace() => {}
                _ => self.current.push(b),
            }
        }
    }

    /// The body ended: bytes of an element that never completed.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_the_same_at_every_split() {
        let body = b"[{\"t\":\"a, \\\"b]}\"},\r\n{\"n\":[1,{\"x\":2}]}\r\n, 7 ,\"s\"]\n";
        let want = vec![
            br#"{"t":"a, \"b]}"}"#.to_vec(),
            br#"{"n":[1,{"x":2}]}"#.to_vec(),
            b"7".to_vec(),
            br#""s""#.to_vec(),
        ];
        for cut in 0..=body.len() {
            let mut s = JsonArraySplitter::default();
            let mut seen = Vec::new();
            s.push(&body[..cut], |e| seen.push(e.to_vec()));
            s.push(&body[cut..], |e| seen.push(e.to_vec()));
            assert_eq!(seen, want, "cut {cut}");
            assert!(s.closed());
            assert!(s.finish().is_empty());
        }
    }

    #[test]
    fn a_cut_array_leaves_the_unfinished_element() {
        let mut s = JsonArraySplitter::default();
        let mut n = 0;
        s.push(b"[{\"a\":1},{\"b\":", |_| n += 1);
        assert_eq!(n, 1);
        assert!(!s.closed());
        assert_eq!(s.finish(), b"{\"b\":");
    }
}
