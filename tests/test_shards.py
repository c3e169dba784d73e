"""Shard arithmetic and the gather step, without a broker (tests/test_shards_kafka.py runs
the whole path on the real one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from schemas.errors import (
    InvalidArgumentError,
    ShardUnavailableError,
    error_from_wire,
    error_to_wire,
)
from schemas.events import decode_array, encode_array
from streamer.cli.main import main
from streamer.kafka.common import Topics
from streamer.kafka.scatter import merge_get, merge_query
from streamer.kafka.shards import Shard, ShardAssignor, reader_group
from streamer.settings import Settings


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "1", "a/b", "1/2/3"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        Shard.parse(text)


def test_cli_refuses_a_bad_shard_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--shard", "2/2"]) == 2
    assert "need 0 <= K < N" in capsys.readouterr().err


def test_partitions_split_by_modulo_and_groups_are_per_shard() -> None:
    shards = [Shard.parse(f"{k}/3") for k in range(3)]
    for p in range(12):
        assert [s.owns(p) for s in shards].count(True) == 1
        assert shards[p % 3].owns(p)
    topics = Topics.for_settings(Settings(kafka_topic_prefix="pfx", shard="1/3"))
    assert topics.readers == reader_group(Topics.for_settings(
        Settings(kafka_topic_prefix="pfx")).readers, 1, 3) == "pfx.writers.readers.shard-1-of-3"
    assert topics.writers == "pfx.writers.shard-1-of-3"


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(12))


def test_assignor_hands_out_only_the_shards_partitions_round_robin() -> None:
    members = {m: ConsumerProtocolMemberMetadata(0, ["req"], b"") for m in ("a", "b")}
    out = ShardAssignor(Shard(1, 4)).assign(_Cluster(), members)
    got = {m: dict(a.assignment).get("req", []) for m, a in out.items()}
    assert got == {"a": [1, 9], "b": [5]}


def test_shard_unavailable_crosses_the_wire_typed_and_retriable() -> None:
    exc = error_from_wire(error_to_wire(ShardUnavailableError("Shard 1 of 2 has no live replica")))
    assert isinstance(exc, ShardUnavailableError) and exc.retriable
    assert exc.message == "Shard 1 of 2 has no live replica"


def _shard_query(ids: list[str], dists: list[float], dim: int = 3) -> dict[str, Any]:
    emb = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim) + len(ids[0])
    return {"ids": [ids], "distances": [dists], "documents": [[f"doc {i}" for i in ids]],
            "metadatas": [[{"id": i} for i in ids]], "uris": None, "data": None,
            "embeddings": [encode_array(emb)], "included": ["distances", "documents"]}


def test_query_merge_is_the_global_top_k_by_distance() -> None:
    a = _shard_query(["a1", "a2", "a3"], [0.1, 0.4, 0.5])
    b = _shard_query(["bb1", "bb2", "bb3"], [0.2, 0.3, 0.9])
    merged = merge_query([a, b], {"n_results": 4, "include": ["documents", "embeddings"]})
    assert merged["ids"] == [["a1", "bb1", "bb2", "a2"]]
    assert merged["documents"] == [["doc a1", "doc bb1", "doc bb2", "doc a2"]]
    assert merged["distances"] is None  # asked of the shards for the merge, not by the caller
    rows = decode_array(merged["embeddings"][0])
    np.testing.assert_array_equal(rows[0], decode_array(a["embeddings"][0])[0])
    np.testing.assert_array_equal(rows[1], decode_array(b["embeddings"][0])[0])


def test_get_merge_applies_offset_and_limit_to_the_whole() -> None:
    def part(ids: list[str]) -> dict[str, Any]:
        return {"ids": ids, "documents": ids, "metadatas": None, "embeddings": None,
                "uris": None, "data": None, "included": ["documents"]}
    merged = merge_get([part(["a", "b", "c"]), part(["d", "e"])], {"limit": 2, "offset": 2})
    assert merged["ids"] == ["c", "d"] and merged["documents"] == ["c", "d"]
