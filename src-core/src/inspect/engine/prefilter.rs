//! Keyword hits without running the big automaton over every byte.
//!
//! The automaton holds every keyword plus the base64 and percent-encoded forms of the secret
//! keywords, about 1,500 patterns. Its transition table does not fit in L1, and an unanchored
//! overlapping search (which has no prefilter) costs a few ns per byte, while most text holds
//! no pattern at all. So a filter of hashed four-byte windows (256 KiB; text touches few of its
//! lines) marks where a pattern may start, and the automaton runs anchored at those offsets only.
//! The filter is a blocked Bloom filter: one hash picks a 32-bit word, another three bits in
//! it, so a window costs one table read (one gather lane in the AVX2 pass). Two tables of one
//! bit each, read with two gathers, ran about a quarter slower on clean prose.
//!
//! Windows are read at even offsets only, so a pattern of five bytes or more is entered with two
//! neighbouring windows of its own, bytes `j..j+4` and `j+1..j+5`: whichever parity it starts
//! at, one of them falls on an even offset. `j` picks the pair least likely in ordinary text
//! (`postmark` is entered as `tmar`/`mark`, not `post`/`ostm`). Shorter patterns are entered
//! with every byte that can complete their window. Where the CPU has AVX2, the window pass
//! reads sixteen windows at a time (`avx2.rs`); the scalar loop does the rest.
//! Patterns of one or two bytes (`@`, `0x`) are found by `memchr` on one of their bytes.
//! Bytes are folded with `| 0x20`, which maps ASCII letters of either case together, so the
//! table answers for the case-insensitive automaton; other bytes may collide, which only costs
//! a wasted anchored search.
//!
//! A keyword of one byte repeated (`aaaaaaaaaaaaaaaaaaaaa`) occurs at every offset of a longer
//! run of that byte: a 4 MiB run of `A` (base64 of zeros in a data URI) made 4 million hits, 96
//! MB of them. Overlapping occurrences of such a keyword are reported as one hit spanning the
//! run (the rules' side: no rule with such a keyword is searched anchored at its hits, so a
//! window over the run finds what windows over each occurrence would).

use aho_corasick::automaton::{Automaton, OverlappingState};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, Input, MatchKind};

#[cfg(target_arch = "x86_64")]
mod avx2;

/// The window filter: 2^16 words of 32 bits = 256 KiB. Text touches few of its lines (its
/// windows repeat), and fewer false hits save more than the misses cost.
const FILTER_BITS: u32 = 16;
const FILTER_WORDS: usize = 1 << FILTER_BITS;
const FOLD4: u32 = 0x2020_2020;
const FOLD8: u64 = 0x2020_2020_2020_2020;

/// One keyword hit: `start..end` in the text and the automaton's pattern index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hit {
    pub start: usize,
    pub end: usize,
    pub pattern: u32,
}

/// A pattern of one or two bytes, found by searching for one of its bytes.
#[derive(Debug)]
struct Short {
    /// The pattern, lowercase.
    bytes: Vec<u8>,
    /// Which of its bytes is searched for.
    at: usize,
    pattern: u32,
}

/// What a marked window asks for: a pattern may start at `window + offset` (-1, 0 or 1) if
/// the eight folded bytes there, under `mask`, equal `prefix` (the pattern's first up to eight
/// bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    offset: i8,
    prefix: u64,
    mask: u64,
}

/// The keyword automaton and the window tables in front of it.
#[derive(Debug)]
pub(super) struct Keywords {
    /// Runs anchored only, a few bytes each time, so a compact NFA serves (a DFA over all
    /// patterns takes megabytes).
    nfa: NFA,
    /// Three bits of one word per folded four-byte window that a pattern can fill
    /// ([`filter_word`], [`filter_bits`]); read for every window.
    filter: Box<[u32; FILTER_WORDS]>,
    /// The exact windows behind the bits and the checks each one calls for.
    exact: Windows,
    checks: Vec<Check>,
    short: Vec<Short>,
    /// The bytes `memchr` looks for (both cases of a letter), in groups of up to three.
    short_bytes: Vec<Vec<u8>>,
    /// By pattern, for one byte repeated (overlapping hits join, see the module docs): the
    /// pattern's length, and the most bytes equal to their first that any other pattern opens
    /// with. An offset inside a joined run with more run bytes ahead than that can start no
    /// other pattern, and its own occurrence is in the run already: it is not searched.
    one_byte: Vec<Option<(usize, usize)>>,
}

