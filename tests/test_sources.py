"""Upstream sources end to end: the shipped mappings (compose/sources/) with realistic sample
events (tests/data/sources/) go through the real broker into a real `streamer serve
--source ...`, and the resulting collections, dead letters and metrics are checked."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from PIL import Image

from streamer.cli.demo import has_trained_checkpoint, random_checkpoint
from streamer.kafka.client import KafkaClient
from streamer.kafka.sources import EVENTS, LAG, SourceBridge, load_mapping
from streamer.settings import Settings
from streamer.testing.kafka import BOOTSTRAP, ROOT, ServiceProcess, ensure_broker, new_prefix
from streamer.training.shapes import ShapeSpec, render

pytestmark = pytest.mark.kafka

DATA = Path(__file__).parent / "data" / "sources"
Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass
class Upstream:
    prefix: str
    tmp: Path
    topics: dict[str, str]
    checkpoint: str | None
    client: KafkaClient


def mapping_copy(tmp: Path, name: str, variables: dict[str, str], checkpoint: str | None) -> Path:
    """A shipped mapping with this session's topic and folders (and the test model when the
    trained checkpoint is missing), as JSON."""
    data = tomllib.loads((ROOT / "compose" / "sources" / f"{name}.toml").read_text())
    data["vars"].update(variables)
    if checkpoint is not None:
        data["collection"]["embedding_function"]["config"]["checkpoint"] = checkpoint
    out = tmp / f"{name}.json"
    out.write_bytes(orjson.dumps(data))
    return out


def shape_png(path: Path, shape: str, colour: str, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = render(ShapeSpec(shape, colour, "large", "center", 1, "solid"),  # type: ignore[arg-type]
                   64, np.random.default_rng(seed))
    Image.fromarray(image).save(path)
    return image


async def _create_topics(partitions: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in partitions.items()])
    finally:
        await admin.close()


def produce(topic: str, messages: list[Message]) -> list[tuple[int, int]]:
    """Send in order; returns each message's (partition, offset)."""
    async def go() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            out = []
            for key, value, headers in messages:
                md = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
                out.append((md.partition, md.offset))
            return out
        finally:
            await producer.stop()
    return asyncio.run(go())


