"""Every invalid call raises Chroma's error, with Chroma's message, and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import streamer
from streamer.errors import DimensionMismatchError, DuplicateIDError, InvalidArgumentError
from tests.helpers import HashEmbedding


@pytest.fixture
def col(client: streamer.Client, ef: HashEmbedding) -> Any:
    c = client.create_collection("valid", embedding_function=ef)
    c.add(ids=["keep"], documents=["kept"], metadatas=[{"a": 1}])
    return c


IMG = np.zeros((4, 4, 3), dtype=np.uint8)
CASES: list[tuple[str, Callable[[Any], Any], type[Exception], str]] = [
    ("no inputs", lambda c: c.add(ids=["x"]), ValueError,
     "Exactly one of documents, images, uris must be provided in add."),
    ("empty ids", lambda c: c.add(ids=[], documents=[]), ValueError,
     "Non-empty lists are required for ['ids', 'documents'] in add."),
    ("empty embeddings", lambda c: c.add(ids=[], embeddings=[]), ValueError,
     "Expected Embeddings to be non-empty list or numpy array, got [] in add."),
    ("unequal lengths", lambda c: c.add(ids=["x", "y"], documents=["d"]), ValueError,
     "Unequal lengths for fields: ids: 2, documents: 1 in add."),
    ("two modalities", lambda c: c.add(ids=["x"], documents=["d"], images=[IMG]), ValueError,
     "Exactly one of documents, images, uris must be provided in add."),
    ("two modalities upsert", lambda c: c.upsert(ids=["x"], documents=["d"], uris=["u"]), ValueError,
     "Exactly one of documents, images, uris must be provided in upsert."),
    ("embeddings plus image", lambda c: c.add(ids=["x"], embeddings=[[1.0] * 16], images=[IMG]),
     ValueError, "Attempting to embed a record that already has embeddings. in add."),
    ("query embeddings plus text", lambda c: c.query(query_embeddings=[[1.0] * 16], query_texts=["q"]),
     ValueError, "Attempting to embed a record that already has embeddings. in query."),
    ("duplicate ids", lambda c: c.add(ids=["x", "x"], documents=["a", "b"]), DuplicateIDError,
     "Expected IDs to be unique, found duplicates of: x in add."),
    ("uris without loader", lambda c: c.add(ids=["x"], uris=["a.png"]), ValueError,
     "You must set a data loader on the collection if loading from URIs. in add."),
    ("include data without loader", lambda c: c.get(include=["data"]), ValueError,
     "You must set a data loader on the collection if loading from URIs. in get."),
    ("query uris without loader", lambda c: c.query(query_uris=["a.png"]), ValueError,
     "You must set a data loader on the collection if loading from URIs. in query."),
    ("image not an array", lambda c: c.add(ids=["x"], images=["notarray"]), ValueError,
     "Expected image to be a numpy array, got notarray in add."),
    ("n_results zero", lambda c: c.query(query_texts=["q"], n_results=0), TypeError,
     "Number of requested results 0, cannot be negative, or zero. in query."),
    ("n_results not int", lambda c: c.query(query_texts=["q"], n_results="a"), ValueError,
     "Expected requested number of results to be a int, got a in query."),
    ("unknown include", lambda c: c.get(include=["foo"]), ValueError,
     "Expected include item to be one of documents, embeddings, metadatas, distances, uris, data, got foo in get."),
    ("distances in get", lambda c: c.get(include=["distances"]), ValueError,
     "Include item cannot be one of distances, got distances in get."),
    ("where two keys", lambda c: c.get(where={"a": 1, "b": 2}), ValueError,
     "Expected where to have exactly one operator, got {'a': 1, 'b': 2} in get."),
    ("where bad operator", lambda c: c.query(query_texts=["q"], where={"a": {"$foo": 1}}), ValueError,
     "Expected where operator to be one of $gt, $gte, $lt, $lte, $ne, $eq, $in, $nin, $contains, $not_contains, got $foo in query."),
    ("where $gt string", lambda c: c.get(where={"a": {"$gt": "x"}}), ValueError,
     "Expected operand value to be an int or a float for operator $gt, got x in get."),
    ("where $and one", lambda c: c.get(where={"$and": [{"a": 1}]}), ValueError,
     "Expected where value for $and or $or to be a list with at least two where expressions, got [{'a': 1}] in get."),
    ("where_document bad op", lambda c: c.get(where_document={"$foo": "x"}), ValueError,
     "Expected where document operator to be one of $contains, $not_contains, $regex, $not_regex, $and, $or, got $foo in get."),
    ("delete nothing", lambda c: c.delete(), ValueError,
     "At least one of ids, where, or where_document must be provided in delete."),
    ("bad metadata", lambda c: c.add(ids=["x"], documents=["d"], metadatas=[{"a": {"b": 1}}]), ValueError,
     "Expected metadata value to be a str, int, float, bool, SparseVector, list, or None, got {'b': 1} which is a dict in add."),
    ("id not str", lambda c: c.add(ids=[1], documents=["d"]), ValueError,
     "Expected ID to be a str, got 1 in add."),
    ("wrong dimension", lambda c: c.add(ids=["x"], embeddings=[[1.0, 2.0]]), DimensionMismatchError,
     "Collection expecting embedding with dimension of 16, got 2"),
]


@pytest.mark.parametrize(("case", "call", "exc_type", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_chroma_error_and_changes_nothing(
        col: Any, case: str, call: Callable[[Any], Any], exc_type: type[Exception], message: str) -> None:
    before = col.get(include=["documents", "metadatas", "embeddings"])
    with pytest.raises(exc_type) as info:
        call(col)
    assert str(info.value) == message
    after = col.get(include=["documents", "metadatas", "embeddings"])
    assert after["ids"] == before["ids"] == ["keep"]
    assert after["documents"] == before["documents"]
    assert after["metadatas"] == before["metadatas"]
    np.testing.assert_array_equal(after["embeddings"], before["embeddings"])


def test_errors_are_typed_with_codes() -> None:
    from streamer.errors import StreamerError, error_from_wire, error_to_wire

    err = DuplicateIDError("dup in add.")
    wire = error_to_wire(err)
    assert wire == {"code": "duplicate_id", "name": "DuplicateIDError", "message": "dup in add.",
                    "retriable": False}
    back = error_from_wire(wire)
    assert type(back) is DuplicateIDError and isinstance(back, ValueError)
    assert isinstance(back, InvalidArgumentError) and isinstance(back, StreamerError)
    assert str(back) == "dup in add."
    unknown = error_from_wire({"code": "no-such-code", "message": "m"})
    assert unknown.code == "internal" and not unknown.retriable
