"""Gemini through Airlock with plain HTTP (httpx): generateContent with the key in the
`x-goog-api-key` header or the `key` query parameter, and streamGenerateContent over SSE."""

from __future__ import annotations

import json

import httpx

from harness import answer, assert_no_local_key, input_tokens, now_ms

MODEL = "gemini-2.0-flash"
PROMPT = "sphinx of black quartz judge my vow today"


def body(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def upstream_key(rec: dict) -> str | None:
    if "x-goog-api-key" in rec["headers"]:
        return rec["headers"]["x-goog-api-key"]
    for kv in (rec.get("query") or "").split("&"):
        if kv.startswith("key="):
            return kv[4:]
    return None


def test_generate_content_header_key(env):
    res = httpx.post(
        f"{env.url}/gemini/v1beta/models/{MODEL}:generateContent",
        headers={"x-goog-api-key": env.alk},
        json=body(PROMPT),
        timeout=20,
    )
    assert res.status_code == 200, res.text
    data = res.json()
    assert data["candidates"][0]["content"]["parts"][0]["text"] == answer(PROMPT)
    assert data["usageMetadata"]["promptTokenCount"] == input_tokens(PROMPT)
    rec = env.mock.last()
    assert rec["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert upstream_key(rec) == env.keys["gemini"]
    assert_no_local_key(rec)


def test_generate_content_query_key(env):
    res = httpx.post(
        f"{env.url}/gemini/v1beta/models/{MODEL}:generateContent",
        params={"key": env.alk},
        json=body(PROMPT),
        timeout=20,
    )
    assert res.status_code == 200, res.text
    rec = env.mock.last()
    assert upstream_key(rec) == env.keys["gemini"]
    assert_no_local_key(rec)


def test_stream_generate_content_sse(env):
    deltas: list[tuple[str, float]] = []
    with httpx.stream(
        "POST",
        f"{env.url}/gemini/v1beta/models/{MODEL}:streamGenerateContent",
        params={"alt": "sse"},
        headers={"x-goog-api-key": env.alk, "x-mock-scenario": "gap_ms=80"},
        json=body(PROMPT),
        timeout=20,
    ) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        last_usage = None
        for line in res.iter_lines():
            if not line.startswith("data:"):
                continue
            chunk = json.loads(line[5:].strip())
            deltas.append((chunk["candidates"][0]["content"]["parts"][0]["text"], now_ms()))
            last_usage = chunk["usageMetadata"]
    assert "".join(d for d, _ in deltas) == answer(PROMPT)
    assert len(deltas) >= 3
    assert last_usage["candidatesTokenCount"] == len(answer(PROMPT).split())
    rec = env.mock.last()
    assert "alt=sse" in (rec.get("query") or "")
    assert upstream_key(rec) == env.keys["gemini"]
    assert_no_local_key(rec)
    assert deltas[0][1] < rec["stream"]["last_event_ms"], "first chunk arrived only after the mock finished"
