"""Ingestion and query latency through Kafka, next to the bare model, in one run.

    python -m benchmarks.bench_kafka --images 128 --model ViT-B-32

Needs the local broker (compose/kafka/start). Prints a table; every figure is measured here."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import streamer
from benchmarks.common import Timer, machine, percentiles
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.testing.images import photo_files
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix


def bare_model(ef: OpenCLIPEmbeddingFunction, uris: list[str], batch: int) -> float:
    """Images/s of the model alone, in batches, on already preprocessed tensors."""
    import torch

    loader = ImageLoader()
    tensors = ef.preprocess([im for im in loader(uris) if im is not None])
    model = ef.model
    with Timer() as t, torch.inference_mode():
        for start in range(0, len(tensors), batch):
            model.encode_image(tensors[start:start + batch])
    return len(uris) / t.seconds


def bare_text_latency(ef: OpenCLIPEmbeddingFunction, n: int) -> tuple[float, float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        ef.embed_texts([f"a photo of thing {i}"])
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def ingest(client: streamer.Client, name: str, ef_kwargs: dict[str, object], uris: list[str],
           chunk: int) -> float:
    col = client.create_collection(name, embedding_function=OpenCLIPEmbeddingFunction(**ef_kwargs),  # type: ignore[arg-type]
                                   data_loader=ImageLoader())
    with Timer() as t:
        for start in range(0, len(uris), chunk):
            col.add(ids=[f"u{i}" for i in range(start, min(start + chunk, len(uris)))],
                    uris=uris[start:start + chunk])
        assert col.count() == len(uris)  # reads wait for the writes: this is end to end
    return len(uris) / t.seconds


def query_latency(client: streamer.Client, name: str, n: int) -> tuple[float, float]:
    col = client.get_collection(name)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        col.query(query_texts=[f"a photo of thing {i}"], n_results=5)
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--checkpoint", default="random",
                        help="weights file, open_clip pretrained tag or 'random' (same compute)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    ef_kwargs: dict[str, object] = {"model_name": args.model, "checkpoint": args.checkpoint,
                                    "precision": args.precision, "batch_size": args.batch}
    ensure_broker()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    uris = photo_files(args.images, tmp / "photos")
    ef = OpenCLIPEmbeddingFunction(**ef_kwargs)  # type: ignore[arg-type]
    ef.load()
    bare = bare_model(ef, uris, args.batch)
    bare_p50, bare_p99 = bare_text_latency(ef, args.queries)
    del ef

    embedded = streamer.Client()
    emb_rate = ingest(embedded, "bench", ef_kwargs, uris, 32)
    emb_p50, emb_p99 = query_latency(embedded, "bench", args.queries)
    embedded.close()

    prefix = new_prefix()
    svc = ServiceProcess(prefix, tmp / "svc", extra_env={"STREAMER_BATCH_MAX_ITEMS": str(args.batch),
                                                         "STREAMER_BATCH_MAX_WAIT_MS": "50"})
    svc.start()
    try:
        kc = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
        kafka_rate = ingest(kc, "bench", ef_kwargs, uris, 32)
        k_p50, k_p99 = query_latency(kc, "bench", args.queries)
        kc.close()
    finally:
        svc.kill()

    print(f"\nmachine: {machine()}; model {args.model} {args.precision}; {args.images} photos "
          f"(JPEG+PNG, 320x240..1024x768); add(uris) 32 per call")
    print("| path | images/s | vs bare model | text query p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    print(f"| bare model (batched, preprocessed) | {bare:.1f} | 1.00 "
          f"| {bare_p50:.1f} (encode) | {bare_p99:.1f} |")
    print(f"| embedded Client | {emb_rate:.1f} | {emb_rate / bare:.2f} | {emb_p50:.1f} | {emb_p99:.1f} |")
    print(f"| KafkaClient + streamer serve | {kafka_rate:.1f} | {kafka_rate / bare:.2f} "
          f"| {k_p50:.1f} | {k_p99:.1f} |")


if __name__ == "__main__":
    main()
