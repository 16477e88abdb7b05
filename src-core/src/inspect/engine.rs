//! The matcher: one Aho-Corasick prefilter over every keyword (plus their base64 and
//! percent-encoded forms), a digit-cluster scanner for number-shaped PII, then each candidate
//! rule's regex on a window around the trigger, then its checks.

use super::normalize::{self, Normalized};
use super::rules::{self, CompiledRule, Kind, Precheck, RuleOverrides};
use super::validate::{self, Validator};
use super::InspectError;
use jobs::{Job, Jobs};
use prefilter::{Hit, Keywords};
use regex_automata::PatternID;
use std::borrow::Cow;
use std::ops::Range;

mod jobs;
mod prefilter;

/// How a value was hidden when it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// As written.
    Plain,
    /// Behind invisible characters or Unicode compatibility forms (fullwidth, math letters …).
    Unicode,
    /// Inside a base64 token (the span covers the whole token).
    Base64,
    /// Inside a percent-encoded token (the span covers the whole token).
    Percent,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Plain => "plain",
            Encoding::Unicode => "unicode",
            Encoding::Base64 => "base64",
            Encoding::Percent => "percent",
        }
    }
}

/// One match. Spans are byte offsets into the text given to [`Engine::scan`], on char
/// boundaries, covering the whole value including any invisible chars or encoding around it.
#[derive(Clone)]
pub struct Finding<'e> {
    pub rule_id: &'e str,
    pub kind: Kind,
    pub family: &'e str,
    pub span: Range<usize>,
    /// 0..=1; weak patterns carry less unless context words are near.
    pub confidence: f32,
    pub encoding: Encoding,
    preview: String,
    /// The de-obfuscated value when it differs from the span text (never printed by `Debug`).
    canonical: Option<Box<str>>,
}

// === impl Finding ===

impl Finding<'_> {
    /// A masked preview: at most four leading chars and never the tail, e.g. `ghp_****`.
    pub fn preview(&self) -> &str {
        &self.preview
    }

    /// The value to hash for a fingerprint: the matched value with invisible characters removed,
    /// compatibility forms folded and one level of base64/percent-encoding undone, so the same
    /// secret hidden differently gets the same fingerprint. Hash it (HMAC), never log it.
    pub fn fingerprint_input<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.canonical {
            Some(c) => Cow::Owned(c.to_string()),
            None => Cow::Borrowed(text.get(self.span.clone()).unwrap_or("")),
        }
    }

    /// [`Finding::fingerprint_input`] for a finding from [`Engine::scan_bytes`]: `bytes` is the
    /// whole scanned buffer, which the span indexes.
    pub fn fingerprint_bytes<'t>(&self, bytes: &'t [u8]) -> Cow<'t, [u8]> {
        match &self.canonical {
            Some(c) => Cow::Owned(c.as_bytes().to_vec()),
            None => Cow::Borrowed(bytes.get(self.span.clone()).unwrap_or_default()),
        }
    }
}

impl std::fmt::Debug for Finding<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finding")
            .field("rule_id", &self.rule_id)
            .field("kind", &self.kind)
            .field("family", &self.family)
            .field("span", &self.span)
            .field("confidence", &self.confidence)
            .field("encoding", &self.encoding)
            .field("preview", &self.preview)
            .finish()
    }
}

/// The masked preview of a value: up to 4 leading chars (a quarter of the value at most) + `****`.
pub fn mask(value: &str) -> String {
    let chars = value.chars().count();
    let show = (chars / 4).min(4);
    let mut out: String = value.chars().take(show).collect();
    out.push_str("****");
    out
}

/// Builds an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineBuilder {
    overrides: RuleOverrides,
}

