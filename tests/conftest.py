from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import streamer
from tests.helpers import HashEmbedding


@pytest.fixture(params=["embedded"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[streamer.Client]:
    c = streamer.Client(tmp_path / "store")
    yield c
    c.close()


@pytest.fixture
def ef() -> HashEmbedding:
    return HashEmbedding()
