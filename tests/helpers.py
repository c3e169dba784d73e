"""Test doubles that are real implementations of the public protocols, not mocks."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


class HashEmbedding:
    """A deterministic Chroma-protocol embedding function: texts and images map to fixed
    pseudo-random unit vectors, so expected results can be computed by brute force."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[int] = []

    def vector(self, x: Any) -> np.ndarray:
        data = x.encode() if isinstance(x, str) else np.ascontiguousarray(x).tobytes()
        v = np.random.default_rng(zlib.crc32(data)).standard_normal(self.dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def __call__(self, input: Sequence[Any]) -> list[np.ndarray]:
        self.calls.append(len(input))
        return [self.vector(x) for x in input]

    @staticmethod
    def default_space() -> str:
        return "cosine"  # unit vectors, like OpenCLIP's (Chroma's default space otherwise l2)


def cosine_topk(query: np.ndarray, ids: list[str], vectors: np.ndarray, k: int) -> tuple[list[str], list[float]]:
    d = 1.0 - (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
    order = np.argsort(d, kind="stable")[:k]
    return [ids[i] for i in order], [float(d[i]) for i in order]


def random_image(seed: int, size: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_png(path: Path, image: np.ndarray) -> str:
    Image.fromarray(image).save(path)
    return str(path)


def require_node() -> None:
    """Skips the test where Node >= 20 and npm are missing (.ci/run installs both)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("needs node >= 20 and npm")
    version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.skip(f"needs node >= 20, found {version.strip()}")
