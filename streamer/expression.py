"""Chroma's Search API expressions, for code that imports them from streamer instead of
``chromadb.execution.expression`` (which is not a dependency): ``Search``, ``Key``/``K``,
``Knn``, ``Val``, ``Rrf`` and the rank arithmetic, ``Limit``, ``Select``, ``GroupBy`` with
``MinK``/``MaxK`` (the sparse vector, schema and BM25 function are in ``streamer.schema``).
Each builds exactly the dict that chromadb's ``to_dict()``
builds (a test holds them to it), which is what ``Collection.search`` sends; chromadb's own
objects work as well."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


# ---- filters ------------------------------------------------------------------------
class Where(ABC):
    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def __and__(self, other: Where) -> Where:
        return _Logic("$and", [*_flat(self, "$and"), *_flat(other, "$and")])

    def __or__(self, other: Where) -> Where:
        return _Logic("$or", [*_flat(self, "$or"), *_flat(other, "$or")])


def _flat(w: Where, op: str) -> list[Where]:
    return list(w.parts) if isinstance(w, _Logic) and w.op == op else [w]


@dataclass
class _Logic(Where):
    op: str
    parts: list[Where]

    def to_dict(self) -> dict[str, Any]:
        return {self.op: [p.to_dict() for p in self.parts]}


@dataclass
class _Compare(Where):
    key: str
    op: str
    value: Any

    def to_dict(self) -> dict[str, Any]:
        return {self.key: {self.op: self.value}}


class Key:
    """A field: metadata by name, or ``Key.ID``/``DOCUMENT``/``EMBEDDING``/``METADATA``/
    ``SCORE``. Comparisons build filters: ``(K("year") >= 2020) & K.DOCUMENT.contains("x")``."""

    ID: Key
    DOCUMENT: Key
    EMBEDDING: Key
    METADATA: Key
    SCORE: Key

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Key({self.name!r})"

    def _cmp(self, op: str, value: Any) -> _Compare:
        return _Compare(self.name, op, value)

    def __eq__(self, value: Any) -> _Compare:  # type: ignore[override]
        return self._cmp("$eq", value)

    def __ne__(self, value: Any) -> _Compare:  # type: ignore[override]
        return self._cmp("$ne", value)

    def __gt__(self, value: Any) -> _Compare:
        return self._cmp("$gt", value)

    def __ge__(self, value: Any) -> _Compare:
        return self._cmp("$gte", value)

    def __lt__(self, value: Any) -> _Compare:
        return self._cmp("$lt", value)

    def __le__(self, value: Any) -> _Compare:
        return self._cmp("$lte", value)

    def is_in(self, values: Sequence[Any]) -> _Compare:
        return self._cmp("$in", list(values))

    def not_in(self, values: Sequence[Any]) -> _Compare:
        return self._cmp("$nin", list(values))

    def contains(self, value: Any) -> _Compare:
        return self._cmp("$contains", value)

    def not_contains(self, value: Any) -> _Compare:
        return self._cmp("$not_contains", value)

    def regex(self, pattern: str) -> _Compare:
        return self._cmp("$regex", pattern)

    def not_regex(self, pattern: str) -> _Compare:
        return self._cmp("$not_regex", pattern)


Key.ID, Key.DOCUMENT, Key.EMBEDDING = Key("#id"), Key("#document"), Key("#embedding")
Key.METADATA, Key.SCORE = Key("#metadata"), Key("#score")
K = Key


def _name(key: Key | str) -> str:
    return key.name if isinstance(key, Key) else key


# ---- ranks --------------------------------------------------------------------------
def _rank(value: Rank | float | int) -> Rank:
    return value if isinstance(value, Rank) else Val(value)


class Rank(ABC):
    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    def _fold(self, op: str, other: Rank | float | int) -> Rank:
        right = _rank(other)
        parts = [*(self.ranks if isinstance(self, _Many) and self.op == op else [self]),
                 *(right.ranks if isinstance(right, _Many) and right.op == op else [right])]
        return _Many(op, parts)

    def __add__(self, other: Rank | float | int) -> Rank:
        return self._fold("$sum", other)

    def __radd__(self, other: float | int) -> Rank:
        return Val(other) + self

    def __sub__(self, other: Rank | float | int) -> Rank:
        return _Two("$sub", self, _rank(other))

    def __rsub__(self, other: float | int) -> Rank:
        return _Two("$sub", Val(other), self)

    def __mul__(self, other: Rank | float | int) -> Rank:
        return self._fold("$mul", other)

    def __rmul__(self, other: float | int) -> Rank:
        return Val(other) * self

    def __truediv__(self, other: Rank | float | int) -> Rank:
        return _Two("$div", self, _rank(other))

    def __rtruediv__(self, other: float | int) -> Rank:
        return _Two("$div", Val(other), self)

    def __neg__(self) -> Rank:
        return _Many("$mul", [Val(-1), self])

    def __abs__(self) -> Rank:
        return _One("$abs", self)

    def abs(self) -> Rank:
        return _One("$abs", self)

    def exp(self) -> Rank:
        return _One("$exp", self)

    def log(self) -> Rank:
        return _One("$log", self)

    def max(self, other: Rank | float | int) -> Rank:
        return self._fold("$max", other)

    def min(self, other: Rank | float | int) -> Rank:
        return self._fold("$min", other)


@dataclass
class Val(Rank):
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"$val": self.value}


@dataclass
class _Many(Rank):
    op: str
    ranks: list[Rank]

    def to_dict(self) -> dict[str, Any]:
        return {self.op: [r.to_dict() for r in self.ranks]}


@dataclass
class _Two(Rank):
    op: str
    left: Rank
    right: Rank

    def to_dict(self) -> dict[str, Any]:
        return {self.op: {"left": self.left.to_dict(), "right": self.right.to_dict()}}


@dataclass
class _One(Rank):
    op: str
    rank: Rank

    def to_dict(self) -> dict[str, Any]:
        return {self.op: self.rank.to_dict()}


@dataclass
class Knn(Rank):
    """The nearest ``limit`` records to ``query`` (text, a dense vector or a sparse one) on
    ``key`` (``#embedding``, or a schema's sparse index); ``default`` scores the others."""

    query: Any
    key: Key | str = "#embedding"
    limit: int = 16
    default: float | None = None
    return_rank: bool = False

    def to_dict(self) -> dict[str, Any]:
        query = self.query
        if isinstance(query, np.ndarray):
            query = query.tolist()
        elif hasattr(query, "to_dict"):
            query = query.to_dict()
        out: dict[str, Any] = {"query": query, "key": _name(self.key), "limit": self.limit}
        if self.default is not None:
            out["default"] = self.default
        if self.return_rank:
            out["return_rank"] = True
        return {"$knn": out}


@dataclass
class Rrf(Rank):
    """Reciprocal rank fusion, ``-Σ wᵢ / (k + rankᵢ)``, as Chroma writes it: arithmetic."""

    ranks: list[Rank]
    k: int = 60
    weights: list[float] | None = None
    normalize: bool = False

    def to_dict(self) -> dict[str, Any]:
        if not self.ranks:
            raise ValueError("RRF requires at least one rank")
        if self.k <= 0:
            raise ValueError(f"k must be positive, got {self.k}")
        weights = list(self.weights) if self.weights else [1.0] * len(self.ranks)
        if len(weights) != len(self.ranks):
            raise ValueError(f"Number of weights ({len(weights)}) must match number of ranks "
                             f"({len(self.ranks)})")
        if any(w < 0 for w in weights):
            raise ValueError("All weights must be non-negative")
        if self.normalize:
            total = sum(weights)
            if total == 0:
                raise ValueError("Sum of weights must be positive when normalize=True")
            weights = [w / total for w in weights]
        terms: Rank = weights[0] / (self.k + self.ranks[0])
        for w, r in zip(weights[1:], self.ranks[1:], strict=True):
            terms = terms + w / (self.k + r)
        return (-terms).to_dict()


# ---- the search ---------------------------------------------------------------------
@dataclass
class Limit:
    offset: int = 0
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset} | ({} if self.limit is None else {"limit": self.limit})


