"""Chroma's HTTP API v2 on ``streamer serve`` against ``chroma run`` (chromadb 1.5.9): the
same request sequence, raw HTTP, to both; status codes, error names and body shapes (keys and
JSON types) must agree, and record results must be equal (ids, documents, metadatas; floats
to 1e-5). Ids and timestamps are not compared. The differences docs/http-api.md lists are
asserted as differences, so that list cannot go stale."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest

from streamer.testing.chroma import Server, chroma_run, streamer_serve
from streamer.testing.kafka import ServiceProcess

T = "/api/v2/tenants/default_tenant/databases/default_database"
ZERO = "00000000-0000-0000-0000-000000000000"
VECTORS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5], [-1.0, 0.5, 2.0], [0.25, -3.0, 1.0]]


def packed(v: list[float]) -> str:
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()


@dataclass
class Step:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    compare: str = "value"  # value | shape | sorted (shape, by name) | len | status
    save: str | None = None  # remember the answer's "id" under this name, for "{name}" in paths
    raw: bytes | None = None
    # (Chroma's status, streamer's status): a documented difference (docs/http-api.md)
    differs: tuple[int, int] | None = None


def col(path: str = "") -> str:
    return f"{T}/collections/{{c1}}{path}"


STEPS = [
    Step("GET", "/api/v2/heartbeat", compare="shape"),
    Step("GET", "/api/v2/pre-flight-checks"),
    Step("GET", "/api/v2/healthcheck"),
    Step("GET", "/api/v2/auth/identity"),
    Step("GET", "/api/v2/version", compare="shape"),
    Step("POST", "/api/v2/reset"),
    Step("GET", "/api/v2/tenants/default_tenant"),
    Step("GET", "/api/v2/tenants/other"),
    Step("GET", T),
    Step("GET", "/api/v2/tenants/default_tenant/databases"),
    Step("GET", "/api/v2/tenants/default_tenant/databases/nodb"),
    # collections
    Step("POST", f"{T}/collections", {"name": "dif1", "metadata": {"a": 1, "s": "x"}},
         compare="shape", save="c1"),
    Step("POST", f"{T}/collections", {"name": "dif1"}),
    Step("POST", f"{T}/collections", {"name": "dif1", "get_or_create": True}, compare="shape"),
    Step("POST", f"{T}/collections", {"name": "xx"}),
    Step("POST", f"{T}/collections", {"name": "dif4", "metadata": {}}),
    Step("POST", f"{T}/collections", {"metadata": {"a": 1}}),
    Step("POST", f"{T}/collections", raw=b"not json"),
    Step("POST", f"{T}/collections", {"name": "dif2", "configuration": {"hnsw": {"space": "ip"}}},
         compare="shape", save="c2"),
    Step("POST", f"{T}/collections", {"name": "dif3", "metadata": {"hnsw:space": "cosine"}},
         compare="shape"),
    # Chroma lists collections in id order, streamer in creation order.
    Step("GET", f"{T}/collections", compare="sorted"),
    Step("GET", f"{T}/collections", params={"limit": 1, "offset": 1}, compare="len"),
    Step("GET", f"{T}/collections", params={"limit": -1}),
    Step("GET", f"{T}/collections_count"),
    Step("GET", f"{T}/collections/dif2", compare="shape"),
    Step("GET", f"{T}/collections/nope"),
    Step("GET", f"{T}/collections/by-id/{{c1}}", compare="shape"),
    Step("GET", f"{T}/collections/by-id/{ZERO}"),
    Step("GET", f"{T}/collections/by-id/notauuid"),
    # records
    Step("POST", col("/add"), {"ids": ["a", "b"], "embeddings": VECTORS[:2],
                               "documents": ["hello", "world"], "metadatas": [{"k": 1}, None]}),
    Step("POST", col("/add"), {"ids": ["a"], "embeddings": [VECTORS[0]]}),
    Step("POST", col("/add"), {"ids": ["c"], "embeddings": [[1.0, 2.0]]}),
    Step("POST", col("/add"), {"ids": ["p", "q"], "embeddings": [packed(v) for v in VECTORS[2:]],
                               "metadatas": [{"k": 2, "t": "yes"}, {"k": 3, "f": 0.5}],
                               "uris": ["file:///p", "file:///q"]}),

    Step("POST", col("/add"), {"ids": ["f"]}),
    Step("POST", col("/add"), {"ids": ["h"], "embeddings": [VECTORS[0]],
                               "metadatas": [{"bad": {"x": 1}}]}),
    Step("POST", col("/add"), {"ids": [], "embeddings": []}),
    Step("GET", col("/count")),
    Step("POST", col("/get"), {"include": ["documents", "metadatas"]}),
    Step("POST", col("/get"), {"ids": ["q", "a"],
                               "include": ["embeddings", "metadatas", "documents", "uris"]}),
    Step("POST", col("/get"), {"where": {"k": {"$gte": 2}}, "include": ["metadatas"]}),
    Step("POST", col("/get"), {"where": {"k": {"$bad": 1}}}),
    Step("POST", col("/get"), {"where_document": {"$contains": "hell"}}),
    Step("POST", col("/get"), {"limit": 2, "offset": 1, "include": []}),
    Step("POST", col("/get"), {"limit": "x"}),
    Step("POST", col("/get"), {"include": ["distances"]}, differs=(200, 400)),
    Step("POST", col("/query"), {"query_embeddings": [VECTORS[0], VECTORS[3]], "n_results": 3}),
    Step("POST", col("/query"), {"query_embeddings": [VECTORS[1]], "n_results": 2,
                                 "include": ["embeddings", "distances", "uris"]}),
    Step("POST", col("/query"), {"query_embeddings": [packed(VECTORS[1])]}),
    Step("POST", col("/query"), {"query_embeddings": [[1.0, 2.0]], "n_results": 2}),
    Step("POST", col("/query"), {"query_embeddings": [VECTORS[0]], "n_results": 5,
                                 "ids": ["b", "q"]}),
    Step("POST", col("/query"), {"query_embeddings": [VECTORS[0]], "where": {"k": {"$in": [1, 3]}},
                                 "where_document": {"$not_contains": "zzz"}}),
    Step("POST", col("/query"), {"n_results": 2}),
    Step("POST", col("/query"), {"query_embeddings": [VECTORS[0]], "n_results": 0},
         differs=(200, 400)),
    # A body over chroma run's 40 MiB: 413, "Payload too large" in plain text.
    Step("POST", col("/add"), raw=b'{"ids": ["big"], "documents": ["' + b"x" * (40 << 20)
         + b'"]}'),
    Step("POST", col("/update"), {"ids": ["a"], "metadatas": [{"k": 10}]}),
    Step("POST", col("/update"), {"ids": ["zzz"], "metadatas": [{"k": 2}]}),
    Step("POST", col("/update"), {"ids": ["a"], "embeddings": [[1.0, 2.0]]}),
    Step("POST", col("/upsert"), {"ids": ["a", "n"], "embeddings": [VECTORS[3], VECTORS[2]],
                                  "metadatas": [{"k": 5}, {"k": 6}], "documents": ["up", None]}),
    Step("POST", col("/upsert"), {"ids": ["a"]}),
    Step("POST", col("/get"), {"include": ["documents", "metadatas", "embeddings"]}),
    Step("POST", col("/delete"), {"ids": ["n", "nothere"]}),
    Step("POST", col("/delete"), {"where": {"k": 5}}),
    Step("POST", col("/delete"), {}),
    Step("GET", col("/count")),
    # modify
    Step("PUT", col(), {"new_name": "dif1b", "new_metadata": {"z": 1}}),
    Step("PUT", col(), {"new_configuration": {"hnsw": {"ef_search": 50}}}),
    Step("PUT", col(), {}),
    Step("PUT", col(), {"new_name": "dif2"}, differs=(500, 409)),
    Step("PUT", f"{T}/collections/{ZERO}", {"new_name": "zzz"}),
    Step("PUT", f"{T}/collections/notuuid", {"new_name": "zzz"}),
    Step("GET", f"{T}/collections/dif1b", compare="shape"),
    Step("POST", f"{T}/collections/{ZERO}/add", {"ids": ["a"], "embeddings": [VECTORS[0]]}),
    Step("POST", f"{T}/collections/notuuid/get", {}),
    Step("GET", f"{T}/collections/{ZERO}/count"),
    # Writes Chroma takes and streamer refuses, on a collection of their own.
    Step("POST", f"{T}/collections/{{c2}}/add", {"ids": ["d", "d"], "embeddings": VECTORS[:2]},
         differs=(201, 400)),
    Step("POST", f"{T}/collections/{{c2}}/add", {"ids": ["u"], "embeddings": [VECTORS[0]],
                                                 "uris": [None]}, differs=(201, 400)),
    Step("POST", f"{T}/collections/{{c2}}/add", {"ids": ["w"], "embeddings": [VECTORS[0]],
                                                 "documents": ["text"], "uris": ["file:///w"]},
         differs=(201, 400)),
    Step("POST", f"{T}/collections/{{c2}}/update", {"ids": ["b"], "documents": ["text only"]},
         differs=(200, 400)),
    Step("PUT", f"{T}/collections/{{c2}}", {"new_metadata": {"hnsw:space": "cosine"}},
         differs=(200, 400)),
    # what streamer does not serve: one tenant and one database
    Step("POST", "/api/v2/tenants", {"name": "tenant2"}, differs=(200, 403)),
    Step("POST", "/api/v2/tenants/default_tenant/databases", {"name": "db2"}, differs=(200, 403)),
    Step("GET", "/api/v2/tenants/nobody/databases/default_database/collections",
         differs=(200, 404)),
    # delete
    Step("DELETE", f"{T}/collections/dif1b"),
    Step("DELETE", f"{T}/collections/dif1b"),
    Step("DELETE", f"{T}/collections/dif2"),
    Step("DELETE", f"{T}/collections/dif3"),
    Step("GET", f"{T}/collections_count"),
    Step("GET", "/api/v2/nope", compare="status"),
]


def shape(x: Any) -> Any:
    """A body's keys and JSON types (numbers as one type), lists element by element. A
    collection's schema is compared for its built-in keys: Chroma's also lists the metadata
    keys its records used, which streamer's does not (docs/http-api.md)."""
    if isinstance(x, dict):
        if "#embedding" in x:
            x = {k: v for k, v in x.items() if k.startswith("#")}
        return {k: shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [shape(v) for v in x]
    if isinstance(x, bool) or x is None:
        return x if x is None else "bool"
    return "number" if isinstance(x, int | float) else type(x).__name__


def same_values(got: Any, want: Any, at: str = "") -> None:
    if isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), at
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), at
        for k in want:
            same_values(got[k], want[k], f"{at}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), at
        for i, (g, w) in enumerate(zip(got, want)):
            same_values(g, w, f"{at}[{i}]")
    else:
        assert got == want, at


def run(url: str, steps: list[Step]) -> list[tuple[int, Any]]:
    saved: dict[str, str] = {}
    out = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for step in steps:
            path = step.path.format(**saved)
            if step.raw is not None:
                res = http.request(step.method, path, content=step.raw,
                                   headers={"Content-Type": "application/json"})
            else:
                res = http.request(step.method, path, json=step.json, params=step.params)
            try:
                body = res.json()
            except ValueError:
                body = res.text
            if step.save is not None:
                saved[step.save] = body["id"]
            out.append((res.status_code, body))
    return out


@pytest.fixture
def chroma(tmp_path: Path) -> Iterator[Server]:
    """A fresh one per run: the sequence leaves a tenant and a database behind in it."""
    with chroma_run(tmp_path) as server:
        yield server


@pytest.fixture(scope="module", params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with streamer_serve(tmp_path_factory.mktemp("streamer"), kafka=request.param == "kafka") as svc:
        yield svc


def test_same_answers_as_chroma_run(chroma: Server, served: ServiceProcess) -> None:
    assert served.url is not None
    theirs, ours = run(chroma.url, STEPS), run(served.url, STEPS)
    for step, (t_status, t_body), (o_status, o_body) in zip(STEPS, theirs, ours):
        where = f"{step.method} {step.path} {step.json or step.params or (step.raw or b'')[:80]!r}"
        if step.differs is not None:
            assert (t_status, o_status) == step.differs, where
            continue
        assert o_status == t_status, (where, t_body, o_body)
        if step.compare == "status":
            continue
        if t_status >= 400 and isinstance(t_body, str):  # not JSON: the text itself
            assert o_body == t_body, (where, t_body, o_body)
        elif t_status >= 400:
            assert isinstance(o_body, dict) and o_body.keys() == {"error", "message"}, where
            assert o_body["error"] == t_body["error"], (where, t_body, o_body)
        elif step.compare == "len":
            assert len(o_body) == len(t_body), where
        elif step.compare in ("shape", "sorted"):
            if step.compare == "sorted":
                o_body, t_body = (sorted(b, key=lambda c: str(c["name"])) for b in (o_body, t_body))
            assert shape(o_body) == shape(t_body), where
        else:
            same_values(o_body, t_body, where)


def test_version_and_openapi(served: ServiceProcess) -> None:
    assert served.url is not None
    assert httpx.get(f"{served.url}/api/v2/version").json() == "1.5.9"
    doc = httpx.get(f"{served.url}/openapi.json").json()
    names = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(names) == len(set(names))
    ops = set(names)
    assert {"collection_add", "collection_query", "create_collection", "get_collection_by_id",
            "pre_flight_checks", "reset"} <= ops
    add = doc["paths"]["/api/v2/tenants/{tenant}/databases/{database}/collections/{collection_id}/add"]["post"]
    schema = add["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["ids", "embeddings"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"ids": ["a"], "embeddings": [[1.0], "AACAPw=="], "metadatas": [None]},
                        schema)
