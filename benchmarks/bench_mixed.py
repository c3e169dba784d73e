"""Queries first, measured: text queries over the reply topic, one at a time, from a client
with no writes of its own, on one ``streamer serve``, first idle and then while another client
ingests photo files at full speed; and the ingestion rate with and without those queries. One
run, one service, the same model (random weights by default: the compute of trained ones).

During ingestion the queries come at ``--qps`` (an interactive user's pace, not a closed loop):
each takes the model for one text encode, so a client asking back to back would take a share
of the model that grows as its latency falls, and the ingestion rate with it.

    python -m benchmarks.bench_mixed [--model ViT-B-32] [--images 128] [--queries 200] [--qps 4]

Needs the local broker (compose/kafka/start). Prints a table; every figure is measured here."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine, percentiles
from benchmarks.run import load_avg, weights
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.settings import with_runtime_env
from streamer.testing.images import photo_files
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

CHUNK = 32


def ingest(col: Any, uris: list[str], tag: str) -> float:
    """Images/s of add(uris) until count() sees them all."""
    before = col.count()
    started = time.perf_counter()
    for start in range(0, len(uris), CHUNK):
        col.add(ids=[f"{tag}-{i}" for i in range(start, min(start + CHUNK, len(uris)))],
                uris=uris[start:start + CHUNK])
    assert col.count() == before + len(uris)
    return len(uris) / (time.perf_counter() - started)


def query_once(col: Any, i: int) -> float:
    started = time.perf_counter()
    col.query(query_texts=[f"a photo of thing number {i}"], n_results=5, include=[])
    return time.perf_counter() - started


def main() -> None:
    env = with_runtime_env(force=True)
    if env is not None:  # the runtime environment is read at start: this process and the service's
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.bench_mixed", *sys.argv[1:]], env)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200, help="idle queries")
    parser.add_argument("--qps", type=float, default=4.0, help="query rate during ingestion")
    parser.add_argument("--checkpoint", default=None,
                        help="open_clip weights file (default: random, seed 0, written once here)")
    args = parser.parse_args()
    ensure_broker()
    work = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    uris = photo_files(args.images, work / "photos")
    ef_kwargs = {"model_name": args.model,
                 "checkpoint": weights(args.model, args.checkpoint, work)}
    svc = ServiceProcess(new_prefix(), work / "svc", extra_env={
        "STREAMER_BATCH_MAX_ITEMS": str(CHUNK), "STREAMER_BATCH_MAX_WAIT_MS": "50"})
    svc.start()
    try:
        with KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix) as writer, \
                KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix) as reader:
            wcol = writer.create_collection("mixed", embedding_function=OpenCLIPEmbeddingFunction(
                **ef_kwargs), data_loader=ImageLoader())
            rcol = reader.get_collection("mixed", embedding_function=OpenCLIPEmbeddingFunction(
                **ef_kwargs), data_loader=ImageLoader())
            ingest(wcol, uris[:CHUNK], "warm")  # the service loads the model
            for i in range(20):
                query_once(rcol, -i)
            idle = [query_once(rcol, i) for i in range(args.queries)]
            alone = [ingest(wcol, uris, f"alone{r}") for r in range(2)]

            during: list[float] = []
            rate: list[float] = []
            done = threading.Event()

            def ingestion() -> None:
                try:
                    rate.append(ingest(wcol, uris, "mixed"))
                finally:
                    done.set()
            thread = threading.Thread(target=ingestion)
            thread.start()
            i, gap, due = 10**6, 1 / args.qps, time.perf_counter()
            while not done.is_set():
                during.append(query_once(rcol, i))
                i += 1
                due += gap
                done.wait(max(0.0, due - time.perf_counter()))
            thread.join()
    finally:
        svc.kill()
    idle_p50, idle_p99 = percentiles(idle)
    mix_p50, mix_p99 = percentiles(during)
    alone_rate = statistics.median(alone)
    print(f"\nmachine: {machine()}; load average now {load_avg()}; model {args.model}, weights "
          f"{Path(ef_kwargs['checkpoint']).name}, {args.images} photos, add(uris) {CHUNK} per "
          "call, text queries n_results=5")
    print("| text query over the reply topic | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    print(f"| idle service | {len(idle)} | {idle_p50:.1f} | {idle_p99:.1f} | "
          f"{max(idle) * 1e3:.1f} |")
    print(f"| during ingestion, {args.qps:g} q/s | {len(during)} | {mix_p50:.1f} | "
          f"{mix_p99:.1f} | {max(during) * 1e3:.1f} |")
    print(f"\np99 during ingestion / idle p99: {mix_p99 / idle_p99:.2f}x")
    print(f"ingestion: {alone_rate:.1f} images/s alone (median of {len(alone)}), "
          f"{rate[0]:.1f} with the queries ({rate[0] / alone_rate:.2f}x)")


if __name__ == "__main__":
    main()
