"""The embedded engine: the pipeline stages of ``consumers`` over an in-process queue, with
the same micro-batching the Kafka service uses. ``streamer.Client()`` runs on it."""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from consumers.embedding.embed import EmbeddingFunction
from consumers.loading.load import DataLoader
from consumers.reads.query import get_result, query_vectors, search_result
from consumers.reads.search import run_searches
from consumers.runtime.lifecycle import Component
from consumers.storage.catalog import CollectionState
from consumers.validation import admin
from consumers.write.batch import BatchConfig, MicroBatcher
from consumers.write.local import LocalStore
from consumers.write.pipeline import WriteJob, commit_locally
from schemas.errors import InvalidArgumentError, StreamerError
from schemas.records import CollectionSpec, DeleteRequest, GetRequest, QueryRequest, WriteRequest
from streamer.settings import Settings

log = logging.getLogger(__name__)


class _Pending:
    __slots__ = ("done", "job")

    def __init__(self, job: WriteJob) -> None:
        self.job = job
        self.done = anyio.Event()


class Engine(Component):
    in_process = True
    max_batch_size = Settings().max_batch_records

    def __init__(self, path: str | Path | None = None, *, fsync: bool = True,
                 checkpoint_every: int = 50_000, batch: BatchConfig | None = None) -> None:
        super().__init__()
        self.path = None if path is None else Path(path)
        self.store = LocalStore(self.path, fsync=fsync, checkpoint_every=checkpoint_every)
        self.catalog = self.store.catalog
        self.embed_thread = self.store.embed_thread
        self.lock = self.store.lock
        self._pipeline = self.store.pipeline
        self._batch_config = batch or BatchConfig()
        self._batcher: MicroBatcher[_Pending] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._admin = anyio.Lock()  # one admin change at a time: decide, then apply

    async def _start(self) -> None:
        if self.path is not None:
            await anyio.to_thread.run_sync(self._take_path, self.path)
        await self.parts.start(self.store)
        self._batcher = MicroBatcher(self._batch_config)
        self._writer = asyncio.create_task(self._write_loop(), name="streamer-writer")

    def _take_path(self, path: Path) -> None:
        """One client per directory, held until stop (an advisory lock on ``LOCK``)."""
        path.mkdir(parents=True, exist_ok=True)
        lockfile = open(path / "LOCK", "wb")
        try:
            fcntl.flock(lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lockfile.close()
            raise InvalidArgumentError(
                f"{path} is open in another client; close it first") from None
        self.parts.on_stop(lambda: anyio.to_thread.run_sync(lockfile.close))

    async def _stop(self) -> None:
        """Stop intake and drain queued writes; the store then checkpoints and closes."""
        if self._batcher is not None:
            self._batcher.close()
        if self._writer is not None:
            await self._writer

    close = Component.stop

    async def _write_loop(self) -> None:
        """Two stages: batch k+1 is loaded and transformed while batch k is embedded and
        committed, so the model thread is not left idle between batches."""
        ready: asyncio.Queue[list[_Pending] | None] = asyncio.Queue(maxsize=1)
        prepare = asyncio.create_task(self._prepare_loop(ready), name="streamer-prepare")
        while (batch := await ready.get()) is not None:
            await self._guarded(batch, self._commit)
            for p in batch:
                p.done.set()
        await prepare

    async def _commit(self, jobs: list[WriteJob]) -> None:
        await self._pipeline.embed(jobs)
        await commit_locally(await self._pipeline.resolve(jobs), self.lock)

    async def _prepare_loop(self, ready: asyncio.Queue[list[_Pending] | None]) -> None:
        assert self._batcher is not None
        while batch := await self._batcher.next_batch():
            await self._guarded(batch, self._pipeline.prepare)
            await ready.put(batch)
        await ready.put(None)

    @staticmethod
    async def _guarded(batch: list[_Pending],
                       stage: Callable[[list[WriteJob]], Awaitable[None]]) -> None:
        try:
            await stage([p.job for p in batch])
        except Exception as exc:  # a bug must not wedge the writer: fail the batch
            log.exception("write batch failed")
            for p in batch:
                p.job.error = p.job.error or exc

    # ---- collections: the rules are consumers.validation.admin's; this applies what they decide ------
    async def create_collection(self, name: str, *, metadata: dict[str, Any] | None,
                                embedding_function: dict[str, Any] | None,
                                data_loader: dict[str, Any] | None,
                                get_or_create: bool, space: str = "l2",
                                sparse: dict[str, Any] | None = None,
                                hnsw: dict[str, Any] | None = None,
                                client_embedding_function: dict[str, Any] | None = None
                                ) -> CollectionSpec:
        async with self._admin:
            created = admin.create(self.catalog.specs(), name, metadata=metadata,
                                   embedding_function=embedding_function,
                                   data_loader=data_loader, get_or_create=get_or_create,
                                   space=space, sparse=sparse, hnsw=hnsw,
                                   client_embedding_function=client_embedding_function)
            if not created.new:
                return created.spec
            state = await anyio.to_thread.run_sync(self.catalog.install, created.spec)
            return state.spec

    async def get_collection(self, name: str) -> CollectionSpec:
        return admin.lookup(self.catalog.specs(), name)

    async def list_collections(self, limit: int | None = None,
                               offset: int | None = None) -> list[CollectionSpec]:
        return admin.listing(self.catalog.specs(), limit, offset)

    async def delete_collection(self, name: str) -> None:
        async with self._admin:
            spec = admin.lookup(self.catalog.specs(), name)
            async with self.lock(spec.id):
                await anyio.to_thread.run_sync(self.catalog.delete, name)

    async def modify_collection(self, name: str, *, new_name: str | None,
                                metadata: dict[str, Any] | None,
                                configuration: dict[str, Any] | None = None) -> CollectionSpec:
        async with self._admin:
            spec = admin.modify(self.catalog.specs(), name, new_name=new_name,
                                metadata=metadata, configuration=configuration)
            state = await anyio.to_thread.run_sync(self.catalog.install, spec)
            return state.spec

    def _state(self, spec: CollectionSpec) -> CollectionState:
        state = self.catalog.get(spec.name)
        if state.spec.id != spec.id:
            raise StreamerError(f"Collection [{spec.name}] was deleted and re-created")
        return state

    # ---- records ------------------------------------------------------------------
    async def write(self, spec: CollectionSpec, request: WriteRequest | DeleteRequest, *,
                    embedder: EmbeddingFunction | None, loader: DataLoader | None,
                    wait: bool = True) -> int:
        if self.stopped or self._batcher is None:
            raise InvalidArgumentError("The client is closed")
        pending = _Pending(WriteJob(self._state(spec), request, embedder, loader))
        await self._batcher.put(pending)
        await pending.done.wait()
        if pending.job.error is not None:
            raise pending.job.error
        return pending.job.deleted

    async def get(self, spec: CollectionSpec, request: GetRequest) -> dict[str, Any]:
        state = self._state(spec)
        async with self.lock(spec.id):
            return await anyio.to_thread.run_sync(get_result, state, request)

    async def query(self, spec: CollectionSpec, request: QueryRequest, *,
                    embedder: EmbeddingFunction | None,
                    loader: DataLoader | None) -> dict[str, Any]:
        state = self._state(spec)
        vectors = await query_vectors(request, embedder, loader, self.embed_thread)
        async with self.lock(spec.id):
            return await anyio.to_thread.run_sync(search_result, state, request, vectors)

    async def search(self, spec: CollectionSpec,
                     searches: list[dict[str, Any]]) -> dict[str, Any]:
        state = self._state(spec)
        async with self.lock(spec.id):
            return await anyio.to_thread.run_sync(run_searches, state, searches)

    async def count(self, spec: CollectionSpec) -> int:
        return self._state(spec).store.count()

    async def sync(self) -> None:
        """Nothing to wait for: a write returns once it is committed to the local store."""
