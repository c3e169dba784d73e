"""The writer places keys by the requests topic's partition count even while its consumer's
metadata lacks the topic: aiokafka drops a topic the broker answers for with an error, as a
broker still loading after a restart does (tests/test_churn.py restarts one mid-ingest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.kafka.client import AsyncKafkaClient
from streamer.kafka.service import Service
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ensure_broker, new_prefix

pytestmark = pytest.mark.kafka


async def test_writes_apply_while_the_writers_metadata_lacks_the_requests_topic(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_broker()
    settings = Settings.from_env(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=new_prefix(),
                                 data_dir=str(tmp_path / "svc"), http_port=0, kafka_partitions=4)
    async with Service(settings) as service, \
            AsyncKafkaClient(settings=settings, wait_writes=True) as client:
        col = await client.create_collection("gap", embedding_function=None)
        await col.add(ids=["before"], embeddings=[[0.0, 1.0]])
        writer = service._writer
        assert writer.partitions_for_topic(service.topics.requests) == {0, 1, 2, 3}
        # What the consumer's metadata answers in the window after a broker restart.
        monkeypatch.setattr(writer, "partitions_for_topic", lambda topic: None)
        ids = [f"r{i}" for i in range(12)]  # spread over all four partitions
        await col.add(ids=ids, embeddings=[[float(i), 1.0] for i in range(12)])
        await col.upsert(ids=ids[:3], embeddings=[[0.5, 0.5]] * 3, documents=["u"] * 3)
        got = await col.get(ids=ids, include=["documents"])
        assert sorted(got["ids"]) == sorted(ids)
        assert dict(zip(got["ids"], got["documents"], strict=True)) == {
            i: ("u" if i in ids[:3] else None) for i in ids}
