"""Each difference from chromadb 1.5.9 that its own property tests found, checked against
``chromadb.EphemeralClient()`` in the same process (issue 20), on both clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings as ChromaSettings

import streamer
from tests.kafka_fixtures import ServiceProcess


@pytest.fixture(scope="module")
def chroma_client() -> chromadb.ClientAPI:
    return chromadb.EphemeralClient(settings=ChromaSettings(allow_reset=True,
                                                            anonymized_telemetry=False))


@pytest.fixture
def chroma(chroma_client: chromadb.ClientAPI) -> Iterator[chromadb.ClientAPI]:
    chroma_client.reset()
    yield chroma_client


def pair(chroma: chromadb.ClientAPI, client: streamer.Client, name: str = "parity",
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


def test_delete_returns_how_many_records_it_deleted(chroma: chromadb.ClientAPI,
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


def test_query_among_no_ids_is_empty(chroma: chromadb.ClientAPI, client: streamer.Client) -> None:
    cols = pair(chroma, client)
    for col in cols:
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["A", "B"])
    theirs, ours = both(cols, lambda c: c.query(query_embeddings=[[1.0, 0.0]], ids=[], n_results=1))
    assert ours == theirs
    assert ours["ids"] == [[]] and ours["distances"] == [[]]


@pytest.mark.parametrize("pattern", ["(?i)c(?-i)at", r"^\p{Lu}", r"(?x) c a t  # verbose",
                                     r"\bcat\b", "(?<=a)t", "(a", r"\d{2,1}"])
def test_regex_speaks_rusts_dialect(chroma: chromadb.ClientAPI, client: streamer.Client,
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


def test_max_batch_size(chroma: chromadb.ClientAPI, client: streamer.Client) -> None:
    assert client.get_max_batch_size() == chroma.get_max_batch_size() == 5461
    cols = pair(chroma, client)
    n = chroma.get_max_batch_size() + 1
    theirs, ours = both(cols, lambda c: c.add(ids=[str(i) for i in range(n)], embeddings=np.ones((n, 2))))
    assert ours == ("raised", "Batch size of 5462 is greater than max batch size of 5461")
    assert theirs[0] == "raised" and ours[1] in theirs[1]
    assert cols[1].count() == 0
    with pytest.raises(ValueError, match="Batch size of 5462"):
        cols[1].upsert(ids=[str(i) for i in range(n)], embeddings=np.ones((n, 2)))


def test_zero_vectors_in_cosine_space(chroma: chromadb.ClientAPI, client: streamer.Client) -> None:
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
