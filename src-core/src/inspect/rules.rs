//! Rules as data: the TOML schema, user overrides, and compilation into [`CompiledRule`]s.

use super::validate::Validator;
use super::value_bound;
use super::value_span::ValueSpan;
use super::InspectError;
use serde::{Deserialize, Serialize};

/// The rule files compiled into the binary.
pub const EMBEDDED_RULE_FILES: &[(&str, &str)] = &[
    (
        "rules/secrets.toml",
        include_str!("../../rules/secrets.toml"),
    ),
    ("rules/pii.toml", include_str!("../../rules/pii.toml")),
];

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// A credential: an API key, a token, a private key, a password.
    Secret,
    /// Personal data: contact details, identity numbers, financial identifiers.
    Pii,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Pii => "pii",
        }
    }
}

/// A cheap test run on a digit cluster before a digit-triggered rule's regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Precheck {
    /// A letter follows the digits (after at most one space): DNI, NIE, NINO, PAN.
    LetterAfter,
    /// The cluster starts an IPv6 group: `2`/`3` then hex and a colon within five bytes.
    Ipv6,
    /// The cluster starts a long alphanumeric token with `1` or `3`: Base58 addresses.
    Base58,
    /// An uppercase ASCII letter right before and right after the cluster: Indian PANs.
    UpperAround,
    /// A digit, `.` and a digit in a row in the rule's window.
    Dotted,
    /// Three dots each between two digits inside the cluster itself: dotted quads. A quad's
    /// digits and dots always fall in one cluster, so a number with one or two decimal points
    /// (`627.72`, `2025.01.09`) is skipped without a regex pass.
    DottedQuad,
    /// Two uppercase ASCII letters then two digits, in a row in the rule's window: the country
    /// code and check digits that open an IBAN.
    CountryCode,
    /// A `+` before a digit, or `00` and a digit at a word start, in the rule's window:
    /// international phone numbers.
    IntlPrefix,
    /// The cluster holds a separator (space, `-`, `.`, `(`, `)`, `/`): formats whose digit
    /// groups are always written apart (`123-45-6789`), so a bare run of digits is none.
    Separated,
}

/// One rule as written in a rule file (`[[rule]]`) or in user config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub kind: Kind,
    /// Policy group, e.g. `aws`, `github`, `private_key`, `email`, `card`.
    pub family: String,
    #[serde(default)]
    pub description: String,
    /// Literal words; a hit starts the rule's regex on a window around it (ASCII case-insensitive).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Digit trigger: the rule runs on clusters of at least this many digits.
    #[serde(default)]
    pub digits: Option<u8>,
    #[serde(default)]
    pub precheck: Option<Precheck>,
    /// A digit rule searched on its own instead of through the automaton all digit rules share:
    /// for a pattern that multiplies that automaton's states (give it a selective `precheck`).
    #[serde(default)]
    pub solo: Option<bool>,
    /// Why a rule has no keywords (required then).
    #[serde(default)]
    pub reason: Option<String>,
    /// The pattern; a `secret` named group marks the value, else the whole match is the value.
    pub regex: String,
    #[serde(default)]
    pub validator: Option<String>,
    /// Minimum Shannon entropy (bits per byte) of the value.
    #[serde(default)]
    pub entropy: Option<f32>,
    /// Regexes; a value matching any of them is not reported.
    #[serde(default)]
    pub allowlist: Vec<String>,
    /// Skip the shared placeholder test (`your-key-here`, `xxxx`, `${VAR}` …). On for secrets.
    #[serde(default)]
    pub placeholder_check: Option<bool>,
    #[serde(default)]
    pub confidence: Option<f32>,
    /// Words near the match that raise confidence (Presidio-style context).
    #[serde(default)]
    pub context: Vec<String>,
    /// Words near the match that lower confidence.
    #[serde(default)]
    pub negative_context: Vec<String>,
    /// Bytes searched before the trigger.
    #[serde(default)]
    pub before: Option<usize>,
    /// Bytes searched after the trigger.
    #[serde(default)]
    pub after: Option<usize>,
    /// Higher wins when two findings overlap.
    #[serde(default)]
    pub priority: Option<i8>,
    /// Example templates that must be found (see `testgen`); never real values.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Look-alike templates that must not be found.
    #[serde(default)]
    pub negatives: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// Parses a rule file (`[[rule]]` tables).
