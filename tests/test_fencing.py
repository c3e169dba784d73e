"""Zombie writers: a writer whose partitions moved to another writer can never commit for them
again, whatever its pauses (per-partition transactional producers, streamer/kafka/producers.py).
Real broker, real ``streamer serve`` processes, the built-in model embedding server-side."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ProducerFenced

import streamer
from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.loading.load import ImageLoader
from streamer.kafka.client import KafkaClient
from streamer.kafka.common import Topics, ensure_topics
from streamer.kafka.producers import PartitionProducers
from streamer.kafka.replica import PROGRESS
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix
from tests.helpers import random_image, write_png
from tests.test_reliability import crash_workload, full_state

pytestmark = pytest.mark.kafka
#: the broker's group.min.session.timeout.ms (6 s by default) is the floor
SESSION_MS = 6000


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for svc in started:
        if svc.proc is not None and svc.proc.poll() is None:
            os.kill(svc.proc.pid, signal.SIGCONT)
        svc.kill()


def tiny() -> OpenCLIPEmbeddingFunction:
    return OpenCLIPEmbeddingFunction("streamer-tiny")


def warm_collection(client: streamer.Client, name: str, root: Path) -> streamer.Collection:
    """The collection the writers embed into server-side, with the model loaded in the first
    writer (one record added and deleted): later writers load it at start, for the collection
    they find, so the faults a test injects hit writers at work, not ones importing the model."""
    col = client.create_collection(name, embedding_function=tiny(),
                                   data_loader=ImageLoader(roots=[root]))
    col.add(ids=["warm"], documents=["loads the model in the first writer"])
    col.delete(ids=["warm"])
    assert col.count() == 0
    return col


def expected_state(calls: list[tuple[str, dict[str, Any]]], root: Path,
                   name: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, np.ndarray]]:
    client = streamer.Client()
    try:
        col = client.create_collection(name, embedding_function=tiny(),
                                       data_loader=ImageLoader(roots=[root]))
        for kind, kwargs in calls:
            getattr(col, kind)(**kwargs)
        return full_state(col)
    finally:
        client.close()


def assert_same_state(got: tuple[dict[str, tuple[Any, ...]], dict[str, np.ndarray]],
                      want: tuple[dict[str, tuple[Any, ...]], dict[str, np.ndarray]]) -> None:
    records, vectors = got
    want_records, want_vectors = want
    lost, extra = set(want_records) - set(records), set(records) - set(want_records)
    assert not lost and not extra, f"lost {sorted(lost)[:5]}, resurrected {sorted(extra)[:5]}"
    differ = [(i, records[i], want_records[i]) for i in want_records
              if records[i] != want_records[i]]
    assert not differ, f"modality/document/uri/metadata differ: {differ[:3]}"
    # Same model, same inputs; batches of another size may round the last bit differently.
    off = [i for i in want_vectors
           if not np.allclose(vectors[i], want_vectors[i], rtol=1e-4, atol=1e-5)]
    assert off == [], "vectors differ: " + str([
        (i, records[i][0], float(np.abs(vectors[i] - want_vectors[i]).max())) for i in off[:5]])


def progress_markers(prefix: str, bootstrap: str = BOOTSTRAP) -> dict[int, list[int]]:
    """Every committed progress marker on the state topic, per partition, in log order."""
    async def read() -> dict[int, list[int]]:
        topics = Topics.for_settings(Settings(kafka_topic_prefix=prefix))
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed")
        await consumer.start()
        try:
            tps = [TopicPartition(topics.state, p) for p in range(Settings().kafka_partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            markers: dict[int, list[int]] = {tp.partition: [] for tp in tps}
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                for _, recs in (await consumer.getmany(timeout_ms=500)).items():
                    for rec in recs:
                        key = (rec.key or b"").decode()
                        if key.startswith(PROGRESS) and rec.value is not None:
                            markers[int(key[len(PROGRESS):])].append(
                                orjson.loads(rec.value)["next"])
            return markers
        finally:
            await consumer.stop()
    return asyncio.run(read())


def assert_no_stale_commit(prefix: str) -> dict[int, list[int]]:
    """Each committed transaction of partition p covers the offsets after the previous one's:
    a stale batch committed by a zombie would repeat a range (a marker not above the last)."""
    markers = progress_markers(prefix)
    for part, nexts in markers.items():
        stale = [(a, b) for a, b in itertools.pairwise(nexts) if b <= a]
        assert not stale, f"partition {part}: a transaction re-committed old offsets {stale[:3]}"
    return markers


def test_the_new_owner_of_a_partition_fences_the_old_one() -> None:
    """The primitive: a producer for partition p started elsewhere makes the old producer's
    open transaction fail to commit, and nothing of it becomes visible."""
    ensure_broker()
    settings = Settings(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=new_prefix())
    topics = Topics.for_settings(settings)

    async def run() -> None:
        await ensure_topics(settings, topics)
        old, new = PartitionProducers(settings), PartitionProducers(settings)
        await old.assign({1})
        try:
            stale = old.get(1)
            assert stale is not None
            await stale.begin_transaction()
            await stale.send_and_wait(topics.state, key=b"zombie", value=b"stale", partition=1)
            await new.assign({1})  # the rebalance gave partition 1 to another writer
            fresh = new.get(1)
            assert fresh is not None
            with pytest.raises(ProducerFenced):
                await stale.commit_transaction()
            async with fresh.transaction():
                await fresh.send(topics.state, key=b"owner", value=b"fresh", partition=1)
        finally:
            await old.stop()
            await new.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level="read_committed",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topics.state, 1)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            keys = []
            while await consumer.position(tp) < end:
                for recs in (await consumer.getmany(timeout_ms=500)).values():
                    keys += [r.key for r in recs]
        finally:
            await consumer.stop()
        assert keys == [b"owner"]

    asyncio.run(run())


def test_a_writer_stopped_past_its_session_commits_nothing_stale(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    """Three writers embed server-side; one is SIGSTOPped in the middle of the ingest for
    longer than the session timeout, the others take its partitions, then it is resumed."""
    ensure_broker()
    prefix = new_prefix()
    root = tmp_path / "images"
    root.mkdir()
    uris = [write_png(root / f"p{i}.png", random_image(1000 + i, size=12)) for i in range(20)]
    dim = len(tiny()(["probe"])[0])
    calls = crash_workload(2400, uris, seed=17, dim=dim)
    want = expected_state(calls, root, "zombie")
    env = {"STREAMER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_MS), "STREAMER_BATCH_MAX_ITEMS": "16",
           "STREAMER_DATA_ROOTS": str(root)}
    writers = []

    def start(name: str) -> ServiceProcess:
        svc = ServiceProcess(prefix, tmp_path / name, instance=name, extra_env=env)
        svc.start()
        services.append(svc)
        writers.append(svc)
        return svc

    start("a")
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, kafka_request_timeout_s=180)
    sent = threading.Event()
    try:
        col = warm_collection(client, "zombie", root)
        # The others load it at start, for the collection they find: the pause below hits
        # a writer at work, not one importing the model.
        start("b")
        start("c")
        victim = writers[1]
        assert victim.proc is not None

        def produce() -> None:
            for kind, kwargs in calls:  # acknowledged by Kafka (acks=all)
                getattr(col, kind)(**kwargs)
                time.sleep(0.005)
            sent.set()

        producer = threading.Thread(target=produce, name="producer")
        producer.start()
        time.sleep(3.0)  # the writers are busy: the victim has batches in every stage
        os.kill(victim.proc.pid, signal.SIGSTOP)
        time.sleep(SESSION_MS / 1000 * 2 + 2)  # expired; a rebalance moved its partitions
        os.kill(victim.proc.pid, signal.SIGCONT)
        producer.join(timeout=240)
        assert sent.is_set(), "the producer did not finish"
        got = full_state(col)  # session consistency: once every write is applied
    finally:
        client.close()
    assert_same_state(got, want)
    markers = assert_no_stale_commit(prefix)
    assert sum(len(m) for m in markers.values()) > 10
    assert victim.proc.poll() is None, "the resumed writer died"
    # Whether the resumed writer still had a batch to commit (fenced, dropped) or its
    # heartbeat came first (revoked, dropped) depends on the timing; both leave no trace.
    assert victim.log_path is not None
    fenced = victim.log_path.read_text().count("writer fenced")
    print(f"resumed writer: {fenced} batch(es) fenced")
