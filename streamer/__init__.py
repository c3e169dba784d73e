"""streamer: Chroma's multimodal collections as an async streaming service on Kafka.

``streamer.Client()`` is the embedded, in-process store; the same pipeline runs as a Kafka
service (``streamer serve``) that ``streamer.KafkaClient`` talks to. The Kafka clients are
imported on first use, so ``import streamer`` does not load aiokafka."""

from typing import TYPE_CHECKING, Any

from streamer import data_loaders, embedding_functions, errors
from streamer.client.clients import AsyncClient, Client
from streamer.client.collection import AsyncCollection, Collection
from streamer.client.search import SearchResult
from streamer.expression import (
    GroupBy,
    K,
    Key,
    Knn,
    Limit,
    MaxK,
    MinK,
    Rrf,
    Search,
    Select,
    Val,
)
from streamer.schema import Schema, SparseVector, SparseVectorIndexConfig

if TYPE_CHECKING:
    from streamer.kafka.client import AsyncKafkaClient, KafkaClient

_LAZY = {"KafkaClient", "AsyncKafkaClient"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from streamer.kafka import client

        return getattr(client, name)
    raise AttributeError(f"module 'streamer' has no attribute {name!r}")


__all__ = ["AsyncClient", "AsyncCollection", "AsyncKafkaClient", "Client", "Collection",
           "GroupBy", "K", "KafkaClient", "Key", "Knn", "Limit", "MaxK", "MinK", "Rrf", "Schema",
           "Search", "SearchResult", "Select", "SparseVector", "SparseVectorIndexConfig", "Val",
           "data_loaders", "embedding_functions", "errors"]
