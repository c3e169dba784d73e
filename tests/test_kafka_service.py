"""The Kafka service against the real broker: crash-safety, scale-out, bad input on the wire."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

import streamer
from streamer.kafka.client import KafkaClient
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

pytestmark = pytest.mark.kafka


@pytest.fixture
def prefix() -> str:
    ensure_broker()
    return new_prefix()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for svc in started:
        svc.kill()


def start(services: list[ServiceProcess], tmp: Path, prefix: str, instance: str,
          **env: str) -> ServiceProcess:
    svc = ServiceProcess(prefix, tmp / f"svc-{instance}", instance=instance, extra_env=env)
    svc.start()
    services.append(svc)
    return svc


def workload(n_ops: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Mixed add/update/upsert/delete calls over a small id pool (so they collide)."""
    rng = random.Random(seed)
    ops: list[tuple[str, dict[str, Any]]] = []
    for step in range(n_ops):
        ids = rng.sample([f"id{i}" for i in range(120)], rng.randint(1, 8))
        kind = rng.choice(["add", "add", "upsert", "upsert", "update", "delete"])
        if kind == "delete":
            ops.append(("delete", {"ids": ids}))
            continue
        vecs = np.random.default_rng(step).standard_normal((len(ids), 8)).astype(np.float32)
        ops.append((kind, {"ids": ids, "embeddings": vecs,
                           "documents": [f"{kind} {step} {i}" for i in ids],
                           "metadatas": [{"step": step, f"k{step % 3}": i} for i in ids]}))
    return ops


def apply(col: Any, ops: list[tuple[str, dict[str, Any]]]) -> None:
    for kind, kwargs in ops:
        getattr(col, kind)(**kwargs)


def snapshot(col: Any) -> dict[str, tuple[Any, ...]]:
    got = col.get(include=["documents", "metadatas", "embeddings"])
    return {i: (d, orjson.dumps(m, option=orjson.OPT_SORT_KEYS), e.tobytes())
            for i, d, m, e in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"], strict=True)}


def test_sigkill_mid_batch_then_restart_gives_the_exact_state(tmp_path: Path, prefix: str,
                                                              services: list[ServiceProcess]) -> None:
    ops = workload(1500, seed=7)
    expected = streamer.Client()
    try:
        exp_col = expected.create_collection("crashy", embedding_function=None)
        apply(exp_col, ops)
        want = snapshot(exp_col)
    finally:
        expected.close()

    # Small batches and a slow-ish fsync make "mid-batch" the common case.
    env = {"STREAMER_BATCH_MAX_ITEMS": "16"}
    svc = start(services, tmp_path, prefix, "w0", **env)
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
    try:
        col = client.create_collection("crashy", embedding_function=None)
        apply(col, ops)  # acknowledged by Kafka (acks=all); the service is still chewing
        rng = random.Random(3)
        for _ in range(5):
            loop_sleep = rng.uniform(0.3, 1.5)
            asyncio.run(asyncio.sleep(loop_sleep))
            svc.kill()  # SIGKILL, in the middle of whatever batch is in flight
            services.remove(svc)
            svc = start(services, tmp_path, prefix, "w0", **env)
        got = snapshot(col)  # session consistency: waits until every write is applied
    finally:
        client.close()
    assert set(got) == set(want), "lost or resurrected ids"
    assert got == want


def test_two_services_split_partitions_and_answer_every_query(tmp_path: Path, prefix: str,
                                                              services: list[ServiceProcess]) -> None:
    start(services, tmp_path, prefix, "a")
    start(services, tmp_path, prefix, "b")
    clients = [KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix) for _ in range(2)]
    try:
        col = clients[0].create_collection("shared", embedding_function=None)
        vecs = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
        col.add(ids=[f"r{i}" for i in range(200)], embeddings=vecs,
                metadatas=[{"i": i} for i in range(200)])
        assignment = asyncio.run(_group_assignment(f"{prefix}.writers"))
        assert len(assignment) == 2 and all(assignment.values()), assignment
        other = clients[1].get_collection("shared", embedding_function=None)
        for c in (col, other):
            for q in range(20):
                res = c.query(query_embeddings=[vecs[q * 7]], n_results=3)
                assert res["ids"][0][0] == f"r{q * 7}"
        # The other client has not written: it sees the data once the replicas applied it.
        assert col.count() == 200
        # One service dies: the survivor takes every partition and still answers.
        services[0].kill()
        col.upsert(ids=["late"], embeddings=[np.ones(8, dtype=np.float32)])
        assert col.get(ids=["late"])["ids"] == ["late"]
        assert col.count() == 201
    finally:
        for kafka_client in clients:
            kafka_client.close()