pub fn parse_rule_file(toml_text: &str) -> Result<Vec<RuleSpec>, InspectError> {
    let file: RuleFile = toml::from_str(toml_text)
        .map_err(|e| InspectError::RuleFile(describe_toml_error(toml_text, &e)))?;
    Ok(file.rule)
}

/// A TOML parse error as "line N, column M: message", without the excerpt of the text that
/// toml's own message quotes, and with any secret the message still quotes (`invalid type:
/// string "…"`) masked: the text is a config or rule file, which may hold one.
pub fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let message = match crate::inspect::Engine::new() {
        Ok(engine) => engine.mask_findings(message).into_owned(),
        // The embedded rules always compile (a test checks); without them, say less.
        Err(_) => "invalid value".to_string(),
    };
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: {message}")
        }
        None => message,
    }
}

/// The embedded rules, parsed.
pub fn embedded_rules() -> Result<Vec<RuleSpec>, InspectError> {
    let mut all = Vec::new();
    for (name, text) in EMBEDDED_RULE_FILES {
        // Not `parse_rule_file`: its error masks secrets with an engine built from these rules.
        let file: RuleFile = toml::from_str(text)
            .map_err(|e| InspectError::RuleFile(format!("{name}: {}", e.message())))?;
        let mut rules = file.rule;
        all.append(&mut rules);
    }
    Ok(all)
}

/// User changes to the rule set; embed it in a config file (e.g. under `[inspect]`).
///
/// ```toml
/// disabled = ["ipv4-public"]
/// disabled_families = ["phone"]
/// min_confidence = 0.6
/// [[overrides]]
/// id = "generic-password"
/// entropy = 3.8
/// [[rules]]
/// id = "acme-token"
/// kind = "secret"
/// family = "acme"
/// keywords = ["acme_"]
/// regex = '''\bacme_[a-z0-9]{32}\b'''
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleOverrides {
    /// Rule ids turned off.
    pub disabled: Vec<String>,
    /// Families turned off.
    pub disabled_families: Vec<String>,
    /// Extra rules; one with an existing id replaces the embedded rule.
    pub rules: Vec<RuleSpec>,
    /// Field-level changes to existing rules.
    pub overrides: Vec<RuleOverride>,
    /// Findings below this confidence are dropped (default 0.5).
    pub min_confidence: Option<f32>,
    /// Regexes on the matched value that suppress any rule's finding.
    pub allowlist: Vec<String>,
    /// Report private, loopback and documentation IP addresses too.
    pub include_private_ips: bool,
}

impl RuleOverrides {
    /// Parses overrides from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, InspectError> {
        toml::from_str(text).map_err(|e| InspectError::RuleFile(describe_toml_error(text, &e)))
    }
}

/// Changes to one existing rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleOverride {
    pub id: String,
    pub confidence: Option<f32>,
    pub entropy: Option<f32>,
    /// Appended to the rule's allowlist.
    pub allowlist: Vec<String>,
    pub family: Option<String>,
    /// Appended to the rule's keywords.
    pub keywords: Vec<String>,
}

/// A rule ready to run.
#[derive(Debug)]
pub struct CompiledRule {
    pub id: Box<str>,
    pub kind: Kind,
    pub family: Box<str>,
    pub description: Box<str>,
    pub keywords: Vec<String>,
    pub digits: Option<u8>,
    pub precheck: Option<Precheck>,
    /// See [`RuleSpec::solo`].
    pub solo: bool,
    /// Searched over a span of the whole text (`Input::range`), never a cut-off slice, so `$`
    /// and `\b` see what really follows a window.
    pub regex: regex_automata::meta::Regex,
    /// Set when `regex` is the pattern with its value's length bound dropped
    /// ([`value_bound`]): its match stands when the value is at most `max_value` bytes long,
    /// and a longer one is searched again with this, the pattern as written.
    pub bounded: Option<Bounded>,
    /// The pattern as written (macros expanded).
    pub pattern: Box<str>,
    /// Every match starts with one of the keywords: a hit needs only an anchored search at the
    /// hit (no window), which stops after a few bytes when the text does not continue as a key.
    pub anchored: bool,
    pub secret_group: Option<usize>,
    /// The `secret` group's bounds follow from the match alone: no capture search is needed
    /// (see [`ValueSpan`]).
    pub value_span: Option<ValueSpan>,
    pub validator: Option<Validator>,
    pub entropy: Option<f32>,
    pub allowlist: Vec<regex::bytes::Regex>,
    pub placeholder_check: bool,
    pub confidence: f32,
    pub context: Vec<Vec<u8>>,
    pub negative_context: Vec<Vec<u8>>,
    pub before: usize,
    pub after: usize,
    pub priority: i8,
    pub examples: Vec<String>,
    pub negatives: Vec<String>,
}

