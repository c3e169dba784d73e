"""Data loaders, importable as in Chroma (``chromadb.utils.data_loaders``)."""

from consumers.load import ImageLoader

__all__ = ["ImageLoader"]
