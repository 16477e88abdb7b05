"""Airlock as a real `pre-commit` hook: a commit that adds a secret is refused, a clean one passes.

Needs `pre-commit` importable by this Python (tests/py/requirements.txt) and the built binary in
AIRLOCK_BIN (falls back to $CARGO_TARGET_DIR/debug/airlock, or target/debug/airlock in this
repository).
Credentials are generated here at run time, so this file holds none.
"""

import os
import random
import shutil
import string
import subprocess
import sys
import zlib
from pathlib import Path

import harness
import pytest

REPO = Path(__file__).resolve().parents[2]
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def airlock_bin() -> Path:
    """The binary the other tests run (harness: AIRLOCK_BIN, else $CARGO_TARGET_DIR/debug)."""
    binary = harness.airlock_bin()
    assert binary.is_file() and os.access(binary, os.X_OK), f"airlock binary not found at {binary}"
    return binary


def github_token(rng: random.Random) -> str:
    """A GitHub-format token whose last 6 chars are the base62 CRC32 of the random part."""
    body = "".join(rng.choice(BASE62) for _ in range(30))
    n = zlib.crc32(body.encode())
    check = ""
    for _ in range(6):
        check = BASE62[n % 62] + check
        n //= 62
    return "ghp" + "_" + body + check


def run(cmd, cwd, env, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture()
def env(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # The hook's entry is `airlock …`; expose the binary under that name on PATH.
    (bindir / "airlock").symlink_to(airlock_bin())
    e = dict(os.environ)
    e["PATH"] = f"{bindir}{os.pathsep}{e.get('PATH', '')}"
    e["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-cache")
    e["GIT_AUTHOR_NAME"] = e["GIT_COMMITTER_NAME"] = "dev"
    e["GIT_AUTHOR_EMAIL"] = e["GIT_COMMITTER_EMAIL"] = "dev@localhost"
    e["GIT_CONFIG_NOSYSTEM"] = "1"
    e["HOME"] = str(tmp_path)
    return e


def make_hook_repo(tmp_path: Path, env) -> tuple[Path, str]:
    """A git repo holding this repository's .pre-commit-hooks.yaml, as pre-commit clones it."""
    hooks = tmp_path / "hooks-repo"
    hooks.mkdir()
    shutil.copy(REPO / ".pre-commit-hooks.yaml", hooks / ".pre-commit-hooks.yaml")
    run(["git", "init", "-q"], hooks, env)
    run(["git", "add", "."], hooks, env)
    run(["git", "commit", "-qm", "hooks"], hooks, env)
    rev = run(["git", "rev-parse", "HEAD"], hooks, env).stdout.strip()
    return hooks, rev


def make_work_repo(tmp_path: Path, env, hooks: Path, rev: str, hook_id: str) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    run(["git", "init", "-q"], work, env)
    (work / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks}\n    rev: {rev}\n    hooks:\n      - id: {hook_id}\n"
    )
    (work / "README.md").write_text("# demo\n")
    run(["git", "add", "."], work, env)
    run(["git", "commit", "-qm", "init", "--no-verify"], work, env)
    run([sys.executable, "-m", "pre_commit", "install"], work, env)
    return work


def commit_count(work: Path, env) -> int:
    return int(run(["git", "rev-list", "--count", "HEAD"], work, env).stdout.strip())


def test_commit_with_secret_is_refused_and_clean_commit_passes(tmp_path, env):
    rng = random.Random(1234)
    hooks, rev = make_hook_repo(tmp_path, env)
    work = make_work_repo(tmp_path, env, hooks, rev, "airlock-scan")

    token = github_token(rng)
    (work / "settings.py").write_text(f"DEBUG = False\nGITHUB_TOKEN = '{token}'\n")
    run(["git", "add", "settings.py"], work, env)
    refused = run(["git", "commit", "-m", "add settings"], work, env, check=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "github-pat" in output, output
    assert "settings.py:2:" in output, output
    assert token[4:] not in output, "the hook must never print the secret"
    assert commit_count(work, env) == 1

    (work / "settings.py").write_text("import os\nDEBUG = False\nGITHUB_TOKEN = os.environ['GITHUB_TOKEN']\n")
    run(["git", "add", "settings.py"], work, env)
    accepted = run(["git", "commit", "-m", "read the token from the environment"], work, env, check=False)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert commit_count(work, env) == 2


def test_secrets_only_hook_ignores_pii_but_not_keys(tmp_path, env):
    rng = random.Random(99)
    hooks, rev = make_hook_repo(tmp_path, env)
    work = make_work_repo(tmp_path, env, hooks, rev, "airlock-scan-secrets")

    (work / "contacts.md").write_text("Ask " + "maria.lopez" + "@" + "gmail.com about the launch.\n")
    run(["git", "add", "contacts.md"], work, env)
    ok = run(["git", "commit", "-m", "contacts"], work, env, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    key = "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))
    (work / "deploy.sh").write_text(f"export AWS_ACCESS_KEY_ID={key}\n")
    run(["git", "add", "deploy.sh"], work, env)
    refused = run(["git", "commit", "-m", "deploy"], work, env, check=False)
    assert refused.returncode != 0
    assert "aws-access-key-id" in refused.stdout + refused.stderr
