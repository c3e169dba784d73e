"""chromadb 1.5.9's chromadb/test/property/test_add.py, run unchanged through
chromadb.HttpClient against streamer serve (see conftest.py)."""

from chromadb.test.property.test_add import *  # noqa: F403
