use super::*;
use proptest::prelude::*;

/// Feeds `input` in the given chunk sizes (cycled) and collects events plus leftover.
fn run_chunked(input: &[u8], sizes: &[usize]) -> (Vec<OwnedSseEvent>, Vec<u8>) {
    let mut splitter = SseSplitter::new();
    let mut events = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < input.len() {
        let n = sizes[i % sizes.len()].max(1).min(input.len() - at);
        splitter.push(&input[at..at + n], |ev| {
            events.push(OwnedSseEvent::from(&ev))
        });
        at += n;
        i += 1;
    }
    let rest = splitter.finish(|ev| events.push(OwnedSseEvent::from(&ev)));
    (events, rest)
}

fn run_split_at(input: &[u8], cut: usize) -> (Vec<OwnedSseEvent>, Vec<u8>) {
    let mut splitter = SseSplitter::new();
    let mut events = Vec::new();
    splitter.push(&input[..cut], |ev| events.push(OwnedSseEvent::from(&ev)));
    splitter.push(&input[cut..], |ev| events.push(OwnedSseEvent::from(&ev)));
    let rest = splitter.finish(|ev| events.push(OwnedSseEvent::from(&ev)));
    (events, rest)
}

/// The chunk-boundary tester: whole, every two-way split, and single bytes must agree.
fn assert_chunking_invariant(input: &[u8]) -> (Vec<OwnedSseEvent>, Vec<u8>) {
    let whole = split_all(input);
    for cut in 0..=input.len() {
        assert_eq!(run_split_at(input, cut), whole, "split at {cut}");
    }
    assert_eq!(run_chunked(input, &[1]), whole, "single bytes");
    assert_eq!(run_chunked(input, &[2, 3, 5, 7]), whole, "mixed");
    assert_spans_tile(input, &whole.0, &whole.1);
    whole
}

/// Spans are contiguous from 0, raw equals the input slice, leftover is the tail.
fn assert_spans_tile(input: &[u8], events: &[OwnedSseEvent], rest: &[u8]) {
    let mut at = 0u64;
    for ev in events {
        assert_eq!(ev.span.start, at);
        assert!(ev.span.end > ev.span.start);
        let range = ev.span.start as usize..ev.span.end as usize;
        assert_eq!(&input[range], &ev.raw[..]);
        at = ev.span.end;
    }
    assert_eq!(&input[at as usize..], rest);
}

fn data_events(events: &[OwnedSseEvent]) -> Vec<(Option<&str>, &str)> {
    events
        .iter()
        .filter(|e| e.has_data)
        .map(|e| (e.event.as_deref(), e.data.as_str()))
        .collect()
}

#[test]
fn openai_style_lf_stream() {
    let input = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
    let (events, rest) = assert_chunking_invariant(input);
    assert!(rest.is_empty());
    assert_eq!(
        data_events(&events),
        vec![(None, "{\"a\":1}"), (None, "{\"b\":2}"), (None, "[DONE]")]
    );
    assert_eq!(events[0].raw, b"data: {\"a\":1}\n\n");
}

#[test]
fn anthropic_style_named_events() {
    let input = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n";
    let (events, rest) = assert_chunking_invariant(input);
    assert!(rest.is_empty());
    assert_eq!(
        data_events(&events),
        vec![
            (Some("message_start"), "{\"type\":\"message_start\"}"),
            (Some("ping"), "{\"type\": \"ping\"}")
        ]
    );
}

#[test]
fn gemini_style_crlf_stream() {
    let input = b"data: {\"x\":\"\xc3\xa9t\xc3\xa9\"}\r\n\r\ndata: {\"y\":2}\r\n\r\n";
    let (events, rest) = assert_chunking_invariant(input);
    assert!(rest.is_empty());
    assert_eq!(
        data_events(&events),
        vec![(None, "{\"x\":\"été\"}"), (None, "{\"y\":2}")]
    );
    assert_eq!(events[0].raw, "data: {\"x\":\"été\"}\r\n\r\n".as_bytes());
}

#[test]
fn bare_cr_line_endings_and_final_cr_waits_for_next_byte() {
    let input = b"data: a\r\rdata: b\r\r";
    let (events, rest) = assert_chunking_invariant(input);
    assert!(rest.is_empty());
    assert_eq!(data_events(&events), vec![(None, "a"), (None, "b")]);

    // The final "\r" blank line is only settled by the next byte or by finish().
    let mut s = SseSplitter::new();
    let mut n = 0;
    s.push(b"data: a\r\r", |_| n += 1);
    assert_eq!(n, 0);
    s.push(b"\n", |ev| {
        assert_eq!(ev.raw, b"data: a\r\r\n");
        n += 1;
    });
    assert_eq!(n, 1);
}

