//! Engine throughput (MB/s), full rule set, single thread, on four inputs:
//! clean prose, source code, text dense with findings, and a table of numbers.
//!
//! `cargo bench -p airlock --bench engine`. With `AIRLOCK_BENCH_DUMP=dir` the inputs are also
//! written to `dir` so other scanners can be timed on the same bytes (BENCHMARKS.md).

#[path = "../../tests/corpus/corpus.rs"]
#[allow(dead_code)]
mod corpus;

use airlock::inspect::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const TARGET: usize = 4 << 20;

/// English-like prose with the odd number, no credentials.
fn prose() -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "answered",
        "quickly",
        "and",
        "we",
        "reviewed",
        "its",
        "output",
        "before",
        "shipping",
        "a",
        "small",
        "change",
        "to",
        "our",
        "service",
        "because",
        "customers",
        "asked",
        "for",
        "clearer",
        "errors",
        "when",
        "requests",
        "fail",
        "during",
        "peak",
        "hours",
        "team",
        "meeting",
        "notes",
        "summarise",
        "decisions",
        "about",
        "pricing",
        "latency",
        "budget",
        "quarter",
        "roadmap",
        "feature",
        "flag",
        "rollout",
        "incident",
        "postmortem",
        "owner",
    ];
    let mut g = airlock::inspect::testgen::Gen::new(42);
    let mut s = String::with_capacity(TARGET + 256);
    while s.len() < TARGET {
        let n = 6 + g.below(14);
        for i in 0..n {
            let w = *g.pick(WORDS);
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    s.extend(f.to_uppercase());
                    s.push_str(c.as_str());
                }
            } else {
                s.push_str(w);
            }
            if g.below(40) == 0 {
                s.push_str(&format!(" {}", 2 + g.below(2030)));
            }
            s.push(if i + 1 == n { '.' } else { ' ' });
        }
        s.push(if g.below(6) == 0 { '\n' } else { ' ' });
    }
    s
}

/// This crate's own source (engine, CLI, rules model), repeated.
fn source() -> String {
    let parts = [
        include_str!("../src/inspect/engine.rs"),
        include_str!("../src/inspect/rules.rs"),
        include_str!("../src/inspect/normalize.rs"),
        include_str!("../src/cli/scan.rs"),
        include_str!("../src/cli.rs"),
    ];
    let mut s = String::with_capacity(TARGET + 65536);
    while s.len() < TARGET {
        for p in parts {
            s.push_str(p);
        }
    }
    s
}

/// Generated prompts and files where most lines hold a secret, PII or a look-alike.
fn dense() -> String {
    let mut s = String::with_capacity(TARGET + 65536);
    let mut seed = 1;
    while s.len() < TARGET {
        for d in corpus::generate(seed, 200) {
            s.push_str(&d.text);
            s.push('\n');
        }
        seed += 1;
    }
    s
}

/// A CSV export of numbers (dates, times, ids, amounts, coordinates), the kind of table pasted
/// into a prompt: no findings, but a digit cluster every few bytes.
fn number_table() -> String {
    let mut g = airlock::inspect::testgen::Gen::new(7);
    let mut s = String::with_capacity(TARGET + 256);
    s.push_str("date,time,order_id,customer_id,amount,qty,lat,lon,latency_ms,status\n");
    while s.len() < TARGET {
        let row = format!(
            "2025-{:02}-{:02},{:02}:{:02}:{:02},{},{},{}.{:02},{},{}.{:06},-{}.{:06},{}.{},{}\n",
            1 + g.below(12),
            1 + g.below(28),
            g.below(24),
            g.below(60),
            g.below(60),
            10_000_000 + g.below(900_000_000),
            1_000 + g.below(99_000),
            1 + g.below(5_000),
            g.below(100),
            1 + g.below(20),
            g.below(90),
            g.below(1_000_000),
            g.below(180),
            g.below(1_000_000),
            g.below(900),
            g.below(10),
            g.pick(&["ok", "fail", "retry"]),
        );
        s.push_str(&row);
    }
    s
}

fn bench(c: &mut Criterion) {
    let engine = Engine::new().unwrap_or_else(|e| panic!("{e}"));
    let inputs = [
        ("clean_prose", prose()),
        ("source_code", source()),
        ("dense_findings", dense()),
        ("number_table", number_table()),
    ];
    if let Ok(dir) = std::env::var("AIRLOCK_BENCH_DUMP") {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in &inputs {
            std::fs::write(std::path::Path::new(&dir).join(format!("{name}.txt")), text)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let mut group = c.benchmark_group("engine");
    group.sample_size(20);
    for (name, text) in &inputs {
        let mut n = 0usize;
        engine.scan(text, |_| {
            n += 1;
            true
        });
        eprintln!("{name}: {} bytes, {n} findings", text.len());
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut count = 0usize;
                engine.scan(black_box(text), |_| {
                    count += 1;
                    true
                });
                count
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
