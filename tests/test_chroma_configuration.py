"""``collection.configuration`` and ``configuration_json`` of streamer's own collections
against ``chromadb.EphemeralClient()``: the same sections and hnsw keys (LangChain reads
``collection.configuration.get("hnsw")``), and the same default space (l2 without an
embedding function), on both clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb.errors
import numpy as np
import pytest
from chromadb.api import ClientAPI
from chromadb.utils.embedding_functions.open_clip_embedding_function import (
    OpenCLIPEmbeddingFunction as TheirOpenCLIP,
)

import streamer
from consumers.storage import checkpoint
from consumers.storage.store import CollectionStore
from schemas.errors import InvalidArgumentError
from schemas.records import CollectionSpec, Mutation
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from tests.test_chroma_parity import _ChromaStyleEF, chroma, chroma_client

__all__ = ["chroma", "chroma_client"]  # the fixtures, used by name


def _types(d: dict[str, Any]) -> dict[str, str]:
    return {k: "number" if isinstance(v, int | float) and not isinstance(v, bool)
            else type(v).__name__ for k, v in d.items()}


# Chroma records a configuration given without an embedding function as a "legacy" one.
@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
@pytest.mark.parametrize("kwargs", [
    {}, {"metadata": {"hnsw:space": "cosine"}}, {"configuration": {"hnsw": {"space": "ip"}}},
], ids=["default", "metadata-space", "configuration-space"])
def test_configuration_matches_chroma(chroma: ClientAPI, client: streamer.Client,
                                      kwargs: dict[str, Any]) -> None:
    theirs: Any = chroma.create_collection("conf", embedding_function=None, **kwargs)
    ours = client.create_collection("conf", embedding_function=None, **kwargs)
    for view in ("configuration", "configuration_json"):
        want, got = getattr(theirs, view), getattr(ours, view)
        assert got.keys() == want.keys(), view
        assert got["hnsw"]["space"] == want["hnsw"]["space"], view
        assert _types(got["hnsw"]) == _types(want["hnsw"]), view
        assert got["spann"] is None and got["embedding_function"] is None, view
    # LangChain's relevance-score choice.
    assert ours.configuration.get("hnsw", {}).get("space") == \
        theirs.configuration.get("hnsw", {}).get("space")
    # A collection fetched again reports the same.
    assert client.get_collection("conf", embedding_function=None).configuration == \
        ours.configuration


def test_no_embedding_function_defaults_to_l2_like_chroma(chroma: ClientAPI,
                                                          client: streamer.Client) -> None:
    theirs: Any = chroma.create_collection("plain", embedding_function=None)
    ours = client.create_collection("plain", embedding_function=None)
    assert ours.configuration_json["hnsw"]["space"] == theirs.configuration_json["hnsw"]["space"] \
        == "l2"
    for col in (theirs, ours):
        col.add(ids=["a", "b"], embeddings=[[0.0, 0.0], [3.0, 4.0]])
    assert ours.query(query_embeddings=[[0.0, 0.0]], n_results=2, include=["distances"])[
        "distances"] == theirs.query(query_embeddings=[[0.0, 0.0]], n_results=2,
                                     include=["distances"])["distances"] == [[0.0, 25.0]]


def test_the_default_embedding_function_keeps_chromas_l2(chroma: ClientAPI,
                                                       client: streamer.Client) -> None:
    """No ``embedding_function`` argument: Chroma's default function and ours are l2, so the
    same raw vectors give the same distances; ``chromadb.test_search_group_by`` relies on it."""
    theirs: Any = chroma.create_collection("dflt")
    ours = client.create_collection("dflt")
    assert ours.configuration_json["hnsw"]["space"] == \
        theirs.configuration_json["hnsw"]["space"] == "l2"
    for col in (theirs, ours):
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [3.0, 4.0]])
    want = theirs.query(query_embeddings=[[1.0, 0.0]], n_results=2, include=["distances"])
    got = ours.query(query_embeddings=[[1.0, 0.0]], n_results=2, include=["distances"])
    assert got["ids"] == want["ids"] == [["a", "b"]]
    assert got["distances"] == want["distances"] == [[0.0, 20.0]]


def test_an_explicit_openclip_function_is_cosine_like_chromas(chroma: ClientAPI,
                                                              client: streamer.Client) -> None:
    """Chroma's guide passes ``OpenCLIPEmbeddingFunction()``: its ``default_space()`` is
    cosine in both. Chroma's real class needs open_clip weights to construct, so its side is
    a user's function with that class's ``default_space``."""
    class TheirsStandIn(_ChromaStyleEF):
        default_space = TheirOpenCLIP.default_space

    their_client: Any = chroma  # chromadb types the function by its input types
    theirs = their_client.create_collection("clip", embedding_function=TheirsStandIn())
    ours = client.create_collection("clip", embedding_function=OpenCLIPEmbeddingFunction())
    assert ours.configuration_json["hnsw"]["space"] == \
        theirs.configuration_json["hnsw"]["space"] == "cosine"


def test_a_builtin_embedding_function_is_named_in_configuration_json(
        client: streamer.Client) -> None:
    from streamer.embedding_functions import OpenCLIPEmbeddingFunction

    ef = OpenCLIPEmbeddingFunction("streamer-tiny")
    col = client.create_collection("clip", embedding_function=ef)
    assert col.configuration["embedding_function"] is ef
    named = col.configuration_json["embedding_function"]
    assert named["type"] == "known" and named["name"] == "open_clip"
    assert named["config"]["model_name"] == "streamer-tiny"


# ---- HNSW parameters (configuration={"hnsw": {...}}) -----------------------------------------
@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
@pytest.mark.parametrize("hnsw", [
    {}, {"space": "cosine"}, {"ef_construction": 200, "space": "l2"},
    {"space": "cosine", "ef_construction": 100, "max_neighbors": 10, "ef_search": 20},
    {"ef_search": 0, "resize_factor": 0.5, "sync_threshold": 7, "num_threads": 3,
     "batch_size": 50},
], ids=["none", "space", "ef_construction", "three", "the-rest"])
def test_hnsw_parameters_are_kept_and_reported_as_chromas(
        chroma: ClientAPI, client: streamer.Client, hnsw: dict[str, Any]) -> None:
    their_client: Any = chroma  # chromadb types configuration as its TypedDicts
    theirs = their_client.create_collection("tuned", embedding_function=None,
                                            configuration={"hnsw": dict(hnsw)})
    ours = client.create_collection("tuned", embedding_function=None,
                                    configuration={"hnsw": dict(hnsw)})
    assert ours.configuration_json["hnsw"] == theirs.configuration_json["hnsw"]
    assert client.get_collection("tuned", embedding_function=None).configuration_json["hnsw"] \
        == theirs.configuration_json["hnsw"]


@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
@pytest.mark.parametrize("hnsw", [
    {"ef_construction": -1}, {"max_neighbors": 1.5}, {"ef_search": "5"}, {"foo": 1},
    {"space": "bad"},
], ids=["negative", "float", "string", "unknown", "space"])
def test_bad_hnsw_parameters_are_refused_with_chromas_message(
        chroma: ClientAPI, client: streamer.Client, hnsw: dict[str, Any]) -> None:
    their_client: Any = chroma
    with pytest.raises(chromadb.errors.InvalidArgumentError) as theirs:
        their_client.create_collection("bad", embedding_function=None,
                                 configuration={"hnsw": dict(hnsw)})
    with pytest.raises(InvalidArgumentError) as ours:
        client.create_collection("bad", embedding_function=None,
                                 configuration={"hnsw": dict(hnsw)})
    # Chroma's message ends with where its JSON parser stopped ("at line 1 column 31").
    assert str(theirs.value).startswith(str(ours.value)), (str(theirs.value), str(ours.value))


@pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")
def test_a_modify_changes_what_chroma_lets_change(chroma: ClientAPI,
                                                  client: streamer.Client) -> None:
    theirs: Any = chroma.create_collection("mod", embedding_function=None,
                                           configuration={"hnsw": {"ef_search": 10}})
    ours = client.create_collection("mod", embedding_function=None,
                                    configuration={"hnsw": {"ef_search": 10}})
    for col in (theirs, ours):
        col.modify(configuration={"hnsw": {"ef_search": 20, "num_threads": 2}})
    assert client.get_collection("mod", embedding_function=None).configuration_json["hnsw"] \
        == chroma.get_collection("mod").configuration_json["hnsw"]
    assert ours.configuration_json["hnsw"]["ef_search"] == 20
    for change in ({"ef_construction": 20}, {"space": "ip"}):
        with pytest.raises(chromadb.errors.InvalidArgumentError) as want:
            theirs.modify(configuration={"hnsw": change})
        with pytest.raises(InvalidArgumentError) as got:
            ours.modify(configuration={"hnsw": change})
        assert str(want.value).startswith(str(got.value))


def test_the_index_runs_with_the_parameters_and_keeps_them_across_a_checkpoint(
        tmp_path: Path) -> None:
    spec = CollectionSpec(id="c", name="tuned", space="l2",
                          hnsw={"ef_construction": 40, "ef_search": 7, "max_neighbors": 8})
    store = CollectionStore(spec)
    vectors = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    store.apply([Mutation(op="put", id=f"r{i}", vector=v) for i, v in enumerate(vectors)], 1, {})
    assert store.index is not None
    store.index.backfill(1000)

    def params(s: CollectionStore) -> tuple[int, int, int]:
        assert s.index is not None
        raw = s.index._index
        return raw.connectivity, raw.expansion_add, raw.expansion_search
    assert params(store) == (8, 40, 7)
    checkpoint.save(store, tmp_path, fsync=False)
    loaded = checkpoint.load(tmp_path, spec)
    assert loaded is not None and params(loaded) == (8, 40, 7)
    loaded.spec.hnsw = {**(loaded.spec.hnsw or {}), "ef_search": 33}
    loaded.retune()
    assert params(loaded) == (8, 40, 33)
