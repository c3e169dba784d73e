"""Embedding functions, importable as in Chroma (``chromadb.utils.embedding_functions``)."""

from consumers.embedding.embed import EmbeddingFunction, OpenCLIPEmbeddingFunction
from streamer.schema import ChromaBm25EmbeddingFunction

__all__ = ["ChromaBm25EmbeddingFunction", "EmbeddingFunction", "OpenCLIPEmbeddingFunction"]
