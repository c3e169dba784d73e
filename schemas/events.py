"""Wire contracts: request events, state records and replies, as versioned JSON (orjson).

Arrays cross the wire as ``{"dtype", "shape", "b64"}`` (little-endian raw bytes), so
images and vectors keep their exact values; URIs are strings. An image may instead be a
compressed array (the same object plus ``"codec": "zstd" | "delta-zstd"``, what the clients
send) or an encoded file as its producer holds it (``{"file": <base64 JPEG/PNG/WebP>}``);
both stay encoded here and are decoded where they are embedded (``consumers.loading.decode``).
Every payload carries ``"v": SCHEMA_VERSION``; a reader refuses other versions with a
``SchemaError``."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
import orjson

from schemas.errors import SchemaError
from schemas.records import (
    DeleteRequest,
    EncodedImage,
    GetRequest,
    ImageInput,
    IncludeItem,
    Modality,
    Mutation,
    Op,
    QueryRequest,
    WriteItem,
)

SCHEMA_VERSION = 1
WRITE_OPS = ("add", "update", "upsert", "delete")
READ_OPS = ("query", "get", "search", "count", "create_collection", "get_collection",
            "list_collections", "delete_collection", "modify_collection", "sync")
_DTYPES = ("uint8", "int16", "int32", "int64", "float16", "float32", "float64")
IMAGE_CODECS = ("zstd", "delta-zstd")
MAX_ARRAY_BYTES = 64 << 20


def encode_array(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    a = np.ascontiguousarray(arr)
    return {"dtype": str(a.dtype), "shape": list(a.shape),
            "b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()).decode()}


def _b64(raw: Any, what: str) -> bytes:
    if not isinstance(raw, str) or len(raw) > MAX_ARRAY_BYTES * 4 // 3 + 4:
        raise SchemaError(f"{what} payload missing or over the size limit")
    try:
        # Strict: only the alphabet, padding only at the end (what b64decode(validate=True)
        # checks with a regex first, at ~1.4x the cost per vector).
        return binascii.a2b_base64(raw, strict_mode=True)
    except ValueError as exc:
        raise SchemaError(f"{what} payload is not base64: {exc}") from exc


def _array_header(obj: Any) -> list[int]:
    if not isinstance(obj, dict) or obj.get("dtype") not in _DTYPES:
        raise SchemaError(f"Expected an array object with dtype in {_DTYPES}, got {str(obj)[:80]}")
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape) \
            or len(shape) > 4:
        raise SchemaError(f"Invalid array shape {shape}")
    return shape


def decode_array(obj: Any) -> np.ndarray[Any, Any]:
    shape = _array_header(obj)
    data = _b64(obj.get("b64"), "Array")
    dtype = np.dtype(obj["dtype"]).newbyteorder("<")
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise SchemaError(f"Array payload has {len(data)} bytes for shape {shape} {obj['dtype']}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def encode_image(image: ImageInput) -> dict[str, Any]:
    if isinstance(image, np.ndarray):
        return encode_array(image)
    b64 = base64.b64encode(image.data).decode()
    if image.codec == "file":
        return {"file": b64}
    return {"dtype": image.dtype, "shape": list(image.shape or ()), "codec": image.codec, "b64": b64}


def decode_image(obj: Any) -> ImageInput:
    """A wire image: raw arrays are decoded; compressed arrays and files stay encoded."""
    if isinstance(obj, dict) and "file" in obj:
        if set(obj) != {"file"}:
            raise SchemaError("An image file object has only the field 'file'")
        return EncodedImage(_b64(obj["file"], "Image file"))
    if isinstance(obj, dict) and "codec" in obj:
        shape = _array_header(obj)
        if obj["codec"] not in IMAGE_CODECS:
            raise SchemaError(f"Unknown image codec {str(obj['codec'])[:40]!r}; expected one of "
                              f"{', '.join(IMAGE_CODECS)}")
        return EncodedImage(_b64(obj.get("b64"), "Image"), codec=obj["codec"],
                            dtype=obj["dtype"], shape=tuple(shape))
    return decode_array(obj)


def dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps({"v": SCHEMA_VERSION, **payload})


def loads(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise SchemaError("Empty event")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaError(f"Event is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SchemaError("Event must be a JSON object")
    if type(obj.get("v")) is not int or obj["v"] != SCHEMA_VERSION:  # true and 1.0 are not 1
        raise SchemaError(f"Unsupported schema version {obj.get('v')!r}; expected {SCHEMA_VERSION}")
    return obj


# ---- write events: one per record, keyed by collection id + record id ------------------
def write_event(op: Op, collection_id: str, item: WriteItem, ts: int, index: int) -> dict[str, Any]:
    ev: dict[str, Any] = {"op": op.value, "collection": collection_id, "id": item.id,
                          "order": [ts, index]}
    if item.embedding is not None:
        ev["embedding"] = encode_array(item.embedding)
    if item.document is not None:
        ev["document"] = item.document
    if item.image is not None:
        ev["image"] = encode_image(item.image)
    if item.uri is not None:
        ev["uri"] = item.uri
    if item.metadata is not None:
        ev["metadata"] = item.metadata
    if item.embedded_from is not None:
        ev["embedded_from"] = item.embedded_from.value
    return ev


def delete_event(collection_id: str, req: DeleteRequest) -> dict[str, Any]:
    return {"op": "delete", "collection": collection_id, "ids": req.ids, "where": req.where,
            "where_document": req.where_document, "limit": req.limit}


def _opt_str(ev: dict[str, Any], key: str) -> str | None:
    value = ev.get(key)
    if value is not None and not isinstance(value, str):
        raise SchemaError(f"Field {key!r} must be a string")
    return value


def parse_write(ev: dict[str, Any]) -> tuple[Op, str, WriteItem | DeleteRequest]:
    op = ev.get("op")
    if op not in WRITE_OPS:
        raise SchemaError(f"Unknown op {op!r}; expected one of {', '.join(WRITE_OPS)}")
    collection = ev.get("collection")
    if not isinstance(collection, str):
        raise SchemaError("Field 'collection' must be a string")
    if op == "delete" and "ids" in ev:
        return Op.DELETE, collection, DeleteRequest(
            ids=ev.get("ids"), where=ev.get("where"), where_document=ev.get("where_document"),
            limit=ev.get("limit"))
    id_ = ev.get("id")
    if not isinstance(id_, str):
        raise SchemaError("Field 'id' must be a string")
    metadata = ev.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise SchemaError("Field 'metadata' must be an object")
    emb = decode_vector(ev["embedding"]) if "embedding" in ev else None
    image = decode_image(ev["image"]) if "image" in ev else None
    order = ev.get("order")
    if order is not None and not (isinstance(order, list) and len(order) == 2
                                  and all(isinstance(x, int) for x in order)):
        raise SchemaError("Field 'order' must be [clock_ns, index]")
    return Op(op), collection, WriteItem(id=id_, embedding=emb, document=_opt_str(ev, "document"),
                                         image=image, uri=_opt_str(ev, "uri"), metadata=metadata,
                                         order=None if order is None else (order[0], order[1]),
                                         embedded_from=_embedded_from(ev.get("embedded_from")))


def _embedded_from(value: Any) -> Modality | None:
    if value is None:
        return None
    if value != Modality.IMAGE.value:
        raise SchemaError(f"Field 'embedded_from' must be 'image', got {value!r}")
    return Modality.IMAGE


# ---- read requests (RPC over the queries topic) ------------------------------------
def query_event(collection_id: str, req: QueryRequest) -> dict[str, Any]:
    return {"op": "query", "collection": collection_id,
            "embeddings": None if req.embeddings is None else [encode_array(e) for e in req.embeddings],
            "texts": req.texts,
            "images": None if req.images is None else [encode_image(i) for i in req.images],
            "uris": req.uris, "ids": req.ids, "n_results": req.n_results, "where": req.where,
            "where_document": req.where_document, "include": list(req.include)}


def decode_vector(obj: Any) -> np.ndarray[Any, Any]:
    vec = decode_array(obj).astype(np.float32, copy=False).reshape(-1)  # already a fresh copy
    if not np.isfinite(vec).all():
        raise SchemaError("Embedding contains NaN or infinity")
    return vec


def _opt_list(ev: dict[str, Any], key: str) -> list[Any] | None:
    value = ev.get(key)
    if value is not None and not isinstance(value, list):
        raise SchemaError(f"Field {key!r} must be a list")
    return value


def parse_query(ev: dict[str, Any]) -> QueryRequest:
    """Decodes the arrays and checks the JSON types; Chroma's rules are the reader's job."""
    embeddings, images = _opt_list(ev, "embeddings"), _opt_list(ev, "images")
    n_results = ev.get("n_results", 10)
    if not isinstance(n_results, int) or isinstance(n_results, bool):
        raise SchemaError(f"Field 'n_results' must be an integer, got {str(n_results)[:40]}")
    include: list[IncludeItem] = list(_opt_list(ev, "include") or [])
    return QueryRequest(
        embeddings=None if embeddings is None else [decode_vector(e) for e in embeddings],
        texts=_opt_list(ev, "texts"),
        images=None if images is None else [decode_image(i) for i in images],
        uris=_opt_list(ev, "uris"), ids=_opt_list(ev, "ids"), n_results=n_results,
        where=ev.get("where"), where_document=ev.get("where_document"), include=include)


def get_event(collection_id: str, req: GetRequest) -> dict[str, Any]:
    return {"op": "get", "collection": collection_id, "ids": req.ids, "where": req.where,
            "where_document": req.where_document, "limit": req.limit, "offset": req.offset,
            "include": list(req.include)}


def parse_get(ev: dict[str, Any]) -> GetRequest:
    """Checks the JSON types; Chroma's rules are the reader's job."""
    return GetRequest(ids=_opt_list(ev, "ids"), where=ev.get("where"),
                      where_document=ev.get("where_document"), limit=ev.get("limit"),
                      offset=ev.get("offset"), include=list(_opt_list(ev, "include") or []))


# ---- state records: the compacted source of truth, keyed by collection id + record id ---
def state_record(collection_id: str, m: Mutation) -> bytes | None:
    """The value for the compacted state topic; None (a tombstone) for deletes."""
    if m.op == "delete":
        return None
    return dumps({"collection": collection_id, "id": m.id,
                  "modality": m.modality.value if m.modality else None,
                  "document": m.document, "uri": m.uri, "metadata": m.metadata,
                  "order": None if m.order is None else list(m.order),
                  "vector": None if m.vector is None else encode_array(m.vector)})


def state_key(collection_id: str, id_: str) -> bytes:
    return f"{collection_id}/{id_}".encode()


def parse_state(key: bytes, value: bytes | None) -> tuple[str, Mutation]:
    collection_id, _, id_ = key.decode().partition("/")
    if value is None:
        return collection_id, Mutation(op="delete", id=id_)
    ev = loads(value)
    return collection_id, Mutation(
        op="put", id=id_, modality=Modality(ev["modality"]) if ev.get("modality") else None,
        document=ev.get("document"), uri=ev.get("uri"), metadata=ev.get("metadata"),
        vector=None if ev.get("vector") is None else
        decode_array(ev["vector"]).astype(np.float32, copy=False),
        order=None if ev.get("order") is None else (ev["order"][0], ev["order"][1]))


# ---- replies --------------------------------------------------------------------------
def encode_result(result: dict[str, Any]) -> dict[str, Any]:
    """A get/query result with numpy embeddings made JSON-safe."""
    out = dict(result)
    emb = result.get("embeddings")
    if isinstance(emb, np.ndarray):
        out["embeddings"] = encode_array(emb)
    elif isinstance(emb, list):
        out["embeddings"] = [encode_array(e) for e in emb]
    return out


def decode_result(result: dict[str, Any]) -> dict[str, Any]:
    emb = result.get("embeddings")
    if isinstance(emb, dict):
        result["embeddings"] = decode_array(emb)
    elif isinstance(emb, list):
        result["embeddings"] = [decode_array(e) for e in emb]
    return result
