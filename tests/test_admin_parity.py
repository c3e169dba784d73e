"""The collection admin rules are one implementation (``consumers.validation.admin``): the same calls,
valid and invalid, through ``streamer.Client()`` and through a ``KafkaClient`` talking to a
real ``streamer serve`` give the same results and the same errors, one by one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamer
from streamer.testing.kafka import ServiceProcess

pytestmark = pytest.mark.kafka

Call = tuple[str, Callable[[streamer.Client], Any]]


def _calls() -> list[Call]:
    def create(name: Any, **kw: Any) -> Callable[[streamer.Client], Any]:
        return lambda c: c.create_collection(name, embedding_function=None, **kw)

    def modify(target: str, **kw: Any) -> Callable[[streamer.Client], Any]:
        return lambda c: c.get_collection(target, embedding_function=None).modify(**kw)

    return [
        ("create", create("alpha", metadata={"owner": "me", "n": 1})),
        ("create l2", create("beta", metadata={"hnsw:space": "l2"})),
        ("create f16", create("gamma", metadata={"streamer:dtype": "f16", "tags": ["a", "b"]})),
        ("create again", create("alpha")),
        ("get_or_create existing", lambda c: c.get_or_create_collection(
            "alpha", embedding_function=None, metadata={"other": 2})),
        ("get_or_create new", lambda c: c.get_or_create_collection(
            "delta", embedding_function=None)),
        ("bad name: space", create("a b")),
        ("bad name: short", create("ab")),
        ("bad name: dots", create("a..b")),
        ("bad name: edge", create("-abc")),
        ("nested metadata", create("nested", metadata={"x": {"nested": 1}})),
        ("metadata not a dict", create("notdict", metadata=[("a", 1)])),
        ("reserved key", create("reserved", metadata={"chroma:document": "x"})),
        ("non-str key", create("intkey", metadata={1: "x"})),
        ("empty list value", create("emptylist", metadata={"l": []})),
        ("mixed list value", create("mixedlist", metadata={"l": [1, "a"]})),
        ("bad metadata before bad name", create("a b", metadata={"x": {"y": 1}})),
        ("bad metadata on existing", create("alpha", metadata={"x": {"y": 1}})),
        ("bad space", create("eps", metadata={"hnsw:space": "hamming"})),
        ("bad dtype", create("eps", metadata={"streamer:dtype": "f64"})),
        ("get", lambda c: c.get_collection("alpha", embedding_function=None)),
        ("get missing", lambda c: c.get_collection("nope", embedding_function=None)),
        ("modify metadata", modify("alpha", metadata={"owner": "you"})),
        ("modify nested metadata", modify("alpha", metadata={"x": {"y": 1}})),
        ("modify space", modify("beta", metadata={"hnsw:space": "cosine"})),
        ("modify same space", modify("beta", metadata={"hnsw:space": "l2", "k": "v"})),
        ("rename onto existing", modify("alpha", name="beta")),
        ("rename bad name", modify("alpha", name="x y")),
        ("rename", modify("alpha", name="alpha2")),
        ("get renamed", lambda c: c.get_collection("alpha2", embedding_function=None)),
        ("get old name", lambda c: c.get_collection("alpha", embedding_function=None)),
        ("rename and metadata", modify("alpha2", name="alpha3", metadata={"v": 3})),
        ("list", lambda c: c.list_collections()),
        ("count", lambda c: c.count_collections()),
        ("delete", lambda c: c.delete_collection("gamma")),
        ("delete again", lambda c: c.delete_collection("gamma")),
        ("delete missing", lambda c: c.delete_collection("never")),
        ("list after delete", lambda c: c.list_collections()),
    ]


def _outcome(value: Any) -> Any:
    """What a call returned, by value (ids differ between the two stores)."""
    if isinstance(value, list):
        return sorted((_outcome(v) for v in value), key=repr)
    if hasattr(value, "name") and hasattr(value, "metadata"):
        return ("collection", value.name, value.metadata)
    return value


def _run(client: streamer.Client, calls: list[Call]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for label, call in calls:
        try:
            out.append((label, ("ok", _outcome(call(client)))))
        except Exception as exc:
            out.append((label, ("error", type(exc).__name__, str(exc))))
    return out


def test_same_admin_calls_same_results_and_errors(kafka_service: ServiceProcess,
                                                  tmp_path: Path) -> None:
    from streamer.kafka.client import KafkaClient

    calls = _calls()
    with streamer.Client(tmp_path / "store") as embedded:
        want = _run(embedded, calls)
    kafka = KafkaClient(kafka_topic_prefix=kafka_service.prefix, wait_writes=True)
    try:
        for col in kafka.list_collections():
            kafka.delete_collection(col.name)
        got = _run(kafka, calls)
        for col in kafka.list_collections():
            kafka.delete_collection(col.name)
    finally:
        kafka.close()
    for (label, w), (_, g) in zip(want, got, strict=True):
        assert g == w, label
    # The script exercises both outcomes, and Chroma's refusal of nested metadata.
    outcomes = dict(want)
    assert {o[0] for o in outcomes.values()} == {"ok", "error"}
    assert outcomes["nested metadata"][0] == "error"
    assert "Expected metadata value to be a str, int, float, bool" in outcomes["nested metadata"][2]
    assert outcomes["bad metadata before bad name"][2] == outcomes["nested metadata"][2].replace(
        "{'nested': 1}", "{'y': 1}")
    assert outcomes["get renamed"] == ("ok", ("collection", "alpha2", {"owner": "you"}))
