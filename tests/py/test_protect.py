"""Prompt protection through the real `openai` and `anthropic` Python SDKs: the mock receives
secrets redacted and PII as placeholders; the SDK gets the PII back (whole answers, streams cut
mid-placeholder, tool calls) and never the secrets. Plus a gzip/deflate body and a private-key
block as the SDK's own error class."""

from __future__ import annotations

import gzip
import json
import zlib

import anthropic
import httpx
import openai
import pytest

from harness import Sensitive, answer, fake_rsa_private_key

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
# Streams cut every 3 chars, so `<EMAIL_1>` and `<CARD_1>` straddle events.
SPLIT = "chunk_chars=3; gap_ms=1"
TOOL_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}


def oai(env) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{env.url}/openai/v1", api_key=env.alk, max_retries=0, timeout=20)


def ant(env) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{env.url}/anthropic", api_key=env.alk, max_retries=0, timeout=20)


def upstream_body(env) -> str:
    recs = env.mock.requests()
    assert len(recs) == 1, recs
    return recs[0]["body"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_redacts_pseudonymizes_and_restores(env, stream):
    s = Sensitive()
    messages = [{"role": "user", "content": s.prompt()}]
    c = oai(env)
    if stream:
        chunks = c.chat.completions.create(
            model=OPENAI_MODEL, messages=messages, stream=True,
            extra_headers={"x-mock-scenario": SPLIT},
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    else:
        raw = c.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=messages)
        assert raw.headers.get("x-airlock-findings") == "secret=3, pii=2"
        text = raw.parse().choices[0].message.content
    s.assert_upstream_protected(upstream_body(env))
    assert text == answer(s.restored_prompt())
    for v in s.secrets():
        assert v not in text


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_redacts_pseudonymizes_and_restores(env, stream):
    s = Sensitive()
    messages = [{"role": "user", "content": s.prompt()}]
    c = ant(env)
    if stream:
        with c.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=256, messages=messages,
            extra_headers={"x-mock-scenario": SPLIT},
        ) as st:
            text = "".join(st.text_stream)
    else:
        msg = c.messages.create(model=ANTHROPIC_MODEL, max_tokens=256, messages=messages)
        text = msg.content[0].text
    s.assert_upstream_protected(upstream_body(env))
    assert text == answer(s.restored_prompt())


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_call_arguments_are_restored(env, stream):
    s = Sensitive()
    kw = dict(
        model=OPENAI_MODEL,
        messages=[{"role": "user", "content": s.prompt()}],
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": TOOL_SCHEMA}}],
        extra_headers={"x-mock-scenario": "tool_call; " + SPLIT},
    )
    c = oai(env)
    if stream:
        args = ""
        for ch in c.chat.completions.create(stream=True, **kw):
            for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
                args += tc.function.arguments or ""
    else:
        args = c.chat.completions.create(**kw).choices[0].message.tool_calls[0].function.arguments
    s.assert_upstream_protected(upstream_body(env))
    assert json.loads(args) == {"text": s.restored_prompt()}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_tool_use_input_is_restored(env, stream):
    s = Sensitive()
    kw = dict(
        model=ANTHROPIC_MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": s.prompt()}],
        tools=[{"name": "lookup", "input_schema": TOOL_SCHEMA}],
        extra_headers={"x-mock-scenario": "tool_call; " + SPLIT},
    )
    c = ant(env)
    if stream:
        with c.messages.stream(**kw) as st:
            final = st.get_final_message()
    else:
        final = c.messages.create(**kw)
    block = final.content[0]
    assert block.type == "tool_use"
    assert block.input == {"text": s.restored_prompt()}
    s.assert_upstream_protected(upstream_body(env))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_body_is_decoded_and_redacted(env, encoding):
    s = Sensitive()
    body = json.dumps({"model": OPENAI_MODEL, "messages": [{"role": "user", "content": s.prompt()}]})
    data = gzip.compress(body.encode()) if encoding == "gzip" else zlib.compress(body.encode())
    res = httpx.post(
        f"{env.url}/openai/v1/chat/completions",
        content=data,
        headers={
            "authorization": f"Bearer {env.alk}",
            "content-type": "application/json",
            "content-encoding": encoding,
        },
        timeout=20,
    )
    assert res.status_code == 200, res.text
    rec = env.mock.requests()[-1]
    assert "content-encoding" not in rec["headers"]
    s.assert_upstream_protected(rec["body"])
    assert res.json()["choices"][0]["message"]["content"] == answer(s.restored_prompt())


def test_private_key_is_a_bad_request_error_naming_rule_and_location(env):
    pem, first_line = fake_rsa_private_key()
    with pytest.raises(openai.BadRequestError) as e:
        oai(env).chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "user", "content": f"fix this key {pem}"}]
        )
    assert e.value.code == "airlock_blocked_secret"
    assert "private-key-rsa" in str(e.value) and "messages[0].content" in str(e.value)
    assert first_line not in str(e.value)
    with pytest.raises(anthropic.BadRequestError) as e2:
        ant(env).messages.create(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": pem}]
        )
    assert "private-key-rsa" in str(e2.value)
    assert env.mock.requests() == []
