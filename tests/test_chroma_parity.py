"""Each difference from chromadb 1.5.9 that its own property tests found, checked against
``chromadb.EphemeralClient()`` in the same process (issue 20), on both clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api import ClientAPI
from chromadb.api.types import PyEmbeddings
from chromadb.config import Settings as ChromaSettings

import streamer
from streamer.testing.kafka import ServiceProcess


@pytest.fixture(scope="module")
def chroma_client() -> ClientAPI:
    return chromadb.EphemeralClient(settings=ChromaSettings(allow_reset=True,
                                                            anonymized_telemetry=False))


@pytest.fixture
def chroma(chroma_client: ClientAPI) -> Iterator[ClientAPI]:
    chroma_client.reset()
    yield chroma_client


def pair(chroma: ClientAPI, client: streamer.Client, name: str = "parity",
         **kwargs: Any) -> tuple[Any, Any]:
    return (chroma.create_collection(name, embedding_function=None, **kwargs),
            client.create_collection(name, embedding_function=None, **kwargs))


def both(cols: tuple[Any, Any], call: Any) -> tuple[Any, Any]:
    """The same call on Chroma's collection and ours: results, or (type name, message)."""
    out = []
    for col in cols:
        try:
            out.append(call(col))
        except Exception as exc:
            out.append(("raised", str(exc)))
    return out[0], out[1]


def test_delete_returns_how_many_records_it_deleted(chroma: ClientAPI,
                                                    client: streamer.Client) -> None:
    cols = pair(chroma, client)
    for col in cols:
        col.add(ids=["x", "y", "z", "w"], embeddings=[[1, 0], [0, 1], [1, 1], [2, 1]],
                metadatas=[{"g": 1}, {"g": 2}, {"g": 1}, {"g": 1}])
    calls = [lambda c: c.delete(ids=["x"]),
             lambda c: c.delete(ids=["nope"]),          # Chroma counts ids named, found or not
             lambda c: c.delete(where={"g": 5}),
             lambda c: c.delete(ids=["y"], where={"g": 1}),
             lambda c: c.delete(where={"g": 1}, limit=1),
             lambda c: c.delete(where={"g": 1}),
             lambda c: c.delete(ids=["y"])]
    for call in calls:
        theirs, ours = both(cols, call)
        assert ours == theirs
    assert cols[1].count() == cols[0].count() == 0


def test_query_among_no_ids_is_empty(chroma: ClientAPI, client: streamer.Client) -> None:
    cols = pair(chroma, client)
    for col in cols:
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["A", "B"])
    theirs, ours = both(cols, lambda c: c.query(query_embeddings=[[1.0, 0.0]], ids=[], n_results=1))
    assert ours == theirs
    assert ours["ids"] == [[]] and ours["distances"] == [[]]


@pytest.mark.parametrize("pattern", ["(?i)c(?-i)at", r"^\p{Lu}", r"(?x) c a t  # verbose",
                                     r"\bcat\b", "(?<=a)t", "(a", r"\d{2,1}"])
def test_regex_speaks_rusts_dialect(chroma: ClientAPI, client: streamer.Client,
                                    pattern: str) -> None:
    cols = pair(chroma, client)
    docs = ["cat", "Cat", "CAT", "cAt", "a cat sat", "Über"]
    for col in cols:
        col.add(ids=[f"d{i}" for i in range(len(docs))], embeddings=[[float(i), 1.0] for i in range(len(docs))],
                documents=docs)
    theirs, ours = both(cols, lambda c: sorted(c.get(where_document={"$regex": pattern})["ids"]))
    assert ours == theirs
    theirs, ours = both(cols, lambda c: sorted(c.get(where_document={"$not_regex": pattern})["ids"]))
    assert ours == theirs


def test_max_batch_size(chroma: ClientAPI, client: streamer.Client) -> None:
    assert client.get_max_batch_size() == chroma.get_max_batch_size() == 5461
    cols = pair(chroma, client)
    n = chroma.get_max_batch_size() + 1
    theirs, ours = both(cols, lambda c: c.add(ids=[str(i) for i in range(n)], embeddings=np.ones((n, 2))))
    assert ours == ("raised", "Batch size of 5462 is greater than max batch size of 5461")
    assert theirs[0] == "raised" and ours[1] in theirs[1]
    assert cols[1].count() == 0
    with pytest.raises(ValueError, match="Batch size of 5462"):
        cols[1].upsert(ids=[str(i) for i in range(n)], embeddings=np.ones((n, 2)))


def test_zero_vectors_in_cosine_space(chroma: ClientAPI, client: streamer.Client) -> None:
    cols = pair(chroma, client, metadata={"hnsw:space": "cosine"})
    for col in cols:
        col.add(ids=["zero", "one"], embeddings=[[0.0, 0.0], [1.0, 0.0]])
    for q in ([0.0, 0.0], [1.0, 0.0], [0.0, 3.0]):
        theirs, ours = both(cols, lambda c, q=q: c.query(query_embeddings=[q], n_results=2,
                                                           include=["distances"]))
        assert dict(zip(ours["ids"][0], ours["distances"][0])) == pytest.approx(
            dict(zip(theirs["ids"][0], theirs["distances"][0])))


