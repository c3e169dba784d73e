"""Sections 1 and 2 for our own paths: ingestion and query latency/throughput of the bare
model, the embedded client, and KafkaClient + ``streamer serve`` (with its websocket)."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamer
from benchmarks.bench_gateway import ws_query, ws_throughput
from benchmarks.bench_kafka import bare_text_latency, ingest
from benchmarks.common import Timer, percentiles
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka_client import KafkaClient
from tests.gateway_helpers import TOKEN, TOKENS, ws_client
from tests.kafka_fixtures import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix


@dataclass
class Load:
    """How much querying each path gets: the same for every path in one run."""

    text: int
    image: int
    throughput: int
    concurrency: int
    warmup: int = 3


@dataclass
class PathResult:
    """One row of the ingestion and query tables."""

    name: str
    images_per_s: float | None = None
    text_ms: tuple[float, float] | None = None  # p50, p99
    image_ms: tuple[float, float] | None = None
    sequential_qps: float | None = None
    concurrent_qps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def texts(n: int, offset: int = 0) -> list[str]:
    return [f"a photo of thing number {offset + i}" for i in range(n)]


def timed(call: Callable[[], object], n: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


def bare(ef: OpenCLIPEmbeddingFunction, uris: list[str], load: Load) -> PathResult:
    """The physical limit: the model alone in batches of ``ef.batch_size`` on tensors that are
    already loaded and transformed; plus single text/image encode latency."""
    tensors = list(ef.preprocess([im for im in ImageLoader()(uris) if im is not None]))
    ef.embed_prepared(tensors[:ef.batch_size])  # warm up allocator and kernels
    with Timer() as t:
        ef.embed_prepared(tensors)
    loader = ImageLoader()
    it = iter(range(10**9))
    image_ms = timed(lambda: ef.embed_images(loader([uris[next(it) % len(uris)]])), load.image,
                     load.warmup)
    return PathResult("bare model", len(uris) / t.seconds, bare_text_latency(ef, load.text), image_ms,
                      extra={"batch": ef.batch_size})


def _queries(col: Any, uris: list[str], load: Load, result: PathResult) -> None:
    qs = iter(texts(10**6))
    result.text_ms = timed(lambda: col.query(query_texts=[next(qs)], n_results=5), load.text,
                           load.warmup)
    it = iter(range(10**9))
    result.image_ms = timed(lambda: col.query(query_uris=[uris[next(it) % len(uris)]], n_results=5),
                            load.image, load.warmup)
    batch = texts(load.throughput, offset=10**7)
    with Timer() as t:
        for q in batch:
            col.query(query_texts=[q], n_results=5)
    result.sequential_qps = len(batch) / t.seconds
    batch = texts(load.throughput, offset=2 * 10**7)
    with ThreadPoolExecutor(load.concurrency) as pool, Timer() as t:
        list(pool.map(lambda q: col.query(query_texts=[q], n_results=5), batch))
    result.concurrent_qps = len(batch) / t.seconds


def embedded(path: Path, ef_kwargs: dict[str, Any], uris: list[str], chunk: int,
             load: Load) -> PathResult:
    client = streamer.Client(path)
    try:
        result = PathResult("embedded Client", ingest(client, "bench", ef_kwargs, uris, chunk))
        _queries(client.get_collection("bench"), uris, load, result)
    finally:
        client.close()
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _websocket(url: str, uris: list[str], load: Load, result: PathResult) -> None:
    async with ws_client(url, TOKEN) as ws:
        for kind, n, make in (("text", load.text, lambda i: {"texts": [f"a photo of thing {i}"]}),
                              ("image", load.image, lambda i: {"uris": [uris[i % len(uris)]]})):
            samples = []
            for i in range(load.warmup + n):
                frame = {"op": "query", "name": "bench", "n_results": 5, **make(i)}
                t0 = time.perf_counter()
                await ws.result(frame)
                if i >= load.warmup:
                    samples.append(time.perf_counter() - t0)
            setattr(result, f"{kind}_ms", percentiles(samples))
        batch = texts(load.throughput, offset=3 * 10**7)
        t0 = time.perf_counter()
        for q in batch:
            await ws_query(ws, q)
        result.sequential_qps = len(batch) / (time.perf_counter() - t0)
    result.concurrent_qps = await ws_throughput(url, texts(load.throughput, offset=4 * 10**7),
                                                load.concurrency, sockets=min(4, load.concurrency))


def kafka(tmp: Path, ef_kwargs: dict[str, Any], uris: list[str], chunk: int, load: Load,
          profile: Callable[[int], Any] | None = None) -> tuple[PathResult, PathResult]:
    """KafkaClient against a real ``streamer serve``; then its websocket gateway. ``profile``
    starts a recorder (a Popen, e.g. py-spy) on the service pid; SIGINT ends it after ingestion."""
    ensure_broker()
    port = free_port()
    batch = str(ef_kwargs.get("batch_size", 32))
    svc = ServiceProcess(new_prefix(), tmp / "svc", extra_env={
        "STREAMER_BATCH_MAX_ITEMS": batch, "STREAMER_BATCH_MAX_WAIT_MS": "50",
        "STREAMER_HTTP_PORT": str(port), "STREAMER_AUTH_TOKENS": TOKENS,
        "STREAMER_CHECKPOINT_EVERY": "50000"})
    svc.start()
    recorder = None
    try:
        kc = KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix)
        try:
            assert svc.proc is not None
            recorder = profile(svc.proc.pid) if profile else None
            result = PathResult("KafkaClient + serve", ingest(kc, "bench", ef_kwargs, uris, chunk))
            if recorder is not None:  # the profile covers ingestion only
                recorder.send_signal(signal.SIGINT)
                recorder.wait(timeout=60)
            _queries(kc.get_collection("bench"), uris, load, result)
        finally:
            kc.close()
        ws = PathResult("websocket (serve gateway)")
        asyncio.run(_websocket(f"http://127.0.0.1:{port}", uris, load, ws))
    finally:
        if recorder is not None and recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        svc.kill()
    return result, ws
