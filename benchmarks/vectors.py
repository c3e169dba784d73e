"""CLIP-like synthetic embeddings: a clustered Gaussian mixture on the unit sphere.

Uniform noise is a known worst case for graph indexes (no neighbourhood structure, recall
0.07-0.20 at 1M), so it says nothing about real collections. Real CLIP embeddings sit in a
narrow cone (a shared mean direction), group by concept, and have a decaying spectrum. This
mixes all three: 1024 concept centres around a common direction, per-cluster spreads, and
anisotropic noise whose variance falls off as 1/(i+1) along a random orthogonal basis."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
CLUSTERS = 1024


def _unit(x: F32) -> F32:
    out: F32 = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


class ClipLike:
    def __init__(self, ndim: int = 512, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.ndim = ndim
        basis, _ = np.linalg.qr(rng.standard_normal((ndim, ndim)))
        self._shape = ((1.0 / np.sqrt(np.arange(1, ndim + 1)))[:, None] * basis.T).astype(np.float32)
        mean = _unit(rng.standard_normal((1, ndim)).astype(np.float32))
        self.centres = _unit(mean + _unit(self._noise(rng, CLUSTERS)))
        self.spread = rng.uniform(0.35, 0.9, CLUSTERS).astype(np.float32)
        self._seed = seed

    def _noise(self, rng: np.random.Generator, n: int) -> F32:
        out: F32 = rng.standard_normal((n, self.ndim), dtype=np.float32) @ self._shape
        return out

    def sample(self, n: int, rng: np.random.Generator) -> F32:
        c = rng.integers(0, CLUSTERS, n)
        noise = _unit(self._noise(rng, n)) * self.spread[c, None]
        return _unit(self.centres[c] + noise).astype(np.float32)

    def chunks(self, n: int, chunk: int = 50_000, stream: int = 1) -> Iterator[F32]:
        """``n`` vectors in chunks, reproducible for a given (seed, stream)."""
        rng = np.random.default_rng([self._seed, stream])
        for start in range(0, n, chunk):
            yield self.sample(min(chunk, n - start), rng)

    def queries(self, n: int) -> F32:
        """Fresh draws from the same distribution (not in the index), as real queries are."""
        return self.sample(n, np.random.default_rng([self._seed, 999]))
