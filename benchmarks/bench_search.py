"""Hybrid search quality and latency on a real corpus, against ``bm25s`` on the same machine:

    python -m benchmarks.bench_search --docs 100000 --large 1000000 --queries 300

The corpus is the docstrings installed here (``benchmarks/corpus.py``: summaries are the
queries, the paragraphs of the same docstring their relevant documents). One embedded
``streamer.Client`` collection holds the documents with streamer-tiny's text vectors and a
BM25 sparse index; each query runs through ``Collection.search`` as three ranks: BM25 alone,
dense alone, and ``Rrf`` of both (each Knn over its nearest 100, a missing rank counted as
100), its dense weight chosen on a separate dev split of the queries. Reported: recall@10 and
nDCG@10 per rank, p50/p99 latency of one search call; ``bm25s`` (same tokens, k1=1.2,
b=0.75) gives the BM25 speed reference. ``--large`` repeats the corpus (vectors jittered) to
that many documents for latency only: its duplicates make quality meaningless there."""

from __future__ import annotations

import argparse
import math
import random
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import streamer
from benchmarks.common import machine, percentiles
from benchmarks.corpus import Corpus, build
from consumers.embedding.bm25 import Bm25
from streamer.embedding_functions import OpenCLIPEmbeddingFunction

K = 10
POOL = 100  # each Knn of the hybrid ranks this many
CHUNK = 4096


def _search_types() -> Any:
    from chromadb.execution.expression import Knn, Rrf, Search
    return Knn, Rrf, Search


def _load(col: Any, documents: list[str], vectors: np.ndarray, start: int = 0) -> float:
    t = time.perf_counter()
    for i in range(0, len(documents), CHUNK):
        col.add(ids=[f"d{start + j}" for j in range(i, min(i + CHUNK, len(documents)))],
                documents=documents[i:i + CHUNK], embeddings=vectors[i:i + CHUNK])
    col.count()
    return time.perf_counter() - t


def _quality(hits: list[list[int]], relevant: list[frozenset[int]]) -> tuple[float, float]:
    recall, ndcg = [], []
    for got, rel in zip(hits, relevant, strict=True):
        recall.append(len(set(got) & rel) / len(rel))
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(got) if i in rel)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(rel), K)))
        ndcg.append(dcg / ideal)
    return float(np.mean(recall)), float(np.mean(ndcg))


def _run(col: Any, searches: list[Any]) -> tuple[list[list[int]], list[float]]:
    hits, times = [], []
    for s in searches:
        t = time.perf_counter()
        ids = col.search(s)["ids"][0]
        times.append(time.perf_counter() - t)
        hits.append([int(i[1:]) for i in ids])
    return hits, times


def _ranks(texts: list[str], vectors: np.ndarray, weight: float) -> dict[str, list[Any]]:
    Knn, Rrf, Search = _search_types()

    def hybrid(text: str, v: np.ndarray) -> Any:
        return Search().rank(Rrf([
            Knn(query=v.tolist(), limit=POOL, default=POOL, return_rank=True),
            Knn(query=text, key="sparse", limit=POOL, default=POOL, return_rank=True)],
            weights=[weight, 1.0])).limit(K)
    return {
        "bm25": [Search().rank(Knn(query=t, key="sparse", limit=K)).limit(K) for t in texts],
        "dense": [Search().rank(Knn(query=v.tolist(), limit=K)).limit(K) for v in vectors],
        "hybrid": [hybrid(t, v) for t, v in zip(texts, vectors, strict=True)],
    }


