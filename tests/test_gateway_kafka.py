"""The gateway inside a real ``streamer serve`` on the local broker: answers equal the Kafka
client's, live queries fire from the replica, shutdown says GOING_AWAY."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from schemas.events import encode_array, get_event, query_event, write_event
from schemas.records import GetRequest, Op, QueryRequest, WriteItem
from streamer.kafka.client import AsyncKafkaClient
from streamer.testing.gateway import TOKENS, ws_client
from streamer.testing.kafka import ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import free_port
from tests.gateway_helpers import assert_same, decoded

pytestmark = pytest.mark.kafka


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ServiceProcess, str]]:
    ensure_broker()
    port = free_port()
    svc = ServiceProcess(new_prefix(), tmp_path / "svc", instance="gw",
                         extra_env={"STREAMER_HTTP_PORT": str(port), "STREAMER_AUTH_TOKENS": TOKENS})
    await asyncio.to_thread(svc.start)
    try:
        yield svc, f"http://127.0.0.1:{port}"
    finally:
        svc.kill()


async def test_gateway_in_streamer_serve(served: tuple[ServiceProcess, str]) -> None:
    svc, url = served
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    client = await AsyncKafkaClient(kafka_topic_prefix=svc.prefix, wait_writes=True).start()
    try:
        col = await client.create_collection("kgw", embedding_function=None,
                                              metadata={"hnsw:space": "cosine"})
        async with ws_client(url) as ws, aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(url + path) as res:
                    assert res.status == 200, path
            sub = await ws.result({"op": "subscribe", "name": "kgw", "threshold": 2.5,
                                   "embeddings": [encode_array(vectors[0])]})
            for b in range(3):
                ids = [f"r{b * 10 + i}" for i in range(10)]
                await col.add(ids=ids, embeddings=vectors[b * 10:(b + 1) * 10],
                              documents=[f"doc {i}" for i in ids], metadatas=[{"b": b}] * 10)
            pushes: list[dict[str, Any]] = []
            async with asyncio.timeout(30):
                while len(pushes) < 30:
                    pushes.append(await ws.pushes.get())
            # Pushed in commit order (seq); get() lists insertion order, which one call's
            # records spread over partitions need not follow.
            assert sorted(p["id"] for p in pushes) == sorted(f"r{i}" for i in range(30))
            assert {p["subscription"] for p in pushes} == {sub["subscription"]}
            seqs = [p["seq"] for p in pushes]
            assert seqs == sorted(set(seqs))
            for req in [QueryRequest(embeddings=[vectors[3], vectors[17]], n_results=4),
                        QueryRequest(embeddings=[vectors[5]], n_results=3, where={"b": 2},
                                     include=["documents", "embeddings", "distances"])]:
                got = decoded(await ws.result(query_event(col.id, req)))
                assert_same(got, await col.query(query_embeddings=req.embeddings,
                                                 n_results=req.n_results, where=req.where,
                                                 include=req.include))
            greq = GetRequest(where={"b": {"$gte": 1}}, limit=5, offset=2)
            assert_same(decoded(await ws.result(get_event(col.id, greq))),
                        await col.get(where=greq.where, limit=greq.limit, offset=greq.offset))
            # A write through the gateway is read back through it (its own session).
            await ws.result(write_event(Op.ADD, col.id, WriteItem(
                id="via-ws", embedding=vectors[0] * 2, document="socket"), time.time_ns(), 0))
            assert (await ws.result({"op": "get", "name": "kgw", "ids": ["via-ws"]}))["documents"] \
                == ["socket"]
            assert (await ws.pushes.get())["id"] == "via-ws"
            assert await ws.result({"op": "count", "collection": col.id}) == 31
            await asyncio.to_thread(svc.terminate)
            assert await ws.wait_closed() == aiohttp.WSCloseCode.GOING_AWAY
    finally:
        await client.close()
