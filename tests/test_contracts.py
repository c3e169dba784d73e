"""Wire contracts: generated schemas are current, and real events validate against them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from referencing import Registry, Resource

from schemas import contracts
from schemas.errors import DimensionMismatchError, SchemaError, error_to_wire
from schemas.events import (
    decode_array,
    delete_event,
    dumps,
    encode_array,
    get_event,
    loads,
    parse_write,
    query_event,
    state_record,
    write_event,
)
from schemas.records import DeleteRequest, GetRequest, Modality, Mutation, Op, QueryRequest, WriteItem
from schemas.where_schema import WHERE, WHERE_DOCUMENT

ROOT = Path(__file__).resolve().parents[1]


def test_committed_schemas_are_current() -> None:
    for name, data in contracts.render().items():
        committed = (contracts.GENERATED / name).read_bytes()
        assert committed == data, f"{name} is stale: run python -m schemas.contracts"


def _validate(schema_name: str, payload: bytes) -> None:
    registry: Registry[object] = Registry().with_resources(
        [("where", Resource.opaque(WHERE)), ("where_document", Resource.opaque(WHERE_DOCUMENT))])
    jsonschema.Draft202012Validator(contracts.SCHEMAS[schema_name], registry=registry).validate(
        orjson.loads(payload))


def test_real_events_validate_against_their_schemas() -> None:
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    item = WriteItem(id="a", embedding=np.ones(3, np.float32), document="d", metadata={"k": [1, 2]})
    _validate("write-event", dumps(write_event(Op.UPSERT, "c", item, 123, 0)))
    _validate("write-event", dumps(write_event(Op.ADD, "c", WriteItem(id="b", image=img), 1, 1)))
    _validate("delete-event", dumps(delete_event("c", DeleteRequest(where={"$and": [{"a": 1}, {"b": {"$in": [1, 2]}}]}))))
    _validate("read-request", dumps(query_event("c", QueryRequest(texts=["x"], where={"a": {"$gte": 2}},
                                                                  where_document={"$contains": "x"}))))
    _validate("read-request", dumps(get_event("c", GetRequest(ids=["a"], include=["uris"]))))
    _validate("reply", dumps({"ok": False, "error": error_to_wire(DimensionMismatchError("m"))}))
    m = Mutation(op="put", id="a", modality=Modality.TEXT, document="d", vector=np.ones(3, np.float32))
    value = state_record("c", m)
    assert value is not None
    _validate("state-record", value)
    with pytest.raises(jsonschema.ValidationError):
        _validate("write-event", orjson.dumps({"v": 1, "op": "explode", "collection": "c", "id": "a"}))


@pytest.mark.parametrize("arr", [np.arange(12, dtype=np.uint8).reshape(2, 2, 3),
                                 np.linspace(-1, 1, 7, dtype=np.float32),
                                 np.array([[1.5, -2.25]], dtype=np.float64)])
def test_arrays_round_trip_exactly(arr: np.ndarray) -> None:
    back = decode_array(orjson.loads(orjson.dumps(encode_array(arr))))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"v": 2, "op": "add"}', b"\xff\xfe", b'{"v": 1}'])
def test_malformed_events_raise_schema_error(raw: bytes) -> None:
    with pytest.raises(SchemaError):
        parse_write(loads(raw))


def test_array_size_mismatch_is_rejected() -> None:
    bad = {"dtype": "float32", "shape": [4], "b64": "AACAPw=="}
    with pytest.raises(SchemaError, match="bytes for shape"):
        decode_array(bad)


@pytest.mark.skipif(shutil.which("docker") is None
                    or subprocess.run(["docker", "compose", "version"], capture_output=True,
                                      check=False).returncode != 0,
                    reason="no docker compose client on this machine")
def test_production_compose_file_is_valid() -> None:
    out = subprocess.run(["docker", "compose", "-f", str(ROOT / "compose/docker-compose.yml"),
                          "config", "--quiet"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
