"""Our ``chroma_bm25`` against chromadb's ``ChromaBm25EmbeddingFunction``, the oracle: the same
term ids, weights and tokens for the texts users send, at the defaults and at other settings."""

from __future__ import annotations

import random

import numpy as np
import pytest
from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction
from chromadb.utils.embedding_functions.schemas.bm25_tokenizer import (
    DEFAULT_CHROMA_BM25_STOPWORDS,
)

from consumers.embedding.bm25 import ENGLISH_STOPWORDS, Bm25, describe_sparse, sparse_function
from schemas.errors import InvalidArgumentError

TEXTS = [
    "", "   ", "!!!", "The quick brown foxes jumped over the lazy dogs.",
    "Product code XK-42/B, SKU #88-1911; part no. 0042 (spare)",
    "running runs ran runner RUNNING Run", "Don't stop: it's what they'd've wanted, isn't it?",
    "Ünïcödé café naïve résumé — Straße, 東京 タワー, Москва", "emoji 🙂 kites 🪁 and tabs\tand\nnewlines",
    "a " * 300 + "needle", "x" * 41 + " short " + "y" * 40,
    "red red red red kite kite", "I, me, my, myself — all stopwords",
]


def _words(rng: random.Random) -> str:
    vocab = ["kite", "kites", "red", "Red", "the", "a", "flying", "flies", "XK-42", "42", "über",
             "don't", "it's", "photo", "photos", "photographer", "blue-green", "ocean", "café"]
    return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 40)))


@pytest.mark.parametrize("kwargs", [
    {}, {"k": 0.9, "b": 0.4, "avg_doc_length": 12.0},
    {"token_max_length": 5}, {"stopwords": ["kite", "Red"]}, {"include_tokens": True},
], ids=["defaults", "k-b-avg", "max-length", "stopwords", "tokens"])
def test_terms_weights_and_tokens_match_chromas_bm25(kwargs: dict[str, object]) -> None:
    theirs = ChromaBm25EmbeddingFunction(**kwargs)  # type: ignore[arg-type]
    ours = Bm25.from_config(theirs.get_config())
    rng = random.Random(7)
    texts = TEXTS + [_words(rng) for _ in range(200)]
    for text, want, got in zip(texts, theirs(texts), ours(texts), strict=True):
        assert got.indices.tolist() == want.indices, text
        np.testing.assert_array_equal(got.values, np.asarray(want.values, np.float32), text)
        assert got.labels == want.labels, text


def test_the_stopword_list_is_chromas() -> None:
    assert set(DEFAULT_CHROMA_BM25_STOPWORDS) == ENGLISH_STOPWORDS


def test_a_description_round_trips_and_other_sparse_functions_are_refused() -> None:
    theirs = ChromaBm25EmbeddingFunction(k=1.0, stopwords=["x"])
    desc = describe_sparse(theirs)
    assert desc == {"name": "chroma_bm25", "config": theirs.get_config()}
    rebuilt = sparse_function(desc)
    assert rebuilt is not None and rebuilt.config() == theirs.get_config()
    assert describe_sparse(rebuilt) == desc

    class Splade:
        @staticmethod
        def name() -> str:
            return "chroma-cloud-splade"

        def get_config(self) -> dict[str, object]:
            return {}
    with pytest.raises(InvalidArgumentError, match="Splade is not supported"):
        describe_sparse(Splade())
