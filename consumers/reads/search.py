"""Chroma's Search API over one collection: filter, rank, group, limit and select.

It reads the dict form that chromadb's ``Search.to_dict()`` gives (and its HTTP API carries),
so the embedded engine, the Kafka reader and the gateway run this one rule. Chroma's
semantics (docs.trychroma.com, "Ranking and Scoring"): lower scores are better; each ``Knn``
scores its nearest ``limit`` records among those the filter keeps (a dense one by the
collection's distance, a sparse one by ``1 - q·d`` with the collection's IDF); a record is
ranked if some Knn found it, and kept only if every Knn without a ``default`` found it;
``return_rank`` turns a Knn's score into its 0-based rank, which is what ``Rrf`` (already
arithmetic in the dict form) sums. Ties go to the record inserted first (``get``'s order).

A sharded collection runs the same plan in two steps (``consumers.reads.search_gather``):
each shard reports its sparse statistics, then its candidates under the summed statistics,
and the caller ranks, groups and selects over them with ``finish``."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from consumers.embedding.bm25 import as_sparse
from consumers.reads.search_plan import DOCUMENT, EMBEDDING, METADATA, SCORE, Knn, Plan, plan
from consumers.storage.catalog import CollectionState
from consumers.storage.store import CollectionStore
from schemas.errors import InvalidArgumentError
from schemas.records import Metadata, SparseVector

#: A sparse Knn's statistics: the record count and each query term's document frequency; a
#: shard's own, or the whole collection's summed over the shards.
Stats = tuple[int, dict[int, int]]
COLUMNS = ("ids", "documents", "embeddings", "metadatas", "scores", "select")


# ---- Knn on one store -----------------------------------------------------------------
def run_knn(store: CollectionStore, knn: Knn, allowed: np.ndarray | None,
            stats: Stats | None = None) -> list[tuple[int, float]]:
    """The nearest ``limit`` allowed records as (key, score), best first, ties to the
    record inserted first."""
    if knn.key == EMBEDDING:
        keys, scores = _dense(store, knn, allowed)
    else:
        keys, scores = _sparse(store, knn, allowed, stats)
    if len(scores) > knn.limit:  # the nearest `limit`, and every record tied with the last
        cut = np.partition(scores, knn.limit - 1)[knn.limit - 1]
        near = np.flatnonzero(scores <= cut)
        keys, scores = keys[near], scores[near]
    places = store.insertion_ranks(int(k) for k in keys)
    order = np.lexsort((np.fromiter((places[int(k)] for k in keys), np.int64, len(keys)),
                        scores))[:knn.limit]
    return [(int(keys[i]), float(scores[i])) for i in order]


def _dense(store: CollectionStore, knn: Knn,
           allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(knn.query, str | dict):
        raise InvalidArgumentError(
            f"Knn on {EMBEDDING} needs a dense vector, got {type(knn.query).__name__}")
    query = np.asarray(knn.query, dtype=np.float32)
    if query.ndim != 1 or query.size == 0:
        raise InvalidArgumentError("$knn requires exactly one query embedding")
    store.check_dimension([query])
    if store.index is None or not store.records:
        return np.zeros(0, np.int64), np.zeros(0)
    if allowed is not None:
        if not len(allowed):
            return np.zeros(0, np.int64), np.zeros(0)
        keys, dists = store.index.search_among(query[None, :], allowed.astype(np.uint64),
                                               knn.limit)
        return keys[0].astype(np.int64), dists[0].astype(np.float64)
    keys, dists, counts = store.index.search(query[None, :], min(knn.limit, len(store.records)))
    n = int(counts[0])
    return keys[0, :n].astype(np.int64), dists[0, :n].astype(np.float64)


def _sparse_query(store: CollectionStore, knn: Knn) -> SparseVector:
    declared = store.spec.sparse
    if declared is None or store.sparse is None or knn.key != declared["key"]:
        raise InvalidArgumentError(
            f"Knn key {knn.key!r} has no sparse vector index: declare one in the collection's "
            f"schema (SparseVectorIndexConfig) or search {EMBEDDING}")
    query = knn.query
    if isinstance(query, str):  # weighed by the collection's own function, as Chroma's client does
        return store.encode_sparse(query)
    if not isinstance(query, dict) and not hasattr(query, "indices"):
        raise InvalidArgumentError(
            f"Knn on {knn.key!r} needs a sparse vector or a text, got {type(query).__name__}")
    return as_sparse(query)


def sparse_stats(store: CollectionStore, knn: Knn) -> Stats:
    query = _sparse_query(store, knn)
    assert store.sparse is not None
    return store.count(), {t: store.sparse.document_frequency(t) for t in query.indices.tolist()}


def _sparse(store: CollectionStore, knn: Knn, allowed: np.ndarray | None,
            stats: Stats | None) -> tuple[np.ndarray, np.ndarray]:
    query = _sparse_query(store, knn)
    assert store.sparse is not None and store.spec.sparse is not None
    weights = store.sparse.query_weights(query, store.count(),
                                         bool(store.spec.sparse.get("bm25", True)),
                                         None if stats is None else stats)
    keys, scores = store.sparse.scores(weights, store.next_key)
    if allowed is not None:
        keep = np.isin(keys, allowed)
        keys, scores = keys[keep], scores[keep]
    return keys, scores


# ---- rank, group, limit, select over candidates --------------------------------------
class Table(Protocol):
    """The candidates a rank is evaluated over: one store's records, or several shards'."""

    def places(self, keys: Iterable[int]) -> Mapping[int, int]:
        """Each key's place among ``keys`` in insertion order."""
        ...

    def metadata(self, key: int) -> Metadata | None: ...

    def columns(self, chosen: list[tuple[float | None, int]], select: list[str]) -> dict[str, Any]:
        ...


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _group(table: Table, ranked: list[tuple[float, int]], group_by: dict[str, Any],
           pos: Mapping[int, int]) -> list[tuple[float, int]]:
    keys, aggregate = group_by.get("keys"), group_by.get("aggregate")
    if not isinstance(keys, list) or not keys or not isinstance(aggregate, dict) \
            or len(aggregate) != 1:
        raise InvalidArgumentError(f"GroupBy requires 'keys' and 'aggregate', got {group_by}")
    (op, spec), = aggregate.items()
    if op not in ("$min_k", "$max_k") or not isinstance(spec, dict):
        raise InvalidArgumentError(f"Unknown aggregate operator: {op}")
    by, k = spec.get("keys"), spec.get("k")
    if not isinstance(by, list) or not by or not isinstance(k, int) or k <= 0:
        raise InvalidArgumentError(f"{op} requires keys and a positive k, got {spec}")
    groups: dict[tuple[Any, ...], list[tuple[float, int]]] = {}
    for score, key in ranked:
        meta = table.metadata(key) or {}
        groups.setdefault(tuple(_hashable(meta.get(g)) for g in keys), []).append((score, key))

    def sort_key(item: tuple[float, int]) -> tuple[Any, ...]:
        score, key = item
        meta = table.metadata(key) or {}
        values = [score if b == SCORE else meta.get(b) for b in by]
        sign = 1 if op == "$min_k" else -1
        # Missing values sort last either way; numbers flip for $max_k.
        ordered = [(v is None, sign * v if isinstance(v, int | float) else v) for v in values]
        return (*ordered, pos[key])
    kept = [item for members in groups.values() for item in sorted(members, key=sort_key)[:k]]
    return sorted(kept, key=lambda sk: (math.isnan(sk[0]), sk[0], pos[sk[1]]))


