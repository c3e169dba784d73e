"""The caller's side of a sharded deployment (kafka/shards.py): a read is published once on
the queries topic, each shard's reader group answers it (``<correlation_id>#<K>``), and the
answers merge here -- by distance into the exact top-k (each shard returns its own top-k),
concatenated for ``get`` (shard by shard, each in insertion order), summed for ``count``.
Collection admin goes to shard 0, lookups to the first shard that is up. A shard whose reader
group has no member fails the call at once with the retriable ``ShardUnavailableError``; one
that loses its last member while the call waits fails it at the next liveness check. Only a
caller that asks for it (``shard_partial_results``) gets a query or get answered by the shards
that are up, marked ``partial`` with ``missing_shards``; never a partial answer unmarked. A
search takes two rounds, statistics then candidates (consumers/reads/search_gather.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

import anyio
import numpy as np
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from consumers.reads.search_gather import fuse_searches, sum_stats
from consumers.reads.search_plan import EMBEDDING, plan
from schemas.errors import (
    RequestTimeoutError,
    ShardUnavailableError,
    UnavailableError,
    error_from_wire,
)
from schemas.events import decode_array, dumps, encode_array
from streamer.kafka.common import Topics
from streamer.kafka.security import client_kwargs
from streamer.kafka.shards import group_live, reader_group
from streamer.settings import Settings

SCATTERED = ("query", "get", "count", "sync")
#: collection lookups, which any shard answers (admin that writes goes to shard 0)
LOOKUPS = ("get_collection", "list_collections")
#: the reads a caller may take in part: their replies can say so (a count is a bare number)
PARTIAL_OK = ("query", "get")
#: how long a liveness answer is trusted before a call, and how often a waiting call rechecks
LIVENESS_S = 1.0


class Requests(Protocol):
    """What a scattered call needs of the client that sends it (``KafkaBackend`` in
    kafka/client.py, which imports this module, never the reverse): its settings and topics,
    the size check, a future per awaited reply, and the send on the queries topic."""

    settings: Settings
    topics: Topics

    def sized(self, value: bytes, what: str) -> bytes: ...

    def expect(self, corr: str) -> asyncio.Future[dict[str, Any]]: ...

    def forget(self, corr: str) -> None: ...

    async def publish_query(self, value: bytes, corr: str) -> None: ...


class Scatter:
    def __init__(self, backend: Requests, count: int) -> None:
        self.backend = backend
        self.count = count
        self._admin: AIOKafkaAdminClient | None = None
        self._checked: dict[int, tuple[float, bool]] = {}

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()

    async def _live(self, shards: list[int], *, fresh: bool) -> dict[int, bool]:
        now = time.monotonic()
        todo = [k for k in shards
                if fresh or now - self._checked.get(k, (-1e9, False))[0] > LIVENESS_S]
        if todo:
            try:
                if self._admin is None:
                    admin = AIOKafkaAdminClient(**client_kwargs(self.backend.settings))
                    await admin.start()
                    self._admin = admin
                answers = await asyncio.gather(*(group_live(
                    self._admin, reader_group(self.backend.topics.readers, k, self.count))
                    for k in todo))
            except KafkaError as exc:
                raise UnavailableError(f"Kafka is unavailable: {exc!r}") from exc
            for k, live in zip(todo, answers, strict=True):
                self._checked[k] = (now, live)
        return {k: self._checked.get(k, (now, False))[1] for k in shards}

    async def _dead(self, shards: list[int], *, fresh: bool) -> list[int]:
        return [k for k, ok in (await self._live(shards, fresh=fresh)).items() if not ok]

    def _unavailable(self, shard: int) -> ShardUnavailableError:
        return ShardUnavailableError(
            f"Shard {shard} of {self.count} has no live replica (reader group "
            f"{reader_group(self.backend.topics.readers, shard, self.count)})")

    async def call(self, payload: dict[str, Any]) -> Any:
        op = payload.get("op")
        if op == "search":
            return await self._search(payload)
        shards = list(range(self.count)) if op in SCATTERED else [0]
        sent = dict(payload)
        if op in LOOKUPS:  # every shard's catalog holds every spec: the first that is up
            live = await self._live(list(range(self.count)), fresh=False)
            shards = [next((k for k, ok in live.items() if ok), 0)]
        if op not in SCATTERED:
            sent["shard"] = shards[0]
        elif op == "query" and "distances" not in (sent.get("include") or []):
            sent["include"] = [*(sent.get("include") or []), "distances"]
        elif op == "get" and sent.get("limit") is not None:  # the global window, cut after
            sent["limit"] = int(sent["limit"]) + int(sent.get("offset") or 0)
            sent["offset"] = None
        in_part = self.backend.settings.shard_partial_results and op in PARTIAL_OK
        results, missing = await self._ask(sent, shards, in_part)
        if op == "count":
            return sum(int(n) for n in results)
        flag = {"partial": True, "missing_shards": sorted(missing)} if missing else {}
        if op == "query":
            return {**merge_query(results, payload), **flag}
        if op == "get":
            return {**merge_get(results, payload), **flag}
        return results[0]

    async def _search(self, payload: dict[str, Any]) -> Any:
        """Two rounds over every shard (consumers/reads/search_gather.py): the sparse Knns'
        statistics, summed, then each shard's candidates under them, fused here."""
        shards = list(range(self.count))
        searches = payload.get("searches")
        if not isinstance(searches, list) or not searches or \
                not all(isinstance(s, dict) for s in searches):  # the readers' error, from shard 0
            return (await self._ask(payload, shards, False))[0][0]
        plans = [plan(s) for s in searches]  # Chroma's errors before any round trip
        stats = None
        if any(knn.key != EMBEDDING for p in plans for knn in p.knns):
            stats = sum_stats((await self._ask({**payload, "phase": "stats"}, shards, False))[0])
        candidates, _ = await self._ask({**payload, "phase": "candidates", "stats": stats},
                                        shards, False)
        return fuse_searches(searches, candidates)

    async def _ask(self, sent: dict[str, Any], shards: list[int],
                   in_part: bool) -> tuple[list[Any], list[int]]:
        """Each shard's result, by shard, and the shards missing from them (only ``in_part``)."""
        b = self.backend
        op = sent.get("op")
        deadline = anyio.current_time() + b.settings.kafka_request_timeout_s
        missing = await self._dead(shards, fresh=False)
        if missing and (not in_part or len(missing) == len(shards)):
            raise self._unavailable(missing[0])
        value = b.sized(dumps(sent), f"The {op} request")
        corr = uuid.uuid4().hex
        futs = {k: b.expect(f"{corr}#{k}") for k in shards if k not in missing}
        try:
            await b.publish_query(value, corr)
            replies = await self._gather(futs, deadline, missing if in_part else None)
        finally:
            for k in shards:
                b.forget(f"{corr}#{k}")
        for reply in replies:
            if not reply.get("ok"):
                raise error_from_wire(reply.get("error") or {})
        return [r.get("result") for r in replies], missing

    async def _gather(self, futs: dict[int, asyncio.Future[dict[str, Any]]], deadline: float,
                      missing: list[int] | None) -> list[dict[str, Any]]:
        """Every shard's reply, by shard. ``missing`` (a partial answer is allowed): the
        shards that lose their last replica while the call waits go there; else they fail it."""
        while True:
            pending = [k for k, f in futs.items() if not f.done()]
            if not pending:
                return [futs[k].result() for k in sorted(futs)]
            left = deadline - anyio.current_time()
            if left <= 0:
                raise RequestTimeoutError(
                    f"No reply from shard {pending[0]} of {self.count} in time")
            await asyncio.wait([futs[k] for k in pending], timeout=min(LIVENESS_S, left))
            pending = [k for k, f in futs.items() if not f.done()]
            dead = await self._dead(pending, fresh=True) if pending else []
            if dead and (missing is None or len(dead) == len(futs)):
                raise self._unavailable(dead[0])
            for k in dead:
                assert missing is not None
                missing.append(k)
                del futs[k]


