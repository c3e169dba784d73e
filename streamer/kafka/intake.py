"""The writer's intake of one request event (kafka/service.py): parsed and checked, its share
for this partition as a pipeline job, where the rest goes (kafka/routing.py), and the
forward or dead letter sent in the partition's transaction."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from consumers.storage.catalog import Catalog
from consumers.write.pipeline import WriteJob, reuse_unchanged
from schemas.errors import NotFoundError, error_to_wire
from schemas.events import loads, parse_write
from schemas.records import DeleteRequest, WriteRequest
from streamer import metrics
from streamer.kafka.batches import Record
from streamer.kafka.common import Topics
from streamer.kafka.replica import Replica
from streamer.kafka.routing import FORWARDED_FROM, Hop, delete_hop, home, rest_event, write_hop
from streamer.kafka.runtimes import Runtimes
from streamer.kafka.wire_checks import check_delete, check_write
from streamer.settings import Settings


class Intake:
    def __init__(self, settings: Settings, topics: Topics, catalog: Catalog, replica: Replica,
                 runtimes: Runtimes, partitions: Callable[[], int]) -> None:
        self.settings = settings
        self.topics = topics
        self.catalog = catalog
        self.replica = replica
        self.runtimes = runtimes
        self._partitions = partitions

    async def job(self, rec: Record) -> tuple[WriteJob | None, Hop]:
        """The job of one event's share on this partition (None: it all belongs elsewhere),
        and where the event goes next (routing.py)."""
        ev = loads(rec.value)
        op, collection_id, payload = parse_write(ev)
        n = self._partitions()
        if isinstance(payload, DeleteRequest):
            delete = check_delete(payload, self.settings)
            hop = delete_hop(collection_id, delete, rec.partition, n, rec.headers)
        else:
            hop = write_hop(collection_id, payload.id, rec.partition, n)
        if not hop.local:
            return None, hop  # checked by the writer that applies it
        state = self.catalog.by_id(collection_id)
        if state is None:
            await self.replica.wait_for(lambda: self.catalog.by_id(collection_id) is not None, 5.0)
            state = self.catalog.by_id(collection_id)
            if state is None:
                raise NotFoundError(f"Collection [{collection_id}] does not exist")
        if isinstance(payload, DeleteRequest):
            if hop.filtered or hop.ids is None:
                # Each writer deletes only its partition's records: a filtered delete is
                # ordered after every write of those records on their own partition.
                part = rec.partition
                limit = None if delete.limit is None else max(0, delete.limit - hop.before)
                scoped = DeleteRequest(ids=delete.ids, where=delete.where,
                                       where_document=delete.where_document, limit=limit)
                return WriteJob(state, scoped, scope=lambda i: home(
                    collection_id, i, n) == part), hop
            return WriteJob(state, DeleteRequest(ids=hop.ids)), hop
        embedder = await self.runtimes.get(state.spec.embedding_function)
        loader = await self.runtimes.get(state.spec.data_loader)
        check_write(op, payload, self.settings, has_embedding_function=embedder is not None,
                    has_loader=loader is not None)
        request = reuse_unchanged(state.store, WriteRequest(op, [payload]))
        return WriteJob(state, request, embedder=embedder, loader=loader), hop

    async def forward(self, tx: AIOKafkaProducer, rec: Record, hop: Hop, deleted: int) -> None:
        """The event on to its next partition, in this partition's transaction."""
        assert hop.to is not None
        source = f"{rec.topic}:{rec.partition}:{rec.offset}"
        value = rec.value if hop.rest is None else rest_event(
            str(loads(rec.value)["collection"]), hop.rest)
        metrics.FORWARDED.inc()
        await tx.send(self.topics.requests, key=rec.key, value=value, partition=hop.to,
                      headers=hop.headers(rec.headers, source, deleted))

    async def dead_letter(self, tx: AIOKafkaProducer, rec: Record, exc: BaseException) -> None:
        headers = [("reason", str(exc).encode()), ("code", error_to_wire(exc)["code"].encode()),
                   ("source", f"{rec.topic}:{rec.partition}:{rec.offset}".encode())]
        # Events mapped from an upstream topic (streamer/sources.py) name their upstream record;
        # forwarded ones the record as first sent.
        headers += [(k, v) for k, v in rec.headers or () if k in ("origin", FORWARDED_FROM)]
        await tx.send(self.topics.dlq, key=rec.key, value=rec.value, headers=headers)