def window(p: Plan, rows: list[Any]) -> list[Any]:
    return rows[p.offset:] if p.count is None else rows[p.offset:p.offset + p.count]


def finish(p: Plan, table: Table) -> dict[str, Any]:
    """The ranked search's columns, once every Knn's ``found`` is settled."""
    assert p.rank is not None
    rank = p.rank
    candidates = sorted({k for knn in p.knns for k in knn.found})
    ranked = [(s, k) for k in candidates if (s := rank(k)) is not None]
    pos = table.places(k for _, k in ranked)
    ranked.sort(key=lambda sk: (math.isnan(sk[0]), sk[0], pos[sk[1]]))
    if p.group_by:
        ranked = _group(table, ranked, p.group_by, pos)
    chosen: list[tuple[float | None, int]] = list(window(p, ranked))
    return {**table.columns(chosen, p.select), "select": list(p.select)}


class StoreTable:
    """One store's records, by key."""

    def __init__(self, state: CollectionState) -> None:
        self.state = state
        self.store = state.store

    def places(self, keys: Iterable[int]) -> Mapping[int, int]:
        return self.store.insertion_ranks(keys)

    def metadata(self, key: int) -> Metadata | None:
        return self.store.records[self.store.by_key[key]].metadata

    def columns(self, chosen: list[tuple[float | None, int]], select: list[str]) -> dict[str, Any]:
        store = self.store
        ids = [store.by_key[key] for _, key in chosen]
        records = [store.records[i] for i in ids]
        fields = [k for k in select if not k.startswith("#")]
        out: dict[str, Any] = {"ids": ids, "documents": None, "embeddings": None,
                               "metadatas": None, "scores": None}
        if DOCUMENT in select:
            out["documents"] = [r.document for r in records]
        if EMBEDDING in select:
            out["embeddings"] = [row.tolist() for row in store.vectors(ids)] if ids else []
        if METADATA in select:
            out["metadatas"] = [r.metadata for r in records]
        elif fields:
            out["metadatas"] = [{f: r.metadata[f] for f in fields if f in r.metadata} or None
                                if r.metadata else None for r in records]
        if SCORE in select:
            out["scores"] = [score for score, _ in chosen]
        return out


