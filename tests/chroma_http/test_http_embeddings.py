"""chromadb 1.5.9's chromadb/test/property/test_embeddings.py, run unchanged through
chromadb.HttpClient against streamer serve (see conftest.py)."""

from chromadb.test.property.test_embeddings import *  # noqa: F403