/// A rule's own pattern, when its [`CompiledRule::regex`] has the value's bound dropped.
#[derive(Debug)]
pub struct Bounded {
    /// Built by [`CompiledRule::as_written`] at the first value past the bound: rare, and the
    /// bound's NFA states cost more to build than the rest of the rule.
    regex: std::sync::OnceLock<Option<regex_automata::meta::Regex>>,
    pub max_value: usize,
}

/// How rule regexes are built: [`pattern_builder`] with a 4 MB NFA size limit.
fn rule_builder() -> regex_automata::meta::Builder {
    pattern_builder(regex_automata::meta::Regex::config().nfa_size_limit(Some(4 << 20)))
}

impl CompiledRule {
    /// The rule's pattern as written: `regex` itself, or for a rule whose `regex` has the
    /// value's bound dropped, the pattern built at the first call. `None` if that cannot be
    /// built (a user rule whose bound passes the NFA size limit, which compiling the rule used
    /// to refuse): then the relaxed pattern's match stands, longer value and all, checks and
    /// all.
    pub fn as_written(&self) -> Option<&regex_automata::meta::Regex> {
        match &self.bounded {
            None => Some(&self.regex),
            Some(b) => (b.regex)
                .get_or_init(|| rule_builder().build(&self.pattern).ok())
                .as_ref(),
        }
    }

    /// The window this rule's regex runs on around a trigger (a keyword hit or a digit cluster)
    /// at `start..end`, before it is extended to where the search stops.
    pub fn window(&self, start: usize, end: usize) -> (usize, usize) {
        (start.saturating_sub(self.before), end + self.after)
    }
}

/// Connector between a name and its value: `NAME = "`, `name: '`, `"name": "`, `name => `.
const ASSIGN: &str = r#"[\w.\-(]{0,40}?["']?\s*(?:=>|:=|=|:)\s*["'`]?"#;
/// End of a token value whose last char may be `-` (where `\b` would fail).
const END: &str = r"(?:[^A-Za-z0-9_\-]|$)";

/// Whether a keyword is one byte repeated (ASCII case-insensitive): its occurrences overlap at
/// every offset of a longer run of that byte.
pub(crate) fn one_byte_keyword(word: &[u8]) -> bool {
    word.len() >= 2 && word.iter().all(|b| b.eq_ignore_ascii_case(&word[0]))
}

/// Whether every match of `pattern` begins with one of `keywords` (ASCII case-insensitive):
/// the pattern opens (after `\b` and a `secret` group) with a literal or an alternation of
/// literals, each starting with a keyword. A literal may hold optional chars and small sets of
/// chars (`api[_-]?key` stands for `api_key`, `api-key` and `apikey`, and each must start with a
/// keyword). Conservative: anything else is `false`.
pub fn starts_with_keyword(pattern: &str, keywords: &[String]) -> bool {
    let mut p = pattern;
    loop {
        if let Some(r) = p.strip_prefix("\\b") {
            p = r;
        } else if let Some(r) = p.strip_prefix("(?P<secret>") {
            p = r;
        } else {
            break;
        }
    }
    let keywords: Vec<String> = keywords.iter().map(|k| k.to_ascii_lowercase()).collect();
    let starts = |lits: Option<Vec<String>>| {
        lits.is_some_and(|lits| {
            lits.iter().all(|lit| {
                let lit = lit.to_ascii_lowercase();
                !lit.is_empty() && keywords.iter().any(|k| lit.starts_with(k.as_str()))
            })
        })
    };
    for open in ["(?i:", "(?:"] {
        if let Some(r) = p.strip_prefix(open) {
            let Some((alts, rest)) = group_alternatives(r) else {
                return false;
            };
            // The group (or a `secret` group around it) must not be optional or repeated
            // from zero.
            let rest = rest.trim_start_matches(')');
            return !rest.starts_with(['?', '*', '{'])
                && alts.iter().all(|alt| starts(literal_prefixes(alt)));
        }
    }
    starts(literal_prefixes(p))
}

