"""The service's read side: RPCs (query, get, count, collection admin) on the queries topic,
answered from the local replica once it has applied the caller's writes (session
consistency), with the reply on ``reply_to`` under the request's ``correlation_id``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, MessageSizeTooLargeError
from opentelemetry.trace import Span, SpanKind

from consumers.embedding.embedq import embed_query
from consumers.reads.query import get_result, query_vectors, search_result
from consumers.reads.search import embed_text_queries, run_searches
from consumers.reads.search_gather import shard_candidates, shard_stats
from consumers.runtime.lifecycle import Component
from consumers.storage.catalog import Catalog, CollectionState
from consumers.validation import admin
from schemas.errors import (
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    RequestTimeoutError,
    SchemaError,
    StreamerError,
    error_to_wire,
)
from schemas.events import READ_OPS, dumps, encode_result, loads
from schemas.records import CollectionSpec
from streamer import metrics, tracing
from streamer.kafka.common import (
    Topics,
    cancel,
    consumer_kwargs,
    producer_kwargs,
    supervise,
)
from streamer.kafka.replica import Replica
from streamer.kafka.runtimes import Runtimes
from streamer.kafka.security import client_kwargs
from streamer.kafka.shards import Shard
from streamer.kafka.wire_checks import checked_get, checked_query
from streamer.settings import Settings

log = logging.getLogger(__name__)


def header(rec: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for k, v in rec.headers or ():
        if k == name:
            return bytes(v).decode()
    return None


def expired(rec: ConsumerRecord[bytes, bytes]) -> bool:
    """Past the caller's ``deadline_ms``: nobody waits for the answer any more."""
    deadline = header(rec, "deadline_ms")
    return deadline is not None and deadline.isdigit() and int(deadline) < time.time() * 1000


async def send_reply(producer: AIOKafkaProducer, rec: ConsumerRecord[bytes, bytes],
                     payload: dict[str, Any], shard: Shard | None = None,
                     headers: tracing.Headers | None = None) -> None:
    """A sharded reader answers as ``<correlation_id>#<K>``: the caller gathers one per shard.
    ``headers`` carry a trace context; by default the current span's."""
    reply_to = header(rec, "reply_to")
    corr = header(rec, "correlation_id")
    if reply_to is None or corr is None:
        return
    if shard is not None:
        corr = f"{corr}#{shard.index}"
    extra = tracing.inject([]) if headers is None else headers
    await producer.send(reply_to, value=dumps(payload),
                        headers=[("correlation_id", corr.encode()), *extra])