/// An open-addressing map from a folded window to its run of checks. A folded window never
/// is 0 (every byte has bit 5 set), so 0 marks a free slot.
#[derive(Debug)]
struct Windows {
    keys: Box<[u32]>,
    /// `start..end` in `checks`.
    runs: Box<[(u32, u32)]>,
}

impl Windows {
    /// The slot holding `key`, or the free slot where it would go.
    #[inline]
    fn slot(&self, key: u32) -> usize {
        let mask = self.keys.len() - 1;
        // The product's high half mixes every key byte; fold it down. Keys of short patterns
        // differ only in one byte, and the low bits alone put them all in one long run.
        let h = key.wrapping_mul(0x85EB_CA6B);
        let mut i = (h ^ (h >> 15)) as usize & mask;
        while self.keys[i] != 0 && self.keys[i] != key {
            i = (i + 1) & mask;
        }
        i
    }
}

/// The multipliers of the filter's two hashes: one picks the word, the other its three bits
/// (from the product's high bits, which mix every byte of the window).
const MUL1: u32 = 0x9E37_79B1;
const MUL2: u32 = 0xC2B2_AE35;
/// Where the three bit positions sit in the second hash: bits 27..32, 22..27 and 17..22.
const BIT_A: u32 = 27;
const BIT_B: u32 = 22;
const BIT_C: u32 = 17;

/// The filter word of a folded window.
#[inline(always)]
fn filter_word(window: u32) -> usize {
    (window.wrapping_mul(MUL1) >> (32 - FILTER_BITS)) as usize
}

/// The three bits of its word a folded window sets (they may coincide).
#[inline(always)]
fn filter_bits(window: u32) -> [u32; 3] {
    let h = window.wrapping_mul(MUL2);
    [h >> BIT_A, (h >> BIT_B) & 31, (h >> BIT_C) & 31]
}

/// 1 when all three of the folded window's bits are set, else 0.
#[inline(always)]
fn test(filter: &[u32; FILTER_WORDS], window: u32) -> u32 {
    let word = filter[filter_word(window)];
    let [a, b, c] = filter_bits(window);
    (word >> a) & (word >> b) & (word >> c) & 1
}

fn zeroed() -> Box<[u32; FILTER_WORDS]> {
    match vec![0u32; FILTER_WORDS].into_boxed_slice().try_into() {
        Ok(t) => t,
        Err(_) => unreachable!("the vector has FILTER_WORDS words"),
    }
}

fn set(filter: &mut [u32; FILTER_WORDS], window: u32) {
    let [a, b, c] = filter_bits(window);
    filter[filter_word(window)] |= 1 << a | 1 << b | 1 << c;
}

fn window(bytes: [u8; 4]) -> u32 {
    u32::from_le_bytes(bytes.map(|b| b | 0x20))
}

/// How deep inside a pattern its window pair may sit (offsets stay within `-MAX_SHIFT - 1..=1`).
const MAX_SHIFT: usize = 6;

/// How often a byte occurs in English text and code, roughly, per thousand bytes (letters from
/// the usual English letter frequencies scaled for spaces; either case).
fn byte_commonness(b: u8) -> f64 {
    const LETTERS: [f64; 26] = [
        65.0, 12.0, 22.0, 34.0, 101.0, 18.0, 16.0, 49.0, 56.0, 1.2, 6.4, 32.0, 19.0, 54.0, 60.0,
        15.0, 0.8, 48.0, 50.0, 72.0, 22.0, 7.8, 19.0, 1.2, 16.0, 0.6,
    ];
    match b.to_ascii_lowercase() {
        l @ b'a'..=b'z' => LETTERS[usize::from(l - b'a')],
        b' ' => 160.0,
        b'0'..=b'9' => 4.0,
        b'.' | b',' | b'\n' => 10.0,
        _ => 1.0,
    }
}