def dead_letters(prefix: str, want: Callable[[list[dict[str, str]]], bool],
                 timeout: float = 90) -> list[dict[str, str]]:
    """The dead-letter topic's headers (as dicts, plus "value"), read until ``want`` holds."""
    async def go() -> list[dict[str, str]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                                    isolation_level="read_committed")
        await consumer.start()
        try:
            tp = TopicPartition(f"{prefix}.dlq", 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            seen: list[dict[str, str]] = []
            deadline = time.monotonic() + timeout
            while not want(seen) and time.monotonic() < deadline:
                for recs in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [{**{k: v.decode() for k, v in r.headers},
                              "value": (r.value or b"").decode()} for r in recs]
            return seen
        finally:
            await consumer.stop()
    return asyncio.run(go())


def state(client: KafkaClient, name: str) -> dict[str, tuple[Any, Any, Any]]:
    got = client.get_collection(name).get(include=["documents", "uris", "metadatas"])
    return {i: (d, u, m) for i, d, u, m in zip(got["ids"], got["documents"], got["uris"],
                                                 got["metadatas"], strict=True)}


def wait_for_state(client: KafkaClient, name: str, expected: dict[str, tuple[Any, Any, Any]],
                   timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    got = state(client, name)
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        got = state(client, name)
    assert got == expected


def nearest(client: KafkaClient, name: str, **query: Any) -> tuple[str, float]:
    res = client.get_collection(name).query(**query, n_results=1)
    return res["ids"][0][0], res["distances"][0][0]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    ensure_broker()
    tmp = tmp_path_factory.mktemp("sources")
    prefix = new_prefix()
    topics = {"s3": f"{prefix}.up.s3", "cdc": f"{prefix}.up.cdc", "app": f"{prefix}.up.app"}
    # S3 and CDC topics are keyed (per object, per row), so several partitions keep order.
    asyncio.run(_create_topics({topics["s3"]: 2, topics["cdc"]: 3, topics["app"]: 1}))
    checkpoint = None if has_trained_checkpoint() else str(random_checkpoint(tmp))
    files = [mapping_copy(tmp, "s3-object-created-mount", {"topic": topics["s3"], "root": str(tmp / "s3")},
                          checkpoint),
             mapping_copy(tmp, "debezium-products", {"topic": topics["cdc"],
                                                     "image_root": str(tmp / "products")}, checkpoint),
             mapping_copy(tmp, "jsonl-documents", {"topic": topics["app"], "root": str(tmp / "files")},
                          checkpoint)]
    svc = ServiceProcess(prefix, tmp / "svc", args=[a for f in files for a in ("--source", str(f))])
    svc.start()
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
    try:
        yield Upstream(prefix, tmp, topics, checkpoint, client)
    finally:
        client.close()
        svc.kill()


def test_s3_notifications_index_objects_by_uri_and_deletes_follow_removals(upstream: Upstream) -> None:
    root = upstream.tmp / "s3"
    for rel, shape, colour in [("photos/cats/tabby cat.png", "circle", "orange"),
                               ("photos/shapes/red-circle.png", "circle", "red"),
                               ("photos/shapes/blue square (1).png", "square", "blue"),
                               ("photos/dogs/rex.png", "star", "black"),
                               ("secrets/key.png", "cross", "white")]:
        shape_png(root / rel, shape, colour, seed=len(rel))
    red = np.asarray(Image.open(root / "photos/shapes/red-circle.png").convert("RGB"))
    lines = (DATA / "s3-events.jsonl").read_bytes().splitlines()
    messages: list[Message] = []
    for line in lines:
        rec = (orjson.loads(line).get("Records") or [{}])[0]
        key = rec.get("s3", {}).get("object", {}).get("key")
        messages.append((None if key is None else key.encode(), line, []))
    offsets = produce(upstream.topics["s3"], messages)

    def meta(key: str, size: int, etag: str, t: str, **extra: Any) -> dict[str, Any]:
        return {"bucket": "photos", "key": key, "size": size, "etag": etag, "event_time": t, **extra}

    wait_for_state(upstream.client, "s3-images", {
        "photos/shapes/red-circle.png": (None, f"{root}/photos/shapes/red-circle.png", meta(
            "shapes/red-circle.png", 1874, "0cc175b9c0f1b6a831c399e269772661", "2026-11-20T10:00:02.877Z")),
        "photos/shapes/blue square (1).png": (None, f"{root}/photos/shapes/blue square (1).png", meta(
            "shapes/blue square (1).png", 1902, "92eb5ffee6ae2fec3ad71c777531578f-2",
            "2026-11-20T10:00:04.019Z")),
        "photos/dogs/rex.png": (None, f"{root}/photos/dogs/rex.png", meta(
            "dogs/rex.png", 1955, "4a8a08f09d37b73795649038408b5f33", "2026-11-20T10:00:05.550Z",
            content_type="image/png")),
    })
    assert nearest(upstream.client, "s3-images", query_images=[red])[0] == "photos/shapes/red-circle.png"
    # A key that climbs out of the mounted buckets maps fine but the loader refuses it: the
    # writer's dead letter names the upstream record it came from.
    p, off = offsets[-1]
    origin = f"{upstream.topics['s3']}:{p}:{off}"
    dead = dead_letters(upstream.prefix, lambda seen: any(d.get("origin") == origin for d in seen))
    letter = next(d for d in dead if d.get("origin") == origin)
    assert letter["code"] == "uri_outside_roots"
    assert "outside the data loader's roots" in letter["reason"]


def test_debezium_cdc_upserts_and_deletes_rows_and_dead_letters_a_truncate(upstream: Upstream) -> None:
    images = upstream.tmp / "products"
    for name, shape, colour in [("101.png", "star", "red"), ("101-v2.png", "star", "green"),
                                ("102.png", "square", "black"), ("103.png", "triangle", "blue")]:
        shape_png(images / name, shape, colour, seed=int(name[:3]))
    messages: list[Message] = []
    for line in (DATA / "debezium-products.jsonl").read_bytes().splitlines():
        ev = orjson.loads(line)
        messages.append((None if ev["key"] is None else orjson.dumps(ev["key"]),
                         None if ev["value"] is None else orjson.dumps(ev["value"]), []))
    offsets = produce(upstream.topics["cdc"], messages)

    def meta(pid: int, name: str, weight: float, lsn: int, **kind: Any) -> dict[str, Any]:
        return {"product_id": pid, "name": name, "weight": weight, "source_lsn": lsn, **kind}

    drill = "12-pack of drill bits with sizes ranging from #40 to #3"
    wait_for_state(upstream.client, "products", {
        "product-101-description": ("Foldable 2-wheel kick scooter", None,
                                    meta(101, "scooter", 3.2, 24023960, kind="description")),
        "product-101-image": (None, f"{images}/101-v2.png",
                              meta(101, "scooter", 3.2, 24023960, kind="image", image_path="101-v2.png")),
        # Its image_path was set to NULL: the image record went, the description stays.
        "product-103-description": (drill, None, meta(103, "drill bits", 0.75, 24025208,
                                                      kind="description")),
    })
    assert nearest(upstream.client, "products", query_texts=["Foldable 2-wheel kick scooter"]) == \
        pytest.approx(("product-101-description", 0.0), abs=1e-4)
    p, off = offsets[6]  # the truncate: no mapping for op "t"
    source = f"{upstream.topics['cdc']}:{p}:{off}"
    dead = dead_letters(upstream.prefix, lambda seen: any(d.get("source") == source for d in seen))
    letter = next(d for d in dead if d.get("source") == source)
    assert letter["mapping"] == "products-cdc" and letter["code"] == "schema"
    assert "'t'" in letter["reason"] and orjson.loads(letter["value"])["op"] == "t"


def test_json_lines_flow_around_malformed_events_which_land_in_the_dlq(upstream: Upstream) -> None:
    files = upstream.tmp / "files"
    shape_png(files / "diagrams" / "flow.png", "diamond", "purple", seed=5)
    lines = (DATA / "app-documents.jsonl").read_bytes().splitlines()
    logo = np.asarray(Image.open(io.BytesIO(base64.b64decode(
        orjson.loads(lines[2])["image_base64"]))).convert("RGB"))
    messages: list[Message] = [
        (None, lines[0] + b"\n" + lines[1] + b"\n", []),  # two lines in one message
        (b"logo", lines[2], []),
        (None, lines[3], []),
        (None, b'{"id": "broken", "text": ', []),  # cut off: not JSON
        (None, lines[4], []),
        (None, b'{"text": "no id and no key"}', []),
        (None, lines[5], []),
        (None, b'{"id": "note-3"}', [("op", b"delete")]),
        (b"note-2", None, []),  # tombstone
        (None, b'{"id": "bad-meta", "text": "x", "metadata": {"nested": {"a": 1}}}', []),
        (b"late", b'{"text": "still flows after the bad ones"}', []),
    ]
    offsets = produce(upstream.topics["app"], messages)
    wait_for_state(upstream.client, "app-documents", {
        "note-1": ("Quarterly report (revised): revenue grew 14% on new subscriptions", None,
                   {"author": "ana", "team": "finance", "revised": True}),
        "logo": (None, None, {"kind": "logo"}),
        "diagram": (None, f"{files}/diagrams/flow.png", {"kind": "diagram"}),
        "late": ("still flows after the bad ones", None, None),
    })
    assert nearest(upstream.client, "app-documents", query_images=[logo]) == \
        pytest.approx(("logo", 0.0), abs=1e-4)
    bad = {f"{upstream.topics['app']}:{p}:{o}": i for i, (p, o) in enumerate(offsets) if i in (3, 5, 9)}
    dead = dead_letters(upstream.prefix, lambda seen: set(bad) <= {d.get("source") for d in seen})
    letters = {d["source"]: d for d in dead if d.get("source") in bad}
    assert set(letters) == set(bad)
    by_index = {bad[s]: d for s, d in letters.items()}
    assert "not JSON" in by_index[3]["reason"]
    assert by_index[3]["value"] == '{"id": "broken", "text": '
    assert "no usable id" in by_index[5]["reason"]
    assert "metadata" in by_index[9]["reason"] and by_index[9]["code"] == "invalid_argument"
    assert all(d["mapping"] == "app-documents" for d in letters.values())


def test_bridge_component_reports_lag_and_outcomes(upstream: Upstream) -> None:
    """The bridge on its own (in this process), against the same service: its lag gauge
    shows the backlog while small batches are handed off, then zero; its counters split the
    outcomes."""
    topic = f"{upstream.prefix}.up.metrics"
    asyncio.run(_create_topics({topic: 1}))
    n = 100
    produce(topic, [(f"m{i}".encode(), orjson.dumps({"text": f"metric test document {i}"}), [])
                    for i in range(n)] + [(None, b"[1, 2", [])])
    path = mapping_copy(upstream.tmp, "jsonl-documents", {"topic": topic, "root": str(upstream.tmp)},
                        upstream.checkpoint)
    raw = orjson.loads(path.read_bytes())
    raw["name"] = raw["collection"]["name"] = "metrics-docs"
    path.write_bytes(orjson.dumps(raw))
    settings = Settings(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=upstream.prefix,
                        instance_id="in-test", batch_max_items=5)

    def sample(metric: Any, **labels: str) -> float:
        return float(metric.labels(**labels)._value.get())

    mapping = load_mapping(path)

    async def run() -> list[float]:
        seen = []
        async with SourceBridge(settings, mapping) as bridge:
            assert bridge.spec is not None and bridge.spec.name == "metrics-docs"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (
                    sample(EVENTS, source="metrics-docs", outcome="dead_lettered") < 1
                    or sample(LAG, source="metrics-docs") != 0):
                seen.append(sample(LAG, source="metrics-docs"))
                await asyncio.sleep(0.001)
        return seen

    seen = asyncio.run(run())
    assert max(seen) >= n / 2  # the backlog was visible while it drained
    assert sample(LAG, source="metrics-docs") == 0
    assert sample(EVENTS, source="metrics-docs", outcome="mapped") == n
    assert sample(EVENTS, source="metrics-docs", outcome="dead_lettered") == 1
    wait_for_state(upstream.client, "metrics-docs",
                   {f"m{i}": (f"metric test document {i}", None, None) for i in range(n)})
