"""What a websocket request does. Frames are orjson text in the Kafka topics' schema
(``schemas.events``), each with ``"v": 1`` and a ``correlation_id`` echoed in its reply:

- ``query`` (texts | images | uris | embeddings, n_results, where, where_document, include),
  ``get``, ``count``, ``list_collections``, ``get_collection``;
- ``create_collection`` (``name``, ``metadata``, built-in ``embedding_function`` /
  ``data_loader`` as ``{"name", "config"}``, ``get_or_create``), ``delete_collection``;
- per-record write events ``add``/``update``/``upsert``/``delete`` (``wait``: default true),
  or one whole call: ``ids`` with the parallel lists ``embeddings, documents, images, uris,
  metadatas`` (validated together, so a bad call writes nothing, as in the Python client);
- ``subscribe`` (one query input, ``threshold`` or ``top_k``, optional where/where_document,
  include among documents/metadatas/uris, an optional client-chosen ``subscription`` id, and
  in threshold mode ``stream`` + ``resume_after`` to resume, see ``gateway.live``) ->
  ``{"subscription", "initial", "stream", "seq"}``, then pushes ``{"event": "match",
  "subscription", "id", "seq", "distance", ...}``; ``unsubscribe``.

Replies are ``{"v": 1, "correlation_id", "ok": true, "result"}`` or ``{"ok": false, "error":
{code, name, message, retriable}}``. A collection is named by ``collection`` (its id, as on
Kafka) or ``name``. Every call goes through the ``AsyncCollection`` method the Python client
uses, over the same ``Backend``, so validation, errors and results are the client's.

Concurrent text/image queries are micro-batched per embedding function: whatever queued up
while the model was busy goes into the next model call, and a lone query is never held back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import numpy as np

from consumers.embedding.embed import EmbeddingFunction
from consumers.embedding.embedq import embed_query
from consumers.loading.load import DataLoader
from consumers.reads.query import query_vectors
from consumers.storage.catalog import Catalog
from consumers.validation.validate import prepare_query
from consumers.write.batch import BatchConfig, MicroBatcher
from schemas.errors import (
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    ResumeExpiredError,
    SchemaError,
    StreamerError,
)
from schemas.events import decode_array, decode_image, encode_array, encode_result, parse_write
from schemas.records import CollectionSpec, DeleteRequest, Vector
from streamer.client.backend import Backend
from streamer.client.collection import AsyncCollection
from streamer.gateway.admin import ADMIN_OPS, collection_admin
from streamer.gateway.auth import Grant, Mode
from streamer.gateway.live import LIVE_FIELDS, LiveHub, Push, Subscription
from streamer.kafka.common import supervise
from streamer.kafka.wire_checks import check_delete, check_image
from streamer.settings import Settings

Resolver = Callable[[CollectionSpec],
                    Awaitable[tuple[EmbeddingFunction | None, DataLoader | None]]]
READ_OPS = ("query", "get", "search", "count", "list_collections", "get_collection", "subscribe",
            "unsubscribe")
WRITE_OPS = ("add", "update", "upsert", "delete")
OPS = READ_OPS + WRITE_OPS + ADMIN_OPS


class Local(Protocol):
    """The process-local side the gateway runs next to: the embedded ``Engine`` or the Kafka
    ``Service`` (its replica catalog). Live queries hook its catalog."""

    catalog: Catalog

    @property
    def embed_thread(self) -> Executor: ...

    def lock(self, collection_id: str) -> anyio.Lock: ...


class Session(Protocol):
    grant: Grant
    subscriptions: dict[str, Subscription]

    def push(self, payload: dict[str, Any]) -> None: ...


@dataclass(eq=False)
class _Pending:
    inputs: list[Any]
    future: asyncio.Future[list[Vector]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class EmbedBatcher:
    """One model call for the query inputs of every request queued for one embedder."""

    def __init__(self, embedder: EmbeddingFunction, pool: Executor,
                 max_items: int) -> None:
        self._embedder = embedder
        self._pool = pool
        # max_wait=0: take what is queued and go; requests that arrive while the model runs
        # form the next batch, so batches grow with load and add no latency at rest.
        self._batcher: MicroBatcher[_Pending] = MicroBatcher(BatchConfig(max_items=max_items,
                                                                         max_wait=0.0))
        self._task = supervise(asyncio.create_task(self._run(), name="query-embed"))

    async def embed(self, inputs: list[Any]) -> list[Vector]:
        pending = _Pending(inputs)
        await self._batcher.put(pending)
        return await pending.future

    async def _run(self) -> None:
        while batch := await self._batcher.next_batch():
            batch = [p for p in batch if not p.future.done()]
            try:
                vectors = await self._call([x for p in batch for x in p.inputs])
            except Exception:  # one bad input must not fail its neighbours
                for p in batch:
                    await self._alone(p)
                continue
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(vectors[start:start + len(p.inputs)])
                start += len(p.inputs)

    async def _alone(self, p: _Pending) -> None:
        try:
            result = await self._call(p.inputs)
        except Exception as exc:  # the request's own error, as if unbatched
            if not p.future.done():
                p.future.set_exception(exc)
            return
        if not p.future.done():
            p.future.set_result(result)

    async def _call(self, inputs: list[Any]) -> list[Vector]:
        return await embed_query(self._pool, self._embedder, inputs)

    async def close(self) -> None:
        self._batcher.close()
        await self._task


def _arrays(ev: dict[str, Any], key: str, *, vectors: bool) -> list[Any] | None:
    raw = ev.get(key)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise SchemaError(f"Field {key!r} must be a list of array objects")
    if not vectors:  # images: compressed arrays and files stay encoded until embedded
        return [decode_image(a) for a in raw]
    return [decode_array(a).astype(np.float32).reshape(-1) for a in raw]


def _wire(value: Any) -> Any:
    """Numpy arrays (embeddings, loaded data) as wire array objects, at any nesting."""
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


def wire_result(result: dict[str, Any]) -> dict[str, Any]:
    out = encode_result(result)
    if result.get("data") is not None:
        out["data"] = _wire(result["data"])
    return out


class Operations:
    def __init__(self, settings: Settings, backend: Backend, local: Local,
                 resolve: Resolver) -> None:
        self.settings = settings
        self.backend = backend
        self.local = local
        self.resolve = resolve
        self.live = LiveHub(local.lock)
        self._batchers: dict[int, tuple[EmbeddingFunction, EmbedBatcher]] = {}

    async def close(self) -> None:
        for _, batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()

    async def dispatch(self, ev: dict[str, Any], session: Session) -> Any:
        op = ev.get("op")
        if op not in OPS:
            raise SchemaError(f"Unknown op {op!r}; expected one of {', '.join(OPS)}")
        if op in WRITE_OPS:
            if op != "delete" and "ids" in ev:
                return await self._write_call(ev, session.grant)
            return await self._write(ev, session.grant)
        if op in ADMIN_OPS:
            return await collection_admin(self.backend, ev, session.grant)
        if op == "list_collections":
            return [s.to_dict() for s in await self.backend.list_collections()
                    if session.grant.allows("r", s.name)]
        if op == "unsubscribe":
            sub = session.subscriptions.pop(str(ev.get("subscription")), None)
            if sub is None:
                raise NotFoundError(f"Subscription [{ev.get('subscription')}] does not exist")
            self.live.unsubscribe(sub)
            return None
        spec = await self.spec(ev)
        session.grant.check("r", spec.name)
        if op == "get_collection":
            return spec.to_dict()
        coll = await self.wrap(spec)
        if op == "count":
            return await coll.count()
        if op == "get":
            return wire_result(await coll.get(
                ids=ev.get("ids"), where=ev.get("where"), limit=ev.get("limit"),
                offset=ev.get("offset"), where_document=ev.get("where_document"),
                include=ev.get("include")))
        if op == "query":
            return await self._query(coll, ev)
        if op == "search":  # Chroma's Search API; string queries embedded server-side
            return dict(await coll.search(ev.get("searches")))
        return await self._subscribe(coll, ev, session)

    # ---- collections --------------------------------------------------------------
    async def spec(self, ev: dict[str, Any]) -> CollectionSpec:
        cid, name = ev.get("collection"), ev.get("name")
        if not isinstance(cid, str) and not isinstance(name, str):
            raise SchemaError("Name the collection by 'collection' (its id) or 'name' (strings)")
        catalog = self.local.catalog
        state = catalog.by_id(cid) if isinstance(cid, str) else catalog.collections.get(str(name))
        if state is not None:
            return state.spec
        # This process's replica may not have a just-created collection yet: ask the backend.
        if isinstance(cid, str):
            for spec in await self.backend.list_collections():
                if spec.id == cid:
                    return spec
            raise NotFoundError(f"Collection [{cid}] does not exist")
        return await self.backend.get_collection(str(name))

    async def wrap(self, spec: CollectionSpec) -> AsyncCollection:
        embedder, loader = await self.resolve(spec)
        return AsyncCollection(self.backend, spec, embedder, loader)

    async def collection(self, ev: dict[str, Any], grant: Grant, mode: Mode) -> AsyncCollection:
        spec = await self.spec(ev)
        grant.check(mode, spec.name)
        return await self.wrap(spec)

    # ---- reads --------------------------------------------------------------------
    def _query_args(self, ev: dict[str, Any]) -> dict[str, Any]:
        images = _arrays(ev, "images", vectors=False)
        for i, image in enumerate(images or []):  # before this process decodes any of them
            check_image(image, self.settings, f"Query image {i}")
        return {"query_embeddings": _arrays(ev, "embeddings", vectors=True),
                "query_texts": ev.get("texts"), "query_images": images,
                "query_uris": ev.get("uris"), "ids": ev.get("ids"),
                "n_results": ev.get("n_results", 10), "where": ev.get("where"),
                "where_document": ev.get("where_document"), "include": ev.get("include")}

    async def _query(self, coll: AsyncCollection, ev: dict[str, Any]) -> dict[str, Any]:
        args = self._query_args(ev)
        embedder = coll.embedding_function
        if embedder is not None and self.settings.batch_max_items > 1 and \
                args["query_embeddings"] is None and args["query_uris"] is None:
            # Validate as the client would before spending model time on it.
            req = prepare_query(**args, has_loader=coll.data_loader is not None,
                                has_embedding_function=True)
            inputs: list[Any] = list(req.texts or req.images or [])
            args.update(query_embeddings=await self._batcher(embedder).embed(inputs),
                        query_texts=None, query_images=None)
        return wire_result(await coll.query(**args))

    def _batcher(self, embedder: EmbeddingFunction) -> EmbedBatcher:
        entry = self._batchers.get(id(embedder))
        if entry is None or entry[0] is not embedder:
            entry = (embedder, EmbedBatcher(embedder, self.local.embed_thread,
                                            self.settings.batch_max_items))
            self._batchers[id(embedder)] = entry
        return entry[1]

    # ---- writes -------------------------------------------------------------------
    async def _write_call(self, ev: dict[str, Any], grant: Grant) -> None:
        coll = await self.collection(ev, grant, "w")
        for key in ("ids", "documents", "uris", "metadatas"):
            if ev.get(key) is not None and not isinstance(ev[key], list):
                raise SchemaError(f"Field {key!r} must be a list")
        await getattr(coll, ev["op"])(
            ids=ev["ids"], embeddings=_arrays(ev, "embeddings", vectors=True),
            metadatas=ev.get("metadatas"), documents=ev.get("documents"),
            images=_arrays(ev, "images", vectors=False), uris=ev.get("uris"),
            wait=bool(ev.get("wait", True)))

    async def _write(self, ev: dict[str, Any], grant: Grant) -> None:
        coll = await self.collection(ev, grant, "w")
        try:
            op, _, payload = parse_write({**ev, "collection": coll.id})
        except (TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, StreamerError):
                raise
            raise SchemaError(f"Malformed write event: {exc}") from exc
        wait = bool(ev.get("wait", True))
        if isinstance(payload, DeleteRequest):
            # An untrusted frame: the requests topic's limits (ids per delete) apply here too.
            payload = check_delete(payload, self.settings)
            await coll.delete(ids=payload.ids, where=payload.where,
                              where_document=payload.where_document, limit=payload.limit, wait=wait)
            return
        item = payload
        if op.value == "delete":
            await coll.delete(ids=[item.id], wait=wait)
            return

        def one(value: Any) -> list[Any] | None:
            return None if value is None else [value]

        await getattr(coll, op.value)(
            ids=[item.id], embeddings=one(item.embedding), metadatas=one(item.metadata),
            documents=one(item.document), images=one(item.image), uris=one(item.uri), wait=wait)

    # ---- live queries -------------------------------------------------------------
    async def _subscribe(self, coll: AsyncCollection, ev: dict[str, Any],
                         session: Session) -> dict[str, Any]:
        if len(session.subscriptions) >= self.settings.ws_max_subscriptions:
            raise LimitExceededError(
                f"At most {self.settings.ws_max_subscriptions} live queries per connection")
        threshold, top_k = ev.get("threshold"), ev.get("top_k")
        if (threshold is None) == (top_k is None):
            raise InvalidArgumentError("A live query takes exactly one of threshold or top_k")
        if threshold is not None and (not isinstance(threshold, int | float)
                                      or isinstance(threshold, bool)):
            raise InvalidArgumentError(f"threshold must be a number, got {threshold!r}")
        resume_after, stream = ev.get("resume_after"), ev.get("stream")
        if resume_after is not None:
            if not isinstance(resume_after, int) or isinstance(resume_after, bool) \
                    or resume_after < 0 or not isinstance(stream, str):
                raise InvalidArgumentError("resume_after is a seq (an integer >= 0) and needs the "
                                           "stream it belongs to")
            if top_k is not None:
                raise InvalidArgumentError("Only threshold live queries resume; a top-k one "
                                           "subscribes afresh and gets a new initial top k")
        sub_id = ev.get("subscription", uuid.uuid4().hex)
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= 128 \
                or sub_id in session.subscriptions:
            raise InvalidArgumentError("subscription must be a new id of 1 to 128 characters")
        include = ev.get("include", list(LIVE_FIELDS))
        if not isinstance(include, list) or any(i not in LIVE_FIELDS for i in include):
            raise InvalidArgumentError(f"A live query's include is a list of {', '.join(LIVE_FIELDS)}")
        args = {**self._query_args(ev), "n_results": top_k if top_k is not None else 1,
                "include": None}
        req = prepare_query(**args, has_loader=coll.data_loader is not None,
                            has_embedding_function=coll.embedding_function is not None)
        if req.size != 1:
            raise InvalidArgumentError("A live query takes exactly one query input")
        state = self.local.catalog.by_id(coll.id)
        if state is None:
            raise NotFoundError(f"Collection [{coll.name}] is not in this server's replica yet")
        dim = state.spec.dimension
        vector = (await query_vectors(req, coll.embedding_function, coll.data_loader,
                                      self.local.embed_thread))[0]
        if dim is not None and vector.shape[0] != dim:
            raise InvalidArgumentError(
                f"Collection expecting embedding with dimension of {dim}, got {vector.shape[0]}")
        if resume_after is not None and stream != state.stream:
            raise ResumeExpiredError(f"Cannot resume stream {stream}: this server's collection "
                                     f"{coll.name} has stream {state.stream}; subscribe afresh")
        push: Push = session.push
        sub = Subscription(sub_id, state, vector, push, asyncio.get_running_loop(),
                           threshold=None if threshold is None else float(threshold),
                           top_k=top_k, where=req.where, where_document=req.where_document,
                           include=tuple(include))
        initial, joined = await self.live.subscribe(
            sub, resume_after=resume_after, max_replay=self.settings.ws_resume_max_records)
        session.subscriptions[sub.id] = sub
        return {"subscription": sub.id, "initial": None if initial is None else wire_result(initial),
                "stream": state.stream, "seq": joined}

