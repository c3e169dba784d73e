"""Chroma's own JS client tests, from Chroma's repository (``clients/new-js/packages/chromadb``
at the commit that made it 3.5.0, ccf5968d8), unchanged, against ``streamer serve``: jest with
Chroma's settings and our global setup, which starts ``streamer serve`` where Chroma's starts a
Chroma server (tests/chroma_js_repo/). Chroma's repository is not part of this project and CI
has no copy of it: set ``CHROMA_JS_PACKAGE`` to that folder of a checkout whose devDependencies
are installed (docs/http-api.md says how); skipped without it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streamer.testing.kafka import BOOTSTRAP, ROOT, ensure_broker, new_prefix
from tests.helpers import require_node

CONFIG = ROOT / "tests" / "chroma_js_repo" / "jest.config.cjs"
#: Chroma's tests that are not run, by jest's full name, each with the reason.
DESELECTED = {
    **{f"AdminClient it should {what}": "creates tenants and databases: streamer serves "
       "Chroma's default tenant and database only (docs/http-api.md, Tenants and databases)"
       for what in ("create and get a tenant", "create and get a database for a tenant",
                    "delete a database", "list databases for a tenant",
                    "throw well-formatted errors")},
    "id filtering it should handle ID filtering with deleted and upserted IDs":
        "expects a query whose ids include a deleted one to fail: Chroma's local index "
        "raises InternalError 'Error finding id' there; streamer answers from the ids that "
        "exist (docs/http-api.md)",
}
#: What the rest gives here (2026-12-07), the pass count quoted in docs/http-api.md; Chroma's
#: own ``test.skip`` skips 3 more.
PASSED = 185


@pytest.fixture(scope="module")
def package() -> Path:
    require_node()
    raw = os.environ.get("CHROMA_JS_PACKAGE")
    if not raw:
        pytest.skip("CHROMA_JS_PACKAGE names no checkout of Chroma's JS client")
    path = Path(raw)
    if not (path / "node_modules" / "jest").is_dir() or not (path / "test").is_dir():
        pytest.skip(f"{path} has no test/ or no installed devDependencies")
    return path


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_chromas_js_client_tests_pass(package: Path, tmp_path: Path, backend: str) -> None:
    env = {**os.environ, "CHROMA_JS_PACKAGE": str(package), "STREAMER_PYTHON": sys.executable,
           "STREAMER_ROOT": str(ROOT)}
    if backend == "kafka":
        ensure_broker()
        env |= {"STREAMER_SERVE_ARGS": "", "STREAMER_KAFKA_BOOTSTRAP": BOOTSTRAP,
                "STREAMER_KAFKA_TOPIC_PREFIX": new_prefix()}
    skip = "|".join(re.escape(name) for name in DESELECTED)
    out = tmp_path / "jest.json"
    done = subprocess.run(
        ["npx", "jest", "--config", str(CONFIG), "--runInBand", "--json", "--outputFile",
         str(out), "--testNamePattern", f"^(?!({skip})$)"],
        cwd=package, env=env, capture_output=True, text=True, timeout=840)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(out.read_text())
    failed = [a["fullName"] for f in report["testResults"] for a in f["assertionResults"]
              if a["status"] == "failed"]
    assert not failed, (failed, done.stderr[-5000:])
    assert report["numPassedTests"] == PASSED, done.stderr[-3000:]
    ran = {a["fullName"] for f in report["testResults"] for a in f["assertionResults"]
           if a["status"] == "passed"}
    assert not ran & DESELECTED.keys()
