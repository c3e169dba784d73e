"""The replica leaves graph insertion to IndexBackfill (the writer's next batch waits for its
apply): vectors it applies stay pending, searched exactly, up to ``MAX_PENDING``; past it,
applies insert into the graph themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from consumers.storage.backfill import IndexBackfill
from streamer.kafka import replica
from streamer.kafka.client import AsyncKafkaClient
from streamer.kafka.service import Service
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ensure_broker, new_prefix

pytestmark = pytest.mark.kafka
DIM = 16


def _exact(vectors: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    d = ((vectors - query) ** 2).sum(axis=1)
    return [f"r{i}" for i in np.argsort(d, kind="stable")[:k]]


async def test_applied_vectors_stay_pending_and_are_searched_until_backfilled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_broker()
    settings = Settings.from_env(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=new_prefix(),
                                 data_dir=str(tmp_path / "svc"), kafka_partitions=2)
    vectors = np.random.default_rng(7).standard_normal((450, DIM)).astype(np.float32)
    queries = vectors[[3, 333, 420]] + 0.01
    async with Service(settings) as service, \
            AsyncKafkaClient(settings=settings, wait_writes=True) as client:
        await service.store.backfill.stop()  # backfilled by hand below, so nothing races it
        col = await client.create_collection("pending", embedding_function=None)

        async def top(n: int) -> list[list[str]]:
            ids: list[list[str]] = (await col.query(query_embeddings=queries, n_results=5))["ids"]
            assert ids == [_exact(vectors[:n], q, 5) for q in queries]
            return ids

        await col.add(ids=[f"r{i}" for i in range(300)], embeddings=vectors[:300])
        assert await col.count() == 300
        index = service.catalog.get("pending").store.index
        assert index is not None and index.pending == 300
        await top(300)
        # Applied after a search cached the pending rows: the next search sees them too.
        await col.add(ids=[f"r{i}" for i in range(300, 400)], embeddings=vectors[300:400])
        assert await col.count() == 400 and index.pending == 400
        before = await top(400)

        drain = IndexBackfill(service.catalog, service.lock, quiet_s=0)  # not waiting for quiet
        while await drain.step():
            pass
        assert index.pending == 0 and len(index) == 400
        assert await top(400) == before

        monkeypatch.setattr(replica, "MAX_PENDING", 0)  # past the bound: into the graph at once
        await col.add(ids=[f"r{i}" for i in range(400, 450)], embeddings=vectors[400:450])
        assert await col.count() == 450
        assert index.pending == 0 and len(index) == 450
        await top(450)
