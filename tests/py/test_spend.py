"""Spend to the micro-dollar through the real SDKs: after a scripted set of requests (OpenAI chat,
streamed chat, Responses, embeddings, Anthropic plain and streamed, Gemini over httpx, with
cached / cache-write / reasoning tokens from the mock), `airlock spend --by model` and
`GET /_airlock/spend?by=model` equal the mock's usage times the shipped table's prices."""

from __future__ import annotations

from collections import defaultdict

import anthropic
import httpx
import openai

from harness import cost_micros, input_tokens, price, usage

FIELDS = ["input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens"]


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(1, n + 1))


def test_spend_per_model_is_exact(env):
    oa = openai.OpenAI(base_url=f"{env.url}/openai/v1", api_key=env.alk, max_retries=0, timeout=20)
    an = anthropic.Anthropic(base_url=f"{env.url}/anthropic", api_key=env.alk, max_retries=0, timeout=20)
    expected: dict[str, dict] = defaultdict(lambda: defaultdict(int))

    def expect(model: str, price_key: str, u: dict) -> None:
        e = expected[model]
        for f in FIELDS:
            e[f] += u[f]
        e["requests"] += 1
        e["cost_micros"] += cost_micros(u, price(price_key))

    def sc(**kw) -> dict:
        v = "; ".join(f"{k}={n}" for k, n in kw.items() if n)
        return {"x-mock-scenario": v} if v else {}

    # OpenAI chat, plain with cache + reasoning.
    t = words(13)
    oa.chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": t}],
                               extra_headers=sc(cached=256, reasoning=120))
    expect("o3-mini", "o3-mini", usage(t, cached=256, reasoning=120))
    # Streamed without include_usage: the SDK sees no usage chunk, Airlock still meters it.
    t = words(17)
    chunks = list(oa.chat.completions.create(model="gpt-4o", stream=True,
                                             messages=[{"role": "user", "content": t}]))
    assert all(c.usage is None for c in chunks), "the SDK got a usage chunk it did not ask for"
    assert all(c.choices for c in chunks), "an empty-choices chunk reached the SDK"
    expect("gpt-4o", "gpt-4o", usage(t))
    # Streamed with include_usage: the client gets its usage chunk.
    t = words(9)
    chunks = list(oa.chat.completions.create(model="gpt-4o", stream=True,
                                             stream_options={"include_usage": True},
                                             messages=[{"role": "user", "content": t}]))
    got = [c.usage for c in chunks if c.usage is not None]
    assert len(got) == 1 and got[0].completion_tokens == usage(t)["output_tokens"], got
    expect("gpt-4o", "gpt-4o", usage(t))
    # Responses, plain and streamed.
    t = words(11)
    oa.responses.create(model="gpt-4.1-mini", input=t, extra_headers=sc(cached=64, reasoning=30))
    expect("gpt-4.1-mini", "gpt-4.1-mini", usage(t, cached=64, reasoning=30))
    t = words(15)
    list(oa.responses.create(model="gpt-4.1-mini", input=t, stream=True))
    expect("gpt-4.1-mini", "gpt-4.1-mini", usage(t))
    # Embeddings.
    inputs = ["alpha beta", words(20)]
    oa.embeddings.create(model="text-embedding-3-small", input=inputs)
    expect("text-embedding-3-small", "text-embedding-3-small",
           {**{f: 0 for f in FIELDS}, "input_tokens": sum(input_tokens(i) for i in inputs)})
    # Anthropic plain with cache read + write, and streamed.
    t = words(12)
    an.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": t}],
                       extra_headers=sc(cached=1000, cache_write=2000))
    expect("claude-sonnet-4-5", "claude-sonnet-4-5", usage(t, cached=1000, cache_write=2000))
    t = words(19)
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=256,
                            messages=[{"role": "user", "content": t}]) as s:
        s.get_final_message()
    expect("claude-sonnet-4-5", "claude-sonnet-4-5", usage(t))
    # Gemini over httpx, plain with cache + thoughts, and streamed.
    h = {"x-goog-api-key": env.alk}
    t = words(14)
    r = httpx.post(f"{env.url}/gemini/v1beta/models/gemini-2.5-pro:generateContent",
                   headers={**h, **sc(cached=128, reasoning=50)},
                   json={"contents": [{"role": "user", "parts": [{"text": t}]}]}, timeout=20)
    assert r.status_code == 200, r.text
    expect("gemini-2.5-pro", "gemini/gemini-2.5-pro", usage(t, cached=128, reasoning=50))
    t = words(21)
    with httpx.stream("POST", f"{env.url}/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                      headers=h, json={"contents": [{"role": "user", "parts": [{"text": t}]}]}, timeout=20) as r:
        assert r.status_code == 200
        r.read()
    expect("gemini-2.0-flash", "gemini/gemini-2.0-flash", usage(t))

    token = env.airlock.admin_token()
    api = httpx.get(f"{env.url}/_airlock/spend", params={"by": "model", "since": "all"},
                    headers={"authorization": f"Bearer {token}"}, timeout=10).json()
    cli = env.airlock.spend_json("--by", "model", "--since", "all")
    for what, report in (("cli", cli), ("api", api)):
        rows = {r["group"]: r for r in report["rows"]}
        assert set(rows) == set(expected), (what, sorted(rows))
        total = defaultdict(int)
        for model, e in expected.items():
            got = {k: rows[model][k] for k in e}
            assert got == dict(e), (what, model, got, dict(e))
            assert rows[model]["estimated"] is False, (what, model)
            for k, v in e.items():
                total[k] += v
        assert {k: report["total"][k] for k in total} == dict(total), (what, report["total"])
