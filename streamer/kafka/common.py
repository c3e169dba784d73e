"""Topic names, producer and consumer sizing and topic creation shared by the service and the
client (connection settings: ``streamer.kafka.security``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2

from consumers.runtime.tasks import cancel as cancel
from consumers.runtime.tasks import supervise as supervise
from streamer.kafka.security import client_kwargs
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
        readers = f"{group}.readers"
        if settings.shard is not None:  # each shard has its own writer and reader groups
            k, n = settings.shard.split("/")
            group, readers = (f"{g}.shard-{k}-of-{n}" for g in (group, readers))
        return cls(requests=f"{prefix}.requests", queries=f"{prefix}.queries",
                   replies=f"{prefix}.replies", state=f"{prefix}.state",
                   collections=f"{prefix}.collections", dlq=f"{prefix}.dlq",
                   writers=group, readers=readers)


def rpc_headers(reply_to: str, correlation_id: str, timeout_s: float) -> list[tuple[str, bytes]]:
    """An RPC's headers. ``deadline_ms`` (wall clock: the reader runs elsewhere) is when the
    caller stops waiting, so a reader that reaches the request later, one that was still
    starting or catching up, drops it instead of answering nobody."""
    deadline_ms = int((time.time() + timeout_s) * 1000)
    return [("reply_to", reply_to.encode()), ("correlation_id", correlation_id.encode()),
            ("deadline_ms", str(deadline_ms).encode())]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (where its record lives)."""
    index: int = murmur2(key) & 0x7FFFFFFF
    return index % partitions


def producer_kwargs(settings: Settings) -> dict[str, Any]:
    """Sized for the largest event the limits admit (envelope and headers on top), and
    compressed. Callers check an event against ``settings.max_message_bytes`` before sending,
    so this bound only ever trips on the writer's own dead letters and replies."""
    kw: dict[str, Any] = {"max_request_size": settings.max_message_bytes + (64 << 10)}
    if settings.kafka_compression != "none":
        kw["compression_type"] = settings.kafka_compression
    return kw


def consumer_kwargs(settings: Settings) -> dict[str, Any]:
    """A fetch must be able to hold the largest event: aiokafka stops on a record larger than
    ``max_partition_fetch_bytes`` (1 MiB by default) instead of skipping it."""
    size = settings.max_message_bytes + (64 << 10)
    return {"max_partition_fetch_bytes": size, "fetch_max_bytes": max(size, 50 << 20)}


async def ensure_topics(settings: Settings, topics: Topics) -> None:
    """Create the topics if missing. Requests and state share a partition count: a record's
    request and its state live on the same partition number (co-partitioned by key)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        n = settings.kafka_partitions
        # The broker's default (1 MiB) would refuse photos; sized from the limits instead.
        sized = {"max.message.bytes": str(settings.max_message_bytes + (64 << 10))}
        compact = {"cleanup.policy": "compact", **sized}
        wanted = [
            NewTopic(topics.requests, n, settings.kafka_replication, topic_configs=sized),
            NewTopic(topics.state, n, settings.kafka_replication, topic_configs=compact),
            NewTopic(topics.collections, 1, settings.kafka_replication, topic_configs=compact),
            NewTopic(topics.queries, n, settings.kafka_replication, topic_configs=sized),
            NewTopic(topics.replies, n, settings.kafka_replication, topic_configs=sized),
            NewTopic(topics.dlq, 1, settings.kafka_replication, topic_configs=sized),
        ]
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(missing)
        # All of them: a topic another process created a moment ago may not be listed yet.
        await _raise_message_size(admin, [t.name for t in wanted], int(sized["max.message.bytes"]))
    finally:
        await admin.close()


_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config_source for a topic's own settings


async def _raise_message_size(admin: AIOKafkaAdminClient, names: list[str], size: int) -> None:
    """Topics created before the limits grew (or by older versions) get the new
    ``max.message.bytes``; never lowered. AlterConfigs replaces a topic's whole set of its own
    settings, so the others (``cleanup.policy``...) are sent back unchanged."""
    if not names:
        return
    [described] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    changes = []
    for error, _, _, name, entries in (r[:5] for r in described.resources):
        own = {e[0]: e[1] for e in entries if e[3] == _DYNAMIC_TOPIC_CONFIG}
        current = next((int(e[1]) for e in entries if e[0] == "max.message.bytes"), size)
        if error or current >= size:
            continue
        if any(value is None for value in own.values()):  # a sensitive value cannot be re-sent
            log.warning("topic %s: max.message.bytes is %d, below the %d the limits need; "
                        "raise it with kafka-configs", name, current, size)
            continue
        changes.append(ConfigResource(ConfigResourceType.TOPIC, name,
                                      {**own, "max.message.bytes": str(size)}))
    if changes:
        await admin.alter_configs(changes)
        log.info("raised max.message.bytes to %d on %s", size, ", ".join(c.name for c in changes))


def transactional_producer(settings: Settings, role: str) -> AIOKafkaProducer:
    """A producer for exactly-once hand-offs. Its transactional id is stable per process
    slot and role (``writer-p<partition>``, ``source-<mapping>-<instance>``): a restarted
    process fences its dead predecessor and aborts its half-done transaction."""
    return AIOKafkaProducer(
        **client_kwargs(settings), **producer_kwargs(settings), acks="all",
        enable_idempotence=True, transactional_id=f"{settings.kafka_topic_prefix}-{role}",
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
