"""chromadb 1.5.9's chromadb/test/property/test_filtering.py, run unchanged against streamer
(see conftest.py)."""

from chromadb.test.property.test_filtering import *  # noqa: F403
