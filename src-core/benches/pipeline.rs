//! The per-request work Airlock adds, step by step, for a 4 KB chat request: request inspection,
//! response restore and guard, usage extraction, and the anomaly detectors.
//!
//! `cargo bench -p airlock --bench pipeline`

use airlock::config::Config;
use airlock::inspect::Engine;
use airlock::limits::anomaly::Detector;
use airlock::meter::usage_from_json;
use airlock::protect::policy::Policy;
use airlock::protect::pseudonym::Vault;
use airlock::protect::request::Inspector;
use airlock::protect::restore::{restore_json, secret_keywords, OutputGuard};
use airlock::providers::ProviderKind;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::Instant;

fn body(findings: bool) -> Vec<u8> {
    let words = [
        "please", "review", "this", "function", "and", "suggest", "clearer", "names", "tests",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 3900 {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i += 7;
    }
    if findings {
        // Built from pieces: no credential or address is written in this file.
        let mail = ["grace.hopper", "navy-example.org"].join("@");
        text = format!("mail {mail} key {}{} {text}", "AKIA", "Q3ZLWB4T7HXVN2PR");
    }
    serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
        .to_string()
        .into_bytes()
}

/// An agent loop: 20 tool calls and their results, each with its ids, types and roles (the
/// short structural strings that are scanned as names).
fn agent_body() -> Vec<u8> {
    let mut messages = vec![serde_json::json!({"role": "user", "content": "fix the failing test"})];
    for n in 0..20 {
        let id = format!("call_{n:02}Xk3pQ9vLm2Tz8WbR4yHs7D");
        messages.push(serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function",
             "function": {"name": "read_file", "arguments": format!("{{\"path\":\"src/mod{n}.rs\"}}")}}]}));
        messages.push(serde_json::json!({"role": "tool", "tool_call_id": id,
            "content": "fn main() { println!(\"hello\"); }\n".repeat(8)}));
    }
    serde_json::json!({"model": "gpt-4o-mini", "messages": messages,
        "metadata": {"x-trace-id": "t-1", "session": "s"}})
    .to_string()
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let engine = Arc::new(Engine::new().expect("engine"));
    let policy = Policy::default();
    let vault = Vault::default();
    let mut g = c.benchmark_group("pipeline");
    // The clean request with one curly apostrophe: most real prompts hold a few non-ASCII
    // chars, and a pass that decodes every char once it sees one shows here.
    let curly = String::from_utf8(body(false))
        .expect("utf8")
        .replacen("please", "it\u{2019}s", 1)
        .into_bytes();
    for (name, b) in [
        ("clean", body(false)),
        ("findings", body(true)),
        ("one_non_ascii", curly),
        ("agent_loop", agent_body()),
    ] {
        g.throughput(Throughput::Bytes(b.len() as u64));
        // The agent loop is about 11 KB; the others 4 KB.
        let label = if name == "agent_loop" {
            "inspect_request_11k_agent_loop".to_owned()
        } else {
            format!("inspect_request_4k_{name}")
        };
        g.bench_function(label, |bench| {
            bench.iter(|| {
                let i = Inspector {
                    engine: &engine,
                    policy: &policy,
                    vault: &vault,
                    provider: "openai",
                    account: Some("bench"),
                    project: None,
                    hash_key: b"bench-key",
                    now: Instant::now(),
                };
                i.inspect_json(&b).expect("json")
            })
        });
    }
    let text = String::from_utf8(body(false)).expect("utf8");
    g.bench_function("engine_scan_4k", |bench| {
        bench.iter(|| engine.find_all(&text).len())
    });
    g.bench_function("injection_assess_4k", |bench| {
        bench.iter(|| {
            airlock::protect::injection::assess([(
                text.as_str(),
                airlock::protect::paths::Role::User,
                "m".to_owned(),
            )])
        })
    });
    let response = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Here is a clearer version of the function, with better names and a test."},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1,"total_tokens":1001}}"#;
    let guard = OutputGuard {
        secret_keywords: Arc::new(secret_keywords(&engine)),
        engine: engine.clone(),
        redact_secrets: true,
        neutralize_links: true,
        warn_only: false,
        link_allowlist: Vec::new(),
    };
    g.throughput(Throughput::Bytes(response.len() as u64));
    g.bench_function("guard_response", |bench| {
        bench.iter(|| {
            let mut notes = Vec::new();
            restore_json(response, None, Some(&guard), &mut notes)
        })
    });
    g.bench_function("usage_from_json", |bench| {
        bench.iter(|| usage_from_json(ProviderKind::OpenAi, response))
    });
    let cfg = Config::from_toml("", None).expect("config").anomaly;
    let detector = Detector::default();
    let prompt = String::from_utf8(body(false)).expect("utf8");
    g.bench_function("anomaly_same_prompt", |bench| {
        bench.iter(|| detector.observe_request(&cfg, "bench", Some(&prompt), Instant::now()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
