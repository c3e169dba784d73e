"""Chroma's HTTP API v2 on the wire (chromadb 1.5.9, ``chroma run``): the request bodies'
JSON Schemas and their check, packed embeddings, the collection model, result bodies and the
error shape ``{"error": <Chroma error name>, "message"}`` with Chroma's status codes.

A body that is not JSON is Chroma's 400 ``InvalidArgumentError``; JSON of the wrong shape
(a missing field, a wrong type, an unknown ``include`` item) its 422 ``ChromaError``
("Failed to deserialize the JSON body into the target type: ..."); everything else is
validated by the collection API itself (``streamer.client.collection``), whose typed errors
map to Chroma's names here. The same schemas describe the bodies in ``/openapi.json``."""

from __future__ import annotations

import binascii
import uuid
from typing import Any

import anyio.to_thread
import numpy as np
import orjson
from aiohttp import web

from consumers.validation import hnsw
from schemas.errors import (
    DataLoaderError,
    DuplicateIDError,
    InvalidArgumentError,
    InvalidTypeError,
    LimitExceededError,
    NotFoundError,
    PermissionDeniedError,
    RequestTimeoutError,
    StreamerError,
    UnavailableError,
    UniqueConstraintError,
)
from schemas.records import CollectionSpec, Vector
from streamer.client.collection import configuration_json as streamer_configuration

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
DATABASE_ID = "00000000-0000-0000-0000-000000000000"
#: What ``get_version`` answers: the chromadb release whose API this serves.
VERSION = "1.5.9"


class HTTPError(Exception):
    """An answer in Chroma's error shape."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.name, self.message = status, name, message

    def response(self) -> web.Response:
        return json_response({"error": self.name, "message": self.message}, self.status)


class PayloadTooLarge(HTTPError):
    """A body over ``http_max_body_bytes``: chroma run's own answer, 413 in plain text."""

    def __init__(self) -> None:
        super().__init__(413, "PayloadTooLarge", "Payload too large")

    def response(self) -> web.Response:
        return web.Response(status=413, text=self.message)


#: The largest request body read (``Settings.http_max_body_bytes``), set on the app.
MAX_BODY = web.AppKey("chroma_max_body", int)


def _dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type="application/json")


async def large_json_response(body: Any) -> web.Response:
    """A get/query result, encoded on a thread (it can hold thousands of vectors)."""
    return web.Response(body=await anyio.to_thread.run_sync(_dumps, body),
                        content_type="application/json")


def not_found(what: str) -> HTTPError:
    return HTTPError(404, "NotFoundError", what)


#: Streamer's errors as Chroma's (status, name); the first class in an error's MRO wins.
_ERRORS: dict[type[BaseException], tuple[int, str]] = {
    DuplicateIDError: (400, "DuplicateID"),
    InvalidArgumentError: (400, "InvalidArgumentError"),
    InvalidTypeError: (400, "InvalidArgumentError"),
    DataLoaderError: (400, "InvalidArgumentError"),
    NotFoundError: (404, "NotFoundError"),
    # chroma run answers an existing name with 409 and the generic name.
    UniqueConstraintError: (409, "ChromaError"),
    PermissionDeniedError: (403, "AuthorizationError"),
    # Chroma's name for a request over a limit (its Python client raises QuotaError).
    LimitExceededError: (400, "QuotaError"),
    UnavailableError: (503, "InternalError"),
    RequestTimeoutError: (504, "InternalError"),
}


def from_error(exc: StreamerError) -> HTTPError:
    for cls in type(exc).__mro__:
        if cls in _ERRORS:
            status, name = _ERRORS[cls]
            return HTTPError(status, name, exc.message)
    return HTTPError(500, "InternalError", exc.message)


