//! Finding a rule's `secret` group without a capture search, where the pattern allows it.
//!
//! Many rules wrap their value in boundary checks, because the regex engine has no look-around:
//! `(?:^|[^0-9.])(?P<secret>(?:\d{1,3}\.){3}\d{1,3})(?:[^0-9.]|$)`. Their match is the value
//! plus a byte or two of context on either side, and the value is what is checked and reported.
//! A capture search (a bounded backtracker over the match, after the DFA found it) is the most
//! expensive step of such a rule, yet the value's bounds follow from the match alone when the
//! pattern is `PRE (?P<secret>VALUE) SUF` and:
//!
//! - no byte `PRE` can match is a byte `VALUE` can start with, and
//! - no byte `SUF` can match is a byte `VALUE` can end with (and `VALUE` is never empty).
//!
//! Then the value starts at the first byte of the match that `VALUE` can start with (everything
//! before it is `PRE`, which has none), and ends after the last byte that `VALUE` can end with.
//! [`ValueSpan::of`] checks this on the pattern's syntax tree, and only then is the capture
//! search skipped. Nothing here is approximate: for any match of such a pattern, every way to
//! split it into `PRE`, `VALUE` and `SUF` puts `VALUE` at the same bytes.

use regex_syntax::hir::{Class, Hir, HirKind};

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.add(b);
        }
    }

    fn union(&mut self, other: ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn meets(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }
}

impl std::fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries((0..=255u8).filter(|&b| self.contains(b)))
            .finish()
    }
}

/// How to read a rule's value out of its match (see the module docs).
#[derive(Debug, Clone)]
pub struct ValueSpan {
    /// The bytes the value can start with.
    first: ByteSet,
    /// The bytes the value can end with.
    last: ByteSet,
}

impl ValueSpan {
    /// `Some` when `pattern` (parsed as rule patterns are: ASCII classes, bytes) has the shape
    /// above with its `secret` group as `VALUE`.
    pub fn of(pattern: &str) -> Option<ValueSpan> {
        Self::in_tree(&super::value_bound::parse(pattern).ok()?)
    }

    /// [`ValueSpan::of`] a pattern already parsed.
    pub fn in_tree(hir: &Hir) -> Option<ValueSpan> {
        let (parts, at, value) = super::value_bound::secret_group(hir)?;
        let (first, starts_empty) = edge(&value.sub, Side::First);
        let (last, ends_empty) = edge(&value.sub, Side::Last);
        if starts_empty || ends_empty {
            return None;
        }
        let mut before = ByteSet::default();
        parts[..at].iter().for_each(|h| before.union(bytes(h)));
        let mut after = ByteSet::default();
        parts[at + 1..].iter().for_each(|h| after.union(bytes(h)));
        (!before.meets(&first) && !after.meets(&last)).then_some(ValueSpan { first, last })
    }

