"""The index replica: every service process reads the compacted state topic (all of it, or
its shard's partitions under ``--shard``: kafka/shards.py) and the collections topic into its
local catalog -- the modality-overwrite log plus usearch -- and
serves reads from it. Applying a state record is idempotent (full states and tombstones), so
replaying after a crash is harmless; the positions are saved after each applied batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry.trace import SpanKind

from consumers.runtime.files import atomic_write
from consumers.runtime.lifecycle import Component
from consumers.storage.backfill import MAX_PENDING
from consumers.storage.catalog import Catalog
from schemas.events import loads, parse_state
from schemas.records import CollectionSpec, Mutation
from streamer import tracing
from streamer.kafka.common import (
    Topics,
    cancel,
    consumer_kwargs,
    partitions,
    supervise,
)
from streamer.kafka.security import client_kwargs
from streamer.kafka.shards import Shard
from streamer.metrics import REPLICA_PROGRESS
from streamer.settings import Settings

log = logging.getLogger(__name__)
PROGRESS = "__progress__/"


def insertion_order(mutations: list[Mutation]) -> list[Mutation]:
    """Records of one call arrive on several partitions; order each id's group by the client's
    stamp so one batch logs them (and live queries stream them) in insertion order. ``get``
    orders by the stamp kept in each record, which also covers calls split across batches.
    Each id's own mutations keep their Kafka order, and different ids are independent."""
    groups: dict[str, list[Mutation]] = {}
    for m in mutations:
        groups.setdefault(m.id, []).append(m)
    def first_stamp(group: list[Mutation]) -> tuple[int, int]:
        return next((m.order for m in group if m.order is not None), (0, 0))
    return [m for g in sorted(groups.values(), key=first_stamp) for m in g]