/// Likelihood-like score of the window pair at `j` and `j + 1` in pattern `p` (lower is rarer).
fn pair_commonness(p: &[u8], j: usize) -> f64 {
    let window = |k: usize| {
        p[k..k + 4]
            .iter()
            .map(|&b| byte_commonness(b))
            .product::<f64>()
    };
    window(j) + window(j + 1)
}

/// Rough cost of searching for `b`: how common a byte like it is in text.
fn byte_cost(b: u8) -> usize {
    if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ' {
        3
    } else if b.is_ascii_uppercase() {
        2
    } else {
        1
    }
}

/// `b` and its other ASCII case, if any.
fn cases(b: u8) -> Vec<u8> {
    let (l, u) = (b.to_ascii_lowercase(), b.to_ascii_uppercase());
    if l == u {
        vec![b]
    } else {
        vec![l, u]
    }
}

// === impl Keywords ===

impl Keywords {
    /// `words` are the patterns (matched ASCII case-insensitively); a hit's pattern index is
    /// its position in `words`.
    pub fn new(words: &[String]) -> Result<Self, aho_corasick::BuildError> {
        let nfa = NFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(words)?;
        let mut by_window: std::collections::HashMap<u32, Vec<Check>> = Default::default();
        let mut short = Vec::new();
        let mut wanted: Vec<u8> = Vec::new();
        for (pi, w) in words.iter().enumerate() {
            let p = w.as_bytes();
            let head = &p[..p.len().min(8)];
            let mut prefix = [0u8; 8];
            let mut mask = [0u8; 8];
            for (k, &b) in head.iter().enumerate() {
                prefix[k] = b | 0x20;
                mask[k] = 0xFF;
            }
            let (prefix, mask) = (u64::from_le_bytes(prefix), u64::from_le_bytes(mask));
            let mut add = |w: [u8; 4], offset: i8| {
                let c = Check {
                    offset,
                    prefix,
                    mask,
                };
                let list = by_window.entry(window(w)).or_default();
                if !list.contains(&c) {
                    list.push(c);
                }
            };
            match p.len() {
                0 => {}
                1 | 2 => {
                    let at = (0..p.len())
                        .min_by_key(|&k| cases(p[k]).iter().map(|&b| byte_cost(b)).sum::<usize>())
                        .unwrap_or(0);
                    for b in cases(p[at]) {
                        if !wanted.contains(&b) {
                            wanted.push(b);
                        }
                    }
                    short.push(Short {
                        bytes: p.to_ascii_lowercase(),
                        at,
                        pattern: pi as u32,
                    });
                }
                3 => {
                    for x in 0..=255u8 {
                        add([p[0], p[1], p[2], x], 0);
                        add([x, p[0], p[1], p[2]], 1);
                    }
                }
                4 => {
                    add([p[0], p[1], p[2], p[3]], 0);
                    for x in 0..=255u8 {
                        add([p[1], p[2], p[3], x], -1);
                    }
                }
                _ => {
                    // Any two neighbouring windows inside the pattern cover both parities;
                    // take the pair least likely in ordinary text, so `postmark` is not
                    // looked at for every `post`.
                    let j = (0..=(p.len() - 5).min(MAX_SHIFT))
                        .min_by(|&a, &b| pair_commonness(p, a).total_cmp(&pair_commonness(p, b)))
                        .unwrap_or(0);
                    let w = |k: usize| [p[k], p[k + 1], p[k + 2], p[k + 3]];
                    add(w(j), -(j as i8));
                    add(w(j + 1), -(j as i8) - 1);
                }
            }
        }
        let mut filter = zeroed();
        let size = (by_window.len() * 2).next_power_of_two().max(16);
        let mut exact = Windows {
            keys: vec![0; size].into_boxed_slice(),
            runs: vec![(0, 0); size].into_boxed_slice(),
        };
        let mut checks = Vec::new();
        let mut windows: Vec<_> = by_window.into_iter().collect();
        windows.sort_unstable_by_key(|(w, _)| *w);
        for (w, list) in windows {
            set(&mut filter, w);
            let slot = exact.slot(w);
            exact.keys[slot] = w;
            exact.runs[slot] = (checks.len() as u32, (checks.len() + list.len()) as u32);
            checks.extend(list);
        }
        let short_bytes = wanted.chunks(3).map(<[u8]>::to_vec).collect();
        let lead = |w: &[u8]| {
            w.iter()
                .take_while(|b| b.eq_ignore_ascii_case(&w[0]))
                .count()
        };
        let one_byte = words
            .iter()
            .enumerate()
            .map(|(pi, w)| {
                crate::inspect::rules::one_byte_keyword(w.as_bytes()).then(|| {
                    let others = words.iter().enumerate().filter(|&(qi, _)| qi != pi);
                    let most = others.map(|(_, q)| lead(q.as_bytes())).max().unwrap_or(0);
                    (w.len(), most)
                })
            })
            .collect();
        Ok(Self {
            nfa,
            filter,
            exact,
            checks,
            short,
            short_bytes,
            one_byte,
        })
    }

