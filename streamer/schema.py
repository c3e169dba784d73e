"""The part of Chroma's ``Schema`` streamer builds (one BM25 sparse vector index on a key),
``SparseVectorIndexConfig``, ``SparseVector`` and ``ChromaBm25EmbeddingFunction``, with
chromadb's names and arguments, so Chroma code can import them from streamer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.embedding.bm25 import Bm25
from streamer.expression import Key


def _name(key: Key | str) -> str:
    return key.name if isinstance(key, Key) else key


@dataclass
class SparseVector:
    indices: list[int]
    values: list[float]
    labels: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"#type": "sparse_vector", "indices": list(self.indices),
                               "values": list(self.values)}
        if self.labels is not None:
            out["tokens"] = list(self.labels)
        return out


class ChromaBm25EmbeddingFunction:
    """Chroma's model-free BM25 sparse function, with its parameters and defaults."""

    def __init__(self, k: float = 1.2, b: float = 0.75, avg_doc_length: float = 256.0,
                 token_max_length: int = 40, stopwords: Iterable[str] | None = None,
                 include_tokens: bool = False) -> None:
        self._bm25 = Bm25(k=k, b=b, avg_doc_length=avg_doc_length,
                          token_max_length=token_max_length,
                          stopwords=None if stopwords is None else tuple(stopwords),
                          include_tokens=include_tokens)

    @staticmethod
    def name() -> str:
        return "chroma_bm25"

    def get_config(self) -> dict[str, Any]:
        return self._bm25.config()

    def __call__(self, input: Sequence[str]) -> list[SparseVector]:
        return [SparseVector(v.indices.tolist(), v.values.tolist(), v.labels)
                for v in self._bm25(input)]

    embed_query = __call__


@dataclass
class SparseVectorIndexConfig:
    embedding_function: Any = None
    source_key: Key | str | None = None
    bm25: bool | None = None


class Schema:
    """The part of Chroma's ``Schema`` streamer builds: one sparse vector index on a key."""

    def __init__(self) -> None:
        self._sparse: dict[str, SparseVectorIndexConfig] = {}

    def create_index(self, config: SparseVectorIndexConfig | None = None,
                     key: str | None = None) -> Schema:
        if not isinstance(config, SparseVectorIndexConfig) or key is None:
            raise ValueError("streamer's Schema builds a sparse vector index: "
                             "create_index(config=SparseVectorIndexConfig(...), key=...)")
        self._sparse[key] = config
        return self

    def serialize_to_json(self) -> dict[str, Any]:
        keys: dict[str, Any] = {}
        for key, cfg in self._sparse.items():
            ef = cfg.embedding_function
            keys[key] = {"sparse_vector": {"sparse_vector_index": {"enabled": True, "config": {
                "embedding_function": {"type": "known", "name": ef.name(),
                                       "config": ef.get_config()} if ef is not None
                else {"type": "unknown"},
                "source_key": None if cfg.source_key is None else _name(cfg.source_key),
                "bm25": bool(cfg.bm25)}}}}
        return {"keys": keys}
