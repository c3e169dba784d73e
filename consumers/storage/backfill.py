"""The index stage after recovery: ``IndexBackfill`` moves the vectors a collection replayed
from its log tail (pending, searched exactly) into the HNSW graph, one step at a time under
the collection lock, so queries and writes interleave with it and a restart serves at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import anyio
import anyio.to_thread

from consumers.runtime.lifecycle import Component
from consumers.runtime.tasks import supervise
from consumers.storage.catalog import Catalog

#: Vectors per step: about a quarter second of graph insertion, the longest a query waits.
STEP = 512
#: A step holds the collection's lock, and a Kafka writer's next batch waits for its
#: replica's apply under that lock: a collection committed to within ``QUIET_S`` is left
#: alone while it holds fewer than ``MAX_PENDING`` pending vectors. Past that bound steps run
#: anyway, so the scan every query pays stays bounded; the Kafka replica defers graph
#: insertion only below it (streamer/kafka/replica.py).
QUIET_S = 0.2
MAX_PENDING = 4096


class IndexBackfill(Component):
    def __init__(self, catalog: Catalog, locks: Callable[[str], anyio.Lock], *,
                 step: int = STEP, idle_s: float = 0.5, quiet_s: float = QUIET_S) -> None:
        super().__init__()
        self._catalog = catalog
        self._locks = locks
        self._step = step
        self._idle_s = idle_s
        self._quiet_s = quiet_s
        self._yielded = False
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
                with anyio.move_on_after(self._quiet_s if self._yielded else self._idle_s):
                    await self._stopping.wait()

    async def step(self) -> bool:
        """One step on every collection with pending vectors, but those being written to
        (see ``QUIET_S``); False when none was stepped. Collections opened later (a replica
        installing one) are picked up on the next pass."""
        worked = self._yielded = False
        for state in list(self._catalog.collections.values()):
            index = state.store.index
            if index is None or not index.pending:
                continue
            if index.pending < MAX_PENDING and \
                    time.monotonic() - state.last_commit < self._quiet_s:
                self._yielded = True
                continue
            async with self._locks(state.spec.id):
                if state.store.index is index:  # not replaced by a delete or re-create
                    await anyio.to_thread.run_sync(index.backfill, self._step)
            worked = True
        return worked
