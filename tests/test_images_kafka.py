"""Phone-sized photos on every path of a real ``streamer serve`` (real broker, ``streamer-tiny``
server-side): ``KafkaClient``, ``AsyncKafkaClient``, the websocket (writes, queries, live
subscriptions), a raw producer on the requests topic and an upstream mapping. Each image's
record exists, a query by the same image returns it first, and its stored vector is the
embedded client's for the same pixels. Oversize images and documents get a non-retriable
``LimitExceededError`` on every path and nothing is written."""

from __future__ import annotations

import asyncio
import base64
import io
import time
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any, TypedDict

import jsonschema
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from PIL import Image

import streamer
from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.loading.decode import compress_array
from schemas.contracts import GENERATED
from schemas.errors import LimitExceededError
from schemas.events import encode_image
from streamer.kafka.common import Topics, ensure_topics
from streamer.settings import Settings
from streamer.testing.gateway import TOKENS, ws_client
from streamer.testing.images import encode, photo
from streamer.testing.kafka import BOOTSTRAP, ROOT, ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import free_port
from tests.gateway_helpers import decoded

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MAX_PIXELS = 4032 * 3024  # the service's limit: a 12-megapixel phone photo fits exactly


class Limits(TypedDict):
    """Settings overrides; typed so that ``**LIMITS`` cannot fill another keyword."""

    max_image_pixels: int


LIMITS: Limits = {"max_image_pixels": MAX_PIXELS}
UPSTREAM_BYTES = 80 << 20


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class Photos:
    """Arrays and encoded files, made once per module (the 12 MP ones take a moment)."""

    def __init__(self) -> None:
        self.a512 = photo("astronaut", 512, 512, 1)
        self.a1080 = photo("coffee", 1920, 1080, 2)
        self.a12 = photo("chelsea", 4032, 3024, 3)
        self.jpeg12 = encode(photo("astronaut", 4032, 3024, 4), "JPEG")
        self.png768 = encode(photo("coffee", 1024, 768, 5), "PNG")
        self.jpeg768 = encode(photo("rocket", 1024, 768, 6), "JPEG")
        self.oversize = photo("coffee", 4100, 3100, 7)  # 12.7 MP: over the limit
        self.oversize_jpeg = encode(photo("astronaut", 4100, 3100, 8), "JPEG")


@pytest.fixture(scope="module")
def photos() -> Photos:
    return Photos()


class Reference:
    """The embedded client over the same model: the vectors a path must reproduce."""

    def __init__(self) -> None:
        self.client = streamer.Client()
        self.col = self.client.create_collection(
            "reference", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"))
        self._n = 0

    def vector(self, image: np.ndarray | bytes) -> np.ndarray:
        self._n += 1
        id_ = f"r{self._n}"
        self.col.add(ids=[id_], images=[image])
        return np.asarray(self.col.get(ids=[id_], include=["embeddings"])["embeddings"][0])


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


async def _create_topic(topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "max.message.bytes": str(UPSTREAM_BYTES)})])
    finally:
        await admin.close()


