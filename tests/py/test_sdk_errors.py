"""Every Airlock error path through the official SDKs: each must raise the SDK's normal error
type for the status, carry Airlock's message in the provider's error format, and the response
must have an `x-airlock-request-id`."""

from __future__ import annotations

import socket
import time

import anthropic
import openai
import pytest

from harness import fake_anthropic_key, fake_openai_key

PROMPT = "hello"


class OpenAISide:
    name = "openai"
    sdk = openai
    model = "gpt-4o-mini"

    def client(self, base: str, key: str, **kw):
        return openai.OpenAI(base_url=f"{base}/openai/v1", api_key=key, max_retries=0, timeout=20, **kw)

    def call(self, client, text: str = PROMPT, model: str | None = None, **kw):
        return client.chat.completions.create(
            model=model or self.model, messages=[{"role": "user", "content": text}], **kw
        )

    def real_key(self) -> str:
        return fake_openai_key()

    def message(self, e) -> str:
        # openai puts body["error"] into e.body
        assert isinstance(e.body, dict), e.body
        assert {"message", "type", "code"} <= set(e.body), f"not OpenAI's error format: {e.body}"
        return e.body["message"]

    def upstream_key(self, rec: dict) -> str | None:
        return (rec["headers"].get("authorization") or "").removeprefix("Bearer ") or None


class AnthropicSide:
    name = "anthropic"
    sdk = anthropic
    model = "claude-haiku-4-5"

    def client(self, base: str, key: str, **kw):
        return anthropic.Anthropic(base_url=f"{base}/anthropic", api_key=key, max_retries=0, timeout=20, **kw)

    def call(self, client, text: str = PROMPT, model: str | None = None, **kw):
        return client.messages.create(
            model=model or self.model, max_tokens=64, messages=[{"role": "user", "content": text}], **kw
        )

    def real_key(self) -> str:
        return fake_anthropic_key()

    def message(self, e) -> str:
        assert isinstance(e.body, dict), e.body
        assert e.body.get("type") == "error", f"not Anthropic's error format: {e.body}"
        assert {"type", "message"} <= set(e.body.get("error", {})), f"not Anthropic's error format: {e.body}"
        return e.body["error"]["message"]

    def upstream_key(self, rec: dict) -> str | None:
        # Recent SDKs send `Authorization: Bearer`, older ones `x-api-key`; passthrough keeps
        # whichever the client used.
        bearer = (rec["headers"].get("authorization") or "").removeprefix("Bearer ")
        return rec["headers"].get("x-api-key") or bearer or None


SIDES = [OpenAISide(), AnthropicSide()]


@pytest.fixture(params=SIDES, ids=lambda s: s.name)
def side(request):
    return request.param


def expect(side, exc_type, status: int, fn, *, from_airlock: bool = True) -> str:
    with pytest.raises(exc_type) as info:
        fn()
    e = info.value
    assert e.status_code == status, f"{side.name}: expected {status}, got {e.status_code}: {e}"
    assert e.response.headers.get("x-airlock-request-id"), f"{side.name}: no x-airlock-request-id"
    msg = side.message(e)
    assert msg and msg in str(e), f"{side.name}: SDK error does not show the message: {e}"
    if from_airlock:
        assert "mock upstream" not in msg
    return msg


def test_unknown_local_key_is_authentication_error(env, side):
    c = side.client(env.url, "alk_" + "x" * 40)
    expect(side, side.sdk.AuthenticationError, 401, lambda: side.call(c))
    assert env.mock.requests() == []


def test_key_for_another_provider_is_permission_denied(make_env, side):
    env = make_env()
    other = "anthropic" if side.name == "openai" else "openai"
    scoped = env.airlock.issue("scoped", "--provider", other)
    env.serve()
    expect(side, side.sdk.PermissionDeniedError, 403, lambda: side.call(side.client(env.url, scoped)))


def test_model_out_of_scope_is_permission_denied(make_env, side):
    env = make_env()
    scoped = env.airlock.issue("scoped", "--model", "only-this-model")
    env.serve()
    c = side.client(env.url, scoped)
    expect(side, side.sdk.PermissionDeniedError, 403, lambda: side.call(c))
    side.call(c, model="only-this-model")  # in scope: works


def test_expired_key_is_permission_denied(make_env, side):
    env = make_env()
    key = env.airlock.issue("brief", "--expires", "1s")
    issued = time.monotonic()
    env.serve()
    time.sleep(max(0.0, 1.6 - (time.monotonic() - issued)))
    expect(side, side.sdk.PermissionDeniedError, 403, lambda: side.call(side.client(env.url, key)))


