"""JSON Schemas of the websocket gateway's frames (``streamer.gateway.ops`` documents the
ops), and the error classes as data, so clients in other languages are generated from them
(``clients/typescript`` builds its wire types and error classes from these files)."""

from __future__ import annotations

from typing import Any

from schemas import errors
from schemas.array_schema import ARRAY_FIELDS, IMAGE
from schemas.events import SCHEMA_VERSION
from schemas.where_schema import WHERE, WHERE_DOCUMENT

VERSION = {"const": SCHEMA_VERSION}
ARRAY = {"$ref": "#/$defs/WireArray"}
NULLABLE_STRINGS = {"type": ["array", "null"], "items": {"type": ["string", "null"]}}
METADATA = {"$ref": "#/$defs/Metadata"}
DEFS = {
    "WireArray": {
        "type": "object", "required": ["dtype", "shape", "b64"], "additionalProperties": False,
        "description": "A typed array: little-endian raw bytes, base64.",
        "properties": ARRAY_FIELDS},
    "WireImage": {**IMAGE, "anyOf": [ARRAY, *IMAGE["anyOf"][1:]]},
    "Metadata": {"type": ["object", "null"], "additionalProperties": {
        "anyOf": [{"type": ["string", "number", "boolean", "null"]},
                  {"type": "array", "minItems": 1,
                   "items": {"type": ["string", "number", "boolean"]}}]}},
    "Builtin": {"type": "object", "required": ["name"], "additionalProperties": False,
                "description": "A built-in embedding function or data loader by name + config.",
                "properties": {"name": {"enum": ["open_clip", "image_loader"]},
                               "config": {"type": "object"}}},
    "IncludeItem": {"enum": ["documents", "embeddings", "metadatas", "distances", "uris", "data"]},
}

WS_OPS = ["query", "get", "search", "count", "list_collections", "get_collection", "create_collection",
          "delete_collection", "add", "update", "upsert", "delete", "subscribe", "unsubscribe"]
WS_REQUEST = {
    "title": "WsRequest", "type": "object", "required": ["v", "op"],
    "description": "One websocket text frame; its reply echoes correlation_id.",
    "properties": {
        "v": VERSION, "op": {"enum": WS_OPS}, "correlation_id": {"type": ["string", "integer"]},
        "collection": {"type": "string", "description": "The collection's id"},
        "name": {"type": "string", "description": "The collection's name"},
        "ids": {"type": ["array", "null"], "items": {"type": "string"}},
        "embeddings": {"type": ["array", "null"], "items": ARRAY},
        "texts": {"type": ["array", "null"], "items": {"type": "string"}},
        "images": {"type": ["array", "null"], "items": {"$ref": "#/$defs/WireImage"}},
        "uris": {"type": ["array", "null"], "items": {"type": "string"}},
        "documents": {"type": ["array", "null"], "items": {"type": "string"}},
        "metadatas": {"type": ["array", "null"], "items": METADATA},
        "n_results": {"type": "integer", "minimum": 1},
        "where": {"anyOf": [WHERE, {"type": "null"}]},
        "where_document": {"anyOf": [WHERE_DOCUMENT, {"type": "null"}]},
        "include": {"type": "array", "items": {"$ref": "#/$defs/IncludeItem"}},
        "limit": {"type": ["integer", "null"]}, "offset": {"type": ["integer", "null"]},
        "wait": {"type": "boolean", "description": "Writes: wait for the writer's verdict"},
        "metadata": METADATA,
        "embedding_function": {"anyOf": [{"$ref": "#/$defs/Builtin"}, {"type": "null"}]},
        "data_loader": {"anyOf": [{"$ref": "#/$defs/Builtin"}, {"type": "null"}]},
        "get_or_create": {"type": "boolean"},
        "searches": {"type": "array", "minItems": 1, "items": {"type": "object"},
                     "description": "search: chromadb Search.to_dict() forms"},
        "sparse": {"type": ["object", "null"], "description": (
            "create_collection: a BM25 sparse index, {key, source_key: '#document', "
            "embedding_function: {name: 'chroma_bm25', config}, bm25}")},
        "threshold": {"type": "number"}, "top_k": {"type": "integer", "minimum": 1},
        "subscription": {"type": "string", "minLength": 1, "maxLength": 128},
        "stream": {"type": "string"}, "resume_after": {"type": "integer", "minimum": 0}},
    "$defs": DEFS}
WS_ERROR = {"type": "object", "required": ["code", "name", "message", "retriable"],
            "additionalProperties": False,
            "properties": {"code": {"type": "string"}, "name": {"type": "string"},
                           "message": {"type": "string"}, "retriable": {"type": "boolean"}}}
WS_REPLY = {
    "title": "WsReply", "type": "object", "required": ["v", "correlation_id", "ok"],
    "properties": {"v": VERSION, "correlation_id": {"type": ["string", "integer", "null"]},
                   "ok": {"type": "boolean"}, "result": {}, "error": {"$ref": "#/$defs/WireError"}},
    "$defs": {"WireError": WS_ERROR}}
