"""Sections 1 and 2: ingestion and query latency/throughput of the bare model, the embedded
client, KafkaClient + ``streamer serve`` (and its websocket gateway), and Chroma.

Other work on the machine comes and goes, so the paths are measured interleaved: each
ingestion round runs every path once (medians of rounds and of per-round ratios are
reported), and each latency sample takes one query through every path in turn. All model
calls of the bare path run on one worker thread, as the engine's and the service's do: on a
busy box, OpenMP spin-waiting made the very same calls 3-8x slower on the main thread."""

from __future__ import annotations

import asyncio
import signal
import socket
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import streamer
from benchmarks.bench_gateway import ws_query, ws_throughput
from benchmarks.common import Timer, percentiles
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.testing.gateway import TOKEN, TOKENS, ws_client
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix


@dataclass
class Load:
    """How much each path is exercised: the same for every path in one run."""

    text: int
    image: int
    throughput: int
    concurrency: int
    rounds: int = 2
    warmup: int = 3


@dataclass
class PathResult:
    """One row of the ingestion and query table."""

    name: str
    images_per_s: float | None = None
    text_ms: tuple[float, float] | None = None  # p50, p99
    image_ms: tuple[float, float] | None = None
    sequential_qps: float | None = None
    concurrent_qps: float | None = None
    rounds: list[float] = field(default_factory=list)


def texts(n: int, offset: int = 0) -> list[str]:
    return [f"a photo of thing number {offset + i}" for i in range(n)]


def name(round_: int) -> str:
    # Round 0's collection is the one queried; benchmarks.bench_gateway's frames name "bench".
    return "bench" if round_ == 0 else f"bench{round_}"


