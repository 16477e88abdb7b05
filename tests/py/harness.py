"""Start the mock upstream and the real `airlock serve` for the SDK tests.

Binaries: $AIRLOCK_BIN and $MOCK_UPSTREAM_BIN, else $CARGO_TARGET_DIR/debug/…, else
<repo>/target/debug/…. Provider keys go into a keyring service unique to each Airlock, so the
tests need a Secret Service: run them through scripts/with-keyring.sh.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0


def _target_bin(env: str, name: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env])
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return Path(target) / "debug" / name


def airlock_bin() -> Path:
    return _target_bin("AIRLOCK_BIN", "airlock")


def mock_bin() -> Path:
    return _target_bin("MOCK_UPSTREAM_BIN", "mock-upstream")


def now_ms() -> float:
    """Wall-clock ms since the epoch, comparable with the mock's timestamps."""
    return time.time() * 1000.0


# --- fake credentials, generated at run time -------------------------------------------------

_URLSAFE = string.ascii_letters + string.digits + "-_"


def _rand(n: int, alphabet: str = _URLSAFE) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def fake_openai_key() -> str:
    return f"sk-proj-{_rand(74)}T3BlbkFJ{_rand(74)}"


def fake_anthropic_key() -> str:
    return f"sk-ant-api03-{_rand(93)}AA"


def fake_gemini_key() -> str:
    return f"AIza{_rand(35)}"


def fake_compat_key() -> str:
    return f"sk-{_rand(48, string.ascii_letters + string.digits)}"


# --- the mock upstream -----------------------------------------------------------------------


