"""The writer's own overhead: records that bring their embeddings (512-d) and documents, so no
model runs anywhere, through the embedded client and through KafkaClient + ``streamer serve``
in the same run; end to end (the last ``count()`` waits until every write is applied).

    python -m benchmarks.bench_writer [--n 20000] [--chunk 500] [--profile] [--traces]

``--profile`` samples the service with py-spy during its ingest and prints where the time
went (benchmarks/profile.py). ``--traces`` times the trace hooks as they run with tracing off
(streamer/tracing.py), then runs the Kafka path again with traces on: every call traced, the
client and the service exporting OTLP to a local receiver."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
from aiokafka import ConsumerRecord

import streamer
from benchmarks import profile
from benchmarks.common import machine
from streamer import tracing
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


def kafka_ingest(vectors: np.ndarray, chunk: int, data_dir: Path, env: dict[str, str],
                 profile_to: Path | None = None) -> float:
    # The embedded client's checkpoint interval, not the test fixture's 500: a checkpoint
    # saves the whole graph, so at 500 the service would pay that alone, quadratically in n.
    every = Settings.model_fields["checkpoint_every"].default
    svc = ServiceProcess(new_prefix(), data_dir,
                         extra_env={"STREAMER_CHECKPOINT_EVERY": str(every), **env})
    svc.start()
    sampler = None
    try:
        if profile_to is not None and profile.available():
            assert svc.proc is not None
            sampler = profile.record(svc.proc.pid, profile_to)
        with KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix,
                         kafka_request_timeout_s=600) as kc:
            return ingest(kc, vectors, chunk)
    finally:
        if sampler is not None:
            sampler.send_signal(2)
            sampler.wait(timeout=60)
        svc.terminate()


def hooks_off_ns(batch: int) -> float:
    """Nanoseconds per record that the trace hooks cost with tracing off: the writer's per
    batch (finding no traced record, three stages) and per record (state and reply headers),
    and the client's per call and per event."""
    assert not tracing.enabled()
    records = [ConsumerRecord("requests", 0, i, 0, 0, b"k", b"v", None, 1, 1, [])
               for i in range(batch)]
    spans: dict[bytes, object] = {}

    def writer_batch() -> None:
        traced = tracing.BatchTrace.of(records)
        for _ in range(3):
            with contextlib.nullcontext() if traced is None else traced.stage("s"):
                pass
        for rec in records:
            tracing.headers_of(spans.get(rec.key))  # type: ignore[arg-type]
            tracing.headers_of(spans.get(rec.key))  # type: ignore[arg-type]

    def client_call() -> None:
        with tracing.span("streamer add"):
            traced = tracing.inject([])
            for _ in range(batch):
                list(traced)

    runs = 200
    seconds = min(timeit.repeat(writer_batch, number=runs, repeat=5)) + min(
        timeit.repeat(client_call, number=runs, repeat=5))
    return seconds / runs / batch * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--traces", action="store_true")
    args = parser.parse_args()
    ensure_broker()
    vectors = np.random.default_rng(0).standard_normal((args.n, DIM)).astype(np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="bench-writer-"))

    embedded = streamer.Client(path=str(tmp / "embedded"))
    try:
        emb_rate = ingest(embedded, vectors, args.chunk)
    finally:
        embedded.close()

    raw = tmp / "writer.raw" if args.profile else None
    kafka_rate = kafka_ingest(vectors, args.chunk, tmp / "svc", {}, raw)
    if args.traces:
        off_ns = hooks_off_ns(Settings.model_fields["batch_max_items"].default)
        from streamer.testing.otlp import Receiver

        with Receiver() as receiver:
            os.environ.update(receiver.env("bench-client"))
            tracing.configure()
            traced_rate = kafka_ingest(vectors, args.chunk, tmp / "svc-traced",
                                       receiver.env("bench-serve"))
            tracing.shutdown()
            spans = len(receiver.spans)

    print(f"\nmachine: {machine()}; {args.n} records, {DIM}-d embeddings + documents + "
          f"metadata, add() {args.chunk} per call, no model")
    print("| path | records/s | vs embedded |")
    print("|---|---|---|")
    print(f"| embedded Client | {emb_rate:.0f} | 1.00 |")
    print(f"| KafkaClient + streamer serve | {kafka_rate:.0f} | {kafka_rate / emb_rate:.2f} |")
    if args.traces:
        print(f"| KafkaClient + streamer serve, traces on | {traced_rate:.0f} | "
              f"{traced_rate / emb_rate:.2f} |")
        print(f"\ntraces on: {traced_rate / kafka_rate:.2f}x the rate with traces off, "
              f"{spans} spans received over OTLP")
        print(f"traces off: the hooks cost {off_ns:.0f} ns per record, "
              f"{off_ns / (1e9 / kafka_rate) * 100:.3f}% of the Kafka path's "
              f"{1e6 / kafka_rate:.0f} us per record")
    if raw is not None and raw.exists():
        print("\nWhere the service's time went (py-spy):\n")
        print(profile.summarise(tmp / "writer.raw"))


if __name__ == "__main__":
    main()