    /// Every pattern occurrence in `hay`, overlapping ones included, in the order an
    /// unanchored overlapping search reports them: by end, then longest first. On the way,
    /// `digit_blocks` gets one bit per 8-byte block of `hay` (bit `k` of word `k / 64`), clear
    /// only when the block holds no ASCII digit, so the digit scan can skip it unread.
    pub fn find(&self, hay: &[u8], out: &mut Vec<Hit>, digit_blocks: &mut Vec<u64>) {
        self.find_with(hay, out, digit_blocks, true);
    }

    /// [`Keywords::find`], with the AVX2 window pass when `simd` and the CPU has it.
    fn find_with(&self, hay: &[u8], out: &mut Vec<Hit>, digit_blocks: &mut Vec<u64>, simd: bool) {
        out.clear();
        let n = hay.len();
        digit_blocks.clear();
        digit_blocks.resize(n / 512 + 1, 0);
        // Where the scalar loop starts: past what the SIMD pass covered (a multiple of 8).
        #[cfg(target_arch = "x86_64")]
        let start = if simd {
            avx2::scan(self, hay, out, digit_blocks)
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let start = {
            let _ = simd;
            0
        };
        let filter = &*self.filter;
        let hit = |w: u32| test(filter, w | FOLD4);
        let mut i = start;
        // Four windows (i, i+2, i+4, i+6) per step, one branch for all of them.
        while i + 12 <= n {
            let raw = load8(hay, i);
            let (block, bit) = (i / 512, (i / 8) % 64);
            digit_blocks[block] |= u64::from(super::digit_bytes(raw) != 0) << bit;
            let lo = raw | FOLD8;
            let hi = load8(hay, i + 4) | FOLD8;
            let mut hits = test(filter, lo as u32)
                | test(filter, (lo >> 16) as u32) << 1
                | test(filter, hi as u32) << 2
                | test(filter, (hi >> 16) as u32) << 3;
            while hits != 0 {
                self.candidate(hay, i + 2 * hits.trailing_zeros() as usize, out);
                hits &= hits - 1;
            }
            i += 8;
        }
        // The blocks from here on are not tested for digits.
        for b in i / 8..n.div_ceil(8) {
            digit_blocks[b / 64] |= 1 << (b % 64);
        }
        while i + 4 <= n {
            if hit(load4(hay, i)) != 0 {
                self.candidate(hay, i, out);
            }
            i += 2;
        }
        // Offsets from here on are in no window: try each.
        let tail = if i == 0 { 0 } else { i - 1 };
        for p in tail..n {
            self.anchored(hay, p, out);
        }
        // Each pass below appends a run of hits nearly in order; `runs` holds where each ends.
        let mut runs = vec![out.len()];
        for needles in &self.short_bytes {
            let mut at = |pos: usize| {
                for s in &self.short {
                    if hay[pos].to_ascii_lowercase() != s.bytes[s.at] {
                        continue;
                    }
                    let Some(start) = pos.checked_sub(s.at) else {
                        continue;
                    };
                    let end = start + s.bytes.len();
                    if end <= n && hay[start..end].eq_ignore_ascii_case(&s.bytes) {
                        let hit = Hit {
                            start,
                            end,
                            pattern: s.pattern,
                        };
                        self.push(hay, hit, out);
                    }
                }
            };
            match needles[..] {
                [a] => memchr::memchr_iter(a, hay).for_each(&mut at),
                [a, b] => memchr::memchr2_iter(a, b, hay).for_each(&mut at),
                [a, b, c] => memchr::memchr3_iter(a, b, c, hay).for_each(&mut at),
                _ => {}
            }
            runs.push(out.len());
        }
        sort_hits(out, &runs);
        out.dedup();
    }

    /// The window at even offset `i` passed the filter: confirm it and try the offsets whose
    /// prefix matches.
    #[cold]
    #[inline(never)]
    fn candidate(&self, hay: &[u8], i: usize, out: &mut Vec<Hit>) {
        let w = load4(hay, i) | FOLD4;
        let slot = self.exact.slot(w);
        if self.exact.keys[slot] != w {
            return;
        }
        let (start, end) = self.exact.runs[slot];
        let mut tried = 0u16;
        for c in &self.checks[start as usize..end as usize] {
            let Some(at) = i.checked_add_signed(c.offset as isize) else {
                continue;
            };
            let bit = 1u16 << (i32::from(c.offset) + MAX_SHIFT as i32 + 1);
            if tried & bit != 0 {
                continue;
            }
            let mut head = [0u8; 8];
            let have = hay.len().saturating_sub(at).min(8);
            head[..have].copy_from_slice(&hay[at..at + have]);
            if (u64::from_le_bytes(head) | FOLD8) & c.mask == c.prefix {
                tried |= bit;
                self.anchored(hay, at, out);
            }
        }
    }

    /// Every pattern that starts exactly at `at`.
    fn anchored(&self, hay: &[u8], at: usize, out: &mut Vec<Hit>) {
        if self.inside_run(at, out) {
            return;
        }
        let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
        let mut state = OverlappingState::start();
        // Cannot fail: an NFA supports anchored searches.
        while self.nfa.try_find_overlapping(&input, &mut state).is_ok() {
            let Some(m) = state.get_match() else {
                break;
            };
            let hit = Hit {
                start: m.start(),
                end: m.end(),
                pattern: m.pattern().as_u32(),
            };
            self.push(hay, hit, out);
        }
    }

    /// Adds a hit; for a pattern of one byte repeated, the whole run it lies in, unless that is
    /// among the last few hits already.
    fn push(&self, hay: &[u8], mut hit: Hit, out: &mut Vec<Hit>) {
        if self.one_byte[hit.pattern as usize].is_some() {
            if in_run(out, hit) {
                return;
            }
            // Every offset of the run that leaves room for the pattern starts it: the hit is
            // the whole run.
            let x = hay[hit.start];
            let same = |b: &u8| b.eq_ignore_ascii_case(&x);
            hit.start -= hay[..hit.start]
                .iter()
                .rev()
                .take_while(|b| same(b))
                .count();
            hit.end += hay[hit.end..].iter().take_while(|b| same(b)).count();
        }
        out.push(hit);
    }

    /// Whether `at` lies deep enough in a run of a one-byte pattern found so far that nothing
    /// new can start there (see [`Keywords::one_byte`]).
    fn inside_run(&self, at: usize, out: &[Hit]) -> bool {
        let tail = out.len().saturating_sub(4);
        out[tail..].iter().any(|h| {
            self.one_byte[h.pattern as usize]
                .is_some_and(|(len, most)| h.start < at && at + len.max(most + 1) <= h.end)
        })
    }
}

/// Whether `hit` (of a pattern of one byte repeated) lies in a run of its pattern among the
/// last few hits: offsets are tried nearly in order, so the run found at a neighbour is close.
/// Not finding it only costs the same run pushed twice, which `dedup` removes.
fn in_run(out: &[Hit], hit: Hit) -> bool {
    let tail = out.len().saturating_sub(16);
    out[tail..]
        .iter()
        .any(|h| h.pattern == hit.pattern && h.start <= hit.start && hit.end <= h.end)
}

/// The order hits are reported in: by end, then start (then pattern, so equal hits are
/// neighbours for `dedup`).
fn hit_key(h: &Hit) -> (usize, usize, u32) {
    (h.end, h.start, h.pattern)
}

/// Sorts hits that come as runs (each ending at an offset in `runs`), each nearly in order
/// already: the window pass's, out of order only within a keyword's length, and one per short
/// pattern pass, in order of position. Each run is put in order by insertion and the runs are
/// merged; a run further out of order than that is left to a general sort. (Sorting them all
/// afresh took 3% of a scan of text dense with keywords.)
fn sort_hits(hits: &mut [Hit], runs: &[usize]) {
    let mut from = 0;
    for &to in runs {
        if !insertion_sort(&mut hits[from..to]) {
            hits.sort_unstable_by_key(hit_key);
            return;
        }
        from = to;
    }
    let mut merged: Vec<Hit> = Vec::new();
    let mut sorted_to = runs.first().copied().unwrap_or(0);
    for &to in &runs[1..] {
        if to == sorted_to {
            continue;
        }
        merged.clear();
        merged.reserve(to);
        let (a, b) = hits[..to].split_at(sorted_to);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if hit_key(&b[j]) < hit_key(&a[i]) {
                merged.push(b[j]);
                j += 1;
            } else {
                merged.push(a[i]);
                i += 1;
            }
        }
        merged.extend_from_slice(&a[i..]);
        merged.extend_from_slice(&b[j..]);
        hits[..to].copy_from_slice(&merged);
        sorted_to = to;
    }
}

