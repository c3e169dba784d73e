"""The HTTP/websocket gateway (aiohttp), served by ``streamer serve`` next to the consumers.

Routes: ``/ws`` (requests, replies and live queries; see gateway_ops and gateway_socket),
Chroma's HTTP API v2 under ``/api/v2`` and its ``/openapi.json`` (gateway.chroma_http),
``/search`` (the search page), ``/api/collections`` and ``/api/thumbnail`` (for the page;
thumbnails load a record's URI through its collection's data loader, so the loader's roots
apply), ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus).

The gateway runs over a ``Backend``: the embedded ``Engine`` (``streamer serve --embedded``,
tests) or a ``KafkaBackend`` in the Kafka service, so its answers are the Python client's."""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import ssl
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import SpanKind
from PIL import Image as PILImage
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

import streamer.metrics  # noqa: F401 - registers the service's metrics for /metrics
from consumers.runtime.lifecycle import Component
from schemas.errors import (
    DataLoaderError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    StreamerError,
    URIOutsideRootsError,
    error_to_wire,
)
from schemas.records import CollectionSpec, Image
from streamer import tracing
from streamer.client.backend import Backend
from streamer.gateway.auth import PROTOCOL, Authenticator, Grant, token_from_headers
from streamer.gateway.chroma_http import ChromaAPI
from streamer.gateway.chroma_wire import MAX_BODY
from streamer.gateway.ops import Local, Operations, Resolver
from streamer.gateway.socket import Connection
from streamer.kafka.runtimes import Runtimes
from streamer.settings import Settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
AUTH_FAILURES = Counter("streamer_gateway_auth_failures_total",
                        "Requests refused for a missing or wrong bearer token")
_HTTP_STATUS = {NotFoundError: 404, PermissionDeniedError: 403, URIOutsideRootsError: 403,
                DataLoaderError: 422, InvalidArgumentError: 400}


def _status(exc: StreamerError) -> int:
    for cls in type(exc).__mro__:
        if cls in _HTTP_STATUS:
            return _HTTP_STATUS[cls]
    return 503 if exc.retriable else 500


def server_tls(settings: Settings) -> ssl.SSLContext | None:
    """The gateway's TLS context (https, wss) from ``http_tls_certfile``/``_keyfile``."""
    cert, key = settings.http_tls_certfile, settings.http_tls_keyfile
    if cert is None and key is None:
        return None
    if cert is None:
        raise InvalidArgumentError("http_tls_keyfile needs http_tls_certfile")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgumentError(f"gateway TLS: {exc} (http_tls_certfile={cert}, "
                                   f"http_tls_keyfile={key})") from None
    return context


def thumbnail_png(image: Image, size: int) -> bytes:
    img = PILImage.fromarray(np.asarray(image, dtype=np.uint8))
    img.thumbnail((size, size))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


