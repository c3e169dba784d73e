"""A 3-node KRaft cluster (compose/kafka/cluster: replication 3, min.insync.replicas 2): the
node leading the most request partitions is SIGKILLed while two writers embed server-side.
Leadership, the transaction coordinators and the group coordinator move to the survivors;
every acknowledged write is applied exactly once (tests/test_fencing.py's progress markers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.errors import StreamerError
from streamer.kafka.client import KafkaClient
from streamer.kafka.common import Topics
from streamer.settings import Settings
from streamer.testing.kafka import ServiceProcess, new_prefix
from tests.brokers import KafkaCluster
from tests.helpers import random_image
from tests.test_churn import Progress
from tests.test_fencing import (
    assert_same_state,
    expected_state,
    progress_markers,
    warm_collection,
)
from tests.test_reliability import full_state, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path / "cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def mixed_calls(n_chunks: int, size: int) -> list[tuple[str, dict[str, Any]]]:
    """add calls, documents and small images in turn: add, not upsert, so a batch applied
    twice would not show in the state; the progress markers catch it."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for c in range(n_chunks):
        ids = [f"c{c}-{i}" for i in range(size)]
        if c % 2:
            calls.append(("add", {"ids": ids, "images": [random_image(c * size + i, size=8)
                                                          for i in range(size)],
                                  "metadatas": [{"chunk": c} for _ in ids]}))
        else:
            calls.append(("add", {"ids": ids, "documents": [f"chunk {c} item {i}: a boat at dusk"
                                                             for i in range(size)]}))
    return calls


def test_leader_sigkilled_mid_server_side_embedding_gives_exactly_once(
        tmp_path: Path, kafka_cluster: KafkaCluster, services: list[ServiceProcess]) -> None:
    root = tmp_path / "images"
    root.mkdir()
    calls = mixed_calls(40, 8)
    want = expected_state(calls, root, "cluster")
    prefix = new_prefix()
    topics = Topics.for_settings(Settings(kafka_topic_prefix=prefix))
    env = {"STREAMER_KAFKA_BOOTSTRAP": kafka_cluster.bootstrap, "STREAMER_KAFKA_REPLICATION": "3",
           "STREAMER_KAFKA_REQUEST_TIMEOUT_S": "10", "STREAMER_BATCH_MAX_ITEMS": "16"}
    writers = [ServiceProcess(prefix, tmp_path / name, instance=name, extra_env=env)
               for name in ("a", "b")]
    writers[0].start()
    services.append(writers[0])
    client = KafkaClient(kafka_cluster.bootstrap, kafka_topic_prefix=prefix, kafka_replication=3,
                         kafka_request_timeout_s=60)
    acked: list[int] = []
    failed: list[BaseException] = []
    try:
        col = warm_collection(client, "cluster", root)
        writers[1].start()  # loads it at start, for the collection it finds
        services.append(writers[1])
        for topic in (topics.requests, topics.state):
            assert {len(p["replicas"]) for p in kafka_cluster.partitions(topic)} == {3}
            assert kafka_cluster.topic_config(topic, "min.insync.replicas") == "2"

        def write() -> None:
            for n, (kind, kwargs) in enumerate(calls):
                while True:
                    try:
                        getattr(col, kind)(**kwargs)
                        break
                    except StreamerError as exc:  # retried, as a caller would
                        failed.append(exc)
                        time.sleep(0.5)
                acked.append(n)
                time.sleep(0.2)  # paced: writes are still arriving when the node dies

        with Progress(prefix, kafka_cluster.bootstrap) as progress:
            thread = threading.Thread(target=write, daemon=True)
            thread.start()
            # Mid ingest: some batches applied (committed), more arrived and waiting, more to come.
            wait_until(lambda: len(acked) >= len(calls) // 3 and bool(progress.samples)
                       and 0 < progress.samples[-1][1] < progress.samples[-1][2], 120,
                       "a third is acknowledged, some applied, some waiting")
            victim = kafka_cluster.busiest_leader(topics.requests)
            _, applied, arrived = progress.samples[-1]
            killed_at = time.monotonic()
            kafka_cluster.kill(victim)
            thread.join(timeout=180)
            assert not thread.is_alive(), "ingestion did not resume after the failover"
            got = full_state(col)  # session consistency: once every write is applied
        failover = time.monotonic() - killed_at
        leaders = {p["leader"] for p in kafka_cluster.partitions(topics.requests)}
        assert victim not in leaders and -1 not in leaders, leaders
        hits = col.query(query_texts=["a boat at dusk"], n_results=5, include=[])["ids"][0]
        assert len(hits) == 5 and set(hits) <= set(want[0]), hits
        kafka_cluster.start()  # the killed node rejoins: every replica back in sync
        wait_until(lambda: all(len(p["isr"]) == 3 for p in kafka_cluster.partitions(
            topics.requests)), 90, "the restarted node is back in every ISR")
    finally:
        client.close()
    assert all(isinstance(e, StreamerError) and e.retriable for e in failed), failed
    assert_same_state(got, want)
    markers = progress_markers(prefix, kafka_cluster.bootstrap)
    assert sum(len(m) for m in markers.values()) > 0
    for part, nexts in markers.items():
        assert nexts == sorted(set(nexts)), f"partition {part}: a batch was applied twice"
    for svc in writers:
        assert svc.proc is not None and svc.proc.poll() is None, "a writer died"
    print(f"\nkilled node {victim} (leader of most request partitions) with {applied} of "
          f"{arrived} request records applied; failed client calls: {len(failed)}; all applied "
          f"{failover:.1f} s after the kill; longest stall in applied progress: "
          f"{progress.longest_stall():.1f} s")
