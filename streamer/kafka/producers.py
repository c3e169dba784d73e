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

from streamer.kafka.common import transactional_producer
from streamer.settings import Settings

log = logging.getLogger(__name__)

#: errors meaning another producer with our transactional id (or the coordinator, after the
#: transaction timeout) took the epoch: the batch must be dropped, never retried here.
FENCED: tuple[type[BaseException], ...] = (ProducerFenced, InvalidProducerEpoch)


def writer_role(partition: int) -> str:
    """The transactional id's role part: ``<prefix>-writer-p<partition>``."""
    return f"writer-p{partition}"


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
        """Start (fence with) a fresh producer for each partition, all at once: a rebalance
        costs one concurrent InitProducerId round. Producers of the previous assignment are
        closed first, kept partitions included: while we were away (a pause past the
        session timeout) another writer may have owned them and bumped their epoch, and
        the newest InitProducerId is the one owner."""
        await self.close_all()
        new = sorted(partitions)
        started = await asyncio.gather(*(self._start(p) for p in new), return_exceptions=True)
        failure: BaseException | None = None
        for p, result in zip(new, started, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
            else:
                self._producers[p] = result
        if failure is not None:
            raise failure

    async def close_all(self) -> None:
        await asyncio.gather(*(self.drop(p) for p in list(self._producers)))

    async def _start(self, partition: int) -> AIOKafkaProducer:
        producer = transactional_producer(self._settings, writer_role(partition))
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
        await self.close_all()
