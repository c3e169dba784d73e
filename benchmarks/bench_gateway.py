"""Websocket gateway: text-query latency next to the same query through the Python client,
and concurrent-query throughput with query micro-batching vs one model call per query.

    python -m benchmarks.bench_gateway --records 2000 --queries 128 --concurrency 32

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
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from anyio.from_thread import start_blocking_portal

import streamer
from benchmarks.common import machine, percentiles
from consumers.embedding.models import BUILTIN_MODELS
from schemas.records import CollectionSpec
from streamer.client.engine import Engine
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.gateway.app import Gateway
from streamer.settings import Settings
from streamer.testing.gateway import TOKEN, TOKENS, WsClient, ws_client


@asynccontextmanager
async def serving(path: Path, ef: OpenCLIPEmbeddingFunction, records: int
                  ) -> AsyncIterator[tuple[streamer.AsyncCollection, list[str]]]:
    async def resolve(spec: CollectionSpec) -> tuple[Any, Any]:
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


async def client_query(col: streamer.AsyncCollection, text: str) -> float:
    """One query through the Python client, timed on the server's loop."""
    t0 = time.perf_counter()
    await col.query(query_texts=[text], n_results=5)
    return time.perf_counter() - t0


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


async def ws_query(ws: WsClient, text: str) -> float:
    t0 = time.perf_counter()
    await ws.result(frame(text))
    return time.perf_counter() - t0


async def ws_throughput(url: str, texts: list[str], concurrency: int, sockets: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(ws_client(url, TOKEN)) for _ in range(sockets)]

        async def one(i: int, t: str) -> None:
            async with sem:
                await clients[i % sockets].result(frame(t))

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="ViT-B-32",
                        help="used (random weights) when streamer-tiny has no checkpoint")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 avoids oversubscription on a busy box")
    args = parser.parse_args()
    tiny = BUILTIN_MODELS["streamer-tiny"].checkpoint_path.exists()
    model = "streamer-tiny" if tiny else args.model
    ef = OpenCLIPEmbeddingFunction(model, None if tiny else "random", num_threads=args.threads)
    ef.load()
    texts = [f"a photo of thing number {i}" for i in range(args.queries)]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp, \
            start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(serving(Path(tmp), ef, args.records)) as (col, urls):
        async def measure() -> tuple[list[float], list[float], float, float, float]:
            # Interleaved (client, socket, client, ...) and alternating rounds, best of each:
            # load from other processes then hits every path alike.
            py_lat, ws_lat = [], []
            async with ws_client(urls[0], TOKEN) as ws:
                for i, t in enumerate(texts[:10] + texts):
                    py = await asyncio.to_thread(portal.call, client_query, col, t)
                    sock = await ws_query(ws, t)
                    if i >= 10:  # the first ten warm up
                        py_lat.append(py)
                        ws_lat.append(sock)
            py_rate = batched = unbatched = 0.0
            for _ in range(args.rounds):
                py_rate = max(py_rate, await asyncio.to_thread(
                    portal.call, client_throughput, col, texts, args.concurrency))
                batched = max(batched, await ws_throughput(urls[0], texts, args.concurrency,
                                                           args.sockets))
                unbatched = max(unbatched, await ws_throughput(urls[1], texts, args.concurrency,
                                                               args.sockets))
            return py_lat, ws_lat, py_rate, batched, unbatched

        py_lat, ws_lat, py_rate, batched, unbatched = asyncio.run(measure())
    py50, py99 = percentiles(py_lat)
    ws50, ws99 = percentiles(ws_lat)
    print(f"\nmachine: {machine()}; model {model}{'' if tiny else ' (random weights)'}; "
          f"{args.records} records; {args.queries} text queries, n_results=5; "
          f"torch threads {args.threads or 'default'}")
    print("| path | text query p50 ms | p99 ms | queries/s |")
    print("|---|---|---|---|")
    print(f"| Python client (embedded), one at a time | {py50:.2f} | {py99:.2f} | "
          f"{len(py_lat) / sum(py_lat):.1f} |")
    print(f"| websocket gateway, one at a time | {ws50:.2f} | {ws99:.2f} | "
          f"{len(ws_lat) / sum(ws_lat):.1f} |")
    print(f"| Python client, {args.concurrency} concurrent (no query batching) | | | {py_rate:.1f} |")
    print(f"| websocket, {args.concurrency} in flight over {args.sockets} sockets, one model call "
          f"per query | | | {unbatched:.1f} |")
    print(f"| websocket, {args.concurrency} in flight over {args.sockets} sockets, micro-batched "
          f"| | | {batched:.1f} |")


if __name__ == "__main__":
    main()
