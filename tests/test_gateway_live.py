"""Live queries over a real websocket: ordered, duplicate-free pushes; top-k and filters;
unsubscribe and disconnect clean up; a client that stops reading is closed, not buffered."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client import REGISTRY

import streamer
from schemas.events import encode_array, write_event
from schemas.records import Op, WriteItem
from streamer.gateway.socket import CLOSE_SLOW_CONSUMER
from streamer.testing.gateway import TOKEN, ws_client
from tests.gateway_helpers import embedded_gateway
from tests.helpers import HashEmbedding


async def drain(queue: asyncio.Queue[dict[str, Any]], n: int, timeout: float = 30) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await queue.get())
    return out


async def test_pushes_arrive_in_ingestion_order_without_duplicates(tmp_path: Path) -> None:
    ef = HashEmbedding()
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), \
            ws_client(gw.url) as ws, ws_client(gw.url) as writer_ws:
        col = await streamer.AsyncClient(backend=engine).create_collection("live", embedding_function=ef)
        await col.add(ids=["seed"], documents=["seed"])
        # Cosine distances are at most 2: this threshold admits every record.
        sub = await ws.result({"op": "subscribe", "name": "live", "threshold": 2.5,
                               "embeddings": [encode_array(ef.vector("target"))]})
        assert sub["initial"] is None

        async def python_writer(k: int) -> None:
            for b in range(10):
                ids = [f"p{k}-{b}-{i}" for i in range(5)]
                await col.add(ids=ids, documents=[f"doc {x}" for x in ids], metadatas=[{"k": k}] * 5)

        async def socket_writer() -> None:
            for i in range(40):
                item = WriteItem(id=f"s{i}", document=f"socket doc {i}")
                await writer_ws.result(write_event(Op.ADD, col.id, item, time.time_ns(), 0))

        await asyncio.gather(*(python_writer(k) for k in range(4)), socket_writer())
        await col.upsert(ids=[f"p0-0-{i}" for i in range(5)], documents=["changed"] * 5)
        pushes = await drain(ws.pushes, 200 + 40 + 5)
        seqs = [p["seq"] for p in pushes]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert {p["subscription"] for p in pushes} == {sub["subscription"]}
        first_seen = list(dict.fromkeys(p["id"] for p in pushes))
        assert first_seen == (await col.get())["ids"][1:]  # insertion order, seed excluded
        assert [p["document"] for p in pushes[-5:]] == ["changed"] * 5
        for p in pushes:
            want = 1.0 - float(ef.vector(p["document"]) @ ef.vector("target"))
            assert abs(p["distance"] - want) < 1e-5
        await asyncio.sleep(0.3)
        assert ws.pushes.empty(), "a record was pushed twice"


async def test_top_k_filters_unsubscribe_and_disconnect(tmp_path: Path) -> None:
    ef = HashEmbedding()
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), ws_client(gw.url) as ws:
        col = await streamer.AsyncClient(backend=engine).create_collection("topk", embedding_function=ef)
        docs = [f"doc {i}" for i in range(30)]
        await col.add(ids=[f"d{i}" for i in range(30)], documents=docs,
                      metadatas=[{"group": i % 2} for i in range(30)])
        sub = await ws.result({"op": "subscribe", "name": "topk", "texts": ["target"], "top_k": 3,
                               "where": {"group": 0}, "include": ["documents"]})
        want = await col.query(query_texts=["target"], n_results=3, where={"group": 0})
        assert sub["initial"]["ids"] == want["ids"]
        kth = max(want["distances"][0])
        # Candidates on either side of the current third-best distance.
        dist = {t: 1.0 - float(ef.vector(t) @ ef.vector("target")) for t in (f"x{i}" for i in range(200))}
        worse = next(t for t, d in dist.items() if d > kth + 0.05)
        await col.add(ids=["other-group"], documents=["target"], metadatas=[{"group": 1}])
        await col.add(ids=["worse"], documents=[worse], metadatas=[{"group": 0}])
        await col.add(ids=["hit"], documents=["target"], metadatas=[{"group": 0}])
        (push,) = await drain(ws.pushes, 1)
        assert push["id"] == "hit" and push["distance"] < 1e-6 and set(push) >= {"document", "seq"}
        assert "metadata" not in push
        # "hit" took a place in the top 3, so the bar is now the second-best initial distance.
        await col.add(ids=["hit2"], documents=["target"], metadatas=[{"group": 0}])
        assert (await drain(ws.pushes, 1))[0]["id"] == "hit2"
        await asyncio.sleep(0.2)
        assert ws.pushes.empty()
        state = engine.catalog.get("topk")
        assert len(state.listeners) == 1
        assert await ws.result({"op": "unsubscribe", "subscription": sub["subscription"]}) is None
        assert state.listeners == []
        await col.add(ids=["after"], documents=["target"], metadatas=[{"group": 0}])
        await asyncio.sleep(0.2)
        assert ws.pushes.empty()
        async with ws_client(gw.url) as other:
            await other.result({"op": "subscribe", "name": "topk", "texts": ["x"], "threshold": 0.5})
            assert len(state.listeners) == 1
        for _ in range(50):
            if not state.listeners:
                break
            await asyncio.sleep(0.02)
        assert state.listeners == [] and len(gw.connections) == 1  # only `ws` is left


def _closes(reason: str) -> float:
    return REGISTRY.get_sample_value("streamer_ws_server_closes_total", {"reason": reason}) or 0.0


async def test_a_client_that_does_not_read_is_closed_with_a_clear_code(tmp_path: Path) -> None:
    ef = HashEmbedding()
    limit = 256 << 10
    async with embedded_gateway(tmp_path / "store", ef, ws_send_buffer_bytes=limit) as (engine, gw), \
            aiohttp.ClientSession() as http:
        col = await streamer.AsyncClient(backend=engine).create_collection("flood", embedding_function=ef)
        await col.add(ids=["seed"], documents=["seed"])
        ws = await http.ws_connect(f"{gw.url}/ws", headers={"Authorization": f"Bearer {TOKEN}"},
                                   max_msg_size=0)
        await ws.send_str('{"v": 1, "op": "subscribe", "name": "flood", "texts": ["seed"], '
                          '"threshold": 2.5, "correlation_id": 1}')
        assert (await ws.receive_json())["ok"]
        before = _closes("slow_consumer")
        # ~40 MB of pushes that this client never reads: far beyond socket buffers + the limit.
        big = "x" * (100 << 10)
        for b in range(20):
            await col.add(ids=[f"r{b}-{i}" for i in range(20)],
                          documents=[f"{b}-{i} {big}" for i in range(20)])
            (conn,) = gw.connections or (None,)
            if conn is None or conn.closing:
                break
            assert conn.queued_bytes <= limit + 20 * (len(big) + 1024)  # the limit + one burst
        async with asyncio.timeout(10):
            while _closes("slow_consumer") == before:
                await asyncio.sleep(0.05)
        received = 0
        async with asyncio.timeout(30):
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                received += 1
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == CLOSE_SLOW_CONSUMER and "slow consumer" in (msg.extra or "")
        assert received < 400  # what was buffered got through, the rest was dropped
        await ws.close()
        async with asyncio.timeout(10):
            while gw.connections:
                await asyncio.sleep(0.05)
        # A reader that keeps up takes bursts far over the limit (20 x 100 kB per batch).
        async with ws_client(gw.url, session=http) as fresh:
            await fresh.result({"op": "subscribe", "name": "flood", "texts": ["seed"],
                                "threshold": 2.5, "include": []})
            for b in range(5):
                await col.add(ids=[f"ok{b}-{i}" for i in range(20)],
                              documents=[f"{b}-{i} {big}" for i in range(20)])
            assert len(await drain(fresh.pushes, 100)) == 100
            assert fresh.close_code is None and len(gw.connections) == 1


async def test_live_queries_by_text_and_image_use_the_collection_embedder(tmp_path: Path) -> None:
    ef = HashEmbedding()
    image = np.random.default_rng(5).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), ws_client(gw.url) as ws:
        col = await streamer.AsyncClient(backend=engine).create_collection("modal", embedding_function=ef)
        await ws.result({"op": "subscribe", "name": "modal", "images": [encode_array(image)],
                         "threshold": 1e-4})
        await col.add(ids=["noise"], documents=["unrelated"])
        await col.add(ids=["same-image"], images=[image])
        (push,) = await drain(ws.pushes, 1)
        assert push["id"] == "same-image"
        reply = await ws.call({"op": "subscribe", "name": "modal", "texts": ["a", "b"], "top_k": 1})
        assert reply["error"]["code"] == "invalid_argument"
        reply = await ws.call({"op": "subscribe", "name": "modal", "top_k": 1,
                               "embeddings": [encode_array(np.ones(3, dtype=np.float32))]})
        assert reply["error"]["code"] == "invalid_argument" and "dimension" in reply["error"]["message"]


def _seen(pushes: list[dict[str, Any]]) -> list[tuple[str, int, str | None]]:
    return [(p["id"], p["seq"], p.get("document")) for p in pushes]


async def test_a_resumed_live_query_misses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    ef = HashEmbedding()
    # Cosine distances are at most 2: every record matches, so the pushes are countable.
    target = {"embeddings": [encode_array(ef.vector("target"))], "threshold": 2.5}
    async with embedded_gateway(tmp_path / "store", ef, ws_resume_max_records=40) as (engine, gw), \
            ws_client(gw.url) as ref:
        col = await streamer.AsyncClient(backend=engine).create_collection("resume", embedding_function=ef)
        await col.add(ids=["seed"], documents=["seed"])
        # A reference subscription that never disconnects sees what the resumed one must see.
        await ref.result({"op": "subscribe", "name": "resume", **target})
        docs = [f"doc {i}" for i in range(60)]
        async with ws_client(gw.url) as first:
            sub = await first.result({"op": "subscribe", "name": "resume", "subscription": "mine",
                                      **target})
            assert sub["subscription"] == "mine" and sub["seq"] > 0 and sub["stream"]
            await col.add(ids=[f"a{i}" for i in range(20)], documents=docs[:20])
            before = await drain(first.pushes, 20)
            last = before[-1]["seq"]
        # Disconnected: adds, an update of a delivered id, a delete, an update back into range.
        await col.add(ids=[f"b{i}" for i in range(20)], documents=docs[20:40])
        await col.update(ids=["a0", "a1"], documents=["target", "changed"])
        await col.delete(ids=["a2"])
        async with ws_client(gw.url) as second:
            resumed = await second.result({"op": "subscribe", "name": "resume", **target,
                                           "subscription": "mine", "stream": sub["stream"],
                                           "resume_after": last})
            await col.add(ids=[f"c{i}" for i in range(20)], documents=docs[40:])
            ref_all = await drain(ref.pushes, 20 + 20 + 2 + 20)
            after = await drain(second.pushes, 20 + 2 + 20)
            await asyncio.sleep(0.3)
            assert second.pushes.empty() and ref.pushes.empty()
            assert _seen(before + after) == _seen(ref_all)  # nothing lost, nothing twice
            assert any(p["id"] == "a0" and p["document"] == "target" for p in after)
            assert resumed["seq"] >= max(p["seq"] for p in after if p["id"].startswith("b"))
            # Resume points this server cannot serve get a typed refusal.
            bad = [({"stream": "another-server", "resume_after": last}, "resume_expired"),
                   ({"stream": sub["stream"], "resume_after": 10**9}, "resume_expired"),
                   ({"stream": sub["stream"], "resume_after": -1}, "invalid_argument"),
                   ({"stream": sub["stream"], "resume_after": 0}, "resume_expired")]  # > 40 since
            for extra, code in bad:
                reply = await second.call({"op": "subscribe", "name": "resume", **target, **extra})
                assert reply["error"]["code"] == code, (extra, reply)
            reply = await second.call({"op": "subscribe", "name": "resume", "texts": ["t"], "top_k": 2,
                                       "stream": sub["stream"], "resume_after": last})
            assert reply["error"]["code"] == "invalid_argument"
            reply = await second.call({"op": "subscribe", "name": "resume", "subscription": "mine",
                                       **target})
            assert reply["error"]["code"] == "invalid_argument"  # the id is taken on this socket


async def test_a_quiet_live_query_reports_progress_and_resumes_from_it(tmp_path: Path) -> None:
    ef = HashEmbedding()
    target = {"embeddings": [encode_array(ef.vector("target"))], "threshold": 1e-6}
    async with embedded_gateway(tmp_path / "store", ef, ws_resume_max_records=300) as (engine, gw):
        col = await streamer.AsyncClient(backend=engine).create_collection("quiet", embedding_function=ef)
        async with ws_client(gw.url) as first:
            sub = await first.result({"op": "subscribe", "name": "quiet", **target})
            for b in range(5):  # 1,250 records, none within the threshold
                await col.add(ids=[f"r{b}-{i}" for i in range(250)],
                              documents=[f"noise {b} {i}" for i in range(250)])
            (progress,) = await drain(first.pushes, 1)
            assert progress["event"] == "progress" and progress["subscription"] == sub["subscription"]
            assert sub["seq"] < progress["seq"] <= engine.catalog.get("quiet").store.applied_seq
            await asyncio.sleep(0.2)
            assert first.pushes.empty()  # one report per 1,000 quiet records, not per batch
        async with ws_client(gw.url) as second:
            # 1,250 records since the subscription; only the 250 after the report are replayed.
            await second.result({"op": "subscribe", "name": "quiet", **target, "stream": sub["stream"],
                                 "resume_after": progress["seq"]})
            await col.add(ids=["hit"], documents=["target"])
            (push,) = await drain(second.pushes, 1)
            assert push["event"] == "match" and push["id"] == "hit"
            reply = await second.call({"op": "subscribe", "name": "quiet", **target,
                                       "stream": sub["stream"], "resume_after": sub["seq"]})
            assert reply["error"]["code"] == "resume_expired"
