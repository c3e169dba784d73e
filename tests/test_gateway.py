"""The websocket gateway over a real socket: parity with the Python client, concurrency,
bad frames, auth, health/metrics, thumbnails and graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

import streamer
from schemas.errors import error_from_wire
from schemas.events import (
    delete_event,
    encode_array,
    get_event,
    query_event,
    write_event,
)
from schemas.records import DeleteRequest, GetRequest, Op, QueryRequest, WriteItem
from streamer.data_loaders import ImageLoader
from streamer.errors import InvalidArgumentError, PermissionDeniedError
from streamer.testing.gateway import TOKEN, ws_client
from tests.gateway_helpers import SlowEmbedding, assert_same, decoded, embedded_gateway
from tests.helpers import HashEmbedding, random_image, write_png


async def test_answers_equal_the_python_clients(tmp_path: Path) -> None:
    ef = HashEmbedding()
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    uris = [write_png(images_dir / f"u{i}.png", random_image(200 + i)) for i in range(5)]
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), ws_client(gw.url) as ws:
        col = await streamer.AsyncClient(backend=engine).create_collection(
            "mixed", embedding_function=ef, data_loader=ImageLoader(roots=[images_dir]))
        await col.add(ids=[f"d{i}" for i in range(20)], documents=[f"document {i}" for i in range(20)],
                      metadatas=[{"i": i, "kind": "doc"} for i in range(20)])
        await col.add(ids=[f"i{i}" for i in range(10)], images=[random_image(i) for i in range(10)],
                      metadatas=[{"i": i, "kind": "image"} for i in range(10)])
        await col.add(ids=[f"u{i}" for i in range(5)], uris=uris)
        queries = [
            QueryRequest(texts=["document 3", "something else"], n_results=5),
            QueryRequest(images=[random_image(2)], n_results=4,
                         include=["documents", "distances", "embeddings"]),
            QueryRequest(embeddings=[ef.vector("document 7")], n_results=3, where={"kind": "doc"}),
            QueryRequest(uris=[uris[1]], n_results=2, include=["uris", "data", "distances"]),
            QueryRequest(texts=["document 1"], n_results=3, ids=["d1", "d10", "d11", "i1"],
                         where_document={"$contains": "1"}),
        ]
        for req in queries:
            got = decoded(await ws.result({**query_event(col.id, req)}))
            want = await col.query(query_embeddings=req.embeddings, query_texts=req.texts,
                                   query_images=req.images, query_uris=req.uris, ids=req.ids,
                                   n_results=req.n_results, where=req.where,
                                   where_document=req.where_document, include=req.include)
            assert_same(got, want)
        for greq in [GetRequest(where={"i": {"$gte": 2}}, limit=4, offset=1),
                     GetRequest(ids=["u1", "d2", "i3"], include=["uris", "data", "embeddings"])]:
            got = decoded(await ws.result(get_event(col.id, greq)))
            assert_same(got, await col.get(ids=greq.ids, where=greq.where, limit=greq.limit,
                                           offset=greq.offset, include=greq.include))
        # Writes are the Kafka topic's per-record events; addressing by name works too.
        now = time.time_ns()
        await ws.result(write_event(Op.ADD, col.id, WriteItem(id="w1", document="over the socket",
                                                             metadata={"via": "ws"}), now, 0))
        await ws.result(write_event(Op.UPSERT, col.id, WriteItem(id="w2", image=random_image(99)), now, 1))
        await ws.result({**write_event(Op.UPDATE, col.id, WriteItem(id="w1", metadata={"n": 2}), now, 2),
                         "collection": None, "name": "mixed"})
        await ws.result(delete_event(col.id, DeleteRequest(ids=["d0"])))
        got = decoded(await ws.result(get_event(col.id, GetRequest(ids=["w1", "w2", "d0"]))))
        assert got["ids"] == ["w1", "w2"] and got["metadatas"] == [{"via": "ws", "n": 2}, None]
        assert await ws.result({"op": "count", "name": "mixed"}) == await col.count() == 36
        hit = decoded(await ws.result(query_event(col.id, QueryRequest(images=[random_image(99)],
                                                                       n_results=1))))
        assert hit["ids"] == [["w2"]]
        # Validation is the client's: the same error class and message.
        bads: list[dict[str, Any]] = [{"n_results": 0}, {"where": {"i": {"$bad": 1}}}, {"include": ["nope"]}]
        for bad in bads:
            with pytest.raises(Exception) as raised:
                await col.query(query_texts=["x"], **bad)
            reply = await ws.call({"op": "query", "collection": col.id, "texts": ["x"], **bad})
            err = error_from_wire(reply["error"])
            assert type(err) is type(raised.value) and str(err) == str(raised.value)
        with pytest.raises(Exception) as raised:
            await col.add(ids=["bad"], documents=["x"], metadatas=[{"nested": {"a": 1}}])
        reply = await ws.call({"op": "add", "collection": col.id, "id": "bad", "document": "x",
                               "metadata": {"nested": {"a": 1}}})
        err = error_from_wire(reply["error"])
        assert type(err) is type(raised.value) and str(err) == str(raised.value)
        assert await col.count() == 36


async def test_requests_run_concurrently_and_answer_out_of_order(tmp_path: Path) -> None:
    slow, fast = SlowEmbedding(0.8), SlowEmbedding(0.02)
    async with embedded_gateway(tmp_path / "store", fast, by_name={"slow": slow}) as (engine, gw), \
            ws_client(gw.url) as ws:
        client = streamer.AsyncClient(backend=engine)
        slow_col = await client.create_collection("slow", embedding_function=slow)
        await slow_col.add(ids=["a"], embeddings=[slow.vector("a")])
        col = await client.create_collection("fast", embedding_function=fast)
        texts = [f"text {i}" for i in range(40)]
        await col.add(ids=[f"t{i}" for i in range(40)], embeddings=[fast.vector(t) for t in texts])
        fast.calls.clear()
        first = await ws.send({"op": "query", "name": "slow", "texts": ["a"], "n_results": 1})
        await asyncio.sleep(0.05)  # the slow query now holds the model thread
        rest = [await ws.send({"op": "count", "name": "fast"}) for _ in range(10)]
        counts = await asyncio.wait_for(asyncio.gather(*rest), 5)
        assert not first.done(), "count requests waited behind the slow query"
        assert [c["result"] for c in counts] == [40] * 10
        assert (await first)["result"]["ids"] == [["a"]]
        assert ws.replies[-1]["correlation_id"] == "c1"  # sent first, answered last
        # Forty text queries in flight at once: micro-batched into far fewer model calls.
        replies = await asyncio.gather(*[await ws.send(
            {"op": "query", "name": "fast", "texts": [t], "n_results": 1}) for t in texts])
        assert [r["result"]["ids"][0][0] for r in replies] == [f"t{i}" for i in range(40)]
        assert sum(fast.calls) == 40 and len(fast.calls) < 20, fast.calls
        assert len({r["correlation_id"] for r in ws.replies}) == len(ws.replies) == 51


async def test_bad_frames_get_typed_errors_and_the_socket_stays_usable(tmp_path: Path) -> None:
    ef = HashEmbedding()
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), ws_client(gw.url) as ws:
        col = await streamer.AsyncClient(backend=engine).create_collection("col", embedding_function=ef)
        await col.add(ids=["x"], documents=["x"])
        good = {"op": "query", "name": "col", "texts": ["x"], "n_results": 1}

        async def expect(raw: str | bytes, code: str, corr: Any = None) -> None:
            if isinstance(raw, bytes):
                await ws.ws.send_bytes(raw)
            else:
                await ws.ws.send_str(raw)
            reply = await asyncio.wait_for(ws.uncorrelated.get(), 5) if corr is None else None
            if corr is not None:
                reply = next(r for r in reversed(ws.replies) if r["correlation_id"] == corr)
            assert reply is not None and reply["ok"] is False and reply["error"]["code"] == code, reply
            assert (await ws.call(dict(good)))["result"]["ids"] == [["x"]]

        await expect("this is not json", "schema")
        await expect("[1, 2, 3]", "schema")
        await expect(b"\x00binary", "schema")
        await expect('{"op": "query", "name": "col", "texts": ["x"]}', "schema")  # no "v"
        frames: list[tuple[dict[str, Any], str]] = [
            ({"op": "explode"}, "schema"),
            ({"op": "query", "texts": ["x"]}, "schema"),  # no collection
            ({"op": "query", "name": "col", "embeddings": [{"dtype": "float32", "shape": [2],
                                                          "b64": "!!"}]}, "schema"),
            ({"op": "query", "name": "col", "embeddings": "nope"}, "schema"),
            ({"op": "add", "collection": col.id, "id": 5}, "schema"),
            ({"op": "query", "name": "col", "texts": ["x"], "n_results": "ten"}, "invalid_argument"),
            ({"op": "query", "name": "missing", "texts": ["x"]}, "not_found"),
            ({"op": "subscribe", "name": "col", "texts": ["x"]}, "invalid_argument"),
            ({"op": "unsubscribe", "subscription": "nope"}, "not_found"),
        ]
        for frame, code in frames:
            reply = await ws.call(frame)
            assert reply["ok"] is False and reply["error"]["code"] == code, (frame, reply)
            assert reply["v"] == 1 and set(reply["error"]) == {"code", "name", "message", "retriable"}
            assert (await ws.call(dict(good)))["ok"]


async def test_auth_is_required_and_restricts_collections(tmp_path: Path) -> None:
    ef = HashEmbedding()
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), aiohttp.ClientSession() as http:
        client = streamer.AsyncClient(backend=engine)
        for name in ("docs", "private"):
            await (await client.create_collection(name, embedding_function=ef)).add(
                ids=["a"], documents=["a"])
        for token in (None, "wrong-token", TOKEN[:-1], TOKEN + "x"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with ws_client(gw.url, token=token, session=http):
                    pass
            assert refused.value.status == 401
        async with http.get(f"{gw.url}/api/collections") as res:
            assert res.status == 401 and res.headers["WWW-Authenticate"].startswith("Bearer")
        # Browsers pass the token as a subprotocol; the server answers with streamer.v1 only.
        ws = await http.ws_connect(f"{gw.url}/ws", protocols=("streamer.v1", f"bearer.{TOKEN}"))
        assert ws.protocol == "streamer.v1"
        await ws.close()
        async with ws_client(gw.url, token="reader-token", session=http) as reader:
            assert (await reader.result({"op": "count", "name": "private"})) == 1
            reply = await reader.call({"op": "add", "name": "private", "id": "b", "document": "b"})
            assert isinstance(error_from_wire(reply["error"]), PermissionDeniedError)
        async with ws_client(gw.url, token="docs-only", session=http) as scoped:
            assert [c["name"] for c in await scoped.result({"op": "list_collections"})] == ["docs"]
            await scoped.result({"op": "add", "name": "docs", "id": "b", "document": "b"})
            for op in ({"op": "count"}, {"op": "subscribe", "texts": ["a"], "top_k": 1}):
                reply = await scoped.call({**op, "name": "private"})
                assert reply["error"]["code"] == "permission_denied"
        async with http.get(f"{gw.url}/api/collections",
                            headers={"Authorization": "Bearer docs-only"}) as res:
            assert res.status == 200 and [c["name"] for c in await res.json()] == ["docs"]
    async with embedded_gateway(tmp_path / "open", ef, auth_tokens=None) as (_, gw), \
            aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with ws_client(gw.url, token="", session=http):
                pass
        assert refused.value.status == 401  # no tokens configured: nobody gets in


async def test_health_readiness_metrics_and_page(tmp_path: Path) -> None:
    async with embedded_gateway(tmp_path / "store", HashEmbedding()) as (_, gw), \
            aiohttp.ClientSession() as http:
        async with ws_client(gw.url, session=http) as ws:
            await ws.call({"op": "list_collections"})
        for path, status in [("/healthz", 200), ("/readyz", 200), ("/api/v2/heartbeat", 200),
                             ("/search", 200),
                             ("/static/search.js", 200), ("/static/../gateway.py", 404)]:
            async with http.get(gw.url + path) as res:
                assert res.status == status, path
        async with http.get(f"{gw.url}/search") as res:
            assert "script-src" not in res.headers["Content-Security-Policy"]
            assert "default-src 'self'" in res.headers["Content-Security-Policy"]
            assert 'id="results"' in await res.text()
        async with http.get(f"{gw.url}/metrics") as res:
            text = await res.text()
        assert 'streamer_ws_requests_total{op="list_collections",outcome="ok"}' in text
        assert "streamer_batch_records_bucket" in text  # the service's own metrics, same server


async def test_thumbnails_load_through_the_collection_loader_within_its_roots(tmp_path: Path) -> None:
    ef = HashEmbedding()
    inside, outside = tmp_path / "images", tmp_path / "secret"
    inside.mkdir()
    outside.mkdir()
    good = write_png(inside / "good.png", random_image(1, size=300))
    secret = write_png(outside / "secret.png", random_image(2))
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        col = await streamer.AsyncClient(backend=engine).create_collection(
            "pics", embedding_function=ef, data_loader=ImageLoader(roots=[inside]))
        await col.add(ids=["good"], uris=[good])
        # A record may carry any URI when the caller embeds it; showing it must still obey roots.
        await col.add(ids=["secret"], embeddings=[ef.vector("s")], uris=[secret])
        await col.add(ids=["text"], documents=["no image here"])
        async with http.get(f"{gw.url}/api/thumbnail",
                            params={"collection": "pics", "id": "good", "size": "64"}) as res:
            assert res.status == 200 and res.content_type == "image/png"
            thumb = Image.open(io.BytesIO(await res.read()))
            assert max(thumb.size) == 64
        for record, status, code in [("secret", 403, "uri_outside_roots"), ("text", 404, "not_found"),
                                     ("missing", 404, "not_found")]:
            async with http.get(f"{gw.url}/api/thumbnail",
                                params={"collection": "pics", "id": record}) as res:
                assert res.status == status and (await res.json())["code"] == code


async def test_shutdown_answers_in_flight_requests_then_closes_with_going_away(tmp_path: Path) -> None:
    slow = SlowEmbedding(0.5)
    async with embedded_gateway(tmp_path / "store", slow) as (engine, gw):
        col = await streamer.AsyncClient(backend=engine).create_collection("col", embedding_function=slow)
        await col.add(ids=["a"], embeddings=[slow.vector("a")])
        async with ws_client(gw.url) as ws:
            pending = await ws.send({"op": "query", "name": "col", "texts": ["a"], "n_results": 1})
            await asyncio.sleep(0.1)
            await gw.stop()
            assert (await asyncio.wait_for(pending, 5))["result"]["ids"] == [["a"]]
            assert await ws.wait_closed(5) == aiohttp.WSCloseCode.GOING_AWAY
            assert not gw.ready and not gw.connections


@pytest.mark.parametrize("tokens", ["justatoken", "t:x:*", "t:rw:", ":r:*"])
def test_bad_token_configuration_is_refused(tokens: str) -> None:
    from streamer.gateway.auth import parse_tokens

    with pytest.raises(InvalidArgumentError, match="auth_tokens entry 1"):
        parse_tokens(tokens)


async def test_collections_and_whole_calls_over_the_socket(tmp_path: Path) -> None:
    """create/delete_collection and one-frame writes: a bad call writes nothing."""
    ef = HashEmbedding()
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw), ws_client(gw.url) as ws, \
            ws_client(gw.url, token="docs-only") as docs_only:
        spec = await ws.result({"op": "create_collection", "name": "made", "metadata": {"a": 1},
                                "data_loader": {"name": "image_loader", "config": {"roots": [str(tmp_path)]}}})
        assert spec["embedding_function"]["name"] == "open_clip"
        assert spec["embedding_function"]["config"]["model_name"] == "streamer-tiny"
        assert spec["data_loader"]["config"]["roots"] == [str(tmp_path)] and spec["metadata"] == {"a": 1}
        again = await ws.result({"op": "create_collection", "name": "made", "get_or_create": True})
        assert again["id"] == spec["id"]
        frames: list[tuple[dict[str, Any], str]] = [
            ({"name": "made"}, "already_exists"),
            ({"name": "other", "embedding_function": {"name": "mystery"}}, "invalid_argument"),
            ({"name": "other", "data_loader": {"name": "image_loader", "config": {"nope": 1}}}, "invalid_argument"),
            ({"name": 5}, "schema"),
        ]
        for frame, code in frames:
            reply = await ws.call({"op": "create_collection", **frame})
            assert reply["error"]["code"] == code, (frame, reply)
        reply = await docs_only.call({"op": "create_collection", "name": "not-docs"})
        assert reply["error"]["code"] == "permission_denied"
        col = await streamer.AsyncClient(backend=engine).get_collection("made", embedding_function=ef)
        await ws.result({"op": "add", "collection": spec["id"], "ids": ["a", "b"],
                         "documents": ["one", "two"], "metadatas": [{"n": 1}, None]})
        await ws.result({"op": "upsert", "name": "made", "ids": ["b", "c"],
                         "images": [encode_array(random_image(1)), encode_array(random_image(2))]})
        reply = await ws.call({"op": "add", "name": "made", "ids": ["d", "d"], "documents": ["x", "y"]})
        assert reply["error"]["code"] == "duplicate_id"
        got = await col.get()
        assert got["ids"] == ["a", "b", "c"] and got["documents"] == ["one", None, None]
        assert got["metadatas"] == [{"n": 1}, None, None]
        await ws.result({"op": "delete_collection", "name": "made"})
        assert (await ws.call({"op": "get_collection", "name": "made"}))["error"]["code"] == "not_found"
