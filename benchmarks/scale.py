"""Section 3: the index at scale and service recovery, on CLIP-like vectors (benchmarks.vectors).

The f32 index (the collection default) is built the way the service builds it: through
``CollectionState.commit`` (log, fsync, then ``VectorIndex.upsert``) in big batches, then
checkpointed; a 1% log tail is committed after the checkpoint and ``CollectionState.open()``
is timed on that directory (checkpoint load + tail replay, warm page cache). Other dtypes
are built with ``VectorIndex.upsert`` alone, on the same vectors."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import Timer
from benchmarks.vectors import F32, ClipLike
from consumers.storage.backfill import STEP as BACKFILL_STEP
from consumers.storage.catalog import CollectionState
from consumers.storage.index import VectorIndex
from schemas.records import CollectionSpec, IndexDType, Modality, Mutation

DIM = 512
K = 10
QUERIES = 200
CHUNK = 10_000
ROOT = Path(__file__).resolve().parents[1]
_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "i8": 1}


@dataclass
class IndexResult:
    dtype: str
    n: int
    build_s: float
    build_path: str
    recall: float
    qps_single: float
    qps_batch: float
    memory_bytes: int  # resident growth of a fresh process restoring the saved index
    file_bytes: int
    save_s: float
    restore_s: float
    view_s: float

    @property
    def raw_bytes(self) -> int:
        return self.n * DIM * _BYTES[self.dtype]


@dataclass
class RecoveryResult:
    n: int
    tail: int
    checkpoint_s: float
    open_s: float
    qps_pending: float  # single-query QPS right after open, the tail still searched exactly
    backfill_s: float  # until IndexBackfill has moved the whole tail into the graph


class Exact:
    """Running exact top-k of fixed queries over a stream of chunks (numpy, cosine on unit
    vectors), so the full matrix need not be held next to the index."""

    def __init__(self, queries: F32) -> None:
        self.queries = queries
        self.sims = np.full((len(queries), K), -np.inf, dtype=np.float32)
        self.keys = np.zeros((len(queries), K), dtype=np.int64)

    def add(self, start: int, chunk: F32) -> None:
        sims = np.concatenate([self.sims, self.queries @ chunk.T], axis=1)
        keys = np.concatenate([self.keys, np.broadcast_to(np.arange(start, start + len(chunk)),
                                                          (len(self.queries), len(chunk)))], axis=1)
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        self.sims = np.take_along_axis(sims, top, axis=1)
        self.keys = np.take_along_axis(keys, top, axis=1)

    def recall(self, found: np.ndarray) -> float:
        hits = [len(set(f.tolist()) & set(e.tolist())) for f, e in zip(found, self.keys)]
        return float(np.mean(hits)) / K


def _search_stats(index: VectorIndex, exact: Exact, key_offset: int) -> tuple[float, float, float]:
    q = exact.queries
    with Timer() as t:
        for i in range(len(q)):
            index.search(q[i:i + 1], K)
    single = len(q) / t.seconds
    with Timer() as t:
        keys, _, _ = index.search(q, K)
    batch = len(q) / t.seconds
    found = keys.astype(np.int64) - key_offset
    return exact.recall(found), single, batch


# Restore and view run in a fresh process: its resident-memory growth is the index's real
# footprint (in this process, freed memory kept by malloc would be reused and hide it).
_RESTORE = """
import json, sys, time
from usearch.index import Index
from consumers.storage.index import VectorIndex
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
path, dtype, ndim = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = rss()
t0 = time.perf_counter()
index = VectorIndex(ndim, 'cosine', dtype)
index.load(path)
restore = time.perf_counter() - t0
resident = rss() - before
t0 = time.perf_counter()
view = Index.restore(path, view=True)
view_s = time.perf_counter() - t0
assert len(view) == len(index)
print(json.dumps({'restore_s': restore, 'resident': resident, 'view_s': view_s}))
"""


def _persist_stats(index: VectorIndex, path: Path) -> tuple[int, int, float, float, float]:
    with Timer() as save:
        index.save(path)
    size = path.stat().st_size
    proc = subprocess.run([sys.executable, "-c", _RESTORE, str(path), index.dtype, str(DIM)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    path.unlink()
    return size, int(out["resident"]), save.seconds, out["restore_s"], out["view_s"]


def _mutations(start: int, chunk: F32) -> list[Mutation]:
    return [Mutation(op="put", id=f"img-{start + i:08d}", modality=Modality.URI,
                     uri=f"photos/{start + i:08d}.jpg", metadata={"n": start + i}, vector=row)
            for i, row in enumerate(chunk)]


def service_index(n: int, gen: ClipLike, exact: Exact, work: Path) -> tuple[IndexResult, RecoveryResult]:
    """f32 through the service's write path; then checkpoint, a 1% tail, and recovery."""
    spec = CollectionSpec(id=str(uuid.uuid4()), name="scale", dimension=DIM)
    directory = work / "recovery"
    shutil.rmtree(directory, ignore_errors=True)
    state = CollectionState(spec, directory, fsync=True, checkpoint_every=1 << 62)
    state.open()
    build = 0.0
    for i, chunk in enumerate(gen.chunks(n, CHUNK)):
        exact.add(i * CHUNK, chunk)
        muts = _mutations(i * CHUNK, chunk)
        t0 = time.perf_counter()
        state.commit(muts)
        build += time.perf_counter() - t0
    index = state.store.index
    assert index is not None and len(index) == n
    # Keys are assigned 1, 2, ... in commit order, so key - 1 is the row number.
    recall, single, batch = _search_stats(index, exact, key_offset=1)
    size, resident, save_s, restore_s, view_s = _persist_stats(index, work / "f32.usearch")
    result = IndexResult("f32", n, build, "CollectionState.commit", recall, single, batch,
                         resident, size, save_s, restore_s, view_s)
    with Timer() as ckpt:
        state.checkpoint()
    tail = max(1, n // 100)
    for start in range(0, tail, CHUNK):
        chunk = gen.sample(min(CHUNK, tail - start), np.random.default_rng([7, start]))
        state.commit(_mutations(n + start, chunk))
    state.close(checkpoint_now=False)
    del state, index
    gc.collect()
    reopened = CollectionState(CollectionSpec(id=spec.id, name="scale", dimension=DIM), directory,
                               fsync=True, checkpoint_every=1 << 62)
    with Timer() as t:
        reopened.open()
    assert reopened.store.count() == n + tail, reopened.store.count()
    index = reopened.store.index
    assert index is not None and index.pending == tail
    q = exact.queries
    with Timer() as searching:
        for i in range(len(q)):
            index.search(q[i:i + 1], K)
    with Timer() as backfill:
        while index.backfill(BACKFILL_STEP):
            pass
    reopened.close(checkpoint_now=False)
    del reopened
    gc.collect()
    shutil.rmtree(directory, ignore_errors=True)
    return result, RecoveryResult(n, tail, ckpt.seconds, t.seconds, len(q) / searching.seconds,
                                  backfill.seconds)


def plain_index(dtype: IndexDType, n: int, gen: ClipLike, exact: Exact, work: Path) -> IndexResult:
    index = VectorIndex(DIM, "cosine", dtype)
    build = 0.0
    for i, chunk in enumerate(gen.chunks(n, CHUNK)):
        keys = np.arange(i * CHUNK, i * CHUNK + len(chunk), dtype=np.uint64)
        t0 = time.perf_counter()
        index.upsert(keys, chunk)
        build += time.perf_counter() - t0
    recall, single, batch = _search_stats(index, exact, key_offset=0)
    size, resident, save_s, restore_s, view_s = _persist_stats(index, work / f"{dtype}.usearch")
    result = IndexResult(dtype, n, build, "VectorIndex.upsert", recall, single, batch,
                         resident, size, save_s, restore_s, view_s)
    del index
    gc.collect()
    return result


def run(n: int, small_dtypes_n: int, work: Path,
        done: Callable[[list[IndexResult], RecoveryResult], None]) -> None:
    """f32 (service path, and recovery) at ``n``, i8 at ``min(n, small_dtypes_n)``, then f16 at
    ``n``; ``done`` gets the results so far after each, so a cut-short run keeps them."""
    work.mkdir(parents=True, exist_ok=True)
    gen = ClipLike(DIM)
    exact = Exact(gen.queries(QUERIES))
    f32, recovery = service_index(n, gen, exact, work)
    results = [f32]
    done(results, recovery)
    for dtype, size in (("i8", min(n, small_dtypes_n)), ("f16", n)):
        ex = exact if size == n else Exact(exact.queries)
        if size != n:
            for i, chunk in enumerate(gen.chunks(size, CHUNK)):
                ex.add(i * CHUNK, chunk)
        results.append(plain_index(dtype, size, gen, ex, work))  # type: ignore[arg-type]
        done(results, recovery)
