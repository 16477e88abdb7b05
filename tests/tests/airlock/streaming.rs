//! Streams pass through event by event, and broken upstream streams end for the client too.

use crate::{env, words};
use airlock_e2e::mock::text;
use airlock_e2e::support::client::End;
use airlock_e2e::support::Provider;
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
            !matches!(end, End::TimedOut),
            "{}: stalled stream still open after 8s (idle is 2s)",
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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_stream_is_not_a_clean_end() {
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
            !matches!(end, End::TimedOut),
            "{}: stream hangs after upstream reset",
            p.name()
        );
        assert!(
            !events.iter().any(|(e, _)| is_terminal(p, &e.data)),
            "{}: a cut stream must not look complete",
            p.name()
        );
        assert!(
            matches!(end, End::Error(_)),
            "{}: upstream reset became a clean end of body ({end:?})",
            p.name()
        );
    }
}