class Mock:
    def __init__(self) -> None:
        binary = mock_bin()
        if not binary.exists():
            raise RuntimeError(f"{binary} not found: run `cargo build --workspace` first")
        self.proc = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = _first_line(self.proc, STARTUP_TIMEOUT)
        prefix = "mock-upstream listening on "
        if not line.startswith(prefix):
            self.stop()
            raise RuntimeError(f"mock-upstream printed {line!r}")
        self.url = line[len(prefix):].strip()

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_mock/requests", timeout=10).json()

    def last(self) -> dict:
        recs = self.requests()
        assert recs, "the mock received no request"
        return recs[-1]

    def reset(self) -> None:
        httpx.post(f"{self.url}/_mock/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    """Read the first stdout line without blocking forever; keep draining the rest."""
    box: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        box.append(first)
        ready.set()
        for _ in proc.stdout:
            pass

    threading.Thread(target=reader, daemon=True).start()
    if not ready.wait(timeout):
        raise RuntimeError(f"no first stdout line within {timeout}s")
    return box[0].rstrip("\n")


# --- airlock -----------------------------------------------------------------------------------


def _toml_str(s: str) -> str:
    return json.dumps(s)


class Airlock:
    """A config, data dir and keyring service on disk; `serve()` starts `airlock serve`."""

    def __init__(self, upstream: str, **overrides) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="airlock-py-"))
        self.keyring_service = f"airlock-test-py-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.config_path = self.dir / "airlock.toml"
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir()
        self.settings = {
            "max_body": "1MiB",
            "connect": "2s",
            "first_byte": "2s",
            "idle": "2s",
            "shutdown_grace": "5s",
            "allowed_origins": ["http://localhost:5173"],
            "client_provider_keys": "reject",
            "upstream": upstream,
            "extra": "",
        }
        self.settings.update(overrides)
        self.write_config()
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.stderr_path = self.dir / "serve.stderr"

    def write_config(self) -> None:
        s = self.settings
        up = _toml_str(s["upstream"])
        origins = ", ".join(_toml_str(o) for o in s["allowed_origins"])
        text = f"""listen = "127.0.0.1:0"
keyring_service = {_toml_str(self.keyring_service)}
max_body = {_toml_str(s["max_body"])}

[timeouts]
connect = {_toml_str(s["connect"])}
first_byte = {_toml_str(s["first_byte"])}
idle = {_toml_str(s["idle"])}
shutdown_grace = {_toml_str(s["shutdown_grace"])}

[security]
allowed_origins = [{origins}]
client_provider_keys = {_toml_str(s["client_provider_keys"])}

[providers.openai]
upstream = {up}

[providers.anthropic]
upstream = {up}

[providers.gemini]
upstream = {up}

[providers.mycompat]
kind = "openai-compatible"
upstream = {up}
auth = "bearer"
"""
        if s["extra"]:
            text += "\n" + s["extra"] + "\n"
        self.config_path.write_text(text)

    def _env(self) -> dict:
        env = dict(os.environ)
        env["AIRLOCK_CONFIG"] = str(self.config_path)
        env["AIRLOCK_DATA_DIR"] = str(self.data_dir)
        for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
            env.pop(k, None)
        return env

    def run(self, *args: str, stdin: str | None = None) -> str:
        cmd = [str(airlock_bin()), "--config", str(self.config_path), *args]
        out = subprocess.run(
            cmd, input=stdin or "", capture_output=True, text=True, env=self._env(), timeout=60
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"`airlock {' '.join(args)}` exited {out.returncode}\n"
                f"stdout: {out.stdout}\nstderr: {out.stderr}"
            )
        return out.stdout

    def spend_json(self, *args: str) -> dict:
        return json.loads(self.run("spend", "--format", "json", *args))

    def admin_token(self) -> str:
        return self.run("admin-token").strip()

    def set_key(self, provider: str, key: str) -> None:
        self.run("keys", "set", provider, stdin=key + "\n")

    def issue(self, name: str, *args: str) -> str:
        key = self.run("keys", "issue", name, *args).strip()
        assert key.startswith("alk_") and " " not in key, f"keys issue printed {key!r}"
        return key

    def serve(self) -> None:
        stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [str(airlock_bin()), "--config", str(self.config_path), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=self._env(),
        )
        stderr.close()
        try:
            line = _first_line(self.proc, STARTUP_TIMEOUT)
        except RuntimeError as e:
            raise RuntimeError(f"airlock serve: {e}; stderr:\n{self.stderr_tail()}") from None
        prefix = "airlock listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"airlock serve printed {line!r}; stderr:\n{self.stderr_tail()}")
        self.url = line[len(prefix):].strip()

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text()[-4000:]
        except OSError:
            return ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Env:
    """The usual fixture: provider keys in the keyring, one unscoped local key, serve running."""

    def __init__(self, mock: Mock, **overrides) -> None:
        self.mock = mock
        self.airlock = Airlock(overrides.pop("upstream", mock.url), **overrides)
        self.keys = {
            "openai": fake_openai_key(),
            "anthropic": fake_anthropic_key(),
            "gemini": fake_gemini_key(),
            "mycompat": fake_compat_key(),
        }
        for provider, key in self.keys.items():
            self.airlock.set_key(provider, key)
        self.alk = self.airlock.issue("py-all")

    def serve(self) -> "Env":
        self.airlock.serve()
        return self

    @property
    def url(self) -> str:
        return self.airlock.url


def assert_no_local_key(rec: dict) -> None:
    for name, value in rec["headers"].items():
        assert "alk_" not in value, f"upstream got an alk_ key in {name}"
    assert "alk_" not in (rec.get("query") or ""), "upstream got an alk_ key in the query"
    assert "alk_" not in (rec.get("body") or ""), "upstream got an alk_ key in the body"


def answer(text: str) -> str:
    """What the mock answers to a prompt."""
    return f"echo: {text}"


def input_tokens(text: str) -> int:
    """The mock's uncached input token count for a prompt (see tests/README.md)."""
    return 8 + -(-len(text.encode()) // 4)


# --- expected cost, from the shipped price table and the mock's usage formula ----------------

PRICES = REPO / "src-core" / "prices" / "model_prices.json"


def price(key: str) -> dict:
    """Pico-dollars per token for one table entry (USD per token x 10^12, exact via Decimal)."""
    from decimal import Decimal

    entry = json.loads(PRICES.read_text(), parse_float=Decimal)[key]

    def pico(field: str):
        v = entry.get(field)
        return None if v is None else int(Decimal(v) * 10**12)

    return {
        "input": pico("input_cost_per_token"),
        "output": pico("output_cost_per_token") or 0,
        "cache_read": pico("cache_read_input_token_cost"),
        "cache_write": pico("cache_creation_input_token_cost"),
    }


def usage(text: str, cached: int = 0, cache_write: int = 0, reasoning: int = 0) -> dict:
    """Normalised usage the mock reports for a generation answering `text`."""
    return {
        "input_tokens": input_tokens(text) + cached + cache_write,
        "output_tokens": len(answer(text).split()) + reasoning,
        "cached_tokens": cached,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }


def cost_micros(u: dict, p: dict) -> int:
    uncached = u["input_tokens"] - u["cached_tokens"] - u["cache_write_tokens"]
    pico = (
        uncached * p["input"]
        + u["cached_tokens"] * (p["cache_read"] if p["cache_read"] is not None else p["input"])
        + u["cache_write_tokens"] * (p["cache_write"] if p["cache_write"] is not None else p["input"])
        + u["output_tokens"] * p["output"]
    )
    return (pico + 500_000) // 1_000_000


# --- fake secrets and personal data for the prompt-protection tests --------------------------
# Generated at run time in the shapes Airlock's rules accept (GitHub CRC32 checksum, Luhn-valid
# card, high-entropy AWS secret); nothing key-shaped is committed.

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
_B32 = string.ascii_uppercase + "234567"


def fake_aws_access_key_id() -> str:
    return "AKIA" + _rand(16, _B32)


def fake_aws_secret_access_key() -> str:
    import math
    from collections import Counter

    while True:
        s = _rand(40, _B64)
        ent = -sum(c / 40 * math.log2(c / 40) for c in Counter(s).values())
        if ent > 4.5:
            return s


def fake_github_pat() -> str:
    import zlib

    body = _rand(30, _BASE62)
    n = zlib.crc32(body.encode())
    digits = ""
    for _ in range(6):
        digits = _BASE62[n % 62] + digits
        n //= 62
    return f"ghp_{body}{digits}"


def fake_email() -> str:
    return f"{_rand(6, string.ascii_lowercase)}.{_rand(8, string.ascii_lowercase)}@gmail.com"


def fake_card() -> str:
    d = [4] + [secrets.randbelow(10) for _ in range(14)]
    total = 0
    for i, x in enumerate(reversed(d)):
        y = x * 2 if i % 2 == 0 else x
        total += y - 9 if y > 9 else y
    d.append((10 - total % 10) % 10)
    return "".join(map(str, d))


def fake_rsa_private_key() -> tuple[str, str]:
    """A PEM RSA private key block with a random body, and its first body line."""
    lines = [_rand(64, _B64) for _ in range(6)] + [_rand(20, _B64) + "=="]
    label = " ".join(["RSA", "PRIVATE", "KEY"])
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----", lines[0]


class Sensitive:
    """One prompt's worth of values, and the prompt as the upstream and the client must see it
    (the same template as the Rust suite's `support::fakes::Sensitive`)."""

    def __init__(self) -> None:
        self.aws_id = fake_aws_access_key_id()
        self.aws_secret = fake_aws_secret_access_key()
        self.github = fake_github_pat()
        self.email = fake_email()
        self.card = fake_card()

    @staticmethod
    def _fill(aws_id, aws_secret, github, email, card) -> str:
        return (
            f"deploy with aws_access_key_id = {aws_id} and aws_secret_access_key = {aws_secret} "
            f"then GITHUB_TOKEN={github} ; mail the receipt to {email} and charge card {card} today"
        )

    def prompt(self) -> str:
        return self._fill(self.aws_id, self.aws_secret, self.github, self.email, self.card)

    _REDACTED = (
        "[REDACTED:aws-access-key-id]",
        "[REDACTED:aws-secret-access-key]",
        "[REDACTED:github-pat]",
    )

    def upstream_prompt(self) -> str:
        return self._fill(*self._REDACTED, "<EMAIL_1>", "<CARD_1>")

    def restored_prompt(self) -> str:
        return self._fill(*self._REDACTED, self.email, self.card)

    def secrets(self) -> list[str]:
        return [self.aws_id, self.aws_secret, self.github]

    def all(self) -> list[str]:
        return [*self.secrets(), self.email, self.card]

    def assert_upstream_protected(self, body: str) -> None:
        for v in self.all():
            assert v not in body, f"upstream received a raw value: {body}"
        assert self.upstream_prompt() in body, f"upstream body: {body}"