/// Sorts `v` by insertion unless that takes more than a few moves per element; returns whether
/// it finished (else `v` is left a permutation of itself).
fn insertion_sort(v: &mut [Hit]) -> bool {
    let mut budget = v.len().saturating_mul(8).max(64);
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 && hit_key(&v[j - 1]) > hit_key(&v[j]) {
            if budget == 0 {
                return false;
            }
            budget -= 1;
            v.swap(j - 1, j);
            j -= 1;
        }
    }
    true
}

#[inline(always)]
fn load8(hay: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&hay[i..i + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn load4(hay: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&hay[i..i + 4]);
    u32::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn words() -> &'static Vec<String> {
        static W: OnceLock<Vec<String>> = OnceLock::new();
        W.get_or_init(|| {
            let specs = match crate::inspect::rules::embedded_rules() {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
            let rules = specs
                .into_iter()
                .map(crate::inspect::rules::compile)
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| panic!("{e}"));
            super::super::keyword_patterns(&rules).0
        })
    }

    fn keywords() -> &'static Keywords {
        static K: OnceLock<Keywords> = OnceLock::new();
        K.get_or_init(|| Keywords::new(words()).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The search the engine ran before the prefilter: one unanchored overlapping pass, with
    /// the overlapping occurrences of a keyword of one byte repeated joined into one hit over
    /// their union, in the order `find` reports hits.
    fn plain_search(ac: &aho_corasick::AhoCorasick, hay: &[u8]) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        let mut runs: Vec<Hit> = Vec::new();
        for m in ac.find_overlapping_iter(hay) {
            let hit = Hit {
                start: m.start(),
                end: m.end(),
                pattern: m.pattern().as_u32(),
            };
            if !crate::inspect::rules::one_byte_keyword(&hay[m.range()]) {
                hits.push(hit);
                continue;
            }
            match runs
                .iter_mut()
                .find(|r| r.pattern == hit.pattern && hit.start < r.end)
            {
                Some(r) => r.end = r.end.max(hit.end),
                None => runs.push(hit),
            }
        }
        hits.extend(runs);
        hits.sort_by_key(hit_key);
        hits
    }

    fn plain_automaton(words: &[String]) -> aho_corasick::AhoCorasick {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(words)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn hits_in_runs_sort_like_a_general_sort() {
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for case in 0..200 {
            // Runs nearly in order (as the passes make them), or, every tenth case, shuffled
            // so insertion gives up.
            let mut hits = Vec::new();
            let mut runs = Vec::new();
            for _ in 0..1 + next(4) {
                let mut at = next(50);
                for _ in 0..next(300) {
                    at += next(6);
                    let start = if case % 10 == 0 {
                        next(2000)
                    } else {
                        at.saturating_sub(next(8))
                    };
                    let end = start + 1 + next(12);
                    hits.push(Hit {
                        start,
                        end,
                        pattern: next(5) as u32,
                    });
                }
                runs.push(hits.len());
            }
            let mut want = hits.clone();
            want.sort_unstable_by_key(hit_key);
            sort_hits(&mut hits, &runs);
            assert_eq!(hits, want, "case {case}");
        }
    }

    fn plain(hay: &[u8]) -> Vec<Hit> {
        static AC: OnceLock<aho_corasick::AhoCorasick> = OnceLock::new();
        plain_search(AC.get_or_init(|| plain_automaton(words())), hay)
    }

    /// Both window passes (SIMD where the CPU has it, and scalar) find what the plain
    /// automaton finds, and mark every block that holds a digit.
    fn same_as_plain_search(hay: &[u8]) -> Result<(), TestCaseError> {
        let slow = plain(hay);
        for simd in [true, false] {
            let mut fast = Vec::new();
            let mut blocks = Vec::new();
            keywords().find_with(hay, &mut fast, &mut blocks, simd);
            for (k, chunk) in hay.chunks(8).enumerate() {
                if chunk.iter().any(u8::is_ascii_digit) {
                    prop_assert!(
                        blocks[k / 64] >> (k % 64) & 1 == 1,
                        "block {} simd {}",
                        k,
                        simd
                    );
                }
            }
            prop_assert_eq!(
                &fast,
                &slow,
                "simd {} {:?}",
                simd,
                String::from_utf8_lossy(hay)
            );
        }
        Ok(())
    }

    /// Every pattern, in both cases, at every offset of a 64-byte stretch of long text, so each
    /// lane and both loads of the SIMD pass (and the scalar loop after it) see it.
    #[test]
    fn every_pattern_is_found_in_every_lane() {
        let filler = "The quick brown fox jumps over the lazy dog, twice. ".repeat(3);
        let mut checked = 0;
        for w in words().iter().step_by(3) {
            for pad in 0..64 {
                let body = if pad % 2 == 0 {
                    w.clone()
                } else {
                    w.to_ascii_uppercase()
                };
                let hay = format!("{}{body}{}", &filler[..pad], &filler[..40]);
                same_as_plain_search(hay.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
        assert!(checked > 30_000, "{checked}");
    }

    /// The filter passes few windows it does not hold: with one table read per window, its
    /// three bits per word must keep false hits rare, or every one costs a cold call (two bits
    /// passed 0.22% of random windows; three pass 0.06%).
    #[test]
    fn the_filter_rarely_passes_a_window_it_does_not_hold() {
        let k = keywords();
        let set: u32 = k.filter.iter().map(|w| w.count_ones()).sum();
        let fill = f64::from(set) / (FILTER_WORDS * 32) as f64;
        // Random windows over the bytes text is made of (letters, digits, space, punctuation).
        let alphabet: Vec<u8> = (b' '..=b'~').collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let (mut tried, mut passed) = (0u32, 0u32);
        while tried < 1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            let w = window([0, 1, 2, 3].map(|i| alphabet[usize::from(b[i]) % alphabet.len()]));
            if k.exact.keys[k.exact.slot(w)] == w {
                continue;
            }
            tried += 1;
            passed += test(&k.filter, w);
        }
        let rate = f64::from(passed) / f64::from(tried);
        assert!(rate < 0.001, "fill {fill:.4}, false hits {rate:.5}");
    }

    #[test]
    fn window_pairs_avoid_common_english_windows() {
        let k = keywords();
        // `postmark`'s pair sits past `post`, which ordinary prose is full of.
        let post = window(*b"post");
        let slot = k.exact.slot(post);
        let postmark = u64::from_le_bytes(*b"postmark");
        let taken = k.exact.keys[slot] == post && {
            let (s, e) = k.exact.runs[slot];
            k.checks[s as usize..e as usize]
                .iter()
                .any(|c| c.prefix == postmark)
        };
        assert!(!taken, "postmark is still checked at every `post`");
        let mut hits = Vec::new();
        k.find(
            b"the postmortem notes were posted",
            &mut hits,
            &mut Vec::new(),
        );
        assert!(hits.is_empty(), "{hits:?}");
    }

    #[test]
    fn every_pattern_is_found_at_every_offset_and_case() {
        let k = keywords();
        for (pi, w) in words().iter().enumerate() {
            for pad in 0..6 {
                for upper in [false, true] {
                    let body = if upper {
                        w.to_ascii_uppercase()
                    } else {
                        w.clone()
                    };
                    let hay = format!("{}{body}{}", "~".repeat(pad), "#".repeat(pad % 3));
                    let mut got = Vec::new();
                    k.find(hay.as_bytes(), &mut got, &mut Vec::new());
                    assert!(
                        got.iter().any(|h| h.pattern == pi as u32 && h.start == pad),
                        "{w:?} at {pad}"
                    );
                    assert_eq!(got, plain(hay.as_bytes()), "{hay:?}");
                }
            }
        }
    }

    /// A long run of a keyword's one byte (base64 of zeros is a run of `A`) is one hit over the
    /// run, not one per offset, and keywords that start inside or right after it are found.
    #[test]
    fn a_run_of_one_byte_is_one_hit() {
        let k = keywords();
        let run_word = words()
            .iter()
            .position(|w| crate::inspect::rules::one_byte_keyword(w.as_bytes()))
            .unwrap_or_else(|| panic!("an embedded keyword of one byte repeated"));
        let mut hay = b"data:font/woff2;base64,".to_vec();
        let from = hay.len();
        hay.extend(std::iter::repeat_n(b'A', 1 << 20));
        let to = hay.len();
        hay.extend_from_slice(b"aAaA password= ");
        for simd in [true, false] {
            let mut got = Vec::new();
            k.find_with(&hay, &mut got, &mut Vec::new(), simd);
            let runs: Vec<_> = got
                .iter()
                .filter(|h| h.pattern == run_word as u32)
                .collect();
            assert_eq!(runs.len(), 1, "{runs:?}");
            assert_eq!((runs[0].start, runs[0].end), (from, to + 4));
            assert!(got.len() < 20, "{} hits", got.len());
            assert_eq!(got, plain(&hay));
        }
    }

    /// User rules can bring any keywords: many short ones (more than one memchr group),
    /// non-ASCII ones, and ones that are prefixes of each other.
    fn odd_words() -> &'static Vec<String> {
        static W: OnceLock<Vec<String>> = OnceLock::new();
        W.get_or_init(|| {
            [
                "@", "q~", "0x", "zz", "%", "é", "k", "ab", "abc", "abcd", "abcde", "bcd", "ключ",
            ]
            .iter()
            .map(|w| w.to_string())
            .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn prefilter_handles_any_keyword_set(
            parts in proptest::collection::vec(
                prop_oneof![
                    (0..13usize).prop_map(|i| odd_words()[i].to_ascii_uppercase().into_bytes()),
                    (0..13usize).prop_map(|i| odd_words()[i].clone().into_bytes()),
                    "[a-eA-E0-9 @~%xqzk]{0,6}".prop_map(String::into_bytes),
                ],
                0..40,
            )
        ) {
            static K: OnceLock<(Keywords, aho_corasick::AhoCorasick)> = OnceLock::new();
            let (k, ac) = K.get_or_init(|| {
                let k = Keywords::new(odd_words()).unwrap_or_else(|e| panic!("{e}"));
                (k, plain_automaton(odd_words()))
            });
            let hay = parts.concat();
            let mut fast = Vec::new();
            k.find(&hay, &mut fast, &mut Vec::new());
            prop_assert_eq!(fast, plain_search(ac, &hay));
        }
    }

    fn soup() -> impl Strategy<Value = Vec<u8>> {
        let word = (0..words().len(), any::<u64>()).prop_map(|(i, flips)| {
            words()[i]
                .bytes()
                .enumerate()
                .map(|(j, b)| {
                    if flips >> (j % 64) & 1 == 1 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                })
                .collect::<Vec<u8>>()
        });
        let part = prop_oneof![
            3 => word,
            2 => "[a-z0-9 _.:/@~=%+-]{0,12}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec(part, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn prefilter_never_misses_a_keyword(hay in soup()) {
            same_as_plain_search(&hay)?;
        }

        #[test]
        fn prefilter_matches_on_arbitrary_bytes(hay in proptest::collection::vec(any::<u8>(), 0..1200)) {
            same_as_plain_search(&hay)?;
        }
    }
}
