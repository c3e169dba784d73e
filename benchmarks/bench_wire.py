"""Photos on the wire: bytes per image and images/s, pixel arrays vs encoded JPEG files, through
Kafka (``KafkaClient`` + ``streamer serve``) next to the embedded client in the same run.

    python -m benchmarks.bench_wire                                   # 512x512, 1920x1080
    python -m benchmarks.bench_wire --sizes 4032x3024 --images 8      # 12-megapixel photos

Photos are scikit-image's sample photos resized to each size, with sensor-like noise so they
compress like a camera's output. Bytes are per image: the raw pixels, the JSON event a client
produces (delta-zstd array or ``{"file"}`` JPEG, base64) and that event after the producer's
zstd (what the broker stores). images/s is end to end: ``add(images=...)`` calls of
``--chunk`` images, then a read that waits for the writes. Needs the local broker."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import cramjam
import numpy as np

import streamer
from benchmarks.common import Timer, machine
from consumers.loading.decode import compress_array
from schemas.events import dumps, write_event
from schemas.records import EncodedImage, Op, WriteItem
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.testing.images import encode, photo
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

SAMPLES = ("astronaut", "coffee", "chelsea", "rocket")


def photos(n: int, width: int, height: int) -> list[np.ndarray]:
    return [photo(SAMPLES[i % len(SAMPLES)], width, height, seed=width * height + i) for i in range(n)]


def wire_bytes(images: list[Any]) -> tuple[float, float]:
    """Mean bytes per image of the JSON event and of that event zstd-compressed by Kafka."""
    events, stored = [], []
    for i, image in enumerate(images):
        sent = compress_array(image) if isinstance(image, np.ndarray) else EncodedImage(image)
        value = dumps(write_event(Op.ADD, "c", WriteItem(id=f"p{i}", image=sent), 0, i))
        events.append(len(value))
        stored.append(len(cramjam.zstd.compress(value, level=3)))
    return float(np.mean(events)), float(np.mean(stored))


def ingest(client: streamer.Client, name: str, images: list[Any], chunk: int, model: str) -> float:
    col = client.create_collection(name, embedding_function=OpenCLIPEmbeddingFunction(model))
    with Timer() as t:
        for start in range(0, len(images), chunk):
            part = images[start:start + chunk]
            col.add(ids=[f"p{start + i}" for i in range(len(part))], images=part)
        assert col.count() == len(images)  # reads wait for the writes: end to end
    return len(images) / t.seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_wire",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="512x512,1920x1080",
                        help="comma-separated WxH (default: 512x512,1920x1080)")
    parser.add_argument("--images", type=int, default=16, help="photos per size")
    parser.add_argument("--chunk", type=int, default=8, help="images per add() call")
    parser.add_argument("--model", default="streamer-tiny")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    ensure_broker()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-wire-") as tmp:
        svc = ServiceProcess(new_prefix(), Path(tmp) / "svc")
        svc.start()
        try:
            embedded = streamer.Client()
            kafka = streamer.KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix)
            warm = photos(2, 64, 64)  # the model loads outside the timings, on both paths
            ingest(embedded, "warm", warm, args.chunk, args.model)
            ingest(kafka, "warm", warm, args.chunk, args.model)
            for width, height in sizes:
                arrays = photos(args.images, width, height)
                files = [encode(a, "JPEG") for a in arrays]
                raw = arrays[0].nbytes
                for form, images in (("array", arrays), ("JPEG", files)):
                    event, stored = wire_bytes(images)
                    tag = f"{form}-{width}x{height}".lower()
                    emb = ingest(embedded, f"e-{tag}", images, args.chunk, args.model)
                    kaf = ingest(kafka, f"k-{tag}", images, args.chunk, args.model)
                    rows.append((f"{width}x{height}", form, raw, event, stored, emb, kaf))
            kafka.close()
            embedded.close()
        finally:
            svc.kill()
    print(f"\nmachine: {machine()}; model {args.model}; {args.images} photos per size, "
          f"add() {args.chunk} per call")
    print("| size | sent as | raw pixels KB | event KB (JSON) | stored KB (zstd) | "
          "embedded images/s | Kafka images/s | Kafka / embedded |")
    print("|---|---|---|---|---|---|---|---|")
    for size, form, raw, event, stored, emb, kaf in rows:
        print(f"| {size} | {form} | {raw / 1e3:,.0f} | {event / 1e3:,.0f} | {stored / 1e3:,.0f} "
              f"| {emb:.1f} | {kaf:.1f} | {kaf / emb:.2f} |")


if __name__ == "__main__":
    main()
