"""The index sharded by state partition, on the real broker: 2 shards x 2 replicas answer
exactly what one unsharded replica answers for the same data, survive losing a replica per
shard, fail fast and typed when a shard has none left, and take a fresh replica."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.errors import ShardUnavailableError
from streamer import Client
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import AsyncKafkaClient, KafkaClient
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(600)]

TIMEOUT_S = 60.0  # generous: 5 processes load the model at once on a small box
WORDS = ["red", "blue", "green", "cat", "dog", "house", "river", "tree", "car", "sun"]
QUERIES = ["a red car", "a dog by the river", "green tree", "sun over a house"]


def start(services: list[ServiceProcess], tmp: Path, prefix: str, name: str,
          shard: str | None) -> ServiceProcess:
    env = {"STREAMER_KAFKA_REQUEST_TIMEOUT_S": str(TIMEOUT_S)}
    if shard is not None:
        env["STREAMER_SHARD"] = shard
    svc = ServiceProcess(prefix, tmp / name, instance=name, extra_env=env)
    svc.start()
    services.append(svc)
    return svc


def fill(client: Client) -> Any:
    col = client.create_collection("docs",
                                   embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"))
    n = 60
    col.add(ids=[f"d{i}" for i in range(n)],
            # distinct texts: equal vectors would tie, and ties may order either way
            documents=[f"{WORDS[i % 10]} {WORDS[(i // 10 + 3) % 10]} number {i}"
                       for i in range(n)],
            metadatas=[{"i": i, "parity": i % 2} for i in range(n)])
    return col


def answers(col: Any) -> dict[str, Any]:
    """Every read kind, in a form that compares exactly (get order is per shard: by id)."""
    out: dict[str, Any] = {"count": col.count()}
    reads: dict[str, dict[str, Any]] = {"all": {}, "even": {"where": {"parity": 0}},
                                        "doc": {"where_document": {"$contains": "dog"}}}
    for name, kw in reads.items():
        q = col.query(query_texts=QUERIES, n_results=7,
                      include=["distances", "documents", "metadatas", "embeddings"], **kw)
        out[f"query-{name}"] = q
        g = col.get(include=["documents", "metadatas"], **kw)
        out[f"get-{name}"] = sorted(zip(g["ids"], g["documents"],
                                        [m["i"] for m in g["metadatas"]], strict=True))
    g = col.get(ids=["d3", "d40", "d17", "nope"], include=["documents"])
    out["get-ids"] = sorted(zip(g["ids"], g["documents"], strict=True))
    return out


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        if not key.startswith("query"):
            assert g == w, key
            continue
        assert g["ids"] == w["ids"], key
        assert g["documents"] == w["documents"], key
        assert g["metadatas"] == w["metadatas"], key
        for gd, wd in zip(g["distances"], w["distances"], strict=True):
            np.testing.assert_allclose(gd, wd, rtol=1e-5, atol=1e-6, err_msg=key)
        for ge, we in zip(g["embeddings"], w["embeddings"], strict=True):
            np.testing.assert_allclose(ge, we, rtol=1e-5, atol=1e-6, err_msg=key)


def answers_in_part(prefix: str, ref: Any) -> None:
    """Shard 0 down, shard 1 up: a caller that asks for partial results gets shard 1's
    records, marked; exactly what the whole collection answers among those records."""
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, shard_partial_results=True,
                     kafka_request_timeout_s=TIMEOUT_S) as client:
        col = client.get_collection("docs")
        got = col.get(include=["documents"])
        assert got["partial"] is True and got["missing_shards"] == [0]
        mine = sorted(got["ids"])
        assert 0 < len(mine) < 60
        assert sorted(zip(got["ids"], got["documents"], strict=True)) == sorted(zip(
            *(lambda g: (g["ids"], g["documents"]))(ref.get(ids=mine)), strict=True))
        q = col.query(query_texts=QUERIES, n_results=7, include=["distances", "documents"])
        assert q["partial"] is True and q["missing_shards"] == [0]
        w = ref.query(query_texts=QUERIES, n_results=7, ids=mine,
                      include=["distances", "documents"])
        assert q["ids"] == w["ids"] and q["documents"] == w["documents"]
        for gd, wd in zip(q["distances"], w["distances"], strict=True):
            np.testing.assert_allclose(gd, wd, rtol=1e-5, atol=1e-6)
        with pytest.raises(ShardUnavailableError, match="Shard 0 of 2"):
            col.count()  # a bare number cannot say it is partial


def test_two_shards_two_replicas_match_one_replica_and_fail_typed(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    ensure_broker()
    plain, sharded = new_prefix(), new_prefix()
    start(services, tmp_path, plain, "plain", None)
    replicas = {(k, r): start(services, tmp_path, sharded, f"s{k}r{r}", f"{k}/2")
                for k in (0, 1) for r in (0, 1)}

    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=plain, wait_writes=True) as ref_client, \
            KafkaClient(BOOTSTRAP, kafka_topic_prefix=sharded, wait_writes=True,
                        kafka_request_timeout_s=TIMEOUT_S) as client:
        ref = fill(ref_client)
        want = answers(ref)
        col = fill(client)
        assert want["count"] == 60
        assert len(want["query-all"]["ids"][0]) == 7
        assert_same(answers(col), want)

        kafka = client._async
        assert isinstance(kafka, AsyncKafkaClient)
        scatter = kafka._kafka._scatter  # the layout was found: reads scatter
        assert scatter is not None and scatter.count == 2
        replicas[(0, 0)].kill()
        replicas[(1, 0)].kill()
        assert_same(answers(col), want)  # one replica per shard left: every read answered

        replicas[(0, 1)].kill()
        began = time.monotonic()
        with pytest.raises(ShardUnavailableError, match="Shard 0 of 2") as err:
            col.query(query_texts=QUERIES[:1], n_results=3)
        assert time.monotonic() - began < 25  # the reader session (10 s) and a recheck
        assert err.value.retriable
        with pytest.raises(ShardUnavailableError):
            col.count()
        answers_in_part(sharded, ref)

        start(services, tmp_path, sharded, "s0r2", "0/2")  # fresh: bootstraps from Kafka
        assert_same(answers(col), want)

        # A delete by `where` reaches every shard's writer, each deleting its own matches.
        for c in (ref, col):
            c.delete(where={"parity": 1})
        assert_same(answers(col), answers(ref))
        assert col.count() == 30
