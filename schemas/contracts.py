"""JSON Schemas of every wire payload, and the AsyncAPI document that ties them to topics.
``python -m schemas.contracts`` regenerates ``schemas/generated/``; a test fails when the
committed files are stale."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from schemas.array_schema import ARRAY, IMAGE
from schemas.events import READ_OPS, SCHEMA_VERSION
from schemas.where_schema import WHERE, WHERE_DOCUMENT
from schemas.ws_contracts import SCHEMAS as WS_SCHEMAS
from schemas.ws_contracts import error_classes

GENERATED = Path(__file__).parent / "generated"

METADATA = {"type": ["object", "null"], "additionalProperties": {
    "anyOf": [{"type": ["string", "number", "boolean", "null"]},
              {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}}]}}
VERSION = {"const": SCHEMA_VERSION}
INCLUDE = {"type": "array", "items": {"enum": ["documents", "embeddings", "metadatas", "distances",
                                               "uris", "data"]}}

WRITE_RECORD = {
    "title": "WriteEvent", "type": "object", "required": ["v", "op", "collection", "id"],
    "description": "One record of an add/update/upsert/delete call. Topic key: '<collection>/<id>', "
                   "placed by the producer's own partitioner: the writer that receives it forwards "
                   "it to that key's partition under Java's murmur2, whose writer applies it in "
                   "order. A delete may name ids on several partitions, or a filter: it is applied "
                   "on each in turn and answered once, with Chroma's count.",
    "properties": {"v": VERSION, "op": {"enum": ["add", "update", "upsert", "delete"]},
                   "collection": {"type": "string"}, "id": {"type": "string"},
                   "embedding": ARRAY, "document": {"type": "string"}, "image": IMAGE,
                   "uri": {"type": "string"}, "metadata": METADATA,
                   "embedded_from": {"enum": ["image"]},
                   "order": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                             "maxItems": 2}}}
DELETE_WHERE = {
    "title": "DeleteEvent", "type": "object", "required": ["v", "op", "collection", "ids"],
    "description": "A delete by filter (or of ids on several partitions). Topic key: "
                   "'<collection>', on any one partition: the writers pass it from partition to "
                   "partition, each deleting the matching records whose keys hash there, and the "
                   "last answers with the total. With the header scope=partition it applies to "
                   "its own partition only (KafkaClient sends one such copy to every partition).",
    "properties": {"v": VERSION, "op": {"const": "delete"}, "collection": {"type": "string"},
                   "ids": {"type": ["array", "null"], "items": {"type": "string"}},
                   "where": {"anyOf": [WHERE, {"type": "null"}]},
                   "where_document": {"anyOf": [WHERE_DOCUMENT, {"type": "null"}]},
                   "limit": {"type": ["integer", "null"], "minimum": 0}}}
REQUEST = {
    "title": "ReadRequest", "type": "object", "required": ["v", "op"],
    "description": "An RPC on the queries topic; headers reply_to and correlation_id, and "
                   "optionally deadline_ms (Unix epoch milliseconds after which the caller stops "
                   "waiting: a request read after it is dropped unanswered). 'after' maps "
                   "request partitions to the caller's last written offsets.",
    "properties": {"v": VERSION, "op": {"enum": list(READ_OPS)}, "collection": {"type": "string"},
                   "name": {"type": "string"},
                   "after": {"type": "object", "additionalProperties": {"type": "integer"}},
                   "embeddings": {"type": ["array", "null"], "items": ARRAY},
                   "texts": {"type": ["array", "null"], "items": {"type": "string"}},
                   "images": {"type": ["array", "null"], "items": IMAGE},
                   "uris": {"type": ["array", "null"], "items": {"type": "string"}},
                   "ids": {"type": ["array", "null"], "items": {"type": "string"}},
                   "n_results": {"type": "integer", "minimum": 1},
                   "where": {"anyOf": [WHERE, {"type": "null"}]},
                   "where_document": {"anyOf": [WHERE_DOCUMENT, {"type": "null"}]},
                   "include": INCLUDE, "limit": {"type": ["integer", "null"]},
                   "offset": {"type": ["integer", "null"]}, "metadata": METADATA,
                   "new_name": {"type": ["string", "null"]},
                   "embedding_function": {"type": ["object", "null"]},
                   "data_loader": {"type": ["object", "null"]},
                   "sparse": {"type": ["object", "null"]},
                   "get_or_create": {"type": "boolean"},
                   "searches": {"type": "array", "minItems": 1, "items": {"type": "object"},
                                "description": "search: chromadb Search.to_dict() forms, "
                                               "string Knn queries already embedded"}}}
ERROR = {"type": "object", "required": ["code", "name", "message", "retriable"],
         "properties": {"code": {"type": "string"}, "name": {"type": "string"},
                        "message": {"type": "string"}, "retriable": {"type": "boolean"}}}
REPLY = {
    "title": "Reply", "type": "object", "required": ["v", "ok"],
    "description": "On the reply_to topic with the request's correlation_id header.",
    "properties": {"v": VERSION, "ok": {"type": "boolean"}, "result": {}, "error": ERROR}}
STATE = {
    "title": "StateRecord", "type": "object", "required": ["v", "collection", "id"],
    "description": "The current state of one record on the compacted state topic, key "
                   "'<collection>/<id>'; a tombstone deletes it. Keys '__progress__/<p>' carry "
                   "{'next': offset}: request partition p is applied up to offset.",
    "properties": {"v": VERSION, "collection": {"type": "string"}, "id": {"type": "string"},
                   "modality": {"enum": ["text", "image", "uri", "embedding", None]},
                   "document": {"type": ["string", "null"]}, "uri": {"type": ["string", "null"]},
                   "metadata": METADATA, "vector": {"anyOf": [ARRAY, {"type": "null"}]},
                   "order": {"type": ["array", "null"]}}}
COLLECTION = {
    "title": "CollectionRecord", "type": "object", "required": ["v", "spec"],
    "description": "A collection's spec on the compacted collections topic, key = name.",
    "properties": {"v": VERSION, "spec": {"type": "object", "required": ["id", "name"]}}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "write-event": WRITE_RECORD, "delete-event": DELETE_WHERE, "read-request": REQUEST,
    "reply": REPLY, "state-record": STATE, "collection-record": COLLECTION}


def asyncapi() -> dict[str, Any]:
    def msg(name: str) -> dict[str, Any]:
        return {"payload": {"$ref": f"#/components/schemas/{name}"}}
    channels = {
        "requests": ("{prefix}.requests", ["write-event", "delete-event"]),
        "queries": ("{prefix}.queries", ["read-request"]),
        "replies": ("{prefix}.replies", ["reply"]),
        "state": ("{prefix}.state", ["state-record"]),
        "collections": ("{prefix}.collections", ["collection-record"]),
        "dlq": ("{prefix}.dlq", ["write-event"]),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "streamer", "version": str(SCHEMA_VERSION),
                 "description": "Chroma's multimodal collections as events on Kafka."},
        "channels": {k: {"address": addr, "messages": {m: msg(m) for m in msgs}}
                     for k, (addr, msgs) in channels.items()},
        "components": {"schemas": SCHEMAS},
    }


def render() -> dict[str, bytes]:
    opt = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    files = {f"{name}.schema.json": orjson.dumps(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}, option=opt) + b"\n"
        for name, schema in SCHEMAS.items()}
    files["asyncapi.json"] = orjson.dumps(asyncapi(), option=opt) + b"\n"
    for name, schema in WS_SCHEMAS.items():
        files[f"{name}.schema.json"] = orjson.dumps(
            {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}, option=opt) + b"\n"
    files["errors.json"] = orjson.dumps(error_classes(), option=opt) + b"\n"
    return files


def main() -> int:
    GENERATED.mkdir(exist_ok=True)
    for name, data in render().items():
        (GENERATED / name).write_bytes(data)
    print(f"wrote {len(render())} files to {GENERATED}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
