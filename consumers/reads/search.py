"""Chroma's Search API over one collection: filter, rank, group, limit and select.

It reads the dict form that chromadb's ``Search.to_dict()`` gives (and its HTTP API carries),
so the embedded engine, the Kafka reader and the gateway run this one rule. Chroma's
semantics (docs.trychroma.com, "Ranking and Scoring"): lower scores are better; each ``Knn``
scores its nearest ``limit`` records among those the filter keeps (a dense one by the
collection's distance, a sparse one by ``1 - q·d`` with the collection's IDF); a record is
ranked if some Knn found it, and kept only if every Knn without a ``default`` found it;
``return_rank`` turns a Knn's score into its 0-based rank, which is what ``Rrf`` (already
arithmetic in the dict form) sums. Ties go to the record inserted first (``get``'s order)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consumers.embedding.bm25 import as_sparse
from consumers.storage.catalog import CollectionState
from consumers.storage.store import CollectionStore
from consumers.validation.where import compile_where, compile_where_document
from schemas.errors import InvalidArgumentError
from schemas.records import Record

EMBEDDING, DOCUMENT, METADATA, SCORE, ID = "#embedding", "#document", "#metadata", "#score", "#id"
Predicate = Callable[[str, Record], bool]


# ---- filter -------------------------------------------------------------------------
def compile_filter(where: Any) -> Predicate:
    """A Search ``where``: metadata clauses as ``collection.get``'s, plus ``#id`` and
    ``#document`` clauses, under ``$and``/``$or``."""
    if where is None:
        return lambda _i, _r: True
    if not isinstance(where, dict) or len(where) != 1:
        raise InvalidArgumentError(f"Expected where to have exactly one operator, got {where}")
    (key, cond), = where.items()
    if key in ("$and", "$or"):
        if not isinstance(cond, list) or not cond:
            raise InvalidArgumentError(f"Expected {key} to be a non-empty list, got {cond}")
        parts = [compile_filter(c) for c in cond]
        if key == "$and":
            return lambda i, r: all(p(i, r) for p in parts)
        return lambda i, r: any(p(i, r) for p in parts)
    if key == ID:
        return _id_predicate(cond)
    if key == DOCUMENT:
        matches = compile_where_document(cond)
        return lambda _i, r: matches(r.document)
    meta = compile_where({key: cond})
    return lambda _i, r: meta(r.metadata)


def _id_predicate(cond: Any) -> Predicate:
    if isinstance(cond, str):
        cond = {"$eq": cond}
    if isinstance(cond, dict) and len(cond) == 1:
        (op, value), = cond.items()
        if op in ("$in", "$nin") and isinstance(value, list):
            ids = set(value)
            return (lambda i, _r: i in ids) if op == "$in" else (lambda i, _r: i not in ids)
        if op in ("$eq", "$ne") and isinstance(value, str):
            return (lambda i, _r: i == value) if op == "$eq" else (lambda i, _r: i != value)
    raise InvalidArgumentError(f"Invalid #id filter {cond}: use $eq, $ne, $in or $nin on ids")


# ---- rank ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Knn:
    query: Any
    key: str
    limit: int
    default: float | None
    return_rank: bool
    found: dict[int, float] = field(default_factory=dict)


Rank = Callable[[int], float | None]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{what} requires a number, got {type(value).__name__}")
    return float(value)


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)


def _log(a: float) -> float:
    return math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)


def _exp(a: float) -> float:
    try:
        return math.exp(a)
    except OverflowError:
        return math.inf


_FOLDS: dict[str, Callable[[list[float]], float]] = {
    "$sum": math.fsum, "$mul": math.prod, "$max": max, "$min": min}
_UNARY: dict[str, Callable[[float], float]] = {"$abs": abs, "$exp": _exp, "$log": _log}