impl EngineBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn overrides(mut self, overrides: RuleOverrides) -> Self {
        self.overrides = overrides;
        self
    }

    pub fn build(self) -> Result<Engine, InspectError> {
        let specs = rules::apply_overrides(rules::embedded_rules()?, &self.overrides)?;
        let mut compiled = specs
            .into_iter()
            .map(rules::compile)
            .collect::<Result<Vec<_>, _>>()?;
        if self.overrides.include_private_ips {
            for r in &mut compiled {
                r.validator = match r.validator {
                    Some(Validator::Ipv4Public) => Some(Validator::Ipv4Any),
                    Some(Validator::Ipv6Public) => Some(Validator::Ipv6Any),
                    v => v,
                };
            }
        }
        let global_allow = self
            .overrides
            .allowlist
            .iter()
            .map(|a| {
                regex::bytes::Regex::new(a).map_err(|e| InspectError::Regex {
                    rule: "allowlist".into(),
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Engine::from_rules(
            compiled,
            self.overrides.min_confidence.unwrap_or(0.5),
            global_allow,
        )
    }
}

/// What an Aho-Corasick pattern id stands for.
#[derive(Debug, Default)]
struct Pattern {
    /// Rules whose keyword this is.
    rules: Vec<u32>,
    /// Char offset of this base64 variant inside its group, when it is one.
    b64_skip: Option<u8>,
    /// This is a percent-encoded keyword.
    pct: bool,
}

/// The compiled detection engine. Build once, share behind an `Arc`; scanning is `&self`.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<CompiledRule>,
    keywords: Keywords,
    patterns: Vec<Pattern>,
    /// Digit-triggered rules, ascending by minimum digit count.
    digit_rules: Vec<DigitRule>,
    /// The context words of the digit rules that need one to reach `min_confidence`.
    context: ContextWords,
    /// The digit-triggered regexes in one overlapping multi-pattern search: one pass over a
    /// cluster tells which of them can match, so a date or a timestamp costs one search instead
    /// of one per number-shaped rule.
    digit_set: regex_automata::meta::Regex,
    min_confidence: f32,
    global_allow: Vec<regex::bytes::Regex>,
}

/// The longest span one search of the digit automaton covers for a group of neighbouring
/// clusters. In a table of numbers the clusters sit a few bytes apart and their windows (24 bytes
/// each side for the phone rules, 40 before for IBANs) overlap, so searching each on its own read
/// most bytes several times (22% fewer instructions on a CSV of numbers with groups of this
/// size). A longer group would queue more rule windows where a rule matched only somewhere else
/// in it.
const MAX_DIGIT_GROUP: usize = 128;

/// A digit-triggered rule as the cluster pass sees it.
#[derive(Debug)]
struct DigitRule {
    /// The fewest digits a cluster needs.
    min: u8,
    rule: u32,
    /// Its pattern in the shared automaton (`None` for a `solo` rule).
    id: Option<PatternID>,
    gate: Gate,
}

/// Whether a digit rule's finding can reach the engine's `min_confidence` on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gate {
    Open,
    /// Only with one of its context words near (the bit of those words in [`ContextWords`]):
    /// a cluster with none near is not searched for it, whatever the regex would say.
    Context(u64),
    /// Not even with a context word: the rule is never searched.
    Never,
}

/// The context words of the rules that need one to reach `min_confidence` (a national phone
/// format, an unformatted SSN), in one automaton. In a table of numbers nearly every cluster
/// is a candidate for such a rule, and nearly none has its words near.
#[derive(Debug)]
struct ContextWords {
    /// ASCII case-insensitive, overlapping; `None` when no rule is gated.
    ac: Option<aho_corasick::AhoCorasick>,
    /// Per pattern, the bits of the gated rules it is a context word of.
    masks: Vec<u64>,
    longest: usize,
    /// How far a gated rule's value may start before its cluster, plus the context reach.
    reach_back: usize,
}

/// What a context word near a value adds to its rule's confidence.
const CONTEXT_BOOST: f32 = 0.35;
/// How far before and after a value [`Engine::check`] looks for context words, and a margin
/// for the value's snapping out to char boundaries.
const CONTEXT_BEFORE: usize = 96;
const CONTEXT_AFTER: usize = 48;
const SNAP: usize = 4;

/// The context words found in the text so far, for [`ContextWords`]. Clusters come in order,
/// so the text is searched once, forwards, and only where some gated rule asks.
#[derive(Default)]
struct ContextHits {
    /// (start, end, mask) of every occurrence inside `covered`, by end.
    hits: Vec<(usize, usize, u64)>,
    /// Hits before this one end before any region still to be asked about.
    head: usize,
    covered: Range<usize>,
}

impl ContextHits {
    /// Whether a word with `bit` lies wholly inside `region`. `cover_from` is at or before
    /// `region.start`; the text is searched again from there if it lies before what the hits
    /// still cover (they come in cluster order, so that is rare).
    fn any(
        &mut self,
        words: &ContextWords,
        bytes: &[u8],
        cover_from: usize,
        region: Range<usize>,
        bit: u64,
    ) -> bool {
        let Some(ac) = &words.ac else {
            return false;
        };
        if cover_from > self.covered.end
            || cover_from < self.covered.start
            || self.covered.is_empty()
        {
            self.hits.clear();
            self.head = 0;
            self.covered = cover_from..cover_from;
        }
        if region.end > self.covered.end {
            // Words ending inside what was covered are in `hits` already; ones that cross its
            // end were not wholly inside it, and are found now.
            let from = self
                .covered
                .end
                .saturating_sub(words.longest)
                .max(self.covered.start);
            let input = aho_corasick::Input::new(bytes).range(from..region.end);
            for m in ac.find_overlapping_iter(input) {
                if m.end() > self.covered.end {
                    self.hits
                        .push((m.start(), m.end(), words.masks[m.pattern().as_usize()]));
                }
            }
            self.covered.end = region.end;
        }
        // Hits end in order; those ending at or before `cover_from` are of no use now, and
        // everything from there on is still covered.
        while self.head < self.hits.len() && self.hits[self.head].1 <= cover_from {
            self.head += 1;
        }
        self.covered.start = cover_from;
        if self.head > 4096 && self.head * 2 > self.hits.len() {
            self.hits.drain(..self.head);
            self.head = 0;
        }
        self.hits[self.head..]
            .iter()
            .take_while(|h| h.1 <= region.end)
            .any(|&(s, _, mask)| s >= region.start && mask & bit != 0)
    }
}

/// Neighbouring digit clusters whose windows overlap, searched together.
struct DigitGroup {
    /// The hull of the members' windows.
    span: Range<usize>,
    members: Vec<Member>,
    set: regex_automata::PatternSet,
    context: ContextHits,
}

/// A cluster that is a candidate for a rule of the shared automaton.
struct Member {
    start: usize,
    end: usize,
    rule: u32,
    id: PatternID,
    gate: Gate,
}

/// A finding before it is resolved against overlaps and turned into a [`Finding`].
#[derive(Debug)]
struct Raw {
    rule: u32,
    span: Range<usize>,
    confidence: f32,
    encoding: Encoding,
    canonical: Option<Box<str>>,
}

/// Bounds on the decode path: tokens larger than this are decoded in a window.
const MAX_TOKEN: usize = 64 * 1024;
const DECODE_WINDOW: usize = 8 * 1024;

// === impl Engine ===

impl Engine {
    /// The embedded rules with no overrides.
    pub fn new() -> Result<Self, InspectError> {
        EngineBuilder::new().build()
    }

    fn from_rules(
        rules: Vec<CompiledRule>,
        min_confidence: f32,
        global_allow: Vec<regex::bytes::Regex>,
    ) -> Result<Self, InspectError> {
        let (words, patterns) = keyword_patterns(&rules);
        let keywords = Keywords::new(&words).map_err(|e| InspectError::Rule {
            rule: "keywords".into(),
            message: e.to_string(),
        })?;
        let mut by_digits: Vec<(u8, u32)> = rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.digits.map(|d| (d, i as u32)))
            .collect();
        by_digits.sort_unstable();
        let mut digit_patterns: Vec<&str> = Vec::new();
        let mut gated = 0u32;
        let mut words: Vec<(Vec<u8>, u64)> = Vec::new();
        let mut reach_back = 0;
        let mut digit_rules = Vec::new();
        for (min, ri) in by_digits {
            let rule = &rules[ri as usize];
            // The confidence `check` gives a value with a context word near, the most it gives.
            let with_context = (rule.confidence + CONTEXT_BOOST).clamp(0.0, 1.0);
            let gate = if rule.confidence >= min_confidence {
                Gate::Open
            } else if with_context < min_confidence || rule.context.is_empty() {
                Gate::Never
            } else if gated < 64 {
                let bit = 1u64 << gated;
                gated += 1;
                for w in rule.context.iter().filter(|w| !w.is_empty()) {
                    match words.iter_mut().find(|(x, _)| x == w) {
                        Some((_, mask)) => *mask |= bit,
                        None => words.push((w.clone(), bit)),
                    }
                }
                reach_back = reach_back.max(rule.before + CONTEXT_BEFORE + SNAP);
                Gate::Context(bit)
            } else {
                Gate::Open
            };
            if gate == Gate::Never {
                continue;
            }
            let id = (!rule.solo).then(|| {
                digit_patterns.push(&rule.pattern);
                PatternID::must(digit_patterns.len() - 1)
            });
            digit_rules.push(DigitRule {
                min,
                rule: ri,
                id,
                gate,
            });
        }
        let ac = if words.is_empty() {
            None
        } else {
            Some(
                aho_corasick::AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(words.iter().map(|(w, _)| w))
                    .map_err(|e| InspectError::Rule {
                        rule: "context words".into(),
                        message: e.to_string(),
                    })?,
            )
        };
        let context = ContextWords {
            ac,
            masks: words.iter().map(|&(_, m)| m).collect(),
            longest: words.iter().map(|(w, _)| w.len()).max().unwrap_or(0),
            reach_back,
        };
        let digit_set = rules::pattern_builder(
            regex_automata::meta::Regex::config()
                .match_kind(regex_automata::MatchKind::All)
                .nfa_size_limit(Some(32 << 20))
                // Overlapping search over the number-shaped rules at once has many states; at
                // the default 2 MB the lazy DFA kept rebuilding them on text full of digit
                // groups (1.5 MiB/s; 4.2 at 8 MB, 15.6 at 16 MB). The cache grows only as far
                // as the text needs, but is kept: each thread that scanned such text at the
                // same time as another holds its own, up to this size, for the engine's life.
                .hybrid_cache_capacity(16 << 20),
        )
        .build_many(&digit_patterns)
        .map_err(|e| InspectError::Regex {
            rule: "digit rules".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            rules,
            keywords,
            patterns,
            digit_rules,
            context,
            digit_set,
            min_confidence,
            global_allow,
        })
    }

    /// The compiled rules, in rule-file order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Scans `text` and calls `on_finding` for each finding in order of position; return `false`
    /// from the callback to stop.
    pub fn scan<'e, F>(&'e self, text: &str, mut on_finding: F)
    where
        F: FnMut(&Finding<'e>) -> bool,
    {
        let mut raw = Vec::new();
        self.collect(text, true, &mut raw);
        self.resolve(&mut raw);
        for r in raw {
            let f = self.finish(text, r);
            if !on_finding(&f) {
                break;
            }
        }
    }

    /// Scans bytes that may not be UTF-8: each valid UTF-8 stretch is scanned on its own and
    /// spans are offsets into `bytes`.
    pub fn scan_bytes<'e, F>(&'e self, bytes: &[u8], mut on_finding: F)
    where
        F: FnMut(&Finding<'e>) -> bool,
    {
        // Nearly every file is valid UTF-8, and `from_utf8` checks ASCII a word at a time, far
        // faster than splitting into chunks (17% of `airlock scan` on prose).
        if let Ok(text) = std::str::from_utf8(bytes) {
            return self.scan(text, on_finding);
        }
        let mut offset = 0;
        let mut go_on = true;
        for chunk in bytes.utf8_chunks() {
            let valid = chunk.valid();
            if go_on && !valid.is_empty() {
                self.scan(valid, |f| {
                    let mut shifted = f.clone();
                    shifted.span = f.span.start + offset..f.span.end + offset;
                    go_on = on_finding(&shifted);
                    go_on
                });
            }
            offset += valid.len() + chunk.invalid().len();
        }
    }

    /// `text` with every finding replaced by its masked preview: for showing text that may hold
    /// a secret, such as a parser's message quoting a config file.
    pub fn mask_findings<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let found = self.find_all(text);
        if found.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &found {
            out.push_str(&text[at..f.span.start]);
            out.push_str(f.preview());
            at = f.span.end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// One call: every finding in `text`.
    pub fn find_all(&self, text: &str) -> Vec<Finding<'_>> {
        let mut out = Vec::new();
        self.scan(text, |f| {
            out.push(f.clone());
            true
        });
        out
    }

    fn finish(&self, text: &str, r: Raw) -> Finding<'_> {
        let rule = &self.rules[r.rule as usize];
        let preview = match &r.canonical {
            Some(c) => mask(c),
            None => mask(text.get(r.span.clone()).unwrap_or("")),
        };
        Finding {
            rule_id: &rule.id,
            kind: rule.kind,
            family: &rule.family,
            span: r.span,
            confidence: r.confidence,
            encoding: r.encoding,
            preview,
            canonical: r.canonical,
        }
    }

    /// Orders findings and keeps the best of any overlapping group.
    fn resolve(&self, raw: &mut Vec<Raw>) {
        raw.retain(|r| r.confidence >= self.min_confidence);
        // By start, longest first; the rule breaks ties, so which of two equal findings is
        // kept does not depend on the order their windows ran in, and the index keeps the
        // order of findings equal in all three. Sorting these keys and not the findings
        // themselves (48 bytes each) halves the cost on text dense with findings.
        let mut order: Vec<(usize, usize, u32, u32)> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| (r.span.start, usize::MAX - r.span.end, r.rule, i as u32))
            .collect();
        order.sort_unstable();
        let score = |r: &Raw| {
            let rule = &self.rules[r.rule as usize];
            (rule.priority, (r.confidence * 1000.0) as i32, r.span.len())
        };
        let mut kept: Vec<u32> = Vec::with_capacity(raw.len());
        for &(.., i) in &order {
            let r = &raw[i as usize];
            match kept.last_mut() {
                Some(last) if r.span.start < raw[*last as usize].span.end => {
                    if score(r) > score(&raw[*last as usize]) {
                        *last = i;
                    }
                }
                _ => kept.push(i),
            }
        }
        let mut taken: Vec<Option<Raw>> = raw.drain(..).map(Some).collect();
        raw.extend(kept.iter().filter_map(|&i| taken[i as usize].take()));
    }

    /// Finds raw findings in `text`, through normalisation when the text needs it.
    fn collect(&self, text: &str, decode: bool, out: &mut Vec<Raw>) {
        if !normalize::needs_normalization(text) {
            self.collect_plain(text, decode, out);
            return;
        }
        let norm = Normalized::new(text);
        let mut inner = Vec::new();
        self.collect_plain(&norm.text, decode, &mut inner);
        for mut r in inner {
            let (s, e) = norm.original_span(text, r.span.start, r.span.end);
            let normalized_value = &norm.text[r.span.clone()];
            if r.encoding == Encoding::Plain && text.get(s..e) != Some(normalized_value) {
                r.encoding = Encoding::Unicode;
                r.canonical = Some(normalized_value.into());
            }
            r.span = s..e;
            out.push(r);
        }
    }

    fn collect_plain(&self, text: &str, decode: bool, out: &mut Vec<Raw>) {
        let bytes = text.as_bytes();
        let mut jobs = Jobs::new(self.rules.len());
        let mut decoded_until = 0usize;
        let mut hits: Vec<Hit> = Vec::new();
        let mut digit_blocks: Vec<u64> = Vec::new();
        self.keywords.find(bytes, &mut hits, &mut digit_blocks);
        for m in &hits {
            let p = &self.patterns[m.pattern as usize];
            for &ri in &p.rules {
                let rule = &self.rules[ri as usize];
                if rule.anchored {
                    jobs.anchored(ri, m.start);
                } else {
                    self.push_window(text, ri, rule.window(m.start, m.end), &mut jobs);
                }
            }
            if decode && m.start >= decoded_until {
                if let Some(skip) = p.b64_skip {
                    decoded_until = self.decode_b64_at(text, m.start, m.end, skip as usize, out);
                } else if p.pct {
                    decoded_until = self.decode_pct_at(text, m.start, m.end, out);
                }
            }
        }
        // The digit pass queues windows from the start of the text again.
        jobs.close();
        if !self.digit_rules.is_empty() {
            let mut group = DigitGroup {
                span: 0..0,
                members: Vec::new(),
                set: regex_automata::PatternSet::new(self.digit_set.pattern_len()),
                context: ContextHits::default(),
            };
            digit_clusters_in(bytes, &digit_blocks, |start, end, digits| {
                // The automaton searches the union of the candidates' own windows: a match a
                // window can find is in it, and a short number whose only candidates look two
                // bytes around it is not searched 40 bytes before and 48 after.
                let (mut before, mut after) = (0, 0);
                let first = group.members.len();
                for dr in &self.digit_rules {
                    if digits < dr.min as usize {
                        break;
                    }
                    let (ri, id) = (dr.rule, dr.id);
                    let rule = &self.rules[ri as usize];
                    if let Some(pc) = rule.precheck {
                        if !precheck(pc, text, rule, start, end) {
                            continue;
                        }
                    }
                    let Some(id) = id else {
                        if let Gate::Context(bit) = dr.gate {
                            let ctx = &mut group.context;
                            if !self.context_near(text, ctx, rule, start, end, bit) {
                                continue;
                            }
                        }
                        self.push_window(text, ri, rule.window(start, end), &mut jobs);
                        continue;
                    };
                    before = before.max(rule.before);
                    after = after.max(rule.after);
                    group.members.push(Member {
                        start,
                        end,
                        rule: ri,
                        id,
                        gate: dr.gate,
                    });
                }
                if group.members.len() == first {
                    return;
                }
                let ws = start.saturating_sub(before);
                let we = window_end(text, end + after, false);
                // A later cluster may look further back than the first (an IBAN's digits after a
                // short cluster inside it): the span is the hull of all the members' windows.
                let hull = ws.min(group.span.start)..we.max(group.span.end);
                let joins = first > 0 && ws <= group.span.end && hull.len() <= MAX_DIGIT_GROUP;
                if joins {
                    group.span = hull;
                    return;
                }
                if first > 0 {
                    self.search_group(text, &mut group, first, &mut jobs);
                }
                group.span = ws..we;
            });
            let n = group.members.len();
            if n > 0 {
                self.search_group(text, &mut group, n, &mut jobs);
            }
        }
        for (ri, job) in jobs.take_by_rule() {
            match job {
                Job::Window(s, e) => self.run_window(text, ri, s, e, out),
                Job::Anchored(at) => self.run_anchored(text, ri, at, out),
            }
        }
    }

    /// One search of the digit rules' shared automaton over a group of neighbouring clusters'
    /// windows (its first `n` members; the rest, if any, start the next group); each member
    /// whose rule matched somewhere in it gets its own window queued.
    ///
    /// A member whose rule needs a context word gets its window only with one near. That is
    /// asked after the search, of the few whose rule matched, unless every member needs one:
    /// then before, so a group with no word near any member is not searched at all (a table
    /// of numbers). Asking before every search cost more than it saved on text where most
    /// groups have some other candidate too.
    fn search_group(&self, text: &str, group: &mut DigitGroup, n: usize, jobs: &mut Jobs) {
        let DigitGroup {
            span,
            members,
            set,
            context,
        } = group;
        if members[..n].iter().all(|m| m.gate != Gate::Open) {
            let mut any = false;
            for m in &mut members[..n] {
                let rule = &self.rules[m.rule as usize];
                m.gate = match m.gate {
                    Gate::Context(bit)
                        if self.context_near(text, context, rule, m.start, m.end, bit) =>
                    {
                        any = true;
                        Gate::Open
                    }
                    _ => Gate::Never,
                };
            }
            if !any {
                members.drain(..n);
                return;
            }
        }
        set.clear();
        let input = regex_automata::Input::new(text.as_bytes()).range(span.clone());
        self.digit_set.which_overlapping_matches(&input, set);
        for m in members.drain(..n) {
            if !set.contains(m.id) {
                continue;
            }
            let rule = &self.rules[m.rule as usize];
            let near = match m.gate {
                Gate::Open => true,
                Gate::Context(bit) => self.context_near(text, context, rule, m.start, m.end, bit),
                Gate::Never => false,
            };
            if near {
                self.push_window(text, m.rule, rule.window(m.start, m.end), jobs);
            }
        }
    }

    /// Whether a context word of the gated rule (`bit`) lies where [`Engine::check`] would look
    /// for one around any value the rule's window at cluster `start..end` can find.
    fn context_near(
        &self,
        text: &str,
        context: &mut ContextHits,
        rule: &CompiledRule,
        start: usize,
        end: usize,
        bit: u64,
    ) -> bool {
        let bytes = text.as_bytes();
        let w = digit_window(text, rule, start, end);
        let region = w.start.saturating_sub(CONTEXT_BEFORE + SNAP)
            ..(w.end + CONTEXT_AFTER + SNAP).min(bytes.len());
        let cover_from = start.saturating_sub(self.context.reach_back);
        context.any(&self.context, bytes, cover_from, region, bit)
    }

    /// Queues a regex window for a rule ([`Jobs::window`]: merged with that rule's previous
    /// window when they overlap, so a run of keyword hits costs one regex pass).
    fn push_window(&self, text: &str, ri: u32, (s, e): (usize, usize), jobs: &mut Jobs) {
        jobs.window(ri, s, e.min(text.len()));
    }

    fn run_window(&self, text: &str, ri: u32, s: usize, e: usize, out: &mut Vec<Raw>) {
        let rule = &self.rules[ri as usize];
        let bytes = text.as_bytes();
        // A keyword rule's value may be long (a key, a token): its window runs on to the end of
        // the token. A rule triggered by digits alone has an `after` that covers its longest
        // match (its examples are found through the engine in the rule tests).
        let e = window_end(text, e, !rule.keywords.is_empty());
        let mut caps = captures_for(rule);
        let mut at = s;
        while at < e {
            let input = regex_automata::Input::new(bytes).range(at..e);
            let Some((m, (vs, ve))) = next_value(rule, bytes, &input, &mut caps) else {
                break;
            };
            at = if m.end > m.start { m.end } else { m.start + 1 };
            if ve <= vs {
                continue;
            }
            self.push_checked(text, ri, vs, ve, out);
        }
    }

    /// Snaps a value's span out to char boundaries, runs the rule's checks and keeps it if they
    /// pass.
    fn push_checked(&self, text: &str, ri: u32, vs: usize, ve: usize, out: &mut Vec<Raw>) {
        let (mut vs, ve) = snap_out(text, vs, ve);
        let rule = &self.rules[ri as usize];
        // A value read from the letter of an escape (`"hi\nmaria@…"` in source code, where the
        // regex sees `nmaria@…`) starts after it, if what follows is a value of the rule alone.
        if escape_letter_at(text.as_bytes(), vs) && whole_value(rule, &text.as_bytes()[vs + 1..ve])
        {
            vs += 1;
        }
        if let Some(conf) = self.check(rule, text.as_bytes(), vs, ve) {
            out.push(Raw {
                rule: ri,
                span: vs..ve,
                confidence: conf,
                encoding: Encoding::Plain,
                canonical: None,
            });
        }
    }

    /// One anchored search at a keyword hit, for rules whose matches all start with a keyword.
    fn run_anchored(&self, text: &str, ri: u32, at: usize, out: &mut Vec<Raw>) {
        use regex_automata::{Anchored, Input};
        let rule = &self.rules[ri as usize];
        let bytes = text.as_bytes();
        if !text.is_char_boundary(at) {
            return;
        }
        // As far as the window would reach.
        let end = window_end(text, at + rule.after, true);
        let input = Input::new(bytes).range(at..end).anchored(Anchored::Yes);
        let mut found = next_value(rule, bytes, &input, &mut captures_for(rule));
        if found.is_none() && after_escape(bytes, at) {
            // A leading `\b` reads the byte before the keyword, and the letter of an escape
            // (`\n` in a string literal, `%3D` in a URL) is a word byte, though it ends what came
            // before. Searched again as if the text began at the keyword.
            let rest = &bytes[at..];
            let input = Input::new(rest).range(..end - at).anchored(Anchored::Yes);
            found = next_value(rule, rest, &input, &mut captures_for(rule))
                .map(|(m, (vs, ve))| (m, (vs + at, ve + at)));
        }
        let Some((_, (vs, ve))) = found else {
            return;
        };
        if ve <= vs {
            return;
        }
        self.push_checked(text, ri, vs, ve, out);
    }

    /// Allowlists, entropy, validator and context; returns the confidence when the value stands.
    fn check(&self, rule: &CompiledRule, bytes: &[u8], vs: usize, ve: usize) -> Option<f32> {
        let value = &bytes[vs..ve];
        if rule.placeholder_check && validate::is_placeholder(value) {
            return None;
        }
        if rule
            .allowlist
            .iter()
            .chain(&self.global_allow)
            .any(|a| a.is_match(value))
        {
            return None;
        }
        if let Some(floor) = rule.entropy {
            if validate::shannon_entropy(value) < floor {
                return None;
            }
        }
        if let Some(v) = rule.validator {
            if !v.check(value) {
                return None;
            }
        }
        let mut conf = rule.confidence;
        if !rule.context.is_empty() || !rule.negative_context.is_empty() {
            let cs = vs.saturating_sub(CONTEXT_BEFORE);
            let ce = (ve + CONTEXT_AFTER).min(bytes.len());
            let around = &bytes[cs..ce];
            if context_hit(around, &rule.context, false) {
                conf += CONTEXT_BOOST;
            }
            // Negative words count only on the match's own line and as whole words, so
            // `release.tar.gz` two lines up does not sink an IP address.
            let ls = memchr::memrchr(b'\n', &around[..vs - cs]).map_or(0, |i| i + 1);
            let le =
                memchr::memchr(b'\n', &around[ve - cs..]).map_or(around.len(), |i| ve - cs + i);
            if context_hit(&around[ls..le], &rule.negative_context, true) {
                conf -= 0.4;
            }
        }
        Some(conf.clamp(0.0, 1.0))
    }

    /// Decodes the base64 token around a variant hit and scans the decoded text (one level).
    /// Returns the end of what was decoded, so later hits inside it are skipped.
    ///
    /// Decoding starts as far before the keyword as the token (or half the window) allows, in
    /// step with the keyword's 4-char group: the text before the keyword is part of what a rule
    /// matches (a URL's scheme, the rest of a prefix such as `AGE-` before `SECRET-KEY`, a
    /// variable's name), and a first hit on a shorter keyword must not cut it off.
    fn decode_b64_at(
        &self,
        text: &str,
        hs: usize,
        he: usize,
        skip: usize,
        out: &mut Vec<Raw>,
    ) -> usize {
        let bytes = text.as_bytes();
        let (ts, te) = normalize::b64_token(bytes, hs, he, MAX_TOKEN);
        let Some(group) = hs.checked_sub(skip) else {
            return he;
        };
        if group < ts || te - ts < 16 {
            return he;
        }
        let ds = group - (group - ts).min(DECODE_WINDOW / 2) / 4 * 4;
        let de = te.min(ds + DECODE_WINDOW);
        let Some(decoded) = normalize::decode_b64(&bytes[ds..de]) else {
            return he;
        };
        let span = if te - ts <= MAX_TOKEN { ts..te } else { ds..de };
        self.scan_decoded(&decoded, span, Encoding::Base64, out);
        de.max(he)
    }

    fn decode_pct_at(&self, text: &str, hs: usize, he: usize, out: &mut Vec<Raw>) -> usize {
        let bytes = text.as_bytes();
        let (ts, te) = normalize::pct_token(bytes, hs, he, MAX_TOKEN);
        let decoded = normalize::decode_pct(&bytes[ts..te.min(ts + DECODE_WINDOW)]);
        self.scan_decoded(&decoded, ts..te, Encoding::Percent, out);
        te
    }

    fn scan_decoded(
        &self,
        decoded: &[u8],
        span: Range<usize>,
        encoding: Encoding,
        out: &mut Vec<Raw>,
    ) {
        for chunk in decoded.utf8_chunks() {
            let valid = chunk.valid();
            if valid.len() < 8 {
                continue;
            }
            let mut inner = Vec::new();
            self.collect(valid, false, &mut inner);
            for r in inner {
                let value = valid.get(r.span.clone()).unwrap_or("");
                out.push(Raw {
                    rule: r.rule,
                    span: span.clone(),
                    confidence: r.confidence,
                    encoding,
                    canonical: Some(r.canonical.unwrap_or_else(|| value.into())),
                });
            }
        }
    }
}

