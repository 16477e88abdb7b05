"""Fixtures for the SDK end-to-end tests: one mock upstream per session, a fresh Airlock (config,
data dir, keyring service, keys, `airlock serve`) per test."""

from __future__ import annotations

import pytest

from harness import Env, Mock


@pytest.fixture(scope="session")
def mock():
    m = Mock()
    yield m
    m.stop()


@pytest.fixture
def make_env(mock, request):
    """Build an Env with config overrides; call `.serve()` after optional key issuing."""
    envs: list[Env] = []

    def make(**overrides) -> Env:
        mock.reset()
        env = Env(mock, **overrides)
        envs.append(env)
        return env

    yield make
    failed = getattr(request.node, "rep_call", None)
    for env in envs:
        if failed is not None and failed.failed:
            print(f"---- airlock serve stderr ----\n{env.airlock.stderr_tail()}")
        env.airlock.stop()


@pytest.fixture
def env(make_env) -> Env:
    return make_env().serve()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
