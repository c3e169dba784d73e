"""Chroma's multimodal collection behaviours, re-derived with brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import streamer
from streamer.data_loaders import ImageLoader
from streamer.errors import NotFoundError, UniqueConstraintError
from tests.helpers import HashEmbedding, cosine_topk, random_image, write_png


def test_mixed_documents_and_images_query_is_exact(client: streamer.Client, ef: HashEmbedding) -> None:
    col = client.create_collection("mixed", embedding_function=ef)
    docs = [f"document number {i}" for i in range(30)]
    images = [random_image(i) for i in range(30)]
    col.add(ids=[f"d{i}" for i in range(30)], documents=docs,
            metadatas=[{"kind": "text", "i": i} for i in range(30)])
    col.add(ids=[f"i{i}" for i in range(30)], images=images)
    assert col.count() == 60
    ids = [f"d{i}" for i in range(30)] + [f"i{i}" for i in range(30)]
    vectors = np.stack([ef.vector(x) for x in docs + images])
    for query in ["document number 3", images[7], "something else"]:
        kwargs = {"query_texts": [query]} if isinstance(query, str) else {"query_images": [query]}
        res = col.query(n_results=5, **kwargs)
        want_ids, want_d = cosine_topk(ef.vector(query), ids, vectors, 5)
        assert res["ids"] == [want_ids]
        np.testing.assert_allclose(res["distances"][0], want_d, atol=1e-5)
        assert set(res["included"]) == {"metadatas", "documents", "distances"}
    res = col.query(query_texts=["document number 3"], n_results=1)
    assert res["documents"] == [["document number 3"]]
    assert res["metadatas"] == [[{"kind": "text", "i": 3}]]
    img_hit = col.query(query_images=[images[7]], n_results=1, include=["documents", "uris"])
    assert img_hit["ids"] == [["i7"]] and img_hit["documents"] == [[None]]


def test_n_results_larger_than_collection_returns_what_exists(client: streamer.Client, ef: HashEmbedding) -> None:
    col = client.create_collection("small", embedding_function=ef)
    col.add(ids=["a", "b"], documents=["x", "y"])
    res = col.query(query_texts=["x", "y"], n_results=10)
    assert [sorted(r) for r in res["ids"]] == [["a", "b"], ["a", "b"]]
    assert res["ids"][0][0] == "a" and res["ids"][1][0] == "b"


def test_where_filters_restrict_query_and_get(client: streamer.Client, ef: HashEmbedding) -> None:
    col = client.create_collection("filters", embedding_function=ef)
    col.add(ids=[str(i) for i in range(20)], documents=[f"doc {i} {'even' if i % 2 == 0 else 'odd'}" for i in range(20)],
            metadatas=[{"i": i, "tags": ["a", "b"] if i < 5 else ["c"], "flag": i % 3 == 0} for i in range(20)])
    assert col.get(where={"i": {"$gte": 15}})["ids"] == ["15", "16", "17", "18", "19"]
    assert col.get(where={"$and": [{"i": {"$gt": 2}}, {"i": {"$lt": 5}}]})["ids"] == ["3", "4"]
    assert col.get(where={"$or": [{"i": 1}, {"i": {"$in": [7, 8]}}]})["ids"] == ["1", "7", "8"]
    assert col.get(where={"i": {"$nin": list(range(1, 20))}})["ids"] == ["0"]
    assert col.get(where={"tags": {"$contains": "a"}})["ids"] == ["0", "1", "2", "3", "4"]
    assert len(col.get(where={"tags": {"$not_contains": "a"}})["ids"]) == 15
    assert col.get(where={"flag": True, })["ids"] == [str(i) for i in range(0, 20, 3)]
    assert col.get(where={"i": {"$ne": 0}}, limit=2, offset=1)["ids"] == ["2", "3"]
    assert col.get(where_document={"$contains": "doc 1 "})["ids"] == ["1"]
    assert len(col.get(where_document={"$not_contains": "even"})["ids"]) == 10
    assert col.get(where_document={"$regex": "^doc 1[0-2] "})["ids"] == ["10", "11", "12"]
    assert len(col.get(where_document={"$or": [{"$contains": "doc 1 "}, {"$contains": "doc 2 "}]})["ids"]) == 2
    res = col.query(query_texts=["doc 4 even"], n_results=3, where={"i": {"$lt": 10}},
                    where_document={"$contains": "even"})
    assert all(int(i) < 10 and int(i) % 2 == 0 for i in res["ids"][0])
    assert res["ids"][0][0] == "4"
    res = col.query(query_texts=["doc 4 even"], n_results=3, ids=["4", "5"])
    assert res["ids"] == [["4", "5"]] or res["ids"] == [["5", "4"]]


def test_include_data_loads_through_the_loader(client: streamer.Client, ef: HashEmbedding, tmp_path: Path) -> None:
    images = {f"u{i}": random_image(100 + i) for i in range(4)}
    uris = {k: write_png(tmp_path / f"{k}.png", v) for k, v in images.items()}
    col = client.create_collection("uris", embedding_function=ef, data_loader=ImageLoader(roots=[tmp_path]))
    col.add(ids=list(uris), uris=list(uris.values()))
    col.add(ids=["t"], documents=["a text"])
    got = col.get(ids=["u2", "t"], include=["data", "uris"])
    assert got["uris"] == [uris["u2"], None]
    np.testing.assert_array_equal(got["data"][0], images["u2"])
    assert got["data"][1] is None
    # The stored vector is the embedding of the loaded pixels, not of the URI string.
    res = col.query(query_images=[images["u1"]], n_results=1, include=["data", "distances"])
    assert res["ids"] == [["u1"]] and res["uris"] == [[uris["u1"]]]
    np.testing.assert_array_equal(res["data"][0][0], images["u1"])
    assert res["distances"][0][0] == pytest.approx(0.0, abs=1e-5)
    res = col.query(query_uris=[uris["u3"]], n_results=1)
    assert res["ids"] == [["u3"]]


def test_modality_overwrite_in_all_directions(client: streamer.Client, ef: HashEmbedding, tmp_path: Path) -> None:
    img, img2 = random_image(1), random_image(2)
    uri = write_png(tmp_path / "p.png", img2)
    col = client.create_collection("modality", embedding_function=ef, data_loader=ImageLoader())
    col.add(ids=["r"], documents=["some text"], metadatas=[{"m": 1}])

    col.update(ids=["r"], images=[img])  # text -> image drops the document
    got = col.get(ids=["r"], include=["documents", "uris", "embeddings", "metadatas"])
    assert got["documents"] == [None] and got["uris"] == [None] and got["metadatas"] == [{"m": 1}]
    np.testing.assert_allclose(got["embeddings"][0], ef.vector(img), atol=1e-6)

    col.update(ids=["r"], uris=[uri])  # image -> uri re-embeds through the loader
    got = col.get(ids=["r"], include=["documents", "uris", "embeddings"])
    assert got["documents"] == [None] and got["uris"] == [uri]
    np.testing.assert_allclose(got["embeddings"][0], ef.vector(img2), atol=1e-6)

    col.upsert(ids=["r"], documents=["new text"])  # uri -> text drops the uri
    got = col.get(ids=["r"], include=["documents", "uris", "embeddings"])
    assert got["documents"] == ["new text"] and got["uris"] == [None]
    np.testing.assert_allclose(got["embeddings"][0], ef.vector("new text"), atol=1e-6)

    col.upsert(ids=["r"], uris=[uri])  # upsert with uris goes through the loader (Chroma #1872)
    got = col.get(ids=["r"], include=["documents", "uris", "embeddings"])
    assert got["documents"] == [None] and got["uris"] == [uri]
    np.testing.assert_allclose(got["embeddings"][0], ef.vector(img2), atol=1e-6)

    col.upsert(ids=["r"], images=[img])  # uri -> image drops the uri
    got = col.get(ids=["r"], include=["documents", "uris"])
    assert got["documents"] == [None] and got["uris"] == [None]


def test_chroma_add_update_rules(client: streamer.Client, ef: HashEmbedding) -> None:
    col = client.create_collection("rules", embedding_function=ef)
    col.add(ids=["a"], documents=["first"], metadatas=[{"x": 1, "y": 2}])
    col.add(ids=["a"], documents=["second"])  # adding an existing id is ignored
    col.update(ids=["missing"], documents=["nope"])  # updating a missing id is ignored
    col.update(ids=["a"], metadatas=[{"y": None, "z": 3}])  # merge; None deletes the key
    got = col.get()
    assert got["ids"] == ["a"] and got["documents"] == ["first"]
    assert got["metadatas"] == [{"x": 1, "z": 3}]
    col.upsert(ids=["a", "b"], documents=["A", "B"], metadatas=[{"w": 0}, {"w": 1}])
    got = col.get(include=["documents", "metadatas"])
    assert got["documents"] == ["A", "B"]
    assert got["metadatas"] == [{"x": 1, "z": 3, "w": 0}, {"w": 1}]
    col.delete(ids=["a", "nope"])
    assert col.get()["ids"] == ["b"]
    col.delete(where={"w": 1})
    assert col.count() == 0


def test_explicit_embeddings_and_peek(client: streamer.Client) -> None:
    col = client.create_collection("vectors", embedding_function=None)
    vecs = np.eye(4, dtype=np.float32)
    col.add(ids=list("abcd"), embeddings=vecs, documents=["w", "x", "y", "z"])
    peek = col.peek(2)
    assert peek["ids"] == ["a", "b"]
    np.testing.assert_array_equal(peek["embeddings"], vecs[:2])
    res = col.query(query_embeddings=[[0, 0, 1, 0.1]], n_results=1, include=["documents", "embeddings"])
    assert res["documents"] == [["y"]]
    np.testing.assert_array_equal(res["embeddings"][0], vecs[2:3])


def test_l2_space_matches_squared_euclidean(client: streamer.Client) -> None:
    col = client.create_collection("l2space", embedding_function=None, metadata={"hnsw:space": "l2"})
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((50, 8)).astype(np.float32)
    col.add(ids=[str(i) for i in range(50)], embeddings=vecs)
    q = rng.standard_normal(8).astype(np.float32)
    res = col.query(query_embeddings=[q], n_results=5)
    d = ((vecs - q) ** 2).sum(axis=1)
    assert res["ids"][0] == [str(i) for i in np.argsort(d)[:5]]
    np.testing.assert_allclose(res["distances"][0], np.sort(d)[:5], rtol=1e-4)


def test_collection_management(client: streamer.Client, ef: HashEmbedding) -> None:
    col = client.create_collection("one", embedding_function=ef, metadata={"owner": "me"})
    with pytest.raises(UniqueConstraintError, match=r"Collection \[one\] already exists"):
        client.create_collection("one", embedding_function=ef)
    same = client.get_or_create_collection("one", embedding_function=ef)
    assert same.id == col.id and same.metadata == {"owner": "me"}
    with pytest.raises(NotFoundError, match=r"Collection \[nope\] does not exist"):
        client.get_collection("nope")
    with pytest.raises(ValueError, match="Expected a name containing 3-512 characters"):
        client.create_collection("a b")
    client.create_collection("two", embedding_function=ef)
    assert sorted(c.name for c in client.list_collections()) == ["one", "two"]
    col.modify(name="uno")
    assert client.get_collection("uno", embedding_function=ef).id == col.id
    client.delete_collection("two")
    with pytest.raises(NotFoundError):
        client.delete_collection("two")
    assert [c.name for c in client.list_collections()] == ["uno"]
