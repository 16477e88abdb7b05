//! Streams pass through event by event, and broken upstream streams end for the client too.

use crate::{env, env_with, words};
use airlock_e2e::mock::text;
use airlock_e2e::support::client::End;
use airlock_e2e::support::{Provider, TestEnv};
use serde_json::Value;
use std::time::Duration;

const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Whether this event is the provider's normal end of stream.
fn is_terminal(p: Provider, data: &str) -> bool {
    match p {
        Provider::OpenAi => data == "[DONE]",
        Provider::Anthropic => data.contains("\"message_stop\""),
        Provider::Gemini => data.contains("\"finishReason\""),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let env = env();
    for p in Provider::ALL {
        env.mock.reset();
        let prompt = words(9);
        let mut res = p
            .chat(env.addr(), Some(&env.alk), &prompt, true)
            .header("x-mock-scenario", "gap_ms=120")
            .send_streaming()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}", p.name());
        assert!(
            res.header("x-airlock-request-id").is_some(),
            "{}: no request id on a stream",
            p.name()
        );
        let ct = res.header("content-type").unwrap_or_default().to_owned();
        assert!(
            ct.starts_with("text/event-stream"),
            "{}: content-type {ct}",
            p.name()
        );
        let (events, end) = res.drain(EVENT_WAIT).await;
        assert!(
            matches!(end, End::Clean),
            "{}: stream ended with {end:?}",
            p.name()
        );
        assert!(!events.is_empty(), "{}: no events", p.name());

        let text: String = events
            .iter()
            .filter_map(|(e, _)| e.json())
            .filter_map(|j| p.delta(&j))
            .collect();
        assert_eq!(
            text,
            text::answer(&prompt),
            "{}: deltas out of order or lost",
            p.name()
        );
        let last = &events[events.len() - 1].0;
        assert!(
            is_terminal(p, &last.data),
            "{}: last event {:?}",
            p.name(),
            last.data
        );

        let rec = env.mock.requests().pop().expect("recorded");
        let times = rec.stream.expect("mock streamed");
        assert!(
            times.finished,
            "{}: mock did not finish: {times:?}",
            p.name()
        );
        let mock_last = times.last_event_ms.expect("mock wrote events");
        let client_first = events[0].1;
        assert!(
            client_first < mock_last,
            "{}: first event reached the client at {client_first}, after the mock wrote its last at {mock_last}: buffered",
            p.name()
        );
        // Events spread over time as the mock sent them, not in one burst at the end.
        let spread = events[events.len() - 1].1 - client_first;
        let expected = (times.events_planned.saturating_sub(1) as f64) * 120.0;
        assert!(
            spread > expected * 0.5,
            "{}: events arrived within {spread} ms, mock spread them over {expected} ms",
            p.name()
        );
    }
}

/// The provider's own mid-stream error event, if `e` is one: its message.
fn error_event(p: Provider, e: &airlock_e2e::sse::Event) -> Option<String> {
    let v: Value = serde_json::from_str(&e.data).ok()?;
    let ok = match p {
        Provider::Anthropic => e.event.as_deref() == Some("error") && v["type"] == "error",
        Provider::OpenAi => v["error"]["type"].is_string(),
        Provider::Gemini => v["error"]["status"].is_string() && v["error"]["code"].is_u64(),
    };
    ok.then(|| v["error"]["message"].as_str().unwrap_or("").to_owned())
}

/// QA defect 5: a stream the upstream stops feeding is cut after `timeouts.idle` and ends with
/// the provider's error event, then a clean end of body (not "incomplete chunked read").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upstream_stream_is_ended_after_idle_timeout() {
    let env = env(); // idle = 2s
    for p in Provider::ALL {
        let mut res = p
            .chat(env.addr(), Some(&env.alk), &words(8), true)
            .header("x-mock-scenario", "stall_after=2")
            .send_streaming()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}", p.name());
        let started = std::time::Instant::now();
        let (events, end) = res.drain(Duration::from_secs(8)).await;
        assert!(
            matches!(end, End::Clean),
            "{}: the client must get a clean end after the error event ({end:?})",
            p.name()
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{}: took {:?}",
            p.name(),
            started.elapsed()
        );
        assert!(
            !events.iter().any(|(e, _)| is_terminal(p, &e.data)),
            "{}: a stalled stream must not look complete",
            p.name()
        );
        let last = events.last().map(|(e, _)| e).expect("events");
        let msg = error_event(p, last)
            .unwrap_or_else(|| panic!("{}: last event is not an error: {last:?}", p.name()));
        assert!(msg.contains("timeouts.idle"), "{}: {msg}", p.name());
    }
}

