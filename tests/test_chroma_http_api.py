"""Chroma's HTTP API v2 in-process (the embedded gateway): tokens and grants, anonymous
access, reset, collections shared with the Python client by id, packed embeddings."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

import streamer
from streamer.testing.gateway import TOKEN
from tests.gateway_helpers import embedded_gateway

T = "/api/v2/tenants/default_tenant/databases/default_database"


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str | None = TOKEN,
               json: Any = None, header: str = "Authorization") -> tuple[int, Any]:
    headers = {} if token is None else {
        header: f"Bearer {token}" if header == "Authorization" else token}
    # Bytes in a BytesIO: aiohttp warns that a large raw body would block the loop.
    data = None if json is None else io.BytesIO(orjson.dumps(json))
    headers["Content-Type"] = "application/json"
    async with http.request(method, url, data=data, headers=headers) as res:
        return res.status, await res.json(content_type=None)


async def test_tokens_and_grants(tmp_path: Path) -> None:
    async with embedded_gateway(tmp_path / "store", None) as (_, gw), \
            aiohttp.ClientSession() as http:
        u = gw.url
        for path in ("heartbeat", "version", "pre-flight-checks", "healthcheck"):
            assert (await call(http, "GET", f"{u}/api/v2/{path}", None))[0] == 200, path
        assert await call(http, "GET", f"{u}{T}/collections", None) == \
            (401, {"error": "AuthError", "message": "missing or invalid bearer token"})
        assert (await call(http, "GET", f"{u}{T}/collections", "wrong"))[0] == 401
        status, made = await call(http, "POST", f"{u}{T}/collections", json={"name": "docs"})
        assert status == 200
        await call(http, "POST", f"{u}{T}/collections", json={"name": "other"})
        # Chroma's own token header works as well as a bearer token.
        status, listed = await call(http, "GET", f"{u}{T}/collections", TOKEN,
                                    header="X-Chroma-Token")
        assert status == 200 and [c["name"] for c in listed] == ["docs", "other"]
        status, body = await call(http, "POST", f"{u}{T}/collections", "reader-token",
                                  json={"name": "nope"})
        assert (status, body["error"]) == (403, "AuthorizationError")
        add = {"ids": ["a"], "embeddings": [[1.0, 2.0]]}
        status, body = await call(http, "POST", f"{u}{T}/collections/{made['id']}/add",
                                  "reader-token", json=add)
        assert (status, body["error"]) == (403, "AuthorizationError")
        # A token for one collection sees and counts only that one.
        _, listed = await call(http, "GET", f"{u}{T}/collections", "docs-only")
        assert [c["name"] for c in listed] == ["docs"]
        assert await call(http, "GET", f"{u}{T}/collections_count", "docs-only") == (200, 1)
        assert (await call(http, "GET", f"{u}{T}/collections/other", "docs-only"))[0] == 403
        assert (await call(http, "POST", f"{u}{T}/collections/{made['id']}/add", "docs-only",
                           json=add))[0] == 201
        _, me = await call(http, "GET", f"{u}/api/v2/auth/identity")
        assert me == {"user_id": "token#1", "tenant": "default_tenant",
                      "databases": ["default_database"]}
        assert await call(http, "POST", f"{u}/api/v2/reset") == \
            (403, {"error": "ChromaError", "message": "Reset is disabled by config"})


async def test_anonymous_access_and_reset(tmp_path: Path) -> None:
    async with embedded_gateway(tmp_path / "store", None, http_anonymous="r",
                                allow_reset=True) as (engine, gw), \
            aiohttp.ClientSession() as http:
        u = gw.url
        await streamer.AsyncClient(backend=engine).create_collection("mine",
                                                                      embedding_function=None)
        status, listed = await call(http, "GET", f"{u}{T}/collections", None)
        assert status == 200 and [c["name"] for c in listed] == ["mine"]
        _, me = await call(http, "GET", f"{u}/api/v2/auth/identity", None)
        assert me["user_id"] == ""
        status, body = await call(http, "POST", f"{u}{T}/collections", None, json={"name": "new"})
        assert (status, body["error"]) == (403, "AuthorizationError")
        # A wrong token is refused even where anonymous requests are served.
        assert (await call(http, "GET", f"{u}{T}/collections", "wrong"))[0] == 401
        assert (await call(http, "POST", f"{u}/api/v2/reset", None))[0] == 403
        assert (await call(http, "POST", f"{u}/api/v2/reset", "docs-only"))[0] == 403
        assert await call(http, "POST", f"{u}/api/v2/reset") == (200, True)
        assert await engine.list_collections() == []


async def test_collections_are_shared_with_the_python_client_by_id(tmp_path: Path) -> None:
    async with embedded_gateway(tmp_path / "store", None) as (engine, gw), \
            aiohttp.ClientSession() as http:
        u = gw.url
        client = streamer.AsyncClient(backend=engine)
        ours = await client.create_collection("pyc", embedding_function=None,
                                              metadata={"hnsw:space": "cosine"})
        vectors = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32)
        await ours.add(ids=["r0", "r1"], embeddings=vectors[:2], documents=["zero", "one"])
        status, by_id = await call(http, "GET", f"{u}{T}/collections/by-id/{ours.id}")
        assert status == 200 and by_id["name"] == "pyc" and by_id["dimension"] == 5
        assert by_id["configuration_json"]["hnsw"]["space"] == "cosine"
        packed = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors[2:]]
        assert (await call(http, "POST", f"{u}{T}/collections/{ours.id}/add",
                           json={"ids": ["r2", "r3"], "embeddings": packed}))[0] == 201
        got = await ours.get(ids=["r2", "r3"], include=["embeddings"])
        np.testing.assert_array_equal(np.asarray(got["embeddings"]), vectors[2:])
        status, hits = await call(http, "POST", f"{u}{T}/collections/{ours.id}/query",
                                  json={"query_embeddings": [vectors[1].tolist()], "n_results": 2,
                                        "include": ["documents", "distances"]})
        want = await ours.query(query_embeddings=[vectors[1]], n_results=2,
                                include=["documents", "distances"])
        assert status == 200 and hits["ids"] == want["ids"]
        assert hits["documents"] == want["documents"]
        assert hits["distances"][0] == pytest.approx(want["distances"][0], rel=1e-5)
        # And the other way: a collection made over HTTP is the Python client's too.
        _, made = await call(http, "POST", f"{u}{T}/collections", json={"name": "web"})
        assert (await client.get_collection("web", embedding_function=None)).id == made["id"]


async def test_a_large_batch_round_trips(tmp_path: Path) -> None:
    """A body over 1 MiB is parsed, and a large result encoded, off the event loop."""
    async with embedded_gateway(tmp_path / "store", None) as (_, gw), \
            aiohttp.ClientSession() as http:
        u = gw.url
        _, made = await call(http, "POST", f"{u}{T}/collections", json={"name": "big"})
        vectors = np.random.default_rng(5).standard_normal((700, 512)).astype(np.float32)
        packed = [base64.b64encode(v.astype("<f4").tobytes()).decode() for v in vectors]
        ids = [f"v{i}" for i in range(len(vectors))]
        status, _ = await call(http, "POST", f"{u}{T}/collections/{made['id']}/add",
                               json={"ids": ids, "embeddings": packed})
        assert status == 201
        status, got = await call(http, "POST", f"{u}{T}/collections/{made['id']}/get",
                                 json={"ids": ids, "include": ["embeddings"]})
        assert status == 200 and got["ids"] == ids
        np.testing.assert_array_equal(np.asarray(got["embeddings"], dtype=np.float32), vectors)
