"""A search over a sharded collection, with the rules of ``consumers.reads.search``.

Each shard holds some of the records, so a search takes two rounds. ``shard_stats``: for every
sparse Knn, the shard's record count and the document frequency of each query term; summed
over the shards (``sum_stats``), they are the whole collection's, which BM25's IDF needs.
``shard_candidates``: under those statistics, each shard's nearest ``limit`` records per Knn
(their scores are then the whole collection's scores) with what the caller needs of them.
``fuse`` merges every Knn's candidates into the collection's nearest ``limit`` and ranks,
groups, cuts and selects over them exactly as one store would (``finish``). A search without
a rank merges the shards' first ``offset + limit`` records in insertion order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from consumers.reads.search import (
    COLUMNS,
    Stats,
    finish,
    kept_records,
    run_knn,
    sparse_stats,
    window,
)
from consumers.reads.search_plan import DOCUMENT, EMBEDDING, METADATA, SCORE, plan
from consumers.storage.catalog import CollectionState
from schemas.records import Metadata

#: per search, per Knn: None (dense) or ``[count, [[term, document frequency], ...]]``
WireStats = list[list[Any] | None]


# ---- on each shard -------------------------------------------------------------------
def shard_stats(state: CollectionState, searches: list[dict[str, Any]]) -> list[WireStats]:
    out = []
    for search in searches:
        p = plan(search)
        row: WireStats = []
        for knn in p.knns:
            if knn.key == EMBEDDING:
                row.append(None)
            else:
                n, df = sparse_stats(state.store, knn)
                row.append([n, [[t, c] for t, c in df.items()]])
        out.append(row)
    return out


def sum_stats(replies: list[list[WireStats]]) -> list[WireStats]:
    """Every shard's statistics added up, search by search and Knn by Knn."""
    total: list[WireStats] = []
    for per_search in zip(*replies, strict=True):
        row: WireStats = []
        for per_knn in zip(*per_search, strict=True):
            if per_knn[0] is None:
                row.append(None)
                continue
            df: dict[int, int] = {}
            for _, pairs in per_knn:
                for t, c in pairs:
                    df[int(t)] = df.get(int(t), 0) + int(c)
            row.append([sum(int(n) for n, _ in per_knn), [[t, c] for t, c in df.items()]])
        total.append(row)
    return total


def _stats(wire: list[Any] | None) -> Stats | None:
    return None if wire is None else (int(wire[0]), {int(t): int(c) for t, c in wire[1]})


def _row(state: CollectionState, id_: str, select: list[str]) -> dict[str, Any]:
    store = state.store
    rec = store.records[id_]
    stamp, key = store.insertion_rank(rec)
    row: dict[str, Any] = {"id": id_, "order": [list(stamp), key], "metadata": rec.metadata}
    if DOCUMENT in select:
        row["document"] = rec.document
    if EMBEDDING in select:
        row["embedding"] = store.vectors([id_])[0].tolist()
    return row


def shard_candidates(state: CollectionState, searches: list[dict[str, Any]],
                     stats: list[WireStats] | None) -> list[dict[str, Any]]:
    """Per search: each Knn's nearest ``limit`` as ``[id, score]`` (best first) and the rows
    of every id named, or (no rank) the first ``offset + limit`` rows in insertion order."""
    store = state.store
    out: list[dict[str, Any]] = []
    for i, search in enumerate(searches):
        p = plan(search)
        kept, allowed = kept_records(state, p)
        if p.rank is None:
            head = kept if p.count is None else kept[:p.offset + p.count]
            out.append({"rows": [_row(state, id_, p.select) for id_ in head]})
            continue
        knns: list[list[list[Any]]] = []
        named: dict[str, None] = {}
        for j, knn in enumerate(p.knns):
            given = None if stats is None else _stats(stats[i][j])
            hits = [(store.by_key[k], s) for k, s in run_knn(store, knn, allowed, given)]
            named.update(dict.fromkeys(id_ for id_, _ in hits))
            knns.append([[id_, s] for id_, s in hits])
        out.append({"knns": knns, "rows": [_row(state, id_, p.select) for id_ in named]})
    return out


# ---- at the caller -------------------------------------------------------------------
class GatheredTable:
    """Every shard's rows for one search, keyed by their place in ``rows``."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.rows: list[dict[str, Any]] = []
        self.key_of: dict[str, int] = {}
        for shard, reply in enumerate(replies):
            for row in reply["rows"]:
                if row["id"] not in self.key_of:  # a record lives on one shard only
                    self.key_of[row["id"]] = len(self.rows)
                    stamp, key = row["order"]
                    self.rows.append({**row, "rank": (tuple(stamp), shard, key)})

    def places(self, keys: Iterable[int]) -> Mapping[int, int]:
        ranked = sorted(keys, key=lambda k: self.rows[k]["rank"])
        return {k: place for place, k in enumerate(ranked)}

    def metadata(self, key: int) -> Metadata | None:
        meta: Metadata | None = self.rows[key]["metadata"]
        return meta

    def columns(self, chosen: list[tuple[float | None, int]], select: list[str]) -> dict[str, Any]:
        rows = [self.rows[k] for _, k in chosen]
        fields = [k for k in select if not k.startswith("#")]
        out: dict[str, Any] = {"ids": [r["id"] for r in rows], "documents": None,
                               "embeddings": None, "metadatas": None, "scores": None}
        if DOCUMENT in select:
            out["documents"] = [r.get("document") for r in rows]
        if EMBEDDING in select:
            out["embeddings"] = [r.get("embedding") for r in rows]
        if METADATA in select:
            out["metadatas"] = [r["metadata"] for r in rows]
        elif fields:
            out["metadatas"] = [{f: r["metadata"][f] for f in fields if f in r["metadata"]}
                                or None if r["metadata"] else None for r in rows]
        if SCORE in select:
            out["scores"] = [score for score, _ in chosen]
        return out


def fuse(search: dict[str, Any], replies: list[dict[str, Any]]) -> dict[str, Any]:
    """One search's result from every shard's candidates (``shard_candidates``)."""
    p = plan(search)
    table = GatheredTable(replies)
    if p.rank is None:
        ordered = sorted(range(len(table.rows)), key=lambda k: table.rows[k]["rank"])
        chosen: list[tuple[float | None, int]] = [(None, k) for k in window(p, ordered)]
        return {**table.columns(chosen, p.select), "select": list(p.select)}
    for j, knn in enumerate(p.knns):
        hits = [(table.key_of[id_], float(s)) for reply in replies for id_, s in reply["knns"][j]]
        hits.sort(key=lambda ks: (ks[1], table.rows[ks[0]]["rank"]))
        knn.settle(hits)
    return finish(p, table)


def fuse_searches(searches: list[dict[str, Any]],
                  replies: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Chroma's column-major ``SearchResult`` from every shard's ``shard_candidates``."""
    per = [fuse(s, [reply[i] for reply in replies]) for i, s in enumerate(searches)]
    return {name: [p[name] for p in per] for name in COLUMNS}