class Replica(Component):
    def __init__(self, settings: Settings, topics: Topics, catalog: Catalog,
                 locks: Any) -> None:
        super().__init__()
        self._settings = settings
        self._topics = topics
        self.catalog = catalog
        self._locks = locks
        self._positions_file = None if catalog.path is None else catalog.path / "replica.json"
        self._consumer: AIOKafkaConsumer | None = None
        #: request partition -> next request offset whose effects are applied here
        self.progress: dict[int, int] = {}
        self._changed = asyncio.Condition()

    async def _start(self) -> None:
        positions = await anyio.to_thread.run_sync(self._load_positions)
        seqs = positions.get("seqs", {})
        behind = [s.spec.name for s in self.catalog.collections.values()
                  if s.store.applied_seq < seqs.get(s.spec.id, 0)]
        if behind or any(s.damaged for s in self.catalog.collections.values()):
            # The local log lost a tail (or a checkpoint): positions saved after it would skip
            # records. Re-read the compacted state topic; applying it again is idempotent.
            log.warning("local replica damaged (%s): re-reading the state topic", behind)
            positions = {"progress": positions.get("progress", {})}
        self.progress = {int(k): v for k, v in positions.get("progress", {}).items()}
        self._consumer = await self.parts.start(AIOKafkaConsumer(
            **client_kwargs(self._settings), **consumer_kwargs(self._settings),
            enable_auto_commit=False,
            isolation_level="read_committed"))
        shard = Shard.of(self._settings)
        tps = [TopicPartition(self._topics.collections, 0)] + [
            TopicPartition(self._topics.state, p)
            for p in sorted(await partitions(self._consumer, self._topics.state))
            if shard is None or shard.owns(p)]
        self._consumer.assign(tps)
        for tp in tps:
            pos = positions.get("offsets", {}).get(f"{tp.topic}:{tp.partition}")
            if pos is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, pos)
        # Bootstrap: catch up to the end of both topics before serving anything.
        ends = await self._consumer.end_offsets(tps)
        while await self._behind(ends):
            await self._poll_once(replay=True)
        task = supervise(asyncio.create_task(self._loop(), name="replica"))
        self.parts.on_stop(partial(cancel, task))

    async def _behind(self, ends: dict[TopicPartition, int]) -> bool:
        assert self._consumer is not None
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return True
        return False

    async def _loop(self) -> None:
        while True:
            await self._poll_once()

    async def _poll_once(self, replay: bool = False) -> None:
        """``replay``: catching up at start, where old records' traces are long closed."""
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200, max_records=2000)
        if not batches:
            return
        started = time.time_ns()
        traced = not replay and tracing.enabled()
        specs: list[tuple[str, CollectionSpec | None]] = []
        muts: dict[str, list[Mutation]] = defaultdict(list)
        #: per collection, each traced id's context: its apply span's and a live push's parent
        traces: dict[str, dict[str, Any]] = defaultdict(dict)
        progress: dict[int, int] = {}
        for tp, records in batches.items():
            for rec in records:
                if tp.topic == self._topics.collections:
                    name = rec.key.decode() if rec.key else ""
                    specs.append((name, None if rec.value is None else
                                  CollectionSpec.from_dict(loads(rec.value)["spec"])))
                    continue
                key = rec.key or b""
                if key.startswith(PROGRESS.encode()):
                    part = int(key.decode()[len(PROGRESS):])
                    if rec.value is not None:
                        progress[part] = max(progress.get(part, 0), int(loads(rec.value)["next"]))
                    continue
                collection_id, mutation = parse_state(key, rec.value)
                muts[collection_id].append(mutation)
                if traced and (ctx := tracing.extract(rec.headers)) is not None:
                    traces[collection_id][mutation.id] = ctx
        await anyio.to_thread.run_sync(self._apply_specs, specs)
        for collection_id, mutations in muts.items():
            mutations = insertion_order(mutations)
            state = self.catalog.by_id(collection_id)
            if state is None:
                continue  # a deleted collection's leftovers
            async with self._locks(collection_id):
                index = state.store.index
                # The writer's next batch waits for this apply: graph insertion (the bulk of
                # it) is left to IndexBackfill, the vectors searched exactly meanwhile, while
                # fewer than MAX_PENDING wait (4,096 512-d vectors: a 0.4-8 ms scan per query
                # on a loaded 2-core box); past it, applies insert into the graph themselves,
                # so a sustained load runs at the graph's pace.
                defer = index is None or index.pending < MAX_PENDING
                await anyio.to_thread.run_sync(
                    partial(state.commit, mutations, None, defer_index=defer,
                            traces=traces.get(collection_id)))
        positions = {f"{tp.topic}:{tp.partition}": await self._consumer.position(tp)
                     for tp in self._consumer.assignment()}
        for part, nxt in progress.items():
            self.progress[part] = max(self.progress.get(part, 0), nxt)
            REPLICA_PROGRESS.labels(str(part)).set(self.progress[part])
        if self._positions_file is not None:
            # The log sequence each collection reached: a log that later comes back shorter
            # (a tail lost at a clean frame boundary) is caught by comparing against it.
            seqs = {s.spec.id: s.store.applied_seq for s in self.catalog.collections.values()}
            data = orjson.dumps({"offsets": positions, "progress": self.progress, "seqs": seqs},
                                  option=orjson.OPT_NON_STR_KEYS)
            await anyio.to_thread.run_sync(atomic_write, self._positions_file, data)
        async with self._changed:
            self._changed.notify_all()
        # Applied, durable and visible to reads from here on: one span per call (its records
        # carry one context).
        for ctx in {tracing.identity(c): c for t in traces.values() for c in t.values()}.values():
            tracing.TRACER.start_span("replica apply", context=ctx, kind=SpanKind.CONSUMER,
                                      start_time=started).end()

    def _apply_specs(self, specs: list[tuple[str, CollectionSpec | None]]) -> None:
        for name, spec in specs:
            if spec is None:
                if name in self.catalog.collections:
                    self.catalog.delete(name)
            else:
                self.catalog.install(spec)

    def _load_positions(self) -> dict[str, Any]:
        if self._positions_file is None or not self._positions_file.exists():
            return {}
        data: dict[str, Any] = orjson.loads(Path(self._positions_file).read_bytes())
        return data

    async def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate()`` holds after some applied batch; False on timeout."""
        with anyio.move_on_after(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)
                return True
        return bool(predicate())

    def reached(self, first: dict[int, int]) -> bool:
        """The writer's check: every transaction before these offsets is applied here."""
        return all(self.progress.get(p, 0) >= off for p, off in first.items())

    def caught_up(self, after: dict[int, int]) -> bool:
        """Session consistency: every request offset in ``after`` is applied here."""
        return all(self.progress.get(p, 0) > off for p, off in after.items())
