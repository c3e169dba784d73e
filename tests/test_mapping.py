"""Source mappings without Kafka: the expression language, mapping-file checks, and the
shipped mappings (compose/sources/) applied to the sample events of tests/data/sources/."""

from __future__ import annotations

import base64
import io
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from consumers.loading.decode import to_pixels
from consumers.upstream.expr import ABSENT, Context, compile_field, parse_expr
from consumers.upstream.mapping import Mapper, SourceMapping, UpstreamRecord
from schemas.errors import InvalidArgumentError, LimitExceededError, SchemaError
from schemas.records import DeleteRequest, EncodedImage, Op, WriteRequest
from streamer.kafka.sources import load_mapping

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "sources"


def shipped(name: str, **variables: str) -> Mapper:
    raw = tomllib.loads((ROOT / "compose" / "sources" / f"{name}.toml").read_text())
    return Mapper(SourceMapping.from_dict(raw, variables), has_loader=True,
                  has_embedding_function=True)


def summary(requests: list[WriteRequest | DeleteRequest]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for r in requests:
        if isinstance(r, DeleteRequest):
            out.append(("delete", *(r.ids or [])))
        else:
            it = r.items[0]
            out.append((r.op.value, it.id, it.document, it.uri, it.metadata))
    return out


CTX = Context({"a": {"b": [1, {"c d": "x"}], "n": None}, "key": "in-value"},
              {"payload": {"id": 42}}, {"op": "delete", "content-type": "image/png"},
              {"topic": "t1", "partition": 2, "offset": 17, "timestamp": 5})


@pytest.mark.parametrize(("expr", "value"), [
    ("$.a.b[0]", 1),
    ("$.a.b[-1]['c d']", "x"),
    ('$.a.b[1]["c d"]', "x"),
    ("$.key", "in-value"),  # the value's field, not the record key
    ("$key.payload.id", 42),
    ("$.a.n ?? $.missing ?? $key.payload.id", 42),  # null counts as absent
    ("$.missing ?? 'fallback'", "fallback"),
    ("$headers.content-type", "image/png"),
    ("$topic", "t1"),
    ("$offset | str", "17"),
    ("$key.payload.id | str | lower", "42"),
    ("$.a.b[5]", ABSENT),
    ("$.a.b.c", ABSENT),
    ("$.a | json", '{"b":[1,{"c d":"x"}],"n":null}'),
])
def test_expressions_resolve_against_value_key_headers_and_position(expr: str, value: Any) -> None:
    assert parse_expr(expr).eval(CTX) == value


def test_filters_templates_and_lookup_tables() -> None:
    ctx = Context({"k": "my+photo%281%29.png", "n": "12", "b64": base64.b64encode(b"hi").decode()},
                  ABSENT, {}, {})
    assert parse_expr("$.k | urldecode").eval(ctx) == "my photo(1).png"
    assert parse_expr("$.n | int").eval(ctx) == 12
    assert parse_expr("$.b64 | base64").eval(ctx) == b"hi"
    with pytest.raises(SchemaError, match="cannot convert"):
        parse_expr("$.k | float").eval(ctx)
    assert compile_field("pre/{$.n}/{$.k | urldecode}", "x").eval(ctx) == "pre/12/my photo(1).png"
    assert compile_field("pre/{$.nope}", "x").eval(ctx) is ABSENT  # absent, not "pre/"
    assert compile_field(["$.nope", "{$.n}-b"], "x").eval(ctx) == "12-b"
    table = compile_field({"value": "$.v", "map": {"exact": 1, "Obj*": 2, "*": 3}, "default": 0}, "x")
    assert [table.eval(Context({"v": v}, ABSENT, {}, {})) for v in ("exact", "ObjX", "z")] == [1, 2, 3]
    assert table.eval(Context({}, ABSENT, {}, {})) == 0
    strict = compile_field({"value": "$.v", "map": {"a": 1}}, "x")
    with pytest.raises(SchemaError, match="No mapping for 'b'"):
        strict.eval(Context({"v": "b"}, ABSENT, {}, {}))


@pytest.mark.parametrize(("expr", "message"), [
    ("$.a ??", "Incomplete"),
    ("$foo.x", "roots are"),
    ("$.a | nope", "Unknown filter"),
    ("$.a $.b", "Bad expression"),
    ("$.a | int ?? $.b", "Bad expression"),
])
def test_bad_expressions_are_rejected_at_load(expr: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_expr(expr)


BASE = {"name": "m", "topic": "t", "collection": "c", "id": "$.id", "document": "$.text"}


@pytest.mark.parametrize(("change", "message"), [
    ({"idd": "$.id"}, "unknown key"),
    ({"topic": "${nope}"}, "undefined variable"),
    ({"writes": [{"id": "$.id"}]}, "not both"),
    ({"missing": "sometimes"}, "missing must be"),
    ({"format": "csv"}, "format must be"),
    ({"name": "a b"}, "name may use"),
    ({"collection": {"name": "c", "colour": "red"}}, "unknown key"),
    ({"op": {"map": {"c": "upsert"}}}, "use keys value, map, default"),
])
def test_mapping_files_are_checked_with_the_location_of_the_mistake(change: dict[str, Any],
                                                                    message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        SourceMapping.from_dict({**BASE, **change}, origin="file.toml")
    assert str(info.value).startswith("file.toml: ")


def test_vars_are_substituted_and_can_be_overridden(tmp_path: Path) -> None:
    raw = {**BASE, "topic": "${topic}", "vars": {"topic": "default.topic"}}
    assert SourceMapping.from_dict(raw).topic == "default.topic"
    assert SourceMapping.from_dict(raw, {"topic": "other"}).topic == "other"
    (tmp_path / "m.json").write_bytes(orjson.dumps(raw))
    assert load_mapping(tmp_path / "m.json", {"topic": "x"}).topic == "x"
    (tmp_path / "m.yaml").write_text("name: m")
    with pytest.raises(InvalidArgumentError, match=r"\.toml or \.json"):
        load_mapping(tmp_path / "m.yaml")
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(InvalidArgumentError, match=r"bad\.toml"):
        load_mapping(tmp_path / "bad.toml")


def test_every_shipped_mapping_loads_from_its_file() -> None:
    names = {load_mapping(f).name for f in (ROOT / "compose" / "sources").glob("*.toml")}
    assert names == {"s3-images", "s3-images-mount", "products-cdc", "app-documents"}


def test_s3_notifications_map_to_s3_uris_without_a_mount() -> None:
    mapper = shipped("s3-object-created")
    lines = (DATA / "s3-events.jsonl").read_bytes().splitlines()
    out = [summary(mapper.map(UpstreamRecord(None, line))) for line in lines]
    assert out[1] == [("upsert", "photos/cats/tabby cat.png", None, "s3://photos/cats/tabby cat.png",
                       {"bucket": "photos", "key": "cats/tabby cat.png", "size": 2186,
                        "etag": "d41d8cd98f00b204e9800998ecf8427e",
                        "event_time": "2026-11-20T10:00:01.204Z"})]
    assert out[3][0][3] == "s3://photos/shapes/blue square (1).png"
    assert out[5] == [("delete", "photos/cats/tabby cat.png")]


def test_s3_notifications_map_to_uri_upserts_and_deletes() -> None:
    mapper = shipped("s3-object-created-mount", root="/mnt/s3")
    lines = (DATA / "s3-events.jsonl").read_bytes().splitlines()
    out = [summary(mapper.map(UpstreamRecord(None, line))) for line in lines]
    assert out[0] == []  # s3:TestEvent
    assert out[1] == [("upsert", "photos/cats/tabby cat.png", None, "/mnt/s3/photos/cats/tabby cat.png",
                       {"bucket": "photos", "key": "cats/tabby cat.png", "size": 2186,
                        "etag": "d41d8cd98f00b204e9800998ecf8427e",
                        "event_time": "2026-11-20T10:00:01.204Z"})]
    assert out[3][0][1:4] == ("photos/shapes/blue square (1).png", None,
                              "/mnt/s3/photos/shapes/blue square (1).png")
    assert out[4][0][1] == "photos/dogs/rex.png" and out[4][0][4]["content_type"] == "image/png"  # MinIO
    assert out[5] == [("delete", "photos/cats/tabby cat.png")]
    # The URI is built as written; confining it is the loader's job (its roots).
    assert out[6][0][3] == "/mnt/s3/photos/../../secrets/key.png"
    other = orjson.loads(lines[1])
    other["Records"][0]["eventName"] = "ObjectRestore:Completed"
    assert mapper.map(UpstreamRecord(None, orjson.dumps(other))) == []
    with pytest.raises(SchemaError, match="No records"):
        mapper.map(UpstreamRecord(None, b'{"hello": "world"}'))


def test_debezium_envelopes_map_rows_to_two_records_and_deletes_to_both() -> None:
    mapper = shipped("debezium-products", image_root="/img")
    events = [orjson.loads(line) for line in (DATA / "debezium-products.jsonl").read_bytes().splitlines()]

    def run(ev: dict[str, Any]) -> list[tuple[Any, ...]]:
        key = None if ev["key"] is None else orjson.dumps(ev["key"])
        value = None if ev["value"] is None else orjson.dumps(ev["value"])
        return summary(mapper.map(UpstreamRecord(key, value)))

    snapshot = run(events[0])  # with the JSON converter's schema envelope
    shared = {"product_id": 101, "name": "scooter", "weight": 3.14, "source_lsn": 24023128}
    assert snapshot == [
        ("upsert", "product-101-description", "Small 2-wheel scooter", None,
         {**shared, "kind": "description"}),
        ("upsert", "product-101-image", None, "/img/101.png",
         {**shared, "kind": "image", "image_path": "101.png"})]
    assert [r[:2] for r in run(events[2])] == [("upsert", "product-103-description"),
                                               ("upsert", "product-103-image")]
    assert run(events[4]) == [("delete", "product-102-description"), ("delete", "product-102-image")]
    assert run(events[5]) == [("delete", "product-102-description"), ("delete", "product-102-image")]
    with pytest.raises(SchemaError, match="No mapping for 't'"):
        run(events[6])
    image_gone = run(events[7])
    assert image_gone[0][:3] == ("upsert", "product-103-description",
                                 "12-pack of drill bits with sizes ranging from #40 to #3")
    assert image_gone[1] == ("delete", "product-103-image")


def test_json_lines_map_lines_headers_tombstones_and_image_payloads() -> None:
    mapper = shipped("jsonl-documents", root="/files")
    lines = (DATA / "app-documents.jsonl").read_bytes().splitlines()
    two = mapper.map(UpstreamRecord(None, lines[0] + b"\n\n" + lines[1]))
    assert [s[:3] for s in summary(two)] == [
        ("upsert", "note-1", "Quarterly report: revenue grew 12% on new subscriptions"),
        ("upsert", "note-2", "The team offsite moved to Friday, same place")]
    (logo,) = mapper.map(UpstreamRecord(b"logo", lines[2]))
    assert isinstance(logo, WriteRequest)
    png = base64.b64decode(orjson.loads(lines[2])["image_base64"])
    assert logo.items[0].image == EncodedImage(png)  # passed on encoded, decoded by the writer
    assert np.array_equal(to_pixels(logo.items[0].image),
                          np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    assert summary(mapper.map(UpstreamRecord(None, lines[3]))) == [
        ("upsert", "diagram", None, "/files/diagrams/flow.png", {"kind": "diagram"})]
    assert summary(mapper.map(UpstreamRecord(None, lines[4])))[0][0] == "add"
    assert summary(mapper.map(UpstreamRecord(None, b'{"id": "n"}', [("op", b"delete")]))) == \
        [("delete", "n")]
    assert summary(mapper.map(UpstreamRecord(b"note-2", None))) == [("delete", "note-2")]
    assert summary(mapper.map(UpstreamRecord(b"k", b'{"text": "t"}')))[0][1] == "k"  # id from the key
    update = mapper.map(UpstreamRecord(None, b'{"id": "n", "op": "update", "metadata": {"a": 1}}'))
    assert isinstance(update[0], WriteRequest) and update[0].op is Op.UPDATE  # metadata only


@pytest.mark.parametrize(("value", "error", "message"), [
    (b'{"id": "x", "text": ', SchemaError, "line 1 is not JSON"),
    (b'{"text": "no id"}', SchemaError, "no usable id"),
    (b'{"id": "x"}', SchemaError, "no document, uri or image"),
    (b'{"id": "x", "text": "t", "path": "p.png"}', SchemaError, "document and uri"),
    (b'{"id": "x", "text": 5}', SchemaError, "must be text"),
    (b'{"id": "x", "text": "t", "metadata": {"n": {"a": 1}}}', InvalidArgumentError, "metadata"),
    (b'{"id": "x", "text": "t", "op": "merge"}', SchemaError, "No mapping for 'merge'"),
    (b'{"id": "x", "image_base64": "bm90IGFuIGltYWdl"}', SchemaError, "not a readable image"),
    (b'{"id": "x", "image_base64": "***"}', SchemaError, "not base64"),
])
def test_malformed_events_raise_typed_errors(value: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        shipped("jsonl-documents").map(UpstreamRecord(None, value))


def test_one_bad_line_rejects_the_whole_message() -> None:
    with pytest.raises(SchemaError, match="line 2"):
        shipped("jsonl-documents").map(UpstreamRecord(None, b'{"id": "a", "text": "t"}\n{oops'))


def test_image_payload_limits_and_collection_capabilities() -> None:
    raw = tomllib.loads((ROOT / "compose/sources/jsonl-documents.toml").read_text())
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buf, format="PNG")
    event = orjson.dumps({"id": "x", "image_base64": base64.b64encode(buf.getvalue()).decode()})
    small = Mapper(SourceMapping.from_dict(raw), has_loader=True, has_embedding_function=True,
                   max_image_pixels=100)
    with pytest.raises(LimitExceededError, match="pixels"):
        small.map(UpstreamRecord(None, event))
    no_loader = Mapper(SourceMapping.from_dict(raw), has_loader=False, has_embedding_function=True)
    with pytest.raises(InvalidArgumentError, match="data loader"):
        no_loader.map(UpstreamRecord(None, b'{"id": "x", "path": "a.png"}'))
