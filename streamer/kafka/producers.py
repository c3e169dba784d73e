"""Per-partition transactional producers: the writer's fencing of zombies.

aiokafka has no KIP-447 group-generation fencing in ``send_offsets_to_transaction``: a writer
that stalls past the session timeout could come back and commit one stale batch for
partitions that moved to another writer. So the writer holds one transactional producer per
request partition it owns, with the transactional id ``<prefix>-writer-p<partition>``. The
new owner of a partition starts (``InitProducerId``) a producer with the same id before it
reads the partition's committed offset: the coordinator bumps the id's epoch, aborts (or
completes) the old owner's open transaction, and every later request of the old producer
fails with ``ProducerFenced``. A batch of partition p is committed in p's producer's
transaction only, so a stale owner can never commit anything for p."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced

from streamer.kafka.common import client_kwargs
from streamer.settings import Settings

log = logging.getLogger(__name__)

#: errors meaning another producer with our transactional id (or the coordinator, after the
#: transaction timeout) took the epoch: the batch must be dropped, never retried here.
FENCED: tuple[type[BaseException], ...] = (ProducerFenced, InvalidProducerEpoch)


def writer_transactional_id(settings: Settings, partition: int) -> str:
    return f"{settings.kafka_topic_prefix}-writer-p{partition}"


class PartitionProducers:
    """The transactional producers of the partitions this writer owns, keyed by partition."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._stopped = False

    def __contains__(self, partition: int) -> bool:
        return partition in self._producers

    def __len__(self) -> int:
        return len(self._producers)

    def get(self, partition: int) -> AIOKafkaProducer | None:
        return self._producers.get(partition)

    async def assign(self, partitions: set[int]) -> None:
        """Close the producers of partitions we no longer own and start (fence with) the ones
        of new partitions, all at once: a rebalance costs one InitProducerId round, not one
        per partition in turn. Producers of partitions we keep stay: their epoch is still
        the newest unless someone else owned the partition meanwhile, and then their next
        request is fenced and the writer rejoins (see ``Service``)."""
        gone = [p for p in self._producers if p not in partitions]
        await asyncio.gather(*(self.drop(p) for p in gone))
        new = sorted(p for p in partitions if p not in self._producers)
        started = await asyncio.gather(*(self._start(p) for p in new), return_exceptions=True)
        failure: BaseException | None = None
        for p, result in zip(new, started):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                self._producers[p] = result
        if failure is not None:
            raise failure

    async def _start(self, partition: int) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **client_kwargs(self._settings), acks="all", enable_idempotence=True,
            transactional_id=writer_transactional_id(self._settings, partition),
            transaction_timeout_ms=self._settings.kafka_transaction_timeout_ms)
        try:
            await producer.start()  # InitProducerId: this is where the old owner is fenced
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def drop(self, partition: int) -> None:
        """Close one partition's producer (revoked, or fenced: its epoch is gone)."""
        producer = self._producers.pop(partition, None)
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError as exc:  # a fenced producer may fail its own shutdown
                log.debug("closing the producer of partition %d: %r", partition, exc)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await asyncio.gather(*(self.drop(p) for p in list(self._producers)))
