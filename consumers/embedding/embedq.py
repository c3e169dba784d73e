"""The model thread, queries first.

Queries and ingestion share one model thread (torch and OpenVINO keep per-thread state, and
one thread keeps the cores busy without oversubscribing them). Work waits in a priority queue:
a query's embedding runs before any queued ingestion step, and ingestion is submitted in steps,
so a query arriving mid-ingestion waits for at most the step that is running. A step is as
many inputs as the model embeds in about ``STEP_TARGET_S`` (measured per embedding function as
steps run; ``INGEST_STEP`` until then): a fixed count would be ~0.1 s of ViT-B-32 in bf16 on 2
cores and 0.5 s in fp32, a fraction of a millisecond on a GPU. Queries queued together for one
embedding function run as one model call."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from consumers.loading.decode import to_pixels
from schemas.errors import EmbeddingError
from schemas.records import EncodedImage, Vector

T = TypeVar("T")

QUERY, INGEST = 0, 1
#: inputs per ingestion step before a function's speed is known
INGEST_STEP = 8
#: how long one ingestion step should run: about what a query waits for at most
STEP_TARGET_S = 0.025
MAX_STEP = 64
#: most query inputs embedded in one coalesced call
QUERY_BATCH = 64


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: Callable[[], Any] | None = field(compare=False, default=None)
    future: Future[Any] = field(compare=False, default_factory=Future)
    #: query jobs only: coalesced with queued queries for the same embedder
    embedder: Any = field(compare=False, default=None)
    inputs: list[Any] = field(compare=False, default_factory=list)


class EmbedExecutor(Executor):
    """A one-thread executor with priorities. ``submit`` is ingestion priority, like any
    executor's; ``submit_query`` embeds query inputs ahead of it, batched with its peers."""

    def __init__(self, name: str = "embed") -> None:
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._shutdown = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        #: per embedding function (by id): seconds per ingestion input, a moving average
        self._per_input: dict[int, float] = {}

    def step(self, embedder: Any) -> int:
        """Inputs per ingestion step for ``embedder`` (see the module docstring)."""
        per_input = self._per_input.get(id(embedder))
        if per_input is None:
            return INGEST_STEP
        return max(1, min(MAX_STEP, int(STEP_TARGET_S / max(per_input, 1e-6))))

    def observe(self, embedder: Any, inputs: int, seconds: float) -> None:
        """One ingestion step's time, from the model thread."""
        if inputs:
            key, sample = id(embedder), seconds / inputs
            last = self._per_input.get(key)
            self._per_input[key] = sample if last is None else 0.7 * last + 0.3 * sample

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(_Job(INGEST, next(self._seq), lambda: fn(*args, **kwargs)))

    def submit_query(self, embedder: Any, inputs: Sequence[Any]) -> Future[list[Vector]]:
        return self._put(_Job(QUERY, next(self._seq), embedder=embedder, inputs=list(inputs)))

    def _put(self, job: _Job) -> Future[Any]:
        with self._cv:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            heapq.heappush(self._heap, job)
            self._cv.notify()
        return job.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._shutdown = True
            if cancel_futures:
                for job in self._heap:
                    job.future.cancel()
                self._heap.clear()
            self._cv.notify_all()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _take(self) -> list[_Job] | None:
        """The next job, with every queued query for the same embedder when it is a query."""
        with self._cv:
            while not self._heap:
                if self._shutdown:
                    return None
                self._cv.wait()
            first = heapq.heappop(self._heap)
            if first.fn is not None:
                return [first]
            jobs, size, rest = [first], len(first.inputs), []
            while self._heap and self._heap[0].priority == QUERY:
                job = heapq.heappop(self._heap)
                if job.embedder is first.embedder and size + len(job.inputs) <= QUERY_BATCH:
                    jobs.append(job)
                    size += len(job.inputs)
                else:
                    rest.append(job)
            for job in rest:
                heapq.heappush(self._heap, job)
            return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            if jobs[0].fn is not None:
                _settle(jobs[0].future, jobs[0].fn)
            else:
                self._queries(jobs)

    @staticmethod
    def _queries(jobs: list[_Job]) -> None:
        embedder = jobs[0].embedder
        try:
            vectors = call_embedder(embedder, [x for j in jobs for x in j.inputs])
        except BaseException:  # one bad input must not fail its neighbours: each alone
            for j in jobs:
                _settle(j.future, lambda j=j: call_embedder(embedder, j.inputs))  # type: ignore[misc]
            return
        start = 0
        for j in jobs:
            j.future.set_result(vectors[start:start + len(j.inputs)])
            start += len(j.inputs)


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


def call_embedder(embedder: Any, inputs: list[Any]) -> list[Vector]:
    inputs = [to_pixels(x) if isinstance(x, EncodedImage) else x for x in inputs]
    out = embedder(inputs)
    if len(out) != len(inputs):
        raise EmbeddingError(
            f"Embedding function returned {len(out)} embeddings for {len(inputs)} inputs")
    return [np.asarray(v, dtype=np.float32).reshape(-1) for v in out]


async def embed_query(pool: Executor, embedder: Any, inputs: list[Any]) -> list[Vector]:
    """Query inputs to vectors on the model thread, ahead of ingestion when it can be."""
    if isinstance(pool, EmbedExecutor):
        return await asyncio.wrap_future(pool.submit_query(embedder, inputs))
    vectors: list[Vector] = await asyncio.get_running_loop().run_in_executor(
        pool, call_embedder, embedder, inputs)
    return vectors


async def embed_steps(pool: Executor, fn: Callable[[Any, list[Any]], list[Vector]],
                      embedder: Any, inputs: list[Any]) -> list[Vector]:
    """Ingestion inputs to vectors in steps (``EmbedExecutor.step``), all queued at once: the
    model never idles between steps, and a query can run between any two."""
    loop = asyncio.get_running_loop()
    if isinstance(pool, EmbedExecutor):
        step, executor = pool.step(embedder), pool

        def timed(embedder: Any, chunk: list[Any]) -> list[Vector]:
            started = time.perf_counter()
            out = fn(embedder, chunk)
            executor.observe(embedder, len(chunk), time.perf_counter() - started)
            return out
        run: Callable[[Any, list[Any]], list[Vector]] = timed
    else:
        step, run = INGEST_STEP, fn
    steps = [loop.run_in_executor(pool, run, embedder, inputs[i:i + step])
             for i in range(0, len(inputs), step)]
    out: list[Vector] = []
    for chunk in await asyncio.gather(*steps):
        out.extend(chunk)
    return out
