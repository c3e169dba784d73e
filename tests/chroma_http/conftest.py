"""chromadb 1.5.9's own property tests in Chroma's integration mode, through a real
``chromadb.HttpClient`` against ``streamer serve``'s Chroma HTTP API (gateway/chroma_http.py):
``--embedded``, and on the local broker (marked kafka).

As in Chroma's integration runs, ``CHROMA_INTEGRATION_TEST_ONLY=1`` (no SPANN) and the server
address is in ``CHROMA_SERVER_HOST``/``CHROMA_SERVER_HTTP_PORT``; the test modules are imported
from the wheel, bodies unchanged. Chroma isolates a test in a new database; streamer serves
one, so a test starts from ``client.reset()`` (the server runs with STREAMER_ALLOW_RESET)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("CHROMA_INTEGRATION_TEST_ONLY", "1")

import chromadb
import chromadb.test.conftest as chroma_conftest
import hypothesis
import pytest
from chromadb.api import ClientAPI
from chromadb.config import Settings as ChromaSettings

from streamer.testing.chroma import TOKEN, streamer_serve
from streamer.testing.kafka import ServiceProcess

# The budgets of tests/chroma_peer (one profile is loaded per process, whichever suite).
hypothesis.settings.register_profile(
    "streamer-http", hypothesis.settings.get_profile("fast"), max_examples=8,
    stateful_step_count=12, deadline=None, print_blob=True,
    verbosity=hypothesis.Verbosity.normal)
hypothesis.settings.load_profile("streamer-http")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "test_with_multi_region: Chroma's multi-region tests")


#: Chroma's tests left out here, each with the reason (docs/http-api.md).
DESELECTED = {
    "test_http_embeddings.py::test_autocasting_validate_embeddings_for_compatible_types":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a server",
    "test_http_embeddings.py::test_autocasting_validate_embeddings_with_ndarray":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a server",
    "test_http_embeddings.py::test_autocasting_validate_embeddings_incompatible_types":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a server",
    "test_http_embeddings.py::test_0dim_embedding_validation":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a server",
    "test_http_filtering.py::test_boolean_metadata[kafka]":
        "asserts get()'s order for one add; over Kafka a call's records can reach the replica "
        "in two polls and then list in arrival order (as in tests/chroma_peer)",
}


#: Over 10 s each on the 2-core box (HTTP per call, and over Kafka a round trip per write).
SLOW = {"test_add_medium", "test_add_large", "test_embeddings_state"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    kept, dropped = [], []
    for item in items:
        if not item.path.is_relative_to(here):
            kept.append(item)
            continue
        names = (f"{item.path.name}::{item.originalname}",  # type: ignore[attr-defined]
                 f"{item.path.name}::{item.name}")
        if any(name in DESELECTED for name in names):
            dropped.append(item)
            continue
        if item.originalname in SLOW:  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
        item.add_marker(pytest.mark.filterwarnings(
            "ignore::hypothesis.errors.HypothesisDeprecationWarning"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _isolate(client: Any) -> None:
    """Chroma isolates a test in a new database; here, in an emptied server."""
    client.reset()


chroma_conftest.create_isolated_database = _isolate


@pytest.fixture(scope="session")
def http_embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with streamer_serve(tmp_path_factory.mktemp("http-emb"), kafka=False,
                        allow_reset=True) as svc:
        yield svc


@pytest.fixture(scope="session")
def http_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with streamer_serve(tmp_path_factory.mktemp("http-kafka"), kafka=True,
                        allow_reset=True) as svc:
        yield svc


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientAPI]:
    svc: ServiceProcess = request.getfixturevalue(f"http_{request.param}")
    monkeypatch.setenv("CHROMA_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMA_SERVER_HTTP_PORT", str(svc.port))
    client = chromadb.HttpClient(
        host="127.0.0.1", port=svc.port, headers={"Authorization": f"Bearer {TOKEN}"},
        settings=ChromaSettings(allow_reset=True, anonymized_telemetry=False))
    client.reset()
    yield client
    client.reset()