# ---- request bodies: JSON Schemas (also served in /openapi.json) and a small checker -------
_UINT = {"type": "integer", "minimum": 0}
_SCALAR = {"type": ["string", "number", "boolean"]}
_METADATA = {"type": "object", "additionalProperties": {"anyOf": [
    {"type": ["string", "number", "boolean", "null"]},
    {"type": "array", "items": _SCALAR},
    {"type": "object", "description": "a SparseVector", "required": ["#type", "indices", "values"],
     "properties": {"#type": {"enum": ["sparse_vector"]}, "indices": {"type": "array"},
                    "values": {"type": "array"}}}]}}
_OBJECT = {"type": "object"}
_IDS = {"type": "array", "items": {"type": "string"}}
_EMBEDDINGS = {"type": "array", "description": "Float lists, or base64 strings of packed "
               "little-endian float32 (one per record)", "items": {"anyOf": [
                   {"type": "array", "items": {"type": "number"}}, {"type": "string"}]}}
_FLOAT_LISTS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
_INCLUDE = {"type": "array", "items": {"enum": ["distances", "documents", "embeddings",
                                                 "metadatas", "uris"]}}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _body(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_RECORDS = {"metadatas": _nullable({"type": "array", "items": _nullable(_METADATA)}),
            "documents": _nullable({"type": "array", "items": {"type": ["string", "null"]}}),
            "uris": _nullable({"type": "array", "items": {"type": ["string", "null"]}})}
BODIES: dict[str, dict[str, Any]] = {
    "create_tenant": _body(["name"], name={"type": "string"}),
    "create_database": _body(["name"], name={"type": "string"}),
    "create_collection": _body(
        ["name"], name={"type": "string"}, metadata=_nullable(_METADATA),
        configuration=_nullable(_OBJECT), schema=_nullable(_OBJECT),
        get_or_create={"type": "boolean"}),
    "update_collection": _body(
        [], new_name=_nullable({"type": "string"}), new_metadata=_nullable(_METADATA),
        new_configuration=_nullable(_OBJECT)),
    "add": _body(["ids", "embeddings"], ids=_IDS, embeddings=_EMBEDDINGS, **_RECORDS),
    "upsert": _body(["ids", "embeddings"], ids=_IDS, embeddings=_EMBEDDINGS, **_RECORDS),
    "update": _body(["ids"], ids=_IDS, embeddings=_nullable(_EMBEDDINGS), **_RECORDS),
    "delete": _body([], ids=_nullable(_IDS), where=_nullable(_OBJECT),
                    where_document=_nullable(_OBJECT), limit=_nullable(_UINT)),
    "get": _body([], ids=_nullable(_IDS), where=_nullable(_OBJECT),
                 where_document=_nullable(_OBJECT), limit=_nullable(_UINT),
                 offset=_nullable(_UINT), include=_INCLUDE),
    "search": _body(["searches"], searches={"type": "array", "items": _OBJECT},
                    read_level=_nullable({"type": "string"})),
    "query": _body(["query_embeddings"], query_embeddings=_FLOAT_LISTS, ids=_nullable(_IDS),
                   n_results=_nullable(_UINT), where=_nullable(_OBJECT),
                   where_document=_nullable(_OBJECT), include=_INCLUDE),
}
_TYPES: dict[str, Any] = {"string": str, "object": dict, "array": list, "boolean": bool,
                          "null": type(None)}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return name == "number" or isinstance(value, int)
    return isinstance(value, _TYPES[name])


def _mismatch(value: Any, schema: dict[str, Any], at: str) -> str | None:
    """Why ``value`` does not fit ``schema`` (the subset of JSON Schema used above)."""
    if "anyOf" in schema:
        if any(_mismatch(value, s, at) is None for s in schema["anyOf"]):
            return None
        return f"{at}: data did not match any variant"
    if "enum" in schema:
        return None if value in schema["enum"] else f"{at}: unknown variant {value!r}"
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in names):
            return f"{at}: invalid type {type(value).__name__}, expected {' or '.join(names)}"
    if "minimum" in schema and value < schema["minimum"]:
        return f"{at}: invalid value {value}, expected at least {schema['minimum']}"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            if (why := _mismatch(item, schema["items"], f"{at}[{i}]")) is not None:
                return why
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                return f"missing field `{key}`"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key, extra)
            if sub is not None and (why := _mismatch(item, sub, f"{at}.{key}".lstrip("."))):
                return why
    return None


