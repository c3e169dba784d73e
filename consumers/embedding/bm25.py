"""Chroma's BM25 sparse embedding function (``chroma_bm25``), which needs no model.

Tokens and weights match ``chromadb``'s ``ChromaBm25EmbeddingFunction`` exactly (a test holds
them to it): punctuation becomes space, lower-case words split on whitespace, NLTK's English
stopwords and words over ``token_max_length`` are dropped, the rest Snowball-stemmed
(English), each term hashed with unsigned MurmurHash3 (seed 0) and weighted by BM25's
saturated term frequency ``tf·(k+1) / (tf + k·(1 - b + b·len/avg_doc_length))``. The inverse
document frequency is not here: the sparse index applies the collection's own at query time,
as Chroma's does."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import mmh3
import numpy as np
import snowballstemmer

from schemas.errors import InvalidArgumentError
from schemas.records import SparseVector

NAME = "chroma_bm25"

#: NLTK's English stopword list, Chroma's default.
ENGLISH_STOPWORDS = frozenset((
    "a", "about", "above", "after", "again", "against", "ain", "all", "am", "an", "and", "any",
    "are", "aren", "aren't", "as", "at", "be", "because", "been", "before", "being", "below",
    "between", "both", "but", "by", "can", "couldn", "couldn't", "d", "did", "didn", "didn't",
    "do", "does", "doesn", "doesn't", "doing", "don", "don't", "down", "during", "each", "few",
    "for", "from", "further", "had", "hadn", "hadn't", "has", "hasn", "hasn't", "have", "haven",
    "haven't", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how",
    "i", "if", "in", "into", "is", "isn", "isn't", "it", "it's", "its", "itself", "just", "ll",
    "m", "ma", "me", "mightn", "mightn't", "more", "most", "mustn", "mustn't", "my", "myself",
    "needn", "needn't", "no", "nor", "not", "now", "o", "of", "off", "on", "once", "only", "or",
    "other", "our", "ours", "ourselves", "out", "over", "own", "re", "s", "same", "shan",
    "shan't", "she", "she's", "should", "should've", "shouldn", "shouldn't", "so", "some",
    "such", "t", "than", "that", "that'll", "the", "their", "theirs", "them", "themselves",
    "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until",
    "up", "ve", "very", "was", "wasn", "wasn't", "we", "were", "weren", "weren't", "what",
    "when", "where", "which", "while", "who", "whom", "why", "will", "with", "won", "won't",
    "wouldn", "wouldn't", "y", "you", "you'd", "you'll", "you're", "you've", "your", "yours",
    "yourself", "yourselves",
))

_PUNCTUATION = re.compile(r"[^\w\s]+", flags=re.UNICODE)


@cache
def _stemmer() -> Any:
    # snowballstemmer hands out PyStemmer's C stemmer when it is installed (it is a dependency).
    return snowballstemmer.stemmer("english")


@dataclass(frozen=True)
class Bm25:
    """``ChromaBm25EmbeddingFunction`` with the same parameters and defaults."""

    k: float = 1.2
    b: float = 0.75
    avg_doc_length: float = 256.0
    token_max_length: int = 40
    stopwords: tuple[str, ...] | None = None
    include_tokens: bool = False
    _stops: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = ENGLISH_STOPWORDS if self.stopwords is None else self.stopwords
        object.__setattr__(self, "_stops", frozenset(w.lower() for w in words))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Bm25:
        stop = config.get("stopwords")
        return cls(k=float(config.get("k", 1.2)), b=float(config.get("b", 0.75)),
                   avg_doc_length=float(config.get("avg_doc_length", 256.0)),
                   token_max_length=int(config.get("token_max_length", 40)),
                   stopwords=None if stop is None else tuple(str(w) for w in stop),
                   include_tokens=bool(config.get("include_tokens", False)))

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "b": self.b, "avg_doc_length": self.avg_doc_length,
                               "token_max_length": self.token_max_length,
                               "include_tokens": self.include_tokens}
        if self.stopwords is not None:
            out["stopwords"] = list(self.stopwords)
        return out

    def tokens(self, text: str) -> list[str]:
        stem = _stemmer().stemWord
        out = []
        for word in _PUNCTUATION.sub(" ", text).lower().split():
            if word in self._stops or len(word) > self.token_max_length:
                continue
            stemmed = stem(word).strip()
            if stemmed:
                out.append(stemmed)
        return out

    def encode(self, text: str) -> SparseVector:
        tokens = self.tokens(text)
        if not tokens:
            return SparseVector(np.zeros(0, np.uint32), np.zeros(0, np.float32))
        counts = Counter(tokens)
        by_hash: dict[int, tuple[int, str]] = {}
        for token, tf in counts.items():
            h = abs(mmh3.hash(token, seed=0))
            seen = by_hash.get(h)  # two tokens on one hash count together, as in Chroma
            by_hash[h] = (tf + (seen[0] if seen else 0), seen[1] if seen else token)
        norm = self.k * (1 - self.b + self.b * len(tokens) / self.avg_doc_length)
        hashes = sorted(by_hash)
        tf_arr = np.fromiter((by_hash[h][0] for h in hashes), np.float64, len(hashes))
        values = (tf_arr * (self.k + 1) / (tf_arr + norm)).astype(np.float32)
        labels = [by_hash[h][1] for h in hashes] if self.include_tokens else None
        return SparseVector(np.asarray(hashes, np.uint32), values, labels)

    def __call__(self, texts: Iterable[str]) -> list[SparseVector]:
        return [self.encode(t) for t in texts]


def sparse_function(desc: dict[str, Any] | None) -> Bm25 | None:
    """The built-in sparse function a ``{"name", "config"}`` description names, or None."""
    if desc is None or desc.get("name") != NAME:
        return None
    return Bm25.from_config(desc.get("config") or {})


def describe_sparse(function: Any) -> dict[str, Any]:
    """``{"name", "config"}`` for chromadb's ``ChromaBm25EmbeddingFunction`` or ours; any other
    sparse function cannot run server-side, so it is refused by name."""
    if isinstance(function, Bm25):
        return {"name": NAME, "config": function.config()}
    name = getattr(function, "name", None)
    if callable(name) and name() == NAME and callable(getattr(function, "get_config", None)):
        return {"name": NAME, "config": dict(function.get_config())}
    raise InvalidArgumentError(
        f"Sparse embedding function {type(function).__name__} is not supported: streamer "
        f"builds sparse indexes with {NAME} (ChromaBm25EmbeddingFunction)")


def as_sparse(value: Any) -> SparseVector:
    """A SparseVector from chromadb's ``SparseVector``, its transport dict or ours."""
    if isinstance(value, SparseVector):
        return value
    if isinstance(value, dict):
        indices: Sequence[int] = value.get("indices", [])
        values: Sequence[float] = value.get("values", [])
        labels = value.get("tokens")
    else:
        indices, values = value.indices, value.values
        labels = getattr(value, "labels", None)
    return SparseVector(np.asarray(indices, np.uint32), np.asarray(values, np.float32),
                        None if labels is None else list(labels))
