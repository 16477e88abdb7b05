//! Scans files with the full rule set, for timing and profiling the engine outside criterion.
//!
//! `scan_files [--iters N] FILE...` scans each file N times (default 1) and prints the finding
//! count and the fastest scan. `scan_files --dump FILE...` prints every finding instead (rule,
//! span, encoding, confidence, preview), one a line, to compare two builds' findings.
//! `bench/engine-instructions.sh` runs it under callgrind to count instructions per scan, which
//! holds still on a host whose speed drifts.

use airlock::inspect::Engine;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut iters = 1usize;
    if args.peek().map(String::as_str) == Some("--dump") {
        args.next();
        let engine = Engine::new().expect("the embedded rules compile");
        for path in args {
            let text = std::fs::read_to_string(&path).expect("a readable UTF-8 file");
            engine.scan(&text, |f| {
                println!(
                    "{} {}..{} {:?} {:.3} {}",
                    f.rule_id,
                    f.span.start,
                    f.span.end,
                    f.encoding,
                    f.confidence,
                    f.preview()
                );
                true
            });
        }
        return;
    }
    if args.peek().map(String::as_str) == Some("--iters") {
        args.next();
        iters = args
            .next()
            .and_then(|n| n.parse().ok())
            .expect("--iters takes a number");
    }
    let engine = Engine::new().expect("the embedded rules compile");
    for path in args {
        let text = std::fs::read_to_string(&path).expect("a readable UTF-8 file");
        let mut best = f64::MAX;
        let mut findings = 0;
        for _ in 0..iters.max(1) {
            let started = Instant::now();
            findings = 0;
            engine.scan(&text, |_| {
                findings += 1;
                true
            });
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{path}: {findings} findings, best of {iters}: {:.1} MiB/s",
            text.len() as f64 / best / (1 << 20) as f64
        );
    }
}
