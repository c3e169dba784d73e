"""Fault injection against real processes: the service SIGKILLed again and again during a
10,000-event mixed-modality ingest, and a (private) Kafka broker stopped and restarted in the
middle of ingestion and queries."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import streamer
from consumers.loading.load import ImageLoader
from streamer.errors import StreamerError
from streamer.kafka.client import KafkaClient
from streamer.testing.kafka import (
    BOOTSTRAP,
    KillLoop,
    ServiceProcess,
    ensure_broker,
    new_prefix,
    starter,
)
from tests.brokers import PrivateBroker
from tests.helpers import HashEmbedding, random_image, write_png

pytestmark = pytest.mark.kafka


# ---- crash: SIGKILL the service during a 10,000-event ingest --------------------------------
def crash_workload(n_events: int, uris: list[str], seed: int,
                   dim: int) -> list[tuple[str, dict[str, Any]]]:
    """Calls over a small id pool, so ids collide and switch modality (text, image array,
    URI, raw embedding) again and again; update without a source changes only metadata."""
    rng = random.Random(seed)
    pool = [f"id{i}" for i in range(400)]
    calls: list[tuple[str, dict[str, Any]]] = []
    events = 0
    step = 0
    while events < n_events:
        step += 1
        ids = rng.sample(pool, rng.randint(1, 9))
        events += len(ids)
        kind = rng.choice(["add", "add", "upsert", "upsert", "upsert", "update", "update", "delete"])
        if kind == "delete":
            calls.append(("delete", {"ids": ids}))
            continue
        kwargs: dict[str, Any] = {"ids": ids}
        source = rng.choice(["documents", "images", "uris", "embeddings", "metadata-only"])
        if source == "metadata-only" and kind != "update":
            source = "documents"
        if source == "documents":
            kwargs["documents"] = [f"{kind} {step} {i}" for i in ids]
        elif source == "images":
            kwargs["images"] = [random_image(rng.randrange(10**6), size=8) for _ in ids]
        elif source == "uris":
            kwargs["uris"] = [rng.choice(uris) for _ in ids]
        elif source == "embeddings":
            kwargs["embeddings"] = np.random.default_rng(step).standard_normal(
                (len(ids), dim)).astype(np.float32)
        if source == "metadata-only" or rng.random() < 0.7:
            kwargs["metadatas"] = [{"step": step, "src": source, f"k{step % 4}": i} for i in ids]
        calls.append((kind, kwargs))
    return calls


def full_state(col: Any) -> tuple[dict[str, tuple[Any, ...]], dict[str, np.ndarray]]:
    """id -> (modality, document, uri, metadata), and id -> vector."""
    got = col.get(include=["documents", "uris", "metadatas", "embeddings"])
    assert len(got["ids"]) == len(set(got["ids"])), "duplicated ids"
    records, vectors = {}, {}
    for i, d, u, m, e in zip(got["ids"], got["documents"], got["uris"], got["metadatas"],
                             got["embeddings"], strict=True):
        modality = "text" if d is not None else "uri" if u is not None else "image-or-embedding"
        records[i] = (modality, d, u, orjson.dumps(m, option=orjson.OPT_SORT_KEYS))
        vectors[i] = np.asarray(e, dtype=np.float32)
    return records, vectors


@pytest.mark.slow
def test_sigkill_loop_during_10k_mixed_modality_events_gives_the_exact_state(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    ensure_broker()
    prefix = new_prefix()
    root = tmp_path / "images"
    root.mkdir()
    uris = [write_png(root / f"p{i}.png", random_image(1000 + i, size=12)) for i in range(40)]
    # HashEmbedding is a custom EF: KafkaClient runs it client-side and sends the vectors with
    # their modality. (The built-in streamer-tiny model runs in the service, but ~2,000 model
    # calls for the expected state alone take minutes on 2 cores.)
    ef = HashEmbedding()
    calls = crash_workload(10_000, uris, seed=11, dim=ef.dim)
    assert sum(len(kw["ids"]) for _, kw in calls) >= 10_000

    expected = streamer.Client()
    try:
        col = expected.create_collection("crash10k", embedding_function=ef,
                                         data_loader=ImageLoader(roots=[root]))
        for kind, kwargs in calls:
            getattr(col, kind)(**kwargs)
        want, want_vectors = full_state(col)
    finally:
        expected.close()
    kinds = {m for m, *_ in want.values()}
    assert kinds == {"text", "uri", "image-or-embedding"}, kinds

    env = {"STREAMER_BATCH_MAX_ITEMS": "32", "STREAMER_CHECKPOINT_EVERY": "700"}

    start = starter(services, prefix, tmp_path / "svc", "crash", env)
    # Reads wait (session consistency) until the restarted service has caught up.
    loop = KillLoop(start, times=5, seed=5, gap_s=(0.2, 2.5), until_done=True)
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, kafka_request_timeout_s=90) as client:
        col = client.create_collection("crash10k", embedding_function=ef,
                                       data_loader=ImageLoader(roots=[root]))
        with loop:
            for kind, kwargs in calls:  # acknowledged by Kafka (acks=all) whatever the service does
                getattr(col, kind)(**kwargs)
            assert loop.done(timeout=200) >= 5
        got, got_vectors = full_state(col)  # answers once every write is applied (session)
        assert col.count() == len(want)
        # The index holds exactly the live ids, once each.
        probe = next(iter(want_vectors.values()))
        hits = col.query(query_embeddings=[probe], n_results=len(want), include=[])["ids"][0]
        assert sorted(hits) == sorted(want)
    lost = set(want) - set(got)
    extra = set(got) - set(want)
    assert not lost and not extra, f"lost {sorted(lost)[:5]}, resurrected {sorted(extra)[:5]}"
    stale = [i for i in want if got[i][:3] != want[i][:3]]
    assert not stale, f"stale modality/document/uri: {[(i, got[i][:3], want[i][:3]) for i in stale[:3]]}"
    assert [i for i in want if got[i] != want[i]] == [], "metadata differs"
    off = [i for i in want if not np.array_equal(got_vectors[i], want_vectors[i])]
    assert off == [], f"vectors differ: {off[:5]}"


# ---- broker restart ------------------------------------------------------------------------
@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_broker_restart_mid_ingest_and_queries(tmp_path: Path, private_broker: PrivateBroker,
                                               services: list[ServiceProcess]) -> None:
    prefix = new_prefix()
    svc = ServiceProcess(prefix, tmp_path / "svc", instance="restart",
                         extra_env={"STREAMER_KAFKA_BOOTSTRAP": private_broker.bootstrap,
                                    "STREAMER_KAFKA_REQUEST_TIMEOUT_S": "10"})
    svc.start()
    services.append(svc)
    timeout_s = 6.0
    client = KafkaClient(private_broker.bootstrap, kafka_topic_prefix=prefix,
                         kafka_request_timeout_s=timeout_s)
    vectors = np.random.default_rng(4).standard_normal((1800, 8)).astype(np.float32)
    chunks = [list(range(k, k + 20)) for k in range(0, 1800, 20)]
    acked: list[int] = []
    failed_writes: list[BaseException] = []
    writes: list[tuple[float, float]] = []  # (start, end) of every write call
    queries: list[tuple[str, float, float]] = []  # (outcome, start, end)
    stop_queries = threading.Event()
    try:
        col = client.create_collection("restart", embedding_function=None)

        def write(chunk: list[int]) -> bool:
            started = time.monotonic()
            try:
                col.upsert(ids=[f"r{i}" for i in chunk], embeddings=vectors[chunk],
                           metadatas=[{"i": i} for i in chunk])
                return True
            except StreamerError as exc:  # anything untyped fails the thread, and the test
                failed_writes.append(exc)
                return False
            finally:
                writes.append((started, time.monotonic()))

        def writer() -> None:
            for n, chunk in enumerate(chunks):
                while not write(chunk):  # a refused write is retried, as a caller would
                    time.sleep(0.5)
                acked.append(n)
                time.sleep(0.1)

        def querier() -> None:
            rng = random.Random(1)
            while not stop_queries.is_set():
                done = list(acked)
                target = chunks[rng.choice(done)][0] if done else 0
                started = time.monotonic()
                try:
                    res = col.query(query_embeddings=[vectors[target]], n_results=1)
                    outcome = "ok" if not done or res["ids"][0][0] == f"r{target}" else "wrong"
                except StreamerError as exc:
                    outcome = f"retriable {type(exc).__name__}" if exc.retriable else repr(exc)
                except Exception as exc:  # anything untyped is a failure
                    outcome = repr(exc)
                queries.append((outcome, started, time.monotonic()))
                time.sleep(0.1)

        threads = [threading.Thread(target=writer, daemon=True),
                   threading.Thread(target=querier, daemon=True)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= len(chunks) // 4, 120, "a quarter is ingested")
        down = time.monotonic()
        private_broker.stop()
        time.sleep(2 * timeout_s)  # long enough for in-flight sends and RPCs to time out
        private_broker.start()
        up = time.monotonic()
        threads[0].join(timeout=240)
        assert not threads[0].is_alive(), "ingestion did not resume after the broker restart"
        wait_until(lambda: sum(o == "ok" and s > up for o, s, _ in queries) >= 5, 120,
                   "queries are answered again")
        stop_queries.set()
        threads[1].join(timeout=60)

        def across(calls: list[tuple[float, float]]) -> bool:
            return any(s < up and e > down for s, e in calls)

        assert across(writes) and across([(s, e) for _, s, e in queries]), \
            "no call was in flight while the broker was away"
        assert all(isinstance(e, StreamerError) and e.retriable for e in failed_writes), failed_writes
        outcomes = {o for o, _, _ in queries}
        assert outcomes <= {"ok", "retriable UnavailableError", "retriable RequestTimeoutError"}, outcomes
        # A call has one time budget, sending included (slack for a loaded CI machine).
        assert max(e - s for _, s, e in queries) < 2 * timeout_s, "a query hung instead of failing"
        # Nothing acknowledged is lost; the service and its replica came back.
        got = col.get(include=["embeddings", "metadatas"])
        assert len(got["ids"]) == len(vectors)
        order = np.argsort([int(i[1:]) for i in got["ids"]])
        np.testing.assert_array_equal(np.asarray(got["embeddings"])[order], vectors)
        assert [got["metadatas"][k]["i"] for k in order] == list(range(len(vectors)))
        assert svc.proc is not None and svc.proc.poll() is None, "the service died"
    finally:
        stop_queries.set()
        client.close()