class Gateway(Component):
    def __init__(self, settings: Settings, backend: Backend, local: Local, *,
                 runtimes: Runtimes | None = None, resolve: Resolver | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.auth = Authenticator(settings.auth_tokens)
        rt = runtimes or Runtimes(local.embed_thread)

        async def runtimes_of(spec: CollectionSpec) -> tuple[Any, Any]:
            return await rt.get(spec.embedding_function), await rt.get(spec.data_loader)
        self.ops = Operations(settings, backend, local, resolve or runtimes_of)
        self.chroma = ChromaAPI(settings, self.ops, self.auth, lambda: self.ready)
        self.connections: set[Connection] = set()
        self.ready = False
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.http_tls_certfile else "http"
        return f"{scheme}://{self.settings.http_host}:{self.port}"

    @property
    def _frame_bytes(self) -> int:
        # A frame carries one event as on Kafka, so it must hold the largest image the
        # limits admit; larger ones are refused by the limits with a typed error.
        return max(self.settings.ws_max_message_bytes, self.settings.max_message_bytes)

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=max(self._frame_bytes,
                                                  self.settings.http_max_body_bytes),
                              middlewares=[_traced])
        app[MAX_BODY] = self.settings.http_max_body_bytes
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        app.router.add_get("/search", self._page)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/collections", self._collections)
        app.router.add_get("/api/thumbnail", self._thumbnail)
        self.chroma.add_routes(app)  # /api/v2/... and /openapi.json
        app.on_shutdown.append(self._close_sockets)
        return app

    # ---- lifecycle ----------------------------------------------------------------
    async def _start(self) -> None:
        if not self.auth.configured:
            log.warning("no STREAMER_AUTH_TOKENS: the gateway refuses every client%s",
                        " but the Chroma HTTP API's anonymous ones (STREAMER_HTTP_ANONYMOUS)"
                        if self.settings.http_anonymous else "")
        elif self.settings.http_anonymous:
            log.warning("STREAMER_HTTP_ANONYMOUS=%s: the Chroma HTTP API serves requests "
                        "without a token", self.settings.http_anonymous)
        self.parts.on_stop(self.ops.close)  # last: after the sockets closed
        # Built on a thread: aiohttp resolves the static directory on disk.
        app = await anyio.to_thread.run_sync(self.make_app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=10.0)
        await self._runner.setup()
        # Stop listening, close sockets with GOING_AWAY (after answering what is in flight).
        self.parts.on_stop(self._runner.cleanup)
        tls = await anyio.to_thread.run_sync(server_tls, self.settings)  # reads the files
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port,
                           ssl_context=tls)
        await site.start()  # e.g. the port is taken: the rollback releases the runner
        self.port = int(self._runner.addresses[0][1])
        self.ready = True
        log.info("gateway listening on %s", self.url)

    async def _stop(self) -> None:
        self.ready = False

    async def _close_sockets(self, app: web.Application) -> None:
        await asyncio.gather(*(c.shutdown() for c in list(self.connections)))

    # ---- auth ---------------------------------------------------------------------
    def _grant(self, request: web.Request) -> Grant:
        grant = self.auth.from_headers(request.headers)
        if grant is None:
            AUTH_FAILURES.inc()
            raise web.HTTPUnauthorized(text="missing or invalid bearer token",
                                       headers={"WWW-Authenticate": 'Bearer realm="streamer"'})
        return grant

    # ---- routes -------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        grant = self._grant(request)
        if not self.ready:
            raise web.HTTPServiceUnavailable(text="shutting down")
        ws = web.WebSocketResponse(protocols=(PROTOCOL,), timeout=10.0, heartbeat=30.0,
                                   max_msg_size=self._frame_bytes)
        await ws.prepare(request)
        conn = Connection(ws, request, grant, self.ops, self.settings)
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
        return ws

    def _check_ops(self, request: web.Request) -> None:
        """``ops_token``, when set, guards what tells an outsider about the process."""
        want = self.settings.ops_token
        given = token_from_headers(request.headers)
        if want is not None and not (given is not None and hmac.compare_digest(
                given.encode(), want.get_secret_value().encode())):
            AUTH_FAILURES.inc()
            raise web.HTTPUnauthorized(text="missing or invalid ops token",
                                       headers={"WWW-Authenticate": 'Bearer realm="streamer-ops"'})

    async def _healthz(self, request: web.Request) -> web.Response:
        self._check_ops(request)
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready" if self.ready else "not ready"},
                                 status=200 if self.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._check_ops(request)
        # The process collector reads /proc: on a thread.
        body = await anyio.to_thread.run_sync(generate_latest, REGISTRY)
        return web.Response(body=body,
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _index(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/search")

    async def _page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "search.html", headers=_PAGE_HEADERS)

    async def _collections(self, request: web.Request) -> web.Response:
        grant = self._grant(request)
        specs = await self.ops.backend.list_collections()
        return web.json_response([{"name": s.name, "id": s.id} for s in specs
                                  if grant.allows("r", s.name)])

    async def _thumbnail(self, request: web.Request) -> web.Response:
        grant = self._grant(request)
        q = request.query
        try:
            size = max(16, min(512, int(q.get("size", "160"))))
        except ValueError:
            raise web.HTTPBadRequest(text="size must be an integer") from None
        try:
            coll = await self.ops.collection({"name": q.get("collection")}, grant, "r")
            if coll.data_loader is None:
                raise NotFoundError(f"Collection [{coll.name}] has no data loader")
            got = await coll.get(ids=[q.get("id", "")], include=["uris"])
            if not got["ids"] or got["uris"][0] is None:
                raise NotFoundError(f"Record [{q.get('id')}] has no URI to show")
            image = (await anyio.to_thread.run_sync(coll.data_loader, [got["uris"][0]]))[0]
            if image is None:
                raise NotFoundError(f"Nothing loaded for record [{q.get('id')}]")
            png = await anyio.to_thread.run_sync(thumbnail_png, image, size)
        except StreamerError as exc:
            return web.json_response(error_to_wire(exc), status=_status(exc))
        return web.Response(body=png, content_type="image/png",
                            headers={"Cache-Control": "private, max-age=300",
                                     "X-Content-Type-Options": "nosniff"})


@web.middleware
async def _traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A SERVER span per HTTP request, in the caller's trace when it sent ``traceparent``
    (what opentelemetry-instrumentation-aiohttp-server does; it has no release for the
    OpenTelemetry line chromadb's pins need)."""
    if not tracing.enabled():
        return await handler(request)
    parent = tracing.extract([(k, v.encode("latin-1")) for k, v in request.headers.items()
                              if k.lower() in ("traceparent", "tracestate")])
    route = request.match_info.route.resource
    name = f"{request.method} {route.canonical if route is not None else request.path}"
    with tracing.span(name, parent=parent, kind=SpanKind.SERVER) as span:
        response = await handler(request)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
        return response


__all__ = ["Gateway", "thumbnail_png"]