async def _group_assignment(group: str) -> dict[str, list[int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        for _ in range(60):
            desc = await admin.describe_consumer_groups([group])
            out: dict[str, list[int]] = {}
            for member in desc[0].groups[0][5]:  # (member_id, client_id, host, metadata, assignment)
                assignment = ConsumerProtocolMemberAssignment.decode(member[4]) if member[4] else None
                tps = assignment.assignment if assignment is not None else []
                out[member[0]] = sorted(p for _, parts in tps for p in parts)
            if len(out) == 2 and all(out.values()):
                return out
            await asyncio.sleep(0.5)
        return out
    finally:
        await admin.close()


def test_bad_events_get_typed_replies_and_dead_letters(tmp_path: Path, prefix: str,
                                                       services: list[ServiceProcess]) -> None:
    start(services, tmp_path, prefix, "0")
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
    try:
        col = client.create_collection("poison", embedding_function=None)
        col.add(ids=["seed"], embeddings=[[1.0, 0.0, 0.0]])
        cid = col.id
        good = lambda i: orjson.dumps({"v": 1, "op": "upsert", "collection": cid, "id": f"g{i}",  # noqa: E731
                                       "embedding": {"dtype": "float32", "shape": [3],
                                                     "b64": "AACAPwAAAAAAAAAA"}})
        nan = "AADAfwAAAAAAAAAA"  # [nan, 0, 0]
        bad = {
            "not json": b"{nope",
            "unknown op": orjson.dumps({"v": 1, "op": "explode", "collection": cid, "id": "x"}),
            "wrong version": orjson.dumps({"v": 99, "op": "add", "collection": cid, "id": "x"}),
            "nan embedding": orjson.dumps({"v": 1, "op": "add", "collection": cid, "id": "x",
                                           "embedding": {"dtype": "float32", "shape": [3], "b64": nan}}),
            "wrong dimension": orjson.dumps({"v": 1, "op": "add", "collection": cid, "id": "x",
                                             "embedding": {"dtype": "float32", "shape": [1], "b64": "AACAPw=="}}),
            "unknown collection": orjson.dumps({"v": 1, "op": "add", "collection": "nope", "id": "x",
                                                "document": "d"}),
            "missing file": orjson.dumps({"v": 1, "op": "add", "collection": cid, "id": "x",
                                          "uri": "/no/such/file.png"}),
        }
        replies, dead = asyncio.run(_send_raw(prefix, good, bad))
        codes = {name: r["error"]["code"] for name, r in replies.items() if name in bad}
        assert codes == {"not json": "schema", "unknown op": "schema", "wrong version": "schema",
                         "nan embedding": "schema", "wrong dimension": "dimension_mismatch",
                         "unknown collection": "not_found", "missing file": "data_loader"}
        assert all(replies[f"good{i}"]["ok"] for i in range(5))
        assert len(dead) == len(bad)
        assert all(h["source"].startswith(f"{prefix}.requests:") for h in dead)
        assert all(h["reason"] for h in dead)
        # The valid events interleaved with the poison ones were all applied. Their replies
        # say committed; a read sees them once it carries their offsets, and the raw
        # producer's offsets are not in this client's session. A delete by filter goes to
        # every partition after them, so the next read waits for them (docs/design.md).
        col.delete(where={"matches": "nothing"})
        assert sorted(col.get(ids=[f"g{i}" for i in range(5)])["ids"]) == [f"g{i}" for i in range(5)]
    finally:
        client.close()


def _key_of(raw: bytes, name: str) -> bytes:
    """The key a well-behaved producer uses, ``collection/id``, where the event names both."""
    try:
        ev = orjson.loads(raw)
        return f"{ev['collection']}/{ev['id']}".encode()
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return name.encode()


async def _send_raw(prefix: str, good: Any, bad: dict[str, bytes]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    reply_topic = f"{prefix}.replies"
    consumer = AIOKafkaConsumer(reply_topic, f"{prefix}.dlq", bootstrap_servers=BOOTSTRAP,
                                auto_offset_reset="earliest", group_id=f"probe-{uuid.uuid4().hex}")
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    await producer.start()
    corr: dict[str, str] = {}
    try:
        payloads: list[tuple[str, bytes]] = []
        for i, (name, raw) in enumerate(bad.items()):
            payloads += [(name, raw), (f"good{i}", good(i))] if i < 5 else [(name, raw)]
        for name, raw in payloads:
            c = uuid.uuid4().hex
            corr[c] = name
            await producer.send_and_wait(f"{prefix}.requests", raw, key=_key_of(raw, name),
                                         headers=[("reply_to", reply_topic.encode()),
                                                  ("correlation_id", c.encode())])
        replies: dict[str, Any] = {}
        dead: list[dict[str, str]] = []
        async with asyncio.timeout(60):
            while len(replies) < len(payloads) or len(dead) < len(bad):
                for tp, recs in (await consumer.getmany(timeout_ms=500)).items():
                    for r in recs:
                        headers = {k: v.decode() for k, v in r.headers}
                        if tp.topic == reply_topic and headers.get("correlation_id") in corr:
                            replies[corr[headers["correlation_id"]]] = orjson.loads(r.value)
                        elif tp.topic.endswith(".dlq"):
                            dead.append(headers)
        return replies, dead
    finally:
        await producer.stop()
        await consumer.stop()


def test_sigterm_under_load_finishes_or_redelivers(tmp_path: Path, prefix: str,
                                                   services: list[ServiceProcess]) -> None:
    svc = start(services, tmp_path, prefix, "0", STREAMER_BATCH_MAX_ITEMS="8")
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
    try:
        col, vecs = _ingest(client, "graceful", 800, seed=1)
        assert svc.terminate(timeout=60) == 0  # SIGTERM: stop intake, finish the batch, close
        services.remove(svc)
        start(services, tmp_path, prefix, "0")
        _assert_exactly(col, vecs)
    finally:
        client.close()


def _ingest(client: KafkaClient, name: str, n: int, *, seed: int) -> tuple[Any, np.ndarray]:
    col = client.create_collection(name, embedding_function=None)
    vecs = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    col.add(ids=[str(i) for i in range(n)], embeddings=vecs)
    return col, vecs


def _assert_exactly(col: Any, vecs: np.ndarray) -> None:
    got = col.get(include=["embeddings"])
    assert len(got["ids"]) == len(vecs)
    order = np.argsort([int(i) for i in got["ids"]])
    np.testing.assert_array_equal(got["embeddings"][order], vecs)


def test_torn_replica_log_is_recovered_from_kafka(tmp_path: Path, prefix: str,
                                                  services: list[ServiceProcess]) -> None:
    svc = start(services, tmp_path, prefix, "0", STREAMER_CHECKPOINT_EVERY="1000000")
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
    try:
        col, vecs = _ingest(client, "torn", 300, seed=2)
        assert col.count() == 300
        svc.kill()
        services.remove(svc)
        segments = sorted((svc.data_dir / "collections" / col.id / "log").glob("*.log"))
        with open(segments[-1], "r+b") as f:  # a torn write: cut the last frame in half
            size = f.seek(0, 2)
            f.truncate(size - 1500)
        start(services, tmp_path, prefix, "0")
        _assert_exactly(col, vecs)
    finally:
        client.close()
