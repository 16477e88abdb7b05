//! Searching for a long value without its length bound, where that changes no result.
//!
//! The generic assignments take a value of up to 256 bytes: `api_key = "…"` is
//! `…\s*["'`]?(?P<secret>[^\s'"`,;<>()\[\]{}]{12,256})(?:[\s'"`,;)\]}>&]|$)`. The counted
//! repetition `C{12,256}` becomes a chain of 256 NFA states. Every search pays for them: the
//! lazy DFA tells apart every count from 12 to 256 and builds a state for each, and a capture
//! search (a bounded backtracker) clears a visited set of the states times the bytes searched.
//! The same pattern with `C{12,}` has a dozen states.
//!
//! [`relax`] drops the upper bound `m` of one counted repetition in the `secret` group, and the
//! rule searches with that pattern. A match whose value is at most `m` bytes long is then
//! exactly the match of the original pattern: the relaxed pattern's ways to match are the
//! original's plus those that repeat more than `m` times, tried in the same order of
//! preference. Its first way to succeed repeats at most `m` times (each repeat is at least a
//! byte of the value), so it is also one of the original's, and every way the original prefers
//! is one the relaxed pattern tried first and saw fail. The same holds for which start is
//! leftmost: a start where the original matches is one where the relaxed pattern does.
//!
//! A longer value (a run of value bytes past the bound, rare) tells nothing about the original's
//! match, and the rule searches again with the original pattern, built the first time it is
//! needed ([`CompiledRule::bounded`](super::rules::CompiledRule::bounded)).

use regex_syntax::hir::{Capture, Hir, HirKind, Repetition};

/// Repetitions with fewer optional repeats than this stay as they are: their NFA states cost
/// little, and short values (an email's top-level domain) would pass the bound, and be
/// searched twice, too often.
const MIN_SPREAD: u32 = 32;

/// A rule pattern with its value's length bound dropped.
#[derive(Debug)]
pub struct Relaxed {
    /// The pattern without the bound, to build the rule's regex from.
    pub hir: Hir,
    /// The bound: a value up to this many bytes long is the original pattern's value.
    pub max_value: usize,
}

/// The pattern's syntax tree as rule patterns are parsed (ASCII classes, bytes): what a rule's
/// regex is built from, and what [`relax`] and [`ValueSpan`](super::value_span::ValueSpan)
/// look at.
/// The error is the parser's message.
pub(crate) fn parse(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| e.to_string())
}

/// The parts of a concatenation, and where among them its `secret` group is, when the group is
/// one of them (at the top of the pattern, so in every match).
pub(crate) fn secret_group(hir: &Hir) -> Option<(&[Hir], usize, &Capture)> {
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    parts.iter().enumerate().find_map(|(at, h)| match h.kind() {
        HirKind::Capture(c) if c.name.as_deref() == Some("secret") => Some((&parts[..], at, c)),
        _ => None,
    })
}

/// `Some` when `hir` (a rule pattern, from [`parse`]) is a concatenation with its `secret` group
/// at the top, and that group is, or directly holds, a counted repetition of something at least
/// a byte long with [`MIN_SPREAD`] or more optional repeats; the one with the most loses its
/// upper bound.
pub fn relax(hir: &Hir) -> Option<Relaxed> {
    let (parts, at, group) = secret_group(hir)?;
    let (sub, max_value) = match group.sub.kind() {
        HirKind::Repetition(r) => (unbounded(r)?, spread(r)?.1),
        HirKind::Concat(items) => {
            let (i, max) = items
                .iter()
                .enumerate()
                .filter_map(|(i, h)| match h.kind() {
                    HirKind::Repetition(r) => spread(r).map(|(s, max)| (s, i, max)),
                    _ => None,
                })
                .max_by_key(|&(s, i, _)| (s, std::cmp::Reverse(i)))
                .map(|(_, i, max)| (i, max))?;
            let HirKind::Repetition(r) = items[i].kind() else {
                return None;
            };
            // The rest of the value is at least this long, so a value up to `max` plus that
            // repeats at most `max` times.
            let rest: usize = (items.iter().enumerate())
                .filter(|&(j, _)| j != i)
                .map(|(_, h)| h.properties().minimum_len().unwrap_or(0))
                .sum();
            let mut items = items.clone();
            items[i] = unbounded(r)?;
            (Hir::concat(items), max + rest)
        }
        _ => return None,
    };
    let mut parts = parts.to_vec();
    parts[at] = Hir::capture(Capture {
        index: group.index,
        name: group.name.clone(),
        sub: Box::new(sub),
    });
    Some(Relaxed {
        hir: Hir::concat(parts),
        max_value,
    })
}

/// The number of optional repeats and the upper bound, for a repetition worth relaxing.
fn spread(r: &Repetition) -> Option<(u32, usize)> {
    let max = r.max?;
    let each = r.sub.properties().minimum_len()?;
    (each >= 1 && max - r.min >= MIN_SPREAD).then_some((max - r.min, max as usize))
}

fn unbounded(r: &Repetition) -> Option<Hir> {
    spread(r)?;
    Some(Hir::repetition(Repetition {
        max: None,
        ..r.clone()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max(pattern: &str) -> Option<usize> {
        relax(&tree(pattern)).map(|r| r.max_value)
    }

    fn tree(pattern: &str) -> Hir {
        parse(pattern).unwrap_or_else(|e| panic!("{pattern} does not parse: {e}"))
    }

    fn relaxed(pattern: &str) -> Relaxed {
        relax(&tree(pattern)).unwrap_or_else(|| panic!("{pattern} is not relaxed"))
    }

    #[test]
    fn the_widest_repetition_in_the_value_loses_its_bound() {
        let r = relaxed(r"key=(?P<secret>[a-z]{12,256})(?:\s|$)");
        assert_eq!(r.max_value, 256);
        assert_eq!(
            r.hir,
            tree(r"key=(?P<secret>[a-z]{12,})(?:\s|$)"),
            "only the value's bound goes"
        );
        // The rest of the value is at least 3 bytes long.
        let r = relaxed(r"b (?P<secret>[a-z]{2,50}[0-9]{16,400}=*x)");
        assert_eq!(r.max_value, 403);
        assert_eq!(r.hir, tree(r"b (?P<secret>[a-z]{2,50}[0-9]{16,}=*x)"));
    }

    #[test]
    fn patterns_without_a_wide_bounded_value_are_left_alone() {
        // No secret group; (a group that only groups is no node of the tree); the value in an
        // alternation; a narrow or exact count; no upper bound; an alternation in the value; a
        // repeat that can be empty.
        assert_eq!(max(r"key=[a-z]{12,256}"), None);
        assert_eq!(max(r"(?:key=(?P<secret>[a-z]{12,256}))"), Some(256));
        assert_eq!(max(r"(?:a|b(?P<secret>[a-z]{12,256}))"), None);
        assert_eq!(max(r"k=(?P<secret>[a-z]{12,43})"), None);
        assert_eq!(max(r"k=(?P<secret>[a-z]{40})"), None);
        assert_eq!(max(r"k=(?P<secret>[a-z]{12,})"), None);
        assert_eq!(max(r"k=(?P<secret>[a-z]{12,64}|[0-9]{40})"), None);
        assert_eq!(max(r"k=(?P<secret>(?:[a-z]?){0,64})"), None);
    }
}
