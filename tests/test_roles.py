"""``streamer serve --role``: a writer process that only ingests and a reader process that
only answers queries, on one Kafka cluster, together serve a collection end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import AsyncKafkaClient
from streamer.kafka.service import Service
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ensure_broker, new_prefix

pytestmark = pytest.mark.kafka


async def test_a_writer_and_a_reader_split_the_work(tmp_path: Path) -> None:
    ensure_broker()
    prefix = new_prefix()

    def settings(name: str) -> Settings:
        return Settings.from_env(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=prefix,
                                 data_dir=str(tmp_path / name), kafka_partitions=2)

    with pytest.raises(ValueError, match="role"):
        Service(settings("x"), role="both")
    async with Service(settings("w"), role="writer") as writer, \
            Service(settings("r"), role="reader") as reader, \
            AsyncKafkaClient(settings=settings("c"), wait_writes=True) as client:
        assert not hasattr(writer, "reader") and not hasattr(reader, "_writer")
        col = await client.create_collection(
            "notes", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"))
        await col.add(ids=["a", "b"], documents=["a red circle", "a blue square"])
        res = await col.query(query_texts=["a red circle"], n_results=1)
        assert res["ids"] == [["a"]]