/// The keyword automaton's patterns (lowercase, deduplicated) and what each stands for: every
/// rule keyword, plus base64 and percent-encoded forms of the secret keywords, so an encoded
/// secret is found by the same pass. Only keywords of 4+ bytes get encoded forms: shorter ones
/// would make too many noisy variants.
fn keyword_patterns(rules: &[CompiledRule]) -> (Vec<String>, Vec<Pattern>) {
    let mut words: Vec<String> = Vec::new();
    let mut patterns: Vec<Pattern> = Vec::new();
    let mut index = std::collections::HashMap::<String, usize>::new();
    let mut slot = |w: String, words: &mut Vec<String>, patterns: &mut Vec<Pattern>| -> usize {
        let key = w.to_ascii_lowercase();
        *index.entry(key.clone()).or_insert_with(|| {
            words.push(key);
            patterns.push(Pattern::default());
            patterns.len() - 1
        })
    };
    for (ri, r) in rules.iter().enumerate() {
        for k in &r.keywords {
            let p = slot(k.clone(), &mut words, &mut patterns);
            if !patterns[p].rules.contains(&(ri as u32)) {
                patterns[p].rules.push(ri as u32);
            }
        }
    }
    // Encoding is case-sensitive, and the automaton's case folding does not reach through it:
    // `ZENDESK` and `zendesk` have unrelated base64 forms. So each secret keyword is encoded as
    // written in its rule's pattern (`AKIA`, `AIza`, `-----BEGIN RSA PRIVATE KEY-----`,
    // `AccountKey=`), and in lower case, upper case, capitalised and with each word capitalised,
    // the spellings text mostly uses (`ZENDESK_API_TOKEN` in a `.env`, `zendesk_api_token` in
    // code, `X-Auth-Key` in a header). Other mixed spellings (`ZenDesk`) are missed.
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    for r in rules.iter().filter(|r| r.kind == Kind::Secret) {
        let source = r.pattern.to_ascii_lowercase();
        for k in r.keywords.iter().filter(|k| k.len() >= 4) {
            let k = k.to_ascii_lowercase().into_bytes();
            let mut forms = vec![k.clone(), k.to_ascii_uppercase()];
            let mut capitalised = k.clone();
            capitalised[0] = capitalised[0].to_ascii_uppercase();
            forms.push(capitalised);
            let words: Vec<u8> = (0..k.len())
                .map(|i| match i.checked_sub(1).map(|j| k[j]) {
                    Some(b) if b.is_ascii_alphanumeric() => k[i],
                    _ => k[i].to_ascii_uppercase(),
                })
                .collect();
            forms.push(words);
            // As the pattern writes it: the whole keyword found in the pattern's source, in its
            // case (`-----BEGIN RSA PRIVATE KEY-----`), or else its longest run of letters and
            // digits (`AccountKey` in `(?i:AccountKey)=` for `accountkey=`, `APA91b` for
            // `:apa91b`).
            let text = String::from_utf8_lossy(&k).into_owned();
            let mut found = false;
            for (i, _) in source.match_indices(text.as_str()) {
                forms.push(r.pattern.as_bytes()[i..i + k.len()].to_vec());
                found = true;
            }
            let (mut at, mut run, mut i) = (0, 0, 0);
            while i < k.len() {
                let n = k[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count();
                if n > run {
                    (at, run) = (i, n);
                }
                i += n.max(1);
            }
            if !found && run >= 4 {
                for (i, _) in source.match_indices(&text[at..at + run]) {
                    let mut form = k[..at].to_vec();
                    form.extend_from_slice(&r.pattern.as_bytes()[i..i + run]);
                    form.extend_from_slice(&k[at + run..]);
                    forms.push(form);
                }
            }
            for f in forms {
                if !encoded.contains(&f) {
                    encoded.push(f);
                }
            }
        }
    }
    for k in encoded {
        for (v, skip) in normalize::b64_variants(&k) {
            let p = slot(v, &mut words, &mut patterns);
            patterns[p].b64_skip = Some(skip as u8);
        }
        for v in normalize::pct_variants(&k) {
            let p = slot(v, &mut words, &mut patterns);
            patterns[p].pct = true;
        }
    }
    (words, patterns)
}

/// Whether any of `words` (lowercase) occurs in `hay`, ASCII case-insensitively, starting a
/// word; with `whole`, also ending one. `call` is not in `locally`; `tel` is in `telefon`
/// unless `whole`.
fn context_hit(hay: &[u8], words: &[Vec<u8>], whole: bool) -> bool {
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    words.iter().filter(|w| !w.is_empty()).any(|w| {
        let at = |i: usize| {
            hay.get(i..i + w.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(w))
                && (!alnum(w.first()) || i == 0 || !alnum(hay.get(i - 1)))
                && (!whole || !alnum(w.last()) || !alnum(hay.get(i + w.len())))
        };
        // Haystacks are ~150 bytes: memchr on the first byte, then compare in place.
        let (lo, up) = (w[0], w[0].to_ascii_uppercase());
        if lo == up {
            memchr::memchr_iter(lo, hay).any(at)
        } else {
            memchr::memchr2_iter(lo, up, hay).any(at)
        }
    })
}

/// `e`, or further to the end of the token running through it (the next whitespace or quote,
/// at most 512 bytes on): a long value must not be cut off at the window's edge.
fn token_end(bytes: &[u8], e: usize) -> usize {
    let mut e = e.min(bytes.len());
    let stop = (e + 512).min(bytes.len());
    while e < stop && !bytes[e].is_ascii_whitespace() && !matches!(bytes[e], b'"' | b'\'' | b'`') {
        e += 1;
    }
    e
}

/// Widens a byte span to char boundaries.
fn snap_out(text: &str, mut s: usize, mut e: usize) -> (usize, usize) {
    while s > 0 && !text.is_char_boundary(s) {
        s -= 1;
    }
    while e < text.len() && !text.is_char_boundary(e) {
        e += 1;
    }
    (s, e)
}

/// The high bit of each byte of `w` that is an ASCII digit, and only those (no borrow crosses
/// a byte: each byte's sum stays below 0x100).
#[inline]
pub(super) fn digit_bytes(w: u64) -> u64 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Digits become 0..=9; adding 0x76 to the low seven bits sets bit 7 from 10 up.
    let x = w ^ 0x3030_3030_3030_3030;
    !(((x & LOW7) + 0x7676_7676_7676_7676) | x) & HIGH
}

