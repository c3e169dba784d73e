"""A small websocket client for the gateway's frames, and an in-process gateway over the
embedded engine (shared by tests/test_gateway.py, tests/test_search_page.py and the
gateway benchmark)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from consumers.write.batch import BatchConfig
from schemas.events import decode_array, decode_result
from schemas.records import CollectionSpec
from streamer.client.engine import Engine
from streamer.gateway.app import Gateway
from streamer.kafka.runtimes import Runtimes
from streamer.settings import Settings
from tests.helpers import HashEmbedding

TOKEN = "test-token-rw"
TOKENS = f"{TOKEN}:rw:*;reader-token:r:*;docs-only:rw:docs"


class SlowEmbedding(HashEmbedding):
    """HashEmbedding that takes ``delay`` seconds per call, as a model would."""

    def __init__(self, delay: float, dim: int = 16) -> None:
        super().__init__(dim)
        self.delay = delay

    def __call__(self, input: Sequence[Any]) -> list[np.ndarray]:
        time.sleep(self.delay)
        return super().__call__(input)


class WsClient:
    """Sends frames with a fresh ``correlation_id`` and matches replies to them; pushes
    (frames with an ``event``) collect in ``pushes``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: list[dict[str, Any]] = []  # every reply, in arrival order
        self.uncorrelated: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.close_code: int | None = None
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            if "event" in frame:
                self.pushes.put_nowait(frame)
                continue
            self.replies.append(frame)
            fut = self._waiting.pop(frame.get("correlation_id"), None)
            if fut is not None:
                fut.set_result(frame)
            else:
                self.uncorrelated.put_nowait(frame)
        self.close_code = self.ws.close_code

    async def send(self, payload: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        corr = payload.setdefault("correlation_id", f"c{next(self._ids)}")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = fut
        await self.ws.send_str(orjson.dumps({"v": 1, **payload}).decode())
        return fut

    async def call(self, payload: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """The whole reply frame: ``{"correlation_id", "ok", "result"|"error", "v"}``."""
        return await asyncio.wait_for(await self.send(payload), timeout)

    async def result(self, payload: dict[str, Any]) -> Any:
        reply = await self.call(payload)
        assert reply["ok"], reply
        return reply["result"]

    async def wait_closed(self, timeout: float = 30) -> int | None:
        """Wait for the server to close the socket; its close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


@asynccontextmanager
async def ws_client(url: str, token: str | None = TOKEN,
                    session: aiohttp.ClientSession | None = None) -> AsyncIterator[WsClient]:
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        ws = await session.ws_connect(f"{url}/ws", headers=headers, protocols=("streamer.v1",),
                                      max_msg_size=64 << 20)
        client = WsClient(ws)
        try:
            yield client
        finally:
            await client.close()
    finally:
        if own:
            await session.close()


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"http_host": "127.0.0.1", "http_port": 0, "auth_tokens": TOKENS}
    return Settings(**{**base, **overrides})


@asynccontextmanager
async def embedded_gateway(path: Path, embedder: Any, *, by_name: dict[str, Any] | None = None,
                           batch: BatchConfig | None = None,
                           **overrides: Any) -> AsyncIterator[tuple[Engine, Gateway]]:
    """An engine and a gateway on 127.0.0.1:<free port>. Collections embed with ``embedder``
    (or ``by_name[collection]``): a test double cannot travel in a collection spec, so the
    gateway is told; data loaders are rebuilt from the spec as in production."""
    async with Engine(path, fsync=False, batch=batch) as engine:
        runtimes = Runtimes(engine.embed_thread)

        async def resolve(spec: CollectionSpec) -> tuple[Any, Any]:
            return (by_name or {}).get(spec.name, embedder), await runtimes.get(spec.data_loader)

        async with Gateway(settings(**overrides), engine, engine, resolve=resolve) as gateway:
            yield engine, gateway


def _arrays(value: Any) -> Any:
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return None if value is None else decode_array(value)


def decoded(result: dict[str, Any]) -> dict[str, Any]:
    result = decode_result(result)
    if result.get("data") is not None:
        result["data"] = _arrays(result["data"])
    return result


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key in ("embeddings", "data") and value is not None:
            assert len(got[key]) == len(value)
            for g, w in zip(got[key], value):
                if isinstance(w, list):  # query data: per query, per hit (None without a URI)
                    assert [x is None for x in g] == [x is None for x in w]
                    g, w = [x for x in g if x is not None], [x for x in w if x is not None]
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        elif key == "distances" and value is not None:
            np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(value, dtype=float),
                                       atol=1e-6)
        else:
            assert got[key] == value, key
