"""``streamer serve``: the Kafka service process.

Three loops share one local replica (``Replica``):
- writer: a consumer group on the requests topic; micro-batches events (``getmany`` closes on
  size or time), runs the shared pipeline stages (load -> embed -> resolve) and produces each
  record's new state to the compacted state topic, the progress marker, replies and dead
  letters, and the consumed offsets in one Kafka transaction per request partition, each by
  that partition's own transactional producer (exactly-once, zombies fenced: producers.py);
- replica: reads the state topic into the local log + usearch index (see replica.py);
- reader (reader.py): a consumer group on the queries topic answering query/get/count/
  admin RPCs once the replica has applied the caller's writes (session consistency)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from functools import partial
from typing import TypeAlias

from aiokafka import (
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import KafkaError

from consumers.runtime.lifecycle import Component
from consumers.write.local import LocalStore
from consumers.write.pipeline import WriteJob
from schemas.errors import (
    StreamerError,
    error_to_wire,
)
from schemas.events import (
    dumps,
    state_key,
    state_record,
)
from schemas.records import DeleteRequest
from streamer import metrics
from streamer.kafka.batches import Batches, Prepared, Record, needs_model, result
from streamer.kafka.common import (
    Topics,
    cancel,
    consumer_kwargs,
    ensure_topics,
    supervise,
)
from streamer.kafka.intake import Intake
from streamer.kafka.producers import FENCED, PartitionProducers
from streamer.kafka.reader import Reader, send_reply
from streamer.kafka.replica import PROGRESS, Replica
from streamer.kafka.runtimes import Runtimes
from streamer.kafka.security import client_kwargs, preflight
from streamer.kafka.shards import assignors, publish_layout
from streamer.settings import Settings
from streamer.tracing import BatchTrace, headers_of

log = logging.getLogger(__name__)
Out: TypeAlias = tuple[bytes, bytes | None]


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
        self._intake = Intake(settings, self.topics, self.catalog, self.replica, self.runtimes,
                              self._partitions)
        self._ready: asyncio.Queue[tuple[int, Prepared]] = asyncio.Queue(maxsize=1)
        self._embedded: asyncio.Queue[tuple[int, float, Prepared]] = asyncio.Queue(maxsize=1)
        self._processing = asyncio.Lock()
        self._generation = 0
        #: request partition -> the next offset our last transaction recorded (see _finish)
        self._committed: dict[int, int] = {}
        #: the requests topic's partition count as of the last assignment (see _partitions)
        self._known_partitions = settings.kafka_partitions

    # ---- lifecycle ----------------------------------------------------------------
    async def _start(self) -> None:
        """In dependency order; stopping runs it backwards: the write loop and the readers
        stop before the replica, and the store's checkpoint comes last."""
        await preflight(self.settings)  # a refused connection ends `streamer serve` with why
        await ensure_topics(self.settings, self.topics)
        await publish_layout(self.settings, client_kwargs(self.settings))
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
        # Stopped after the writer's consumer (parts stop in reverse): its revocation on
        # leaving the group still finishes the in-flight transactions.
        self._producers = PartitionProducers(self.settings)
        self.parts.on_stop(self._producers.stop)
        session_ms = self.settings.kafka_session_timeout_ms
        self._writer = AIOKafkaConsumer(**client_kwargs(self.settings), **consumer_kwargs(self.settings),
                                        group_id=self.topics.writers, enable_auto_commit=False,
                                        auto_offset_reset="earliest",
                                        isolation_level="read_committed",
                                        session_timeout_ms=session_ms,
                                        heartbeat_interval_ms=max(100, session_ms // 3),
                                        **assignors(self.settings))
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
                generation, started, prepared = await self._embedded.get()
                async with self._processing:
                    # Fetched before a rebalance: aiokafka restarts every assigned partition
                    # from its committed offset, so this batch comes again (to us or another).
                    if generation == self._generation:
                        await self._finish(started, prepared)
        finally:
            for stage in stages:
                await cancel(stage)

    async def _embed_loop(self) -> None:
        while True:
            generation, prepared = await self._ready.get()
            if generation != self._generation:
                continue  # revoked while it waited (see _write_loop)
            started = time.perf_counter()
            with prepared.stage("writer embed"):
                await self._pipeline.embed([j for _, j in prepared.jobs])
            await self._embedded.put((generation, started, prepared))

    async def _prefetch_loop(self) -> None:
        cfg = self.settings
        while True:
            generation = self._generation
            batches = await self._writer.getmany(timeout_ms=int(cfg.batch_max_wait_ms) or 1,
                                                 max_records=cfg.batch_max_items)
            if not batches:
                continue
            prepared = await self._prepare(batches)
            # Records that bring their embeddings cost the model nothing: while the batch is
            # full of them, take what is already fetched too (a backfill pays per batch:
            # transactions, replica applies, fsyncs).
            while (prepared.size < cfg.batch_max_records
                   and sum(len(r) for r in batches.values()) == cfg.batch_max_items
                   and not any(needs_model(job) for _, job in prepared.jobs)):
                batches = await self._writer.getmany(timeout_ms=0, max_records=cfg.batch_max_items)
                if not batches:
                    break
                prepared = prepared.merge(await self._prepare(batches))
            if generation != self._generation:
                # A rebalance ran while fetching: the records may predate it. Nothing of the
                # new generation is processed yet, so restart from the offsets it read.
                for tp in prepared.records:
                    if tp.partition in self._committed and tp in self._writer.assignment():
                        self._writer.seek(tp, self._committed[tp.partition])
                continue
            await self._ready.put((generation, prepared))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Let the in-flight batch commit (or abort) its transactions, and drop prefetched
        batches: none of them is applied after this."""
        async with self._processing:
            self._generation += 1
            self._committed.clear()
            await self._producers.close_all()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Fence first, then read: starting each partition's transactional producer aborts
        or completes its previous owner's open transaction, so the committed offset read
        afterwards is final. It equals what the progress marker of the same (last)
        transaction says: the exact bar for the replica after a rebalance too."""
        async with self._processing:
            self._committed.clear()
            try:
                await self._start_partitions(assigned)
            except Exception:
                # aiokafka only logs a listener's failure: without producers these partitions'
                # batches are skipped, so ask for another assignment (it seeks them again).
                log.exception("starting the writer's partitions failed; rejoining")
                await self._producers.close_all()
                self._writer._coordinator.request_rejoin()
        log.info("writer partitions (from offsets): %s", dict(sorted(self._committed.items())))

    async def _start_partitions(self, assigned: list[TopicPartition]) -> None:
        self._known_partitions = self._partitions()
        await self._producers.assign({tp.partition for tp in assigned})
        offsets = {tp: await self._writer.committed(tp) for tp in assigned}
        never = [tp for tp, off in offsets.items() if off is None]
        if never:
            offsets.update(await self._writer.beginning_offsets(never))
        for tp, off in offsets.items():
            assert off is not None
            # Every assigned partition restarts at its committed offset: batches fetched
            # before, or dropped after a fence, come again.
            self._committed[tp.partition] = off
            self._writer.seek(tp, off)
        # Only now: a batch fetched while this ran (from aiokafka's own reset position,
        # before the seeks above) must be dropped, not processed a second time.
        self._generation += 1

    async def _fenced(self, tp: TopicPartition) -> None:
        """Another writer owns ``tp`` now (we stalled past the session timeout, or the
        transaction timed out): drop its batches and producer, fetch no more of it, and rejoin
        the group; the next assignment restarts whatever we own from its committed offset."""
        log.warning("writer fenced on partition %d: dropping its batch and rejoining",
                    tp.partition)
        metrics.FENCED.inc()
        with contextlib.suppress(Exception):  # already unassigned by a rebalance
            self._writer.pause(tp)
        await self._producers.drop(tp.partition)
        # aiokafka has no public call for this; the coordinator's own flag is what a failed
        # heartbeat sets, so the group rebalances at once instead of after the session.
        self._writer._coordinator.request_rejoin()


    async def _finish(self, started: float, prepared: Prepared) -> None:
        try:
            await self._process(prepared.keep(self._producers))
        finally:
            if prepared.traced is not None:
                prepared.traced.end()
        batches = prepared.records
        elapsed = time.perf_counter() - started
        size = prepared.size
        log.debug("batch of %d records in %.3f s", size, elapsed)
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.BATCH_SIZE.observe(size)
        assigned = self._writer.assignment()
        for tp in batches:
            hw = self._writer.highwater(tp) if tp in assigned else None
            if hw is not None:
                metrics.LAG.labels(tp.topic, tp.partition).set(hw - await self._writer.position(tp))

    async def _prepare(self, batches: Batches) -> Prepared:
        prepared = Prepared(batches,
                            traced=BatchTrace.of(r for recs in batches.values() for r in recs))
        with prepared.stage("writer load"):
            for records in batches.values():
                for rec in records:
                    try:
                        job, hop = await self._intake.job(rec)
                    except StreamerError as exc:
                        prepared.failed.append((rec, exc))
                        continue
                    except Exception as exc:  # a bug on one event must not stop the writer
                        log.exception("unexpected error on %s:%d:%d", rec.topic, rec.partition,
                                      rec.offset)
                        prepared.failed.append((rec, exc))
                        continue
                    if job is None:
                        prepared.moves.append((rec, hop))
                        continue
                    prepared.jobs.append((rec, job))
                    if isinstance(job.request, DeleteRequest):
                        prepared.hops[rec.partition, rec.offset] = hop
            await self._pipeline.prepare([j for _, j in prepared.jobs])
        return prepared

    async def _process(self, prepared: Prepared) -> None:
        # Partitions fenced since this batch was fetched come again after the rejoin.
        batches, jobs, failed = prepared.records, prepared.jobs, prepared.failed
        if not batches:
            return
        # Resolving needs our previous transactions on these partitions applied locally; the
        # batch is already encoded, so replication of batch k-1 overlapped its encoding.
        first = {tp.partition: recs[0].offset for tp, recs in batches.items()}
        # Other producers' transaction markers (upstream sources, streamer/sources.py) take
        # offsets that no record has: the next offset our own last transaction recorded is
        # the exact bar while we keep the partition.
        first = {p: min(off, self._committed.get(p, off)) for p, off in first.items()}
        # Bounded: waiting on for good deadlocked once after a broker restart (the replica
        # never reached the bar while this batch held the write loop; docs/notes.md).
        if not await self.replica.wait_for(partial(self.replica.reached, first),
                                           timeout=self.settings.kafka_request_timeout_s):
            log.warning("resolving before the replica applied partitions up to %s (has %s)",
                        first, {p: self.replica.progress.get(p, 0) for p in first})
        outs: dict[int, list[Out]] = {}
        with prepared.stage("writer resolve"):
            for tp in batches:
                # Resolved per partition so each partition's state records go in its
                # transaction; ids are co-partitioned (and filtered deletes run on every
                # partition, each writer deleting its own), so no partition's outcome depends
                # on another's.
                groups = await self._pipeline.resolve(
                    [j for rec, j in jobs if rec.partition == tp.partition])
                outs[tp.partition] = [(state_key(g.state.spec.id, m.id),
                                       state_record(g.state.spec.id, m))
                                      for g in groups for m in g.mutations]
        failed = failed + [(rec, job.error) for rec, job in jobs if job.error is not None]
        ok = [(rec, job) for rec, job in jobs if job.error is None]
        metrics.RECORDS.labels("ok").inc(len(ok))
        metrics.RECORDS.labels("error").inc(len(failed))
        await asyncio.gather(*(
            self._commit(tp, recs[-1].offset + 1, outs[tp.partition],
                         [(r, j) for r, j in ok if r.partition == tp.partition],
                         [(r, e) for r, e in failed if r.partition == tp.partition], prepared)
            for tp, recs in batches.items()))

    async def _commit(self, tp: TopicPartition, nxt: int, states: list[Out],
                      ok: list[tuple[Record, WriteJob]], failed: list[tuple[Record, BaseException]],
                      prepared: Prepared) -> None:
        """One partition's share of the batch, in the transaction of that partition's own
        producer: a writer fenced on ``tp`` can commit nothing for it. Events that continue
        on another partition (routing.py) are forwarded in it, and answered there."""
        tx = self._producers.get(tp.partition)
        if tx is None:
            return
        traced = prepared.traced
        # A traced request's state record and reply carry its transaction span's context.
        spans = {} if traced is None else {
            rec.key: span for rec, _ in [*ok, *failed]
            if (span := traced.stages_of(rec.partition, rec.offset)) is not None}
        moves = [(rec, hop, 0) for rec, hop in prepared.moves if rec.partition == tp.partition]
        answers = []
        for rec, job in ok:
            hop = prepared.hops.get((rec.partition, rec.offset))
            limit = job.request.limit if isinstance(job.request, DeleteRequest) else None
            if hop is not None and hop.continues(job.deleted, None if limit is None
                                                 else limit + hop.before):
                moves.append((rec, hop, job.deleted))
            else:
                answers.append((rec, result(job, hop)))
        try:
            async with tx.transaction():
                for key, value in states:
                    await tx.send(self.topics.state, key=key, value=value,
                                  headers=headers_of(spans.get(key)))
                for rec, hop, deleted in moves:
                    await self._intake.forward(tx, rec, hop, deleted)
                for rec, answer in answers:
                    await send_reply(tx, rec, {"ok": True, "result": answer},
                                     headers=headers_of(spans.get(rec.key)))
                for rec, error in failed:
                    await self._intake.dead_letter(tx, rec, error)
                    await send_reply(tx, rec, {"ok": False, "error": error_to_wire(error)},
                                     headers=headers_of(spans.get(rec.key)))
                await tx.send(self.topics.state, key=f"{PROGRESS}{tp.partition}".encode(),
                              value=dumps({"next": nxt}), partition=tp.partition)
                await tx.send_offsets_to_transaction({tp: nxt}, self.topics.writers)
        except FENCED:
            await self._fenced(tp)
            return
        except KafkaError as exc:
            # The broker went away mid-transaction (timeouts, a moved coordinator): whether
            # it committed is known only to the next InitProducerId, so the partition goes
            # the fenced way and restarts from its committed offset after the rejoin. The
            # consumer's position is already past this batch: going on would skip it.
            log.warning("transaction on partition %d failed (%r): rejoining", tp.partition, exc)
            await self._fenced(tp)
            return
        finally:
            for span in set(spans.values()):  # one per call, shared by its records
                span.end()
        self._committed[tp.partition] = nxt

    def _partitions(self) -> int:
        """The requests topic's partition count, which places every key. The consumer's
        metadata drops a topic the broker answers for with an error (as one that is still
        loading after a restart does): the count then is the one the last assignment saw,
        never 1, which would refuse most writes as sent to the wrong partition."""
        current = self._writer.partitions_for_topic(self.topics.requests)
        return len(current) if current else self._known_partitions
