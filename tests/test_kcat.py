"""kcat (librdkafka's command-line client, written in C) as the producer and consumer: an
application in another language that knows only the contracts in ``schemas/`` writes a phone
photo as its JPEG bytes and a document, queries by the same photo and reads every reply from
the reply topic, against a real ``streamer serve``. An event on the wrong partition (what
librdkafka's default CRC32 partitioner does with our keys) is refused with a typed error that
says how to fix it, and is dead-lettered rather than applied out of order."""

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

from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.kafka.common import partition_of
from streamer.testing.images import encode, photo
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(KCAT is None, reason="kcat is not installed (.ci/run installs it)")]

# Java's partitioner, which the writers check events against; photos need more than 1 MB.
PRODUCE = ["-X", "partitioner=murmur2_random", "-X", "message.max.bytes=16000000", "-z", "zstd"]


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


def test_an_event_on_the_wrong_partition_is_refused_and_dead_lettered(
        kafka_service: ServiceProcess, tmp_path: Path) -> None:
    prefix = kafka_service.prefix
    requests, replies_topic = f"{prefix}.requests", f"{prefix}.replies"
    n = partitions(requests)
    assert n > 1
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, wait_writes=True) as client:
        col = client.create_collection("kcat-routing", embedding_function=None)
        key = f"{col.id}/stray"
        right = partition_of(key.encode(), n)
        wrong = (right + 1) % n
        event = {"v": 1, "op": "upsert", "collection": col.id, "id": "stray",
                 "embedding": {"dtype": "float32", "shape": [2], "b64": "AACAPwAAAAA="}}
        bad = produce(requests, event, tmp_path, key=key, partition=wrong, reply_to=replies_topic)
        good = produce(requests, {**event, "id": "placed"}, tmp_path, key=f"{col.id}/placed",
                       reply_to=replies_topic)
        got = replies(replies_topic, {bad, good})
        assert got[good]["ok"], got[good]
        error = got[bad]["error"]
        assert error["code"] == "invalid_argument" and error["retriable"] is False, error
        assert f"belongs on partition {right}" in error["message"], error
        assert "murmur2" in error["message"], error
        assert col.get()["ids"] == ["placed"]
    dead = [orjson.loads(line) for line in
            kcat("-C", "-t", f"{prefix}.dlq", "-o", "beginning", "-e", "-J").splitlines()]
    reasons = [dict(zip(d["headers"][::2], d["headers"][1::2], strict=True)) for d in dead
               if d["key"] == key]
    assert len(reasons) == 1 and reasons[0]["code"] == "invalid_argument", reasons
    assert reasons[0]["source"].startswith(f"{requests}:{wrong}:"), reasons