class Served:
    def __init__(self, svc: ServiceProcess, url: str, upstream: str) -> None:
        self.svc, self.url, self.upstream = svc, url, upstream
        self.prefix = svc.prefix

    def client(self, **kw: Any) -> streamer.KafkaClient:
        return streamer.KafkaClient(BOOTSTRAP, kafka_topic_prefix=self.prefix, **LIMITS, **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ensure_broker()
    tmp = tmp_path_factory.mktemp("images")
    prefix = new_prefix()
    upstream = f"{prefix}.upstream"
    asyncio.run(_create_topic(upstream))
    mapping = tomllib.loads((ROOT / "compose/sources/jsonl-documents.toml").read_text())
    mapping["vars"].update(topic=upstream, root=str(tmp))
    source = tmp / "source.json"
    source.write_bytes(orjson.dumps(mapping))
    port = free_port()
    svc = ServiceProcess(prefix, tmp / "svc", instance="img", args=["--source", str(source)],
                         extra_env={"STREAMER_HTTP_PORT": str(port), "STREAMER_AUTH_TOKENS": TOKENS,
                                    "STREAMER_MAX_IMAGE_PIXELS": str(MAX_PIXELS)})
    svc.start()
    try:
        yield Served(svc, f"http://127.0.0.1:{port}", upstream)
    finally:
        svc.kill()


def assert_stored(col: Any, id_: str, image: np.ndarray | bytes, want: np.ndarray) -> None:
    """Exists, stores the embedded client's vector, and is the first hit for its own image."""
    got = col.get(ids=[id_], include=["embeddings"])
    assert got["ids"] == [id_]
    assert cosine(got["embeddings"][0], want) >= 0.9999
    assert col.query(query_images=[image], n_results=1)["ids"] == [[id_]]


def assert_refused(call: Any, match: str) -> None:
    with pytest.raises(LimitExceededError, match=match) as info:
        call()
    assert info.value.retriable is False and info.value.code == "limit_exceeded"


def test_kafka_client_arrays_and_files(served: Served, photos: Photos, reference: Reference) -> None:
    with served.client() as client:
        col = client.create_collection(
            "photos", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"))
        arrays = {"a512": photos.a512, "a1080": photos.a1080, "a12": photos.a12}
        files = {"jpeg12": photos.jpeg12, "png768": photos.png768}
        col.add(ids=list(arrays), images=list(arrays.values()))
        col.add(ids=list(files), images=list(files.values()))
        for id_, image in arrays.items():
            assert_stored(col, id_, image, reference.vector(image))
        for id_, data in files.items():
            assert_stored(col, id_, data, reference.vector(pixels_of(data)))
        # update and upsert take photos too; the record follows its new image.
        col.update(ids=["a512"], images=[photos.jpeg768])
        col.upsert(ids=["up"], images=[photos.a1080[::-1].copy()])
        assert_stored(col, "a512", photos.jpeg768, reference.vector(pixels_of(photos.jpeg768)))
        assert_stored(col, "up", photos.a1080[::-1].copy(), reference.vector(photos.a1080[::-1]))
        count = col.count()
        assert_refused(lambda: col.add(ids=["big"], images=[photos.oversize]),
                       f"12710000 pixels is over the limit of {MAX_PIXELS}")
        assert_refused(lambda: col.add(ids=["bigj"], images=[photos.oversize_jpeg]),
                       f"12710000 pixels is over the limit of {MAX_PIXELS}")
        assert_refused(lambda: col.upsert(ids=["doc"], documents=["x" * ((1 << 20) + 1)]),
                       "1048577 bytes, which exceeds 1048576 bytes")
        assert_refused(lambda: col.query(query_images=[photos.oversize], n_results=1),
                       "pixels is over the limit")
        assert col.count() == count and col.get(ids=["big", "bigj", "doc"])["ids"] == []
    # Under the image limits but over what one Kafka message may hold: refused before sending.
    with served.client(max_image_bytes=64 << 10, max_document_bytes=1024) as small:
        col = small.get_collection("photos")
        noise = [encode(np.random.default_rng(i).integers(0, 256, (120, 160, 3), np.uint8), "PNG")
                 for i in range(20)]
        assert_refused(lambda: col.query(query_images=noise, n_results=1),
                       r"bytes on the wire, over the limit of \d+")


async def test_async_kafka_client(served: Served, photos: Photos, reference: Reference) -> None:
    client = await streamer.AsyncKafkaClient(BOOTSTRAP, kafka_topic_prefix=served.prefix,
                                             **LIMITS).start()
    try:
        col = await client.create_collection(
            "async-photos", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"))
        await col.add(ids=["a12", "jpeg12"], images=[photos.a12, photos.jpeg12])
        await col.upsert(ids=["png768"], images=[photos.png768])
        want = {"a12": await asyncio.to_thread(reference.vector, photos.a12),
                "jpeg12": await asyncio.to_thread(reference.vector, pixels_of(photos.jpeg12)),
                "png768": await asyncio.to_thread(reference.vector, pixels_of(photos.png768))}
        images = {"a12": photos.a12, "jpeg12": photos.jpeg12, "png768": photos.png768}
        got = await col.get(ids=list(want), include=["embeddings"])
        for id_, vec in zip(got["ids"], got["embeddings"], strict=True):
            assert cosine(vec, want[id_]) >= 0.9999
            hit = await col.query(query_images=[images[id_]], n_results=1)
            assert hit["ids"] == [[id_]]
        for call in (col.add(ids=["big"], images=[photos.oversize]),
                     col.add(ids=["doc"], documents=["x" * ((1 << 20) + 1)])):
            with pytest.raises(LimitExceededError) as info:
                await call
            assert info.value.retriable is False
        assert await col.count() == 3
    finally:
        await client.close()


def test_websocket_writes_queries_and_live(served: Served, photos: Photos,
                                           reference: Reference) -> None:
    with served.client() as client:
        cid = client.create_collection(
            "ws-photos", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny")).id
    want = [reference.vector(photos.a12), reference.vector(pixels_of(photos.jpeg12))]
    asyncio.run(_websocket(served, photos, cid, want))


async def _websocket(served: Served, photos: Photos, cid: str, want: list[np.ndarray]) -> None:
    jpeg_wire = {"file": base64.b64encode(photos.jpeg12).decode()}
    array_wire = encode_image(compress_array(photos.a12))
    async with ws_client(served.url) as ws:
        sub = await ws.result({"op": "subscribe", "collection": cid, "threshold": 1e-3,
                               "images": [jpeg_wire], "include": ["metadatas"]})
        await ws.result({"op": "add", "collection": cid, "id": "ws-a12", "image": array_wire})
        await ws.result({"op": "add", "collection": cid, "id": "ws-jpeg", "image": jpeg_wire,
                         "metadata": {"via": "ws"}})
        push = await asyncio.wait_for(ws.pushes.get(), 60)
        assert (push["subscription"], push["id"]) == (sub["subscription"], "ws-jpeg")
        for id_, wire in (("ws-a12", array_wire), ("ws-jpeg", jpeg_wire)):
            got = await ws.result({"op": "query", "collection": cid, "images": [wire],
                                   "n_results": 1, "include": ["embeddings"]})
            assert got["ids"] == [[id_]]
        stored = await ws.result({"op": "get", "collection": cid, "ids": ["ws-a12", "ws-jpeg"],
                                  "include": ["embeddings"]})
        assert stored["ids"] == ["ws-a12", "ws-jpeg"]
        vecs = decoded(stored)["embeddings"]
        for got_vec, want_vec in zip(vecs, want, strict=True):
            assert cosine(got_vec, want_vec) >= 0.9999
        over = {"file": base64.b64encode(photos.oversize_jpeg).decode()}
        for frame in ({"op": "add", "collection": cid, "id": "big", "image": over},
                      {"op": "add", "collection": cid, "id": "big2",
                       "image": encode_image(compress_array(photos.oversize))},
                      {"op": "query", "collection": cid, "images": [over], "n_results": 1},
                      {"op": "subscribe", "collection": cid, "top_k": 1, "images": [over]},
                      {"op": "add", "collection": cid, "id": "doc",
                       "document": "x" * ((1 << 20) + 1)}):
            reply = await ws.call(frame, timeout=60)
            assert reply["ok"] is False, frame["op"]
            assert reply["error"]["code"] == "limit_exceeded" and not reply["error"]["retriable"]
        assert await ws.result({"op": "count", "collection": cid}) == 2


async def _produce(topic: str, events: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all",
                                compression_type="zstd", max_request_size=UPSTREAM_BYTES)
    await producer.start()
    try:
        for key, value, headers in events:
            await producer.send_and_wait(topic, key=key, value=value, headers=headers)
    finally:
        await producer.stop()


async def _replies(topic: str, n: int) -> dict[str, dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 120
        while len(got) < n and time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                for r in recs:
                    corr = dict(r.headers or ()).get("correlation_id")
                    if corr is not None:
                        got[corr.decode()] = orjson.loads(r.value or b"{}")
        return got
    finally:
        await consumer.stop()


def test_raw_producer_on_the_requests_topic(served: Served, photos: Photos,
                                            reference: Reference) -> None:
    """An application that holds JPEGs and arrays produces schema-valid events by hand."""
    with served.client() as client:
        cid = client.create_collection(
            "raw-photos", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny")).id
    schema = orjson.loads((GENERATED / "write-event.schema.json").read_bytes())
    reply_topic = f"{served.prefix}.raw-replies"
    asyncio.run(_create_topic(reply_topic))  # before the service's first reply: none is missed
    cases = {
        "raw-jpeg": {"file": base64.b64encode(photos.jpeg12).decode()},
        "raw-array": encode_image(compress_array(photos.a1080)),
        "raw-big": {"file": base64.b64encode(photos.oversize_jpeg).decode()},
        "raw-doc": None,
    }
    events, corrs = [], {}
    for id_, image in cases.items():
        ev: dict[str, Any] = {"v": 1, "op": "add", "collection": cid, "id": id_}
        if image is None:
            ev["document"] = "x" * ((1 << 20) + 1)
        else:
            ev["image"] = image
        jsonschema.validate(ev, schema)
        corrs[id_] = uuid.uuid4().hex
        events.append((f"{cid}/{id_}".encode(), orjson.dumps(ev),
                       [("reply_to", reply_topic.encode()), ("correlation_id", corrs[id_].encode())]))
    asyncio.run(_produce(f"{served.prefix}.requests", events))
    replies = asyncio.run(_replies(reply_topic, len(events)))
    assert replies[corrs["raw-jpeg"]]["ok"] and replies[corrs["raw-array"]]["ok"], replies
    for id_ in ("raw-big", "raw-doc"):
        error = replies[corrs[id_]]["error"]
        assert error["code"] == "limit_exceeded" and error["retriable"] is False, error
    with served.client() as client:
        col = client.get_collection("raw-photos")
        assert sorted(col.get()["ids"]) == ["raw-array", "raw-jpeg"]
        assert_stored(col, "raw-jpeg", photos.jpeg12, reference.vector(pixels_of(photos.jpeg12)))
        assert_stored(col, "raw-array", photos.a1080, reference.vector(photos.a1080))


def test_upstream_mapping_passes_encoded_photos(served: Served, photos: Photos,
                                                reference: Reference) -> None:
    def line(id_: str, **fields: Any) -> bytes:
        return orjson.dumps({"id": id_, **fields})

    b64 = base64.b64encode
    asyncio.run(_produce(served.upstream, [
        (b"up-jpeg", line("up-jpeg", image_base64=b64(photos.jpeg12).decode()), []),
        (b"up-png", line("up-png", image_base64=b64(photos.png768).decode()), []),
        (b"up-big", line("up-big", image_base64=b64(photos.oversize_jpeg).decode()), []),
        (b"up-doc", line("up-doc", text="x" * ((1 << 20) + 1)), []),
    ]))
    dead = asyncio.run(_dead_letters(served.prefix, 2))
    assert sorted(d["code"] for d in dead) == ["limit_exceeded", "limit_exceeded"], dead
    with served.client() as client:
        col = client.get_collection("app-documents")
        deadline = time.monotonic() + 120
        while len(col.get(ids=["up-jpeg", "up-png"])["ids"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert_stored(col, "up-jpeg", photos.jpeg12, reference.vector(pixels_of(photos.jpeg12)))
        assert_stored(col, "up-png", photos.png768, reference.vector(pixels_of(photos.png768)))
        assert col.get(ids=["up-big", "up-doc"])["ids"] == []


async def _dead_letters(prefix: str, n: int) -> list[dict[str, str]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                                isolation_level="read_committed", max_partition_fetch_bytes=UPSTREAM_BYTES,
                                fetch_max_bytes=UPSTREAM_BYTES)
    await consumer.start()
    try:
        tp = TopicPartition(f"{prefix}.dlq", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                seen += [{k: v.decode() for k, v in r.headers} for r in recs]
            upstream = [d for d in seen if d.get("mapping") or d.get("origin")]
            if len(upstream) >= n:
                return upstream
        return [d for d in seen if d.get("mapping") or d.get("origin")]
    finally:
        await consumer.stop()


async def test_existing_topics_are_raised_to_the_message_size_and_keep_their_settings() -> None:
    """Topics made before the limits grew (the broker's 1 MiB default) get the new size;
    their other settings stay, and a larger size set by an operator is never lowered."""
    ensure_broker()
    settings = Settings(kafka_bootstrap=BOOTSTRAP, kafka_topic_prefix=new_prefix())
    topics = Topics.for_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.state, settings.kafka_partitions, 1, topic_configs={
                "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.2"}),
            NewTopic(topics.dlq, 1, 1, topic_configs={"max.message.bytes": str(200 << 20)})])
        await ensure_topics(settings, topics)

        async def configs(name: str) -> dict[str, str]:
            [res] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
            return {e[0]: e[1] for e in res.resources[0][4]}

        deadline = time.monotonic() + 20  # the broker applies altered configs a moment later
        while int((state := await configs(topics.state))["max.message.bytes"]) \
                <= settings.max_message_bytes and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert int(state["max.message.bytes"]) > settings.max_message_bytes
        assert (state["cleanup.policy"], state["min.cleanable.dirty.ratio"]) == ("compact", "0.2")
        assert int((await configs(topics.dlq))["max.message.bytes"]) == 200 << 20
        assert int((await configs(topics.requests))["max.message.bytes"]) \
            > settings.max_message_bytes
    finally:
        await admin.delete_topics([getattr(topics, f) for f in (
            "requests", "queries", "replies", "state", "collections", "dlq")])
        await admin.close()
