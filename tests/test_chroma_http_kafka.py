"""Chroma's HTTP API on ``streamer serve`` over Kafka: a 201 means applied, for every client
(a Python client with its own session reads the records at once), through a real
``chromadb.HttpClient``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import pytest
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import QuotaError

from streamer.kafka.client import KafkaClient
from streamer.testing.chroma import streamer_serve

pytestmark = pytest.mark.kafka


def test_a_write_answers_once_applied_for_every_client(tmp_path: Path) -> None:
    with streamer_serve(tmp_path, kafka=True) as svc:
        http = chromadb.HttpClient(host="127.0.0.1", port=svc.port,
                                   settings=ChromaSettings(anonymized_telemetry=False))
        col: Any = http.create_collection("ryw", embedding_function=None)
        # Another client, another session: it carries none of the HTTP writes' offsets.
        other = KafkaClient(kafka_topic_prefix=svc.prefix)
        try:
            theirs = other.get_collection("ryw", embedding_function=None)
            for i in range(12):
                col.add(ids=[f"r{i}"], embeddings=[[float(i), 1.0]], documents=[f"doc {i}"])
                assert theirs.count() == i + 1
                assert col.query(query_embeddings=[[float(i), 1.0]], n_results=1)["ids"] == \
                    [[f"r{i}"]]
            col.upsert(ids=["r0"], embeddings=[[0.0, 1.0]], documents=["changed"])
            assert theirs.get(ids=["r0"])["documents"] == ["changed"]
            col.delete(ids=["r1", "r2"])
            assert theirs.count() == 10
        finally:
            other.close()


def test_the_services_limits_are_chromas_quota_errors(tmp_path: Path) -> None:
    """A document or n_results over the service's limits: 400 ``QuotaError``, which Chroma's
    own client raises as ``chromadb.errors.QuotaError`` (Chroma Cloud's name for a limit)."""
    with streamer_serve(tmp_path, kafka=True, STREAMER_MAX_DOCUMENT_BYTES="1000",
                        STREAMER_MAX_N_RESULTS="5") as svc:
        http = chromadb.HttpClient(host="127.0.0.1", port=svc.port,
                                   settings=ChromaSettings(anonymized_telemetry=False))
        col: Any = http.create_collection("limits", embedding_function=None)
        with pytest.raises(QuotaError, match="exceeds 1000 bytes"):
            col.add(ids=["big"], embeddings=[[1.0, 2.0]], documents=["x" * 1001])
        col.add(ids=["ok"], embeddings=[[1.0, 2.0]], documents=["x" * 1000])
        with pytest.raises(QuotaError, match="n_results"):
            col.query(query_embeddings=[[1.0, 2.0]], n_results=6)
        assert col.query(query_embeddings=[[1.0, 2.0]], n_results=5)["ids"] == [["ok"]]
        assert col.count() == 1
