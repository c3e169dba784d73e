"""Server-side embedding functions and loaders, rebuilt from collection specs."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

import anyio.to_thread

from schemas.events import dumps
from schemas.records import CollectionSpec
from streamer.client.clients import rebuild
from streamer.kafka.wire_checks import server_loader
from streamer.settings import Settings


class Runtimes:
    """Server-side embedding functions and loaders, rebuilt from specs and shared by config
    so a model is loaded once per process."""

    def __init__(self, embed_thread: Executor, settings: Settings | None = None) -> None:
        self._cache: dict[bytes, Any] = {}
        self._embed_thread = embed_thread
        self._settings = settings

    async def get(self, desc: dict[str, Any] | None) -> Any:
        if desc is None:
            return None
        key = dumps(desc)
        if key not in self._cache:
            # Building touches the disk (a loader resolves its roots): on a worker thread.
            runtime = await anyio.to_thread.run_sync(self._build, desc)
            if key not in self._cache:  # another caller may have built it meanwhile
                self._cache[key] = runtime
                load = getattr(runtime, "load", None)
                if callable(load):  # warm the model on its own thread before the first batch
                    self._embed_thread.submit(load)
        return self._cache[key]

    def _build(self, desc: dict[str, Any]) -> Any:
        if self._settings is not None and desc.get("name") == "image_loader":
            desc = server_loader(desc, self._settings)
        if self._settings is not None and self._settings.model_cache and desc.get("name") == "open_clip":
            desc = {**desc, "config": {**desc.get("config", {}), "cache_dir": self._settings.model_cache}}
        return rebuild(desc)

    async def warm(self, specs: list[CollectionSpec]) -> None:
        """Resolves every collection's weights (downloading once if need be) and refuses to
        start when they differ from the spec's (WeightsMismatchError); the models then load
        on the embed thread."""
        for spec in specs:
            runtime = await self.get(spec.embedding_function)
            resolve = getattr(runtime, "resolve", None)
            if callable(resolve):
                await anyio.to_thread.run_sync(resolve)
