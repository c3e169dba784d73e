"""Live queries: a subscription holds one query vector and a threshold or a top-k; every batch
a collection commits (embedded pipeline or Kafka replica, both through
``CollectionState.commit``) is matched against it and the matches are pushed to the socket.

The commit listener runs on the committing thread while the collection lock is held, so
batches arrive one at a time and in commit order; a subscription registers under that same
lock, so its snapshot (top-k mode) and its first push neither overlap nor leave a gap. Each
pushed record carries its log ``seq``; a subscription never pushes a seq at or below the last
it pushed, so delivery is in ingestion order without duplicates.

Resuming: a threshold subscription may name the ``stream`` (the collection state's sequence
space) and the seq it had reached on an earlier connection. Under the same lock, the
committed batches past that seq are read back from the collection's log and matched exactly
as the commit listener would have matched them, then the subscription joins the live flow:
nothing committed in between is missed or pushed twice. A subscription that matched nothing
for ``PROGRESS_EVERY`` records pushes ``{"event": "progress", "seq"}``, so a quiet one resumes
from where it had scanned, not from its last match. The replay is bounded: at most
``ws_resume_max_records`` mutations, and only what the log still holds (segments a
checkpoint covers are dropped; an in-memory store keeps no log). Otherwise the server
answers ``resume_expired`` and the client subscribes afresh."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Gauge

from consumers.reads.query import search_result
from consumers.storage.catalog import CollectionState
from consumers.storage.index import distances
from consumers.validation.where import compile_where, compile_where_document
from schemas.errors import ResumeExpiredError
from schemas.records import Metadata, Mutation, QueryRequest, Vector
from streamer import tracing

log = logging.getLogger(__name__)

LIVE_PUSHES = Counter("streamer_live_pushes_total", "Live-query matches pushed to sockets")
LIVE_SUBSCRIPTIONS = Gauge("streamer_live_subscriptions", "Open live-query subscriptions")

LIVE_FIELDS = ("documents", "metadatas", "uris")
#: A subscription that matched nothing in this many records says how far it has scanned, so
#: a client resumes from there instead of replaying everything since its last match.
PROGRESS_EVERY = 1000
Push = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class Subscription:
    id: str
    state: CollectionState
    vector: Vector
    push: Push  # called on the event loop
    loop: asyncio.AbstractEventLoop
    threshold: float | None = None
    top_k: int | None = None
    where: Metadata | None = None
    where_document: Metadata | None = None
    include: tuple[str, ...] = LIVE_FIELDS
    active: bool = True
    last_seq: int = 0
    #: top-k mode: id -> distance of the records currently in the top k
    top: dict[str, float] = field(default_factory=dict)
    unreported: int = 0  # records scanned since the last frame pushed

    def __post_init__(self) -> None:
        self._where = None if self.where is None else compile_where(self.where)
        self._where_doc = None if self.where_document is None else \
            compile_where_document(self.where_document)

    def _admits(self, m: Mutation, distance: float) -> bool:
        if (self._where is not None and not self._where(m.metadata)) or \
                (self._where_doc is not None and not self._where_doc(m.document)):
            self.top.pop(m.id, None)
            return False
        if self.threshold is not None:
            return distance <= self.threshold
        assert self.top_k is not None
        self.top.pop(m.id, None)  # a re-ingested id competes with its new vector
        if len(self.top) >= self.top_k:
            worst = max(self.top, key=self.top.__getitem__)
            if distance >= self.top[worst]:
                return False
            del self.top[worst]
        self.top[m.id] = distance
        return True

    def match(self, puts: list[Mutation], dists: np.ndarray[Any, Any],
              deletes: list[Mutation]) -> list[dict[str, Any]]:
        """Runs on the committing thread; the collection lock serialises calls."""
        for m in deletes:
            self.top.pop(m.id, None)
        out: list[dict[str, Any]] = []
        for m, d in zip(puts, dists):
            if m.seq <= self.last_seq:
                continue
            self.last_seq = m.seq
            if self._admits(m, float(d)):
                frame: dict[str, Any] = {"event": "match", "subscription": self.id, "id": m.id,
                                         "seq": m.seq, "distance": float(d)}
                if "documents" in self.include:
                    frame["document"] = m.document
                if "metadatas" in self.include:
                    frame["metadata"] = m.metadata
                if "uris" in self.include:
                    frame["uri"] = m.uri
                out.append(frame)
        if deletes:
            self.last_seq = max(self.last_seq, max(m.seq for m in deletes))
        self.unreported = 0 if out else self.unreported + len(puts) + len(deletes)
        if self.unreported >= PROGRESS_EVERY:
            out.append({"event": "progress", "subscription": self.id, "seq": self.last_seq})
            self.unreported = 0
        return out

    def deliver(self, frames: list[dict[str, Any]], span: Span | None = None) -> None:
        try:
            if not self.active:  # unsubscribed while these were on their way
                return
            for frame in frames:
                self.push(frame)
            LIVE_PUSHES.inc(sum(f["event"] == "match" for f in frames))
        finally:
            if span is not None:
                span.end()


class LiveHub:
    """Subscriptions per collection state, and the one commit listener each state gets."""

    def __init__(self, lock: Callable[[str], anyio.Lock]) -> None:
        self._lock = lock
        self._subs: dict[int, tuple[Subscription, ...]] = {}

    async def subscribe(self, sub: Subscription, *, resume_after: int | None = None,
                        max_replay: int = 10_000) -> tuple[dict[str, Any] | None, int]:
        """Register ``sub``; returns (in top-k mode the current top k as a query result, the
        seq it joined the live flow at). With ``resume_after`` (threshold mode), first pushes
        the matches committed after that seq."""
        state = sub.state
        async with self._lock(state.spec.id):
            initial = None
            if sub.top_k is not None:
                req = QueryRequest(embeddings=[sub.vector], n_results=sub.top_k, where=sub.where,
                                   where_document=sub.where_document,
                                   include=[*sub.include, "distances"])  # type: ignore[list-item]
                initial = await anyio.to_thread.run_sync(search_result, state, req, [sub.vector])
                sub.top = dict(zip(initial["ids"][0], initial["distances"][0]))
            if resume_after is None:
                sub.last_seq = state.store.applied_seq
            else:
                replayed = await anyio.to_thread.run_sync(self._replay, sub, resume_after,
                                                          max_replay)
                sub.deliver(replayed)  # before any later commit's pushes: we hold the lock
            subs = self._subs.get(id(state), ())
            if not subs:
                state.listeners.append(self._on_commit)
            self._subs[id(state)] = (*subs, sub)
            joined = sub.last_seq
        LIVE_SUBSCRIPTIONS.inc()
        return initial, joined

    def unsubscribe(self, sub: Subscription) -> None:
        if not sub.active:
            return
        sub.active = False
        LIVE_SUBSCRIPTIONS.dec()
        rest = tuple(s for s in self._subs.get(id(sub.state), ()) if s is not sub)
        if rest:
            self._subs[id(sub.state)] = rest
            return
        self._subs.pop(id(sub.state), None)
        if self._on_commit in sub.state.listeners:
            sub.state.listeners.remove(self._on_commit)

    def _replay(self, sub: Subscription, after: int, limit: int) -> list[dict[str, Any]]:
        state = sub.state
        applied = state.store.applied_seq
        if after > applied:
            raise ResumeExpiredError(f"Cannot resume after seq {after}: this server's stream "
                                     f"{state.stream} has only reached {applied}")
        sub.last_seq = after
        frames: list[dict[str, Any]] = []
        if after < applied:
            log_ = state.log
            if log_ is None or log_.first_seq() > after + 1:
                raise ResumeExpiredError(f"Cannot resume after seq {after}: this server no "
                                         "longer keeps the log from there; subscribe afresh")
            seen = 0
            for batch in log_.read_after(after):
                seen += len(batch.mutations)
                if seen > limit:
                    raise ResumeExpiredError(f"Cannot resume after seq {after}: more than {limit} "
                                             "records were written since; subscribe afresh")
                frames.extend(self._matches(state, batch.mutations, (sub,))[0][1])
        sub.last_seq = applied
        return frames

    def _on_commit(self, state: CollectionState, mutations: list[Mutation],
                   traces: Mapping[str, Any]) -> None:
        subs = self._subs.get(id(state), ())
        if not subs:
            return
        for sub, frames in self._matches(state, mutations, subs):
            if frames:
                # A child of the (first) write that matched, linked to the others.
                span = tracing.start("live push", (traces.get(f.get("id", "")) for f in frames),
                                     kind=SpanKind.PRODUCER) if traces else None
                sub.loop.call_soon_threadsafe(sub.deliver, frames, span)

    def _matches(self, state: CollectionState, mutations: list[Mutation],
                 subs: tuple[Subscription, ...]) -> list[tuple[Subscription, list[dict[str, Any]]]]:
        final: dict[str, Mutation] = {}
        for m in mutations:
            final[m.id] = m  # the batch's last state of each id, as the store applied it
        ordered = sorted(final.values(), key=lambda m: m.seq)
        puts, vectors = self._with_vectors(state, [m for m in ordered if m.op == "put"])
        deletes = [m for m in ordered if m.op == "delete"]
        out = []
        for sub in subs:
            if vectors is not None and vectors.shape[1] == sub.vector.shape[0]:
                dists = distances(sub.vector[None, :], vectors, state.spec.space)[0]
                out.append((sub, sub.match(puts, dists, deletes)))
            else:
                out.append((sub, sub.match([], np.zeros(0), deletes)))
        return out

    @staticmethod
    def _with_vectors(state: CollectionState, puts: list[Mutation]
                      ) -> tuple[list[Mutation], np.ndarray[Any, Any] | None]:
        # A metadata-only update carries no vector: take the one the index keeps.
        missing = [m.id for m in puts if m.vector is None and m.id in state.store.records]
        stored = dict(zip(missing, state.store.vectors(missing))) if missing else {}
        puts = [m for m in puts if m.vector is not None or m.id in stored]
        if not puts:
            return [], None
        rows = [m.vector if m.vector is not None else stored[m.id] for m in puts]
        return puts, np.vstack(rows).astype(np.float32, copy=False)
