"""The write pipeline shared by the embedded client and the Kafka service:
prepare (URIs through the data loader, image transforms) -> embed (batched, on the model's
own thread) -> resolve (Chroma's rules + one modality per record), which returns each
collection's mutations. The caller commits them: the embedded engine with
``commit_locally`` (log, one fsync per collection per batch, then index), the Kafka writer by
producing them to the compacted state topic inside its transaction. Failures are per job: a
bad request gets its error, the batch goes on. ``reuse_unchanged`` spares an unchanged object
(same URI and version) its fetch and embedding."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from consumers.embedding.embed import EmbeddingFunction, PreparingEmbeddingFunction
from consumers.embedding.embedq import call_embedder as call_embedder  # re-exported for the clients
from consumers.embedding.embedq import embed_steps
from consumers.loading.decode import to_pixels
from consumers.loading.load import DataLoader, load_images
from consumers.storage.catalog import CollectionState
from consumers.storage.store import CollectionStore
from schemas.errors import EmbeddingError, StreamerError
from schemas.records import (
    DeleteRequest,
    Image,
    ImageInput,
    Mutation,
    Op,
    Vector,
    WriteRequest,
)

log = logging.getLogger(__name__)

#: Metadata keys that name an object's version (an S3 notification's eTag and versionId).
VERSION_KEYS = ("etag", "version_id")


@dataclass(slots=True)
class WriteJob:
    state: CollectionState
    request: WriteRequest | DeleteRequest
    embedder: EmbeddingFunction | None = None
    loader: DataLoader | None = None
    # Filled by the stages.
    images: dict[int, Image] = field(default_factory=dict)
    prepared: dict[int, Any] = field(default_factory=dict)
    vectors: dict[int, Vector] = field(default_factory=dict)
    error: BaseException | None = None
    #: Records a delete removed (Chroma's ``{"deleted": n}``).
    deleted: int = 0
    #: The ids this job may touch; the Kafka writer of one partition limits a filtered
    #: delete to the records of its partition (the client sends one to every partition).
    scope: Callable[[str], bool] | None = None


@dataclass(slots=True)
class Resolved:
    """One collection's share of a batch: its mutations, and the jobs they came from."""

    state: CollectionState
    mutations: list[Mutation]
    jobs: list[WriteJob]


async def commit_locally(groups: list[Resolved], locks: Callable[[str], anyio.Lock]) -> None:
    """The embedded commit: append each group to its collection's log (fsync) and apply it
    to the index, on a worker thread, under the collection lock."""
    for group in groups:
        try:
            async with locks(group.state.spec.id):
                await anyio.to_thread.run_sync(group.state.commit, group.mutations)
        except Exception as exc:
            log.exception("commit failed for %s", group.state.spec.name)
            for job in group.jobs:
                job.error = exc


