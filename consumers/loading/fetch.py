"""Fetching remote images: object stores through obstore, http(s) through aiohttp with an
address guard. All requests of a process run on one event loop thread of their own, so the
loaders' callers (loader threads, the CLI, the embedded client) stay synchronous and nothing
blocks a caller's event loop; a process-wide semaphore bounds the requests in flight.

Caps are enforced while streaming: a declared size over ``max_bytes`` is refused before the
body is read, a body that keeps coming is cut at the cap, and the image header is probed as
bytes arrive so a picture over ``max_pixels`` is dropped as soon as its size is known."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import random
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import obstore
from aiohttp.abc import AbstractResolver, ResolveResult
from obstore.exceptions import BaseError as StoreError
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import AzureStore, GCSStore, S3Store
from PIL import Image as PILImage

from consumers.loading.remote import (
    HTTP_SCHEMES,
    IPNetwork,
    RemotePolicy,
    forbidden_address,
    redact,
    scheme_of,
    split_store_uri,
)
from schemas.errors import FetchError, LimitExceededError, StreamerError, URINotAllowedError

T = TypeVar("T")
MAX_REDIRECTS = 5
_CHUNK = 256 << 10
_PROBE_LIMIT = 4 << 20  # stop probing for the image header past this many bytes
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_S = 0.2


class _FetchLoop:
    """The process's fetch loop: a daemon thread running one asyncio loop."""

    def __init__(self, max_in_flight: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.max_in_flight = max_in_flight
        self.slots = asyncio.Semaphore(max_in_flight)
        threading.Thread(target=self.loop.run_forever, name="fetch-loop", daemon=True).start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


_lock = threading.Lock()
_loop: _FetchLoop | None = None
_process_limit = 64


def set_process_limit(max_in_flight: int) -> None:
    """Bound the requests in flight in this process (all loaders together); call it before
    the first fetch (``streamer serve`` does, from ``STREAMER_REMOTE_MAX_IN_FLIGHT``)."""
    global _process_limit
    with _lock:
        _process_limit = max_in_flight
        if _loop is not None and _loop.max_in_flight != max_in_flight:
            _loop.slots = asyncio.Semaphore(max_in_flight)
            _loop.max_in_flight = max_in_flight


def fetch_loop() -> _FetchLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = _FetchLoop(_process_limit)
        return _loop


class _Forbidden(OSError):
    """Raised by the resolver so aiohttp never connects to the address."""


class _GuardedResolver(AbstractResolver):
    """DNS answers are checked before aiohttp connects, and it connects to exactly the
    checked addresses: a name cannot be re-resolved to another address in between."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allowed = allowed

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        for info in infos:
            if forbidden_address(ipaddress.ip_address(info["host"]), self._allowed):
                raise _Forbidden(f"{host} resolves to {info['host']}, a non-public address")
        return infos

    async def close(self) -> None:
        await self._inner.close()


class _Capped:
    """Collects a streamed body under the byte cap, probing the image header on the way."""

    def __init__(self, uri: str, max_bytes: int, max_pixels: int) -> None:
        self.uri, self.max_bytes, self.max_pixels = uri, max_bytes, max_pixels
        self.buf = bytearray()
        self._next_probe = 1024
        self._known = False

    def check_declared(self, size: int | None) -> None:
        if size is not None and size > self.max_bytes:
            raise LimitExceededError(f"Image {redact(self.uri)} is {size} bytes, over the limit "
                                     f"of {self.max_bytes}")

    def add(self, chunk: bytes | memoryview) -> None:
        self.buf += chunk
        if len(self.buf) > self.max_bytes:
            raise LimitExceededError(f"Image {redact(self.uri)} is over the limit of "
                                     f"{self.max_bytes} bytes (stopped reading)")
        if not self._known and self._next_probe <= len(self.buf) <= _PROBE_LIMIT:
            self._next_probe = len(self.buf) * 4
            self._probe()

    def _probe(self) -> None:
        try:
            with PILImage.open(io.BytesIO(self.buf)) as img:
                width, height = img.size
        except PILImage.DecompressionBombError:  # far bigger than any sane cap
            raise LimitExceededError(
                f"Image {redact(self.uri)} has more pixels than the limit of {self.max_pixels} "
                f"(stopped reading)") from None
        except Exception:  # header not complete yet, or not an image: the decoder will say
            return
        self._known = True
        if width * height > self.max_pixels:
            raise LimitExceededError(f"Image {redact(self.uri)} has {width * height} pixels, "
                                     f"over the limit of {self.max_pixels} (stopped reading)")


def _close_sessions(sessions: list[aiohttp.ClientSession]) -> None:
    while sessions:
        fetch_loop().submit(sessions.pop().close())


class _Retry(Exception):
    """A failure worth another attempt (timeouts, connection errors, 5xx, 429)."""


class Fetcher:
    """Remote reads for one loader configuration: its policy, object stores and session."""

    def __init__(self, policy: RemotePolicy, max_bytes: int, max_pixels: int) -> None:
        self.policy, self.max_bytes, self.max_pixels = policy, max_bytes, max_pixels
        self._networks = policy.networks()
        self._stores: dict[str, Any] = {}
        self._sessions: list[aiohttp.ClientSession] = []  # at most one, shared with finalize
        self._slots: asyncio.Semaphore | None = None
        # Loaders are dropped with their collection, not closed: the session closes then.
        weakref.finalize(self, _close_sessions, self._sessions)

    def submit(self, uri: str) -> Future[bytes]:
        """Start fetching; the allow-list is checked here so a refusal costs no request."""
        self.policy.check(uri)
        return fetch_loop().submit(self._fetch(uri))

    async def _fetch(self, uri: str) -> bytes:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.policy.max_in_flight)
        loop = fetch_loop()
        async with self._slots, loop.slots:
            scheme = self.policy.check(uri)
            if scheme in HTTP_SCHEMES:
                return await self._retrying(uri, self._http)
            return await self._store_get(uri)

    async def _retrying(self, uri: str, attempt: Callable[[str], Awaitable[bytes]]) -> bytes:
        attempts = 0
        while True:
            try:
                async with asyncio.timeout(self.policy.timeout_s):
                    return await attempt(uri)
            except TimeoutError:
                reason = f"timed out after {self.policy.timeout_s:g} s"
            except _Retry as exc:
                reason = str(exc)
            attempts += 1
            if attempts > self.policy.retries:
                raise FetchError(f"Could not fetch {redact(uri)}: {reason} ({attempts} attempts)")
            await asyncio.sleep(_BACKOFF_S * 2 ** (attempts - 1) * random.uniform(0.5, 1.5))

    def _http_session(self) -> aiohttp.ClientSession:
        if not self._sessions:
            connector = aiohttp.TCPConnector(resolver=_GuardedResolver(self._networks),
                                             limit=self.policy.max_in_flight)
            # trust_env off: a proxy from the environment would do the resolving instead
            self._sessions.append(aiohttp.ClientSession(connector=connector, trust_env=False,
                                                        auto_decompress=False))
        return self._sessions[0]

    def _check_literal(self, url: str) -> None:
        host = urlsplit(url).hostname or ""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if forbidden_address(ip, self._networks):
            raise URINotAllowedError(f"{redact(url)} points at {ip}, a non-public address")

    async def _http(self, uri: str) -> bytes:
        session, url = self._http_session(), uri
        for _ in range(MAX_REDIRECTS + 1):
            if scheme_of(url) not in HTTP_SCHEMES:
                raise URINotAllowedError(f"{redact(uri)} redirects off http(s): {redact(url)}")
            self.policy.check(url)
            self._check_literal(url)
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        location = resp.headers.get("Location")
                        if not location:
                            raise FetchError(f"{redact(url)}: redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    if resp.status in _RETRY_STATUS:
                        raise _Retry(f"HTTP {resp.status}")
                    if resp.status >= 300:
                        raise FetchError(f"Could not fetch {redact(url)}: HTTP {resp.status}")
                    sink = _Capped(uri, self.max_bytes, self.max_pixels)
                    sink.check_declared(resp.content_length)
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        sink.add(chunk)
                    return bytes(sink.buf)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Forbidden):
                    raise URINotAllowedError(f"{redact(url)}: {exc.os_error}") from None
                raise _Retry(f"cannot connect to {exc.host}:{exc.port}") from None
            except aiohttp.InvalidURL as exc:
                raise URINotAllowedError(f"Invalid URL {redact(url)}: {type(exc).__name__}") \
                    from None
            except aiohttp.ClientError as exc:
                raise _Retry(type(exc).__name__) from None
        raise FetchError(f"{redact(uri)}: more than {MAX_REDIRECTS} redirects")

    def _store(self, base: str) -> Any:
        store = self._stores.get(base)
        if store is not None:
            return store
        scheme = base.partition("://")[0]
        options = dict(self.policy.stores.get("az" if scheme.startswith("abfs") else scheme, {}))
        client: dict[str, Any] = {"timeout": timedelta(seconds=self.policy.timeout_s),
                                  "connect_timeout": timedelta(seconds=self.policy.timeout_s)}
        if options.pop("allow_http", "false").lower() in ("1", "true", "yes"):
            client["allow_http"] = True
        retry: dict[str, Any] = {"max_retries": self.policy.retries,
                                 "retry_timeout": timedelta(seconds=self.policy.timeout_s * 2),
                                 "backoff": {"init_backoff": timedelta(seconds=_BACKOFF_S)}}
        kind: Any = {"s3": S3Store, "gs": GCSStore}.get(scheme, AzureStore)
        try:
            store = kind.from_url(base, config=options, client_options=client,
                                  retry_config=retry)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a missing setting can panic in Rust (PanicException)
            raise FetchError(f"Cannot open {base}: {type(exc).__name__} (check the store's "
                             f"options and environment)") from None
        self._stores[base] = store
        return store

    async def _store_get(self, uri: str) -> bytes:
        base, path = split_store_uri(uri)
        budget = self.policy.timeout_s * (self.policy.retries + 1)
        try:
            async with asyncio.timeout(budget):
                result = await obstore.get_async(self._store(base), path)
                meta = result.meta
                sink = _Capped(uri, self.max_bytes, self.max_pixels)
                sink.check_declared(meta["size"])
                async for chunk in result.stream(min_chunk_size=_CHUNK):
                    sink.add(memoryview(chunk))
                return bytes(sink.buf)
        except StreamerError:
            raise
        except TimeoutError:
            raise FetchError(f"Could not fetch {redact(uri)}: timed out after {budget:g} s") \
                from None
        except FileNotFoundError:
            raise FetchError(f"Could not fetch {redact(uri)}: not found") from None
        except (PermissionDeniedError, UnauthenticatedError):
            raise FetchError(f"Could not fetch {redact(uri)}: access denied") from None
        except (StoreError, ValueError, OSError) as exc:
            # obstore's messages can quote request details: name only the kind of failure
            text = str(exc).lower()
            kind = ("connection failed" if "connect" in text else "timed out"
                    if "timed out" in text or "timeout" in text else type(exc).__name__)
            raise FetchError(f"Could not fetch {redact(uri)}: {kind}") from None
