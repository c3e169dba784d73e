"""A Hypothesis fuzzer against a real ``streamer serve``: malformed events produced raw to the
requests and queries topics and sent as websocket frames to its gateway. Every one must get a
typed error (never ``internal``), every bad write a dead letter with its reason, valid writes
interleaved with them must all apply, and the process must stay up and answering."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.loading.load import ImageLoader
from schemas.events import READ_OPS, WRITE_OPS, encode_array
from streamer.errors import LimitExceededError
from streamer.kafka.client import KafkaClient
from streamer.testing.gateway import TOKEN, TOKENS, WsClient, ws_client
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import free_port
from tests.helpers import write_png

pytestmark = pytest.mark.kafka

MAX_PIXELS = 4096
LIMITS = {"STREAMER_MAX_IMAGE_PIXELS": str(MAX_PIXELS), "STREAMER_MAX_IMAGE_BYTES": "65536",
          "STREAMER_MAX_DOCUMENT_BYTES": "2048", "STREAMER_MAX_N_RESULTS": "50",
          "STREAMER_MAX_BATCH_RECORDS": "64"}
# What a refusal may say; "internal" would mean the input reached code that did not expect it.
TYPED = {"schema", "invalid_argument", "invalid_type", "dimension_mismatch", "not_found",
         "limit_exceeded", "data_loader", "duplicate_id", "embedding", "uri_outside_roots",
         "already_exists"}


@dataclass
class Wire:
    """Raw access to a service: a producer, a consumer of the replies and dead letters, and a
    websocket, on one private event loop thread."""

    prefix: str
    url: str
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead: dict[bytes, dict[str, str]] = field(default_factory=dict)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Wire]:
        self._arrived = asyncio.Condition()
        self.producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=1)
        consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
        await self.producer.start()
        await consumer.start()
        tps = [TopicPartition(f"{self.prefix}.replies", p)
               for p in sorted(await self.producer.partitions_for(f"{self.prefix}.replies"))]
        tps.append(TopicPartition(f"{self.prefix}.dlq", 0))
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        task = asyncio.create_task(self._collect(consumer))
        try:
            async with ws_client(self.url, token=TOKEN) as ws:
                self.ws = ws
                yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await consumer.stop()
            await self.producer.stop()

    async def _collect(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            for tp, recs in (await consumer.getmany(timeout_ms=100)).items():
                for r in recs:
                    headers = {k: bytes(v).decode() for k, v in r.headers or ()}
                    if tp.topic.endswith(".dlq"):
                        self.dead[r.key or b""] = headers
                    elif "correlation_id" in headers:
                        self.replies[headers["correlation_id"]] = orjson.loads(r.value)
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, topic: str, value: bytes, key: bytes) -> str:
        corr = uuid.uuid4().hex
        await self.producer.send_and_wait(
            f"{self.prefix}.{topic}", value, key=key,
            headers=[("reply_to", f"{self.prefix}.replies".encode()),
                     ("correlation_id", corr.encode())])
        return corr

    async def wait(self, corrs: list[str], keys: list[bytes], timeout: float = 60) -> None:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: all(c in self.replies for c in corrs)
                                         and all(k in self.dead for k in keys))

    async def frame(self, raw: str | bytes, corr: str) -> dict[str, Any]:
        """The reply to one frame (one at a time): it names the frame's correlation id, or
        none for a frame the gateway could not read that far (not JSON, wrong version)."""
        ws: WsClient = self.ws
        while not ws.uncorrelated.empty():  # every reply lands here: none is awaited via ws
            ws.uncorrelated.get_nowait()
        if isinstance(raw, bytes):
            await ws.ws.send_bytes(raw)
        else:
            await ws.ws.send_str(raw)
        reply = await asyncio.wait_for(ws.uncorrelated.get(), 30)
        assert reply.get("correlation_id") in (corr, None), reply
        return reply


@dataclass
class Served:
    svc: ServiceProcess
    cid: str
    portal: BlockingPortal
    wire: Wire


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ensure_broker()
    prefix = new_prefix()
    port = free_port()
    svc = ServiceProcess(prefix, tmp_path_factory.mktemp("fuzz") / "svc", instance="fuzz",
                         extra_env={"STREAMER_HTTP_PORT": str(port), "STREAMER_AUTH_TOKENS": TOKENS,
                                    **LIMITS})
    svc.start()
    try:
        with KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix, wait_writes=True) as client:
            col = client.create_collection("fuzz", embedding_function=None)
            col.add(ids=["seed"], embeddings=[[1.0, 0.0, 0.0]], metadatas=[{"k": 1}])
            cid = col.id
        wire = Wire(prefix, f"http://127.0.0.1:{port}")
        with start_blocking_portal() as portal, portal.wrap_async_context_manager(wire.open()):
            yield Served(svc, cid, portal, wire)
    finally:
        svc.kill()


# ---- strategies: each draws (channel, payload, expect_dead_letter) -------------------------
def arr(a: np.ndarray) -> dict[str, Any]:
    return encode_array(a)


VEC = arr(np.array([1.0, 0.0, 0.0], dtype=np.float32))
# JSON has no NaN or infinity (orjson writes null): finite floats only.
junk = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                 st.lists(st.integers(), max_size=3), st.text(max_size=5),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
not_str = junk.filter(lambda v: not isinstance(v, str))
not_array = st.one_of(not_str, st.text(max_size=5),
                      st.fixed_dictionaries({"dtype": st.sampled_from(["float32", "complex64", "object", "<f4"]),
                                             "shape": st.one_of(junk, st.lists(st.integers(-3, 10**12), max_size=5)),
                                             "b64": st.one_of(junk, st.text(max_size=12))}))


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"n": value} if i % 2 else [value]
    return value


@st.composite
def bad_writes(draw: st.DrawFn, cid: str) -> dict[str, Any] | bytes:
    base: dict[str, Any] = {"v": 1, "op": "upsert", "collection": cid, "id": "bad",
                            "embedding": VEC}
    kind = draw(st.sampled_from([
        "bytes", "version", "op", "id", "collection", "metadata", "document", "uri",
        "embedding", "image", "order", "embedded_from", "nan", "dimension", "huge-image",
        "huge-shape", "deep", "no-source", "delete", "unknown-collection", "big-document"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "version":
        base["v"] = draw(st.one_of(junk, st.none()).filter(lambda v: type(v) is not int or v != 1))
    elif kind == "op":
        base["op"] = draw(st.one_of(not_str, st.text(max_size=12).filter(lambda s: s not in WRITE_OPS)))
    elif kind in ("id", "collection", "document", "uri"):
        base[kind] = draw(not_str.filter(lambda v: v is not None))
    elif kind == "metadata":
        base["metadata"] = draw(st.one_of(
            not_str.filter(lambda v: not isinstance(v, dict)), st.just({}),
            st.dictionaries(st.text(min_size=1, max_size=4), st.one_of(
                st.dictionaries(st.text(max_size=2), st.integers(), min_size=1, max_size=2),
                st.just([]), st.just([1, "a"]), st.just([[1]])), min_size=1, max_size=2)))
    elif kind == "embedding":
        base["embedding"] = draw(not_array)
    elif kind == "image":
        del base["embedding"]
        base["image"] = draw(not_array)
    elif kind == "order":
        base["order"] = draw(st.one_of(not_str, st.lists(st.text(max_size=2), max_size=3)).filter(
            lambda v: not (isinstance(v, list) and len(v) == 2
                           and all(type(x) is int for x in v))))
    elif kind == "embedded_from":
        base["embedded_from"] = draw(st.one_of(not_str, st.text(max_size=6)).filter(
            lambda v: v is not None and v != "image"))
    elif kind == "nan":
        v = np.array(draw(st.lists(st.floats(width=32), min_size=3, max_size=3)), dtype=np.float32)
        v[draw(st.integers(0, 2))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        base["embedding"] = arr(v)
    elif kind == "dimension":
        dim = draw(st.integers(1, 4096).filter(lambda d: d != 3))
        base["embedding"] = arr(np.ones(dim, dtype=np.float32))
    elif kind == "huge-image":
        del base["embedding"]
        side = draw(st.integers(65, 400))
        base["image"] = arr(np.zeros((side, side, 3), dtype=np.uint8))
    elif kind == "huge-shape":
        base["embedding"] = {"dtype": "float32", "shape": draw(st.lists(st.integers(10**5, 10**12),
                                                                         min_size=1, max_size=4)),
                             "b64": base64.b64encode(b"\0" * 12).decode()}
    elif kind == "deep":
        base["metadata"] = {"k": nested(draw(st.integers(2, 400)))}
    elif kind == "no-source":
        del base["embedding"]
    elif kind == "delete":
        base = {"v": 1, "op": "delete", "collection": cid}
        base.update(draw(st.sampled_from([
            {"ids": 5}, {"ids": [1, 2]}, {"ids": []}, {"ids": ["a", "a"]},
            {"ids": None, "where": {"k": {"$bad": 1}}}, {"ids": None, "where": "x"},
            {"ids": None, "where_document": {"$contains": 3}},
            {"ids": None, "where": {"k": 1}, "limit": "x"}, {"ids": None},
            {"ids": ["a"], "limit": 2}, {"ids": [f"i{i}" for i in range(65)]}])))
    elif kind == "unknown-collection":
        base["collection"] = str(uuid.uuid4())
    elif kind == "big-document":
        del base["embedding"]
        base["document"] = "x" * draw(st.integers(2049, 20000))
    return base


@st.composite
def bad_reads(draw: st.DrawFn, cid: str) -> dict[str, Any] | bytes:
    query: dict[str, Any] = {"v": 1, "op": "query", "collection": cid, "embeddings": [VEC],
                             "n_results": 1}
    kind = draw(st.sampled_from(["bytes", "version", "op", "n_results", "embeddings", "nan",
                                 "dimension", "where", "where_document", "include", "ids", "texts",
                                 "collection",
                                 "get", "create", "images"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "version":
        query["v"] = draw(st.one_of(junk, st.none()).filter(lambda v: type(v) is not int or v != 1))
    elif kind == "op":
        query["op"] = draw(st.one_of(not_str, st.text(max_size=12).filter(lambda s: s not in READ_OPS)))
    elif kind == "n_results":
        query["n_results"] = draw(st.one_of(not_str.filter(lambda v: type(v) is not int),
                                            st.integers(max_value=0), st.integers(51, 10**18)))
    elif kind == "embeddings":
        query["embeddings"] = draw(st.one_of(not_str, st.lists(not_array, min_size=1, max_size=2)))
    elif kind == "nan":
        query["embeddings"] = [arr(np.array([np.nan, 0, draw(st.floats(width=32))], dtype=np.float32))]
    elif kind == "dimension":
        query["embeddings"] = [arr(np.ones(draw(st.integers(1, 600).filter(lambda d: d != 3)),
                                           dtype=np.float32))]
    elif kind == "where":
        query["where"] = draw(st.one_of(
            junk.filter(lambda v: v != {} and not isinstance(v, dict)), st.just({"$and": []}),
            st.just({"k": {"$gt": "a"}}), st.just({"$contains": "x"}), st.just({"k": {"$in": 1}}),
            st.just({"k": {"$bad": 1}}), st.just({"a": 1, "b": 2})))
    elif kind == "where_document":
        query["where_document"] = draw(st.one_of(
            junk.filter(lambda v: v != {}), st.just({"$and": []}), st.just({"$contains": 1}),
            st.just({"$regex": "("}), st.just({"k": "x"})))
    elif kind == "include":
        query["include"] = draw(st.one_of(not_str.filter(lambda v: v not in ([], None)),
                                          st.lists(st.text(max_size=8), min_size=1, max_size=3).filter(
                                              lambda v: not set(v) <= {"documents", "metadatas",
                                                                       "distances", "embeddings"})))
    elif kind == "ids":
        query["ids"] = draw(st.one_of(not_str.filter(lambda v: v is not None and v != []),
                                      st.just([1]), st.just(["a", "a"])))
    elif kind == "texts":  # the collection has no embedding function
        del query["embeddings"]
        query["texts"] = draw(st.lists(st.text(max_size=5), min_size=1, max_size=2))
    elif kind == "images":
        del query["embeddings"]
        query["images"] = [arr(np.zeros((draw(st.integers(65, 300)),) * 2 + (3,), dtype=np.uint8))]
    elif kind == "collection":
        query["collection"] = draw(st.one_of(not_str, st.just(str(uuid.uuid4()))))
    elif kind == "get":
        query = {"v": 1, "op": "get", "collection": cid}
        query.update(draw(st.sampled_from([
            {"limit": -1}, {"limit": "x"}, {"offset": 1.5}, {"ids": [3]},
            {"where": []}, {"include": ["distances"]}, {"include": "x"}, {"where_document": 1}])))
    elif kind == "create":
        query = {"v": 1, "op": "create_collection",
                 "name": draw(st.one_of(not_str, st.text(max_size=3), st.just("a..b"),
                                        st.just("-bad-"), st.just("x" * 600)))}
    return query


def encode(payload: dict[str, Any] | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:  # deeper than orjson writes: the nesting is the malformation
        return ("[" * 600 + "]" * 600).encode()


cases = st.data()


# aiokafka's background tasks (on the portal thread) use the global `random` while Hypothesis
# draws, which its random-in-strategy check cannot tell from the strategy doing it.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
def test_fuzz_every_malformed_event_gets_a_typed_refusal(served: Served) -> None:
    wire, cid = served.wire, served.cid
    valid: list[str] = []

    # No shrinking: a failing example is printed as found, and CI time stays bounded.
    @settings(max_examples=150, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(channel=st.sampled_from(["requests", "queries", "websocket"]), data=cases)
    def run(channel: str, data: st.DataObject) -> None:
        payload = data.draw(bad_reads(cid) if channel == "queries" else bad_writes(cid))
        raw = encode(payload)
        good_id = f"g{len(valid)}"
        good = orjson.dumps({"v": 1, "op": "upsert", "collection": cid, "id": good_id,
                             "embedding": VEC, "metadata": {"good": len(valid)}})
        if channel == "websocket":
            corr = uuid.uuid4().hex
            frame = raw if isinstance(payload, bytes) else encode({**payload, "correlation_id": corr})
            text = frame.decode(errors="replace") if frame.startswith(b"{") else None
            reply = served.portal.call(wire.frame, frame if text is None else text, corr)
            assert reply["ok"] is False, (payload, reply)
            assert reply["error"]["code"] in TYPED, (payload, reply)
            return
        key = uuid.uuid4().hex.encode()
        corr = served.portal.call(wire.send, channel, raw, key)
        good_corr = served.portal.call(wire.send, "requests", good, f"{cid}/{good_id}".encode())
        valid.append(good_id)
        served.portal.call(wire.wait, [corr, good_corr], [])
        reply = wire.replies[corr]
        assert reply["ok"] is False, (payload, reply)
        assert reply["error"]["code"] in TYPED, (payload, reply)
        assert wire.replies[good_corr] == {"v": 1, "ok": True, "result": None}
        if channel == "requests":
            served.portal.call(wire.wait, [], [key])
            dead = wire.dead[key]
            assert dead["reason"] and dead["code"] == reply["error"]["code"], dead

    run()
    assert served.svc.proc is not None and served.svc.proc.poll() is None, "the service died"
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=served.svc.prefix) as client:
        col = client.get_collection("fuzz", embedding_function=None)
        got = col.get(ids=valid, include=["metadatas"])
        assert sorted(got["ids"]) == sorted(valid), "a valid event next to a bad one was lost"
        assert set(col.get()["ids"]) == {"seed", *valid}, "a malformed event was applied"
        assert col.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=1)["ids"][0][0] in {"seed", *valid}


# ---- explicit limits (the service runs with LIMITS) ----------------------------------------
def _raw_refusal(served: Served, topic: str, event: dict[str, Any]) -> dict[str, Any]:
    wire = served.wire
    key = uuid.uuid4().hex.encode()
    corr = served.portal.call(wire.send, topic, orjson.dumps(event), key)
    served.portal.call(wire.wait, [corr], [key] if topic == "requests" else [])
    reply = wire.replies[corr]
    assert reply["ok"] is False, reply
    if topic == "requests":
        assert wire.dead[key]["code"] == reply["error"]["code"]
    return dict(reply["error"])


def test_every_limit_is_a_typed_error(served: Served, tmp_path: Path) -> None:
    cid = served.cid
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=served.svc.prefix, wait_writes=True,
                     max_batch_records=64) as client:
        col = client.get_collection("fuzz", embedding_function=None)
        # max_document_bytes (server)
        with pytest.raises(LimitExceededError, match="exceeds 2048 bytes"):
            col.upsert(ids=["big"], embeddings=[[0.0, 1.0, 0.0]], documents=["x" * 2049])
        col.upsert(ids=["fits"], embeddings=[[0.0, 1.0, 0.0]], documents=["x" * 2048])
        # max_n_results (server)
        with pytest.raises(LimitExceededError, match="n_results 51 exceeds the limit of 50"):
            col.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=51)
        assert len(col.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=50)["ids"][0]) >= 2
        # max_batch_records: client-side for writes (Chroma's message), server-side for queries
        # and raw multi-id deletes
        with pytest.raises(LimitExceededError, match="Batch size of 65 is greater than max batch size of 64"):
            col.upsert(ids=[f"b{i}" for i in range(65)], embeddings=np.ones((65, 3)))
        # Chroma limits no delete: one of 65 ids goes through, one event per id
        assert col.delete(ids=[f"b{i}" for i in range(65)]) == {"deleted": 65}
        with pytest.raises(LimitExceededError, match="65 queries in one request"):
            col.query(query_embeddings=np.ones((65, 3)), n_results=1)
        assert col.get(ids=["big", "b0"])["ids"] == []
    # max_image_pixels / max_image_bytes for arrays on the wire
    err = _raw_refusal(served, "requests", {"v": 1, "op": "add", "collection": cid, "id": "i",
                                            "image": arr(np.zeros((100, 100, 3), np.uint8))})
    assert err["code"] == "limit_exceeded" and "10000 pixels" in err["message"], err
    err = _raw_refusal(served, "requests", {"v": 1, "op": "add", "collection": cid, "id": "i",
                                            "image": arr(np.zeros((60, 60, 3), np.float64))})
    assert err["code"] == "limit_exceeded" and "86400 bytes" in err["message"], err
    err = _raw_refusal(served, "queries", {"v": 1, "op": "query", "collection": cid, "n_results": 1,
                                           "images": [arr(np.zeros((100, 100, 3), np.uint8))]})
    assert err["code"] == "limit_exceeded", err
    err = _raw_refusal(served, "requests", {"v": 1, "op": "delete", "collection": cid,
                                            "ids": [f"d{i}" for i in range(65)]})
    assert err["code"] == "limit_exceeded", err
    # The same delete as one websocket frame: the gateway applies the requests topic's limit.
    corr = uuid.uuid4().hex
    reply = served.portal.call(served.wire.frame, orjson.dumps(
        {"v": 1, "op": "delete", "collection": cid, "ids": [f"d{i}" for i in range(65)],
         "correlation_id": corr}).decode(), corr)
    assert reply["ok"] is False and reply["error"]["code"] == "limit_exceeded", reply
    # A shape that claims 4 TB is refused from its header, before any allocation.
    err = _raw_refusal(served, "requests", {
        "v": 1, "op": "add", "collection": cid, "id": "i",
        "embedding": {"dtype": "float32", "shape": [10**12], "b64": "AAAAAA=="}})
    assert err["code"] == "schema", err
    # Loader limits: the spec asks for more than the server allows; the server's cap wins.
    small, large = tmp_path / "zeros.png", tmp_path / "noise.png"
    write_png(small, np.zeros((100, 100, 3), np.uint8))
    write_png(large, np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    with KafkaClient(BOOTSTRAP, kafka_topic_prefix=served.svc.prefix, wait_writes=True) as client:
        loaded = client.create_collection(
            "loaded", embedding_function=OpenCLIPEmbeddingFunction("streamer-tiny"),
            data_loader=ImageLoader(roots=[tmp_path], max_pixels=10**9, max_bytes=10**9))
        with pytest.raises(LimitExceededError, match="10000 pixels, over the limit of 4096"):
            loaded.add(ids=["z"], uris=[str(small)])
        with pytest.raises(LimitExceededError, match=r"bytes, over the limit of 65536"):
            loaded.add(ids=["n"], uris=[str(large)])
        assert loaded.count() == 0
    assert served.svc.proc is not None and served.svc.proc.poll() is None
    rss_kb = int(next(line.split()[1] for line in
                      Path(f"/proc/{served.svc.proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:")))
    assert rss_kb < 2 << 20, f"service RSS {rss_kb} kB after the limit tests"
