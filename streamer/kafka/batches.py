"""A writer batch on its way through the stages (kafka/service.py): the records fetched, their
jobs, the events refused while parsing, the events that continue on another partition
(kafka/routing.py) and the traced requests (tracing.py)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord, TopicPartition

from consumers.write.pipeline import WriteJob
from schemas.records import DeleteRequest, WriteRequest
from streamer.kafka.routing import Hop
from streamer.tracing import BatchTrace

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Batches: TypeAlias = dict[TopicPartition, list[Record]]


@dataclass
class Prepared:
    records: Batches
    jobs: list[tuple[Record, WriteJob]] = field(default_factory=list)
    failed: list[tuple[Record, BaseException]] = field(default_factory=list)
    traced: BatchTrace | None = None
    #: events nothing of which is applied here: forwarded whole (or a delete's other ids)
    moves: list[tuple[Record, Hop]] = field(default_factory=list)
    #: (partition, offset) -> the hop of a job whose event goes on after this partition
    hops: dict[tuple[int, int], Hop] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(records) for records in self.records.values())

    def merge(self, other: Prepared) -> Prepared:
        records = {tp: self.records.get(tp, []) + other.records.get(tp, [])
                   for tp in {*self.records, *other.records}}
        traced = other.traced if self.traced is None else self.traced.merge(other.traced)
        return Prepared(records, self.jobs + other.jobs, self.failed + other.failed, traced,
                        self.moves + other.moves, {**self.hops, **other.hops})

    def stage(self, name: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.traced is None else self.traced.stage(name)

    def keep(self, partitions: Any) -> Prepared:
        """Only the partitions still ours (those fenced since the fetch come again)."""
        return Prepared({tp: r for tp, r in self.records.items() if tp.partition in partitions},
                        [(r, j) for r, j in self.jobs if r.partition in partitions],
                        [(r, e) for r, e in self.failed if r.partition in partitions],
                        self.traced, [(r, h) for r, h in self.moves if r.partition in partitions],
                        self.hops)


def needs_model(job: WriteJob) -> bool:
    """Whether the job gives the model work (an item without its embedding)."""
    return (job.embedder is not None and isinstance(job.request, WriteRequest)
            and any(it.embedding is None and (it.document is not None or it.image is not None
                                              or it.uri is not None)
                    for it in job.request.items))


def result(job: WriteJob, hop: Hop | None) -> Any:
    """A write's answer: a delete's count (Chroma's ``{"deleted": n}``, over every hop of one
    that spans partitions), other writes' None."""
    if not isinstance(job.request, DeleteRequest):
        return None
    return {"deleted": job.deleted if hop is None else hop.count(job.deleted)}


__all__ = ["Batches", "Prepared", "Record", "needs_model", "result"]
