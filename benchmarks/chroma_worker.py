"""Chroma's side of sections 1 and 2, run by benchmarks.chroma inside the separate Chroma venv
(chromadb's pins conflict with ours). Reads a JSON job on stdin, prints one JSON line.

Uses Chroma's own OpenCLIPEmbeddingFunction and ImageLoader unchanged: its ``checkpoint``
argument goes to open_clip as ``pretrained``, which accepts a local state-dict file, so it
loads exactly the weights our side loads."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import chromadb
from chromadb.utils.data_loaders import ImageLoader
from chromadb.utils.embedding_functions import OpenCLIPEmbeddingFunction

from benchmarks.common import Timer, percentiles


def timed(call: Any, n: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def texts(n: int, offset: int) -> list[str]:
    return [f"a photo of thing number {offset + i}" for i in range(n)]


def main() -> None:
    # Calls run on one worker thread, as our clients' model calls do: on a busy box OpenMP
    # spin-waiting slows model calls made on the main thread several-fold.
    with ThreadPoolExecutor(1) as pool:
        print(json.dumps(pool.submit(measure, json.load(sys.stdin)).result()))


def measure(job: dict[str, Any]) -> dict[str, Any]:
    uris: list[str] = job["uris"]
    chunk, warmup = job["chunk"], job["warmup"]
    ef = OpenCLIPEmbeddingFunction(model_name=job["model"], checkpoint=job["checkpoint"], device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench-chroma-") as tmp:
        client = chromadb.PersistentClient(path=tmp)
        # Same warm-up as ours: one chunk into another collection before the timed adds.
        warm = client.create_collection("warmup", embedding_function=ef, data_loader=ImageLoader())
        warm.add(ids=[f"w{i}" for i in range(min(chunk, len(uris)))], uris=uris[:chunk])
        col = client.create_collection("bench", embedding_function=ef, data_loader=ImageLoader())
        with Timer() as t:
            for start in range(0, len(uris), chunk):
                col.add(ids=[f"u{i}" for i in range(start, min(start + chunk, len(uris)))],
                        uris=uris[start:start + chunk])
        assert col.count() == len(uris)
        ingest = len(uris) / t.seconds
        if not job["queries"]:
            return {"images_per_s": ingest, "chromadb": chromadb.__version__}
        qs = iter(texts(10**6, 0))
        text_ms = timed(lambda: col.query(query_texts=[next(qs)], n_results=5), job["text"], warmup)
        it = iter(range(10**9))
        image_ms = timed(lambda: col.query(query_uris=[uris[next(it) % len(uris)]], n_results=5),
                         job["image"], warmup)
        batch = texts(job["throughput"], 10**7)
        with Timer() as t:
            for q in batch:
                col.query(query_texts=[q], n_results=5)
        sequential = len(batch) / t.seconds
        batch = texts(job["throughput"], 2 * 10**7)
        with ThreadPoolExecutor(job["concurrency"]) as pool, Timer() as t:
            list(pool.map(lambda q: col.query(query_texts=[q], n_results=5), batch))
        concurrent = len(batch) / t.seconds
    return {"images_per_s": ingest, "text_ms": text_ms, "image_ms": image_ms,
            "sequential_qps": sequential, "concurrent_qps": concurrent,
            "chromadb": chromadb.__version__}


if __name__ == "__main__":
    main()
