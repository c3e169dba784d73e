"""Upstream sources: Kafka topics other systems already publish to (object-store
notifications, CDC change events, app JSON lines), mapped by a declarative file
(``consumers/upstream/mapping.py``) into this service's request events.

Each ``SourceBridge`` reads its topic in its own consumer group and hands each batch to
``<prefix>.requests`` in one Kafka transaction together with the upstream offsets
(``send_offsets_to_transaction``): the mapped writes appear exactly once, and the writer then
batches, embeds and dead-letters them like any client's. An event that does not map goes to
``<prefix>.dlq`` with its reason and ``topic:partition:offset``; the rest of the batch flows."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import tomllib
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Gauge

from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.runtime.lifecycle import Component
from consumers.upstream.mapping import MappedRequest, Mapper, SourceMapping, UpstreamRecord
from schemas.errors import InvalidArgumentError, StreamerError, error_to_wire
from schemas.events import delete_event, dumps, write_event
from schemas.records import CollectionSpec, DeleteRequest
from streamer import tracing
from streamer.client.clients import DEFAULT_MODEL, describe
from streamer.kafka.client import KafkaBackend
from streamer.kafka.common import (
    Topics,
    cancel,
    consumer_kwargs,
    supervise,
    transactional_producer,
)
from streamer.kafka.security import client_kwargs
from streamer.settings import Settings

log = logging.getLogger(__name__)

LAG = Gauge("streamer_source_lag", "Upstream records not yet handed to the pipeline", ["source"])
EVENTS = Counter("streamer_source_events_total", "Upstream records by outcome",
                 ["source", "outcome"])


def load_mapping(path: str | Path, variables: Mapping[str, str] | None = None) -> SourceMapping:
    """Read a ``.toml`` or ``.json`` mapping file; errors name the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"{p}: cannot read the source mapping ({exc.strerror})") from None
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(raw.decode())
        elif p.suffix == ".json":
            data = orjson.loads(raw)
        else:
            raise InvalidArgumentError(f"{p}: a source mapping is a .toml or .json file")
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{p}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{p}: a source mapping is a table/object")
    return SourceMapping.from_dict(data, variables, origin=str(p))


def source_files(settings: Settings) -> list[str]:
    return [f.strip() for f in (settings.sources or "").split(",") if f.strip()]