def seconds(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def warm(client: Any, ef: OpenCLIPEmbeddingFunction, uris: list[str], chunk: int) -> None:
    """One full chunk into a warm-up collection with the same embedding function (the service
    shares one model per config): model load and first-call costs are not ingestion."""
    col = client.create_collection("warmup", embedding_function=ef, data_loader=ImageLoader())
    col.add(ids=[f"w{i}" for i in range(min(chunk, len(uris)))], uris=uris[:chunk])
    assert col.count() == min(chunk, len(uris))


def ingest(client: Any, name: str, ef: OpenCLIPEmbeddingFunction, uris: list[str], chunk: int) -> float:
    """Images/s of add(uris) in chunks until count() sees them all (reads wait for the writes,
    so this is end to end)."""
    col = client.create_collection(name, embedding_function=ef, data_loader=ImageLoader())
    with Timer() as t:
        for start in range(0, len(uris), chunk):
            col.add(ids=[f"u{i}" for i in range(start, min(start + chunk, len(uris)))],
                    uris=uris[start:start + chunk])
        assert col.count() == len(uris)
    return len(uris) / t.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def throughput(col: Any, load: Load, offset: int) -> tuple[float, float]:
    """Text queries/s one at a time, then with ``load.concurrency`` client threads."""
    batch = texts(load.throughput, offset)
    with Timer() as t:
        for q in batch:
            col.query(query_texts=[q], n_results=5)
    sequential = len(batch) / t.seconds
    batch = texts(load.throughput, offset + 10**6)
    with ThreadPoolExecutor(load.concurrency) as pool, Timer() as t:
        list(pool.map(lambda q: col.query(query_texts=[q], n_results=5), batch))
    return sequential, len(batch) / t.seconds


async def websocket(url: str, uris: list[str], load: Load, result: PathResult) -> None:
    async with ws_client(url, TOKEN) as ws:
        for kind, n, make in (("text", load.text, lambda i: {"texts": [f"a photo of thing {i}"]}),
                              ("image", load.image, lambda i: {"uris": [uris[i % len(uris)]]})):
            samples = []
            for i in range(load.warmup + n):
                frame = {"op": "query", "name": name(0), "n_results": 5, **make(i)}
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


def interleaved(n: int, warmup: int, model: ThreadPoolExecutor, encode: Callable[[int], object],
                query: Callable[[Any, int], object], cols: list[Any]) -> list[list[float]]:
    """Latency samples: query i goes through the bare model, then each collection in turn."""
    samples: list[list[float]] = [[] for _ in range(1 + len(cols))]
    for i in range(warmup + n):
        row = [model.submit(seconds, partial(encode, i)).result()]
        row += [seconds(partial(query, c, i)) for c in cols]
        if i >= warmup:
            for s, x in zip(samples, row):
                s.append(x)
    return samples


def _kill(procs: list[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def measure(work: Path, ef_kwargs: dict[str, Any], uris: list[str], chunk: int, load: Load, *,
            chroma: Callable[[bool], PathResult] | None = None,
            profile: Callable[[int], Any] | None = None) -> list[PathResult]:
    """``chroma(last_round)`` runs Chroma's side once per round (queries in the last one);
    ``profile(pid)`` starts a recorder (a Popen, e.g. py-spy) on the service for an extra,
    uncounted Kafka ingestion after the rounds; SIGINT ends it."""
    ensure_broker()
    bare = PathResult("bare model")
    emb = PathResult("embedded Client")
    kaf = PathResult("KafkaClient + serve")
    ws = PathResult("websocket (serve gateway)")
    out = [bare, emb, kaf, ws]
    port = free_port()
    svc = ServiceProcess(new_prefix(), work / "svc", extra_env={
        "STREAMER_BATCH_MAX_ITEMS": str(chunk), "STREAMER_BATCH_MAX_WAIT_MS": "50",
        "STREAMER_HTTP_PORT": str(port), "STREAMER_AUTH_TOKENS": TOKENS})
    recorders: list[Any] = []
    chroma_rounds: list[float] = []
    with ExitStack() as stack:
        model = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="bare-model"))
        ef = OpenCLIPEmbeddingFunction(**ef_kwargs)
        loader = ImageLoader()
        images = [im for im in loader(uris) if im is not None]
        tensors = model.submit(lambda: list(ef.preprocess(images))).result()
        model.submit(ef.embed_prepared, tensors[:chunk]).result()
        client = streamer.Client(work / "embedded")
        stack.callback(client.close)
        stack.callback(svc.kill)
        svc.start()
        kc = KafkaClient(BOOTSTRAP, kafka_topic_prefix=svc.prefix)
        stack.callback(kc.close)
        stack.callback(_kill, recorders)
        emb_ef = OpenCLIPEmbeddingFunction(**ef_kwargs)  # the embedded engine runs this instance
        warm(client, emb_ef, uris, chunk)
        warm(kc, OpenCLIPEmbeddingFunction(**ef_kwargs), uris, chunk)
        for r in range(load.rounds):
            bare_s = model.submit(seconds, partial(ef.embed_prepared, tensors)).result()
            bare.rounds.append(len(tensors) / bare_s)
            emb.rounds.append(ingest(client, name(r), emb_ef, uris, chunk))
            kaf.rounds.append(ingest(kc, name(r), OpenCLIPEmbeddingFunction(**ef_kwargs), uris, chunk))
            if chroma is not None:
                result = chroma(r == load.rounds - 1)
                chroma_rounds.append(result.images_per_s or 0.0)
            print(f"  round {r}: images/s " + ", ".join(
                f"{p.name} {p.rounds[-1]:.1f}" for p in (bare, emb, kaf) if p.rounds) +
                (f", Chroma {chroma_rounds[-1]:.1f}" if chroma_rounds else ""), flush=True)
        if profile is not None and svc.proc is not None:
            # One more Kafka ingestion under the sampler, not counted: sampling slows it.
            recorders.append(profile(svc.proc.pid))
            ingest(kc, name(load.rounds), OpenCLIPEmbeddingFunction(**ef_kwargs), uris, chunk)
            for recorder in recorders:
                recorder.send_signal(signal.SIGINT)
                recorder.wait(timeout=60)
        if chroma is not None:
            result.rounds = chroma_rounds
            out.append(result)
        for p in out:
            p.images_per_s = statistics.median(p.rounds) if p.rounds else None
        cols = [client.get_collection(name(0)), kc.get_collection(name(0))]

        def text_query(c: Any, i: int) -> object:
            return c.query(query_texts=[f"a photo of thing {i}"], n_results=5)

        def image_query(c: Any, i: int) -> object:
            return c.query(query_uris=[uris[i % len(uris)]], n_results=5)

        def text_encode(i: int) -> object:
            return ef.embed_texts([f"a photo of thing {i}"])

        def image_encode(i: int) -> object:
            return ef.embed_images([im for im in loader([uris[i % len(uris)]]) if im is not None])

        for kind, n, query, encode in (("text", load.text, text_query, text_encode),
                                       ("image", load.image, image_query, image_encode)):
            samples = interleaved(n, load.warmup, model, encode, query, cols)
            for p, s in zip((bare, emb, kaf), samples):
                setattr(p, f"{kind}_ms", percentiles(s))
        print("  latency done; throughput and websocket", flush=True)
        emb.sequential_qps, emb.concurrent_qps = throughput(cols[0], load, 10**7)
        kaf.sequential_qps, kaf.concurrent_qps = throughput(cols[1], load, 2 * 10**7)
        asyncio.run(websocket(f"http://127.0.0.1:{port}", uris, load, ws))
    return out
