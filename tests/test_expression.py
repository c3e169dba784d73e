"""streamer's Search API expressions build the dicts chromadb's build (the oracle: the same
``to_dict()`` for the same expression), so Chroma code can import them from streamer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chromadb.execution.expression as chroma
import numpy as np
import pytest
from chromadb import Schema as ChromaSchema
from chromadb import SparseVectorIndexConfig as ChromaSparseConfig
from chromadb.base_types import SparseVector as ChromaSparse
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction as ChromaBm25

import streamer
from streamer.client.search import sparse_of_schema
from streamer.embedding_functions import ChromaBm25EmbeddingFunction


def _normal(d: dict[str, Any]) -> dict[str, Any]:
    """Select keys come from a set: their order is the set's."""
    return {**d, "select": {"keys": sorted(d["select"]["keys"])}}


Build = Callable[[Any, Any], Any]  # (module of types, SparseVector class) -> a Search
CASES: dict[str, Build] = {
    "empty": lambda m, sv: m.Search(),
    "filters": lambda m, sv: m.Search().where(
        ((m.K("a") == 1) & (m.K("b") != "x") & (m.K("c") > 2)) | (m.K("d") >= 3)
        | (m.K("e") < 4) | (m.K("f") <= 5)).where(
        m.K.ID.is_in(["1", "2"]) & m.K("g").not_in([1]) & m.K.DOCUMENT.contains("kite")
        & m.K.DOCUMENT.not_contains("x") & m.K.DOCUMENT.regex("^a") & m.K.DOCUMENT.not_regex("b")),
    "arithmetic": lambda m, sv: m.Search().rank(
        (abs(m.Knn(query=[0.1, 0.2]) * 0.5 + 1 - m.Val(2) / 3) + 2 * m.Knn(query=[1.0, 2.0]))
        .exp().log().max(1).min(m.Val(3)).max(m.Knn(query=np.ones(2), limit=4, default=9.0))
        + (-m.Knn(query=[0.0, 1.0], return_rank=True)) + 5 / m.Val(2) - (1 - m.Val(1))),
    "rrf": lambda m, sv: m.Search().rank(m.Rrf(
        [m.Knn(query=[0.1], return_rank=True, limit=50),
         m.Knn(query=sv(indices=[1, 7], values=[0.5, 1.5]), key="sparse", return_rank=True)],
        k=30, weights=[3.0, 1.0], normalize=True)).limit(5, offset=2),
    "group-select": lambda m, sv: m.Search().rank(m.Knn(query="red kite", key="sparse"))
        .group_by(m.GroupBy(keys=[m.K("cat"), m.K("year")],
                            aggregate=m.MaxK(keys=[m.K("p"), m.K.SCORE], k=2)))
        .select(m.K.DOCUMENT, m.K.SCORE, "title"),
    "min-k-select-all": lambda m, sv: m.Search().group_by(
        m.GroupBy(keys=m.K("cat"), aggregate=m.MinK(keys=m.K.SCORE, k=1))).select_all(),
    "constructor": lambda m, sv: m.Search(where=m.K("a") == 1, rank=m.Knn(query=[1.0]),
                                          limit=m.Limit(offset=1, limit=3),
                                          select=m.Select(keys={m.K.ID, "x"})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_dicts_as_chromadb(case: str) -> None:
    ours = CASES[case](streamer, streamer.SparseVector).to_dict()
    theirs = CASES[case](chroma, ChromaSparse).to_dict()
    assert _normal(ours) == _normal(theirs)


def test_rrf_refuses_what_chromadb_refuses() -> None:
    for m in (streamer, chroma):
        with pytest.raises(ValueError, match="must match number of ranks"):
            m.Rrf([m.Knn(query=[1.0])], weights=[1.0, 2.0]).to_dict()
        with pytest.raises(ValueError, match="non-negative"):
            m.Rrf([m.Knn(query=[1.0])], weights=[-1.0]).to_dict()


def test_the_schema_and_bm25_describe_the_same_sparse_index() -> None:
    ours = streamer.Schema().create_index(config=streamer.SparseVectorIndexConfig(
        source_key=streamer.K.DOCUMENT, embedding_function=ChromaBm25EmbeddingFunction(k=1.1),
        bm25=True), key="sparse")
    theirs = ChromaSchema().create_index(config=ChromaSparseConfig(
        source_key=chroma.K.DOCUMENT,  # type: ignore[arg-type]
        embedding_function=ChromaBm25(k=1.1), bm25=True), key="sparse")
    assert sparse_of_schema(ours) == sparse_of_schema(theirs)
    texts = ["The red kites fly", "XK-42 spare part"]
    for a, b in zip(ChromaBm25EmbeddingFunction()(texts), ChromaBm25()(texts), strict=True):
        assert a.indices == b.indices
        assert a.values == pytest.approx(b.values, rel=1e-7)
