"""Embedding functions, importable as in Chroma (``chromadb.utils.embedding_functions``)."""

from consumers.embedding.embed import EmbeddingFunction, OpenCLIPEmbeddingFunction

__all__ = ["EmbeddingFunction", "OpenCLIPEmbeddingFunction"]
