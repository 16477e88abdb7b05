//! Ledger write throughput: rows queued from the request path and committed by the writer
//! thread, measured end to end (queue + batched transactions + WAL), on a real file.
//!
//! `cargo bench -p airlock --bench ledger`

use airlock::ledger::{FindingRecord, LedgerWriter, Record, Tokens, Verdict};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

fn record(i: u64) -> Record {
    Record {
        id: format!("req_{i:016x}"),
        ts: 1_790_000_000_000 + i as i64,
        account: Some("bench".into()),
        key_name: Some("bench".into()),
        provider: Some("openai".into()),
        method: "POST".into(),
        endpoint: "/v1/chat/completions".into(),
        model: Some("gpt-4o-mini".into()),
        streamed: i % 2 == 0,
        status: 200,
        verdict: if i % 10 == 0 {
            Verdict::Redacted
        } else {
            Verdict::Allowed
        },
        reason: None,
        error_source: None,
        tokens: Tokens {
            input: 1000,
            output: 200,
            cached: 0,
            cache_write: 0,
            reasoning: 0,
        },
        cost_micros: Some(270),
        estimated: false,
        body_end: Some("complete".into()),
        response_bytes: 2048,
        total_ms: 12.5,
        upstream_ms: Some(12.3),
        overhead_ms: 0.2,
        prompt: None,
        findings: if i % 10 == 0 {
            vec![FindingRecord {
                rule: "email".into(),
                kind: "pii".into(),
                location: "messages[0].content".into(),
                action: "pseudonymize".into(),
                value_hash: "0123456789abcdef0123456789abcdef".into(),
            }]
        } else {
            Vec::new()
        },
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, _thread) = LedgerWriter::spawn(dir.path(), None).expect("ledger");
    let mut g = c.benchmark_group("ledger");
    const ROWS: u64 = 10_000;
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let mut next = 0u64;
    g.bench_function("write_10k_rows", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..ROWS {
                    writer.record(record(next));
                    next += 1;
                }
                assert!(writer.flush(Duration::from_secs(60)), "ledger flush");
            }
            start.elapsed()
        })
    });
    // What a request pays: encoding its row and appending it to the spool (the commit happens
    // later, on the writer thread).
    g.throughput(Throughput::Elements(1));
    g.sample_size(50);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("record_on_request_path", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000);
                let rows: Vec<Record> = (next..next + n).map(record).collect();
                next += n;
                let start = Instant::now();
                for r in rows {
                    assert!(writer.record(r).is_none(), "row took the slow path");
                }
                spent += start.elapsed();
                // The writer catches up outside the timed part.
                assert!(writer.flush(Duration::from_secs(60)), "ledger flush");
                left -= n;
            }
            spent
        })
    });
    g.finish();
    assert_eq!(
        writer
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "rows dropped"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
