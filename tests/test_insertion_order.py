"""``get`` returns records in insertion order, as Chroma does, even though over Kafka the
records of one call travel on several partitions and are applied in separate batches."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import streamer
from consumers.storage import checkpoint
from consumers.storage.log import MutationLog
from consumers.storage.store import CollectionStore
from schemas.records import CollectionSpec, Mutation
from streamer.kafka.client import KafkaClient
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

ROUNDS, PER_CALL, DIM = 20, 30, 8


def add_rounds(col: Any, rounds: int = ROUNDS, check: bool = True) -> list[str]:
    """``rounds`` adds of ``PER_CALL`` ids each; after each one, ``get`` must list every id so
    far in insertion order."""
    rng = np.random.default_rng(5)
    inserted: list[str] = []
    for r in range(rounds):
        # Ids whose sort order differs from the call's order, so no accident hides a shuffle.
        ids = [f"r{r:02d}-{(i * 17) % PER_CALL:02d}" for i in range(PER_CALL)]
        col.add(ids=ids, embeddings=rng.standard_normal((PER_CALL, DIM)).astype(np.float32),
                metadatas=[{"round": r, "even": i % 2 == 0} for i in range(PER_CALL)])
        inserted += ids
        if check:
            assert col.get()["ids"] == inserted, f"round {r}"
    return inserted


def test_get_peek_and_filters_follow_insertion_order(client: streamer.Client) -> None:
    col = client.create_collection("ordered", embedding_function=None)
    inserted = add_rounds(col)
    assert col.peek(limit=45)["ids"] == inserted[:45]
    assert col.get(where={"even": True})["ids"] == inserted[::2]
    assert col.get(ids=list(reversed(inserted[:90])))["ids"] == inserted[:90]
    assert col.get(limit=10, offset=35)["ids"] == inserted[35:45]
    # An overwrite keeps its place (Chroma updates the row); a re-added id goes last.
    col.upsert(ids=[inserted[3]], embeddings=[np.ones(DIM, dtype=np.float32)])
    col.update(ids=[inserted[4]], metadatas=[{"round": -1}])
    col.delete(ids=[inserted[0]])
    col.add(ids=[inserted[0]], embeddings=[np.ones(DIM, dtype=np.float32)])
    assert col.get()["ids"] == inserted[1:] + inserted[:1]


@pytest.mark.kafka
def test_order_survives_restart_and_matches_on_a_fresh_replica(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    ensure_broker()
    prefix = new_prefix()
    # A checkpoint every 100 mutations: recovery reads a checkpoint and replays a log tail.
    env = {"STREAMER_CHECKPOINT_EVERY": "100"}

    def start(instance: str) -> ServiceProcess:
        svc = ServiceProcess(prefix, tmp_path / f"svc-{instance}", instance=instance,
                             extra_env=env)
        svc.start()
        services.append(svc)
        return svc

    first = start("a")
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, wait_writes=True)
    try:
        col = client.create_collection("ordered", embedding_function=None)
        inserted = add_rounds(col, check=False)
        assert col.get()["ids"] == inserted
        first.kill()  # SIGKILL: recovery from the checkpoint and the log
        services.remove(first)
        first = start("a")
        assert col.get()["ids"] == inserted
        # A second replica built from the state topic in batches of its own.
        start("b")
        first.kill()
        services.remove(first)
        assert col.get()["ids"] == inserted
        assert col.get(where={"even": False})["ids"] == inserted[1::2]
    finally:
        client.close()


def stamped(ids: list[str], clock: int) -> list[Mutation]:
    return [Mutation(op="put", id=i, metadata={"n": n}, vector=np.ones(DIM, dtype=np.float32),
                     order=(clock, n)) for n, i in enumerate(ids)]


def test_stamps_survive_the_log_and_checkpoints_and_old_files_still_load(tmp_path: Path) -> None:
    # One call's records applied in two batches in the wrong order, as Kafka partitions do.
    batches = [stamped(["c", "a", "b"], 10)[2:], stamped(["c", "a", "b"], 10)[:2]]
    log = MutationLog(tmp_path / "log", fsync=False)
    list(log.recover())
    store = CollectionStore(CollectionSpec(id="x", name="x"))
    for muts in batches:
        store.apply(muts, log.append(muts), {})
    log.close()
    assert store.select(None, None, None) == ["c", "a", "b"]
    assert store.select(["b", "a"], {"n": {"$gte": 0}}, None) == ["a", "b"]

    replayed = CollectionStore(CollectionSpec(id="x", name="x"))
    reopened = MutationLog(tmp_path / "log", fsync=False)
    for batch in reopened.recover():
        replayed.apply(batch.mutations, batch.last_seq, batch.meta)
    reopened.close()
    assert replayed.select(None, None, None) == ["c", "a", "b"]

    root = tmp_path / "ckpt"
    saved = checkpoint.save(store, root, fsync=False)
    loaded = checkpoint.load(root, CollectionSpec(id="x", name="x"))
    assert loaded is not None and loaded.select(None, None, None) == ["c", "a", "b"]

    # A checkpoint written before the stamp existed (six columns) loads in key order.
    rows = orjson.loads((saved / "records.json").read_bytes())
    old = orjson.dumps([row[:6] for row in rows])
    (saved / "records.json").write_bytes(old)
    meta = orjson.loads((saved / "meta.json").read_bytes())
    meta["files"]["records.json"] = zlib.crc32(old)
    (saved / "meta.json").write_bytes(orjson.dumps(meta))
    legacy = checkpoint.load(root, CollectionSpec(id="x", name="x"))
    assert legacy is not None
    assert legacy.select(None, None, None) == ["b", "c", "a"]  # apply (key) order


@pytest.mark.parametrize("seed", range(4))
def test_the_kept_order_equals_a_full_sort_through_any_writes(seed: int) -> None:
    """``ordered()`` appends ids that come after the last and sorts only when one does not:
    after random adds (stamped in and out of order, and unstamped), overwrites, deletes and
    re-adds, read at random moments, it equals the insertion order sorted from scratch."""
    rng = np.random.default_rng(seed)
    store = CollectionStore(CollectionSpec(id="x", name="x"))
    vec = np.zeros(4, np.float32)
    stamp = 0
    for _ in range(300):
        muts = []
        for id_ in {f"id{int(i)}" for i in rng.integers(0, 60, int(rng.integers(1, 8)))}:
            if rng.random() < 0.3:
                muts.append(Mutation(op="delete", id=id_))
                continue
            stamp += 1
            # Mostly rising stamps; some late (a call on a slower partition), some absent.
            order = None if rng.random() < 0.1 else \
                (stamp - int(rng.integers(0, 20)) if rng.random() < 0.2 else stamp, 0)
            muts.append(Mutation(op="put", id=id_, vector=vec, order=order))
        rng.shuffle(muts)
        store.apply(muts, 0, {})
        if rng.random() < 0.5:
            want = sorted(store.records, key=lambda i: store.insertion_rank(store.records[i]))
            assert store.ordered() == want
    assert store.ordered() == sorted(store.records, key=lambda i: store.insertion_rank(store.records[i]))