def compile_rank(node: Any, knns: list[_Knn]) -> Rank:
    """A rank dict as a function of a record key (None: the record is not ranked); the Knn
    leaves it meets are appended to ``knns`` for the caller to run."""
    if not isinstance(node, dict) or len(node) != 1:
        raise InvalidArgumentError(f"Rank dict must contain exactly one operator, got {node}")
    (op, arg), = node.items()
    if op == "$val":
        value = _number(arg, "$val")
        return lambda _k: value
    if op == "$knn":
        return _compile_knn(arg, knns)
    if op in ("$sum", "$mul", "$max", "$min"):
        if not isinstance(arg, list) or len(arg) < 2:
            raise InvalidArgumentError(f"{op} requires a list of at least 2 ranks, got {arg}")
        parts = [compile_rank(a, knns) for a in arg]
        fold = _FOLDS[op]

        def many(k: int) -> float | None:
            values = [p(k) for p in parts]
            return None if any(v is None for v in values) else fold(values)  # type: ignore[arg-type]
        return many
    if op in ("$sub", "$div"):
        if not isinstance(arg, dict) or set(arg) != {"left", "right"}:
            raise InvalidArgumentError(f"{op} requires 'left' and 'right' fields, got {arg}")
        left, right = compile_rank(arg["left"], knns), compile_rank(arg["right"], knns)
        combine: Callable[[float, float], float] = (lambda a, b: a - b) if op == "$sub" else _div

        def two(k: int) -> float | None:
            a, b = left(k), right(k)
            return None if a is None or b is None else combine(a, b)
        return two
    if op in ("$abs", "$exp", "$log"):
        inner = compile_rank(arg, knns)
        fn = _UNARY[op]

        def one(k: int) -> float | None:
            a = inner(k)
            return None if a is None else fn(a)
        return one
    raise InvalidArgumentError(f"Unknown rank operator: {op}")


def _compile_knn(arg: Any, knns: list[_Knn]) -> Rank:
    if not isinstance(arg, dict) or "query" not in arg:
        raise InvalidArgumentError("$knn requires 'query' field")
    limit = arg.get("limit", 16)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidArgumentError(f"$knn limit must be a positive integer, got {limit}")
    default = arg.get("default")
    knn = _Knn(arg["query"], str(arg.get("key", EMBEDDING)), limit,
               None if default is None else _number(default, "$knn default"),
               bool(arg.get("return_rank", False)))
    knns.append(knn)
    return lambda k: knn.found.get(k, knn.default)


def _run_knn(store: CollectionStore, knn: _Knn, allowed: np.ndarray | None) -> None:
    """Fill ``knn.found``: key -> score (or rank) of its nearest ``limit`` allowed records."""
    if knn.key == EMBEDDING:
        keys, scores = _dense(store, knn, allowed)
    else:
        keys, scores = _sparse(store, knn, allowed)
    if len(scores) > knn.limit:  # the nearest `limit`, and every record tied with the last
        cut = np.partition(scores, knn.limit - 1)[knn.limit - 1]
        near = np.flatnonzero(scores <= cut)
        keys, scores = keys[near], scores[near]
    # By score, ties to the record inserted first.
    places = store.insertion_ranks(int(k) for k in keys)
    order = np.lexsort((np.fromiter((places[int(k)] for k in keys), np.int64, len(keys)),
                        scores))[:knn.limit]
    knn.found = {int(keys[i]): (float(r) if knn.return_rank else float(scores[i]))
                 for r, i in enumerate(order)}


