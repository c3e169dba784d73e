"""``streamer serve`` run inside the test process, so blockbuster (tests/conftest.py) watches
its event loop: the writer, the replica, the reader, the gateway and the async Kafka client
all share this test's loop, and any blocking call from our code on it fails the test. Covers
a server-side model and loader (URIs decoded by the service), include=["data"] (decoded by
the client), admin calls while the replica installs specs, and the HTTP endpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import aiohttp
import numpy as np
import pytest

from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import AsyncKafkaClient
from streamer.kafka.service import Service
from streamer.server import service_gateway
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ensure_broker, new_prefix
from tests.helpers import random_image, write_png

pytestmark = pytest.mark.kafka


async def test_service_gateway_and_async_client_never_block_the_loop(tmp_path: Path) -> None:
    ensure_broker()
    photos = tmp_path / "photos"
    photos.mkdir()
    images = {f"p{i}": random_image(200 + i, size=64) for i in range(6)}
    uris = {k: write_png(photos / f"{k}.png", v) for k, v in images.items()}
    settings = Settings.from_env(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=new_prefix(),
                                 data_dir=str(tmp_path / "svc"), http_port=0,
                                 auth_tokens="tok:rw:*", kafka_partitions=2)
    async with Service(settings) as service, service_gateway(settings, service) as gateway, \
            AsyncKafkaClient(settings=settings, wait_writes=True) as client:
        col = await client.create_collection(
            "photos", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"),
            data_loader=ImageLoader(roots=[photos]), metadata={"kind": "photos"})
        await col.add(ids=list(uris), uris=list(uris.values()))
        await col.add(ids=["t0"], documents=["a red circle"])
        assert await col.count() == 7
        got = await col.get(ids=["p3", "t0"], include=["data", "uris", "documents"])
        np.testing.assert_array_equal(got["data"][0], images["p3"])
        assert got["data"][1] is None and got["documents"] == [None, "a red circle"]
        res = await col.query(query_images=[images["p1"]], n_results=1,
                              include=["data", "distances"])
        assert res["ids"] == [["p1"]]
        np.testing.assert_array_equal(res["data"][0][0], images["p1"])

        # Admin calls and listings while the replica applies the specs they publish.
        async def churn(i: int) -> None:
            other = await client.create_collection(f"churn{i}", embedding_function=None)
            await other.modify(name=f"renamed{i}", metadata={"i": i})
            await client.delete_collection(f"renamed{i}")

        async def listing() -> int:
            seen = 0
            for _ in range(20):
                names = [c.name for c in await client.list_collections()]
                assert "photos" in names
                seen += len(names)
            return seen

        results = await asyncio.gather(*(churn(i) for i in range(4)), listing())
        assert cast(int, results[-1]) >= 20  # listing()'s; gather types every result int | None
        assert [c.name for c in await client.list_collections()] == ["photos"]
        assert [s.spec.name for s in service.catalog.collections.values()] == ["photos"]

        async with aiohttp.ClientSession(headers={"Authorization": "Bearer tok"}) as http:
            for path in ("/healthz", "/readyz", "/metrics", "/api/collections"):
                async with http.get(f"{gateway.url}{path}") as reply:
                    assert reply.status == 200, path
            async with http.get(f"{gateway.url}/api/thumbnail",
                                params={"collection": "photos", "id": "p2"}) as reply:
                assert reply.status == 200 and reply.content_type == "image/png"
