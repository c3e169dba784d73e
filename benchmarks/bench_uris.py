"""Ingestion by URI from a local S3 server (moto, on loopback) next to the same photos from
local files, through the same ``streamer serve``, in one run:

    python -m benchmarks.bench_uris --images 64 --rounds 3 [--model ViT-B-32]

Each round ingests the photos once by path and once by ``s3://`` URI (new collections each
time, alternating which goes first); images/s are medians over the rounds. Needs the local
broker (compose/kafka/start) and the dev extra (moto). Prints a table."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import orjson

from benchmarks.common import Timer, machine
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.testing.images import photo_files
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import cpu_seconds, moto_s3

BUCKET = "bench"
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


def ingest(client: KafkaClient, name: str, ef_kwargs: dict[str, object], loader: ImageLoader,
           uris: list[str], chunk: int) -> float:
    col = client.create_collection(name, embedding_function=OpenCLIPEmbeddingFunction(**ef_kwargs),  # type: ignore[arg-type]
                                   data_loader=loader)
    with Timer() as t:
        for start in range(0, len(uris), chunk):
            col.add(ids=[f"u{i}" for i in range(start, min(start + chunk, len(uris)))],
                    uris=uris[start:start + chunk])
        assert col.count() == len(uris)  # reads wait for the writes: this is end to end
    return len(uris) / t.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="streamer-tiny")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import boto3

    ef_kwargs: dict[str, object] = {"model_name": args.model, "batch_size": args.batch}
    ensure_broker()
    tmp = Path(tempfile.mkdtemp(prefix="bench-uris-"))
    files = photo_files(args.images, tmp / "photos")
    moto: list[int] = []
    with moto_s3(moto.append) as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket=BUCKET)
        keys = [f"photos/{Path(f).name}" for f in files]
        for key, path in zip(keys, files, strict=True):
            s3.put_object(Bucket=BUCKET, Key=key, Body=Path(path).read_bytes())
        s3_uris = [f"s3://{BUCKET}/{k}" for k in keys]
        svc = ServiceProcess(new_prefix(), tmp / "svc", extra_env={
            **CREDS, "STREAMER_BATCH_MAX_ITEMS": str(args.batch), "STREAMER_BATCH_MAX_WAIT_MS": "50",
            # the first batch loads the model: on a busy box that outlasts the default 30 s
            "STREAMER_KAFKA_REQUEST_TIMEOUT_S": "300",
            "STREAMER_REMOTE_ALLOW": f"s3://{BUCKET}/",
            "STREAMER_REMOTE_STORES": orjson.dumps({"s3": {
                "endpoint": endpoint, "region": "us-east-1", "allow_http": "true"}}).decode()})
        svc.start()
        rates: dict[str, list[float]] = {"local": [], "s3": []}
        s3_cpu: list[float] = []  # CPU seconds the S3 server itself used, per s3 round
        try:
            client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix,
                                 kafka_request_timeout_s=300)
            paths = {"local": (ImageLoader(roots=[tmp / "photos"]), files),
                     "s3": (ImageLoader(remote={"allow": [f"s3://{BUCKET}/"]}), s3_uris)}
            ingest(client, "warmup", ef_kwargs, paths["local"][0], files[:8], 8)
            for r in range(args.rounds):
                order = ["local", "s3"] if r % 2 == 0 else ["s3", "local"]
                for kind in order:
                    loader, uris = paths[kind]
                    before = cpu_seconds(moto[0])
                    rates[kind].append(ingest(client, f"{kind}-{r}", ef_kwargs, loader, uris, 32))
                    if kind == "s3":
                        s3_cpu.append(cpu_seconds(moto[0]) - before)
            client.close()
        finally:
            svc.kill()
    local, remote = statistics.median(rates["local"]), statistics.median(rates["s3"])
    ratios = [s / f for s, f in zip(rates["s3"], rates["local"], strict=True)]
    print(f"\nmachine: {machine()}; model {args.model}; {args.images} photos (JPEG+PNG, "
          f"320x240..1024x768); KafkaClient + streamer serve, add(uris) 32 per call; "
          f"{args.rounds} rounds; S3: moto {endpoint.split('//')[1]} (loopback)")
    print("| source | images/s (median) | per round | s3 / local |")
    print("|---|---|---|---|")
    print(f"| local files | {local:.1f} | {', '.join(f'{x:.1f}' for x in rates['local'])} | - |")
    print(f"| s3:// (moto) | {remote:.1f} | {', '.join(f'{x:.1f}' for x in rates['s3'])} "
          f"| {statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)}) |")
    per_image = statistics.median(s3_cpu) / args.images * 1000
    print(f"\nThe S3 server (moto, Python) shares the cores: it used {per_image:.1f} ms of CPU per "
          f"image served (median of rounds), time the local-file path leaves to the service.")


if __name__ == "__main__":
    main()
