"""``KafkaClient`` / ``AsyncKafkaClient``: the collection API over Kafka.

Writes become one event per record on the requests topic, keyed ``collection/id`` (one
partition per record, in order) and return once Kafka has them (acks=all). The client keeps
the highest offset it wrote per partition and sends it with every read; the server answers
once its replica has applied them, so a Chroma-style "add then query" sees its own writes.
``wait=True`` (or ``wait_writes=True``) also waits for the writer's verdict and raises its
error. Reads are RPCs on the queries topic answered on the replies topic by correlation id.

Built-in embedding functions and loaders run server-side (their name + config travel in the
collection spec). Any other callable cannot cross the wire: the client runs it itself and
sends embeddings, as Chroma's HttpClient does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import anyio
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from opentelemetry.trace import SpanKind

from consumers.embedding.embed import EmbeddingFunction
from consumers.loading.decode import check_limits, compress_array
from consumers.loading.load import DataLoader, load_images
from consumers.runtime.lifecycle import Component
from consumers.write.pipeline import call_embedder
from schemas.errors import (
    LimitExceededError,
    RequestTimeoutError,
    UnavailableError,
    error_from_wire,
)
from schemas.events import (
    decode_result,
    delete_event,
    dumps,
    get_event,
    loads,
    query_event,
    write_event,
)
from schemas.records import (
    CollectionSpec,
    DeleteRequest,
    GetRequest,
    ImageInput,
    Modality,
    QueryRequest,
    WriteRequest,
)
from streamer import tracing
from streamer.client.clients import AsyncClient, Client
from streamer.kafka.common import (
    Topics,
    cancel,
    consumer_kwargs,
    ensure_topics,
    partitions,
    producer_kwargs,
    rpc_headers,
    supervise,
)
from streamer.kafka.routing import SCOPE
from streamer.kafka.scatter import Scatter
from streamer.kafka.security import client_kwargs, describe, preflight
from streamer.kafka.shards import group_live, read_layout
from streamer.kafka.wire_checks import check_document, check_image
from streamer.settings import Settings

log = logging.getLogger(__name__)

#: how long before a read's deadline an unanswered call checks for a reader, at most
READERS_CHECK_S = 1.0


class KafkaBackend(Component):
    in_process = False

    def __init__(self, settings: Settings, *, wait_writes: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.max_batch_size = settings.max_batch_records
        self.topics = Topics.for_settings(settings)
        self.wait_writes = wait_writes
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._session: dict[int, int] = {}
        self._stale = False
        self._renewing = asyncio.Lock()
        self._scatter: Scatter | None = None

    async def _start(self) -> None:
        await preflight(self.settings)  # a refused connection fails here, typed and fast
        try:
            await self._connect()
        except KafkaError as exc:
            raise UnavailableError(f"Cannot connect to Kafka at {describe(self.settings)}: "
                                   f"{exc}") from exc

    async def _connect(self) -> None:
        await ensure_topics(self.settings, self.topics)
        self._producer = await self._new_producer()
        self.parts.on_stop(lambda: self._producer.stop())  # the current one: it is renewed
        self._consumer = await self.parts.start(AIOKafkaConsumer(
            **client_kwargs(self.settings), **consumer_kwargs(self.settings),
            enable_auto_commit=False, isolation_level="read_committed"))
        parts = await partitions(self._consumer, self.topics.replies)
        tps = [TopicPartition(self.topics.replies, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the position now so no reply slips past
            await self._consumer.position(tp)
        task = supervise(asyncio.create_task(self._read_replies(), name="replies"))
        self.parts.on_stop(partial(cancel, task))
        count = await read_layout(self.settings, client_kwargs(self.settings))
        if count is not None:  # a sharded deployment: reads scatter and gather (kafka/scatter.py)
            self._scatter = scatter = Scatter(self, count)
            self.parts.on_stop(scatter.stop)

    async def _new_producer(self) -> AIOKafkaProducer:
        # A send gives up after the request timeout instead of aiokafka's 40 s default.
        producer = AIOKafkaProducer(**client_kwargs(self.settings), **producer_kwargs(self.settings),
                                    acks="all",
                                    enable_idempotence=True, linger_ms=2,
                                    request_timeout_ms=int(self.settings.kafka_request_timeout_s * 1000))
        try:
            await producer.start()
        except BaseException:
            with anyio.CancelScope(shield=True):  # a timed-out call must still close it
                await producer.stop()
            raise
        return producer

    @contextlib.asynccontextmanager
    async def _producing(self) -> AsyncIterator[AIOKafkaProducer]:
        """aiokafka's errors become the typed, retriable ``UnavailableError``. A producer that
        failed is replaced before the next send: batches that expired while the broker was
        away leave an idempotent producer's sequence numbers broken for good
        (OutOfOrderSequenceNumber on every later send)."""
        producer = None
        try:
            async with self._renewing:
                if self._stale:  # replaced lazily: starting a producer needs the broker
                    old, self._producer = self._producer, await self._new_producer()
                    self._stale = False
                    with anyio.CancelScope(shield=True):
                        await old.stop()
            producer = self._producer
            yield producer
        except MessageSizeTooLargeError as exc:  # the broker is fine: retrying cannot help
            raise LimitExceededError(f"Kafka refused the event as too large: {exc}") from exc
        except KafkaError as exc:
            if producer is self._producer:
                self._stale = True
            raise UnavailableError(f"Kafka is unavailable: {exc!r}") from exc

    close = Component.stop

    async def _read_replies(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for rec in records:
                    corr = next((v.decode() for k, v in rec.headers or () if k == "correlation_id"), None)
                    fut = self._pending.pop(corr, None) if corr else None
                    if fut is not None and not fut.done():
                        fut.set_result(loads(rec.value))

    def _expect(self) -> tuple[str, asyncio.Future[dict[str, Any]]]:
        corr = uuid.uuid4().hex
        return corr, self.expect(corr)

    def expect(self, corr: str) -> asyncio.Future[dict[str, Any]]:
        """The future the reply under ``corr`` resolves (``forget`` it if none will come)."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[corr] = fut
        return fut

    def forget(self, corr: str) -> None:
        self._pending.pop(corr, None)

    async def publish_query(self, value: bytes, corr: str) -> None:
        """A read on the queries topic, answered on the replies topic under ``corr``; sent
        within the request timeout, else the retriable ``UnavailableError``."""
        try:
            with anyio.fail_after(self.settings.kafka_request_timeout_s):
                async with self._producing() as producer:
                    await producer.send_and_wait(
                        self.topics.queries, value=value, headers=tracing.inject(rpc_headers(
                            self.topics.replies, corr, self.settings.kafka_request_timeout_s)))
        except TimeoutError:
            raise UnavailableError("Kafka did not take the request in time") from None

    async def _await(self, corr: str, fut: asyncio.Future[dict[str, Any]],
                     timeout: float | None = None) -> Any:
        try:
            with anyio.fail_after(self.settings.kafka_request_timeout_s if timeout is None
                                  else timeout):
                reply = await fut
        except TimeoutError:
            self.forget(corr)
            raise RequestTimeoutError("No reply from the streamer service in time") from None
        if not reply.get("ok"):
            raise error_from_wire(reply.get("error") or {})
        return reply.get("result")

    async def _rpc(self, payload: dict[str, Any]) -> Any:
        with tracing.span(f"streamer {payload.get('op')}", kind=SpanKind.CLIENT):
            return await self._rpc_traced(payload)

    async def _rpc_traced(self, payload: dict[str, Any]) -> Any:
        payload = {**payload, "after": {str(p): o for p, o in self._session.items()}}
        if self._scatter is not None:
            return await self._scatter.call(payload)
        value = self.sized(dumps(payload), f"The {payload.get('op')} request")
        corr, fut = self._expect()
        # One budget for the whole call, sending included: a call answers or fails in time.
        deadline = anyio.current_time() + self.settings.kafka_request_timeout_s
        try:
            await self.publish_query(value, corr)
        except (UnavailableError, LimitExceededError):
            self.forget(corr)
            raise
        # Shortly before the deadline, a call still unanswered asks whether any reader is
        # there at all: a service that is not running, or still starting, is said so in time.
        margin = min(READERS_CHECK_S, self.settings.kafka_request_timeout_s / 4)
        with anyio.move_on_after(deadline - anyio.current_time() - margin):
            await asyncio.shield(fut)
        if not fut.done() and not await self._readers_live(margin):
            self.forget(corr)
            raise UnavailableError(
                f"No streamer service reads {self.topics.queries} yet (its reader group "
                f"{self.topics.readers} has no member): none is running, or it is still "
                f"starting. The request expires unanswered; retry once the service is up.")
        return await self._await(corr, fut, max(0.0, deadline - anyio.current_time()))

    async def _readers_live(self, within: float) -> bool:
        """Whether the reader group has a member; True when Kafka cannot tell in time (the
        call then ends as any unanswered one)."""
        admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
        try:
            with anyio.fail_after(within):
                await admin.start()
                return await group_live(admin, self.topics.readers)
        except (KafkaError, TimeoutError):
            return True
        finally:
            with anyio.CancelScope(shield=True):
                await admin.close()

    # ---- collections --------------------------------------------------------------
    async def create_collection(self, name: str, *, metadata: dict[str, Any] | None,
                                embedding_function: dict[str, Any] | None,
                                data_loader: dict[str, Any] | None,
                                get_or_create: bool, space: str = "l2",
                                sparse: dict[str, Any] | None = None,
                                hnsw: dict[str, Any] | None = None,
                                client_embedding_function: dict[str, Any] | None = None
                                ) -> CollectionSpec:
        return CollectionSpec.from_dict(await self._rpc({
            "op": "create_collection", "name": name, "metadata": metadata,
            "embedding_function": embedding_function, "data_loader": data_loader,
            "get_or_create": get_or_create, "space": space, "sparse": sparse, "hnsw": hnsw,
            "client_embedding_function": client_embedding_function}))

    async def get_collection(self, name: str) -> CollectionSpec:
        return CollectionSpec.from_dict(await self._rpc({"op": "get_collection", "name": name}))

    async def list_collections(self, limit: int | None = None,
                               offset: int | None = None) -> list[CollectionSpec]:
        return [CollectionSpec.from_dict(d) for d in await self._rpc(
            {"op": "list_collections", "limit": limit, "offset": offset})]

    async def delete_collection(self, name: str) -> None:
        await self._rpc({"op": "delete_collection", "name": name})

    async def modify_collection(self, name: str, *, new_name: str | None,
                                metadata: dict[str, Any] | None,
                                configuration: dict[str, Any] | None = None) -> CollectionSpec:
        return CollectionSpec.from_dict(await self._rpc(
            {"op": "modify_collection", "name": name, "new_name": new_name, "metadata": metadata,
             "configuration": configuration}))

    # ---- records ------------------------------------------------------------------
    async def _client_side_embed(self, spec: CollectionSpec, req: WriteRequest,
                                 embedder: EmbeddingFunction | None,
                                 loader: DataLoader | None) -> None:
        """Run a user's own callables here, since they cannot run in the service."""
        custom_ef = embedder is not None and spec.embedding_function is None
        custom_loader = loader is not None and spec.data_loader is None
        todo = [it for it in req.items if it.embedding is None and
                (it.document is not None or it.image is not None or it.uri is not None)]
        if not todo or not (custom_ef or (custom_loader and any(it.uri for it in todo))):
            return
        inputs: list[Any] = []
        uris = [it.uri for it in todo if it.uri is not None and it.document is None]
        loaded = iter(await load_images(loader, uris) if uris else ())
        for it in todo:
            if it.document is not None:
                inputs.append(it.document)
            elif it.image is not None:
                inputs.append(it.image)
            else:
                inputs.append(next(loaded))
        assert embedder is not None
        vectors = await anyio.to_thread.run_sync(call_embedder, embedder, inputs)
        for it, vec in zip(todo, vectors, strict=True):
            it.embedding = vec
            if it.image is not None:  # the pixels stay here; the record is still an image
                it.image = None
                it.embedded_from = Modality.IMAGE

    def sized(self, value: bytes, what: str) -> bytes:
        """Refused here, before anything is sent, rather than by the producer or the broker."""
        limit = self.settings.max_message_bytes
        if len(value) > limit:
            raise LimitExceededError(f"{what} is {len(value)} bytes on the wire, over the limit of "
                                     f"{limit} (max_image_bytes, max_document_bytes)")
        return value

    async def _compact(self, images: list[tuple[str, ImageInput]]) -> list[ImageInput]:
        """Pixel arrays compressed losslessly (exact values, a fraction of the bytes), after
        the pixel limit and before the byte limit; files are sent as they are."""
        cfg = self.settings

        def one(name: str, image: ImageInput) -> ImageInput:
            if isinstance(image, np.ndarray):
                check_limits(image, max_pixels=cfg.max_image_pixels, max_bytes=1 << 62, what=name)
                image = compress_array(image)
            check_image(image, cfg, name)
            return image

        return list(await asyncio.gather(*(anyio.to_thread.run_sync(one, name, image)
                                           for name, image in images)))

    async def write(self, spec: CollectionSpec, request: WriteRequest | DeleteRequest, *,
                    embedder: EmbeddingFunction | None, loader: DataLoader | None,
                    wait: bool) -> int:
        op = "delete" if isinstance(request, DeleteRequest) else request.op
        with tracing.span(f"streamer {op}", kind=SpanKind.PRODUCER):
            return await self._write(spec, request, embedder=embedder, loader=loader, wait=wait)

    async def _write(self, spec: CollectionSpec, request: WriteRequest | DeleteRequest, *,
                     embedder: EmbeddingFunction | None, loader: DataLoader | None,
                     wait: bool) -> int:
        if isinstance(request, DeleteRequest):
            return await self._delete(spec, request, wait or self.wait_writes)
        for it in request.items:
            check_document(it.id, it.document, self.settings)
        await self._client_side_embed(spec, request, embedder, loader)
        images = [(it, image) for it in request.items if (image := it.image) is not None]
        compact = await self._compact([(f"Record {it.id}", image) for it, image in images])
        for (it, _), image in zip(images, compact, strict=True):
            it.image = image
        now = time.time_ns()
        await self._send([(f"{spec.id}/{it.id}".encode(), write_event(request.op, spec.id, it, now, i),
                           None) for i, it in enumerate(request.items)],
                         wait=wait or self.wait_writes)
        return 0

    async def _delete(self, spec: CollectionSpec, request: DeleteRequest, wait: bool) -> int:
        """By ids: one event per id, keyed like its writes (ordered after them). By filter:
        one event on every partition, each sent after this client's earlier writes there;
        each partition's writer deletes its own partition's matches, so the delete sees all
        of them. A filtered delete waits for the writers' verdicts: Chroma returns how many
        records it matched."""
        if request.where is None and request.where_document is None:
            ids = request.ids or []
            await self._send([(f"{spec.id}/{i}".encode(),
                               delete_event(spec.id, DeleteRequest(ids=[i])), None) for i in ids],
                             wait=wait)
            return len(ids)  # Chroma counts the ids named, found or not
        async with self._producing() as producer:
            targets = sorted(await producer.partitions_for(self.topics.requests))
        key = spec.id.encode()
        if request.limit is None:
            ev = delete_event(spec.id, request)
            replies = await self._send([(key, ev, p) for p in targets], wait=True, scoped=True)
            return sum(r["deleted"] for r in replies)
        # A limit spans partitions: ask them one at a time for what is left of it.
        total = 0
        for p in targets:
            left = request.limit - total
            if left <= 0:
                break
            part = DeleteRequest(ids=request.ids, where=request.where,
                                 where_document=request.where_document, limit=left)
            total += (await self._send([(key, delete_event(spec.id, part), p)], wait=True,
                                       scoped=True))[0]["deleted"]
        return total

    async def _send(self, events: list[tuple[bytes, dict[str, Any], int | None]],
                    wait: bool, scoped: bool = False) -> list[Any]:
        """Produce events (acks=all), remember their offsets for session reads and, with
        ``wait``, return the writers' results (raising the first error). ``scoped``: filtered
        deletes, one per partition, each for its partition's records only (routing.py)."""
        values = [self.sized(dumps(ev), f"Record {ev.get('id', ev['collection'])}")
                  for _, ev, _ in events]
        sends = []
        waits = []
        traced = tracing.inject([(SCOPE, b"partition")] if scoped else [])  # and its span
        try:
            async with self._producing() as producer:
                for (key, _, partition), value in zip(events, values, strict=True):
                    headers = list(traced)
                    if wait:
                        corr, fut = self._expect()
                        waits.append((corr, fut))
                        headers += [("reply_to", self.topics.replies.encode()),
                                    ("correlation_id", corr.encode())]
                    sends.append(await producer.send(self.topics.requests, key=key,
                                                     value=value, partition=partition,
                                                     headers=headers))
                metas = await asyncio.gather(*sends, return_exceptions=True)
                failure = next((m for m in metas if isinstance(m, BaseException)), None)
                if failure is not None:
                    raise failure
        except (UnavailableError, LimitExceededError):
            for corr, _ in waits:
                self.forget(corr)
            raise
        for meta in metas:
            assert not isinstance(meta, BaseException)
            self._session[meta.partition] = max(self._session.get(meta.partition, -1), meta.offset)
        results = []
        errors = []
        for corr, fut in waits:
            try:
                results.append(await self._await(corr, fut))
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return results

    async def get(self, spec: CollectionSpec, request: GetRequest) -> dict[str, Any]:
        result: dict[str, Any] = decode_result(await self._rpc(get_event(spec.id, request)))
        return result

    async def query(self, spec: CollectionSpec, request: QueryRequest, *,
                    embedder: EmbeddingFunction | None,
                    loader: DataLoader | None) -> dict[str, Any]:
        if request.embeddings is None and spec.embedding_function is None and embedder is not None:
            inputs: list[Any] = list(request.texts or request.images or [])
            if request.uris is not None and loader is not None:
                inputs = await load_images(loader, request.uris)
            request.embeddings = await anyio.to_thread.run_sync(call_embedder, embedder, inputs)
            request.texts = request.images = request.uris = None
        if request.images is not None:
            request.images = await self._compact([(f"Query image {i}", image)
                                                  for i, image in enumerate(request.images)])
        result: dict[str, Any] = decode_result(await self._rpc(query_event(spec.id, request)))
        return result

    async def search(self, spec: CollectionSpec,
                     searches: list[dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self._rpc(
            {"op": "search", "collection": spec.id, "searches": searches})
        return result

    async def count(self, spec: CollectionSpec) -> int:
        n: int = await self._rpc({"op": "count", "collection": spec.id})
        return n

    async def sync(self) -> None:
        """A ``sync`` RPC carries this session's offsets like any read: it is answered once
        the replica answering reads has applied every write sent so far (on every shard)."""
        await self._rpc({"op": "sync"})


class AsyncKafkaClient(AsyncClient):
    def __init__(self, bootstrap_servers: str | None = None, *, wait_writes: bool = False,
                 settings: Settings | None = None, **overrides: Any) -> None:
        if bootstrap_servers is not None:
            overrides["kafka_bootstrap"] = bootstrap_servers
        settings = settings or Settings.from_env(**overrides)
        self._kafka = KafkaBackend(settings, wait_writes=wait_writes)
        super().__init__(backend=self._kafka)
        self._started = False

    async def start(self) -> AsyncKafkaClient:
        if not self._started:
            self._started = True
            await self._kafka.start()
        return self


class KafkaClient(Client):
    """Synchronous Kafka client: the same API and results as ``streamer.Client``."""

    def __init__(self, bootstrap_servers: str | None = None, **kwargs: Any) -> None:
        super().__init__(_async=AsyncKafkaClient(bootstrap_servers, **kwargs))


__all__ = ["AsyncKafkaClient", "KafkaBackend", "KafkaClient"]
