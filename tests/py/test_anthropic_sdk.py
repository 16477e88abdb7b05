"""The official `anthropic` Python SDK through Airlock: messages plain, streamed, and a streamed
tool call."""

from __future__ import annotations

import anthropic

from harness import answer, assert_no_local_key, input_tokens, now_ms

MODEL = "claude-haiku-4-5"
PROMPT = "pack my box with five dozen liquor jugs please"


def client(env, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{env.url}/anthropic", api_key=env.alk, max_retries=0, timeout=20, **kw
    )


def check_upstream(env) -> dict:
    rec = env.mock.last()
    assert rec["path"] == "/v1/messages"
    assert rec["headers"].get("x-api-key") == env.keys["anthropic"]
    assert rec["headers"].get("anthropic-version"), "anthropic-version not passed through"
    assert "authorization" not in rec["headers"]
    assert_no_local_key(rec)
    return rec


def test_message(env):
    msg = client(env).messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": PROMPT}]
    )
    assert msg.content[0].type == "text"
    assert msg.content[0].text == answer(PROMPT)
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == input_tokens(PROMPT)
    check_upstream(env)


def test_message_stream(env):
    deltas: list[tuple[str, float]] = []
    with client(env).messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"x-mock-scenario": "gap_ms=80"},
    ) as stream:
        for text in stream.text_stream:
            deltas.append((text, now_ms()))
        final = stream.get_final_message()
    assert "".join(d for d, _ in deltas) == answer(PROMPT)
    assert len(deltas) >= 3
    assert final.usage.output_tokens == len(answer(PROMPT).split())
    rec = check_upstream(env)
    assert rec["stream"]["finished"]
    assert deltas[0][1] < rec["stream"]["last_event_ms"], "first delta arrived only after the mock finished"


def test_tool_use_stream(env):
    with client(env).messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}],
        extra_headers={"x-mock-scenario": "tool_call"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.name == "lookup"
    assert block.input == {"text": PROMPT}
    check_upstream(env)


def test_beta_header_passes_through(env):
    client(env).messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    rec = check_upstream(env)
    assert rec["headers"].get("anthropic-beta") == "prompt-caching-2024-07-31"
