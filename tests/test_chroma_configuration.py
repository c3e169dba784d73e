"""``collection.configuration`` and ``configuration_json`` of streamer's own collections
against ``chromadb.EphemeralClient()``: the same sections and hnsw keys (LangChain reads
``collection.configuration.get("hnsw")``), and the same default space (l2 without an
embedding function), on both clients."""

from __future__ import annotations

from typing import Any

import pytest
from chromadb.api import ClientAPI

import streamer
from tests.test_chroma_parity import chroma, chroma_client

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


def test_a_builtin_embedding_function_is_named_in_configuration_json(
        client: streamer.Client) -> None:
    from streamer.embedding_functions import OpenCLIPEmbeddingFunction

    ef = OpenCLIPEmbeddingFunction("streamer-tiny")
    col = client.create_collection("clip", embedding_function=ef)
    assert col.configuration["embedding_function"] is ef
    named = col.configuration_json["embedding_function"]
    assert named["type"] == "known" and named["name"] == "open_clip"
    assert named["config"]["model_name"] == "streamer-tiny"
