"""Where a write event's records belong, and how an event that arrived elsewhere gets there.

A record's events are ordered by one writer: the one of the requests partition that Java's
default partitioner (murmur2) gives its key ``<collection id>/<record id>``. Producers at their
defaults place keys differently: librdkafka (kcat, confluent-kafka for Python, Go and .NET)
hashes with CRC32, Sarama with FNV-1a, and a producer without a key spreads events round-robin.
So the writer of the partition an event arrived on applies what belongs there and forwards the
rest, in the same transaction that commits its consumed offset (exactly once: an aborted
transaction forwards nothing, and the event comes again). The target partition's writer
applies it in that partition's order. A producer's partitioner is a function of the key, so one
producer's events for one record all take the same detour and keep their order.

A delete can span partitions. By ids, it visits the partitions of its ids one after the other,
each applying its share and forwarding the rest. By filter, from a producer that sent it to one
partition, it visits every partition in turn (header ``scope=partition`` marks one that applies
to its partition only: ``KafkaClient`` sends one of those to every partition itself, after its
own writes there). The last hop answers, with the count Chroma gives: the ids named, or the
records deleted on all hops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import dumps, state_key
from schemas.records import DeleteRequest
from streamer.kafka.common import partition_of

#: Internal headers of a forwarded event: never copied from the event that arrived.
FORWARDED_FROM = "forwarded_from"  # topic:partition:offset of the event as first sent
HOPS = "streamer_hops"  # a filtered delete's partitions still to visit, comma-separated
DELETED = "streamer_deleted"  # the count so far: ids named, or records deleted on earlier hops
SCOPE = "scope"  # "partition": a filtered delete for the partition it was sent to, only
_INTERNAL = (FORWARDED_FROM, HOPS, DELETED)

Headers = list[tuple[str, bytes]]


def home(collection_id: str, id_: str, partitions: int) -> int:
    """The partition whose writer orders the record's events."""
    return partition_of(state_key(collection_id, id_), partitions)


@dataclass(frozen=True)
class Hop:
    """What an event does on the partition it arrived on: the share applied here and where the
    rest goes after this hop's transaction (``to``; None: this hop answers)."""

    local: bool  # something is applied here (a forwarded single-record write: nothing)
    to: int | None = None
    ids: list[str] | None = None  # a delete by ids: this partition's share
    rest: list[str] | None = None  # a delete by ids: the ids the next hops own
    hops: tuple[int, ...] = ()  # a filtered delete: the partitions after ``to``
    named: int | None = None  # a delete by ids: the ids the caller named (its answer)
    filtered: bool = False  # a filtered delete, visiting every partition
    before: int = 0  # a filtered delete: records deleted on earlier hops

    def count(self, deleted_here: int) -> int:
        """A delete's count after this hop: Chroma's answer once the chain ends here."""
        return self.named if self.named is not None else self.before + deleted_here

    def continues(self, deleted_here: int, limit: int | None) -> bool:
        """Whether the event goes on: a filtered delete whose limit is spent stops here."""
        return self.to is not None and (limit is None or self.count(deleted_here) < limit)

    def headers(self, headers: Sequence[tuple[str, bytes]] | None, source: str,
                deleted_here: int = 0) -> Headers:
        """The next hop's headers: the caller's own (reply_to, correlation_id, traceparent...)
        and the chain's state."""
        out = [(k, bytes(v)) for k, v in headers or () if k not in _INTERNAL]
        out.append((FORWARDED_FROM, (header(headers, FORWARDED_FROM) or source).encode()))
        if self.named is not None or self.filtered:
            out.append((DELETED, str(self.count(deleted_here)).encode()))
        if self.hops:
            out.append((HOPS, ",".join(map(str, self.hops)).encode()))
        return out


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    return next((bytes(v).decode() for k, v in headers or () if k == name), None)


def write_hop(collection_id: str, id_: str, partition: int, partitions: int) -> Hop:
    target = home(collection_id, id_, partitions)
    return Hop(local=True) if target == partition else Hop(local=False, to=target)


def delete_hop(collection_id: str, request: DeleteRequest, partition: int, partitions: int,
               headers: Sequence[tuple[str, bytes]] | None) -> Hop:
    carried = header(headers, DELETED)
    if request.where is None and request.where_document is None:
        ids = request.ids or []
        named = len(ids) if carried is None else int(carried)  # Chroma counts the ids named
        mine = [i for i in ids if home(collection_id, i, partitions) == partition]
        rest = [i for i in ids if home(collection_id, i, partitions) != partition]
        to = min((home(collection_id, i, partitions) for i in rest), default=None)
        return Hop(local=bool(mine) or not rest, to=to, ids=mine, rest=rest or None, named=named)
    if header(headers, SCOPE) == "partition":
        return Hop(local=True)
    raw = header(headers, HOPS)
    if carried is None:  # the first hop: every other partition follows, in turn
        order = tuple((partition + k) % partitions for k in range(1, partitions))
    else:
        order = tuple(int(p) for p in (raw or "").split(",") if p)
    return Hop(local=True, to=order[0] if order else None, hops=order[1:], filtered=True,
               before=int(carried or 0))


def rest_event(collection_id: str, rest: list[str]) -> bytes:
    """A delete by ids for the ids of the next hops."""
    return dumps({"v": 1, "op": "delete", "collection": collection_id, "ids": rest})


__all__ = ["DELETED", "FORWARDED_FROM", "HOPS", "SCOPE", "Hop", "delete_hop", "header", "home",
           "rest_event", "write_hop"]
