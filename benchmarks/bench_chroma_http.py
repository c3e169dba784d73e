"""Chroma HTTP API latency through a real ``chromadb.HttpClient``: add (one record, and a
batch), query and count, on ``streamer serve --embedded``, on ``streamer serve`` over the
local broker, and on ``chroma run`` for scale.

    python -m benchmarks.bench_chroma_http --rounds 40 --batch 100

Over Kafka an add answers once applied: the writer's verdict, then a read round trip
carrying the session's offsets (``Backend.sync``); a count is one such round trip, so
``add - count`` is roughly what the write itself costs. Sequential calls, 8-dimensional
embeddings, no model. Prints a table with the load average; every figure is measured here."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.config import Settings as ChromaSettings

from benchmarks.common import machine, percentiles
from streamer.testing.chroma import chroma_run, streamer_serve


def timed(rounds: int, call: Callable[[int], Any]) -> tuple[float, float]:
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


@contextmanager
def target(kind: str, tmp: Path) -> Iterator[int]:
    if kind == "chroma run":
        with chroma_run(tmp) as server:
            yield server.port
    else:
        with streamer_serve(tmp, kafka=kind == "kafka") as svc:
            yield svc.port


def measure(port: int, rounds: int, batch: int) -> dict[str, tuple[float, float]]:
    client = chromadb.HttpClient(host="127.0.0.1", port=port,
                                 settings=ChromaSettings(anonymized_telemetry=False))
    col: Any = client.create_collection("bench", embedding_function=None)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rounds * (batch + 1), 8)).astype(np.float32)
    out = {
        "add 1": timed(rounds, lambda i: col.add(ids=[f"one{i}"], embeddings=vectors[i:i + 1])),
        f"add {batch}": timed(rounds, lambda i: col.add(
            ids=[f"b{i}-{j}" for j in range(batch)],
            embeddings=vectors[rounds + i * batch:rounds + (i + 1) * batch])),
        "query": timed(rounds, lambda i: col.query(query_embeddings=vectors[i:i + 1],
                                                   n_results=5)),
        "count": timed(rounds, lambda i: col.count()),
    }
    client.delete_collection("bench")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--targets", default="embedded,kafka,chroma run")
    args = parser.parse_args()
    print(machine())
    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for kind in args.targets.split(","):
            with target(kind, tmp / kind.replace(" ", "-")) as port:
                load = os.getloadavg()[0]
                rows.append((kind, load, measure(port, args.rounds, args.batch)))
    ops = list(rows[0][2])
    print(f"{'server':<12} {'load':>5}  " + "  ".join(f"{op + ' p50/p99 ms':>22}" for op in ops))
    for kind, load, res in rows:
        cells = "  ".join(f"{res[op][0]:>10.1f} / {res[op][1]:>9.1f}" for op in ops)
        print(f"{kind:<12} {load:>5.2f}  {cells}")


if __name__ == "__main__":
    main()