class Pipeline:
    """Stateless over batches; the caller serialises batches (one writer)."""

    def __init__(self, embed_thread: Executor, locks: Callable[[str], anyio.Lock],
                 prep_workers: int = 2) -> None:
        self._embed_thread = embed_thread
        self._prep_pool = ThreadPoolExecutor(prep_workers, thread_name_prefix="prepare")
        self._locks = locks

    def close(self) -> None:
        self._prep_pool.shutdown(wait=True)

    async def prepare(self, jobs: list[WriteJob]) -> None:
        """The CPU work before the model: load URIs and run image transforms, off the model
        thread, so a caller can prepare batch k+1 while batch k is being encoded."""
        await self._load(jobs)
        await self._prepare_images(jobs)

    async def _prepare_images(self, jobs: list[WriteJob]) -> None:
        loop = asyncio.get_running_loop()

        async def prepare(job: WriteJob, i: int, image: ImageInput) -> None:
            assert isinstance(job.embedder, PreparingEmbeddingFunction)
            try:
                job.prepared[i] = await loop.run_in_executor(
                    self._prep_pool, _decode_and_prepare, job.embedder, image)
            except Exception as exc:
                job.error = exc if isinstance(exc, StreamerError) else \
                    EmbeddingError(f"Could not preprocess image {i}: {exc}")

        work = []
        for job in jobs:
            # ``embedder is None`` first: a runtime Protocol check costs ~10 us per job.
            if job.error is not None or not isinstance(job.request, WriteRequest) \
                    or job.embedder is None \
                    or not isinstance(job.embedder, PreparingEmbeddingFunction):
                continue
            for i, it in enumerate(job.request.items):
                if it.embedding is None and it.document is None:
                    image = it.image if it.image is not None else job.images.get(i)
                    if image is not None:
                        work.append(prepare(job, i, image))
        await asyncio.gather(*work)

    async def _load(self, jobs: list[WriteJob]) -> None:
        async def load_one(job: WriteJob) -> None:
            req = job.request
            assert isinstance(req, WriteRequest)
            wanted = [(i, it.uri) for i, it in enumerate(req.items)
                      if it.uri is not None and it.embedding is None]
            loaded = await load_images(job.loader, [u for _, u in wanted])
            for (i, _), image in zip(wanted, loaded):
                job.images[i] = image

        async def guarded(job: WriteJob) -> None:
            try:
                await load_one(job)
            except Exception as exc:
                job.error = exc

        async with anyio.create_task_group() as tg:
            for job in jobs:
                if isinstance(job.request, WriteRequest) and any(
                        it.uri is not None and it.embedding is None for it in job.request.items):
                    tg.start_soon(guarded, job)

    async def embed(self, jobs: list[WriteJob]) -> None:
        """Run the model over the batch; needs no collection state."""
        groups: dict[int, list[WriteJob]] = {}
        for job in jobs:
            if job.error is None and isinstance(job.request, WriteRequest) and job.embedder:
                groups.setdefault(id(job.embedder), []).append(job)
        for group in groups.values():
            embedder = group[0].embedder
            assert embedder is not None
            try:
                await self._embed_group(embedder, group)
            except Exception:
                for job in group:
                    try:
                        await self._embed_group(embedder, [job])
                    except Exception as exc:
                        job.error = exc if isinstance(exc, StreamerError) else \
                            EmbeddingError(f"Embedding failed: {exc}")

    async def _embed_group(self, embedder: EmbeddingFunction, jobs: list[WriteJob]) -> None:
        """One model call per modality for the whole group: the model sees full batches."""
        texts: list[tuple[WriteJob, int, str]] = []
        images: list[tuple[WriteJob, int, ImageInput]] = []
        prepared: list[tuple[WriteJob, int, Any]] = []
        for job in jobs:
            assert isinstance(job.request, WriteRequest)
            for i, it in enumerate(job.request.items):
                if it.embedding is not None:
                    continue
                if it.document is not None:
                    texts.append((job, i, it.document))
                elif i in job.prepared:
                    prepared.append((job, i, job.prepared[i]))
                elif it.image is not None:
                    images.append((job, i, it.image))
                elif i in job.images:
                    images.append((job, i, job.images[i]))
        for work, fn in ((texts, call_embedder), (images, call_embedder), (prepared, call_prepared)):
            if not work:
                continue
            inputs = [x for _, _, x in work]
            vectors = await embed_steps(self._embed_thread, fn, embedder, inputs)
            for (job, i, _), vec in zip(work, vectors):
                job.vectors[i] = vec

    async def resolve(self, jobs: list[WriteJob]) -> list[Resolved]:
        """Resolve each collection's jobs against its current state (under its lock) into
        the mutations to commit; callers commit one batch at a time, in order."""
        by_state: dict[int, list[WriteJob]] = {}
        for job in jobs:
            if job.error is None:
                by_state.setdefault(id(job.state), []).append(job)
        groups = []
        for group in by_state.values():
            state = group[0].state
            pending: dict[str, Mutation | None] = {}
            mutations: list[Mutation] = []
            done: list[WriteJob] = []
            async with self._locks(state.spec.id):
                for job in group:
                    try:
                        mutations.extend(self._resolve(job, pending))
                        done.append(job)
                    except StreamerError as exc:
                        job.error = exc
            groups.append(Resolved(state, mutations, done))
        return groups

    @staticmethod
    def _resolve(job: WriteJob, pending: dict[str, Mutation | None]) -> list[Mutation]:
        store = job.state.store
        req = job.request
        if isinstance(req, DeleteRequest):
            if req.where is None and req.where_document is None:
                ids = req.ids or []
            else:
                ids = store.select(req.ids, req.where, req.where_document, pending)
                if job.scope is not None:
                    ids = [i for i in ids if job.scope(i)]
                if req.limit is not None:
                    ids = ids[:req.limit]
            deleted = store.delete_ids(ids, pending)
            # Chroma counts the ids a delete names, found or not, and the matches of a filter.
            filtered = req.where is not None or req.where_document is not None
            job.deleted = len(deleted) if filtered else len(ids)
            return deleted
        vectors: list[Vector | None] = []
        for i, it in enumerate(req.items):
            vectors.append(it.embedding if it.embedding is not None else job.vectors.get(i))
        store.check_dimension(_pending_dims(pending) + [v for v in vectors if v is not None])
        return store.resolve(req.op, req.items, vectors, pending)


def _pending_dims(pending: dict[str, Mutation | None]) -> list[Vector]:
    # A new collection takes its dimension from the first vector of the batch.
    for m in pending.values():
        if m is not None and m.vector is not None:
            return [m.vector]
    return []


def _decode_and_prepare(embedder: PreparingEmbeddingFunction, image: ImageInput) -> Any:
    # Decoded here, on a prepare thread, so a batch holds full-size pixels only transiently.
    return embedder.prepare_image(to_pixels(image))


def call_prepared(embedder: EmbeddingFunction, inputs: list[Any]) -> list[Vector]:
    assert isinstance(embedder, PreparingEmbeddingFunction)
    return embedder.embed_prepared(inputs)


def reuse_unchanged(store: CollectionStore, request: WriteRequest) -> WriteRequest:
    """An upsert or update by URI of an object that has not changed (same URI, and the same
    ``etag``/``version_id`` in its metadata as the stored record) carries the stored vector,
    so it is neither fetched nor embedded again; a new ETag re-embeds. Checked against the
    applied state, so a repeat inside the batches still in flight is simply embedded again."""
    if request.op not in (Op.UPSERT, Op.UPDATE):
        return request
    items = list(request.items)
    for n, it in enumerate(items):
        if it.uri is None or it.embedding is not None or not it.metadata:
            continue
        version = {k: it.metadata[k] for k in VERSION_KEYS if it.metadata.get(k) is not None}
        rec = store.records.get(it.id)
        if not version or rec is None or rec.uri != it.uri or not rec.metadata \
                or any(rec.metadata.get(k) != v for k, v in version.items()):
            continue
        items[n] = dataclasses.replace(it, embedding=store.vectors([it.id])[0])
    return WriteRequest(request.op, items)