/// Calls `f(start, end, digit_count)` for each cluster of digits joined by at most two
/// consecutive separators (space, `-`, `.`, `(`, `)`, `/`).
#[cfg(test)]
pub(crate) fn digit_clusters(bytes: &[u8], f: impl FnMut(usize, usize, usize)) {
    let blocks = digit_blocks(bytes);
    digit_clusters_in(bytes, &blocks, f)
}

/// The block map of [`digit_clusters_in`], built on its own (the engine gets it from the
/// keyword pass).
#[cfg(test)]
fn digit_blocks(bytes: &[u8]) -> Vec<u64> {
    let mut blocks = vec![0u64; bytes.len() / 512 + 1];
    for (k, chunk) in bytes.chunks(8).enumerate() {
        if chunk.iter().any(u8::is_ascii_digit) {
            blocks[k / 64] |= 1 << (k % 64);
        }
    }
    blocks
}

/// [`digit_clusters`] with a map of the 8-byte blocks that may hold a digit (bit `k` of word
/// `k / 64` for block `k`; a clear bit promises none), so digit-free text is skipped 512 bytes
/// per word and only marked blocks are read.
fn digit_clusters_in(bytes: &[u8], blocks: &[u64], mut f: impl FnMut(usize, usize, usize)) {
    let n = bytes.len();
    let mut i = 0;
    while i < n {
        // Step to the next digit: whole words of the map where it is clear, else byte by byte.
        loop {
            if i % 8 == 0 {
                while i + 8 <= n {
                    let k = i / 8;
                    let rest = blocks.get(k / 64).map_or(u64::MAX, |w| w >> (k % 64));
                    if rest == 0 {
                        i = (k / 64 + 1) * 512;
                        continue;
                    }
                    let skip = rest.trailing_zeros() as usize;
                    if skip == 0 {
                        break;
                    }
                    i += skip * 8;
                }
            }
            // Eight bytes at a time: jump to the first digit, or past the next block boundary.
            if i + 8 <= n {
                let mut w = [0u8; 8];
                w.copy_from_slice(&bytes[i..i + 8]);
                let m = digit_bytes(u64::from_le_bytes(w));
                if m != 0 {
                    i += (m.trailing_zeros() / 8) as usize;
                    break;
                }
                i = (i + 8) & !7;
                continue;
            }
            if i >= n || bytes[i].is_ascii_digit() {
                break;
            }
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        let mut digits = 0;
        let mut end = i;
        let mut seps = 0;
        while i < n {
            let b = bytes[i];
            if b.is_ascii_digit() {
                digits += 1;
                i += 1;
                end = i;
                seps = 0;
            } else if matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'/') && seps < 2 {
                seps += 1;
                i += 1;
            } else {
                break;
            }
        }
        f(start, end, digits);
        i = i.max(end);
    }
}

