"""The usearch index of one collection: uint64 keys, upsert as remove + add, exact search
for small or filtered candidate sets, HNSW search otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from schemas.records import IndexDType, Space

Keys = npt.NDArray[np.uint64]
Matrix = npt.NDArray[np.float32]

_METRIC = {"cosine": "cos", "l2": "l2sq", "ip": "ip"}
# Below this many live vectors a linear scan is exact and as fast as the graph.
EXACT_BELOW = 4096


def distances(queries: Matrix, vectors: Matrix, space: Space) -> Matrix:
    """Exact distances in the collection's space, as usearch and Chroma define them."""
    if space == "l2":
        q2 = np.einsum("ij,ij->i", queries, queries)[:, None]
        v2 = np.einsum("ij,ij->i", vectors, vectors)[None, :]
        out: Matrix = np.maximum(q2 + v2 - 2.0 * (queries @ vectors.T), 0.0).astype(np.float32)
        return out
    dots = queries @ vectors.T
    if space == "ip":
        out = (1.0 - dots).astype(np.float32)
        return out
    qn = np.linalg.norm(queries, axis=1)[:, None]
    vn = np.linalg.norm(vectors, axis=1)[None, :]
    out = (1.0 - dots / np.maximum(qn * vn, 1e-30)).astype(np.float32)
    return out


def _refined(queries: Matrix, vectors: Matrix, idx: npt.NDArray[np.intp], space: Space) -> Matrix:
    """Distances from each query to its candidate rows ``idx`` (queries x k), recomputed in
    float64 from the differences: ``distances`` expands |q - v|^2 in float32, whose rounding
    (1e-3 and more for long vectors) would show in the distances returned."""
    q = queries.astype(np.float64)[:, None, :]
    v = vectors[idx].astype(np.float64)
    if space == "l2":
        out: Matrix = ((v - q) ** 2).sum(axis=2).astype(np.float32)
        return out
    dots = (v * q).sum(axis=2)
    if space == "ip":
        out = (1.0 - dots).astype(np.float32)
        return out
    norms = np.linalg.norm(v, axis=2) * np.linalg.norm(q, axis=2)
    out = (1.0 - dots / np.maximum(norms, 1e-30)).astype(np.float32)
    return out


# Batches at least this big are added with every core (bulk loads, log replay, backfill);
# live batches are small and the model needs the cores.
PARALLEL_FROM = 256


def _threads(n: int) -> int:
    return 0 if n >= PARALLEL_FROM else 1


