"""chromadb 1.5.9's Search API tests, which skip themselves outside Chroma's distributed mode,
run unchanged against ``streamer.Client()`` and ``KafkaClient``.

They need ``CHROMA_CLUSTER_TEST_ONLY=1`` (and SPANN allowed) when chromadb's test modules are
imported, which would change the other peer tests too, so ``tests/test_chroma_search_peer.py``
runs this folder in its own pytest process with that environment; a plain run skips it
(``tests/conftest.py``). The adapter is ``tests/chroma_peer``'s, plus what distributed mode
reads: a collection ``version`` that rises once a write is applied (Chroma's compaction; here
a write is readable when its call returns) and the ``client_factories`` fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

import streamer
from tests.chroma_peer.conftest import PeerClient, PeerCollection, _Model, peer_clients

# chromadb.test.conftest (imported above) has read it: the Search tests would skip themselves.
assert os.environ.get("CHROMA_CLUSTER_TEST_ONLY") == "1", "run by tests/test_chroma_search_peer.py"

WRITES = ("add", "update", "upsert", "delete")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "test_with_multi_region: Chroma's multi-region tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        # As in tests/chroma_peer: Chroma's test embedding functions lack name(), and its
        # strategies call the random module, which Hypothesis warns about.
        item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
        item.add_marker(pytest.mark.filterwarnings(
            "ignore::hypothesis.errors.HypothesisDeprecationWarning"))


class SearchCollection(PeerCollection):
    def __init__(self, inner: Any, versions: dict[str, int]) -> None:
        super().__init__(inner)
        self._versions = versions

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self._versions[self._inner.name] = self._versions.get(self._inner.name, 0) + 1
            return out
        return write

    def get_model(self) -> _Model:
        model = super().get_model()
        model["version"] = self._versions.get(self._inner.name, 0)
        return model


class SearchClient(PeerClient):
    def __init__(self, inner: streamer.Client) -> None:
        super().__init__(inner)
        self.versions: dict[str, int] = {}

    def _wrap(self, col: Any) -> SearchCollection:
        return SearchCollection(col._inner if isinstance(col, PeerCollection) else col,
                                self.versions)

    def create_collection(self, name: str, **kwargs: Any) -> SearchCollection:
        return self._wrap(super().create_collection(name, **kwargs))

    def get_or_create_collection(self, name: str, **kwargs: Any) -> SearchCollection:
        return self._wrap(super().get_or_create_collection(name, **kwargs))

    def get_collection(self, name: str, **kwargs: Any) -> SearchCollection:
        return self._wrap(super().get_collection(name, **kwargs))


class Factories:
    """Chroma's ``ClientFactories``: the tests ask it for "a client from the system"."""

    def __init__(self, client: SearchClient) -> None:
        self._client = client

    def create_client_from_system(self) -> SearchClient:
        return self._client


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def client(request: pytest.FixtureRequest) -> Iterator[PeerClient]:
    yield from peer_clients(request, SearchClient)


@pytest.fixture
def client_factories(client: SearchClient) -> Factories:
    return Factories(client)
