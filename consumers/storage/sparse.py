"""A collection's sparse vector index: BM25-weighted terms of its documents, as postings.

Each term keeps its postings (record key -> weight) in a dict, the truth that writes change,
and a numpy copy (keys, weights) built when a query first needs it after a change, so a query
scores a term's whole posting list in one vectorised step (``np.bincount``) rather than a
Python loop per record. The document frequency of a term is its posting count; with
``bm25`` a query term's weight is scaled by Chroma's inverse document frequency
``ln(1 + (N - n_t + 0.5) / (n_t + 0.5))``, N the collection's record count, and a record's
score is Chroma's ``1 - q·d`` (lower is nearer).

It is derived state: the store puts a record's terms when its document is written and drops
them when the record is deleted or changes modality, so the log (and a checkpoint of the
records) rebuilds it exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.records import SparseVector


@dataclass(slots=True)
class _Postings:
    weights: dict[int, float]
    keys: npt.NDArray[np.int64] | None = None
    values: npt.NDArray[np.float64] | None = None

    def arrays(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        if self.keys is None or self.values is None:
            self.keys = np.fromiter(self.weights.keys(), np.int64, len(self.weights))
            self.values = np.fromiter(self.weights.values(), np.float64, len(self.weights))
        return self.keys, self.values


class SparseIndex:
    def __init__(self) -> None:
        self._terms: dict[int, _Postings] = {}
        self._docs: dict[int, SparseVector] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def vector(self, key: int) -> SparseVector | None:
        return self._docs.get(key)

    def put(self, key: int, vector: SparseVector) -> None:
        self.remove(key)
        if len(vector.indices) == 0:
            return
        self._docs[key] = vector
        for term, weight in zip(vector.indices.tolist(), vector.values.tolist(), strict=True):
            postings = self._terms.get(term)
            if postings is None:
                self._terms[term] = _Postings({key: weight})
            else:
                postings.weights[key] = weight
                postings.keys = postings.values = None

    def remove(self, key: int) -> None:
        old = self._docs.pop(key, None)
        if old is None:
            return
        for term in old.indices.tolist():
            postings = self._terms[term]
            del postings.weights[key]
            if postings.weights:
                postings.keys = postings.values = None
            else:
                del self._terms[term]

    def document_frequency(self, term: int) -> int:
        postings = self._terms.get(term)
        return 0 if postings is None else len(postings.weights)

    def query_weights(self, query: SparseVector, n_records: int, bm25: bool,
                      stats: tuple[int, dict[int, int]] | None = None) -> list[tuple[int, float]]:
        """(term, weight) of a query, IDF-scaled with ``bm25`` (Chroma's Idf operator): by
        this index's counts, or by ``stats`` (the record count and each term's document
        frequency over every shard of a collection)."""
        if stats is not None:
            n_records = stats[0]
        out = []
        for term, q in zip(query.indices.tolist(), query.values.tolist(), strict=True):
            if bm25:
                n_t = self.document_frequency(term) if stats is None else stats[1].get(term, 0)
                q *= float(np.log1p((n_records - n_t + 0.5) / (n_t + 0.5)))
            out.append((term, q))
        return out

    def scores(self, weights: list[tuple[int, float]],
               size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Every record sharing a term with the query: its key and ``1 - q·d``. ``size``
        bounds the keys (the store's next key)."""
        parts = [(p.arrays(), w) for t, w in weights if (p := self._terms.get(t)) is not None]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        if len(parts) == 1:
            (keys, values), w = parts[0]
            return keys, 1.0 - values * w
        dots = np.zeros(size, np.float64)
        for (keys, values), w in parts:
            dots[keys] += values * w  # keys are unique within one term's postings
        # Every weight and every IDF is positive, so a shared term makes the dot positive.
        hit = np.flatnonzero(dots)
        return hit, 1.0 - dots[hit]