/// A capture buffer for a rule whose value takes a capture search: one with a `secret` group
/// whose bounds do not follow from the match ([`CompiledRule::value_span`]).
fn captures_for(rule: &CompiledRule) -> Option<regex_automata::util::captures::Captures> {
    (rule.secret_group.is_some() && rule.value_span.is_none()).then(|| rule.regex.create_captures())
}

/// The rule's first match in `input` and its value's span: the `secret` group (by a capture
/// search into `caps`, from [`captures_for`], or read from the match), else the whole match.
///
/// A rule whose regex has its value's length bound dropped ([`CompiledRule::bounded`]), searched
/// over more bytes than the bound, finds the match first: one no longer than the bound has a
/// value no longer either, which is the pattern's own, and only then is the value looked for
/// in it. A longer one (a long run of value bytes) is searched again with the pattern as
/// written, without a capture search of the run first.
fn next_value(
    rule: &CompiledRule,
    bytes: &[u8],
    input: &regex_automata::Input<'_>,
    caps: &mut Option<regex_automata::util::captures::Captures>,
) -> Option<(Range<usize>, (usize, usize))> {
    let Some(b) = rule
        .bounded
        .as_ref()
        .filter(|b| input.get_span().len() > b.max_value)
    else {
        // No bound dropped, or no match in `input` long enough to pass it.
        return search_value(rule, &rule.regex, bytes, input, caps);
    };
    let m = rule.regex.search(input)?;
    if m.len() > b.max_value {
        if let Some(exact) = rule.as_written() {
            let mut caps = caps.as_ref().map(|_| exact.create_captures());
            return search_value(rule, exact, bytes, input, &mut caps);
        }
    }
    if caps.is_none() {
        return Some((m.range(), value_in(rule, bytes, m.range())));
    }
    let found = input
        .clone()
        .range(m.range())
        .anchored(regex_automata::Anchored::Yes);
    search_value(rule, &rule.regex, bytes, &found, caps)
}

/// [`next_value`] with one of the rule's regexes.
fn search_value(
    rule: &CompiledRule,
    regex: &regex_automata::meta::Regex,
    bytes: &[u8],
    input: &regex_automata::Input<'_>,
    caps: &mut Option<regex_automata::util::captures::Captures>,
) -> Option<(Range<usize>, (usize, usize))> {
    match (caps, rule.secret_group) {
        (Some(caps), Some(g)) => {
            regex.search_captures(input, caps);
            let m = caps.get_match()?;
            let value = caps
                .get_group(g)
                .map_or((m.start(), m.end()), |v| (v.start, v.end));
            Some((m.range(), value))
        }
        // No capture engine at all: no group, or one read from the match.
        _ => {
            let m = regex.search(input)?;
            Some((m.range(), value_in(rule, bytes, m.range())))
        }
    }
}

/// The value in the match `m` of a rule searched without captures: read from the match
/// ([`CompiledRule::value_span`]), or the whole match.
fn value_in(rule: &CompiledRule, bytes: &[u8], m: Range<usize>) -> (usize, usize) {
    match &rule.value_span {
        Some(v) => v.within(bytes, m.start, m.end),
        None => (m.start, m.end),
    }
}

/// The bytes a digit rule's window around the cluster `start..end` reads: what
/// [`Engine::run_window`] searches for it ([`window_end`], to the token's end only for a rule
/// that also has keywords).
fn digit_window(text: &str, rule: &CompiledRule, start: usize, end: usize) -> Range<usize> {
    let (s, e) = rule.window(start, end);
    s..window_end(text, e, !rule.keywords.is_empty())
}

/// How far a window ending at `e` is searched: to the end of its token ([`token_end`]) when
/// `to_token_end`, and [`TRAIL`] bytes on (snapped to a char boundary), so a rule's closing
/// context (a delimiter, `[ .-][^0-9]` after a number) is inside the span. The regex sees the
/// whole text around the span (`Input::range`): `$` holds only at the real end of the text,
/// never at a window's edge.
fn window_end(text: &str, e: usize, to_token_end: bool) -> usize {
    let e = if to_token_end {
        token_end(text.as_bytes(), e)
    } else {
        e
    };
    let mut end = (e + TRAIL).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    end
}

/// Whether `at` follows an escape that ends in a letter or digit: `\n`, `\t` or `\r` as
/// written in a string literal, or a `%XX` percent escape.
fn after_escape(bytes: &[u8], at: usize) -> bool {
    let b = |k: usize| at.checked_sub(k).map(|i| bytes[i]);
    backslash_escape_ends_at(bytes, at)
        || (b(3) == Some(b'%')
            && b(2).is_some_and(|c| c.is_ascii_hexdigit())
            && b(1).is_some_and(|c| c.is_ascii_hexdigit()))
}

/// Whether a `\n`, `\t` or `\r` escape ends right before `end`.
fn backslash_escape_ends_at(bytes: &[u8], end: usize) -> bool {
    end >= 2
        && end <= bytes.len()
        && bytes[end - 2] == b'\\'
        && matches!(bytes[end - 1], b'n' | b't' | b'r')
}

/// Whether `at` is the letter of a `\n`, `\t` or `\r` escape (not of an escaped backslash
/// followed by a letter, `\\n`).
fn escape_letter_at(bytes: &[u8], at: usize) -> bool {
    backslash_escape_ends_at(bytes, at + 1) && (at < 2 || bytes[at - 2] != b'\\')
}

/// Whether the rule, searched anchored over `value` alone, finds exactly `value` as its value.
fn whole_value(rule: &CompiledRule, value: &[u8]) -> bool {
    let input = regex_automata::Input::new(value).anchored(regex_automata::Anchored::Yes);
    matches!(
        next_value(rule, value, &input, &mut captures_for(rule)),
        Some((_, (0, e))) if e == value.len()
    )
}

/// Bytes of closing context a window reads past its token; the longest a rule needs is two.
const TRAIL: usize = 2;

