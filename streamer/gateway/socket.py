"""One websocket connection: requests run as tasks (at most ``ws_max_in_flight`` at once, so
a flood waits in TCP instead of in memory) and answer out of order with the request's
``correlation_id``; replies and live pushes go through one bounded send buffer.

A client that does not read is closed with 4008 and a reason once more than
``ws_send_buffer_bytes`` wait while its socket is full (the transport's own buffer is capped by
aiohttp's flow control). A burst (one committed batch's pushes) is taken whole while the socket
still drains, so a reader that keeps up is never cut off; a slow one costs at most the limit
plus one burst. Graceful shutdown answers what is in flight, flushes, then closes with 1001
GOING_AWAY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge, Histogram

from schemas.errors import SchemaError, StreamerError, UnavailableError, error_to_wire
from schemas.events import dumps, loads
from streamer import tracing
from streamer.gateway.auth import Grant
from streamer.gateway.live import Subscription
from streamer.gateway.ops import OPS, Operations
from streamer.settings import Settings

log = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4008  # application range: "policy: you do not read fast enough"
CLOSE_TIMEOUT = 5.0  # for the peer's close reply, then for a stalled socket's buffer

WS_CONNECTIONS = Gauge("streamer_ws_connections", "Open websocket connections")
WS_REQUESTS = Counter("streamer_ws_requests_total", "Websocket requests answered",
                      ["op", "outcome"])
WS_SECONDS = Histogram("streamer_ws_request_seconds", "Websocket request time in the gateway",
                       ["op"])
WS_CLOSES = Counter("streamer_ws_server_closes_total", "Websockets closed by the server",
                    ["reason"])


class Connection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, grant: Grant,
                 ops: Operations, settings: Settings) -> None:
        self.ws = ws
        self.grant = grant
        self.subscriptions: dict[str, Subscription] = {}
        self._transport = request.transport
        self._ops = ops
        self._limit = settings.ws_send_buffer_bytes
        self._slots = asyncio.Semaphore(settings.ws_max_in_flight)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._draining = False
        self._finished = False

    @property
    def queued_bytes(self) -> int:
        return self._queued

    @property
    def closing(self) -> bool:
        return self._closer is not None

    async def run(self) -> None:
        WS_CONNECTIONS.inc()
        self._sender = asyncio.create_task(self._send_loop(), name="ws-send")
        try:
            async for msg in self.ws:
                if self.closing:
                    break
                if msg.type is WSMsgType.TEXT:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(msg.data))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif msg.type is WSMsgType.BINARY:
                    self._reply(None, SchemaError("Binary frames are not supported: send JSON "
                                                  "text frames"))
        finally:
            await self._teardown()
            WS_CONNECTIONS.dec()

    async def _handle(self, raw: str) -> None:
        started = time.perf_counter()
        corr: Any = None
        label = "invalid"
        try:
            ev = loads(raw.encode())
            corr = ev.get("correlation_id")
            label = ev["op"] if ev.get("op") in OPS else "unknown"
            if self._draining:
                raise UnavailableError("The server is shutting down; retry on another one")
            with tracing.span(f"ws {label}", parent=tracing.extract_text(ev.get("traceparent")),
                              kind=SpanKind.SERVER):
                result = await self._ops.dispatch(ev, self)
        except Exception as exc:  # every failure is a typed error reply; the socket goes on
            if not isinstance(exc, StreamerError):
                log.exception("websocket request failed")
            self._reply(corr, exc)
            WS_REQUESTS.labels(label, "error").inc()
        else:
            self.push({"correlation_id": corr, "ok": True, "result": result})
            WS_REQUESTS.labels(label, "ok").inc()
        finally:
            self._slots.release()
            WS_SECONDS.labels(label).observe(time.perf_counter() - started)

    def _reply(self, corr: Any, exc: BaseException) -> None:
        self.push({"correlation_id": corr, "ok": False, "error": error_to_wire(exc)})

    # ---- sending ------------------------------------------------------------------
    def push(self, payload: dict[str, Any]) -> None:
        """Queue one frame (from any task or a live-query callback on the loop)."""
        if self.closing or self._finished:
            return
        data = dumps(payload)
        if self._queued and self._queued + len(data) > self._limit and self._stalled():
            log.warning("closing a slow websocket client: %d bytes unsent", self._queued)
            self.close_soon(CLOSE_SLOW_CONSUMER,
                            f"slow consumer: more than {self._limit} bytes unread", "slow_consumer")
            return
        self._queued += len(data)
        self._queue.put_nowait(data)

    def _stalled(self) -> bool:
        """The kernel's send buffer is full: the peer is not taking what we already sent."""
        t = self._transport
        return t is None or t.is_closing() or t.get_write_buffer_size() > 0

    async def _send_loop(self) -> None:
        while True:
            data = await self._queue.get()
            try:
                await self.ws.send_frame(data, WSMsgType.TEXT)
            except ConnectionError:
                return  # the peer is gone; the read loop ends on its own
            finally:
                self._queued -= len(data)
                self._queue.task_done()

    # ---- closing ------------------------------------------------------------------
    def close_soon(self, code: int, reason: str, label: str) -> asyncio.Task[None]:
        if self._closer is None:
            WS_CLOSES.labels(label).inc()
            self._closer = asyncio.create_task(self._close(code, reason), name="ws-close")
        return self._closer

    async def _close(self, code: int, reason: str) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        # drain=False: a stalled peer would block the drain forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT * 2):
                await self.ws.close(code=code, message=reason.encode()[:120], drain=False)
        if self._transport is not None:
            # Give a slow reader time to take its buffered frames and the close; then drop it.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._transport.abort)

    async def shutdown(self) -> None:
        """Answer the requests in flight, flush, then close with GOING_AWAY."""
        self._draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
                await self._queue.join()
        await self.close_soon(WSCloseCode.GOING_AWAY, "server shutting down", "shutdown")

    async def _teardown(self) -> None:
        self._finished = True
        for sub in self.subscriptions.values():
            self._ops.live.unsubscribe(sub)
        self.subscriptions.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._closer is not None:
            await self._closer
        elif self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