/// The top-level alternatives of a group whose opening was just stripped, and the text after
/// its closing `)`. `|` and `)` inside a `[…]` set or after a `\\` do not count. `None` for a
/// nested group, a set that opens with `]` or holds another `[`, or no closing `)`.
fn group_alternatives(r: &str) -> Option<(Vec<&str>, &str)> {
    let mut alts = Vec::new();
    let (mut from, mut in_set, mut escaped) = (0, false, false);
    for (i, c) in r.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if in_set => return None,
            '[' => {
                // `[]…]` and `[^]…]` take the `]` as a char: too subtle to follow here.
                if r[i + 1..].trim_start_matches('^').starts_with(']') {
                    return None;
                }
                in_set = true;
            }
            ']' if in_set => in_set = false,
            '(' if !in_set => return None,
            '|' if !in_set => {
                alts.push(&r[from..i]);
                from = i + 1;
            }
            ')' if !in_set => {
                alts.push(&r[from..i]);
                return Some((alts, &r[i + 1..]));
            }
            _ => {}
        }
    }
    None
}

/// Most spellings one literal prefix may expand to before it is not worth checking.
const MAX_PREFIXES: usize = 64;

/// Every literal text a regex fragment can start with, up to its first operator that is not an
/// optional char or a set of plain chars (escapes undone; `\b` skipped, it matches no char).
/// `None` when a prefix could be empty or there would be too many.
fn literal_prefixes(p: &str) -> Option<Vec<String>> {
    let mut out = vec![String::new()];
    let mut chars = p.chars().peekable();
    loop {
        let atom: Vec<char> = match chars.peek().copied() {
            None => break,
            Some('\\') => {
                chars.next();
                match chars.next() {
                    // Word-boundary assertions match no char.
                    Some('b') | Some('B') | Some('<') | Some('>') => continue,
                    Some(n) if !n.is_ascii_alphanumeric() => vec![n],
                    _ => break,
                }
            }
            Some('[') => {
                chars.next();
                match char_set(&mut chars) {
                    Some(set) => set,
                    None => break,
                }
            }
            // A top-level `|` means the text may start with another alternative.
            Some('|') => return None,
            // The end of a `secret` group: an optional or repeated group is not certain.
            Some(')') => {
                chars.next();
                if matches!(chars.peek(), Some('?' | '*' | '{')) {
                    return None;
                }
                break;
            }
            Some(c) if "(*+?{}^$.".contains(c) => break,
            Some(c) => {
                chars.next();
                vec![c]
            }
        };
        match chars.peek() {
            // A repeat makes the atom uncertain (`*`, `{0,…}`): the prefix ends before it.
            Some('*') | Some('{') => break,
            Some('?') => {
                chars.next();
                out = extend(&out, &atom, true);
            }
            Some('+') => {
                out = extend(&out, &atom, false);
                break;
            }
            _ => out = extend(&out, &atom, false),
        }
        if out.len() > MAX_PREFIXES {
            return None;
        }
    }
    (out.len() <= MAX_PREFIXES && out.iter().all(|s| !s.is_empty())).then_some(out)
}

/// Every prefix followed by every char of `atom` (and, when `optional`, by nothing).
fn extend(prefixes: &[String], atom: &[char], optional: bool) -> Vec<String> {
    let mut next = Vec::new();
    for p in prefixes {
        if optional {
            next.push(p.clone());
        }
        for &c in atom {
            let mut s = p.clone();
            s.push(c);
            next.push(s);
        }
    }
    next
}

