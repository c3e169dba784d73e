"""Pending vectors (replayed at recovery, searched exactly) and their backfill into the graph."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import numpy as np
import pytest

import streamer
from consumers.storage import backfill as backfill_module
from consumers.storage.backfill import IndexBackfill
from consumers.storage.catalog import Catalog, CollectionState
from consumers.storage.index import VectorIndex
from schemas.records import CollectionSpec, Modality, Mutation

DIM = 16
ROOT = Path(__file__).resolve().parents[1]


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    unit: np.ndarray = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def _exact_top(truth: dict[int, np.ndarray], queries: np.ndarray, k: int) -> list[list[int]]:
    keys = np.asarray(list(truth), dtype=np.uint64)
    matrix = np.stack(list(truth.values()))
    d = 1.0 - queries @ matrix.T
    return [[int(keys[j]) for j in np.argsort(row, kind="stable")[:k]] for row in d]


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_pending_and_graph_answer_like_one_exact_index(space: str) -> None:
    index = VectorIndex(DIM, space)  # type: ignore[arg-type]
    truth: dict[int, np.ndarray] = {}
    base = _rows(300, 1)
    index.upsert(np.arange(300, dtype=np.uint64), base)
    truth.update(enumerate(base))
    # Replayed tail: new keys, keys that replace graph vectors, then a removal and a live write.
    tail = _rows(120, 2)
    tail_keys = np.arange(250, 370, dtype=np.uint64)
    index.upsert(tail_keys, tail, defer=True)
    truth.update(zip(tail_keys.tolist(), tail))
    assert index.pending == 120 and len(index) == 370
    gone = np.asarray([10, 260, 369], dtype=np.uint64)
    index.remove(gone)
    for k in gone.tolist():
        del truth[k]
    live = _rows(5, 3)
    index.upsert(np.asarray([255, 256, 11, 12, 13], dtype=np.uint64), live)
    truth.update(zip([255, 256, 11, 12, 13], live))
    assert index.pending == 120 - 2 - 2  # 260 and 369 removed, 255 and 256 now in the graph
    assert len(index) == len(truth)

    got = index.get(np.asarray(list(truth), dtype=np.uint64))
    np.testing.assert_allclose(got, np.stack(list(truth.values())), atol=1e-6)

    queries = _rows(20, 4)
    k = 7
    keys, dists, counts = index.search(queries, k)
    assert counts.tolist() == [k] * len(queries)
    if space != "l2":  # cosine and ip rank like 1 - dot on unit vectors; l2sq too, checked below
        assert keys.tolist() == _exact_top(truth, queries, k)
    assert (np.diff(dists, axis=1) >= -1e-6).all()
    before = keys.tolist()

    remaining = index.backfill(50)
    assert remaining == index.pending == 116 - 50
    assert index.backfill(1000) == 0
    assert len(index) == len(truth)
    after, _, _ = index.search(queries, k)
    assert after.tolist() == before  # below EXACT_BELOW the graph search is exact too
    np.testing.assert_allclose(index.get(np.asarray(list(truth), dtype=np.uint64)),
                               np.stack(list(truth.values())), atol=1e-6)


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_pending_and_filtered_distances_are_exact_for_long_vectors(space: str) -> None:
    """Chroma's property tests compare returned distances with float64 ones to 1e-4 at 741
    dimensions; a float32 expansion of |q - v|^2 is off by more for vectors this long."""
    rng = np.random.default_rng(5)
    vectors = (rng.standard_normal((300, 741)) * 40).astype(np.float32)
    keys = np.arange(300, dtype=np.uint64)
    index = VectorIndex(741, space)  # type: ignore[arg-type]
    index.upsert(keys, vectors, defer=True)
    queries = vectors[[7, 150]] + np.float32(0.01)
    q64, v64 = queries.astype(np.float64), vectors.astype(np.float64)
    if space == "l2":
        want = ((q64[:, None, :] - v64[None]) ** 2).sum(axis=2)
    else:
        dots = q64 @ v64.T
        want = 1.0 - (dots if space == "ip" else
                      dots / np.outer(np.linalg.norm(q64, axis=1), np.linalg.norm(v64, axis=1)))
    got_keys, got, _ = index.search(queries, 5)
    among_keys, among = index.search_among(queries, keys[::2], 5)
    for row in range(2):
        np.testing.assert_allclose(got[row], want[row, got_keys[row].astype(np.intp)],
                                   rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(among[row], want[row, among_keys[row].astype(np.intp)],
                                   rtol=1e-6, atol=1e-4)


def test_a_few_pending_vectors_beside_an_empty_graph() -> None:
    index = VectorIndex(DIM, "cosine")
    index.upsert(np.asarray([5, 6], dtype=np.uint64), _rows(2, 5), defer=True)
    keys, _, counts = index.search(_rows(1, 5)[:1], 2)
    assert counts.tolist() == [2]
    assert keys[0, 0] == 5  # the query is row 0 of the same draw


def test_save_backfills_so_the_file_holds_everything(tmp_path: Path) -> None:
    index = VectorIndex(DIM, "cosine")
    index.upsert(np.arange(10, dtype=np.uint64), _rows(10, 6))
    index.upsert(np.arange(10, 40, dtype=np.uint64), _rows(30, 7), defer=True)
    index.save(tmp_path / "i.usearch")
    assert index.pending == 0
    again = VectorIndex(DIM, "cosine")
    again.load(tmp_path / "i.usearch")
    assert len(again) == 40 and again.pending == 0


def _spec() -> CollectionSpec:
    return CollectionSpec(id=str(uuid.uuid4()), name="bf", dimension=DIM)


def _put(i: int, vec: np.ndarray) -> Mutation:
    return Mutation(op="put", id=f"r{i}", modality=Modality.EMBEDDING, metadata={"i": i}, vector=vec)


def test_recovery_leaves_the_tail_pending_and_backfill_moves_it(tmp_path: Path) -> None:
    spec = _spec()
    root = tmp_path / "col"
    state = CollectionState(spec, root, fsync=True, checkpoint_every=10**9)
    state.open()
    vecs = _rows(400, 8)
    state.commit([_put(i, vecs[i]) for i in range(300)])
    state.checkpoint()
    state.commit([_put(i, vecs[i]) for i in range(300, 400)])
    state.commit([Mutation(op="delete", id="r0")])
    state.close(checkpoint_now=False)

    catalog = Catalog(tmp_path)
    reopened = CollectionState(CollectionSpec(id=spec.id, name="bf", dimension=DIM), root,
                               fsync=True, checkpoint_every=10**9)
    reopened.open()
    catalog._collections["bf"] = reopened  # the read-only view is this very dict
    index = reopened.store.index
    assert index is not None and index.pending == 100 and reopened.store.count() == 399
    found = reopened.store.search(vecs[350:351], 1, None, None, None).ids
    assert found == [["r350"]]

    locks: dict[str, anyio.Lock] = {}

    async def drain() -> int:
        steps = 0
        backfill = IndexBackfill(catalog, lambda cid: locks.setdefault(cid, anyio.Lock()), step=30)
        while await backfill.step():
            steps += 1
        return steps

    assert anyio.run(drain) == 4  # 100 pending in steps of 30
    assert index.pending == 0 and len(index) == 399
    found = reopened.store.search(vecs[350:351], 1, None, None, None).ids
    assert found == [["r350"]]
    reopened.close(checkpoint_now=False)


CRASH_AFTER_TAIL = """
import os, sys
import numpy as np
import streamer
vecs = np.load(sys.argv[2])
c = streamer.Client(sys.argv[1], checkpoint_every=40)
col = c.create_collection("tail")
col.add(ids=[f"a{i}" for i in range(50)], embeddings=vecs[:50].tolist())  # checkpointed
col.add(ids=[f"a{i}" for i in range(50, 60)], embeddings=vecs[50:].tolist())  # log tail only
os._exit(0)  # no close: the next open replays the tail
"""


def test_client_serves_a_replayed_tail_at_once(tmp_path: Path) -> None:
    vecs = _rows(60, 9)
    np.save(tmp_path / "v.npy", vecs)
    proc = subprocess.run([sys.executable, "-c", CRASH_AFTER_TAIL, str(tmp_path / "db"),
                           str(tmp_path / "v.npy")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    again = streamer.Client(tmp_path / "db")
    try:
        col = again.get_collection("tail")
        assert col.count() == 60
        got = col.query(query_embeddings=vecs[[55, 5]].tolist(), n_results=2)
        assert [row[0] for row in got["ids"]] == ["a55", "a5"]
        np.testing.assert_allclose(col.get(ids=["a57"], include=["embeddings"])["embeddings"][0],
                                   vecs[57], atol=1e-6)
    finally:
        again.close()


def test_backfill_yields_to_a_collection_being_written(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A step holds the collection's lock: it waits for a quiet moment, unless the pending set
    reached MAX_PENDING."""
    state = CollectionState(_spec(), tmp_path / "col", fsync=False, checkpoint_every=10**9)
    state.open()
    catalog = Catalog(tmp_path)
    catalog._collections["bf"] = state
    vecs = _rows(60, 10)
    state.commit([_put(i, vecs[i]) for i in range(40)], defer_index=True)
    index = state.store.index
    assert index is not None and index.pending == 40
    locks: dict[str, anyio.Lock] = {}

    def backfill(quiet_s: float) -> IndexBackfill:
        return IndexBackfill(catalog, lambda cid: locks.setdefault(cid, anyio.Lock()),
                             step=10, quiet_s=quiet_s)

    async def steps() -> None:
        assert not await backfill(60).step()  # committed just now: left alone
        assert index.pending == 40
        monkeypatch.setattr(backfill_module, "MAX_PENDING", 40)
        assert await backfill(60).step()  # at the bound: steps anyway
        assert index.pending == 30
        monkeypatch.undo()
        state.last_commit -= 0.5  # quiet for half a second
        assert await backfill(0.2).step()
        assert index.pending == 20

    anyio.run(steps)
    state.commit([_put(i, vecs[i]) for i in range(40, 60)])  # not deferred: into the graph
    assert index.pending == 20 and len(index) == 60
    state.close(checkpoint_now=False)