    /// The value's span within the match `start..end` of `text`.
    pub fn within(&self, text: &[u8], start: usize, end: usize) -> (usize, usize) {
        let m = &text[start..end];
        let s = m.iter().position(|&b| self.first.contains(b));
        let e = m.iter().rposition(|&b| self.last.contains(b));
        match (s, e) {
            (Some(s), Some(e)) if s <= e => (start + s, start + e + 1),
            // Cannot happen for a match of the pattern `of` accepted; an empty span is dropped.
            _ => (start, start),
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    First,
    Last,
}

/// Every byte `h` can match anywhere.
fn bytes(h: &Hir) -> ByteSet {
    let mut set = ByteSet::default();
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => lit.0.iter().for_each(|&b| set.add(b)),
        HirKind::Class(c) => set = class(c),
        HirKind::Repetition(r) => set = bytes(&r.sub),
        HirKind::Capture(c) => set = bytes(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => {
            hs.iter().for_each(|h| set.union(bytes(h)));
        }
    }
    set
}

/// The bytes a match of `h` can start (or end) with, and whether the match can be empty.
fn edge(h: &Hir, side: Side) -> (ByteSet, bool) {
    let mut set = ByteSet::default();
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => (set, true),
        HirKind::Literal(lit) => {
            let b = match side {
                Side::First => lit.0.first(),
                Side::Last => lit.0.last(),
            };
            match b {
                Some(&b) => {
                    set.add(b);
                    (set, false)
                }
                None => (set, true),
            }
        }
        HirKind::Class(c) => (class(c), false),
        HirKind::Repetition(r) => {
            let (set, empty) = edge(&r.sub, side);
            (set, empty || r.min == 0)
        }
        HirKind::Capture(c) => edge(&c.sub, side),
        HirKind::Alternation(hs) => {
            let mut empty = false;
            for h in hs {
                let (s, e) = edge(h, side);
                set.union(s);
                empty |= e;
            }
            (set, empty)
        }
        HirKind::Concat(hs) => {
            let mut walk = |h: &Hir| {
                let (s, e) = edge(h, side);
                set.union(s);
                e
            };
            let empty = match side {
                Side::First => hs.iter().all(&mut walk),
                Side::Last => hs.iter().rev().all(&mut walk),
            };
            (set, empty)
        }
    }
}

fn class(c: &Class) -> ByteSet {
    let mut set = ByteSet::default();
    match c {
        Class::Bytes(c) => c.iter().for_each(|r| set.add_range(r.start(), r.end())),
        // Not produced with Unicode off; if it were, every non-ASCII char is taken to match any
        // byte from 0x80 up (all its UTF-8 bytes are there): more bytes, a stricter check.
        Class::Unicode(c) => {
            for r in c.iter() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                if lo < 0x80 {
                    set.add_range(lo as u8, hi.min(0x7f) as u8);
                }
                if hi >= 0x80 {
                    set.add_range(0x80, 0xff);
                }
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_wrapped_values_are_read_from_the_match() {
        let v = ValueSpan::of(r"(?:^|[^0-9.])(?P<secret>(?:\d{1,3}\.){3}\d{1,3})(?:[^0-9.]|\.$|$)")
            .expect("ip shape");
        let text = b"ip x10.1.2.3. end";
        // The match: `x`, the address, `.`.
        assert_eq!(v.within(text, 3, 13), (4, 12));
        let v = ValueSpan::of(r"(?:^|[^A-Za-z])(?P<secret>[A-Za-z]+@[a-z]+)\b").expect("email");
        assert_eq!(v.within(b"a@b", 0, 3), (0, 3), "`^` took no byte");
        assert_eq!(v.within(b" a@b", 0, 4), (1, 4));
    }

    #[test]
    fn shapes_where_the_value_is_ambiguous_are_refused() {
        // The context can end with a byte the value can start with.
        assert!(ValueSpan::of(r"key\s*=\s*(?P<secret>[a-z0-9]{8,})").is_none());
        // The suffix can hold a byte the value can end with.
        assert!(ValueSpan::of(r"(?:^|\s)(?P<secret>\d{3,5})[0-9a-f]?\b").is_none());
        // A value that may be empty at either end.
        assert!(ValueSpan::of(r"\s(?P<secret>\d*)\s").is_none());
        assert!(ValueSpan::of(r"\s(?P<secret>a\d*)x?\s").is_some());
        assert!(ValueSpan::of(r"\s(?P<secret>\d*a)\s").is_some());
        // No `secret` group, or not at the top level.
        assert!(ValueSpan::of(r"\s(\d+)\s").is_none());
        assert!(ValueSpan::of(r"\s(?:(?P<secret>\d+)|x)\s").is_none());
        // Case-insensitive literals are classes of both cases.
        assert!(ValueSpan::of(r"(?i:k)(?P<secret>K\d)").is_none());
        assert!(ValueSpan::of(r"(?i:k)(?P<secret>\d)").is_some());
    }
}
