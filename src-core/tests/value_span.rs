//! Rules whose `secret` group is read from the match instead of a capture search
//! (`airlock::inspect::value_span`): on every match, over examples, negatives, the labelled
//! corpus and random text, the span read from the match is the span the capture search gives.

#[path = "../../tests/corpus/corpus.rs"]
#[allow(dead_code)]
mod corpus;

use airlock::inspect::rules::CompiledRule;
use airlock::inspect::testgen::Gen;
use airlock::inspect::Engine;
use regex_automata::Input;

/// Every match of `rule` in `text`, left to right: (match, captured value, value read from it).
fn compare(rule: &CompiledRule, text: &[u8]) -> usize {
    let (Some(g), Some(span)) = (rule.secret_group, &rule.value_span) else {
        return 0;
    };
    let mut caps = rule.regex.create_captures();
    let mut at = 0;
    let mut n = 0;
    while at <= text.len() {
        rule.regex
            .search_captures(&Input::new(text).range(at..), &mut caps);
        let Some(m) = caps.get_match() else { break };
        let captured = caps.get_group(g).map(|s| (s.start, s.end));
        let read = span.within(text, m.start(), m.end());
        assert_eq!(
            captured,
            Some(read),
            "rule {}: match {:?} in {:?}",
            rule.id,
            m.range(),
            String::from_utf8_lossy(text)
        );
        n += 1;
        at = if m.end() > m.start() {
            m.end()
        } else {
            m.start() + 1
        };
    }
    n
}

#[test]
fn values_read_from_the_match_are_the_captured_values() {
    let engine = Engine::new().unwrap_or_else(|e| panic!("{e}"));
    let rules: Vec<&CompiledRule> = engine
        .rules()
        .iter()
        .filter(|r| r.value_span.is_some())
        .collect();
    let ids: Vec<&str> = rules.iter().map(|r| &*r.id).collect();
    // The boundary-wrapped PII rules the capture search was most often run for.
    for id in ["email", "ipv4-public", "us-ssn", "payment-card", "ca-sin"] {
        assert!(
            ids.contains(&id),
            "{id} is not read from its match: {ids:?}"
        );
    }
    // A value right after a keyword and `=` can start with a byte the keyword ends with.
    let generic = engine.rules().iter().find(|r| &*r.id == "generic-api-key");
    assert!(generic.is_some_and(|r| r.secret_group.is_some() && r.value_span.is_none()));

    let mut texts: Vec<Vec<u8>> = Vec::new();
    let mut gen = Gen::new(0x5EED);
    for r in engine.rules() {
        for t in r.examples.iter().chain(&r.negatives) {
            for _ in 0..4 {
                if let Ok(s) = gen.expand(t) {
                    texts.push(s.into_bytes());
                }
            }
        }
    }
    let examples = texts.concat();
    texts.push(examples);
    for d in corpus::generate(0x0005_A11E, 300) {
        texts.push(d.text.into_bytes());
    }
    // Short random strings of the bytes these rules look at.
    let alphabet = b"0123456789 .-@_+:/xXa\n\t,;'\"()";
    for _ in 0..4000 {
        let len = 1 + gen.below(40);
        texts.push(
            (0..len)
                .map(|_| alphabet[gen.below(alphabet.len())])
                .collect(),
        );
    }

    let mut matches = vec![0usize; rules.len()];
    for t in &texts {
        for (i, r) in rules.iter().enumerate() {
            matches[i] += compare(r, t);
        }
    }
    for id in ["email", "ipv4-public", "us-ssn", "payment-card"] {
        let i = ids.iter().position(|r| *r == id).expect("listed");
        assert!(matches[i] >= 20, "only {} matches of {id}", matches[i]);
    }
}
