"""The model thread serves queries first (consumers/embedding/embedq.py): a query submitted behind
queued ingestion steps runs before them, and queries queued together run as one model call.
Orderings are asserted, never timings."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from consumers.embedding.embedq import (
    INGEST_STEP,
    MAX_STEP,
    STEP_TARGET_S,
    EmbedExecutor,
    embed_query,
    embed_steps,
)
from consumers.write.pipeline import call_embedder
from schemas.errors import EmbeddingError


class Recorder:
    """A real embedding function (hashes its inputs into vectors) that records each call."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def __call__(self, inputs: list[Any]) -> list[np.ndarray]:
        self.calls.append(list(inputs))
        if "boom" in inputs:
            raise EmbeddingError("cannot embed 'boom'")
        return [np.full(4, float(len(str(x))), dtype=np.float32) for x in inputs]


async def _running(pool: EmbedExecutor, gate: threading.Event) -> asyncio.Future[Any]:
    """A job that holds the model thread until ``gate`` is set, once it is running."""
    started = threading.Event()

    def hold() -> None:
        started.set()
        gate.wait()

    busy = asyncio.wrap_future(pool.submit(hold))
    await asyncio.to_thread(started.wait)
    return busy


async def _until_queued(pool: EmbedExecutor, n: int) -> None:
    while len(pool._heap) < n:  # white box: wait for the submissions, not for time
        await asyncio.sleep(0.001)


async def test_a_query_runs_ahead_of_queued_ingestion() -> None:
    pool = EmbedExecutor("test-embed")
    gate = threading.Event()
    model = Recorder()
    try:
        busy = await _running(pool, gate)  # the step now running
        photos = [f"photo-{i}" for i in range(3 * INGEST_STEP)]
        ingest = asyncio.ensure_future(embed_steps(pool, call_embedder, model, photos))
        await _until_queued(pool, 3)
        queries = [asyncio.ensure_future(embed_query(pool, model, [q]))
                   for q in ("a red circle", "two dogs", "a boat")]
        await _until_queued(pool, 6)
        gate.set()
        await busy
        answers = await asyncio.gather(*queries)
        vectors = await ingest
    finally:
        await asyncio.to_thread(pool.shutdown)
    # The three queries in one call, before every ingestion step; then the steps in order.
    assert model.calls[0] == ["a red circle", "two dogs", "a boat"]
    assert model.calls[1:] == [photos[i:i + INGEST_STEP] for i in range(0, len(photos), INGEST_STEP)]
    assert [a[0][0] for a in answers] == [12.0, 8.0, 6.0]
    assert len(vectors) == len(photos)


async def test_a_bad_query_fails_alone() -> None:
    pool = EmbedExecutor("test-embed")
    gate = threading.Event()
    model = Recorder()
    try:
        busy = await _running(pool, gate)
        good = asyncio.ensure_future(embed_query(pool, model, ["fine"]))
        bad = asyncio.ensure_future(embed_query(pool, model, ["boom"]))
        await _until_queued(pool, 2)
        gate.set()
        await busy
        assert (await good)[0][0] == 4.0
        with pytest.raises(EmbeddingError, match="boom"):
            await bad
    finally:
        await asyncio.to_thread(pool.shutdown)
    assert model.calls[0] == ["fine", "boom"]  # tried together first, then each alone
    assert sorted(map(tuple, model.calls[1:])) == [("boom",), ("fine",)]


def test_shutdown_runs_what_was_queued_and_refuses_more() -> None:
    pool = EmbedExecutor("test-embed")
    futures = [pool.submit(lambda i=i: i * 2) for i in range(5)]
    pool.shutdown(wait=True)
    assert [f.result() for f in futures] == [0, 2, 4, 6, 8]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


async def test_ingestion_steps_last_about_the_target_whatever_the_model_speed() -> None:
    """A step is as many inputs as the model embeds in ``STEP_TARGET_S``, from the times the
    model thread reports (given here, not measured): a query waits about as long on a slow
    model as on a fast one."""
    pool = EmbedExecutor("test-embed")
    slow, fast, fresh = Recorder(), Recorder(), Recorder()
    try:
        pool.observe(slow, 8, 8 * STEP_TARGET_S / 2)  # two inputs fill a step
        pool.observe(fast, 8, 8 * STEP_TARGET_S / 1000)
        assert pool.step(slow) == 2
        assert pool.step(fast) == MAX_STEP
        assert pool.step(fresh) == INGEST_STEP
        pool.observe(slow, 1, 3 * STEP_TARGET_S)  # slower now: the average follows
        assert pool.step(slow) == 1
        photos = [f"photo-{i}" for i in range(5)]
        await embed_steps(pool, call_embedder, slow, photos)
    finally:
        await asyncio.to_thread(pool.shutdown)
    assert slow.calls == [[p] for p in photos]
