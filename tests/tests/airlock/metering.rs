//! Metering: spend to the micro-dollar from the mock's usage and the shipped price table, the
//! client's OpenAI stream untouched by the injected `include_usage`, and cut streams estimated.

use crate::{env, env_with, words};
use airlock_e2e::support::client::{post, End, HttpResponse};
use airlock_e2e::support::prices::{embedding_usage, generation_usage, Extra, PriceTable, Usage};
use airlock_e2e::support::provider::REQUEST_ID_HEADER;
use airlock_e2e::support::{Admin, Provider, TestEnv};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// One scripted request and what the mock will report for it.
struct Call {
    path: String,
    auth: (&'static str, String),
    body: Value,
    extra: Extra,
    /// The model as the ledger groups it, and its key in the price table.
    model: &'static str,
    price_key: &'static str,
    usage: Usage,
    stream: bool,
}

fn gen_call(
    env: &TestEnv,
    p: Provider,
    model: &'static str,
    price_key: &'static str,
    prompt: &str,
    stream: bool,
    extra: Extra,
) -> Call {
    Call {
        path: p.chat_path_for_model(model, stream),
        auth: p.auth_header(&env.alk),
        body: p.chat_body_for_model(model, prompt, stream),
        extra,
        model,
        price_key,
        usage: generation_usage(prompt, extra),
        stream,
    }
}

async fn send(env: &TestEnv, c: &Call) -> HttpResponse {
    let mut req = post(env.addr(), &c.path)
        .header(c.auth.0, &c.auth.1)
        .header("anthropic-version", "2023-06-01");
    let scenario = c.extra.scenario();
    if !scenario.is_empty() {
        req = req.header("x-mock-scenario", &scenario);
    }
    let res = req.json(&c.body).send().await.expect("send");
    assert_eq!(res.status, 200, "{}: {}", c.path, res.text());
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_by_model_is_mock_usage_times_table_price_to_the_micro_dollar() {
    let env = env();
    let table = PriceTable::load().expect("price table");
    let (oa, an, ge) = (Provider::OpenAi, Provider::Anthropic, Provider::Gemini);
    let none = Extra::default();
    let mut calls = vec![
        gen_call(&env, oa, "gpt-4o", "gpt-4o", &words(13), false, none),
        gen_call(&env, oa, "gpt-4o", "gpt-4o", &words(21), true, none),
        gen_call(
            &env,
            oa,
            "o3-mini",
            "o3-mini",
            &words(17),
            false,
            Extra {
                cached: 640,
                reasoning: 333,
                ..none
            },
        ),
        gen_call(
            &env,
            oa,
            "o3-mini",
            "o3-mini",
            &words(9),
            true,
            Extra {
                cached: 128,
                reasoning: 77,
                ..none
            },
        ),
        gen_call(
            &env,
            an,
            "claude-sonnet-4-5",
            "claude-sonnet-4-5",
            &words(11),
            false,
            Extra {
                cached: 1024,
                cache_write: 2048,
                ..none
            },
        ),
        gen_call(
            &env,
            an,
            "claude-sonnet-4-5",
            "claude-sonnet-4-5",
            &words(19),
            true,
            Extra {
                cached: 500,
                cache_write: 300,
                ..none
            },
        ),
        gen_call(
            &env,
            ge,
            "gemini-2.5-pro",
            "gemini/gemini-2.5-pro",
            &words(15),
            false,
            Extra {
                cached: 256,
                reasoning: 99,
                ..none
            },
        ),
        gen_call(
            &env,
            ge,
            "gemini-2.0-flash",
            "gemini/gemini-2.0-flash",
            &words(23),
            true,
            none,
        ),
    ];
    // OpenAI chat stream without include_usage: Airlock must still meter it.
    let mut plain_stream = gen_call(&env, oa, "gpt-4o", "gpt-4o", &words(7), true, none);
    plain_stream
        .body
        .as_object_mut()
        .expect("object")
        .remove("stream_options");
    calls.push(plain_stream);
    // Responses API, plain and streamed, with cache and reasoning.
    for (stream, n) in [(false, 12), (true, 16)] {
        let prompt = words(n);
        let extra = Extra {
            cached: 64,
            reasoning: 40,
            ..none
        };
        calls.push(Call {
            path: "/openai/v1/responses".to_owned(),
            auth: oa.auth_header(&env.alk),
            body: json!({"model": "gpt-4.1-mini", "input": prompt, "stream": stream}),
            extra,
            model: "gpt-4.1-mini",
            price_key: "gpt-4.1-mini",
            usage: generation_usage(&prompt, extra),
            stream,
        });
    }
    let inputs = ["alpha beta", "gamma delta epsilon", &words(30)];
    calls.push(Call {
        path: "/openai/v1/embeddings".to_owned(),
        auth: oa.auth_header(&env.alk),
        body: json!({"model": "text-embedding-3-small", "input": inputs}),
        extra: none,
        model: "text-embedding-3-small",
        price_key: "text-embedding-3-small",
        usage: embedding_usage(&inputs),
        stream: false,
    });

    let mut expected: BTreeMap<&str, (Usage, i64, u64)> = BTreeMap::new();
    for c in &calls {
        let res = send(&env, c).await;
        if c.stream {
            assert!(
                res.header("content-type")
                    .unwrap_or_default()
                    .starts_with("text/event-stream"),
                "{}: not streamed",
                c.path
            );
        }
        let cost = c.usage.cost_micros(&table.price(c.price_key));
        let e = expected.entry(c.model).or_default();
        e.0.add(&c.usage);
        e.1 += cost;
        e.2 += 1;
        // Per request first: a wrong total is easier to explain from the failing row.
        let id = res
            .header(REQUEST_ID_HEADER)
            .expect("request id")
            .to_owned();
        let row = env.airlock.ledger_row(&id).await;
        assert_eq!(
            (
                row["input_tokens"].as_u64(),
                row["output_tokens"].as_u64(),
                row["cost_micros"].as_i64(),
                row["estimated"].as_bool()
            ),
            (
                Some(c.usage.input),
                Some(c.usage.output),
                Some(cost),
                Some(false)
            ),
            "{} {} (stream {}, {:?}): ledger row {row}",
            c.model,
            c.path,
            c.stream,
            c.extra
        );
    }

    let cli = env
        .airlock
        .setup
        .spend_json(&["--by", "model", "--since", "all"])
        .expect("spend");
    let api = Admin::new(&env.airlock)
        .expect("admin")
        .get_json("spend?by=model&since=all")
        .await;
    for (what, report) in [("airlock spend", &cli), ("GET /_airlock/spend", &api)] {
        let rows = report["rows"].as_array().expect("rows");
        let got: BTreeMap<&str, &Value> = rows
            .iter()
            .map(|r| (r["group"].as_str().unwrap_or("?"), r))
            .collect();
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            expected.keys().copied().collect::<Vec<_>>(),
            "{what}: groups"
        );
        let mut total = (Usage::default(), 0i64, 0u64);
        for (model, (u, cost, n)) in &expected {
            let r = got[model];
            assert_totals(what, model, r, u, *cost, *n);
            total.0.add(u);
            total.1 += cost;
            total.2 += n;
        }
        assert_totals(what, "total", &report["total"], &total.0, total.1, total.2);
    }
}

#[track_caller]
fn assert_totals(what: &str, group: &str, r: &Value, u: &Usage, cost: i64, n: u64) {
    let got = [
        "requests",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_micros",
    ]
    .map(|f| r[f].as_i64());
    let want = [
        n as i64,
        u.input as i64,
        u.output as i64,
        u.cached as i64,
        u.cache_write as i64,
        u.reasoning as i64,
        cost,
    ]
    .map(Some);
    assert_eq!(
        got, want,
        "{what} {group}: [requests, input, output, cached, cache_write, reasoning, cost_micros]: {r}"
    );
    assert_eq!(r["estimated"].as_bool(), Some(false), "{what} {group}: {r}");
}

/// Replace the per-request parts of an OpenAI chunk stream (`chatcmpl-mock<N>`, `created`) so
/// two answers to the same request compare byte for byte.
fn normalise(raw: &[u8], mock_id: u64) -> String {
    let text = String::from_utf8_lossy(raw)
        .replace(&format!("\"chatcmpl-mock{mock_id}\""), "\"chatcmpl-mockN\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("\"created\":") {
        let (head, tail) = rest.split_at(i + "\"created\":".len());
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_without_include_usage_is_byte_identical_to_the_upstream_stream() {
    let env = env();
    let table = PriceTable::load().expect("price table");
    let prompt = words(11);
    let body = json!({
        "model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": prompt}]
    });
    // What the client would get without Airlock.
    let direct = post(env.mock.addr(), "/v1/chat/completions")
        .header("authorization", &format!("Bearer {}", env.keys.openai))
        .json(&body)
        .send()
        .await
        .expect("direct");
    assert_eq!(direct.status, 200, "{}", direct.text());
    let via = post(env.addr(), "/openai/v1/chat/completions")
        .header("authorization", &format!("Bearer {}", env.alk))
        .json(&body)
        .send()
        .await
        .expect("via airlock");
    assert_eq!(via.status, 200, "{}", via.text());
    let recs = env.mock.requests();
    assert_eq!(recs.len(), 2);
    let upstream: Value = recs[1].json().expect("json body");
    assert_eq!(
        upstream.pointer("/stream_options/include_usage"),
        Some(&Value::Bool(true)),
        "Airlock did not ask the upstream for usage: {upstream}"
    );
    assert!(
        !direct.text().contains("\"usage\":{"),
        "the mock sent usage without include_usage"
    );
    let want = normalise(&direct.body, recs[0].id);
    let got = normalise(&via.body, recs[1].id);
    assert_eq!(
        got, want,
        "the client's stream differs from the stream without Airlock"
    );
    // And it was metered from the stripped usage chunk, exactly.
    let id = via.header(REQUEST_ID_HEADER).expect("id").to_owned();
    let row = env.airlock.ledger_row(&id).await;
    let u = generation_usage(&prompt, Extra::default());
    assert_eq!(row["output_tokens"].as_u64(), Some(u.output), "{row}");
    assert_eq!(
        row["cost_micros"].as_i64(),
        Some(u.cost_micros(&table.price("gpt-4o-mini"))),
        "{row}"
    );
    assert_eq!(row["estimated"].as_bool(), Some(false), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_stream_with_include_usage_keeps_the_usage_chunk() {
    let env = env();
    let prompt = words(6);
    let res = Provider::OpenAi
        .chat(env.addr(), Some(&env.alk), &prompt, true)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status, 200);
    let events = res.events();
    let usage = events
        .iter()
        .filter_map(|e| e.json())
        .find(|j| j["usage"].is_object())
        .unwrap_or_else(|| panic!("no usage chunk for a client that asked: {}", res.text()));
    let u = generation_usage(&prompt, Extra::default());
    assert_eq!(
        usage
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64),
        Some(u.output)
    );
    assert_eq!(usage["choices"], json!([]), "{usage}");
}

/// How a stream is cut (after N events), and the `body_end` the ledger must record.
#[derive(Debug, Clone, Copy)]
enum Cut {
    ClientGone(usize),
    UpstreamReset(usize),
    Stall(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_are_recorded_as_estimated_with_how_they_ended() {
    let env = env_with(|c| c.idle = "1s".to_owned());
    let cuts = [
        Cut::ClientGone(1),
        Cut::ClientGone(2),
        Cut::ClientGone(4),
        Cut::UpstreamReset(3),
        Cut::Stall(2),
    ];
    let mut pending = Vec::new();
    for p in Provider::ALL {
        for cut in cuts {
            let scenario = match cut {
                Cut::ClientGone(_) => "gap_ms=150".to_owned(),
                Cut::UpstreamReset(n) => format!("reset_after={n}"),
                Cut::Stall(n) => format!("stall_after={n}"),
            };
            let mut res = p
                .chat(env.addr(), Some(&env.alk), &words(20), true)
                .header("x-mock-scenario", &scenario)
                .send_streaming()
                .await
                .expect("send");
            assert_eq!(res.status, 200, "{} {cut:?}", p.name());
            let id = res.header(REQUEST_ID_HEADER).expect("id").to_owned();
            let want_end = match cut {
                Cut::ClientGone(k) => {
                    for _ in 0..k {
                        let ev = res.next_event(Duration::from_secs(5)).await;
                        assert!(matches!(ev, Ok(Some(_))), "{} {cut:?}: {ev:?}", p.name());
                    }
                    drop(res);
                    "client_gone"
                }
                Cut::UpstreamReset(_) => {
                    // The client gets the provider's error event and a clean end; the ledger
                    // still says how the upstream ended.
                    let (_, end) = res.drain(Duration::from_secs(5)).await;
                    assert!(matches!(end, End::Clean), "{} {cut:?}: {end:?}", p.name());
                    "upstream_error"
                }
                Cut::Stall(_) => {
                    let (_, end) = res.drain(Duration::from_secs(5)).await;
                    assert!(
                        !matches!(end, End::TimedOut),
                        "{} {cut:?}: {end:?}",
                        p.name()
                    );
                    "idle_timeout"
                }
            };
            pending.push((p, cut, id, want_end));
        }
    }
    let mut failures = Vec::new();
    for (p, cut, id, want_end) in pending {
        let row = env.airlock.ledger_row(&id).await;
        let ok = row["estimated"].as_bool() == Some(true)
            && row["cost_micros"].as_i64().is_some_and(|c| c > 0)
            && row["body_end"].as_str() == Some(want_end);
        if !ok {
            failures.push(format!(
                "{} {cut:?}: want estimated=true, cost>0, body_end={want_end}; got estimated={}, cost_micros={}, body_end={}",
                p.name(),
                row["estimated"],
                row["cost_micros"],
                row["body_end"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The estimates were counted in the short-lived helper, not in the server (whose memory
    // would keep the tokenizer tables for good).
    let server = env.airlock.pid().expect("server pid");
    let helpers = children_running(server, "__count-tokens");
    assert_eq!(helpers, 1, "one token-counter child of the server");
    let log = env.airlock.stderr_tail();
    assert!(
        !log.contains("counting tokens in the server process"),
        "fell back to counting in the server: {log}"
    );
}

/// QA: a non-streamed request whose client gave up while the upstream was still answering was
/// recorded with no tokens and no cost, though the upstream had it and bills it. Its input is
/// now estimated, and the row says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_drops_after_it_went_upstream_is_estimated() {
    let env = env();
    for p in Provider::ALL {
        let gave_up = p
            .chat(env.addr(), Some(&env.alk), &words(40), false)
            .header("x-mock-scenario", "delay_ms=1500")
            .timeout(Duration::from_millis(400))
            .send()
            .await;
        assert!(
            gave_up.is_err(),
            "{}: the client should have given up first",
            p.name()
        );
    }
    assert_eq!(
        env.mock.requests().len(),
        Provider::ALL.len(),
        "each request reached the upstream"
    );
    let setup = &env.airlock.setup;
    let rows = airlock_e2e::support::poll(
        Duration::from_secs(5),
        "a row for each client that left",
        || async move {
            let rows = setup.log_rows(&["--limit", "100"]).ok()?;
            let gone: Vec<Value> = rows
                .into_iter()
                .filter(|r| r["reason"] == "client_gone")
                .collect();
            (gone.len() == Provider::ALL.len()).then_some(gone)
        },
    )
    .await;
    for row in rows {
        assert_eq!(row["status"], 499, "{row}");
        assert_eq!(row["estimated"], true, "{row}");
        assert!(
            row["input_tokens"].as_u64().is_some_and(|n| n >= 40),
            "{row}"
        );
        assert!(row["cost_micros"].as_i64().is_some_and(|c| c > 0), "{row}");
    }
}

/// How many live children of `parent` have `arg` on their command line (from `/proc`).
fn children_running(parent: u32, arg: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            let path = e.path();
            let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state, then the parent's pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
            ppid == Some(parent) && cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
        })
        .count()
}

/// Regression: `spend --by model` showed `$0.00?` and its CSV `0.00` for a model none of whose
/// requests had a price, and `log --format csv` left the cost empty alike for an unpriced
/// request and a blocked one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_cost_is_shown_as_unknown_and_apart_from_blocked_rows() {
    let env = env();
    let p = Provider::OpenAi;
    let unpriced = "no-such-model-for-prices";
    let ask = |model: &str, text: &str| {
        post(env.addr(), &p.chat_path(false))
            .header("authorization", &format!("Bearer {}", env.alk))
            .json(&p.chat_body_for_model(model, text, false))
    };
    let res = ask(unpriced, "hello").send().await.expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let res = ask(p.model(), "hello").send().await.expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    // Blocked before it cost anything: a private key in the prompt.
    let pem = airlock_e2e::support::fakes::rsa_private_key();
    let res = ask(p.model(), &pem).send().await.expect("send");
    assert_eq!(res.status, 400, "{}", res.text());
    env.airlock.ledger_rows_at_least(3).await;
    let setup = &env.airlock.setup;

    let table = setup
        .run_ok(&["spend", "--by", "model", "--since", "all"], None)
        .expect("spend");
    let row = table
        .lines()
        .find(|l| l.starts_with(unpriced))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.trim_end().ends_with("unknown"), "{table}");
    let priced = table
        .lines()
        .find(|l| l.starts_with(p.model()))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(priced.contains('$'), "{table}");

    let csv = setup
        .run_ok(
            &[
                "spend", "--by", "model", "--since", "all", "--format", "csv",
            ],
            None,
        )
        .expect("spend csv");
    let cells: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with(unpriced))
        .unwrap_or_else(|| panic!("{csv}"))
        .split(',')
        .collect();
    assert_eq!(cells[5], "unknown", "cost_usd: {csv}");
    assert_eq!(cells[7], "1", "unknown_cost_requests: {csv}");

    let log = setup
        .run_ok(&["log", "--format", "csv"], None)
        .expect("log csv");
    let cost_of = |pred: &dyn Fn(&[&str]) -> bool| -> String {
        log.lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|c| pred(c))
            .unwrap_or_else(|| panic!("{log}"))[12]
            .to_owned()
    };
    assert_eq!(cost_of(&|c| c[6] == unpriced), "unknown", "{log}");
    assert_eq!(cost_of(&|c| c[8] == "blocked"), "", "{log}");
    let known = cost_of(&|c| c[6] == p.model() && c[8] == "allowed");
    assert!(known.parse::<f64>().is_ok(), "{known}: {log}");
}