def _dense(store: CollectionStore, knn: _Knn,
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


def _sparse(store: CollectionStore, knn: _Knn,
            allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    declared = store.spec.sparse
    if declared is None or store.sparse is None or knn.key != declared["key"]:
        raise InvalidArgumentError(
            f"Knn key {knn.key!r} has no sparse vector index: declare one in the collection's "
            f"schema (SparseVectorIndexConfig) or search {EMBEDDING}")
    if not isinstance(knn.query, dict) and not hasattr(knn.query, "indices"):
        raise InvalidArgumentError(
            f"Knn on {knn.key!r} needs a sparse vector, got {type(knn.query).__name__}")
    weights = store.sparse.query_weights(as_sparse(knn.query), store.count(),
                                         bool(declared.get("bm25", True)))
    keys, scores = store.sparse.scores(weights, store.next_key)
    if allowed is not None:
        keep = np.isin(keys, allowed)
        keys, scores = keys[keep], scores[keep]
    return keys, scores


# ---- group, limit, select -----------------------------------------------------------
def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _group(store: CollectionStore, ranked: list[tuple[float, int]],
           group_by: dict[str, Any], pos: Mapping[int, int]) -> list[tuple[float, int]]:
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
        meta = store.records[store.by_key[key]].metadata or {}
        groups.setdefault(tuple(_hashable(meta.get(g)) for g in keys), []).append((score, key))

    def sort_key(item: tuple[float, int]) -> tuple[Any, ...]:
        score, key = item
        meta = store.records[store.by_key[key]].metadata or {}
        values = [score if b == SCORE else meta.get(b) for b in by]
        sign = 1 if op == "$min_k" else -1
        # Missing values sort last either way; numbers flip for $max_k.
        ordered = [(v is None, sign * v if isinstance(v, int | float) else v) for v in values]
        return (*ordered, pos[key])
    kept = [item for members in groups.values() for item in sorted(members, key=sort_key)[:k]]
    return sorted(kept, key=lambda sk: (math.isnan(sk[0]), sk[0], pos[sk[1]]))


def _columns(state: CollectionState, chosen: list[tuple[float | None, int]],
             select: list[str]) -> dict[str, Any]:
    store = state.store
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


def run_search(state: CollectionState, search: dict[str, Any]) -> dict[str, Any]:
    """One search's columns: ids, documents, embeddings, metadatas, scores (each None when
    not selected) and the selected keys."""
    store = state.store
    keep = compile_filter(search.get("filter"))
    knns: list[_Knn] = []
    rank_node = search.get("rank")
    rank = None if rank_node is None else compile_rank(rank_node, knns)
    if rank is not None and not knns:
        raise InvalidArgumentError("A rank expression must contain at least one Knn")
    select = (search.get("select") or {}).get("keys") or []
    if not isinstance(select, list) or not all(isinstance(k, str) for k in select):
        raise InvalidArgumentError(f"Select keys must be a list of strings, got {select}")
    limit = search.get("limit") or {}
    offset, count = limit.get("offset") or 0, limit.get("limit")
    if not isinstance(offset, int) or offset < 0 or \
            (count is not None and (not isinstance(count, int) or count < 0)):
        raise InvalidArgumentError(f"Invalid limit {limit}")

    filtered = search.get("filter") is not None
    kept = [i for i in store.ordered() if keep(i, store.records[i])] if filtered \
        else store.ordered()
    chosen: list[tuple[float | None, int]]
    if rank is None:  # the filter's records in insertion order: cut the window first
        window = kept[offset:] if count is None else kept[offset:offset + count]
        return {**_columns(state, [(None, store.records[i].key) for i in window], select),
                "select": list(select)}
    allowed = np.fromiter((store.records[i].key for i in kept), np.int64, len(kept)) \
        if filtered else None
    for knn in knns:
        _run_knn(store, knn, allowed)
    candidates = sorted({k for knn in knns for k in knn.found})
    ranked = [(s, k) for k in candidates if (s := rank(k)) is not None]
    pos = store.insertion_ranks(k for _, k in ranked)
    ranked.sort(key=lambda sk: (math.isnan(sk[0]), sk[0], pos[sk[1]]))
    group_by = search.get("group_by")
    if group_by:
        ranked = _group(store, ranked, group_by, pos)
    chosen = list(ranked)
    chosen = chosen[offset:] if count is None else chosen[offset:offset + count]
    return {**_columns(state, chosen, select), "select": list(select)}


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


def run_searches(state: CollectionState, searches: list[dict[str, Any]]) -> dict[str, Any]:
    """Chroma's column-major ``SearchResult`` for a batch of searches."""
    per = [run_search(state, s) for s in searches]
    return {name: [p[name] for p in per]
            for name in ("ids", "documents", "embeddings", "metadatas", "scores", "select")}