WS_MATCH = {
    "title": "WsMatch", "type": "object",
    "required": ["v", "event", "subscription", "id", "seq", "distance"],
    "description": "A live-query push: a record committed after the subscription that matches.",
    "properties": {"v": VERSION, "event": {"const": "match"}, "subscription": {"type": "string"},
                   "id": {"type": "string"}, "seq": {"type": "integer"},
                   "distance": {"type": "number"}, "document": {"type": ["string", "null"]},
                   "metadata": METADATA, "uri": {"type": ["string", "null"]}},
    "$defs": DEFS}
WS_PROGRESS = {
    "title": "WsProgress", "type": "object", "required": ["v", "event", "subscription", "seq"],
    "description": "A live query that matched nothing for a while has scanned up to seq: a "
                   "client resumes after it.",
    "properties": {"v": VERSION, "event": {"const": "progress"}, "subscription": {"type": "string"},
                   "seq": {"type": "integer"}}}
WS_SUBSCRIBED = {
    "title": "WsSubscribed", "type": "object",
    "required": ["subscription", "initial", "stream", "seq"],
    "description": "The result of subscribe: resume later with (stream, the last seq seen).",
    "properties": {"subscription": {"type": "string"}, "initial": {},
                   "stream": {"type": "string"}, "seq": {"type": "integer"}}}
COLLECTION_SPEC = {
    "title": "CollectionSpec", "type": "object", "required": ["id", "name"],
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "metadata": METADATA,
                   "space": {"enum": ["cosine", "l2", "ip"]}, "dtype": {"enum": ["f32", "f16", "i8"]},
                   "dimension": {"type": ["integer", "null"]},
                   "embedding_function": {"anyOf": [{"$ref": "#/$defs/Builtin"}, {"type": "null"}]},
                   "data_loader": {"anyOf": [{"$ref": "#/$defs/Builtin"}, {"type": "null"}]},
                   "sparse": {"type": ["object", "null"], "description":
                              "A sparse vector index: key, source_key, embedding_function, bm25"},
                   "hnsw": {"type": ["object", "null"], "description":
                            "HNSW parameters a Chroma configuration set (ef_construction, "
                            "ef_search, max_neighbors, ...); Chroma's defaults for the rest"},
                   "client_embedding_function": {"type": ["object", "null"], "description":
                                                 "The embedding function a Chroma client "
                                                 "declared; it embeds client-side"}},
    "$defs": DEFS}
_RESULT = {
    "ids": {"type": "array", "items": {"type": "string"}},
    "embeddings": {"anyOf": [ARRAY, {"type": "null"}], "description": "n x dimension"},
    "documents": NULLABLE_STRINGS, "uris": NULLABLE_STRINGS,
    "metadatas": {"type": ["array", "null"], "items": METADATA},
    "data": {"type": ["array", "null"], "items": {"anyOf": [ARRAY, {"type": "null"}]}},
    "included": {"type": "array", "items": {"$ref": "#/$defs/IncludeItem"}}}
#: Present only on a sharded read answered in part (a caller's ``shard_partial_results``).
_PARTIAL = {
    "partial": {"const": True, "description": "Some shards were down: not every record was read"},
    "missing_shards": {"type": "array", "items": {"type": "integer"},
                       "description": "The shards whose records are missing"}}
GET_RESULT = {"title": "WireGetResult", "type": "object", "required": ["ids", "included"],
              "properties": _RESULT | _PARTIAL, "$defs": DEFS}
QUERY_RESULT = {
    "title": "WireQueryResult", "type": "object", "required": ["ids", "included"],
    "description": "Per query input, the hits; embeddings: one n x dimension array per query.",
    "properties": {k: ({"type": "array" if k == "ids" else ["array", "null"], "items": v}
                       if k not in ("included", "embeddings") else v) for k, v in _RESULT.items()}
    | {"distances": {"type": ["array", "null"], "items": {"type": "array",
                                                           "items": {"type": "number"}}},
       "embeddings": {"type": ["array", "null"], "items": ARRAY}} | _PARTIAL,
    "$defs": DEFS}

SCHEMAS: dict[str, dict[str, Any]] = {
    "ws-request": WS_REQUEST, "ws-reply": WS_REPLY, "ws-match": WS_MATCH, "ws-progress": WS_PROGRESS,
    "ws-subscribed": WS_SUBSCRIBED, "collection-spec": COLLECTION_SPEC,
    "get-result": GET_RESULT, "query-result": QUERY_RESULT}


def error_classes() -> list[dict[str, Any]]:
    """Every error class, parents first: code, name, retriable, parent name."""
    out = []
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.StreamerError):
            parent = next((b.__name__ for b in cls.__mro__[1:]
                           if issubclass(b, errors.StreamerError)), None)
            out.append({"name": name, "code": cls.code, "retriable": cls.retriable,
                        "parent": parent})
    order: list[dict[str, Any]] = []
    while len(order) < len(out):
        for e in out:
            placed = {o["name"] for o in order}
            if e["name"] not in placed and (e["parent"] is None or e["parent"] in placed):
                order.append(e)
    return order
