"""The load stage: ``ImageLoader``, Chroma's data loader protocol (``__call__(uris)``) with
concurrent reads, ``file://`` URIs, and confinement to configured roots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image as PILImage

from schemas.errors import DataLoaderError, LimitExceededError, URIOutsideRootsError
from schemas.records import Image


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
        raise DataLoaderError(f"Unsupported URI scheme: {uri}")
    return Path(uri)


class ImageLoader:
    """Loads images by local path or ``file://`` URI into RGB numpy arrays.

    With ``roots`` set, a URI is read only if its real path (``..`` and symlinks resolved)
    lies under one of them; anything else raises ``URIOutsideRootsError``."""

    def __init__(self, max_workers: int = os.cpu_count() or 2,
                 roots: Sequence[str | os.PathLike[str]] | None = None,
                 max_pixels: int = 64_000_000, max_bytes: int = 64 << 20) -> None:
        self._max_workers = max_workers
        self.roots = None if roots is None else [Path(r).resolve() for r in roots]
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="loader")

    @staticmethod
    def name() -> str:
        return "image_loader"

    def get_config(self) -> dict[str, Any]:
        return {"max_workers": self._max_workers,
                "roots": None if self.roots is None else [str(r) for r in self.roots],
                "max_pixels": self.max_pixels, "max_bytes": self.max_bytes}

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
            if size > self.max_bytes:
                raise LimitExceededError(
                    f"Image {uri} is {size} bytes, over the limit of {self.max_bytes}")
            with PILImage.open(path) as img:
                if img.width * img.height > self.max_pixels:
                    raise LimitExceededError(
                        f"Image {uri} has {img.width * img.height} pixels, over the limit "
                        f"of {self.max_pixels}")
                return np.asarray(img.convert("RGB"))
        except (OSError, PILImage.DecompressionBombError) as exc:
            raise DataLoaderError(f"Could not load {uri}: {exc}") from exc

    def __call__(self, uris: Sequence[str | None]) -> list[Image | None]:
        return list(self._pool.map(self._load, uris))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageLoader) and other.get_config() == self.get_config()

    __hash__ = None  # type: ignore[assignment]