def _bm25s(corpus: Corpus, queries: list[str], relevant: list[frozenset[int]]
           ) -> tuple[list[float], tuple[float, float]]:
    import bm25s
    tok = Bm25()
    retriever = bm25s.BM25(k1=1.2, b=0.75)
    retriever.index([tok.tokens(d) for d in corpus.documents], show_progress=False)
    times, hits = [], []
    for q in queries:
        t = time.perf_counter()
        tokens = tok.tokens(q)
        docs, _ = retriever.retrieve([tokens], k=K, show_progress=False, n_threads=1)
        times.append(time.perf_counter() - t)
        hits.append([int(i) for i in docs[0]])
    return times, _quality(hits, relevant)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000, help="0: skip")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dev", type=int, default=100)
    args = parser.parse_args()
    print(machine())
    t0 = time.perf_counter()
    corpus = build(args.docs)
    order = list(range(len(corpus.queries)))
    random.Random(1).shuffle(order)
    dev, test = order[:args.dev], order[args.dev:args.dev + args.queries]
    print(f"corpus: {len(corpus.documents)} paragraphs, {len(corpus.queries)} judged queries "
          f"({np.mean([len(r) for r in corpus.relevant]):.2f} relevant each), "
          f"built in {time.perf_counter() - t0:.0f} s; dev {len(dev)}, test {len(test)}")

    ef = OpenCLIPEmbeddingFunction("streamer-tiny")
    t = time.perf_counter()
    vectors = np.vstack(ef(corpus.documents)).astype(np.float32)
    print(f"embedded {len(vectors)} documents in {time.perf_counter() - t:.0f} s "
          f"({len(vectors) / (time.perf_counter() - t):.0f}/s, dim {vectors.shape[1]})")
    qtexts = [corpus.queries[i] for i in order[:args.dev + args.queries]]
    qvecs = np.vstack(ef(qtexts)).astype(np.float32)
    dev_t, dev_v, test_t, test_v = (qtexts[:len(dev)], qvecs[:len(dev)],
                                    qtexts[len(dev):], qvecs[len(dev):])
    dev_rel = [corpus.relevant[i] for i in dev]
    test_rel = [corpus.relevant[i] for i in test]

    root = Path(tempfile.mkdtemp(prefix="bench-search-"))
    rows: list[tuple[str, int, float | None, float | None, float, float]] = []
    with streamer.Client(root / "small", fsync=False) as client:
        col = _hybrid_collection(client, ef)
        secs = _load(col, corpus.documents, vectors)
        print(f"ingested {len(vectors)} in {secs:.0f} s ({len(vectors) / secs:.0f}/s)")
        best = max((0.1, 0.25, 0.5, 1.0, 2.0), key=lambda w: _quality(
            _run(col, _ranks(dev_t, dev_v, w)["hybrid"])[0], dev_rel)[1])
        print(f"hybrid dense weight (dev nDCG@10): {best}")
        for name, searches in _ranks(test_t, test_v, best).items():
            hits, times = _run(col, searches)
            recall, ndcg = _quality(hits, test_rel)
            rows.append((name, len(vectors), recall, ndcg, *percentiles(times)))
    times, (recall, ndcg) = _bm25s(corpus, test_t, test_rel)
    rows.append(("bm25s", len(vectors), recall, ndcg, *percentiles(times)))

    if args.large:
        rows += _large(root, ef, corpus, vectors, args.large, test_t, test_v, best)
    print(f"\n{'rank':8} {'docs':>9} {'recall@10':>10} {'nDCG@10':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, n, r, nd, p50, p99 in rows:
        rs = "-" if r is None else f"{r:.3f}"
        ns = "-" if nd is None else f"{nd:.3f}"
        print(f"{name:8} {n:>9} {rs:>10} {ns:>8} {p50:>8.2f} {p99:>8.2f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


def _hybrid_collection(client: Any, ef: Any) -> Any:
    from chromadb import Schema, SparseVectorIndexConfig
    from chromadb.utils.embedding_functions import ChromaBm25EmbeddingFunction
    schema = Schema().create_index(config=SparseVectorIndexConfig(
        source_key="#document", embedding_function=ChromaBm25EmbeddingFunction(), bm25=True),
        key="sparse")
    return client.create_collection("hybrid", embedding_function=ef, schema=schema)


def _large(root: Path, ef: Any, corpus: Corpus, vectors: np.ndarray, n: int,
           texts: list[str], qvecs: np.ndarray, weight: float
           ) -> list[tuple[str, int, float | None, float | None, float, float]]:
    rng = np.random.default_rng(0)
    rows: list[tuple[str, int, float | None, float | None, float, float]] = []
    with streamer.Client(root / "large", fsync=False) as client:
        col = _hybrid_collection(client, ef)
        t = time.perf_counter()
        done = 0
        while done < n:
            take = min(len(vectors), n - done)
            jitter = vectors[:take] + rng.normal(0, 1e-3, (take, vectors.shape[1])).astype(
                np.float32)
            _load(col, corpus.documents[:take], jitter, start=done)
            done += take
        secs = time.perf_counter() - t
        print(f"ingested {n} (the corpus repeated) in {secs:.0f} s ({n / secs:.0f}/s)")
        run: Callable[[list[Any]], list[float]] = lambda s: _run(col, s)[1]  # noqa: E731
        for name, searches in _ranks(texts, qvecs, weight).items():
            rows.append((name, n, None, None, *percentiles(run(searches))))
    return rows


if __name__ == "__main__":
    main()
