"""Topic names, client settings and topic creation shared by the service and the client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from consumers.tasks import cancel as cancel
from consumers.tasks import supervise as supervise
from streamer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    requests: str
    queries: str
    replies: str
    state: str
    collections: str
    dlq: str
    writers: str
    readers: str

    @classmethod
    def for_settings(cls, settings: Settings) -> Topics:
        """Topic and consumer-group names; groups are per prefix so deployments never mix."""
        prefix = settings.kafka_topic_prefix
        group = settings.kafka_group or f"{prefix}.writers"
        return cls(requests=f"{prefix}.requests", queries=f"{prefix}.queries",
                   replies=f"{prefix}.replies", state=f"{prefix}.state",
                   collections=f"{prefix}.collections", dlq=f"{prefix}.dlq",
                   writers=group, readers=f"{group}.readers")



def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection settings passed through to every aiokafka client (SASL/TLS included)."""
    kw: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                          "security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        kw.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                  sasl_plain_username=settings.kafka_sasl_username,
                  sasl_plain_password=settings.kafka_sasl_password)
    return kw


async def ensure_topics(settings: Settings, topics: Topics) -> None:
    """Create the topics if missing. Requests and state share a partition count: a record's
    request and its state live on the same partition number (co-partitioned by key)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        n = settings.kafka_partitions
        compact = {"cleanup.policy": "compact"}
        wanted = [
            NewTopic(topics.requests, n, settings.kafka_replication),
            NewTopic(topics.state, n, settings.kafka_replication, topic_configs=compact),
            NewTopic(topics.collections, 1, settings.kafka_replication, topic_configs=compact),
            NewTopic(topics.queries, n, settings.kafka_replication),
            NewTopic(topics.replies, n, settings.kafka_replication),
            NewTopic(topics.dlq, 1, settings.kafka_replication),
        ]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(missing)
    finally:
        await admin.close()


def transactional_producer(settings: Settings, role: str) -> AIOKafkaProducer:
    """A producer for exactly-once hand-offs. Its transactional id is stable per process
    slot and role (``writer-<instance>``, ``source-<mapping>-<instance>``): a restarted
    process fences its dead predecessor and aborts its half-done transaction."""
    return AIOKafkaProducer(
        **client_kwargs(settings), acks="all", enable_idempotence=True,
        transactional_id=f"{settings.kafka_topic_prefix}-{role}",
        transaction_timeout_ms=settings.kafka_transaction_timeout_ms)


async def partitions(consumer: AIOKafkaConsumer, topic: str, *, tries: int = 50,
                     pause_s: float = 0.1) -> set[int]:
    """The partitions of a topic just created: metadata can lag creation, so ask again a
    bounded number of times, pausing between tries."""
    for _ in range(tries):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(pause_s)
    raise RuntimeError(f"topic {topic} has no partitions after {tries} metadata updates")
