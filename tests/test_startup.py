"""A client's first request to a service that is not up yet: it waits on the queries topic
and is answered once a reader starts (a reader group seen for the first time starts at the
earliest offset), unless the caller's ``deadline_ms`` passed first; with no reader at all the
call says so, within its timeout."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streamer.errors import UnavailableError
from streamer.kafka.client import KafkaClient
from streamer.kafka.common import rpc_headers
from streamer.kafka.reader import expired
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, new_prefix


def _wait_queued(topic: str, timeout: float) -> None:
    """Until a request waits on ``topic`` (its partitions' end offsets sum above zero)."""
    async def wait() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(Settings().kafka_partitions)]
        try:
            with anyio.fail_after(timeout):
                while True:
                    with contextlib.suppress(KafkaError):  # the topic may not be created yet
                        if sum((await consumer.end_offsets(tps)).values()):
                            return
                    await asyncio.sleep(0.2)
        finally:
            await consumer.stop()
    asyncio.run(wait())


@pytest.mark.kafka
def test_first_request_sent_before_the_service_started_is_answered(
        tmp_path: Path, services: list[ServiceProcess]) -> None:
    prefix = new_prefix()
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, kafka_request_timeout_s=90)
    got: dict[str, Any] = {}
    try:
        def create() -> None:
            try:
                got["col"] = client.create_collection("early", metadata={"k": 1})
            except Exception as exc:  # reported by the assertion below, not as a thread crash
                got["error"] = exc

        call = threading.Thread(target=create, daemon=True)
        call.start()
        _wait_queued(f"{prefix}.queries", 30)  # on the topic, and no reader exists yet
        svc = ServiceProcess(prefix, tmp_path / "svc")
        svc.start()
        services.append(svc)
        call.join(timeout=60)
        assert not call.is_alive(), "the first request was not answered"
        assert "error" not in got, got
        assert got["col"].name == "early" and got["col"].metadata == {"k": 1}
        assert [c.name for c in client.list_collections()] == ["early"]
    finally:
        client.close()


@pytest.mark.kafka
def test_a_request_with_no_service_running_says_so_within_its_timeout() -> None:
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=new_prefix(), kafka_request_timeout_s=4)
    try:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="none is running, or it is still starting"):
            client.create_collection("nobody")
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert elapsed <= 4.5, elapsed


def _record(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("q", 0, 0, 0, 0, None, b"{}", None, 0, 2, headers)


def test_a_request_past_its_deadline_is_expired_and_one_without_a_deadline_is_not() -> None:
    assert not expired(_record(rpc_headers("r", "c", 30)))
    assert expired(_record(rpc_headers("r", "c", -1)))
    assert not expired(_record([("reply_to", b"r"), ("correlation_id", b"c")]))
