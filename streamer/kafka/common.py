"""Topic names, client settings and topic creation shared by the service and the client."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

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



def big_messages(settings: Settings) -> dict[str, int]:
    """Consumer settings that fetch a query or reply of up to the message limit."""
    limit = settings.kafka_max_message_bytes
    return {"max_partition_fetch_bytes": limit, "fetch_max_bytes": max(limit, 50 << 20)}


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (where its record lives)."""
    index: int = murmur2(key) & 0x7FFFFFFF
    return index % partitions


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
        big = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
        wanted = [
            NewTopic(topics.requests, n, settings.kafka_replication),
            NewTopic(topics.state, n, settings.kafka_replication, topic_configs=compact),
            NewTopic(topics.collections, 1, settings.kafka_replication, topic_configs=compact),
            NewTopic(topics.queries, n, settings.kafka_replication, topic_configs=big),
            NewTopic(topics.replies, n, settings.kafka_replication, topic_configs=big),
            NewTopic(topics.dlq, 1, settings.kafka_replication),
        ]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(missing)
    finally:
        await admin.close()
