//! SSE splitting and stream metering throughput on a realistic OpenAI chat stream.
//!
//! `cargo bench -p airlock --bench sse`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use airlock::meter::StreamMeter;
use airlock::providers::ProviderKind;
use airlock::sse::SseSplitter;

/// About 1,000 content-delta chunks as OpenAI sends them, then usage and `[DONE]`.
fn openai_stream() -> Vec<u8> {
    let head = r#"{"id":"chatcmpl-AxdVw","object":"chat.completion.chunk","created":1738377600,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_72ed7ab54c","choices":[{"index":0,"delta":{"content":""#;
    let tail = r#""},"logprobs":null,"finish_reason":null}],"usage":null}"#;
    let words = [
        "Hello",
        " world",
        ",",
        " this",
        " is",
        " a",
        " streamed",
        " reply",
        ".",
    ];
    let mut out = String::new();
    for i in 0..1000 {
        out.push_str(&format!("data: {head}{}{tail}\n\n", words[i % words.len()]));
    }
    out.push_str(r#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":27,"completion_tokens":1000,"total_tokens":1027}}"#);
    out.push_str("\n\ndata: [DONE]\n\n");
    out.into_bytes()
}

fn split(c: &mut Criterion) {
    let stream = openai_stream();
    let mut group = c.benchmark_group("sse_split");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    // 16 KiB is a typical read size; 37 puts most events across a boundary (the copying path).
    for chunk in [16 * 1024, 1024, 37] {
        group.bench_with_input(BenchmarkId::new("chunk", chunk), &chunk, |b, &chunk| {
            b.iter(|| {
                let mut splitter = SseSplitter::new();
                let mut n = 0usize;
                for piece in stream.chunks(chunk) {
                    splitter.push(black_box(piece), |ev| n += ev.data.len());
                }
                black_box(splitter.finish(|_| {}));
                n
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sse_split_and_meter");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("openai_chat_16k_chunks", |b| {
        b.iter(|| {
            let mut splitter = SseSplitter::new();
            let mut meter = StreamMeter::new(ProviderKind::OpenAi, "gpt-4o-mini");
            for piece in stream.chunks(16 * 1024) {
                splitter.push(piece, |ev| meter.on_sse_event(&ev));
            }
            black_box(meter.finish(true, b"{}"))
        })
    });
    group.finish();
}

criterion_group!(benches, split);
criterion_main!(benches);