@pytest.mark.kafka
def test_a_delete_sees_every_earlier_write_of_its_client(kafka_service: ServiceProcess) -> None:
    """Writes return once Kafka has them (no wait_writes); a delete by filter or by ids right
    after must still apply after them, whichever partitions they landed on."""
    from streamer.kafka.client import KafkaClient

    with KafkaClient(kafka_topic_prefix=kafka_service.prefix) as kc:
        col = kc.create_collection(f"order-{uuid.uuid4().hex[:8]}", embedding_function=None)
        for r in range(50):
            ids = [f"{r}-a", f"{r}-b", f"{r}-c", f"{r}-d"]
            col.add(ids=ids, embeddings=[[1.0, float(r)], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]],
                    metadatas=[{"g": 1, "r": r}, {"g": 2, "r": r}, {"g": 1, "r": r}, {"g": 3, "r": r}])
            assert col.delete(where={"$and": [{"g": 1}, {"r": r}]}) == {"deleted": 2}, r
            col.delete(ids=[f"{r}-d"])
            assert col.get(where={"r": r})["ids"] == [f"{r}-b"], r
        assert col.count() == 50
        kc.delete_collection(col.name)


@pytest.mark.parametrize("call", ["create_collection", "get_or_create_collection"])
def test_empty_collection_metadata_is_refused(chroma: ClientAPI, client: streamer.Client,
                                              call: str) -> None:
    def create(c: Any) -> Any:
        return getattr(c, call)("empty-meta", metadata={}, embedding_function=None)

    theirs, ours = both((chroma, client), create)
    assert ours == theirs == ("raised", "Validation error: metadata: Metadata cannot be empty")
    assert "empty-meta" not in [col.name for col in client.list_collections()]
    with pytest.raises(ValueError):
        create(client)


def test_list_collections_limit_and_offset(chroma: ClientAPI, client: streamer.Client) -> None:
    for c in (chroma, client):
        for name in ("bbb", "aaa", "ccc", "abc"):
            c.create_collection(name, embedding_function=None)
    # Chroma's listing order is its own; the window over it is the contract.
    for c in (chroma, client):
        everything = [col.name for col in c.list_collections()]
        assert sorted(everything) == ["aaa", "abc", "bbb", "ccc"]
        for limit, offset in [(1, 0), (2, 1), (None, 3), (5, 2), (0, 0), (None, 10), (3, None)]:
            window = [col.name for col in c.list_collections(limit=limit, offset=offset)]
            start = offset or 0
            assert window == everything[start:None if limit is None else start + limit]
    assert client.count_collections() == chroma.count_collections() == 4
    with pytest.raises((ValueError, TypeError)):
        client.list_collections(limit=-1)


def test_collections_compare_by_value(chroma: ClientAPI, client: streamer.Client) -> None:
    for c in (chroma, client):
        c.create_collection("one", embedding_function=None, metadata={"k": "v"})
        c.create_collection("two", embedding_function=None)
        assert c.list_collections() == c.list_collections()
        assert c.get_collection("one") != c.get_collection("two")
    first, second = client.list_collections(), client.list_collections()
    assert first == second and first[0] is not second[0]
    assert {col.name for col in {*first, *second}} == {"one", "two"}  # hashable, by id
    before = client.get_collection("one")
    client.get_collection("one").modify(metadata={"k": "w"})
    assert client.get_collection("one") != before  # a value, not an identity


class _ChromaStyleEF(chromadb.EmbeddingFunction[chromadb.Documents]):
    """A user's own embedding function, as Chroma's docs write them (default_space: l2)."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Any) -> Any:
        return [np.array([float(len(x)), 1.0], dtype=np.float32) for x in input]

    @staticmethod
    def name() -> str:
        return "parity-test"

    def get_config(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> _ChromaStyleEF:
        return _ChromaStyleEF()


class _InnerProductEF(_ChromaStyleEF):
    def default_space(self) -> Any:
        return "ip"


class _PlainCallable:
    def __call__(self, input: Any) -> Any:
        return [[float(len(x)), 1.0] for x in input]


@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
@pytest.mark.parametrize("make_ef", [_ChromaStyleEF, _InnerProductEF, _PlainCallable, lambda: None],
                         ids=["chroma-style", "default-space-ip", "plain-callable", "none"])
def test_default_space_follows_the_embedding_function(chroma: ClientAPI, client: streamer.Client,
                                                      make_ef: Any) -> None:
    docs = ["a", "bbb", "cccccc"]
    cols = (chroma.create_collection("space", embedding_function=make_ef()),
            client.create_collection("space", embedding_function=make_ef()))
    embeddings: PyEmbeddings = [[1.0, 1.0], [3.0, 1.0], [6.0, 1.0]]
    for col in cols:
        col.add(ids=["1", "2", "3"], embeddings=embeddings, documents=docs)
    assert cols[1].configuration_json["hnsw"]["space"] == cols[0].configuration_json["hnsw"]["space"]
    theirs, ours = both(cols, lambda c: c.query(query_embeddings=[[2.4, 1.0]], n_results=3,
                                                 include=["distances"]))
    assert ours["ids"] == theirs["ids"]
    assert ours["distances"][0] == pytest.approx(theirs["distances"][0], rel=1e-5)


def test_openclip_defaults_to_cosine_and_configuration_names_a_space(client: streamer.Client) -> None:
    from streamer.embedding_functions import OpenCLIPEmbeddingFunction

    ef = OpenCLIPEmbeddingFunction("streamer-tiny")
    assert ef.default_space() == "cosine"
    assert client.create_collection("clip", embedding_function=ef).configuration_json["hnsw"]["space"] == "cosine"
    col = client.create_collection("conf", embedding_function=ef, configuration={"hnsw": {"space": "ip"}})
    assert col.configuration_json["hnsw"]["space"] == "ip"
    col = client.create_collection("meta", embedding_function=None, metadata={"hnsw:space": "cosine"})
    assert col.configuration_json["hnsw"]["space"] == "cosine"
