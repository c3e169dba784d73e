"""The index stage after recovery: ``IndexBackfill`` moves the vectors a collection replayed
from its log tail (pending, searched exactly) into the HNSW graph, one step at a time under
the collection lock, so queries and writes interleave with it and a restart serves at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import anyio.to_thread

from consumers.catalog import Catalog
from consumers.lifecycle import Component
from consumers.tasks import supervise

#: Vectors per step: about a quarter second of graph insertion, the longest a query waits.
STEP = 512


class IndexBackfill(Component):
    def __init__(self, catalog: Catalog, locks: Callable[[str], anyio.Lock], *,
                 step: int = STEP, idle_s: float = 0.5) -> None:
        super().__init__()
        self._catalog = catalog
        self._locks = locks
        self._step = step
        self._idle_s = idle_s
        self._stopping = asyncio.Event()

    async def _start(self) -> None:
        task = supervise(asyncio.create_task(self._run(), name="index-backfill"))

        async def finish() -> None:
            """Waits for a step in flight: its thread must not race the closing checkpoint."""
            self._stopping.set()
            await task
        self.parts.on_stop(finish)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if not await self.step():
                with anyio.move_on_after(self._idle_s):
                    await self._stopping.wait()

    async def step(self) -> bool:
        """One step on every collection with pending vectors; False when none had any.
        Collections opened later (a replica installing one) are picked up on the next pass."""
        worked = False
        for state in list(self._catalog.collections.values()):
            index = state.store.index
            if index is None or not index.pending:
                continue
            async with self._locks(state.spec.id):
                if state.store.index is index:  # not replaced by a delete or re-create
                    await anyio.to_thread.run_sync(index.backfill, self._step)
            worked = True
        return worked