class VectorIndex:
    """The HNSW graph plus a *pending* set: vectors replayed from the log at recovery are
    searched exactly (a matrix scan) until ``backfill`` moves them into the graph, so a
    restart does not wait for graph insertion. Callers serialise access (collection lock)."""

    def __init__(self, ndim: int, space: Space, dtype: IndexDType = "f32", *,
                 connectivity: int = 16, expansion_add: int = 100,
                 expansion_search: int = 100) -> None:
        self.ndim = ndim
        self.space = space
        self.dtype = dtype
        self._index = Index(ndim=ndim, metric=_METRIC[space], dtype=dtype,
                            connectivity=connectivity, expansion_add=expansion_add,
                            expansion_search=expansion_search)
        self._pending: dict[int, Matrix] = {}
        self._pending_matrix: tuple[Keys, Matrix] | None = None

    def __len__(self) -> int:
        return len(self._index) + len(self._pending)

    @property
    def pending(self) -> int:
        """Vectors searched exactly, not yet in the graph."""
        return len(self._pending)

    def upsert(self, keys: Keys, vectors: Matrix, *, defer: bool = False) -> None:
        """Insert or replace; ``defer`` leaves the vectors pending (see the class docstring)."""
        self._forget_pending(keys)
        present = keys[self._index.contains(keys)] if len(self._index) else keys[:0]
        if len(present):
            self._index.remove(present)
        if defer:
            self._pending.update(zip(keys.tolist(), vectors))
            self._pending_matrix = None  # live replicas defer between searches, not only at recovery
        else:
            self._index.add(keys, vectors, threads=_threads(len(keys)))

    def backfill(self, limit: int) -> int:
        """Move up to ``limit`` pending vectors into the graph; returns how many remain."""
        if not self._pending:
            return 0
        take = list(self._pending)[:limit]
        matrix = np.stack([self._pending[k] for k in take]).astype(np.float32, copy=False)
        self._index.add(np.asarray(take, dtype=np.uint64), matrix, threads=_threads(len(take)))
        for k in take:
            del self._pending[k]
        self._pending_matrix = None
        return len(self._pending)

    def _forget_pending(self, keys: Keys) -> None:
        if self._pending:
            dropped = [self._pending.pop(k, None) for k in keys.tolist()]
            if any(d is not None for d in dropped):
                self._pending_matrix = None

    def _pending_rows(self) -> tuple[Keys, Matrix]:
        if self._pending_matrix is None:
            keys = np.fromiter(self._pending, dtype=np.uint64, count=len(self._pending))
            self._pending_matrix = (keys, np.stack(list(self._pending.values())))
        return self._pending_matrix

    def remove(self, keys: Keys) -> None:
        self._forget_pending(keys)
        if len(keys) and len(self._index):
            present = keys[self._index.contains(keys)]
            if len(present):
                self._index.remove(present)

    def get(self, keys: Keys) -> Matrix:
        if not self._pending:
            return self._graph_get(keys)
        out = np.empty((len(keys), self.ndim), dtype=np.float32)
        in_graph = []
        for row, k in enumerate(keys.tolist()):
            vec = self._pending.get(k)
            if vec is None:
                in_graph.append(row)
            else:
                out[row] = vec
        if in_graph:
            out[in_graph] = self._graph_get(keys[in_graph])
        return out

    def _graph_get(self, keys: Keys) -> Matrix:
        got = self._index.get(keys, dtype="f32")
        return np.asarray(got, dtype=np.float32).reshape(len(keys), self.ndim)

    def search(self, queries: Matrix, k: int) -> tuple[Keys, Matrix, npt.NDArray[np.int64]]:
        """Top-k over the whole index: (keys, distances, counts) per query row."""
        keys, dists, counts = self._graph_search(queries, k) if len(self._index) else (
            np.zeros((len(queries), 0), np.uint64), np.zeros((len(queries), 0), np.float32),
            np.zeros(len(queries), np.int64))
        if not self._pending:
            return keys, dists, counts
        # Merge the graph's top-k with an exact top-k over the pending vectors.
        pkeys, pmatrix = self._pending_rows()
        pk = min(k, len(pkeys))
        pd = distances(queries, pmatrix, self.space)
        part = np.argpartition(pd, pk - 1, axis=1)[:, :pk] if pk < len(pkeys) else \
            np.tile(np.arange(len(pkeys)), (len(queries), 1))
        rows = np.arange(len(queries))[:, None]
        valid = np.arange(keys.shape[1])[None, :] < counts[:, None]
        all_d = np.concatenate([np.where(valid, dists, np.inf),
                                _refined(queries, pmatrix, part, self.space)], axis=1)
        all_k = np.concatenate([keys, pkeys[part]], axis=1)
        order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
        return (all_k[rows, order], all_d[rows, order].astype(np.float32),
                np.minimum(counts + pk, k).astype(np.int64))

    def _graph_search(self, queries: Matrix, k: int) -> tuple[Keys, Matrix, npt.NDArray[np.int64]]:
        exact = len(self._index) < EXACT_BELOW
        matches = self._index.search(queries, count=k, exact=exact, threads=1)
        keys = np.asarray(matches.keys, dtype=np.uint64).reshape(len(queries), -1)
        dists = np.asarray(matches.distances, dtype=np.float32).reshape(len(queries), -1)
        # A single query comes back as Matches (no ``counts``): all of its rows are valid.
        raw_counts = getattr(matches, "counts", None)
        counts = np.asarray([keys.shape[1]] if raw_counts is None else raw_counts,
                            dtype=np.int64).reshape(len(queries))
        if self.space == "cosine":
            # usearch gives a zero query 0.0 to a zero vector; Chroma (and ``distances``) 1.0.
            dists[~queries.any(axis=1)] = 1.0
        return keys, dists, counts

    def search_among(self, queries: Matrix, keys: Keys, k: int) -> tuple[Keys, Matrix]:
        """Exact top-k restricted to ``keys`` (a filtered candidate set)."""
        vectors = self.get(keys)
        d = distances(queries, vectors, self.space)
        k = min(k, len(keys))
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(keys) else \
            np.tile(np.arange(len(keys)), (len(queries), 1))
        rows = np.arange(len(queries))[:, None]
        refined = _refined(queries, vectors, part, self.space)
        order = np.argsort(refined, axis=1, kind="stable")
        return keys[part[rows, order]], refined[rows, order]

    def save(self, path: Path) -> None:
        """The saved graph holds every vector: pending ones are backfilled first."""
        self.backfill(len(self._pending))
        self._index.save(str(path))

    def tune(self, *, expansion_add: int, expansion_search: int) -> None:
        """New ``ef_construction``/``ef_search`` for the next inserts and searches (a loaded
        graph keeps its connectivity and takes these from its spec)."""
        # usearch's setters carry no annotations, so mypy reads the properties as read-only.
        self._index.expansion_add = expansion_add  # type: ignore[misc]
        self._index.expansion_search = expansion_search  # type: ignore[misc]

    def load(self, source: Path | bytes) -> None:
        """From a file, or from the bytes of one (already read and verified)."""
        self._pending.clear()
        self._pending_matrix = None
        add, search = self._index.expansion_add, self._index.expansion_search
        self._index.load(source if isinstance(source, bytes) else str(source))
        self.tune(expansion_add=add, expansion_search=search)