/// QA defect 5: an upstream reset mid-stream gave the client "incomplete chunked read". It
/// gets the provider's error event and a clean end instead; the stream still does not look
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_stream_ends_with_the_provider_error_event() {
    let env = env();
    for p in Provider::ALL {
        let mut res = p
            .chat(env.addr(), Some(&env.alk), &words(8), true)
            .header("x-mock-scenario", "reset_after=3")
            .send_streaming()
            .await
            .expect("send");
        assert_eq!(res.status, 200, "{}", p.name());
        let (events, end) = res.drain(Duration::from_secs(8)).await;
        assert!(
            matches!(end, End::Clean),
            "{}: the client must get a clean end after the error event ({end:?})",
            p.name()
        );
        assert!(
            !events.iter().any(|(e, _)| is_terminal(p, &e.data)),
            "{}: a cut stream must not look complete",
            p.name()
        );
        let last = events.last().map(|(e, _)| e).expect("events");
        assert!(
            error_event(p, last).is_some(),
            "{}: last event is not the provider's error event: {last:?}",
            p.name()
        );
    }
}

/// A Gemini stream without `alt=sse` under a mock `scenario`, read to its end: the body must
/// be one JSON array; its elements.
async fn gemini_array_stream(env: &TestEnv, scenario: &str) -> Vec<Value> {
    let (n, v) = Provider::Gemini.auth_header(&env.alk);
    let res = airlock_e2e::support::client::post(
        env.addr(),
        "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
    )
    .header(n, &v)
    .header("x-mock-scenario", scenario)
    .json(&Provider::Gemini.chat_body(&words(8), false))
    .send_streaming()
    .await
    .expect("send");
    assert_eq!(res.status, 200);
    let body = res
        .collect(Duration::from_secs(8))
        .await
        .expect("clean end");
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", String::from_utf8_lossy(&body)));
    match v {
        Value::Array(items) => items,
        other => panic!("not an array: {other}"),
    }
}

/// QA defect 5, Gemini without `alt=sse`: a reset mid-array ends the array with an error
/// element, so the body is still a JSON array the client can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_array_stream_reset_ends_with_an_error_element() {
    let env = env();
    let items = gemini_array_stream(&env, "reset_after=3").await;
    let last = items.last().expect("elements");
    assert_eq!(last["error"]["status"], "UNAVAILABLE", "{items:?}");
    assert!(items.len() >= 2, "{items:?}");
}

/// Gemini without `alt=sse`, cut in the middle of an element: the half element never reaches
/// the client (it was passed on as it came, and the error element after it made the body
/// invalid JSON); the array ends after the last whole element, with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_array_stream_cut_mid_element_still_ends_as_a_json_array() {
    // The output guard off: the stream is passed on unchanged (with it on, it is re-framed
    // element by element anyway).
    let env = env_with(|c| {
        c.extra = "[policy]\noutput_secrets = \"allow\"\nexfil_links = \"allow\"".into()
    });
    let items = gemini_array_stream(&env, "reset_mid=2").await;
    assert_eq!(
        items.len(),
        3,
        "two whole elements and the error: {items:?}"
    );
    assert!(
        items[..2].iter().all(|e| e.get("candidates").is_some()),
        "{items:?}"
    );
    assert_eq!(items[2]["error"]["status"], "UNAVAILABLE", "{items:?}");
}

/// Google decodes the path before routing, so `%3AstreamGenerateContent` streams. Airlock
/// forwarded it, but handled the answer as one JSON object: no usage found in the array, and
/// the row said "not streamed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_stream_method_with_an_escaped_colon_is_handled_as_a_stream() {
    let env = env();
    let (n, v) = Provider::Gemini.auth_header(&env.alk);
    let res = airlock_e2e::support::client::post(
        env.addr(),
        "/gemini/v1beta/models/gemini-2.0-flash%3AstreamGenerateContent",
    )
    .header(n, &v)
    .json(&Provider::Gemini.chat_body(&words(8), false))
    .send()
    .await
    .expect("send");
    assert_eq!(res.status, 200, "{}", res.text());
    let v: Value = serde_json::from_slice(&res.body).expect("JSON array");
    assert!(v.as_array().is_some_and(|a| a.len() > 1), "{v}");
    let id = res
        .header(airlock_e2e::support::provider::REQUEST_ID_HEADER)
        .expect("request id")
        .to_owned();
    let row = env.airlock.ledger_row(&id).await;
    assert_eq!(row["streamed"], true, "{row}");
    assert_eq!(row["estimated"], false, "{row}");
    assert!(row["output_tokens"].as_u64().unwrap_or(0) > 0, "{row}");
}
