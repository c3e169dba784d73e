"""A process's local store, set up in one place for the embedded engine and the Kafka
service: the catalog of collections (log + index each), one lock per collection, the model's
own thread, the write pipeline and the index backfill. Starting opens the catalog (recovery)
and starts the backfill; stopping waits for the backfill, checkpoints and closes the logs,
then ends the threads."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread

from consumers.embedding.embedq import EmbedExecutor
from consumers.runtime.lifecycle import Component
from consumers.storage.backfill import IndexBackfill
from consumers.storage.catalog import Catalog
from consumers.write.pipeline import Pipeline


class LocalStore(Component):
    def __init__(self, path: str | Path | None, *, fsync: bool = True,
                 checkpoint_every: int = 50_000) -> None:
        super().__init__()
        self.path = None if path is None else Path(path)
        self.catalog = Catalog(self.path, fsync=fsync, checkpoint_every=checkpoint_every)
        self.embed_thread = EmbedExecutor("embed")
        self._locks: dict[str, anyio.Lock] = {}
        self.pipeline = Pipeline(self.embed_thread, self.lock)
        self.backfill = IndexBackfill(self.catalog, self.lock)

    def lock(self, collection_id: str) -> anyio.Lock:
        """The collection's lock: writes, reads of the index and backfill steps take it."""
        return self._locks.setdefault(collection_id, anyio.Lock())

    async def _start(self) -> None:
        # Joining a thread pool blocks until its work ends: done on a worker thread.
        self.parts.on_stop(lambda: anyio.to_thread.run_sync(self.embed_thread.shutdown))
        self.parts.on_stop(lambda: anyio.to_thread.run_sync(self.pipeline.close))
        await anyio.to_thread.run_sync(self.catalog.open)
        self.parts.on_stop(lambda: anyio.to_thread.run_sync(self.catalog.close))
        await self.parts.start(self.backfill)
