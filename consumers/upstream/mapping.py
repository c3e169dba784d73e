"""Declarative source mappings: an upstream event (object-store notification, CDC envelope,
app JSON) becomes collection writes, described in a TOML/JSON file instead of code. Pure: the
Kafka bridge that feeds it is ``streamer/kafka/sources.py``; expressions are ``consumers.upstream.expr``.

A mapping names its topic, its collection, the ``op`` (add/upsert/update/delete/skip, often
looked up from the event) and one or more ``writes`` (id, then at most one of document, uri,
image, plus metadata). A tombstone (null value) deletes every write's id, resolved from the
key. ``records`` picks the event(s) inside a message (``$.Records`` of an S3 notification,
``$.payload`` of a Debezium envelope); ``skip_if`` drops control events. A write whose
document/uri/image is absent fails the event (``missing = "error"``), is skipped, or deletes
the id (e.g. a product's image path set to NULL)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson

from consumers.loading.decode import check_limits
from consumers.upstream.expr import ABSENT, FILTERS, Context, Field, compile_field
from consumers.validation.validate import prepare_write
from schemas.errors import InvalidArgumentError, SchemaError
from schemas.records import DeleteRequest, EncodedImage, Op, WriteRequest

OPS = ("add", "upsert", "update", "delete", "skip")
Missing = Literal["error", "skip", "delete"]
MappedRequest = WriteRequest | DeleteRequest

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_VAR = re.compile(r"\$\{(\w+)\}")
_TOP_KEYS = {"name", "topic", "group", "format", "records", "skip_if", "op", "collection", "vars",
             "writes", "id", "document", "uri", "image", "metadata", "missing"}
_WRITE_KEYS = {"id", "document", "uri", "image", "metadata", "missing"}
_COLLECTION_KEYS = {"name", "create", "metadata", "embedding_function", "data_loader"}


@dataclass(frozen=True, slots=True)
class UpstreamRecord:
    """One consumed upstream Kafka record; ``value`` None is a tombstone."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class CollectionTarget:
    name: str
    create: bool = False
    metadata: dict[str, Any] | None = None
    embedding_function: dict[str, Any] | None = None
    data_loader: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WriteTarget:
    id: Field
    document: Field | None = None
    uri: Field | None = None
    image: Field | None = None
    metadata: dict[str, Field] | Field | None = None
    missing: Missing = "error"


@dataclass(frozen=True, slots=True)
class SourceMapping:
    name: str
    topic: str
    collection: CollectionTarget
    writes: tuple[WriteTarget, ...]
    op: Field
    group: str | None = None
    format: Literal["json", "jsonl"] = "json"
    records: Field | None = None
    skip_if: tuple[tuple[Field, tuple[Any, ...]], ...] = ()
    metadata: dict[str, Field] | Field | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], variables: Mapping[str, str] | None = None,
                  origin: str = "mapping") -> SourceMapping:
        """Parse and check a whole mapping; ``variables`` override its ``vars`` table."""
        try:
            return _parse(raw, variables or {})
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{origin}: {exc}") from None