/// Whether a digit rule can match around the cluster `start..end`. A test on the text around it
/// looks at what the rule's own window reads ([`digit_window`]), so it is exact for what the
/// rule can find there.
fn precheck(pc: Precheck, text: &str, rule: &CompiledRule, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    match pc {
        Precheck::UpperAround => {
            start > 0
                && bytes[start - 1].is_ascii_uppercase()
                && bytes.get(end).is_some_and(u8::is_ascii_uppercase)
        }
        Precheck::Dotted => {
            let w = &bytes[digit_window(text, rule, start, end)];
            memchr::memchr_iter(b'.', w).any(|i| {
                i > 0 && w[i - 1].is_ascii_digit() && w.get(i + 1).is_some_and(u8::is_ascii_digit)
            })
        }
        Precheck::DottedQuad => {
            let c = &bytes[start..end];
            let mut dots = 0;
            for i in 1..c.len().saturating_sub(1) {
                if c[i] == b'.' && c[i - 1].is_ascii_digit() && c[i + 1].is_ascii_digit() {
                    dots += 1;
                    if dots == 3 {
                        return true;
                    }
                }
            }
            false
        }
        Precheck::CountryCode => bytes[digit_window(text, rule, start, end)]
            .windows(4)
            .any(|w| {
                w[0].is_ascii_uppercase()
                    && w[1].is_ascii_uppercase()
                    && w[2].is_ascii_digit()
                    && w[3].is_ascii_digit()
            }),
        Precheck::LetterAfter => {
            let mut j = end;
            if bytes.get(j) == Some(&b' ') || bytes.get(j) == Some(&b'-') {
                j += 1;
            }
            bytes.get(j).is_some_and(u8::is_ascii_alphabetic)
        }
        Precheck::IntlPrefix => {
            let w = digit_window(text, rule, start, end);
            memchr::memchr2_iter(b'+', b'0', &bytes[w.clone()]).any(|i| {
                let i = w.start + i;
                match bytes[i] {
                    b'+' => bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
                    // `\b00` and the calling code's first digit: `,00:15` in a CSV is no prefix.
                    _ => {
                        bytes.get(i + 1) == Some(&b'0')
                            && bytes.get(i + 2).is_some_and(u8::is_ascii_digit)
                            && (i == 0
                                || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
                    }
                }
            })
        }
        // The rule's matches put a separator the clusters join on between digit groups, so
        // the cluster holding a match's digits holds it too (and triggers on its own).
        Precheck::Separated => !bytes[start..end].iter().all(u8::is_ascii_digit),
        Precheck::Ipv6 => {
            matches!(bytes[start], b'2' | b'3')
                && bytes[start..(start + 5).min(bytes.len())].contains(&b':')
                && (start == 0 || !bytes[start - 1].is_ascii_alphanumeric())
        }
        Precheck::Base58 => {
            matches!(bytes[start], b'1' | b'3')
                && (start == 0 || !bytes[start - 1].is_ascii_alphanumeric())
                && bytes[start..]
                    .iter()
                    .take(36)
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count()
                    >= 26
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_digit_test_is_exact() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b'a', b'b', b, b'c', b'd', b'e', b'f', b'g']);
            assert_eq!(digit_bytes(w) != 0, b.is_ascii_digit(), "byte {b}");
        }
        assert!(digit_bytes(u64::from_le_bytes(*b"abcdefgh")) == 0);
    }

    #[test]
    fn swar_digit_bytes_are_exact_per_byte() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                let mut w = *b"a9Z~ 0\x80.";
                w[lane] = b;
                let m = digit_bytes(u64::from_le_bytes(w));
                for (k, &c) in w.iter().enumerate() {
                    assert_eq!(
                        m >> (8 * k + 7) & 1 == 1,
                        c.is_ascii_digit(),
                        "{w:?} byte {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn clusters_join_separators() {
        let mut got = Vec::new();
        let text = b"call 415-555 2671 now, or 12 at 8.8.8.8"; // airlock:allow
        digit_clusters(text, |s, e, d| got.push((s, e, d)));
        assert_eq!(got, vec![(5, 17, 10), (26, 28, 2), (32, 39, 4)]);
    }

    fn engine() -> &'static Engine {
        static E: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
        E.get_or_init(|| Engine::new().unwrap_or_else(|e| panic!("{e}")))
    }

    /// A keyword of one byte repeated is one prefilter hit per run, so its rule is searched in
    /// a window (not anchored at each hit): a value after a long run of that byte, at the
    /// run's edge or in the middle of text full of such runs, is found as before.
    #[test]
    fn a_rule_with_a_one_byte_keyword_finds_values_beside_long_runs() {
        let e = engine();
        let (_, rule) = rule(e, "twitter-bearer-token");
        assert!(!rule.anchored);
        let mut g = crate::inspect::testgen::Gen::new(5);
        let run = "A".repeat(1 << 16);
        for _ in 0..4 {
            let value = format!("{}{}", "A".repeat(21), g.chars('m', 80).unwrap_or_default());
            let text = format!(
                "{run} x\nTWITTER_BEARER_TOKEN={value} {run}\n{}",
                run.to_lowercase()
            );
            let found: Vec<_> = e
                .find_all(&text)
                .into_iter()
                .map(|f| (f.rule_id, f.span))
                .collect();
            let at = text.find(&value).unwrap_or_default();
            assert_eq!(found, vec![("twitter-bearer-token", at..at + value.len())]);
        }
    }

    /// The cluster rule read one byte at a time, to compare the skipping scan with.
    fn clusters_byte_by_byte(bytes: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let (start, mut end, mut digits, mut seps) = (i, i, 0, 0);
            while i < bytes.len() {
                if bytes[i].is_ascii_digit() {
                    digits += 1;
                    i += 1;
                    end = i;
                    seps = 0;
                } else if b" -.()/".contains(&bytes[i]) && seps < 2 {
                    seps += 1;
                    i += 1;
                } else {
                    break;
                }
            }
            out.push((start, end, digits));
        }
        out
    }

    fn rule<'e>(e: &'e Engine, id: &str) -> (u32, &'e CompiledRule) {
        match e.rules.iter().enumerate().find(|(_, r)| &*r.id == id) {
            Some((i, r)) => (i as u32, r),
            None => panic!("no rule {id}"),
        }
    }

    /// The first cluster of `s` where rule `id` matches in its window but the precheck `pc`
    /// says it cannot.
    fn hidden_match(s: &str, id: &str, pc: Precheck) -> Option<usize> {
        let e = engine();
        let (_, r) = rule(e, id);
        let bytes = s.as_bytes();
        let mut hidden = None;
        digit_clusters(bytes, |start, end, _| {
            let w = digit_window(s, r, start, end);
            let input = regex_automata::Input::new(bytes).range(w);
            if hidden.is_none()
                && r.regex.search(&input).is_some()
                && !precheck(pc, s, r, start, end)
            {
                hidden = Some(start);
            }
        });
        hidden
    }

    /// A match of rule `id` that a cluster with enough digits finds in its window, but that no
    /// such cluster whose precheck passes has inside its window: a match the precheck loses.
    fn lost_match(s: &str, id: &str) -> Option<Range<usize>> {
        let (_, r) = rule(engine(), id);
        let pc = r.precheck.unwrap_or_else(|| panic!("{id} has no precheck"));
        let bytes = s.as_bytes();
        let (mut found, mut kept) = (Vec::new(), Vec::new());
        digit_clusters(bytes, |start, end, digits| {
            if digits < r.digits.unwrap_or(0) as usize {
                return;
            }
            let w = digit_window(s, r, start, end);
            for m in r
                .regex
                .find_iter(regex_automata::Input::new(bytes).range(w.clone()))
            {
                found.push(m.range());
            }
            if precheck(pc, s, r, start, end) {
                kept.push(w);
            }
        });
        found
            .into_iter()
            .find(|m| !kept.iter().any(|w| w.start <= m.start && m.end <= w.end))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// The dotted precheck (for user rules) only skips clusters where ipv4 cannot match in
        /// its window.
        #[test]
        fn dotted_precheck_never_hides_a_match(s in "[0-9. a-z:/-]{0,80}") {
            proptest::prop_assert_eq!(hidden_match(&s, "ipv4-public", Precheck::Dotted), None);
        }

        /// The dotted-quad precheck only skips clusters where ipv4 cannot match in its window:
        /// a quad's digits and dots never span two clusters.
        #[test]
        fn dotted_quad_precheck_never_hides_a_match(
            s in "([a-z :/-]{0,3}[0-9]{1,4}([.][0-9]{1,4}){0,4}[. ]{0,2}){1,5}"
        ) {
            let hidden = hidden_match(&s, "ipv4-public", Precheck::DottedQuad);
            proptest::prop_assert_eq!(hidden, None);
        }

        /// The country-code precheck only skips clusters where no IBAN can match in the window.
        #[test]
        fn country_code_precheck_never_hides_a_match(
            s in "([a-zA-Z :,]{0,3}[A-Z]{2}[0-9]{2}([ -]?[A-Z0-9]{4}){0,7}[ -]?[0-9a-z]{0,5}){1,3}"
        ) {
            proptest::prop_assert_eq!(hidden_match(&s, "iban", Precheck::CountryCode), None);
        }

        /// The international-prefix precheck only skips clusters where the rule cannot match
        /// in its window.
        #[test]
        fn intl_prefix_precheck_never_hides_a_match(s in "[0-9+ ().a-z_-]{0,60}") {
            let hidden = hidden_match(&s, "phone-international", Precheck::IntlPrefix);
            proptest::prop_assert_eq!(hidden, None);
        }

        /// The separated precheck loses no match: the cluster holding a match's digits holds
        /// its separators too.
        #[test]
        fn separated_precheck_never_hides_a_match(
            s in "([a-z:,(]{0,2} ?[0-9]{1,4}[ .-]{0,2}[0-9]{2,4}[ .\t-][0-9]{2,4}([ .-][0-9]{2}){0,3}[ )]?){1,4}"
        ) {
            for id in ["us-ssn", "ca-sin", "phone-fr", "phone-jp"] {
                proptest::prop_assert_eq!(lost_match(&s, id), None, "{}", id);
            }
        }

        /// Phone numbers have spaces, dots, dashes or slashes between their digit groups, never
        /// a tab or a line break: numbers on two lines of a table are not one number.
        #[test]
        fn phone_matches_never_cross_a_tab_or_a_line(s in "[0-9 \t\n()+./-]{0,40}") {
            for r in engine().rules.iter().filter(|r| &*r.family == "phone") {
                for m in r.regex.find_iter(s.as_bytes()) {
                    let text = &s[m.range()];
                    proptest::prop_assert!(!text.contains(['\n', '\t']), "{} {:?}", r.id, text);
                }
            }
        }

        /// Skipping by the digit-block map finds the same clusters as reading every byte.
        #[test]
        fn digit_block_map_finds_every_cluster(s in "([a-z ]{0,700}[0-9 .()/-]{0,12}[a-z0-9]{0,3}){0,6}") {
            let bytes = s.as_bytes();
            let mut blocks = Vec::new();
            engine().keywords.find(bytes, &mut Vec::new(), &mut blocks);
            let mut fast = Vec::new();
            digit_clusters_in(bytes, &blocks, |a, b, c| fast.push((a, b, c)));
            proptest::prop_assert_eq!(fast, clusters_byte_by_byte(bytes));
        }

        /// Every PAN the regex finds sits in a digit cluster with an uppercase letter each side.
        #[test]
        fn pan_matches_pass_their_precheck(s in "[A-Z]{0,8}[0-9]{0,6}[A-Z ]{0,3}[a-zA-Z0-9 .-]{0,12}") {
            let e = engine();
            let (_, r) = rule(e, "in-pan");
            let bytes = s.as_bytes();
            let mut clusters = Vec::new();
            digit_clusters(bytes, |start, end, _| clusters.push((start, end)));
            for m in r.regex.find_iter(bytes) {
                let inside = clusters.iter().find(|&&(cs, ce)| cs < m.end() && m.start() < ce);
                let ok = inside.is_some_and(|&(cs, ce)| precheck(Precheck::UpperAround, &s, r, cs, ce));
                proptest::prop_assert!(ok, "{s:?}");
            }
        }
    }

    /// A random AWS key id can have few distinct characters: one a test generated (below, with
    /// `4` spelled `F` so the file holds no key) has 2.87 bits a char and was missed under the
    /// old floor of 3.0. Repeating placeholders stay below the floor.
    #[test]
    fn a_random_aws_key_id_with_few_distinct_characters_is_found() {
        let e = engine();
        let id = format!("AKIA{}", "ETRIIFRJIAFIIWKK".replace('F', "4"));
        let text = format!("aws_access_key_id = {id}");
        let rules: Vec<_> = e.find_all(&text).into_iter().map(|f| f.rule_id).collect();
        assert_eq!(rules, ["aws-access-key-id"], "{text}");
        for tail in ["ABCD".repeat(4), "X".repeat(16)] {
            let text = format!("aws_access_key_id = AKIA{tail}");
            let found = e.find_all(&text);
            assert!(
                found.iter().all(|f| f.rule_id != "aws-access-key-id"),
                "{text}"
            );
        }
    }

    /// QA: `"keys:\nAKIA…"` in a JSON file and `%3Dghp_…` in a URL were missed, since the
    /// rules' leading `\b` read the escape's last letter as part of the word.
    #[test]
    fn a_key_right_after_an_escape_is_found() {
        let mut g = crate::inspect::testgen::Gen::new(41);
        let e = engine();
        let aws = format!("AKIA{}", "JSHSRURQRLNRCZVK");
        let gh = g.github("ghp_");
        for (text, value) in [
            (format!(r#"{{"notes": "keys:\n{aws}\n"}}"#), &aws),
            (format!(r#"s = "line\t{aws}""#), &aws),
            (format!("next=%2Fcb%3Fk%3D{gh}&x=1"), &gh),
            (
                format!("redirect=https%3A%2F%2Fa.io%2F%3Ftoken%3D{gh}"),
                &gh,
            ),
        ] {
            let found: Vec<_> = e
                .find_all(&text)
                .into_iter()
                .map(|f| &text[f.span.clone()])
                .collect();
            assert!(found.contains(&value.as_str()), "{text}: {found:?}");
        }
        // Still a whole word: inside a longer token, or after a `%` escape cut short.
        for text in [format!("x{aws}"), format!("9{gh}"), format!("%3{aws}")] {
            let found: Vec<_> = e
                .find_all(&text)
                .into_iter()
                .filter(|f| matches!(f.rule_id, "aws-access-key-id" | "github-pat"))
                .map(|f| f.rule_id)
                .collect();
            assert!(found.is_empty(), "{text}: {found:?}");
        }
    }

    /// A value right after an escape's letter starts after it: an email in a string literal
    /// after `\n` is the address, not `n` and the address. An escaped backslash before a
    /// letter is no escape.
    #[test]
    fn a_value_after_an_escape_letter_starts_after_it() {
        let e = engine();
        // Put together here, so the file itself holds no address to find.
        let email = ["maria.lopez", "contoso-mail.com"].join("@");
        let spans = |text: &str| -> Vec<String> {
            e.find_all(text)
                .into_iter()
                .filter(|f| f.rule_id == "email")
                .map(|f| text[f.span.clone()].to_string())
                .collect()
        };
        for esc in ["\\n", "\\t", "\\r"] {
            let text = format!(r#"msg = "hi{esc}{email}""#);
            assert_eq!(spans(&text), [email.as_str()], "{text}");
        }
        let text = format!(r#"path = "C:\\n{email}""#);
        assert_eq!(spans(&text), [format!("n{email}")], "{text}");
    }

    /// A window's edge is not the end of the text: the phone's window stops inside the card
    /// number on the next line, and the first twelve digits it cuts off there (a valid Aadhaar
    /// number on their own) are not a finding. Searching a cut-off slice let `$` match at the
    /// cut. (The text is put together here so the file itself holds no number to find.)
    #[test]
    fn a_window_edge_is_not_the_end_of_the_text() {
        let phone = ["+91", "97154", "99590"].join(" ");
        let card = ["4004", "1235", "9229", "5521"].join(" ");
        let text = format!("WhatsApp me at {phone}\ntest card {card} should be rejected\n");
        let found = engine().find_all(&text);
        assert!(found.iter().all(|f| f.rule_id != "in-aadhaar"), "{found:?}");
        assert!(
            found.iter().any(|f| f.rule_id == "phone-international"),
            "{found:?}"
        );
    }

    /// In a table of numbers the clusters' windows are searched in groups: a card or an IBAN in
    /// one cell is still found, wherever it falls in a group, and the plain numbers around it
    /// are not findings.
    #[test]
    fn values_in_a_table_of_numbers_are_found_in_any_column() {
        let mut g = crate::inspect::testgen::Gen::new(3);
        for column in 0..6 {
            let mut cells: Vec<String> = [
                "2025-03-14",
                "03:32:16",
                "866018172",
                "627.72",
                "18370",
                "7.373892",
            ]
            .map(String::from)
            .into();
            for (value, rule) in [
                (g.card("visa"), "payment-card"),
                (g.expand("{{iban:DE}}").expect("iban"), "iban"),
            ] {
                cells[column] = value.clone();
                let rows = vec![cells.join(","); 5].join("\n");
                let found = engine().find_all(&rows);
                let hits = found.iter().filter(|f| f.rule_id == rule).count();
                assert_eq!(hits, 5, "{rule} in column {column}: {found:?}");
                assert_eq!(found.len(), 5, "{rule} in column {column}: {found:?}");
            }
        }
    }

    /// A phone format that needs a context word is found with the word as far back as `check`
    /// looks (96 bytes before the value) or as far on (the word ending 48 bytes after it),
    /// however much text lies between, and not one byte further: the cluster pass skips the
    /// rule only where `check` would have dropped it.
    #[test]
    fn context_gate_reaches_exactly_as_far_as_the_check() {
        let number = ["612", "345", "678"].join(" ");
        for gap in [0usize, 40, 90, 91, 92, 200] {
            // `tel `, then `gap` bytes of filler and a space, then the number.
            let text = format!("tel {} {number} ok\n", "x".repeat(gap));
            let at = text.find(&number).expect("the number");
            let found = engine().find_all(&text);
            let hit = found.iter().any(|f| f.rule_id == "phone-es");
            assert_eq!(hit, at <= 96, "word {at} bytes before: {found:?}");
        }
        for gap in [0usize, 20, 42, 43, 44, 200] {
            // The number, a space, `gap` bytes of filler, a space and `tel`.
            let text = format!("ok {number} {} tel\n", "x".repeat(gap));
            let word_end = text.rfind("tel").expect("the word") + 3;
            let after = word_end - (text.find(&number).expect("the number") + number.len());
            let found = engine().find_all(&text);
            let hit = found.iter().any(|f| f.rule_id == "phone-es");
            assert_eq!(
                hit,
                after <= 48,
                "word ending {after} bytes after: {found:?}"
            );
        }
    }

    /// Each finding of `e` in `text` as (rule index, span).
    fn rule_spans(e: &Engine, text: &str) -> Vec<(u32, Range<usize>)> {
        e.find_all(text)
            .into_iter()
            .map(|f| (rule(e, f.rule_id).0, f.span))
            .collect()
    }

    /// The findings of an engine that searches every weak rule everywhere (min_confidence 0,
    /// so nothing is gated), cut at this engine's min_confidence and resolved as it resolves.
    fn ungated_findings(text: &str) -> Vec<(u32, Range<usize>)> {
        static REFERENCE: std::sync::OnceLock<Engine> = std::sync::OnceLock::new();
        let reference = REFERENCE.get_or_init(|| {
            let overrides = RuleOverrides {
                min_confidence: Some(0.0),
                ..Default::default()
            };
            let e = EngineBuilder::new().overrides(overrides).build();
            e.unwrap_or_else(|e| panic!("{e}"))
        });
        assert!(reference.digit_rules.iter().all(|d| d.gate == Gate::Open));
        let e = engine();
        let mut raw = Vec::new();
        reference.collect(text, true, &mut raw);
        raw.retain(|r| r.confidence >= e.min_confidence);
        e.resolve(&mut raw);
        raw.into_iter().map(|r| (r.rule, r.span)).collect()
    }

    /// The gate changes no finding on text full of numbers in every national format, ids and
    /// tables, with context words near some and far from others: what an engine that searches
    /// every weak rule everywhere finds at min_confidence 0.5, this one finds.
    #[test]
    fn the_context_gate_changes_no_finding() {
        let mut g = crate::inspect::testgen::Gen::new(11);
        let numbers = [
            "6{{d:2}} {{d:3}} {{d:3}}",
            "3{{d:2}}-{{d:3}}-{{d:4}}",
            "0{{d:3}} {{d:6}}",
            "07{{d:3}} {{d:6}}",
            "06-{{d:8}}",
            "9{{d:4}} {{d:5}}",
            "04{{d:2}} {{d:3}} {{d:3}}",
            "0{{d:2}}/{{d:7}}",
            "{{d:3}} {{d:3}} {{d:3}}",
            "{{d:9}}",
            "{{d:12}}",
            "{{d:3}}-{{d:2}}-{{d:4}}",
            "2025-{{d:2}}-{{d:2}}",
            "{{d:2}}.{{d:6}}",
        ];
        let words = [
            "tel", "phone", "call", "mobile", "ssn", "sin", "contact", "order", "the", "and",
            "was", "telefono", "bellen", "number", "invoice", "id",
        ];
        let seps = [" ", " ", ", ", "\n", "\t", ",", " - ", "; "];
        let mut text = String::new();
        while text.len() < 200_000 {
            if g.below(3) == 0 {
                let template = *g.pick(&numbers);
                let n = g.expand(template);
                text.push_str(&n.unwrap_or_else(|e| panic!("{e}")));
            } else {
                for _ in 0..1 + g.below(12) {
                    let w = *g.pick(&words);
                    text.push_str(w);
                    text.push(' ');
                }
            }
            let sep = *g.pick(&seps);
            text.push_str(sep);
        }
        let e = engine();
        let gated = rule_spans(e, &text);
        let reference = ungated_findings(&text);
        assert!(reference.len() > 400, "{} findings", reference.len());
        if gated != reference {
            let only = |a: &[(u32, Range<usize>)], b: &[(u32, Range<usize>)]| {
                a.iter()
                    .filter(|x| !b.contains(x))
                    .map(|(r, sp)| {
                        format!(
                            "{} {:?} {:?}",
                            e.rules[*r as usize].id,
                            sp,
                            &text[sp.clone()]
                        )
                    })
                    .take(5)
                    .collect::<Vec<_>>()
            };
            panic!(
                "gated only: {:?}\nungated only: {:?}",
                only(&gated, &reference),
                only(&reference, &gated)
            );
        }
    }

    /// An engine whose rules all take the capture search finds what this one finds, where 55
    /// rules read their value from the match instead: on every rule's examples and negatives,
    /// expanded five times over, one after another.
    #[test]
    fn values_read_from_the_match_change_no_finding() {
        let e = engine();
        let mut read = Vec::new();
        let captured = engine_with(|rules| {
            read = (0..rules.len() as u32)
                .filter(|&i| rules[i as usize].value_span.is_some())
                .collect();
            rules.iter_mut().for_each(|r| r.value_span = None);
        });
        assert!(read.len() >= 40, "{} rules", read.len());
        let mut g = crate::inspect::testgen::Gen::new(23);
        let mut text = String::new();
        for _ in 0..5 {
            for r in &e.rules {
                for t in r.examples.iter().chain(&r.negatives) {
                    text.push_str(&g.expand(t).unwrap_or_else(|e| panic!("{e}")));
                    let sep = g.pick(&["\n", " ", "; ", "\t", ", "]);
                    text.push_str(sep);
                }
            }
        }
        let (now, before) = (rule_spans(e, &text), rule_spans(&captured, &text));
        let from_match = now.iter().filter(|(r, _)| read.contains(r)).count();
        assert!(
            from_match > 250,
            "{from_match} findings of rules read from the match"
        );
        assert!(now == before, "findings differ from the capture search's");
    }

    /// The built-in rules, changed by `change`, in an engine like [`engine`]'s.
    fn engine_with(change: impl FnOnce(&mut Vec<CompiledRule>)) -> Engine {
        let mut rules: Vec<CompiledRule> = rules::embedded_rules()
            .and_then(|specs| specs.into_iter().map(rules::compile).collect())
            .unwrap_or_else(|e: InspectError| panic!("{e}"));
        change(&mut rules);
        Engine::from_rules(rules, engine().min_confidence, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An engine whose rules all search with their patterns as written finds what this one
    /// finds, where the rules with a long value search without its length bound
    /// ([`super::super::value_bound`]): on every such rule's examples with the value cut or
    /// stretched to about its bound, with and without `&` in it (a byte that may end the
    /// generic assignments' values), where the relaxed pattern alone would take more.
    #[test]
    fn dropped_value_bounds_change_no_finding() {
        let e = engine();
        let mut relaxed = Vec::new();
        let written = engine_with(|rules| {
            for (i, r) in rules.iter_mut().enumerate() {
                if let Some(max) = r.bounded.as_ref().map(|b| b.max_value) {
                    relaxed.push((i as u32, max));
                    r.regex = (r.as_written().cloned())
                        .unwrap_or_else(|| panic!("{} does not build", r.id));
                    r.bounded = None;
                }
            }
        });
        assert!(relaxed.len() >= 40, "{} rules", relaxed.len());
        let mut g = crate::inspect::testgen::Gen::new(29);
        let (mut texts, mut at_bound, mut past_bound) = (0, 0, 0);
        for &(ri, max) in &relaxed {
            let r = &e.rules[ri as usize];
            for ex in &r.examples {
                let text = g.expand(ex).unwrap_or_else(|e| panic!("{e}"));
                let Some((_, span)) = rule_spans(e, &text).into_iter().find(|f| f.0 == ri) else {
                    panic!("{}: no finding in its example {text:?}", r.id);
                };
                let value = &text[span.clone()];
                for amp in [false, true] {
                    let mut fill: Vec<char> = value[value.len() / 2..].chars().collect();
                    if amp {
                        fill.insert(fill.len() / 2, '&');
                    }
                    for len in [max - 2, max - 1, max, max + 1, max + 2, max + 9, 2 * max] {
                        let grown: String = (value.chars().chain(fill.iter().copied().cycle()))
                            .take(len)
                            .collect();
                        let t = format!("{}{grown}{}", &text[..span.start], &text[span.end..]);
                        let now = rule_spans(e, &t);
                        assert!(
                            now == rule_spans(&written, &t),
                            "{}: findings differ on {t:?}",
                            r.id
                        );
                        texts += 1;
                        let own = |f: &&(u32, Range<usize>)| f.0 == ri;
                        at_bound += now.iter().filter(own).filter(|f| f.1.len() == max).count();
                        let long = r.regex.find_iter(t.as_bytes()).any(|m| m.len() > max + 8);
                        past_bound += usize::from(long);
                    }
                }
            }
        }
        assert!(texts > 500, "{texts} texts");
        // Values right at the bound are found, and most rules' longer values reach the second
        // search.
        assert!(at_bound > 30, "{at_bound} findings at the bound");
        assert!(past_bound > 100, "{past_bound} texts past the bound");
    }

    /// Past 4,096 spent hits the index drops them; the answers stay those of a search of each
    /// region, also for regions that start after where the index was asked to cover from.
    #[test]
    fn context_hits_stay_right_over_a_long_text() {
        let e = engine();
        let words = &e.context;
        let ac = words.ac.as_ref().expect("gated rules have words");
        let text = "tel x phone yy ssn zzz mob ".repeat(2_000);
        let bytes = text.as_bytes();
        let mut hits = ContextHits::default();
        let mut g = crate::inspect::testgen::Gen::new(5);
        let mut at = 0;
        while at + 200 < bytes.len() {
            let region = at + g.below(40)..at + 40 + g.below(160);
            let bit = 1u64 << g.below(4);
            let want = ac
                .find_overlapping_iter(&bytes[region.clone()])
                .any(|m| words.masks[m.pattern().as_usize()] & bit != 0);
            assert_eq!(
                hits.any(words, bytes, at, region.clone(), bit),
                want,
                "{region:?}"
            );
            at += g.below(30);
        }
        assert!(
            hits.hits.len() < 4_096 * 2 + 64,
            "{} hits kept",
            hits.hits.len()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// The context index, asked about regions mostly in cluster order (now and then one
        /// further back), answers what a search of each region on its own would.
        #[test]
        fn context_hits_match_a_search_of_each_region(
            text in "([a-z ]{0,30}(tel|Phone|ssn|MOBIL|mob|t)[a-z ]{0,9}){0,12}",
            asks in proptest::collection::vec((-10isize..40, 0usize..120, 0usize..3), 0..24),
        ) {
            let e = engine();
            let words = &e.context;
            let bytes = text.as_bytes();
            let mut hits = ContextHits::default();
            let mut at = 0usize;
            for (step, len, which) in asks {
                at = at.saturating_add_signed(step);
                let cover_from = at.min(bytes.len());
                let region = cover_from..(cover_from + len).min(bytes.len());
                let bit = 1u64 << which;
                let want = words.ac.as_ref().is_some_and(|ac| {
                    ac.find_overlapping_iter(&bytes[region.clone()])
                        .any(|m| words.masks[m.pattern().as_usize()] & bit != 0)
                });
                let got = hits.any(words, bytes, cover_from, region.clone(), bit);
                proptest::prop_assert_eq!(got, want, "{:?} bit {}", region, which);
            }
        }
    }

    /// A group's span reaches back as far as any member's window, not just its first member's:
    /// here a short cluster inside an IBAN (`1234`, between capitals) opens the group, and the
    /// IBAN's long digit run, whose window starts 40 bytes back, joins it.
    #[test]
    fn a_group_reaches_back_as_far_as_its_widest_member() {
        // FR, check digits, then a BBAN with letters: the check digits are computed here.
        let bban = "ABCD1234EFG123456789012";
        let digits: String = format!("{bban}FR00")
            .chars()
            .map(|c| match c.to_digit(36) {
                Some(v) => v.to_string(),
                None => String::new(),
            })
            .collect();
        let rem = digits
            .bytes()
            .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
        let iban = format!("FR{:02}{bban}", 98 - rem);
        let text = format!("transfer to {iban} today");
        let found = engine().find_all(&text);
        assert!(
            found.iter().any(|f| f.rule_id == "iban"),
            "{text}: {found:?}"
        );
    }

    /// A value longer than the rule's `after` still ends at its own delimiter, whether the
    /// rule runs anchored at its keyword or in a window.
    #[test]
    fn long_values_run_past_the_window() {
        let e = engine();
        let mut g = crate::inspect::testgen::Gen::new(11);
        for (rule, len, template) in [
            ("generic-api-key", 150, "api_key = \"{}\"\n"),
            ("generic-api-key", 250, "ACME_API_KEY: '{}' # prod\n"),
            ("bearer-token", 395, "Authorization: Bearer {}\n"),
        ] {
            assert!(rule_is_anchored(e, rule), "{rule}");
            let value = g.chars('m', len).unwrap_or_else(|| panic!("class m"));
            let text = template.replace("{}", &value);
            let found = e.find_all(&text);
            let start = text.find(&value).unwrap_or(0);
            assert!(
                found
                    .iter()
                    .any(|f| f.rule_id == rule && f.span == (start..start + len)),
                "{rule} {len}: {found:?}"
            );
        }
    }

    fn rule_is_anchored(e: &Engine, id: &str) -> bool {
        e.rules.iter().any(|r| &*r.id == id && r.anchored)
    }

    #[test]
    fn context_words_match_any_case_at_word_starts() {
        let words = [b"call".to_vec(), b"tel".to_vec()];
        assert!(context_hit(b"please CALL me", &words, false));
        assert!(context_hit(b"Telefon: ", &words, false));
        assert!(!context_hit(b"Telefon: ", &words, true));
        assert!(!context_hit(b"locally", &words, false));
        assert!(context_hit(b"tel", &words, true));
        assert!(!context_hit(b"te", &words, false));
    }

    #[test]
    fn mask_never_shows_more_than_four_or_the_tail() {
        assert_eq!(mask("ghp_abcdefghijklmnopqrstuvwxyz0123456789"), "ghp_****");
        assert_eq!(mask("short"), "s****");
        assert_eq!(mask("abc"), "****");
    }
}
