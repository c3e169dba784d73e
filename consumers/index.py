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


class VectorIndex:
    def __init__(self, ndim: int, space: Space, dtype: IndexDType = "f32", *,
                 connectivity: int = 16, expansion_add: int = 128,
                 expansion_search: int = 128) -> None:
        self.ndim = ndim
        self.space = space
        self.dtype = dtype
        self._index = Index(ndim=ndim, metric=_METRIC[space], dtype=dtype,
                            connectivity=connectivity, expansion_add=expansion_add,
                            expansion_search=expansion_search)

    def __len__(self) -> int:
        return len(self._index)

    def upsert(self, keys: Keys, vectors: Matrix) -> None:
        present = keys[self._index.contains(keys)] if len(self._index) else keys[:0]
        if len(present):
            self._index.remove(present)
        self._index.add(keys, vectors, threads=1)

    def remove(self, keys: Keys) -> None:
        if len(keys):
            self._index.remove(keys)

    def get(self, keys: Keys) -> Matrix:
        got = self._index.get(keys, dtype="f32")
        return np.asarray(got, dtype=np.float32).reshape(len(keys), self.ndim)

    def search(self, queries: Matrix, k: int) -> tuple[Keys, Matrix, npt.NDArray[np.int64]]:
        """Top-k over the whole index: (keys, distances, counts) per query row."""
        exact = len(self._index) < EXACT_BELOW
        matches = self._index.search(queries, count=k, exact=exact, threads=1)
        keys = np.asarray(matches.keys, dtype=np.uint64).reshape(len(queries), -1)
        dists = np.asarray(matches.distances, dtype=np.float32).reshape(len(queries), -1)
        # A single query comes back as Matches (no ``counts``): all of its rows are valid.
        raw_counts = getattr(matches, "counts", None)
        counts = np.asarray([keys.shape[1]] if raw_counts is None else raw_counts,
                            dtype=np.int64).reshape(len(queries))
        return keys, dists, counts

    def search_among(self, queries: Matrix, keys: Keys, k: int) -> tuple[Keys, Matrix]:
        """Exact top-k restricted to ``keys`` (a filtered candidate set)."""
        vectors = self.get(keys)
        d = distances(queries, vectors, self.space)
        k = min(k, len(keys))
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(keys) else \
            np.tile(np.arange(len(keys)), (len(queries), 1))
        rows = np.arange(len(queries))[:, None]
        order = np.argsort(d[rows, part], axis=1, kind="stable")
        idx = part[rows, order]
        return keys[idx], d[rows, idx]

    def save(self, path: Path) -> None:
        self._index.save(str(path))

    def load(self, path: Path) -> None:
        self._index.load(str(path))
