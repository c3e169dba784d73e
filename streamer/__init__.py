"""streamer: Chroma's multimodal collections as an async streaming service on Kafka.

``streamer.Client()`` is the embedded, in-process store; the same pipeline runs as a Kafka
service (``streamer serve``)."""

from streamer import data_loaders, embedding_functions, errors
from streamer.client import AsyncClient, Client
from streamer.collection import AsyncCollection, Collection

__all__ = ["AsyncClient", "AsyncCollection", "Client", "Collection", "data_loaders",
           "embedding_functions", "errors"]
