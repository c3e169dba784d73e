"""The gateway's WebSocket protocol from the client's side, for tests and benchmarks: the
bearer tokens a test gateway accepts, and a client that matches replies to requests by
``correlation_id`` and collects pushes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

TOKEN = "test-token-rw"
TOKENS = f"{TOKEN}:rw:*;reader-token:r:*;docs-only:rw:docs"


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