def test_real_provider_key_is_authentication_error_naming_airlock_keys(env, side):
    real = side.real_key()
    msg = expect(side, side.sdk.AuthenticationError, 401, lambda: side.call(side.client(env.url, real)))
    assert "airlock keys" in msg
    assert real not in msg
    assert env.mock.requests() == []


def test_real_provider_key_with_passthrough_is_forwarded(make_env, side):
    env = make_env(client_provider_keys="passthrough").serve()
    real = side.real_key()
    side.call(side.client(env.url, real))
    rec = env.mock.last()
    assert side.upstream_key(rec) == real, rec["headers"]


def test_upstream_unreachable_is_internal_server_error_502(make_env, side):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    env = make_env(upstream=dead).serve()
    expect(side, side.sdk.InternalServerError, 502, lambda: side.call(side.client(env.url, env.alk)))


def test_upstream_timeout_is_internal_server_error_504(env, side):
    c = side.client(env.url, env.alk)
    started = time.monotonic()
    expect(
        side,
        side.sdk.InternalServerError,
        504,
        lambda: side.call(c, extra_headers={"x-mock-scenario": "delay_ms=6000"}),
    )
    assert time.monotonic() - started < 5.5


def test_body_over_limit_is_413(env, side):
    c = side.client(env.url, env.alk)
    expect(side, side.sdk.APIStatusError, 413, lambda: side.call(c, text="x" * (1024 * 1024 + 100)))


def test_wrong_content_type_is_415(env, side):
    c = side.client(env.url, env.alk)
    expect(
        side, side.sdk.APIStatusError, 415, lambda: side.call(c, extra_headers={"Content-Type": "text/plain"})
    )


def test_malformed_json_is_bad_request(env, side):
    # The SDKs always send valid JSON; a transport that cuts the last byte makes it malformed.
    transport_mod = _sdk_httpx(side)

    class Truncating(transport_mod.HTTPTransport):
        def handle_request(self, request):
            body = request.read()[:-1]
            headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
            cut = transport_mod.Request(request.method, request.url, headers=headers, content=body)
            return super().handle_request(cut)

    c = side.client(env.url, env.alk, http_client=transport_mod.Client(transport=Truncating()))
    expect(side, side.sdk.BadRequestError, 400, lambda: side.call(c))
    assert env.mock.requests() == []


def test_unknown_provider_prefix_is_not_found_listing_providers(env):
    c = openai.OpenAI(base_url=f"{env.url}/nosuch/v1", api_key=env.alk, max_retries=0, timeout=20)
    msg = expect(SIDES[0], openai.NotFoundError, 404, lambda: SIDES[0].call(c))
    for known in ("openai", "anthropic", "gemini", "mycompat"):
        assert known in msg


def test_foreign_host_is_rejected(env, side):
    port = env.url.rsplit(":", 1)[1]
    c = side.client(env.url, env.alk)
    with pytest.raises(side.sdk.APIStatusError) as info:
        side.call(c, extra_headers={"Host": f"evil.example.com:{port}"})
    assert info.value.status_code in (403, 421)
    expect_status = info.value.status_code
    expect(
        side,
        side.sdk.APIStatusError,
        expect_status,
        lambda: side.call(c, extra_headers={"Host": f"evil.example.com:{port}"}),
    )


def test_disallowed_origin_is_permission_denied(env, side):
    c = side.client(env.url, env.alk)
    expect(
        side,
        side.sdk.PermissionDeniedError,
        403,
        lambda: side.call(c, extra_headers={"Origin": "http://evil.example"}),
    )


def test_upstream_500_and_429_pass_through(env, side):
    c = side.client(env.url, env.alk)
    msg = expect(
        side,
        side.sdk.InternalServerError,
        500,
        lambda: side.call(c, extra_headers={"x-mock-scenario": "status=500"}),
        from_airlock=False,
    )
    assert "mock upstream" in msg
    expect(
        side,
        side.sdk.RateLimitError,
        429,
        lambda: side.call(c, extra_headers={"x-mock-scenario": "status=429"}),
        from_airlock=False,
    )


def _sdk_httpx(side):
    """The HTTP library this SDK version is built on (httpx, or its successor httpx2)."""
    import importlib

    inner = side.client("http://127.0.0.1:9", "alk_x")._client
    for cls in type(inner).__mro__:
        top = cls.__module__.split(".")[0]
        if top in ("httpx", "httpx2"):
            return importlib.import_module(top)
    raise AssertionError(f"cannot tell the HTTP library of {type(inner)}")
