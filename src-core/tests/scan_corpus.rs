//! Corpus gate: recall and precision per family on a generated, labelled corpus.
//!
//! Fails below 99% recall on secrets, 97% recall on PII, or 99% precision. Set
//! `AIRLOCK_CORPUS_DIR=dir` to also write the corpus files (used for the benchmarks).

#[path = "../../tests/corpus/corpus.rs"]
mod corpus;

use airlock::inspect::Engine;
use std::collections::BTreeMap;

#[derive(Default)]
struct Tally {
    labels: usize,
    found: usize,
    findings: usize,
    false_positives: usize,
}

#[test]
fn corpus_recall_and_precision() {
    let engine = Engine::new().unwrap_or_else(|e| panic!("{e}"));
    let docs = corpus::generate(0x00A1_4C0C, 400);
    if let Ok(dir) = std::env::var("AIRLOCK_CORPUS_DIR") {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        for d in &docs {
            std::fs::write(std::path::Path::new(&dir).join(&d.name), &d.text)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let mut fam: BTreeMap<&str, Tally> = BTreeMap::new();
    let (mut sec_labels, mut sec_found, mut pii_labels, mut pii_found) = (0, 0, 0, 0);
    let (mut findings_total, mut fp_total) = (0, 0);
    let mut misses = Vec::new();
    let mut fps = Vec::new();
    for d in &docs {
        let findings = engine.find_all(&d.text);
        for l in &d.labels {
            let hit = findings.iter().any(|f| {
                f.span.start < l.end
                    && l.start < f.span.end
                    && (f.family == l.family
                        || (l.family == "generic" && f.kind == airlock::inspect::Kind::Secret))
            });
            let t = fam.entry(l.family).or_default();
            t.labels += 1;
            if hit {
                t.found += 1;
            } else {
                misses.push(format!(
                    "{}: {} at {}..{}",
                    d.name, l.family, l.start, l.end
                ));
            }
            if l.secret {
                sec_labels += 1;
                sec_found += usize::from(hit);
            } else {
                pii_labels += 1;
                pii_found += usize::from(hit);
            }
        }
        for f in &findings {
            findings_total += 1;
            let t = fam.entry(f.family).or_default();
            t.findings += 1;
            let labelled = d
                .labels
                .iter()
                .any(|l| f.span.start < l.end && l.start < f.span.end);
            if !labelled {
                t.false_positives += 1;
                fp_total += 1;
                fps.push(format!(
                    "{}: {} [{}] {}..{} {:?}",
                    d.name,
                    f.rule_id,
                    f.family,
                    f.span.start,
                    f.span.end,
                    f.preview()
                ));
            }
        }
    }
    let secret_recall = sec_found as f64 / sec_labels.max(1) as f64;
    let pii_recall = pii_found as f64 / pii_labels.max(1) as f64;
    let precision = (findings_total - fp_total) as f64 / findings_total.max(1) as f64;
    eprintln!(
        "{:<16} {:>6} {:>6} {:>8} {:>6} {:>9}",
        "family", "labels", "found", "recall", "fp", "precision"
    );
    for (name, t) in &fam {
        let recall = if t.labels == 0 {
            f64::NAN
        } else {
            t.found as f64 / t.labels as f64
        };
        let prec = if t.findings == 0 {
            f64::NAN
        } else {
            (t.findings - t.false_positives) as f64 / t.findings as f64
        };
        eprintln!(
            "{name:<16} {:>6} {:>6} {:>8.3} {:>6} {:>9.3}",
            t.labels, t.found, recall, t.false_positives, prec
        );
    }
    eprintln!(
        "docs {} | secrets {sec_found}/{sec_labels} recall {secret_recall:.4} | pii {pii_found}/{pii_labels} recall {pii_recall:.4} | precision {precision:.4} ({fp_total} fp of {findings_total})",
        docs.len()
    );
    for m in misses.iter().take(20) {
        eprintln!("miss: {m}");
    }
    for f in fps.iter().take(20) {
        eprintln!("false positive: {f}");
    }
    assert!(
        sec_labels >= 150 && pii_labels >= 150,
        "corpus too small: {sec_labels} secrets, {pii_labels} pii"
    );
    assert!(
        secret_recall >= 0.99,
        "secret recall {secret_recall:.4} < 0.99"
    );
    assert!(pii_recall >= 0.97, "PII recall {pii_recall:.4} < 0.97");
    assert!(precision >= 0.99, "precision {precision:.4} < 0.99");
}
