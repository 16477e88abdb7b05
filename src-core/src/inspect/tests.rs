//! Rule-level tests: every rule's examples are found, every negative is not, look-alikes stay
//! quiet, evasions are seen through, and spans are always sound.

use super::testgen::Gen;
use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| match Engine::new() {
        Ok(e) => e,
        Err(err) => panic!("embedded rules must compile: {err}"),
    })
}

fn ids(text: &str) -> Vec<String> {
    engine()
        .find_all(text)
        .iter()
        .map(|f| f.rule_id.to_string())
        .collect()
}

fn expand(g: &mut Gen, t: &str) -> String {
    match g.expand(t) {
        Ok(s) => s,
        Err(e) => panic!("bad template {t:?}: {e}"),
    }
}

#[test]
fn embedded_rules_compile_and_meet_the_floor() {
    let e = engine();
    let secrets = e.rules().iter().filter(|r| r.kind == Kind::Secret).count();
    assert!(secrets >= 150, "only {secrets} secret rules");
    for r in e.rules() {
        assert!(!r.examples.is_empty(), "rule {} has no examples", r.id);
        assert!(!r.negatives.is_empty(), "rule {} has no negatives", r.id);
    }
}

#[test]
fn every_example_is_found_by_its_rule() {
    let mut failures = Vec::new();
    for seed in 0..6u64 {
        let mut g = Gen::new(seed);
        for r in engine().rules() {
            for t in &r.examples {
                let text = expand(&mut g, t);
                let all = engine().find_all(&text);
                let found: Vec<String> = all.iter().map(|f| f.rule_id.to_string()).collect();
                // National phone formats overlap (a French and an Italian landline can be the
                // same digits); the family is what policy acts on, so any phone rule will do.
                let ok = found.iter().any(|id| *id == *r.id)
                    || (&*r.family == "phone" && all.iter().any(|f| f.family == "phone"));
                if !ok {
                    failures.push(format!(
                        "{} (seed {seed}): template {t:?} found {found:?}",
                        r.id
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} misses:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn no_negative_is_found_by_its_rule() {
    let mut failures = Vec::new();
    for seed in 0..6u64 {
        let mut g = Gen::new(seed);
        for r in engine().rules() {
            for t in &r.negatives {
                let text = expand(&mut g, t);
                let found = ids(&text);
                if found.iter().any(|id| *id == *r.id) {
                    failures.push(format!("{} (seed {seed}): negative {t:?}", r.id));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} false alarms:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn look_alikes_stay_quiet() {
    let mut g = Gen::new(7);
    let cases = [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE".to_string(),
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_string(),
        "OPENAI_API_KEY=sk-...".to_string(),
        "api_key = \"your-api-key-here\"".to_string(),
        "Authorization: Bearer <API_KEY>".to_string(),
        "client = OpenAI(api_key=os.environ[\"OPENAI_API_KEY\"])".to_string(),
        "const key = process.env.ANTHROPIC_API_KEY;".to_string(),
        expand(&mut g, "commit {{h:40}} (HEAD -> main)"),
        expand(
            &mut g,
            "id = \"{{h:8}}-{{h:4}}-4{{h:3}}-a{{h:3}}-{{h:12}}\"",
        ),
        expand(&mut g, "sha256: {{h:64}}"),
        expand(
            &mut g,
            "<script integrity=\"sha384-{{b:64}}\" crossorigin=\"anonymous\"></script>",
        ),
        expand(
            &mut g,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{{b:43}} dev@laptop",
        ),
        expand(
            &mut g,
            "-----BEGIN PUBLIC KEY-----\n{{b:64}}\n{{b:64}}\n-----END PUBLIC KEY-----",
        ),
        expand(
            &mut g,
            "-----BEGIN CERTIFICATE-----\n{{b:64}}\n{{b:64}}\n{{b:64}}\n-----END CERTIFICATE-----",
        ),
        expand(&mut g, "card: {{card:bad}}"),
        expand(&mut g, "IBAN {{iban:bad}}"),
        "password = \"changeme\"".to_string(),
        "The release 1.2.3.4 fixed a bug on 2024-01-15 at 10:30:00.".to_string(),
        "Build 20240115123045 finished in 4.2 s; max_tokens=4096, temperature=0.7".to_string(),
        "key: ${{ secrets.OPENAI_API_KEY }}".to_string(),
    ];
    for text in &cases {
        let found = engine().find_all(text);
        assert!(found.is_empty(), "{text:?} → {found:?}");
    }
}

#[test]
fn findings_carry_family_kind_span_and_a_safe_preview() {
    let mut g = Gen::new(11);
    let token = g.github("ghp_");
    let text = format!("push with {token} please");
    let f = engine().find_all(&text);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule_id, "github-pat");
    assert_eq!(f[0].family, "github");
    assert_eq!(f[0].kind, Kind::Secret);
    assert_eq!(&text[f[0].span.clone()], token);
    assert_eq!(f[0].preview(), "ghp_****");
    assert!(
        !format!("{:?}", f[0]).contains(&token[4..]),
        "Debug must not print the value"
    );
    assert_eq!(f[0].fingerprint_input(&text), token);
}

#[test]
fn zero_width_characters_inside_a_key_are_seen_through() {
    let mut g = Gen::new(12);
    let token = g.github("ghp_");
    let hidden: String = token
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            if i % 5 == 2 {
                vec![c, '\u{200B}']
            } else {
                vec![c]
            }
        })
        .collect();
    let text = format!("token: {hidden}\u{2060} done");
    let f = engine().find_all(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        &text[f[0].span.clone()],
        hidden,
        "the span covers the invisible chars"
    );
    assert_eq!(f[0].encoding, Encoding::Unicode);
    assert_eq!(f[0].fingerprint_input(&text), token);
}

#[test]
fn fullwidth_forms_are_folded() {
    let mut g = Gen::new(13);
    let key = expand(&mut g, "AKIA{{z:16}}");
    let wide: String = key
        .chars()
        .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c))
        .collect();
    let text = format!("key {wide} end");
    let f = engine().find_all(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule_id, "aws-access-key-id");
    assert_eq!(&text[f[0].span.clone()], wide);
}

#[test]
fn base64_wrapped_secrets_are_decoded_one_level() {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let mut g = Gen::new(14);
    for prefix in ["", " ", "a=", "{\"token\":\""] {
        let token = g.github("ghp_");
        let blob = STANDARD.encode(format!("{prefix}{token}"));
        let text = format!("config: {blob} end");
        let f = engine().find_all(&text);
        assert_eq!(f.len(), 1, "{prefix:?}: {f:?}");
        assert_eq!(f[0].rule_id, "github-pat");
        assert_eq!(f[0].encoding, Encoding::Base64);
        assert_eq!(
            &text[f[0].span.clone()],
            blob,
            "the span is the whole base64 token"
        );
        assert_eq!(f[0].fingerprint_input(&text), token);
        assert_eq!(f[0].preview(), "ghp_****");
    }
}

#[test]
fn percent_encoded_secrets_are_decoded() {
    let mut g = Gen::new(15);
    let pw = expand(&mut g, "{{m:20}}");
    let text = format!("url=postgres%3A%2F%2Fapp%3A{pw}%40db.internal%2Fapp&x=1");
    let f = engine().find_all(&text);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].encoding, Encoding::Percent);
    assert!(text[f[0].span.clone()].starts_with("postgres%3A"));
    let token = g.github("ghp_");
    let all: String = token.bytes().map(|b| format!("%{b:02X}")).collect();
    let f = engine().find_all(&format!("t={all}"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule_id, "github-pat");
}

#[test]
fn context_words_raise_weak_patterns() {
    let mut g = Gen::new(16);
    let sin = g.sin(false);
    assert!(
        ids(&format!("ref {sin}")).is_empty(),
        "a bare 9-digit Luhn number is weak"
    );
    assert_eq!(ids(&format!("my SIN is {sin}")), vec!["ca-sin"]);
}

#[test]
fn overlapping_findings_keep_the_specific_rule() {
    let mut g = Gen::new(17);
    let text = expand(&mut g, "OPENAI_API_KEY = \"sk-proj-{{m:60}}\"");
    assert_eq!(ids(&text), vec!["openai-project-key"]);
}

#[test]
fn callback_returning_false_stops() {
    let mut g = Gen::new(18);
    let text = format!(
        "{} {} {}",
        g.github("ghp_"),
        g.github("gho_"),
        g.github("ghs_")
    );
    let mut n = 0;
    engine().scan(&text, |_| {
        n += 1;
        false
    });
    assert_eq!(n, 1);
    assert_eq!(engine().find_all(&text).len(), 3);
}

#[test]
fn overrides_disable_add_and_tune_rules() {
    let overrides = RuleOverrides::from_toml(
        r#"
disabled = ["github-pat"]
disabled_families = ["phone"]
[[rules]]
id = "acme-token"
kind = "secret"
family = "acme"
keywords = ["acme_"]
regex = '''\bacme_[a-z0-9]{32}\b'''
[[overrides]]
id = "aws-access-key-id"
allowlist = ["^AKIAQQ"]
"#,
    );
    let overrides = match overrides {
        Ok(o) => o,
        Err(e) => panic!("{e}"),
    };
    let e = match EngineBuilder::new().overrides(overrides).build() {
        Ok(e) => e,
        Err(err) => panic!("{err}"),
    };
    let mut g = Gen::new(19);
    let template = "{{gh:ghp_}} acme_{{a:32}} AKIAQQ{{z:14}} call +44 20 3123 4567"; // airlock:allow
    let text = expand(&mut g, template);
    let found: Vec<_> = e
        .find_all(&text)
        .iter()
        .map(|f| f.rule_id.to_string())
        .collect();
    assert_eq!(found, vec!["acme-token"]);
    assert!(EngineBuilder::new()
        .overrides(RuleOverrides {
            disabled: vec!["no-such-rule".into()],
            ..Default::default()
        })
        .build()
        .is_err());
}

/// A GitHub token is random base62 with a CRC32 at the end; one whose random part happens to
/// spell a placeholder word (about 1 in 17,000 tokens spells `fake` or `xxxx` in some case) is
/// still a real token and is found, while the same token with a wrong checksum is not.
#[test]
fn a_github_token_spelling_a_placeholder_word_is_found() {
    let mut g = Gen::new(37);
    for word in ["fakE", "xXxX", "Dummy", "FAKE"] {
        for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
            let head = expand(&mut g, "{{m:8}}");
            let tail = expand(&mut g, &format!("{{{{m:{}}}}}", 22 - word.len()));
            let body = format!("{head}{word}{tail}");
            let sum = validate::base62_crc32(body.as_bytes());
            let token = format!("{prefix}{body}{}", String::from_utf8_lossy(&sum));
            let text = format!("GITHUB_TOKEN={token}\n");
            let found: Vec<_> = engine()
                .find_all(&text)
                .into_iter()
                .map(|f| f.span)
                .collect();
            assert_eq!(found, vec![13..13 + token.len()], "{token}");
            let mut bad = token.clone().into_bytes();
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
            let bad = String::from_utf8_lossy(&bad).into_owned();
            assert!(engine().find_all(&format!("x {bad} y")).is_empty(), "{bad}");
        }
    }
}

/// A user rule whose value's bound is too wide to build (the NFA size limit) is accepted and
/// searches without it, and a value past the bound (in a window as wide as the rule asks) is
/// reported whole.
#[test]
fn a_bound_too_wide_to_build_reports_the_longer_value() {
    let file = r#"
[[rule]]
id = "wide-bound"
kind = "secret"
family = "x"
keywords = ["zq_"]
after = 100000
regex = '(?P<secret>zq_[A-Za-z0-9]{12,40000})(?:\s|$)'
"#;
    let specs = rules::parse_rule_file(file).unwrap_or_else(|e| panic!("{e}"));
    let rule = rules::compile(specs[0].clone()).unwrap_or_else(|e| panic!("{e}"));
    let bounded = rule.bounded.as_ref();
    assert_eq!(bounded.map(|b| b.max_value), Some(40_003));
    assert!(rule.as_written().is_none());
    let e = EngineBuilder::new()
        .overrides(RuleOverrides {
            rules: specs,
            ..Default::default()
        })
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = Gen::new(31);
    for len in [40, 50_000] {
        let text = expand(&mut g, &format!("x zq_{{{{a:{len}}}}} y"));
        let spans: Vec<_> = (e.find_all(&text).into_iter())
            .filter(|f| f.rule_id == "wide-bound")
            .map(|f| f.span)
            .collect();
        assert_eq!(spans, vec![2..5 + len], "{len}");
    }
}

#[test]
fn keywordless_rules_state_a_reason() {
    let bad = r#"
[[rule]]
id = "x"
kind = "pii"
family = "x"
digits = 4
regex = '\d{4}'
"#;
    let specs = match rules::parse_rule_file(bad) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let err = specs.into_iter().map(rules::compile).find_map(Result::err);
    assert!(err.is_some_and(|e| e.to_string().contains("reason")));
}

#[test]
fn invalid_utf8_is_scanned_around() {
    let mut g = Gen::new(20);
    let token = g.github("ghp_");
    let mut bytes = vec![0xff, 0xfe, b' '];
    bytes.extend_from_slice(token.as_bytes());
    bytes.extend_from_slice(&[b' ', 0xc3]);
    let mut spans = Vec::new();
    engine().scan_bytes(&bytes, |f| {
        spans.push(f.span.clone());
        true
    });
    assert_eq!(spans, vec![3..3 + token.len()]);
}

#[test]
fn engine_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn spans_lie_on_char_boundaries(s in "\\PC{0,300}") {
        for f in engine().find_all(&s) {
            prop_assert!(f.span.start < f.span.end && f.span.end <= s.len());
            prop_assert!(s.is_char_boundary(f.span.start) && s.is_char_boundary(f.span.end));
        }
    }

    #[test]
    fn mixed_secret_soup_spans_are_sound(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("\u{200B}".to_string()), Just("ｓｋ－".to_string()), Just("ghp_".to_string()),
                Just("sk-ant-api03-".to_string()), Just("@gmail.com ".to_string()), Just("4539 ".to_string()),
                Just("Z2hwX".to_string()), Just("%2F".to_string()), Just("é".to_string()),
                Just("-----BEGIN RSA PRIVATE KEY-----\n".to_string()), Just("password=".to_string()),
                "[A-Za-z0-9+/=]{1,40}", "[0-9 .-]{1,20}", "\\PC{0,8}",
            ],
            0..40,
        )
    ) {
        let s: String = parts.concat();
        for f in engine().find_all(&s) {
            prop_assert!(f.span.start < f.span.end && f.span.end <= s.len());
            prop_assert!(s.is_char_boundary(f.span.start) && s.is_char_boundary(f.span.end));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        engine().scan_bytes(&bytes, |f| {
            assert!(f.span.end <= bytes.len());
            true
        });
    }
}

#[test]
fn every_secret_example_is_found_encoded() {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    let mut failures = Vec::new();
    let mut tried = 0;
    for seed in 0..3u64 {
        let mut g = Gen::new(100 + seed);
        for r in engine().rules() {
            if r.kind != Kind::Secret || !r.keywords.iter().any(|k| k.len() >= 4) {
                continue;
            }
            for t in &r.examples {
                let plain = expand(&mut g, t);
                if !engine()
                    .find_all(&plain)
                    .iter()
                    .any(|f| *f.rule_id == *r.id)
                {
                    continue; // a value the rule itself turns down (a random placeholder word)
                }
                let b64 = format!("data: {} end", STANDARD.encode(&plain));
                let pct: String = plain.bytes().map(|b| format!("%{b:02X}")).collect();
                let pct = format!("q={pct}&x=1");
                for (form, text, enc) in [
                    ("base64", &b64, Encoding::Base64),
                    ("percent", &pct, Encoding::Percent),
                ] {
                    tried += 1;
                    let found = engine().find_all(text);
                    let ok = found.iter().any(|f| {
                        f.encoding == enc && (*f.rule_id == *r.id || *f.family == *r.family)
                    });
                    if !ok {
                        let ids: Vec<&str> = found.iter().map(|f| f.rule_id).collect();
                        failures.push(format!("{} {form} (seed {seed}) {t:?}: {ids:?}", r.id));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {tried} missed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
