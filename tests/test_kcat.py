"""kcat (librdkafka's command-line client, written in C) as the producer and consumer: an
application in another language that knows only the contracts in ``schemas/`` writes a phone
photo as its JPEG bytes and a document, queries by the same photo and reads every reply from
the reply topic, against a real ``streamer serve``, at librdkafka's default partitioner (CRC32,
not Java's murmur2). An event on another partition than its record's is forwarded there and
answered from there; deletes of several ids, or by filter, sent to one partition are applied
on every partition their records live on, with Chroma's counts."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import streamer
from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.kafka.common import partition_of
from streamer.testing.images import encode, photo
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(KCAT is None, reason="kcat is not installed (.ci/run installs it)")]

# Photos need more than librdkafka's 1 MB default; the partitioner stays librdkafka's own.
PRODUCE = ["-X", "message.max.bytes=16000000", "-z", "zstd"]


def kcat(*args: str, stdin: bytes | None = None) -> bytes:
    assert KCAT is not None
    done = subprocess.run([KCAT, "-b", BOOTSTRAP, "-q", *args], input=stdin, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def produce(topic: str, event: dict[str, Any], tmp: Path, *, key: str | None = None,
            partition: int | None = None, reply_to: str) -> str:
    """One event from a file (kcat sends a file whole, as one message); its correlation id."""
    corr = uuid.uuid4().hex
    path = tmp / f"{corr}.json"
    path.write_bytes(orjson.dumps(event))
    args = ["-P", "-t", topic, *PRODUCE, "-H", f"reply_to={reply_to}", "-H", f"correlation_id={corr}"]
    if key is not None:
        args += ["-k", key]
    if partition is not None:
        args += ["-p", str(partition)]
    kcat(*args, str(path))
    return corr


def replies(topic: str, corrs: set[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
    """Reads the reply topic from the start (read_committed, librdkafka's default) until every
    correlation id has its reply."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while True:
        for line in kcat("-C", "-t", topic, "-o", "beginning", "-e", "-J").splitlines():
            envelope = orjson.loads(line)
            flat = envelope.get("headers") or []
            headers = dict(zip(flat[::2], flat[1::2], strict=True))
            if headers.get("correlation_id") in corrs:
                found[headers["correlation_id"]] = orjson.loads(envelope["payload"])
        if set(found) == corrs or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def partitions(topic: str) -> int:
    meta = orjson.loads(kcat("-L", "-J", "-t", topic))
    [entry] = meta["topics"]
    return len(entry["partitions"])


def test_kcat_writes_a_photo_and_a_document_and_queries_by_the_photo(
        kafka_service: ServiceProcess, tmp_path: Path) -> None:
    prefix = kafka_service.prefix
    requests, replies_topic = f"{prefix}.requests", f"{prefix}.replies"
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, wait_writes=True) as client:
        col = client.create_collection(
            "kcat", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"))
        cid = col.id
        jpeg = encode(photo("coffee", 1920, 1080, 11), "JPEG")
        file = {"file": base64.b64encode(jpeg).decode()}
        writes = {
            "photo": {"v": 1, "op": "add", "collection": cid, "id": "photo", "image": file,
                      "metadata": {"source": "kcat"}},
            "doc": {"v": 1, "op": "add", "collection": cid, "id": "doc",
                    "document": "a cup of coffee on a saucer"},
        }
        corrs = {produce(requests, ev, tmp_path, key=f"{cid}/{id_}", reply_to=replies_topic): id_
                 for id_, ev in writes.items()}
        got = replies(replies_topic, set(corrs))
        assert {corrs[c]: r["ok"] for c, r in got.items()} == {"photo": True, "doc": True}, got

        query = {"v": 1, "op": "query", "collection": cid, "images": [file], "n_results": 2,
                 "include": ["metadatas", "distances"]}
        qcorr = produce(f"{prefix}.queries", query, tmp_path, reply_to=replies_topic)
        answer = replies(replies_topic, {qcorr})[qcorr]
        assert answer["ok"], answer
        # The same query from the Python client: same ids, same distances.
        ours = col.query(query_images=[jpeg], n_results=2, include=["metadatas", "distances"])
        assert answer["result"]["ids"] == ours["ids"] == [["photo", "doc"]]
        assert answer["result"]["metadatas"][0][0] == {"source": "kcat"}
        np.testing.assert_allclose(answer["result"]["distances"], ours["distances"], atol=1e-5)


def test_events_on_any_partition_are_applied_where_their_records_live(
        kafka_service: ServiceProcess, tmp_path: Path) -> None:
    prefix = kafka_service.prefix
    requests, replies_topic = f"{prefix}.requests", f"{prefix}.replies"
    n = partitions(requests)
    assert n > 2
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, wait_writes=True) as client, \
            streamer.Client() as embedded:
        col = client.create_collection("kcat-routing", embedding_function=None)
        oracle = embedded.create_collection("oracle", embedding_function=None)
        # Twelve or more records, at least two on every partition (the ids hash with the
        # collection's random id): the first of each is deleted by id, half the rest
        # by filter.
        ids: list[str] = []
        while len(ids) < 12 or min(sum(partition_of(f"{col.id}/{i}".encode(), n) == p
                                       for i in ids) for p in range(n)) < 2:
            ids.append(f"r{len(ids)}")
        homes = [partition_of(f"{col.id}/{i}".encode(), n) for i in ids]
        doomed = [ids[homes.index(p)] for p in range(n)]
        vectors = np.random.default_rng(5).standard_normal((len(ids), 2)).astype(np.float32)
        old_ids = [i for i in ids if i not in doomed][::2]
        metas = [{"i": i, "old": ids[i] in old_ids} for i in range(len(ids))]
        oracle.add(ids=ids, embeddings=vectors, metadatas=metas)

        def add(i: int, partition: int) -> str:
            event = {"v": 1, "op": "add", "collection": col.id, "id": ids[i],
                     "embedding": {"dtype": "float32", "shape": [2],
                                   "b64": base64.b64encode(vectors[i].tobytes()).decode()},
                     "metadata": metas[i]}
            return produce(requests, event, tmp_path, key=f"{col.id}/{ids[i]}",
                           partition=partition, reply_to=replies_topic)

        # Every record's add on a partition other than its own: each one is forwarded.
        adds = {add(i, (home + 1 + i % (n - 1)) % n): i for i, home in enumerate(homes)}
        got = replies(replies_topic, set(adds))
        assert all(r["ok"] for r in got.values()), got
        assert sorted(col.get()["ids"]) == sorted(ids)

        # A delete of ids on every partition, sent keyed by the collection.
        by_ids = produce(requests, {"v": 1, "op": "delete", "collection": col.id,
                                    "ids": [*doomed, "never-added"]}, tmp_path, key=col.id,
                         reply_to=replies_topic)
        answer = replies(replies_topic, {by_ids})[by_ids]
        assert answer["ok"] and answer["result"] == {"deleted": len(doomed) + 1}, answer
        oracle.delete(ids=[*doomed, "never-added"])
        # A filtered delete sent to one partition: every partition's matches go.
        by_filter = produce(requests, {"v": 1, "op": "delete", "collection": col.id,
                                       "ids": None, "where": {"old": True}}, tmp_path, key=col.id,
                            reply_to=replies_topic)
        answer = replies(replies_topic, {by_filter})[by_filter]
        assert answer["ok"] and answer["result"] == {"deleted": len(old_ids)}, answer
        oracle.delete(where={"old": True})
        want = oracle.get(include=["embeddings", "metadatas"])
        have = col.get(include=["embeddings", "metadatas"])
        assert sorted(have["ids"]) == sorted(want["ids"])
        for id_, emb, meta in zip(want["ids"], want["embeddings"], want["metadatas"], strict=True):
            k = have["ids"].index(id_)
            assert have["metadatas"][k] == meta
            np.testing.assert_array_equal(have["embeddings"][k], emb)
    # Nothing was refused on the way.
    dead = [orjson.loads(line) for line in
            kcat("-C", "-t", f"{prefix}.dlq", "-o", "beginning", "-e", "-J").splitlines()]
    assert not [d for d in dead if (d["key"] or "").startswith(col.id)], dead