class Reader(Component):
    def __init__(self, settings: Settings, topics: Topics, catalog: Catalog, replica: Replica,
                 runtimes: Runtimes, embed_thread: Executor,
                 lock: Callable[[str], anyio.Lock]) -> None:
        super().__init__()
        self.settings = settings
        self.topics = topics
        self.catalog = catalog
        self.replica = replica
        self.runtimes = runtimes
        self.embed_thread = embed_thread
        self.lock = lock
        self.shard = Shard.of(settings)

    async def _start(self) -> None:
        kw = client_kwargs(self.settings)
        self._replies = await self.parts.start(
            AIOKafkaProducer(**kw, **producer_kwargs(self.settings), acks="all",
                             enable_idempotence=True))
        self._consumer = await self.parts.start(
            AIOKafkaConsumer(self.topics.queries, **kw, **consumer_kwargs(self.settings),
                             group_id=self.topics.readers,
                             enable_auto_commit=False, auto_offset_reset="earliest"))
        task = supervise(asyncio.create_task(self._read_loop(), name="reader"))
        self.parts.on_stop(partial(cancel, task))

    async def _read_loop(self) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                batches = await self._consumer.getmany(timeout_ms=50, max_records=256)
                for records in batches.values():
                    for rec in records:
                        tg.start_soon(self._answer, rec)
                if batches:
                    try:
                        await self._consumer.commit()
                    except CommitFailedError as exc:
                        # We stalled past the session and the group moved on: the new owner
                        # answers these queries again, and the client keeps the first reply.
                        log.warning("reader offsets not committed (%s); rejoining", exc)

    async def _answer(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        if expired(rec):
            metrics.QUERIES.labels("unknown", "expired").inc()
            return
        with tracing.span("reader", parent=tracing.extract(rec.headers),
                          kind=SpanKind.CONSUMER) as span:
            await self._answer_traced(rec, span)

    async def _answer_traced(self, rec: ConsumerRecord[bytes, bytes], span: Span | None) -> None:
        started = time.perf_counter()
        op: Any = "unknown"
        try:
            ev = loads(rec.value)
            op = ev.get("op")
            if span is not None:
                span.update_name(f"reader {op}")
            if op not in READ_OPS:
                raise SchemaError(f"Unknown op {op!r}; expected one of {', '.join(READ_OPS)}")
            target = ev.get("shard")
            if self.shard is not None and target is not None and target != self.shard.index:
                return  # an admin op, answered by one shard only (kafka/scatter.py)
            after = {int(p): int(o) for p, o in (ev.get("after") or {}).items()
                     if self.shard is None or self.shard.owns(int(p))}
            with tracing.span("reader session wait"):
                if after and not await self.replica.wait_for(
                        lambda: self.replica.caught_up(after),
                        self.settings.kafka_request_timeout_s):
                    raise RequestTimeoutError(
                        "Timed out waiting for this session's writes to apply")
            result = await self._dispatch(op, ev)
            payload: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:
            if not isinstance(exc, StreamerError):
                log.exception("query failed")
            payload = {"ok": False, "error": error_to_wire(exc)}
        label = op if op in READ_OPS else "unknown"
        metrics.QUERIES.labels(label, "ok" if payload["ok"] else "error").inc()
        metrics.QUERY_SECONDS.labels(label).observe(time.perf_counter() - started)
        try:
            await send_reply(self._replies, rec, payload, self.shard)
        except MessageSizeTooLargeError:
            # One oversized answer must not stop the reader: the caller gets a typed refusal.
            limit = self.settings.max_message_bytes
            await send_reply(self._replies, rec, {"ok": False, "error": error_to_wire(
                LimitExceededError(f"The reply is over the {limit}-byte message limit; ask "
                                   "for fewer records or fields"))})

    def _state(self, ev: dict[str, Any]) -> CollectionState:
        state = self.catalog.by_id(str(ev.get("collection")))
        if state is None:
            raise NotFoundError(f"Collection [{ev.get('name') or ev.get('collection')}] does not exist")
        return state

    async def _dispatch(self, op: str, ev: dict[str, Any]) -> Any:
        if op == "sync":
            return None
        if op == "count":
            return self._state(ev).store.count()
        if op == "get":
            state = self._state(ev)
            request = checked_get(ev)
            async with self.lock(state.spec.id):
                result = await anyio.to_thread.run_sync(get_result, state, request)
            return encode_result(result)
        if op == "query":
            state = self._state(ev)
            embedder = await self.runtimes.get(state.spec.embedding_function)
            req = checked_query(ev, self.settings, has_embedding_function=embedder is not None)
            loader = await self.runtimes.get(state.spec.data_loader)
            with tracing.span("reader embed"):
                vectors = await query_vectors(req, embedder, loader, self.embed_thread)
            with tracing.span("reader search"):
                async with self.lock(state.spec.id):
                    result = await anyio.to_thread.run_sync(search_result, state, req, vectors)
            return encode_result(result)
        if op == "search":
            state = self._state(ev)
            searches = ev.get("searches")
            if not isinstance(searches, list) or not searches or \
                    not all(isinstance(s, dict) for s in searches):
                raise SchemaError("Field 'searches' must be a non-empty list of Search objects")
            phase = ev.get("phase")  # a sharded search's round (kafka/scatter.py)
            if phase == "stats":
                async with self.lock(state.spec.id):
                    return await anyio.to_thread.run_sync(shard_stats, state, searches)
            embedder = await self.runtimes.get(state.spec.embedding_function)

            async def embed(texts: list[str]) -> list[Any]:
                return await embed_query(self.embed_thread, embedder, texts)
            with tracing.span("reader embed"):
                await embed_text_queries(searches, None if embedder is None else embed)
            with tracing.span("reader search"):
                async with self.lock(state.spec.id):
                    if phase == "candidates":
                        return await anyio.to_thread.run_sync(
                            shard_candidates, state, searches, ev.get("stats"))
                    return await anyio.to_thread.run_sync(run_searches, state, searches)
        return await self._admin(op, ev)

    async def _admin(self, op: str, ev: dict[str, Any]) -> Any:
        """The rules are ``consumers.validation.admin``'s (the embedded engine runs the same); a decided
        spec is published on the collections topic and this waits for the replica to adopt it."""
        if op == "list_collections":
            return [s.to_dict() for s in admin.listing(self.catalog.specs(), ev.get("limit"),
                                                       ev.get("offset"))]
        name = ev.get("name")
        if not isinstance(name, str):
            raise SchemaError(f"Field 'name' must be a string, got {str(name)[:40]}")
        if op == "get_collection":
            return admin.lookup(self.catalog.specs(), name).to_dict()
        if op == "create_collection":
            created = admin.create(self.catalog.specs(), name, metadata=ev.get("metadata"),
                                   embedding_function=ev.get("embedding_function"),
                                   data_loader=ev.get("data_loader"),
                                   get_or_create=bool(ev.get("get_or_create")),
                                   space=str(ev.get("space") or "l2"),
                                   sparse=ev.get("sparse"), hnsw=ev.get("hnsw"),
                                   client_embedding_function=ev.get("client_embedding_function"))
            if created.new:
                await self._check_runtimes(created.spec)
                await self._publish_spec(name, created.spec)
            return created.spec.to_dict()
        if op == "delete_collection":
            admin.lookup(self.catalog.specs(), name)
            await self._replies.send_and_wait(self.topics.collections, key=name.encode(), value=None)
            await self.replica.wait_for(lambda: name not in self.catalog.collections, 10.0)
            return None
        if op == "modify_collection":
            new = admin.modify(self.catalog.specs(), name, new_name=ev.get("new_name"),
                               metadata=ev.get("metadata"), configuration=ev.get("configuration"))
            await self._publish_spec(new.name, new)
            if new.name != name:  # the new key first: replicas rename, then drop the old key
                await self._replies.send_and_wait(self.topics.collections, key=name.encode(),
                                                  value=None)
            return new.to_dict()
        raise SchemaError(f"Unknown op {op!r}")

    async def _check_runtimes(self, spec: CollectionSpec) -> None:
        """Built before publishing: a spec every replica fails to rebuild is poison."""
        try:
            await self.runtimes.get(spec.embedding_function)
            await self.runtimes.get(spec.data_loader)
        except Exception as exc:
            raise InvalidArgumentError(f"Invalid embedding function or data loader: {exc}") \
                from exc

    async def _publish_spec(self, name: str, spec: CollectionSpec) -> None:
        await self._replies.send_and_wait(self.topics.collections, key=name.encode(),
                                          value=dumps({"spec": spec.to_dict()}))
        await self.replica.wait_for(
            lambda: (s := self.catalog.collections.get(name)) is not None and s.spec.id == spec.id,
            10.0)
