"""The load stage: Chroma's data loader protocol (``DataLoader``; ``load_images`` runs one on a
worker thread) and ``ImageLoader``, its implementation (``__call__(uris)``) with
concurrent reads, ``file://`` URIs, confinement to configured roots, and remote URIs
(``s3://``, ``gs://``, ``az://``/``abfs://``, ``http(s)://``) when its remote policy allows
them (``consumers/loading/remote.py``, fetched by ``consumers/loading/fetch.py``)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
import anyio.to_thread
import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from consumers.loading.fetch import Fetcher
from consumers.loading.remote import RemotePolicy, redact, scheme_of
from schemas.errors import DataLoaderError, LimitExceededError, URIOutsideRootsError
from schemas.records import Image

NO_LOADER = "You must set a data loader on the collection if loading from URIs."
#: Chroma's data loader protocol: URIs in, an image (or nothing) for each out.
DataLoader = Callable[[Sequence[str | None]], Sequence[Image | None]]


async def load_images(loader: DataLoader | None, uris: Sequence[str]) -> list[Image]:
    """Load URIs through a data loader on a worker thread; every URI must give an image."""
    if loader is None:
        raise DataLoaderError(NO_LOADER)
    images: list[Image] = []
    for uri, image in zip(uris, await anyio.to_thread.run_sync(loader, list(uris))):
        if image is None:
            raise DataLoaderError(f"Data loader returned nothing for {uri}")
        images.append(image)
    return images


def uri_to_path(uri: str) -> Path:
    if "\x00" in uri:
        raise DataLoaderError(f"URI contains a NUL byte: {uri!r}")
    if uri.startswith("file:"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise DataLoaderError(f"Only local file:// URIs are supported, got {uri}")
        path = unquote(parsed.path)
        if "\x00" in path:  # %00: the OS would cut the path there
            raise DataLoaderError(f"URI contains a NUL byte: {uri!r}")
        return Path(path)
    if "://" in uri:
        raise DataLoaderError(f"Unsupported URI scheme: {redact(uri)}")
    return Path(uri)


class ImageLoader:
    """Loads images by local path or ``file://`` URI into RGB numpy arrays.

    With ``roots`` set, a URI is read only if its real path (``..`` and symlinks resolved)
    lies under one of them; anything else raises ``URIOutsideRootsError``. ``remote`` (see
    ``RemotePolicy``: ``allow`` prefixes, ``stores`` options, ``allow_networks``,
    ``timeout_s``, ``retries``, ``max_in_flight``) switches remote URIs on; without it every
    remote URI is refused."""

    def __init__(self, max_workers: int = os.cpu_count() or 2,
                 roots: Sequence[str | os.PathLike[str]] | None = None,
                 max_pixels: int = 64_000_000, max_bytes: int = 64 << 20,
                 remote: Mapping[str, Any] | None = None) -> None:
        self._max_workers = max_workers
        self.roots = None if roots is None else [Path(r).resolve() for r in roots]
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.remote = RemotePolicy.from_config(remote)
        self._fetcher: Fetcher | None = None
        self._fetcher_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="loader")

    @staticmethod
    def name() -> str:
        return "image_loader"

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "max_workers": self._max_workers,
            "roots": None if self.roots is None else [str(r) for r in self.roots],
            "max_pixels": self.max_pixels, "max_bytes": self.max_bytes}
        remote = self.remote.to_config()
        if remote is not None:  # absent when off: specs written before remote URIs stay equal
            config["remote"] = remote
        return config

    @classmethod
    def build_from_config(cls, config: dict[str, Any]) -> ImageLoader:
        return cls(**config)

    def resolve(self, uri: str) -> Path:
        path = uri_to_path(uri)
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on 3.11
            raise DataLoaderError(f"Could not resolve {uri}: {exc}") from exc
        if self.roots is not None and not any(real.is_relative_to(r) for r in self.roots):
            raise URIOutsideRootsError(
                f"URI {uri} resolves to {real}, outside the data loader's roots "
                f"{[str(r) for r in self.roots]}")
        return real

    def _load(self, uri: str | None) -> Image | None:
        if uri is None:
            return None
        path = self.resolve(uri)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DataLoaderError(f"Could not load {uri}: {exc}") from exc
        if size > self.max_bytes:
            raise LimitExceededError(
                f"Image {uri} is {size} bytes, over the limit of {self.max_bytes}")
        return self._decode(uri, path)

    def _decode(self, uri: str, source: Path | io.BytesIO) -> Image:
        try:
            with PILImage.open(source) as img:
                if img.width * img.height > self.max_pixels:
                    raise LimitExceededError(
                        f"Image {redact(uri)} has {img.width * img.height} pixels, over the "
                        f"limit of {self.max_pixels}")
                return np.asarray(img.convert("RGB"))
        except UnidentifiedImageError:
            raise DataLoaderError(f"Could not load {redact(uri)}: not an image") from None
        except (OSError, PILImage.DecompressionBombError) as exc:
            raise DataLoaderError(f"Could not load {redact(uri)}: {exc}") from exc

    def fetcher(self) -> Fetcher:
        with self._fetcher_lock:
            if self._fetcher is None:
                self._fetcher = Fetcher(self.remote, self.max_bytes, self.max_pixels)
            return self._fetcher

    def _remote(self, uri: str) -> tuple[Future[bytes], Future[Image | None]]:
        """Fetch on the fetch loop, then decode on a loader thread once the bytes are in: no
        loader thread waits on the network."""
        decoded: Future[Image | None] = Future()

        def decode(data: bytes) -> None:
            if decoded.set_running_or_notify_cancel():
                try:
                    decoded.set_result(self._decode(uri, io.BytesIO(data)))
                except BaseException as exc:
                    decoded.set_exception(exc)

        def arrived(done: Future[bytes]) -> None:  # runs on the fetch loop: must not block
            if done.cancelled() or decoded.done():
                decoded.cancel()
            elif (exc := done.exception()) is not None:
                if decoded.set_running_or_notify_cancel():
                    decoded.set_exception(exc)
            else:
                try:
                    self._pool.submit(decode, done.result())
                except RuntimeError as exc:  # the pool was shut down meanwhile
                    if decoded.set_running_or_notify_cancel():
                        decoded.set_exception(exc)

        fetching = self.fetcher().submit(uri)
        fetching.add_done_callback(arrived)
        return fetching, decoded

    def __call__(self, uris: Sequence[str | None]) -> list[Image | None]:
        # Remote reads start at once on the fetch loop (bounded there); the loader threads
        # read local files and decode whatever has arrived.
        pending: list[Future[Any]] = []
        try:
            results: list[Future[Image | None]] = []
            for uri in uris:
                if uri is not None and scheme_of(uri) is not None:
                    fetching, decoded = self._remote(uri)
                    pending += [fetching, decoded]
                    results.append(decoded)
                else:
                    results.append(self._pool.submit(self._load, uri))
                    pending.append(results[-1])
            return [r.result() for r in results]
        finally:
            for f in pending:
                f.cancel()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageLoader) and other.get_config() == self.get_config()

    __hash__ = None  # type: ignore[assignment]