#[test]
fn mixed_line_endings_multiline_data_comments_and_fields() {
    let input = b": keep-alive\n\n\
event: update\r\nid: 42\rretry: 1500\ndata: line one\r\ndata:line two\ndata\ndata:  three\n\n\
id: bad\0id\nretry: 12x\ndata: last\n\n";
    let (events, rest) = assert_chunking_invariant(input);
    assert!(rest.is_empty());
    assert_eq!(events.len(), 3);
    assert!(
        !events[0].has_data,
        "a comment block is reported but not dispatched"
    );
    assert_eq!(events[0].raw, b": keep-alive\n\n");
    let ev = &events[1];
    assert_eq!(ev.event.as_deref(), Some("update"));
    assert_eq!(ev.id.as_deref(), Some("42"));
    assert_eq!(ev.retry, Some(1500));
    assert_eq!(ev.data, "line one\nline two\n\n three");
    let ev = &events[2];
    assert_eq!(ev.id, None, "an id with NUL is ignored");
    assert_eq!(ev.retry, None, "a non-numeric retry is ignored");
    assert_eq!(ev.data, "last");
}

#[test]
fn empty_data_field_dispatches_empty_string() {
    let (events, _) = assert_chunking_invariant(b"data\n\ndata:\n\n");
    assert_eq!(data_events(&events), vec![(None, ""), (None, "")]);
}

#[test]
fn extra_blank_lines_are_their_own_blocks() {
    let input = b"\n\ndata: x\n\n\n";
    let (events, rest) = assert_chunking_invariant(input);
    assert!(rest.is_empty());
    let raws: Vec<&[u8]> = events.iter().map(|e| &e.raw[..]).collect();
    assert_eq!(raws, vec![&b"\n"[..], b"\n", b"data: x\n\n", b"\n"]);
}

#[test]
fn incomplete_trailing_event_is_held_and_returned() {
    let input = b"data: one\n\ndata: tw";
    let (events, rest) = assert_chunking_invariant(input);
    assert_eq!(events.len(), 1);
    assert_eq!(rest, b"data: tw");
    let (events, rest) = assert_chunking_invariant(b"data: x\ndata: y\n");
    assert!(events.is_empty());
    assert_eq!(rest, b"data: x\ndata: y\n");
}

#[test]
fn bom_at_stream_start_is_ignored_but_kept_in_raw() {
    let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
    let (events, _) = assert_chunking_invariant(input);
    assert_eq!(events[0].data, "a");
    assert!(events[0].raw.starts_with(&BOM));
    // A BOM anywhere else is content: the field name is not `data`.
    assert!(!events[1].has_data);
    // A lone BOM followed by a blank line is one empty block.
    let (events, _) = assert_chunking_invariant(b"\xEF\xBB\xBF\ndata: c\n\n");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, "c");
}

#[test]
fn utf8_split_inside_a_character_is_identical() {
    let input = "data: 日本語 🚀 ünïcödé\n\n".as_bytes();
    let (events, _) = assert_chunking_invariant(input);
    assert_eq!(events[0].data, "日本語 🚀 ünïcödé");
}

#[test]
fn invalid_utf8_is_replaced_not_rejected() {
    let (events, _) = assert_chunking_invariant(b"data: a\xFFb\n\n");
    assert_eq!(events[0].data, "a\u{FFFD}b");
    assert_eq!(events[0].raw, b"data: a\xFFb\n\n");
}

#[test]
fn spans_are_absolute_across_pushes() {
    let mut s = SseSplitter::new();
    let mut spans = Vec::new();
    s.push(b"data: a\n\nda", |ev| spans.push(ev.span.clone()));
    s.push(b"ta: b\n\ndata: c\n\n", |ev| spans.push(ev.span.clone()));
    assert_eq!(spans, vec![0..9, 9..18, 18..27]);
    assert_eq!(s.bytes_seen(), 27);
    assert_eq!(s.pending_len(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_tile(
        input in proptest::collection::vec(any::<u8>(), 0..300),
        sizes in proptest::collection::vec(1usize..17, 1..6),
    ) {
        let whole = split_all(&input);
        assert_spans_tile(&input, &whole.0, &whole.1);
        prop_assert_eq!(run_chunked(&input, &sizes), whole);
    }

    #[test]
    fn sse_like_bytes_chunk_invariant(
        parts in proptest::collection::vec(
            prop_oneof![
                Just(&b"data: "[..]), Just(&b"data:"[..]), Just(&b"event: x"[..]),
                Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"\r\n"[..]), Just(&b":c"[..]),
                Just(&b"id: 1"[..]), Just(&b"retry: 9"[..]), Just(&b"\xEF\xBB\xBF"[..]),
                Just("é".as_bytes()), Just(&b"{\"k\":1}"[..]),
            ],
            0..40,
        ),
        sizes in proptest::collection::vec(1usize..9, 1..5),
    ) {
        let input: Vec<u8> = parts.concat();
        let whole = split_all(&input);
        assert_spans_tile(&input, &whole.0, &whole.1);
        prop_assert_eq!(run_chunked(&input, &sizes), whole);
    }
}
