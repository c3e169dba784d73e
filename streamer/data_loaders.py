"""Data loaders, importable as in Chroma (``chromadb.utils.data_loaders``)."""

from consumers.loading.load import ImageLoader

__all__ = ["ImageLoader"]
