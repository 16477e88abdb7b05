"""Limits through the real SDKs: a $0.01 key budget and rpm raise `RateLimitError` (429, with
Retry-After) in each provider's format; `airlock pause` raises `PermissionDeniedError` with
`airlock_paused` until `airlock resume`."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from harness import cost_micros, price, usage

TEXT = " ".join(f"word{i}" for i in range(150))


def oa_client(env, key):
    return openai.OpenAI(base_url=f"{env.url}/openai/v1", api_key=key, max_retries=0, timeout=20)


def an_client(env, key):
    return anthropic.Anthropic(base_url=f"{env.url}/anthropic", api_key=key, max_retries=0, timeout=20)


SIDES = {
    "openai": (oa_client, "gpt-4o", lambda c, m, t: c.chat.completions.create(
        model=m, messages=[{"role": "user", "content": t}])),
    "anthropic": (an_client, "claude-sonnet-4-5", lambda c, m, t: c.messages.create(
        model=m, max_tokens=512, messages=[{"role": "user", "content": t}])),
}


@pytest.mark.parametrize("side", sorted(SIDES))
def test_key_budget_raises_rate_limit_error_and_stops_upstream(make_env, side):
    env = make_env(extra="[limits.keys.budgeted]\ndaily_usd = 0.01\n")
    key = env.airlock.issue("budgeted")
    env.serve()
    make, model, call = SIDES[side]
    client = make(env, key)
    each = cost_micros(usage(TEXT), price(model))
    n = -(-10_000 // each)
    for _ in range(n):
        call(client, model, TEXT)
    with pytest.raises(openai.RateLimitError if side == "openai" else anthropic.RateLimitError) as e:
        call(client, model, TEXT)
    assert e.value.status_code == 429
    assert int(e.value.response.headers["retry-after"]) >= 1
    if side == "openai":
        assert e.value.code == "airlock_budget_exceeded", e.value.body
    assert len(env.mock.requests()) == n, "a request reached the mock after the budget was spent"


@pytest.mark.parametrize("side", sorted(SIDES))
def test_rpm_and_pause_through_the_sdk(make_env, side):
    env = make_env()
    key = env.airlock.issue("slow", "--rpm", "2")
    env.serve()
    make, model, call = SIDES[side]
    sdk = openai if side == "openai" else anthropic
    client = make(env, key)
    call(client, model, "one")
    call(client, model, "two")
    with pytest.raises(sdk.RateLimitError) as e:
        call(client, model, "three")
    assert int(e.value.response.headers["retry-after"]) >= 1
    if side == "openai":
        assert e.value.code == "airlock_rate_limited"

    free = make(env, env.alk)
    env.airlock.run("pause")
    deadline = time.monotonic() + 3
    while True:
        try:
            call(free, model, "paused?")
        except sdk.PermissionDeniedError as err:
            assert "paused" in str(err)
            if side == "openai":
                assert err.code == "airlock_paused"
            break
        assert time.monotonic() < deadline, "pause did not take effect"
        time.sleep(0.05)
    env.airlock.run("resume")
    deadline = time.monotonic() + 3
    while True:
        try:
            call(free, model, "running?")
            break
        except sdk.PermissionDeniedError:
            assert time.monotonic() < deadline, "resume did not take effect"
            time.sleep(0.05)