/// The chars of a `[…]` set whose `[` was just read, when it lists plain chars only (no
/// negation, ranges or classes); consumes through the `]`.
fn char_set(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Vec<char>> {
    let mut set = Vec::new();
    loop {
        match chars.next()? {
            ']' if !set.is_empty() => return Some(set),
            '^' if set.is_empty() => return None,
            '\\' => match chars.next()? {
                n if !n.is_ascii_alphanumeric() => set.push(n),
                _ => return None,
            },
            // A `-` between two chars is a range; first or last it is the char itself.
            '-' if !set.is_empty() && chars.peek() != Some(&']') => return None,
            '[' => return None,
            c => set.push(c),
        }
    }
}

fn expand_macros(regex: &str) -> String {
    regex.replace("{{assign}}", ASSIGN).replace("{{end}}", END)
}

fn compile_regex(rule: &str, pattern: &str) -> Result<regex::bytes::Regex, InspectError> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(4 << 20)
        .build()
        .map_err(|e| InspectError::Regex {
            rule: rule.to_string(),
            message: e.to_string(),
        })
}

/// A builder for rule patterns: ASCII classes (`\d`, `\w`), bytes rather than only UTF-8, and
/// `config`'s limits. Rule regexes and the digit rules' shared automaton are built alike.
pub(crate) fn pattern_builder(
    config: regex_automata::meta::Config,
) -> regex_automata::meta::Builder {
    let mut b = regex_automata::meta::Regex::builder();
    b.syntax(
        regex_automata::util::syntax::Config::new()
            .unicode(false)
            .utf8(false),
    )
    .configure(config.utf8_empty(false));
    b
}

/// Validates and compiles one rule.
pub fn compile(spec: RuleSpec) -> Result<CompiledRule, InspectError> {
    let id = spec.id.clone();
    let bad = |m: &str| InspectError::Rule {
        rule: id.clone(),
        message: m.to_string(),
    };
    if spec.id.is_empty()
        || !spec
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad(
            "id must be non-empty ASCII letters, digits, `-` or `_`",
        ));
    }
    if spec.keywords.is_empty() && spec.digits.is_none() {
        return Err(bad("a rule needs keywords or a digit trigger"));
    }
    if spec.keywords.is_empty() && spec.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(bad("a rule without keywords needs a `reason`"));
    }
    if spec.keywords.iter().any(String::is_empty) {
        return Err(bad("keywords must not be empty"));
    }
    if spec.solo == Some(true) && spec.digits.is_none() {
        return Err(bad("`solo` applies to digit rules only"));
    }
    let pattern = expand_macros(&spec.regex);
    let builder = rule_builder();
    let regex_error = |e: regex_automata::meta::BuildError| InspectError::Regex {
        rule: spec.id.clone(),
        message: e.to_string(),
    };
    // Parsed once: the regex is built from the tree, and the value's bound and span are read
    // from it.
    let hir = value_bound::parse(&pattern).map_err(|message| InspectError::Regex {
        rule: spec.id.clone(),
        message,
    })?;
    let (regex, bounded) = match value_bound::relax(&hir) {
        Some(relaxed) => (
            builder.build_from_hir(&relaxed.hir).map_err(regex_error)?,
            Some(Bounded {
                regex: std::sync::OnceLock::new(),
                max_value: relaxed.max_value,
            }),
        ),
        None => (builder.build_from_hir(&hir).map_err(regex_error)?, None),
    };
    let secret_group = regex
        .group_info()
        .to_index(regex_automata::PatternID::ZERO, "secret");
    let value_span = secret_group.and_then(|_| ValueSpan::in_tree(&hir));
    // A keyword of one byte repeated is reported once for a run of it (the prefilter joins
    // its overlapping hits), so such a rule is searched in a window over the run instead.
    let anchored = spec.digits.is_none()
        && starts_with_keyword(&pattern, &spec.keywords)
        && !spec.keywords.iter().any(|k| one_byte_keyword(k.as_bytes()));
    let validator = match &spec.validator {
        Some(name) => Some(
            Validator::parse(name).ok_or_else(|| bad(&format!("unknown validator `{name}`")))?,
        ),
        None => None,
    };
    let allowlist = spec
        .allowlist
        .iter()
        .map(|a| compile_regex(&spec.id, a))
        .collect::<Result<Vec<_>, _>>()?;
    let confidence = spec.confidence.unwrap_or(0.9);
    if !(0.0..=1.0).contains(&confidence) {
        return Err(bad("confidence must be within 0..=1"));
    }
    let lower = |v: &[String]| {
        v.iter()
            .map(|w| w.to_ascii_lowercase().into_bytes())
            .collect::<Vec<_>>()
    };
    Ok(CompiledRule {
        id: spec.id.clone().into(),
        kind: spec.kind,
        family: spec.family.clone().into(),
        description: spec.description.clone().into(),
        keywords: spec
            .keywords
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect(),
        digits: spec.digits,
        precheck: spec.precheck,
        solo: spec.solo.unwrap_or(false),
        regex,
        bounded,
        pattern: pattern.into(),
        anchored,
        value_span,
        secret_group,
        validator,
        entropy: spec.entropy,
        allowlist,
        placeholder_check: spec.placeholder_check.unwrap_or(spec.kind == Kind::Secret),
        confidence,
        context: lower(&spec.context),
        negative_context: lower(&spec.negative_context),
        before: spec
            .before
            .unwrap_or(if spec.digits.is_some() { 24 } else { 8 }),
        after: spec
            .after
            .unwrap_or(if spec.digits.is_some() { 24 } else { 320 }),
        priority: spec.priority.unwrap_or(match spec.kind {
            Kind::Secret => 10,
            Kind::Pii => 5,
        }),
        examples: spec.examples,
        negatives: spec.negatives,
    })
}

