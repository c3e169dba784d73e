"""Where a write event's records belong and how the rest travels (streamer/kafka/routing.py),
without a broker: every chain a delete takes visits each record's home partition once, ends
with Chroma's count, and carries the caller's headers with the chain's state rewritten."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.records import DeleteRequest
from streamer.kafka.routing import (
    DELETED,
    FORWARDED_FROM,
    HOPS,
    SCOPE,
    Hop,
    delete_hop,
    header,
    home,
    write_hop,
)

CID = "6d0c1f32-0b52-4d9c-8b8e-3f0d1c2b3a49"


def test_a_write_applies_on_its_home_partition_and_goes_there_from_any_other() -> None:
    n = 6
    target = home(CID, "r1", n)
    assert write_hop(CID, "r1", target, n) == Hop(local=True)
    for p in set(range(n)) - {target}:
        assert write_hop(CID, "r1", p, n) == Hop(local=False, to=target)


def walk_ids(ids: list[str], first: int, n: int) -> tuple[dict[int, list[str]], int]:
    """Follow a delete by ids from the partition it arrived on: each hop's share, the count."""
    shares: dict[int, list[str]] = {}
    request, headers, partition = DeleteRequest(ids=ids), [("reply_to", b"r")], first
    for _ in range(n + 1):
        hop = delete_hop(CID, request, partition, n, headers)
        if hop.local:
            assert partition not in shares, "a partition visited twice"
            shares[partition] = list(hop.ids or [])
        if hop.to is None:
            return shares, hop.count(len(hop.ids or []))
        assert hop.rest
        headers = hop.headers(headers, f"requests:{first}:7")
        request, partition = DeleteRequest(ids=hop.rest), hop.to
    raise AssertionError("the chain did not end")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=20),
       st.integers(1, 8), st.integers(0, 7))
def test_a_delete_by_ids_visits_each_home_once_and_counts_the_ids_named(
        ids: list[str], n: int, first: int) -> None:
    first %= n
    shares, count = walk_ids(ids, first, n)
    assert count == len(ids)
    assert sorted(i for share in shares.values() for i in share) == sorted(ids)
    for partition, share in shares.items():
        assert all(home(CID, i, n) == partition for i in share)


def test_a_filtered_delete_visits_every_partition_in_turn_and_sums_its_counts() -> None:
    n, first = 5, 3
    where = {"kind": "old"}
    headers: list[tuple[str, bytes]] = [("reply_to", b"r"), ("correlation_id", b"c")]
    visited, deleted, partition = [], {3: 2, 4: 0, 0: 5, 1: 1, 2: 4}, first
    while True:
        hop = delete_hop(CID, DeleteRequest(where=where), partition, n, headers)
        visited.append(partition)
        if not hop.continues(deleted[partition], None):
            assert hop.count(deleted[partition]) == sum(deleted.values())
            break
        headers = hop.headers(headers, f"requests:{first}:11", deleted[partition])
        assert header(headers, FORWARDED_FROM) == f"requests:{first}:11"
        assert [k for k, _ in headers].count(DELETED) == 1
        assert hop.to is not None
        partition = hop.to
    assert visited == [3, 4, 0, 1, 2]


def test_a_filtered_delete_with_a_limit_stops_once_it_is_spent() -> None:
    hop = delete_hop(CID, DeleteRequest(where={"a": 1}, limit=4), 0, 3, [(DELETED, b"3"),
                                                                      (HOPS, b"2")])
    assert (hop.to, hop.before) == (2, 3)
    assert hop.continues(0, 4) and not hop.continues(1, 4)
    assert hop.count(1) == 4


def test_a_scoped_filtered_delete_applies_to_its_partition_only() -> None:
    hop = delete_hop(CID, DeleteRequest(where={"a": 1}), 2, 6, [(SCOPE, b"partition")])
    assert hop == Hop(local=True) and not hop.continues(9, None)


def test_each_hop_rewrites_the_chains_headers_and_keeps_the_callers() -> None:
    """The chain's state is rewritten at every hop; the first sender's position is kept."""
    incoming = [("reply_to", b"r"), ("traceparent", b"00-ab-cd-01"), (DELETED, b"999"),
                (HOPS, b"0,1"), (FORWARDED_FROM, b"requests:1:2")]
    hop = write_hop(CID, "x", (home(CID, "x", 4) + 1) % 4, 4)
    out = hop.headers(incoming, "requests:3:9")
    assert out == [("reply_to", b"r"), ("traceparent", b"00-ab-cd-01"),
                   (FORWARDED_FROM, b"requests:1:2")]
