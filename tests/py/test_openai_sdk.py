"""The official `openai` Python SDK through Airlock: chat (plain and streamed), Responses,
embeddings, tool calls. Each test checks the answer, the key the mock received, and for streams
that deltas arrive in order and before the mock wrote its last event."""

from __future__ import annotations

import json

import openai

from harness import answer, assert_no_local_key, input_tokens, now_ms

MODEL = "gpt-4o-mini"
PROMPT = "the quick brown fox jumps over the lazy dog again"


def client(env, **kw) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{env.url}/openai/v1", api_key=env.alk, max_retries=0, timeout=20, **kw
    )


def check_upstream(env, path: str) -> dict:
    rec = env.mock.last()
    assert rec["path"] == path
    assert rec["headers"].get("authorization") == f"Bearer {env.keys['openai']}"
    assert_no_local_key(rec)
    return rec


def test_chat_completion(env):
    res = client(env).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}]
    )
    assert res.choices[0].message.content == answer(PROMPT)
    assert res.choices[0].finish_reason == "stop"
    assert res.usage.prompt_tokens == input_tokens(PROMPT)
    assert res.usage.completion_tokens == len(answer(PROMPT).split())
    check_upstream(env, "/v1/chat/completions")


def test_chat_completion_stream(env):
    stream = client(env).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-scenario": "gap_ms=80"},
    )
    deltas: list[tuple[str, float]] = []
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append((chunk.choices[0].delta.content, now_ms()))
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(d for d, _ in deltas) == answer(PROMPT)
    assert len(deltas) >= 3
    assert usage is not None and usage.prompt_tokens == input_tokens(PROMPT)
    rec = check_upstream(env, "/v1/chat/completions")
    times = rec["stream"]
    assert times["finished"]
    assert deltas[0][1] < times["last_event_ms"], "first delta arrived only after the mock finished"


def test_chat_tool_call_stream(env):
    stream = client(env).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
                },
            }
        ],
        stream=True,
        extra_headers={"x-mock-scenario": "tool_call"},
    )
    name, args = None, ""
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = tc.function.name or name
            args += tc.function.arguments or ""
    assert name == "lookup"
    assert json.loads(args) == {"text": PROMPT}
    check_upstream(env, "/v1/chat/completions")


def test_responses(env):
    res = client(env).responses.create(model=MODEL, input=PROMPT)
    assert res.output_text == answer(PROMPT)
    assert res.usage.input_tokens == input_tokens(PROMPT)
    check_upstream(env, "/v1/responses")


def test_responses_stream(env):
    stream = client(env).responses.create(
        model=MODEL, input=PROMPT, stream=True, extra_headers={"x-mock-scenario": "gap_ms=60"}
    )
    deltas: list[tuple[str, float]] = []
    completed = None
    kinds = []
    for event in stream:
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append((event.delta, now_ms()))
        elif event.type == "response.completed":
            completed = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(d for d, _ in deltas) == answer(PROMPT)
    assert completed is not None and completed.usage.output_tokens == len(answer(PROMPT).split())
    rec = check_upstream(env, "/v1/responses")
    assert deltas[0][1] < rec["stream"]["last_event_ms"]


def test_embeddings(env):
    res = client(env).embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [d.index for d in res.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in res.data)
    assert res.data[0].embedding != res.data[1].embedding
    check_upstream(env, "/v1/embeddings")


def test_models_list(env):
    ids = [m.id for m in client(env).models.list()]
    assert "gpt-4o-mini" in ids
    rec = env.mock.last()
    assert rec["method"] == "GET" and rec["path"] == "/v1/models"
    assert_no_local_key(rec)