class SourceBridge(Component):
    """One upstream topic -> the requests topic, exactly once (see the module doc)."""

    def __init__(self, settings: Settings, mapping: SourceMapping, *,
                 instance: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.mapping = mapping
        self.topics = Topics.for_settings(settings)
        self.group = mapping.group or f"{settings.kafka_topic_prefix}.source.{mapping.name}"
        self.instance = instance or f"{socket.gethostname()}-{settings.instance_id}"
        self.spec: CollectionSpec | None = None
        self._mapper: Mapper | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def _start(self) -> None:
        backend = KafkaBackend(self.settings)
        await backend.start()
        try:
            self.spec = await self._collection(backend)
        finally:
            await backend.close()
        self._mapper = Mapper(self.mapping, has_loader=self.spec.data_loader is not None,
                              has_embedding_function=self.spec.embedding_function is not None,
                              max_image_bytes=self.settings.max_image_bytes,
                              max_image_pixels=self.settings.max_image_pixels)
        self._producer = await self.parts.start(transactional_producer(
            self.settings, f"source-{self.mapping.name}-{self.instance}"))
        self._consumer = await self.parts.start(AIOKafkaConsumer(
            self.mapping.topic, **client_kwargs(self.settings), **consumer_kwargs(self.settings),
            group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed"))
        # Stopped first: a batch in flight either commits or aborts (then it is read again
        # by whoever owns the partitions next).
        task = supervise(asyncio.create_task(self._loop(), name=f"source-{self.mapping.name}"))
        self.parts.on_stop(partial(cancel, task))
        log.info("source %s: %s -> collection %s", self.mapping.name, self.mapping.topic,
                 self.spec.name)

    async def _collection(self, backend: KafkaBackend) -> CollectionSpec:
        target = self.mapping.collection
        if not target.create:
            return await backend.get_collection(target.name)
        ef = target.embedding_function or await anyio.to_thread.run_sync(
            describe, OpenCLIPEmbeddingFunction(DEFAULT_MODEL))  # hashes the weights: off the loop
        return await backend.create_collection(
            target.name, metadata=target.metadata, embedding_function=ef,
            data_loader=target.data_loader, get_or_create=True,
            space="cosine")  # the built-in OpenCLIP's default_space()

    async def _loop(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500,
                                                   max_records=self.settings.batch_max_items)
            if batches:
                try:
                    await self._hand_off(batches)
                except ProducerFenced:
                    raise
                except KafkaError:
                    # The transaction aborted: read the batch again.
                    log.exception("source %s: hand-off failed; retrying", self.mapping.name)
                    for tp, recs in batches.items():
                        self._consumer.seek(tp, recs[0].offset)
                    await asyncio.sleep(1.0)
            await self._update_lag()

    async def _hand_off(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assert self._producer is not None and self._mapper is not None
        events: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], StreamerError]] = []
        mapped = skipped = 0
        spans: list[Span] = []
        for recs in batches.values():
            for rec in recs:
                origin = [("origin", f"{rec.topic}:{rec.partition}:{rec.offset}".encode())]
                # An upstream record continues the trace its headers carry, or starts one.
                span = tracing.start(f"source {self.mapping.name}",
                                     (tracing.extract(rec.headers),), kind=SpanKind.CONSUMER)
                if span is not None:
                    spans.append(span)
                    origin += tracing.headers_of(span)
                try:
                    requests = self._mapper.map(UpstreamRecord(
                        rec.key, rec.value, tuple(rec.headers or ()), rec.topic, rec.partition,
                        rec.offset, rec.timestamp))
                except StreamerError as exc:
                    dead.append((rec, exc))
                    continue
                mapped += bool(requests)
                skipped += not requests
                events += [(key, dumps(ev), origin) for key, ev in self._events(requests)]
        try:
            async with self._producer.transaction():
                for key, value, headers in events:
                    await self._producer.send(self.topics.requests, key=key, value=value,
                                              headers=headers)
                for rec, err in dead:
                    await self._producer.send(self.topics.dlq, key=rec.key, value=rec.value, headers=[
                        ("reason", str(err).encode()), ("code", error_to_wire(err)["code"].encode()),
                        ("source", f"{rec.topic}:{rec.partition}:{rec.offset}".encode()),
                        ("mapping", self.mapping.name.encode())])
                await self._producer.send_offsets_to_transaction(
                    {tp: recs[-1].offset + 1 for tp, recs in batches.items()}, self.group)
        finally:
            for span in spans:
                span.end()
        for outcome, n in (("mapped", mapped), ("skipped", skipped), ("dead_lettered", len(dead))):
            if n:
                EVENTS.labels(self.mapping.name, outcome).inc(n)
        for rec, err in dead:
            log.warning("source %s: %s:%d:%d dead-lettered: %s", self.mapping.name, rec.topic,
                        rec.partition, rec.offset, err)

    def _events(self, requests: list[MappedRequest]) -> list[tuple[bytes, dict[str, Any]]]:
        """Request events keyed ``collection/id``, as ``KafkaBackend.write`` sends them."""
        assert self.spec is not None
        cid = self.spec.id
        now = time.time_ns()
        out: list[tuple[bytes, dict[str, Any]]] = []
        for i, req in enumerate(requests):
            if isinstance(req, DeleteRequest):
                out += [(f"{cid}/{id_}".encode(), delete_event(cid, DeleteRequest(ids=[id_])))
                        for id_ in req.ids or []]
            else:
                out += [(f"{cid}/{it.id}".encode(), write_event(req.op, cid, it, now, i))
                        for it in req.items]
        return out

    async def _update_lag(self) -> None:
        assert self._consumer is not None
        lag = 0
        for tp in self._consumer.assignment():
            end = self._consumer.last_stable_offset(tp)
            if end is None:
                end = self._consumer.highwater(tp)
            if end is not None:
                lag += max(0, end - await self._consumer.position(tp))
        LAG.labels(self.mapping.name).set(lag)


class Sources(Component):
    """The sources of one ``streamer serve`` process (``settings.sources``), started after
    the service (they resolve collections through it) and stopped before it."""

    def __init__(self, settings: Settings, mappings: Sequence[SourceMapping] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._mappings = mappings
        self.bridges: list[SourceBridge] = []

    async def _start(self) -> None:
        mappings = self._mappings if self._mappings is not None else \
            await anyio.to_thread.run_sync(
                lambda: [load_mapping(f) for f in source_files(self.settings)])
        names = [m.name for m in mappings]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"Source names must be unique, got {', '.join(names)}")
        for m in mappings:
            self.bridges.append(await self.parts.start(SourceBridge(self.settings, m)))