#: Bodies larger than this are parsed and checked on a thread, not on the event loop (a full
#: batch of 5461 1536-d vectors is ~45 MB of JSON).
_OFF_LOOP_BYTES = 1 << 20


def _parse(raw: bytes, kind: str) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, "InvalidArgumentError",
                        f"Failed to parse the request body as JSON: {exc}") from None
    why = _mismatch(body, BODIES[kind], "")
    if why is not None:
        raise HTTPError(422, "ChromaError",
                        f"Failed to deserialize the JSON body into the target type: {why}")
    assert isinstance(body, dict)
    return body


async def read_body(request: web.Request, kind: str) -> dict[str, Any]:
    limit = request.app[MAX_BODY]
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge
    raw = await request.read()
    if len(raw) > limit:  # a chunked body, without a length
        raise PayloadTooLarge
    if len(raw) > _OFF_LOOP_BYTES:
        return await anyio.to_thread.run_sync(_parse, raw, kind)
    return _parse(raw, kind)


def query_uint(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise HTTPError(400, "InvalidArgumentError",
                        f"Failed to deserialize query string: {name}: invalid digit found in "
                        "string")
    return int(raw)


def collection_uuid(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise HTTPError(400, "InvalidArgumentError",
                        "Collection ID is not a valid UUIDv4") from None


async def embeddings(rows: list[Any] | None) -> list[Vector] | None:
    """``decode_embeddings``, on a thread for a large batch."""
    if rows is not None and len(rows) > 64:
        return await anyio.to_thread.run_sync(decode_embeddings, rows)
    return decode_embeddings(rows)


def decode_embeddings(rows: list[Any] | None) -> list[Vector] | None:
    """Float lists or Chroma's packed base64 float32 (what ``chromadb.HttpClient`` sends when
    pre-flight says ``supports_base64_encoding``), as float32 vectors."""
    if rows is None:
        return None
    out: list[Vector] = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            try:
                packed = binascii.a2b_base64(row, strict_mode=True)
            except ValueError as exc:
                raise HTTPError(400, "InvalidArgumentError",
                                f"Embedding {i} is not valid base64: {exc}") from None
            if len(packed) % 4:
                raise HTTPError(400, "InvalidArgumentError",
                                f"Embedding {i} has {len(packed)} bytes, not whole float32s")
            out.append(np.frombuffer(packed, dtype="<f4").astype(np.float32))
        else:
            out.append(np.asarray(row, dtype=np.float32))
    return out


# ---- response bodies ---------------------------------------------------------------------
def _schema(spec: CollectionSpec) -> dict[str, Any]:
    """Chroma's collection schema for a dense, client-embedded collection in ``space``, with
    the sparse vector index its schema declared (a client embeds string queries with it)."""
    def index(enabled: bool) -> dict[str, Any]:
        return {"enabled": enabled, "config": {}}

    space, sparse = spec.space, spec.sparse
    shown = hnsw.shown(spec)
    params = {k: shown[k] for k in ("ef_construction", "max_neighbors", "ef_search")}
    params.update(num_threads=(spec.hnsw or {}).get("num_threads", 1),
                  batch_size=(spec.hnsw or {}).get("batch_size", 100),
                  sync_threshold=shown["sync_threshold"], resize_factor=shown["resize_factor"])
    vector = {"space": space, "hnsw": params}
    keys: dict[str, Any] = {
        "#embedding": {"float_list": {"vector_index": {
            "enabled": True, "config": {**vector, "source_key": "#document"}}}},
        "#document": {"string": {"fts_index": index(True),
                                 "string_inverted_index": index(False)}},
    }
    if sparse is not None:
        ef = sparse["embedding_function"]
        keys[sparse["key"]] = {"sparse_vector": {"sparse_vector_index": {"enabled": True, "config": {
            "embedding_function": {"type": "known", "name": ef["name"], "config": ef["config"]},
            "source_key": sparse["source_key"], "bm25": sparse["bm25"]}}}}
    return {
        "defaults": {
            "string": {"fts_index": index(False), "string_inverted_index": index(True)},
            "float_list": {"vector_index": {"enabled": False, "config": vector}},
            "sparse_vector": {"sparse_vector_index": {
                "enabled": False, "config": {"embedding_function": {"type": "unknown"},
                                             "bm25": False}}},
            "int": {"int_inverted_index": index(True)},
            "float": {"float_inverted_index": index(True)},
            "bool": {"bool_inverted_index": index(True)},
        },
        "keys": keys,
    }


def configuration_json(spec: CollectionSpec) -> dict[str, Any]:
    """Chroma's ``configuration_json``: the space and the index parameters streamer runs
    with. The embedding function is the one a Chroma client declared (its configuration, kept
    as Chroma's server keeps it), else ``None``: a built-in streamer embeds with runs
    server-side, and an ``HttpClient`` would try to build a named one itself."""
    return {**streamer_configuration(spec), "embedding_function": spec.client_embedding_function}


def collection_json(spec: CollectionSpec) -> dict[str, Any]:
    return {"id": spec.id, "name": spec.name, "configuration_json": configuration_json(spec),
            "schema": _schema(spec), "metadata": spec.metadata,
            "dimension": spec.dimension, "tenant": DEFAULT_TENANT,
            "database": DEFAULT_DATABASE, "log_position": 0, "version": 0}


def result_json(result: dict[str, Any], *, query: bool) -> dict[str, Any]:
    """A get/query result as Chroma sends it: every field present, ``None`` unless included,
    ``include`` echoed; embeddings and distances as float lists (orjson writes numpy)."""
    out = {key: result.get(key) for key in ("ids", "embeddings", "documents", "uris",
                                            "metadatas")}
    if query:
        out["distances"] = result.get("distances")
    out["include"] = list(result.get("included") or [])
    return out


def without_sparse(metadatas: list[Any] | None, spec: CollectionSpec) -> list[Any] | None:
    """Metadatas less the sparse vectors a Chroma client computed for the schema's sparse
    index: the store derives the same ones from the documents with the same function."""
    if metadatas is None:
        return None
    key = (spec.sparse or {}).get("key")
    out = []
    for meta in metadatas:
        if isinstance(meta, dict):
            for k, v in meta.items():
                if isinstance(v, dict) and k != key:
                    raise HTTPError(400, "InvalidArgumentError", (
                        f"Metadata key {k!r} holds a sparse vector: streamer keeps them only in "
                        "a schema's sparse vector index on #document"))
            meta = {k: v for k, v in meta.items() if not isinstance(v, dict)} or None
        out.append(meta)
    return out


def declared_embedding_function(body: dict[str, Any]) -> dict[str, Any] | None:
    """The embedding function a create declares, as Chroma's server reads it: the
    configuration's, else the one its schema's vector index names (on ``#embedding``, else
    the defaults)."""
    named = (body.get("configuration") or {}).get("embedding_function")
    if named is not None:
        return dict(named)
    schema = body.get("schema") or {}
    for section in (((schema.get("keys") or {}).get("#embedding") or {}), schema.get("defaults") or {}):
        config = ((section.get("float_list") or {}).get("vector_index") or {}).get("config") or {}
        if isinstance(config.get("embedding_function"), dict):
            return dict(config["embedding_function"])
    return None


def space_of(configuration: dict[str, Any] | None) -> str:
    """The space a create's configuration names (``hnsw`` or ``spann``), else Chroma's l2."""
    for section in ("hnsw", "spann"):
        value = (configuration or {}).get(section)
        if isinstance(value, dict) and value.get("space") is not None:
            return str(value["space"])
    return "l2"
