"""Runs ``tests/chroma_search`` (chromadb 1.5.9's Search API tests, unchanged) in a pytest
process of its own: they run only in Chroma's distributed mode, which is chosen by the
environment when chromadb's test modules are imported (see its conftest)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from streamer.testing.kafka import ROOT

#: chromadb's Search API tests the adapter runs (tests/chroma_search/test_chroma_search.py).
EXPECTED = 8


@pytest.mark.parametrize("backend", ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_chromas_search_api_tests_pass(backend: str) -> None:
    # Distributed mode, SPANN allowed: the other Chroma suites of this process set the modes
    # that skip these tests (tests/chroma_peer, tests/chroma_http), and a child inherits them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
    env |= {"CHROMA_CLUSTER_TEST_ONLY": "1", "CHROMA_RUST_BINDINGS_TEST_ONLY": "0"}
    marker = "kafka" if backend == "kafka" else "not kafka"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
         "tests/chroma_search"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed is not None and int(passed.group(1)) == EXPECTED, tail
    assert " failed" not in proc.stdout and " error" not in proc.stdout, tail