@dataclass
class Select:
    keys: Iterable[Key | str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {"keys": list(dict.fromkeys(_name(k) for k in self.keys))}


@dataclass
class MinK:
    keys: Key | str | list[Key | str]
    k: int
    _op = "$min_k"

    def to_dict(self) -> dict[str, Any]:
        keys = self.keys if isinstance(self.keys, list) else [self.keys]
        return {self._op: {"keys": [_name(k) for k in keys], "k": self.k}}


class MaxK(MinK):
    _op = "$max_k"


@dataclass
class GroupBy:
    keys: Key | str | list[Key | str] = field(default_factory=list)
    aggregate: MinK | None = None

    def to_dict(self) -> dict[str, Any]:
        keys = self.keys if isinstance(self.keys, list) else [self.keys]
        if not keys or self.aggregate is None:
            return {}
        return {"keys": [_name(k) for k in keys], "aggregate": self.aggregate.to_dict()}


def _dict(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


class Search:
    """``Search().where(...).rank(...).group_by(...).limit(n).select(...)``; each builder
    returns a new Search."""

    def __init__(self, where: Any = None, rank: Any = None, group_by: Any = None,
                 limit: Limit | None = None, select: Select | None = None) -> None:
        self.where_, self.rank_, self.group_by_ = where, rank, group_by
        self.limit_, self.select_ = limit or Limit(), select or Select()

    def _with(self, **changes: Any) -> Search:
        now = {"where": self.where_, "rank": self.rank_, "group_by": self.group_by_,
               "limit": self.limit_, "select": self.select_}
        return Search(**(now | changes))

    def where(self, where: Any) -> Search:
        return self._with(where=where)

    def rank(self, rank: Any) -> Search:
        return self._with(rank=rank)

    def group_by(self, group_by: Any) -> Search:
        return self._with(group_by=group_by)

    def limit(self, limit: int, offset: int = 0) -> Search:
        return self._with(limit=Limit(offset=offset, limit=limit))

    def select(self, *keys: Key | str) -> Search:
        return self._with(select=Select(keys=set(keys)))

    def select_all(self) -> Search:
        return self._with(select=Select(keys={Key.DOCUMENT, Key.EMBEDDING, Key.METADATA,
                                              Key.SCORE}))

    def to_dict(self) -> dict[str, Any]:
        group = _dict(self.group_by_) if self.group_by_ is not None else {}
        return {"filter": _dict(self.where_), "rank": _dict(self.rank_), "group_by": group,
                "limit": self.limit_.to_dict(), "select": self.select_.to_dict()}
