"""The index sharded by state partition, and the layout clients discover it from.

Assignment: state (and request) partition ``p`` belongs to shard ``p % N``. A process started
with ``--shard K/N`` replicates only its shard's partitions, writes only its shard's request
partitions (its own writer group, ``ShardAssignor``) and answers reads from its own reader
group, so a read published once on the queries topic is answered once per shard. Several
processes may serve one shard: their group balances the queries among them.

The layout (N) is a record on the compacted ``<prefix>.shards`` topic, written by every
sharded process at start; a process whose N disagrees with the recorded one refuses to
start (changing N is a re-partition: docs/design.md, Shards). A client that finds no layout talks
to an unsharded service as before."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import TopicAlreadyExistsError

from schemas.errors import InvalidArgumentError
from schemas.events import dumps, loads
from streamer.settings import Settings

LAYOUT_KEY = b"layout"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            k, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise InvalidArgumentError(f"shard {text!r}: expected K/N, e.g. 0/2") from None
        if n < 1 or not 0 <= k < n:
            raise InvalidArgumentError(f"shard {text!r}: need 0 <= K < N")
        return cls(k, n)

    @classmethod
    def of(cls, settings: Settings) -> Shard | None:
        return None if settings.shard is None else cls.parse(settings.shard)

    def owns(self, partition: int) -> bool:
        return partition % self.count == self.index

    @property
    def suffix(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def reader_group(readers: str, shard: int, count: int) -> str:
    """The reader group of one shard (``Topics.readers`` of an unsharded deployment)."""
    return f"{readers}.{Shard(shard, count).suffix}"


_EMPTY = ("Empty", "Dead")


async def group_live(admin: AIOKafkaAdminClient, group: str) -> bool:
    """Whether a consumer group has members (a reader that answers the queries topic). One
    group per request: aiokafka misreads a DescribeGroups answer holding several."""
    [resp] = await admin.describe_consumer_groups([group])
    # (error_code, group, state, protocol_type, protocol, members)
    g = resp.groups[0]
    return g[2] not in _EMPTY and bool(g[5])


def layout_topic(settings: Settings) -> str:
    return f"{settings.kafka_topic_prefix}.shards"


class ShardAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Round-robin over the shard's own partitions only: a shard's writer group never owns a
    partition its replica does not hold (the writer resolves against the local replica)."""

    version = 0

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    @property
    def name(self) -> str:
        return f"streamer-{self.shard.suffix}"

    def assign(self, cluster: ClusterMetadata,
               members: Mapping[str, ConsumerProtocolMemberMetadata],
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        owned: dict[str, dict[str, list[int]]] = collections.defaultdict(
            lambda: collections.defaultdict(list))
        ids = sorted(members)
        i = 0
        for topic in sorted({t for m in members.values() for t in m.subscription}):
            for p in sorted(cluster.partitions_for_topic(topic) or ()):
                if self.shard.owns(p):
                    owned[ids[i % len(ids)]][topic].append(p)
                    i += 1
        return {m: ConsumerProtocolMemberAssignment(self.version, sorted(owned[m].items()), b"")
                for m in members}

    def metadata(self, topics: set[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, list(topics), b"")

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass


def assignors(settings: Settings) -> dict[str, Any]:
    """Consumer arguments for the writer group: the shard's own assignor when sharded."""
    shard = Shard.of(settings)
    return {} if shard is None else {"partition_assignment_strategy": (ShardAssignor(shard),)}


async def read_layout(settings: Settings, kw: dict[str, Any]) -> int | None:
    """The recorded shard count, or None for an unsharded deployment."""
    consumer = AIOKafkaConsumer(**kw, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        topic = layout_topic(settings)
        if not consumer.partitions_for_topic(topic):
            return None
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        count: int | None = None
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                for rec in records:
                    if rec.key == LAYOUT_KEY:
                        count = None if rec.value is None else int(loads(rec.value)["count"])
        return count
    finally:
        await consumer.stop()


async def publish_layout(settings: Settings, kw: dict[str, Any]) -> None:
    """Record this process's N, or refuse to start when another N is recorded."""
    shard = Shard.of(settings)
    if shard is None:
        return
    admin = AIOKafkaAdminClient(**kw)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            if layout_topic(settings) not in set(await admin.list_topics()):
                await admin.create_topics([NewTopic(
                    layout_topic(settings), 1, settings.kafka_replication,
                    topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    recorded = await read_layout(settings, kw)
    if recorded is not None and recorded != shard.count:
        raise InvalidArgumentError(
            f"shard {shard.index}/{shard.count}: the deployment records {recorded} shards; "
            f"changing N is a re-partition (docs/design.md, Shards)")
    if recorded is None:
        producer = AIOKafkaProducer(**kw, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(layout_topic(settings), key=LAYOUT_KEY,
                                         value=dumps({"count": shard.count}), partition=0)
        finally:
            await producer.stop()
