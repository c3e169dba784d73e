"""The writer's own overhead: records that bring their embeddings (512-d) and documents, so no
model runs anywhere, through the embedded client and through KafkaClient + ``streamer serve``
in the same run; end to end (the last ``count()`` waits until every write is applied).

    python -m benchmarks.bench_writer [--n 20000] [--chunk 500] [--profile]

``--profile`` samples the service with py-spy during its ingest and prints where the time
went (benchmarks/profile.py)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import streamer
from benchmarks import profile
from benchmarks.common import machine
from streamer.kafka.client import KafkaClient
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

DIM = 512


def ingest(client: streamer.Client, vectors: np.ndarray, chunk: int) -> float:
    """Records per second from the first add to the count that sees them all."""
    col = client.create_collection("writer-bench", embedding_function=None)
    n = len(vectors)
    started = time.perf_counter()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        col.add(ids=[f"r{i}" for i in range(start, stop)], embeddings=vectors[start:stop],
                documents=[f"document {i} of the writer benchmark" for i in range(start, stop)],
                metadatas=[{"i": i, "even": i % 2 == 0} for i in range(start, stop)])
    assert col.count() == n
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    ensure_broker()
    vectors = np.random.default_rng(0).standard_normal((args.n, DIM)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="bench-writer-"))

    embedded = streamer.Client(path=str(tmp / "embedded"))
    try:
        emb_rate = ingest(embedded, vectors, args.chunk)
    finally:
        embedded.close()

    # The embedded client's checkpoint interval, not the test fixture's 500: a checkpoint
    # saves the whole graph, so at 500 the service would pay that alone, quadratically in n.
    every = Settings.model_fields["checkpoint_every"].default
    svc = ServiceProcess(new_prefix(), tmp / "svc",
                         extra_env={"STREAMER_CHECKPOINT_EVERY": str(every)})
    svc.start()
    sampler = None
    try:
        if args.profile and profile.available():
            assert svc.proc is not None
            sampler = profile.record(svc.proc.pid, tmp / "writer.raw")
        with KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix,
                         kafka_request_timeout_s=600) as kc:
            kafka_rate = ingest(kc, vectors, args.chunk)
    finally:
        if sampler is not None:
            sampler.send_signal(2)
            sampler.wait(timeout=60)
        svc.kill()

    print(f"\nmachine: {machine()}; {args.n} records, {DIM}-d embeddings + documents + "
          f"metadata, add() {args.chunk} per call, no model")
    print("| path | records/s | vs embedded |")
    print("|---|---|---|")
    print(f"| embedded Client | {emb_rate:.0f} | 1.00 |")
    print(f"| KafkaClient + streamer serve | {kafka_rate:.0f} | {kafka_rate / emb_rate:.2f} |")
    if sampler is not None:
        print("\nWhere the service's time went (py-spy):\n")
        print(profile.summarise(tmp / "writer.raw"))


if __name__ == "__main__":
    main()
