"""The adapter that runs chromadb 1.5.9's own property tests against streamer.

The test modules are imported from the installed chromadb wheel, bodies unchanged (the
``test_*.py`` files here only re-export them). Chroma's conftest is not a conftest here: its
fixtures start Chroma servers. This one hands the tests ``streamer.Client()`` and, as the
second parameter, a ``KafkaClient`` on ``streamer serve`` and the real broker."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Chroma's local mode (no SPANN configurations): read when chromadb.test.conftest is imported.
os.environ.setdefault("CHROMA_RUST_BINDINGS_TEST_ONLY", "1")

import chromadb.test.conftest as chroma_conftest
import hypothesis
import pytest
from chromadb.config import Settings as ChromaSettings

import streamer
from streamer.testing.kafka import ServiceProcess

# Modest budgets: the suite runs twice (embedded, Kafka) in every CI run.
hypothesis.settings.register_profile(
    "streamer-peer", hypothesis.settings.get_profile("fast"), max_examples=8,
    stateful_step_count=12, deadline=None, print_blob=True,
    verbosity=hypothesis.Verbosity.normal)
hypothesis.settings.load_profile("streamer-peer")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "test_with_multi_region: Chroma's multi-region tests")


#: Chroma's tests that do not test a client, each with the reason (README, "Chroma's own tests").
DESELECTED = {
    "test_chroma_embeddings.py::test_dup_add":
        "asserts chromadb.errors.DuplicateIDError, Chroma's own class; streamer raises "
        "streamer.errors.DuplicateIDError (same name and message, a ValueError)",
    "test_chroma_embeddings.py::test_autocasting_validate_embeddings_for_compatible_types":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a client",
    "test_chroma_embeddings.py::test_autocasting_validate_embeddings_with_ndarray":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a client",
    "test_chroma_embeddings.py::test_autocasting_validate_embeddings_incompatible_types":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a client",
    "test_chroma_embeddings.py::test_0dim_embedding_validation":
        "calls chromadb.api.types.validate_embeddings, Chroma's function, never a client",
    "test_chroma_filtering.py::test_boolean_metadata[kafka]":
        "asserts get()'s order for one add; over Kafka a call's records can reach the replica "
        "in two polls and then list in arrival order (README, Notes: insertion order over Kafka)",
}


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
        # Chroma's test embedding functions lack name(), which its code warns about, and
        # its strategies call the random module, which Hypothesis warns about.
        item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
        item.add_marker(pytest.mark.filterwarnings(
            "ignore::hypothesis.errors.HypothesisDeprecationWarning"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _isolate(client: Any) -> None:
    """Chroma isolates a test in a new database; here, in an emptied client."""
    client.reset()


# The modules import these names when they are collected, after this file has run.
chroma_conftest.create_isolated_database = _isolate


class PeerCollection:
    """A streamer collection plus the one Chroma internal the invariants read: the model
    (``_model.configuration_json`` for the space, ``get_model()["version"]``)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerCollection) and self._inner == other._inner

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._inner)

    @property
    def _model(self) -> _Model:
        return self.get_model()

    def get_model(self) -> _Model:
        return _Model(id=self._inner.id, name=self._inner.name, metadata=self._inner.metadata,
                      configuration_json=self._inner.configuration_json, version=0)


class _Model(dict[str, Any]):
    def __getattr__(self, name: str) -> Any:
        return self[name]


class PeerClient:
    """``streamer.Client`` plus Chroma's test-harness surface (reset, settings, databases)."""

    #: Not Chroma's segment server: the invariants' SQLite and segment checks skip themselves.
    _server = None

    def __init__(self, inner: streamer.Client) -> None:
        self._inner = inner
        self.tenant = "default_tenant"
        self.database = "default_database"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def reset(self) -> bool:
        for col in self._inner.list_collections():
            self._inner.delete_collection(col.name)
        return True

    def get_settings(self) -> ChromaSettings:
        # A server port marks the client as not Chroma's in-process SQLite one, so the
        # invariant on the size of Chroma's SQLite write-ahead log does not apply.
        return ChromaSettings(anonymized_telemetry=False, chroma_server_http_port=8000)

    def set_database(self, database: str) -> None:
        self.database = database

    def set_tenant(self, tenant: str, database: str = "default_database") -> None:
        self.tenant, self.database = tenant, database

    def clear_system_cache(self) -> None:
        pass

    def create_collection(self, name: str, **kwargs: Any) -> PeerCollection:
        return PeerCollection(self._inner.create_collection(name, **kwargs))

    def get_or_create_collection(self, name: str, **kwargs: Any) -> PeerCollection:
        return PeerCollection(self._inner.get_or_create_collection(name, **kwargs))

    def get_collection(self, name: str, **kwargs: Any) -> PeerCollection:
        return PeerCollection(self._inner.get_collection(name, **kwargs))

    def list_collections(self, *args: Any, **kwargs: Any) -> list[PeerCollection]:
        return [PeerCollection(c) for c in self._inner.list_collections(*args, **kwargs)]


def peer_clients(request: pytest.FixtureRequest,
                 wrap: Callable[[Any], PeerClient]) -> Iterator[PeerClient]:
    """The client fixture's body, by its ``embedded``/``kafka`` parameter, for any adapter."""
    if request.param == "embedded":
        inner = streamer.Client()
    else:
        from streamer.kafka.client import KafkaClient

        svc: ServiceProcess = request.getfixturevalue("kafka_service")
        inner = KafkaClient(kafka_topic_prefix=svc.prefix, wait_writes=True)
    peer = wrap(inner)
    yield peer
    peer.reset()
    inner.close()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def client(request: pytest.FixtureRequest) -> Iterator[PeerClient]:
    yield from peer_clients(request, PeerClient)