def kept_records(state: CollectionState, p: Plan) -> tuple[list[str], np.ndarray | None]:
    """The filter's ids in insertion order, and their keys (None: every record)."""
    store = state.store
    if not p.filtered:
        return store.ordered(), None
    kept = [i for i in store.ordered() if p.keep(i, store.records[i])]
    return kept, np.fromiter((store.records[i].key for i in kept), np.int64, len(kept))


def run_search(state: CollectionState, search: dict[str, Any]) -> dict[str, Any]:
    """One search's columns: ids, documents, embeddings, metadatas, scores (each None when
    not selected) and the selected keys."""
    p = plan(search)
    kept, allowed = kept_records(state, p)
    table = StoreTable(state)
    if p.rank is None:  # the filter's records in insertion order: cut the window first
        keys = [state.store.records[i].key for i in window(p, kept)]
        return {**table.columns([(None, k) for k in keys], p.select), "select": list(p.select)}
    for knn in p.knns:
        knn.settle(run_knn(state.store, knn, allowed))
    return finish(p, table)


def run_searches(state: CollectionState, searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Chroma's column-major ``SearchResult`` for a batch of searches."""
    per = [run_search(state, s) for s in searches]
    return {name: [p[name] for p in per] for name in COLUMNS}


def _dense_knns(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [k for n in node for k in _dense_knns(n)]
    if not isinstance(node, dict):
        return []
    knn = node.get("$knn")
    if isinstance(knn, dict):
        return [knn] if knn.get("key", EMBEDDING) == EMBEDDING else []
    return [k for v in node.values() for k in _dense_knns(v)]


async def embed_text_queries(searches: list[dict[str, Any]],
                             embed: Callable[[list[str]], Awaitable[list[Any]]] | None) -> None:
    """Replace the text queries of dense Knns by their vectors, in place: a server running
    the collection's built-in embedding function embeds them, as it does ``query_texts``."""
    knns = [k for s in searches for k in _dense_knns(s.get("rank"))
            if isinstance(k.get("query"), str)]
    if not knns:
        return
    if embed is None:
        raise InvalidArgumentError(
            "You must provide an embedding function to compute embeddings.")
    vectors = await embed([k["query"] for k in knns])
    for knn, vector in zip(knns, vectors, strict=True):
        knn["query"] = [float(x) for x in vector]