def _check_keys(table: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise InvalidArgumentError(f"{where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InvalidArgumentError(f"unknown key(s) {', '.join(unknown)} in {where}; "
                                   f"expected {', '.join(sorted(allowed))}")
    return table


def _substitute(obj: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        def var(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise InvalidArgumentError(f"undefined variable ${{{m.group(1)}}}")
            return variables[m.group(1)]
        return _VAR.sub(var, obj)
    if isinstance(obj, list):
        return [_substitute(x, variables) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, variables) for k, v in obj.items()}
    return obj


def _metadata(raw: Any, where: str) -> dict[str, Field] | Field | None:
    if raw is None:
        return None
    if isinstance(raw, dict):
        return {str(k): compile_field(v, f"{where}.{k}") for k, v in raw.items()}
    return compile_field(raw, where)


def _write(raw: dict[str, Any], where: str) -> WriteTarget:
    if "id" not in raw:
        raise InvalidArgumentError(f"{where} needs an id")
    missing = raw.get("missing", "error")
    if missing not in ("error", "skip", "delete"):
        raise InvalidArgumentError(f"{where}.missing must be error, skip or delete")
    opt = {k: compile_field(raw[k], f"{where}.{k}") for k in ("document", "uri", "image") if k in raw}
    return WriteTarget(id=compile_field(raw["id"], f"{where}.id"), **opt,
                       metadata=_metadata(raw.get("metadata"), f"{where}.metadata"),
                       missing=cast(Missing, missing))


def _parse(raw: Mapping[str, Any], overrides: Mapping[str, str]) -> SourceMapping:
    top = _check_keys(dict(raw), _TOP_KEYS, "the mapping")
    variables = {str(k): str(v) for k, v in _check_keys(top.get("vars", {}), set(top.get("vars", {})),
                                                        "vars").items()}
    top = _substitute({k: v for k, v in top.items() if k != "vars"}, {**variables, **overrides})
    for key in ("name", "topic"):
        if not isinstance(top.get(key), str) or not top[key]:
            raise InvalidArgumentError(f"{key} must be a non-empty string")
    if not _NAME.fullmatch(top["name"]):
        raise InvalidArgumentError("name may use only letters, digits, '.', '_' and '-'")
    if top.get("format", "json") not in ("json", "jsonl"):
        raise InvalidArgumentError("format must be json or jsonl")
    coll = top.get("collection")
    coll = _check_keys({"name": coll} if isinstance(coll, str) else coll, _COLLECTION_KEYS, "collection")
    if not isinstance(coll.get("name"), str):
        raise InvalidArgumentError("collection.name must be a string")
    if "writes" in top:
        stray = sorted(_WRITE_KEYS - {"metadata"} & set(top))
        if stray or not isinstance(top["writes"], list) or not top["writes"]:
            raise InvalidArgumentError("give either [[writes]] tables or top-level id/document/"
                                       "uri/image, not both")
        writes = tuple(_write(_check_keys(w, _WRITE_KEYS, f"writes[{i}]"), f"writes[{i}]")
                       for i, w in enumerate(top["writes"]))
        shared = _metadata(top.get("metadata"), "metadata")
    else:
        writes = (_write({k: top[k] for k in _WRITE_KEYS if k in top}, "the mapping"),)
        shared = None
    skip_if = _check_keys(top.get("skip_if", {}), set(top.get("skip_if", {})), "skip_if")
    return SourceMapping(
        name=top["name"], topic=top["topic"], group=top.get("group"), format=top.get("format", "json"),
        collection=CollectionTarget(coll["name"], bool(coll.get("create", False)), coll.get("metadata"),
                                    coll.get("embedding_function"), coll.get("data_loader")),
        writes=writes, op=compile_field(top.get("op", "upsert"), "op"),
        records=compile_field(top["records"], "records") if "records" in top else None,
        skip_if=tuple((compile_field(k, f"skip_if.{k}"), tuple(v if isinstance(v, list) else [v]))
                      for k, v in skip_if.items()),
        metadata=shared)


# ---- mapping events -------------------------------------------------------------------
def _parse_key(key: bytes | None) -> Any:
    if key is None:
        return ABSENT
    try:
        return orjson.loads(key)
    except orjson.JSONDecodeError:
        return key.decode("utf-8", "replace")


def _documents(value: bytes, fmt: str) -> list[Any]:
    lines = [value] if fmt == "json" else [ln for ln in value.splitlines() if ln.strip()]
    out = []
    for n, line in enumerate(lines, 1):
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            where = "value" if fmt == "json" else f"line {n}"
            raise SchemaError(f"{where} is not JSON: {exc}") from None
    return out


class Mapper:
    """Maps upstream records to validated requests for one collection (Chroma's rules, so a
    bad event is rejected here, before it reaches the pipeline)."""

    def __init__(self, mapping: SourceMapping, *, has_loader: bool, has_embedding_function: bool,
                 max_image_bytes: int = 32 << 20, max_image_pixels: int = 40_000_000) -> None:
        self.mapping = mapping
        self.has_loader = has_loader
        self.has_embedding_function = has_embedding_function
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels

    def map(self, rec: UpstreamRecord) -> list[MappedRequest]:
        """The requests for one record, in order; raises a ``StreamerError`` (and maps
        nothing) if any part of it is malformed."""
        m = self.mapping
        headers = {k: v.decode("utf-8", "replace") for k, v in rec.headers}
        meta = {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                "timestamp": ABSENT if rec.timestamp is None else rec.timestamp}
        key = _parse_key(rec.key)
        if rec.value is None:  # a tombstone deletes every write's id, found through the key
            ctx = Context(ABSENT, key, headers, meta)
            return [DeleteRequest(ids=[self._id(w, ctx, i)]) for i, w in enumerate(m.writes)]
        out: list[MappedRequest] = []
        for doc in _documents(rec.value, m.format):
            ctx = Context(doc, key, headers, meta)
            if any(f.eval(ctx) in values for f, values in m.skip_if):
                continue
            elements: Any = [doc]
            if m.records is not None:
                elements = m.records.eval(ctx)
                if elements is ABSENT:
                    raise SchemaError("No records in the event (see the mapping's records)")
            for el in elements if isinstance(elements, list) else [elements]:
                ectx = Context(el, key, headers, meta)
                op = m.op.eval(ectx)
                if op not in OPS:
                    raise SchemaError(f"op is {op!r}; expected one of {', '.join(OPS)}")
                if op != "skip":
                    for i, w in enumerate(m.writes):
                        out.extend(self._one(w, i, op, ectx))
        return out

    def _id(self, w: WriteTarget, ctx: Context, i: int) -> str:
        v = w.id.eval(ctx)
        if v is ABSENT or isinstance(v, (bool, dict, list)) or str(v) == "":
            raise SchemaError(f"writes[{i}]: no usable id (got {'nothing' if v is ABSENT else repr(v)})")
        return str(v)

    def _one(self, w: WriteTarget, i: int, op: str, ctx: Context) -> list[MappedRequest]:
        id_ = self._id(w, ctx, i)
        if op == "delete":
            return [DeleteRequest(ids=[id_])]
        found = {name: f.eval(ctx) for name, f in
                 (("document", w.document), ("uri", w.uri), ("image", w.image)) if f is not None}
        found = {k: v for k, v in found.items() if v is not ABSENT}
        if len(found) > 1:
            raise SchemaError(f"Record {id_}: found {' and '.join(found)}; a record has one of "
                              "document, uri, image")
        if not found and op != "update":
            if w.missing == "skip":
                return []
            if w.missing == "delete":
                return [DeleteRequest(ids=[id_])]
            raise SchemaError(f"Record {id_}: no document, uri or image in the event")
        kwargs: dict[str, Any] = {}
        for name, v in found.items():
            if name == "image":
                kwargs["images"] = [self._image(v, id_)]
            elif not isinstance(v, str):
                raise SchemaError(f"Record {id_}: {name} must be text, got {type(v).__name__}")
            else:
                kwargs["documents" if name == "document" else "uris"] = [v]
        metadata = {**self._metadata(self.mapping.metadata, ctx), **self._metadata(w.metadata, ctx)}
        return [prepare_write(Op(op), ids=[id_], metadatas=[metadata] if metadata else None,
                              has_loader=self.has_loader,
                              has_embedding_function=self.has_embedding_function, **kwargs)]

    @staticmethod
    def _metadata(spec: dict[str, Field] | Field | None, ctx: Context) -> dict[str, Any]:
        if spec is None:
            return {}
        if isinstance(spec, Field):
            value = spec.eval(ctx)
            if value is ABSENT:
                return {}
            if not isinstance(value, dict):
                raise SchemaError(f"metadata must be an object, got {type(value).__name__}")
            return value
        return {k: v for k, f in spec.items() if (v := f.eval(ctx)) is not ABSENT}

    def _image(self, payload: Any, id_: str) -> EncodedImage:
        """An encoded image file (PNG, JPEG...) given as bytes or base64 text, checked from
        its header and passed on as it is: the writer decodes it where it embeds it."""
        data = payload if isinstance(payload, bytes) else None
        if isinstance(payload, str):
            data = FILTERS["base64"](payload)
        if data is None:
            raise SchemaError(f"Record {id_}: image must be base64 text, got {type(payload).__name__}")
        image = EncodedImage(data)
        try:
            check_limits(image, max_pixels=self.max_image_pixels, max_bytes=self.max_image_bytes,
                         what=f"Record {id_}")
        except SchemaError as exc:
            raise SchemaError(f"Record {id_}: image payload is not a readable image: {exc}") from None
        return image