def _rows(result: dict[str, Any], name: str, i: int | None) -> list[Any] | None:
    col = result.get(name)
    if col is None:
        return None
    col = col if i is None else col[i]
    if name == "embeddings":
        return list(decode_array(col)) if isinstance(col, dict) else list(col)
    return list(col)


def _pack(name: str, rows: list[Any]) -> Any:
    if name != "embeddings":
        return rows
    return encode_array(np.stack(rows) if rows else np.zeros((0, 0), np.float32))


FIELDS = ("ids", "embeddings", "documents", "uris", "metadatas", "distances")


def merge_query(results: list[dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:
    """Per query, every shard's top-k by distance into the top-k of the whole collection."""
    k = int(payload.get("n_results") or 10)
    first = results[0]
    names = [n for n in FIELDS if first.get(n) is not None]
    out: dict[str, Any] = {n: [] for n in names}
    for i in range(len(first["ids"])):
        hits: list[tuple[float, int, dict[str, Any]]] = []
        for s, r in enumerate(results):
            cols = {n: _rows(r, n, i) for n in names}
            for j, d in enumerate(cols["distances"] or []):
                hits.append((float(d), s, {n: c[j] for n, c in cols.items() if c is not None}))
        hits.sort(key=lambda h: (h[0], h[1]))
        top = [h[2] for h in hits[:k]]
        for n in names:
            out[n].append(_pack(n, [t[n] for t in top]))
    if "distances" not in (payload.get("include") or []):
        out.pop("distances", None)
    return {**first, **out, "distances": out.get("distances"),
            "included": list(payload.get("include") or first.get("included") or [])}


def merge_get(results: list[dict[str, Any]], payload: dict[str, Any]) -> dict[str, Any]:
    first = results[0]
    names = [n for n in FIELDS if first.get(n) is not None]
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for r in results:
        for n in names:
            cols[n].extend(_rows(r, n, None) or [])
    start = int(payload.get("offset") or 0)
    stop = None if payload.get("limit") is None else start + int(payload["limit"])
    return {**first, **{n: _pack(n, c[start:stop]) for n, c in cols.items()}}
