"""``streamer serve``: the Kafka service process.

Three loops share one local replica (``Replica``):
- writer: a consumer group on the requests topic; micro-batches events (``getmany`` closes on
  size or time), runs the shared pipeline stages (load -> embed -> resolve) and produces each
  record's new state to the compacted state topic, the progress marker, replies and dead
  letters, and the consumed offsets, all in one Kafka transaction (exactly-once);
- replica: reads the state topic into the local log + usearch index (see replica.py);
- reader (reader.py): a consumer group on the queries topic answering query/get/count/
  admin RPCs once the replica has applied the caller's writes (session consistency)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from functools import partial
from typing import TypeAlias

from aiokafka import (
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)

from consumers.lifecycle import Component
from consumers.local import LocalStore
from consumers.pipeline import WriteJob
from schemas.errors import (
    NotFoundError,
    StreamerError,
    error_to_wire,
)
from schemas.events import (
    dumps,
    loads,
    parse_write,
    state_key,
    state_record,
)
from schemas.records import DeleteRequest, WriteRequest
from streamer import metrics
from streamer.kafka.common import (
    Topics,
    cancel,
    client_kwargs,
    ensure_topics,
    supervise,
    transactional_producer,
)
from streamer.kafka.reader import Reader, send_reply
from streamer.kafka.replica import PROGRESS, Replica
from streamer.kafka.runtimes import Runtimes
from streamer.kafka.wire_checks import (
    check_delete,
    check_write,
)
from streamer.settings import Settings

log = logging.getLogger(__name__)
Record: TypeAlias = ConsumerRecord[bytes, bytes]
Batches: TypeAlias = dict[TopicPartition, list[Record]]
Prepared: TypeAlias = tuple[Batches, list[tuple[Record, WriteJob]], list[tuple[Record, BaseException]]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._service.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._service.on_partitions_assigned(assigned)


ROLES = ("all", "writer", "reader")


class Service(Component):
    """``role``: "all" runs the writer and the query reader; "writer" only ingests; "reader"
    only answers queries (its model thread then never waits behind ingestion)."""

    def __init__(self, settings: Settings, *, instance: str | None = None,
                 role: str = "all") -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self.role = role
        self.settings = settings
        self.instance = instance or f"{socket.gethostname()}-{settings.instance_id}"
        self.topics = Topics.for_settings(settings)
        self.store = LocalStore(settings.data_dir, fsync=settings.fsync,
                                checkpoint_every=settings.checkpoint_every)
        self.catalog = self.store.catalog
        self.embed_thread = self.store.embed_thread
        self.lock = self.store.lock
        self._pipeline = self.store.pipeline
        self.replica = Replica(settings, self.topics, self.catalog, self.lock)
        self.runtimes = Runtimes(self.embed_thread, settings)
        self._ready: asyncio.Queue[tuple[int, Prepared]] = asyncio.Queue(maxsize=1)
        self._embedded: asyncio.Queue[tuple[int, float, Prepared]] = asyncio.Queue(maxsize=1)
        self._processing = asyncio.Lock()
        self._generation = 0
        #: request partition -> the next offset our last transaction recorded (see _finish)
        self._committed: dict[int, int] = {}

    # ---- lifecycle ----------------------------------------------------------------
    async def _start(self) -> None:
        """In dependency order; stopping runs it backwards: the write loop and the readers
        stop before the replica, and the store's checkpoint comes last."""
        await ensure_topics(self.settings, self.topics)
        await self.parts.start(self.store)
        await self.parts.start(self.replica)
        await self.runtimes.warm([s.spec for s in self.catalog.collections.values()])
        if self.role != "writer":
            self.reader = await self.parts.start(
                Reader(self.settings, self.topics, self.catalog, self.replica, self.runtimes,
                       self.embed_thread, self.lock))
        if self.role != "reader":
            await self._start_writer()
        log.info("streamer service %s started (role %s)", self.instance, self.role)

    async def _start_writer(self) -> None:
        self._tx = await self.parts.start(
            transactional_producer(self.settings, f"writer-{self.instance}"))
        self._writer = AIOKafkaConsumer(**client_kwargs(self.settings),
                                        group_id=self.topics.writers, enable_auto_commit=False,
                                        auto_offset_reset="earliest",
                                        isolation_level="read_committed")
        self._writer.subscribe([self.topics.requests], listener=_Rebalance(self))
        await self.parts.start(self._writer)
        writer = supervise(asyncio.create_task(self._write_loop(), name="writer"))
        self.parts.on_stop(partial(cancel, writer))

    # ---- writer -------------------------------------------------------------------
    async def _write_loop(self) -> None:
        """Three stages, a batch in each: batch k+2 is fetched, parsed, loaded and transformed
        while batch k+1 is encoded and batch k is resolved and committed in its transaction,
        so the model thread waits neither for image decoding nor for Kafka round trips."""
        stages = [supervise(asyncio.create_task(self._prefetch_loop(), name="prefetch")),
                  supervise(asyncio.create_task(self._embed_loop(), name="embed"))]
        try:
            while True:
                generation, started, (batches, jobs, failed) = await self._embedded.get()
                async with self._processing:
                    # Fetched before a rebalance: aiokafka restarts every assigned partition
                    # from its committed offset, so this batch comes again (to us or another).
                    if generation == self._generation:
                        await self._finish(started, batches, jobs, failed)
        finally:
            for stage in stages:
                await cancel(stage)

    async def _embed_loop(self) -> None:
        while True:
            generation, prepared = await self._ready.get()
            if generation != self._generation:
                continue  # revoked while it waited (see _write_loop)
            started = time.perf_counter()
            await self._pipeline.embed([j for _, j in prepared[1]])
            await self._embedded.put((generation, started, prepared))

    async def _prefetch_loop(self) -> None:
        cfg = self.settings
        while True:
            batches = await self._writer.getmany(timeout_ms=int(cfg.batch_max_wait_ms) or 1,
                                                 max_records=cfg.batch_max_items)
            if batches:
                generation = self._generation
                await self._ready.put((generation, await self._prepare(batches)))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Let the in-flight batch commit its transaction, and invalidate prefetched ones."""
        async with self._processing:
            self._generation += 1
            self._committed.clear()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """The group's committed offset of a partition is what the progress marker of the same
        (last) transaction says: the exact bar for the replica after a rebalance too."""
        for tp in assigned:
            committed = await self._writer.committed(tp)
            if committed is not None:
                self._committed[tp.partition] = committed
        log.info("writer partitions: %s", sorted(tp.partition for tp in assigned))

    async def _finish(self, started: float, batches: Batches, jobs: list[tuple[Record, WriteJob]],
                      failed: list[tuple[Record, BaseException]]) -> None:
        await self._process(batches, jobs, failed)
        elapsed = time.perf_counter() - started
        size = sum(len(r) for r in batches.values())
        log.debug("batch of %d records in %.3f s", size, elapsed)
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.BATCH_SIZE.observe(size)
        for tp in batches:
            hw = self._writer.highwater(tp)
            if hw is not None:
                metrics.LAG.labels(tp.topic, tp.partition).set(hw - await self._writer.position(tp))

    async def _prepare(self, batches: Batches) -> Prepared:
        jobs: list[tuple[Record, WriteJob]] = []
        failed: list[tuple[Record, BaseException]] = []
        for records in batches.values():
            for rec in records:
                try:
                    jobs.append((rec, await self._job(rec)))
                except StreamerError as exc:
                    failed.append((rec, exc))
                except Exception as exc:  # a bug on one event must not stop the writer
                    log.exception("unexpected error on %s:%d:%d", rec.topic, rec.partition,
                                  rec.offset)
                    failed.append((rec, exc))
        await self._pipeline.prepare([j for _, j in jobs])
        return batches, jobs, failed

    async def _process(self, batches: Batches, jobs: list[tuple[Record, WriteJob]],
                       failed: list[tuple[Record, BaseException]]) -> None:
        # Resolving needs our previous transactions on these partitions applied locally; the
        # batch is already encoded, so replication of batch k-1 overlapped its encoding.
        first = {tp.partition: recs[0].offset for tp, recs in batches.items()}
        # Other producers' transaction markers (upstream sources, streamer/sources.py) take
        # offsets that no record has: the next offset our own last transaction recorded is
        # the exact bar while we keep the partition.
        first = {p: min(off, self._committed.get(p, off)) for p, off in first.items()}
        await self.replica.wait_for(partial(self.replica.reached, first),
                                    timeout=self.settings.kafka_request_timeout_s)
        states = [(self.topics.state, state_key(g.state.spec.id, m.id),
                   state_record(g.state.spec.id, m))
                  for g in await self._pipeline.resolve([j for _, j in jobs]) for m in g.mutations]
        failed += [(rec, job.error) for rec, job in jobs if job.error is not None]
        ok = [rec for rec, job in jobs if job.error is None]
        metrics.RECORDS.labels("ok").inc(len(ok))
        metrics.RECORDS.labels("error").inc(len(failed))
        async with self._tx.transaction():
            for topic, key, value in states:
                await self._tx.send(topic, key=key, value=value)
            for rec in ok:
                await send_reply(self._tx, rec, {"ok": True, "result": None})
            for rec, error in failed:
                await self._dead_letter(rec, error)
                await send_reply(self._tx, rec, {"ok": False, "error": error_to_wire(error)})
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
            for tp, nxt in offsets.items():
                await self._tx.send(self.topics.state, key=f"{PROGRESS}{tp.partition}".encode(),
                                    value=dumps({"next": nxt}), partition=tp.partition)
            await self._tx.send_offsets_to_transaction(offsets, self.topics.writers)
        self._committed.update({tp.partition: nxt for tp, nxt in offsets.items()})

    async def _job(self, rec: ConsumerRecord[bytes, bytes]) -> WriteJob:
        ev = loads(rec.value)
        op, collection_id, payload = parse_write(ev)
        state = self.catalog.by_id(collection_id)
        if state is None:
            await self.replica.wait_for(lambda: self.catalog.by_id(collection_id) is not None, 5.0)
            state = self.catalog.by_id(collection_id)
            if state is None:
                raise NotFoundError(f"Collection [{collection_id}] does not exist")
        embedder = await self.runtimes.get(state.spec.embedding_function)
        loader = await self.runtimes.get(state.spec.data_loader)
        request: WriteRequest | DeleteRequest
        if isinstance(payload, DeleteRequest):
            request = check_delete(payload, self.settings)
        else:
            check_write(op, payload, self.settings, has_embedding_function=embedder is not None,
                        has_loader=loader is not None)
            request = WriteRequest(op, [payload])
        return WriteJob(state, request, embedder=embedder, loader=loader)

    async def _dead_letter(self, rec: ConsumerRecord[bytes, bytes], exc: BaseException) -> None:
        headers = [("reason", str(exc).encode()), ("code", error_to_wire(exc)["code"].encode()),
                   ("source", f"{rec.topic}:{rec.partition}:{rec.offset}".encode())]
        # Events mapped from an upstream topic (streamer/sources.py) name their upstream record.
        headers += [(k, v) for k, v in rec.headers or () if k == "origin"]
        await self._tx.send(self.topics.dlq, key=rec.key, value=rec.value, headers=headers)
