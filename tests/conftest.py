from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import streamer
from tests.helpers import HashEmbedding
from tests.kafka_fixtures import ServiceProcess, ensure_broker, new_prefix, service


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    ensure_broker()
    yield from service(tmp_path_factory.mktemp("kafka"), new_prefix())


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[streamer.Client]:
    if request.param == "embedded":
        c = streamer.Client(tmp_path / "store")
        yield c
        c.close()
        return
    from streamer.kafka.client import KafkaClient

    svc: ServiceProcess = request.getfixturevalue("kafka_service")
    kc = KafkaClient(kafka_topic_prefix=svc.prefix, wait_writes=True)
    yield kc
    for col in kc.list_collections():
        kc.delete_collection(col.name)
    kc.close()


@pytest.fixture
def ef() -> HashEmbedding:
    return HashEmbedding()
