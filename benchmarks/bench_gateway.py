"""Websocket gateway: text-query latency next to the same query through the Python client,
and concurrent-query throughput with query micro-batching vs one model call per query.

    python -m benchmarks.bench_gateway --records 2000 --queries 200 --concurrency 64

The engine and two gateways (micro-batching on, and off: ``batch_max_items=1``) run on one
event loop in a server thread; the websocket clients run on the main thread's loop, as a
separate program would. Uses the trained streamer-tiny if its checkpoint exists, else the
given open_clip model with random weights (same compute, meaningless ranking). Prints a
table; every figure is measured here."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from anyio.from_thread import start_blocking_portal

import streamer
from benchmarks.common import machine, percentiles
from consumers.models import BUILTIN_MODELS
from schemas.records import CollectionSpec
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.engine import Engine
from streamer.gateway import Gateway
from streamer.settings import Settings
from tests.gateway_helpers import TOKEN, TOKENS, WsClient, ws_client


@asynccontextmanager
async def serving(path: Path, ef: OpenCLIPEmbeddingFunction, records: int
                  ) -> AsyncIterator[tuple[streamer.AsyncCollection, list[str]]]:
    def resolve(spec: CollectionSpec) -> tuple[Any, Any]:
        return ef, None

    async with Engine(path, fsync=False) as engine:
        col = await streamer.AsyncClient(backend=engine).create_collection("bench", embedding_function=ef)
        dim = len(ef(["probe"])[0])
        rng = np.random.default_rng(0)
        for start in range(0, records, 500):
            n = min(500, records - start)
            await col.add(ids=[f"r{start + i}" for i in range(n)],
                          embeddings=rng.standard_normal((n, dim)).astype(np.float32),
                          documents=[f"record {start + i}" for i in range(n)])
        urls = []
        gateways = []
        for items in (64, 1):
            gw = Gateway(Settings(http_port=0, auth_tokens=TOKENS, batch_max_items=items,
                                  ws_max_in_flight=1024), engine, engine, resolve=resolve)
            await gw.start()
            gateways.append(gw)
            urls.append(gw.url)
        try:
            yield col, urls
        finally:
            for gw in gateways:
                await gw.stop()


async def client_latency(col: streamer.AsyncCollection, texts: list[str]) -> list[float]:
    samples = []
    for t in texts:
        t0 = time.perf_counter()
        await col.query(query_texts=[t], n_results=5)
        samples.append(time.perf_counter() - t0)
    return samples


async def client_throughput(col: streamer.AsyncCollection, texts: list[str], concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(t: str) -> None:
        async with sem:
            await col.query(query_texts=[t], n_results=5)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(t) for t in texts))
    return len(texts) / (time.perf_counter() - t0)


def frame(text: str) -> dict[str, Any]:
    return {"op": "query", "name": "bench", "texts": [text], "n_results": 5}


async def ws_latency(ws: WsClient, texts: list[str]) -> list[float]:
    samples = []
    for t in texts:
        t0 = time.perf_counter()
        await ws.result(frame(t))
        samples.append(time.perf_counter() - t0)
    return samples


async def ws_throughput(url: str, texts: list[str], concurrency: int, sockets: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with ws_client(url, TOKEN) as first:
        clients = [first]
        extra = [ws_client(url, TOKEN) for _ in range(sockets - 1)]
        clients += [await c.__aenter__() for c in extra]
        try:
            async def one(i: int, t: str) -> None:
                async with sem:
                    await clients[i % sockets].result(frame(t))

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
            return len(texts) / (time.perf_counter() - t0)
        finally:
            for c in extra:
                await c.__aexit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--model", default="ViT-B-32",
                        help="used (random weights) when streamer-tiny has no checkpoint")
    args = parser.parse_args()
    tiny = BUILTIN_MODELS["streamer-tiny"].checkpoint_path.exists()
    model = "streamer-tiny" if tiny else args.model
    ef = OpenCLIPEmbeddingFunction(model)
    ef.load()
    texts = [f"a photo of thing number {i}" for i in range(args.queries)]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, \
            start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(serving(Path(tmp), ef, args.records)) as (col, urls):
        portal.call(client_latency, col, texts[:10])  # warm up
        py_lat = portal.call(client_latency, col, texts)
        py_rate = portal.call(client_throughput, col, texts, args.concurrency)

        async def over_websockets() -> tuple[list[float], float, float]:
            async with ws_client(urls[0], TOKEN) as ws:
                await ws_latency(ws, texts[:10])
                lat = await ws_latency(ws, texts)
            batched = await ws_throughput(urls[0], texts, args.concurrency, args.sockets)
            unbatched = await ws_throughput(urls[1], texts, args.concurrency, args.sockets)
            return lat, batched, unbatched

        ws_lat, batched, unbatched = asyncio.run(over_websockets())
    py50, py99 = percentiles(py_lat)
    ws50, ws99 = percentiles(ws_lat)
    print(f"\nmachine: {machine()}; model {model}{'' if tiny else ' (random weights)'}; "
          f"{args.records} records; {args.queries} text queries, n_results=5")
    print("| path | text query p50 ms | p99 ms | queries/s |")
    print("|---|---|---|---|")
    print(f"| Python client (embedded), one at a time | {py50:.2f} | {py99:.2f} | "
          f"{1000 / max(py50, 1e-9):.0f} |")
    print(f"| websocket gateway, one at a time | {ws50:.2f} | {ws99:.2f} | {1000 / max(ws50, 1e-9):.0f} |")
    print(f"| Python client, {args.concurrency} concurrent (no query batching) | | | {py_rate:.0f} |")
    print(f"| websocket, {args.concurrency} in flight over {args.sockets} sockets, one model call "
          f"per query | | | {unbatched:.0f} |")
    print(f"| websocket, {args.concurrency} in flight over {args.sockets} sockets, micro-batched "
          f"| | | {batched:.0f} |")


if __name__ == "__main__":
    main()