/// Applies overrides to the embedded rule specs and returns the specs to compile.
pub fn apply_overrides(
    mut specs: Vec<RuleSpec>,
    o: &RuleOverrides,
) -> Result<Vec<RuleSpec>, InspectError> {
    for extra in &o.rules {
        match specs.iter_mut().find(|s| s.id == extra.id) {
            Some(existing) => *existing = extra.clone(),
            None => specs.push(extra.clone()),
        }
    }
    for ov in &o.overrides {
        let Some(s) = specs.iter_mut().find(|s| s.id == ov.id) else {
            return Err(InspectError::Rule {
                rule: ov.id.clone(),
                message: "override names an unknown rule".into(),
            });
        };
        if let Some(c) = ov.confidence {
            s.confidence = Some(c);
        }
        if let Some(e) = ov.entropy {
            s.entropy = Some(e);
        }
        if let Some(f) = &ov.family {
            s.family = f.clone();
        }
        s.allowlist.extend(ov.allowlist.iter().cloned());
        s.keywords.extend(ov.keywords.iter().cloned());
    }
    for id in &o.disabled {
        if !specs.iter().any(|s| &s.id == id) {
            return Err(InspectError::Rule {
                rule: id.clone(),
                message: "cannot disable an unknown rule".into(),
            });
        }
    }
    specs.retain(|s| !o.disabled.contains(&s.id) && !o.disabled_families.contains(&s.family));
    let mut seen = std::collections::HashSet::new();
    for s in &specs {
        if !seen.insert(s.id.as_str()) {
            return Err(InspectError::Rule {
                rule: s.id.clone(),
                message: "duplicate rule id".into(),
            });
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn literal_prefixes_expand_optional_chars_and_small_sets() {
        let mut got = literal_prefixes("api[_-]?key[\\w.]{0,20}").unwrap_or_default();
        got.sort();
        assert_eq!(got, ["api-key", "api_key", "apikey"]);
        assert_eq!(
            literal_prefixes("\\bbearer\\s+"),
            Some(vec!["bearer".into()])
        );
        assert_eq!(
            literal_prefixes("ghp_[A-Za-z0-9]{36}"),
            Some(vec!["ghp_".into()])
        );
        assert_eq!(literal_prefixes("xoxb+-"), Some(vec!["xoxb".into()]));
        // A repeat or a range ends the prefix; an optional char alone may leave it empty.
        assert_eq!(literal_prefixes("ab*c"), Some(vec!["a".into()]));
        assert_eq!(literal_prefixes("a[b-d]c"), Some(vec!["a".into()]));
        assert_eq!(literal_prefixes("[^x]yz"), None);
        assert_eq!(
            literal_prefixes("a?bc"),
            Some(vec!["bc".into(), "abc".into()])
        );
        assert_eq!(literal_prefixes("a?"), None);
        assert_eq!(literal_prefixes("[ab][cd][ef][gh][ij][kl][mn]"), None);
    }

    #[test]
    fn anchoring_needs_every_spelling_to_start_with_a_keyword() {
        let pattern = "(?i:api[_-]?key|app[_-]?key)[\\w.\\-]{0,20}?\\s*=";
        let all = kw(&[
            "api_key", "api-key", "apikey", "app_key", "app-key", "appkey",
        ]);
        assert!(starts_with_keyword(pattern, &all));
        // `app-key` has no keyword: a match starting there would never be searched for.
        let missing = kw(&["api_key", "api-key", "apikey", "app_key", "appkey"]);
        assert!(!starts_with_keyword(pattern, &missing));
        assert!(starts_with_keyword(
            "(?i:\\bbearer)\\s+(?P<secret>x+)",
            &kw(&["bearer"])
        ));
        assert!(!starts_with_keyword("\\b[a-z]+://", &kw(&["://"])));
        assert!(!starts_with_keyword("(?:(a)|b)c", &kw(&["a", "b"])));
        // A `)` or `|` inside a set does not end the group or split it.
        assert!(!starts_with_keyword("(?:foo[)]|bar)x", &kw(&["foo"])));
        assert!(starts_with_keyword(
            "(?:foo[)|]|bar)x",
            &kw(&["foo", "bar"])
        ));
        assert_eq!(
            group_alternatives("a[|)]b|c\\)d)e"),
            Some((vec!["a[|)]b", "c\\)d"], "e"))
        );
        // Sets whose first char is `]`, nested sets and POSIX classes are not followed.
        for p in [
            "(?:foo[])]|bar)x",
            "(?:foo[^])]|bar)",
            "(?:foo[[:alpha:])]|bar)",
        ] {
            assert!(!starts_with_keyword(p, &kw(&["foo"])), "{p}");
        }
        // An optional or repeated opening, or a top-level alternative, is not certain.
        for p in [
            "(?:foo|bar)?baz",
            "(?i:foo)*x",
            "(?i:foo){0,2}x",
            "foo|bar",
            "(?P<secret>foo|bar)",
            "(?P<secret>foo)?bar",
            "(?P<secret>(?i:foo))?bar",
        ] {
            assert!(!starts_with_keyword(p, &kw(&["foo"])), "{p}");
        }
        assert!(starts_with_keyword(
            "(?P<secret>(?i:foo))bar",
            &kw(&["foo"])
        ));
        assert!(starts_with_keyword("(?i:foo)+bar", &kw(&["foo"])));
        // `\\<` is an assertion, not the char `<`.
        assert!(!starts_with_keyword("\\<tok", &kw(&["<t"])));
        assert!(starts_with_keyword("\\<tok", &kw(&["tok"])));
    }

    /// Every embedded rule that is searched anchored really opens with a keyword: the rule's
    /// own examples are found through the keyword hits alone.
    #[test]
    fn anchored_rules_find_their_examples_at_keyword_hits() {
        let specs = embedded_rules().unwrap_or_else(|e| panic!("{e}"));
        let mut anchored = 0;
        for spec in specs {
            let keywords: Vec<String> = spec
                .keywords
                .iter()
                .map(|k| k.to_ascii_lowercase())
                .collect();
            let rule = compile(spec).unwrap_or_else(|e| panic!("{e}"));
            if !rule.anchored {
                continue;
            }
            anchored += 1;
            let mut g = crate::inspect::testgen::Gen::new(5);
            for ex in &rule.examples {
                let text = g.expand(ex).unwrap_or_else(|e| panic!("{e}"));
                let lower = text.to_ascii_lowercase();
                for m in rule.regex.find_iter(text.as_bytes()) {
                    let at_keyword = keywords
                        .iter()
                        .any(|k| lower[m.start()..].starts_with(k.as_str()));
                    assert!(
                        at_keyword,
                        "{}: match at {} of {text:?}",
                        rule.id,
                        m.start()
                    );
                }
            }
        }
        assert!(anchored > 100, "{anchored}");
    }
}
