"""A Chroma search's dict form (chromadb's ``Search.to_dict()``, what its HTTP API carries),
parsed and checked once: the filter as a predicate, the rank as a function of a record's key
over the Knns it names, the group, the window and the selected keys. ``consumers.reads.search``
runs a plan on one store; ``consumers.reads.search_gather`` fuses the candidates of several
shards with the same plan."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
class Knn:
    query: Any
    key: str
    limit: int
    default: float | None
    return_rank: bool
    #: key -> what the rank reads: the score, or the 0-based rank with ``return_rank``
    found: dict[int, float] = field(default_factory=dict)

    def settle(self, hits: list[tuple[int, float]]) -> None:
        """``found`` from the nearest ``limit`` hits, best first (ties already ordered)."""
        self.found = {k: (float(r) if self.return_rank else s)
                      for r, (k, s) in enumerate(hits[:self.limit])}


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


def compile_rank(node: Any, knns: list[Knn]) -> Rank:
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


def _compile_knn(arg: Any, knns: list[Knn]) -> Rank:
    if not isinstance(arg, dict) or "query" not in arg:
        raise InvalidArgumentError("$knn requires 'query' field")
    limit = arg.get("limit", 16)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidArgumentError(f"$knn limit must be a positive integer, got {limit}")
    default = arg.get("default")
    knn = Knn(arg["query"], str(arg.get("key", EMBEDDING)), limit,
               None if default is None else _number(default, "$knn default"),
               bool(arg.get("return_rank", False)))
    knns.append(knn)
    return lambda k: knn.found.get(k, knn.default)


@dataclass(slots=True)
class Plan:
    """One search, checked: what to keep, the Knns and the rank over them (None: the filter's
    records in insertion order), the group, the window and the selected keys."""

    keep: Predicate
    knns: list[Knn]
    rank: Rank | None
    group_by: dict[str, Any] | None
    offset: int
    count: int | None
    select: list[str]
    filtered: bool


def plan(search: dict[str, Any]) -> Plan:
    keep = compile_filter(search.get("filter"))
    knns: list[Knn] = []
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
    return Plan(keep, knns, rank, search.get("group_by") or None, offset, count, list(select),
                search.get("filter") is not None)
