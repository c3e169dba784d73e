"""Chroma's npm JS client, ``chromadb`` 3.5.0 (pinned in tests/chroma_js/package-lock.json),
from Node against ``streamer serve``: tests/chroma_js/check.mjs creates a collection, adds
records with embeddings, documents and metadatas, queries by embedding, gets with ``where``,
updates, upserts, deletes, counts, lists and deletes the collection, with a bearer token in
``headers`` or anonymously (``STREAMER_HTTP_ANONYMOUS=rw``), on ``--embedded`` and on the
broker. The package is installed from its lockfile (``npm ci``) once; skipped without node
>= 20 and npm."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from streamer.testing.chroma import TOKEN, streamer_serve
from streamer.testing.kafka import ROOT
from tests.helpers import require_node

PACKAGE = ROOT / "tests" / "chroma_js"
CHECKS = 15  # the checks in check.mjs


@pytest.fixture(scope="session")
def package() -> Path:
    """tests/chroma_js with node_modules (npm ci when it is missing)."""
    require_node()
    if not (PACKAGE / "node_modules" / "chromadb" / "package.json").exists():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PACKAGE,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return PACKAGE


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("kafka", "auth"), [
    pytest.param(False, "bearer", id="embedded-bearer"),
    pytest.param(False, "anonymous", id="embedded-anonymous"),
    pytest.param(True, "bearer", marks=pytest.mark.kafka, id="kafka-bearer"),
])
def test_chroma_js_client(package: Path, tmp_path: Path, kafka: bool, auth: str) -> None:
    # With a token, anonymous requests are refused, so the token is what lets the client in.
    anonymous = "" if auth == "bearer" else "rw"
    with streamer_serve(tmp_path, kafka=kafka, STREAMER_HTTP_ANONYMOUS=anonymous) as svc:
        if auth == "bearer":
            listing = f"{svc.url}/api/v2/tenants/default_tenant/databases/default_database/collections"
            assert httpx.get(listing).status_code == 401
        run_env = {**os.environ, "STREAMER_HOST": "127.0.0.1", "STREAMER_PORT": str(svc.port)}
        run_env.pop("STREAMER_TOKEN", None)
        if auth == "bearer":
            run_env["STREAMER_TOKEN"] = TOKEN
        done = subprocess.run(["node", "check.mjs"], cwd=package, env=run_env,
                              capture_output=True, text=True, timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    assert re.search(rf"^{CHECKS} passed, 0 failed$", done.stdout, re.M), out[-8000:]
    assert "not ok" not in done.stdout, out[-8000:]
