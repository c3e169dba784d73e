"""Section 4: bf16 vs fp32 for the same weights: throughput and agreement (cosine between the
two precisions' embeddings of the same inputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import Timer
from benchmarks.paths import texts
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction

AGREEMENT = 0.999


@dataclass
class PrecisionResult:
    images_per_s: dict[str, float]
    texts_per_s: dict[str, float]
    image_cos_min: float
    image_cos_mean: float
    text_cos_min: float
    text_cos_mean: float

    @property
    def keeps_cosine(self) -> bool:
        return min(self.image_cos_min, self.text_cos_min) >= AGREEMENT


def _cos(a: list[Any], b: list[Any]) -> np.ndarray:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out: np.ndarray = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return out


def run(model: str, checkpoint: str, uris: list[str], n_texts: int, batch: int) -> PrecisionResult:
    images = [im for im in ImageLoader()(uris) if im is not None]
    captions = texts(n_texts)
    vecs: dict[str, tuple[list[Any], list[Any]]] = {}
    img_rate: dict[str, float] = {}
    txt_rate: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        ef = OpenCLIPEmbeddingFunction(model, checkpoint, batch_size=batch,
                                       precision=precision)  # type: ignore[arg-type]
        tensors = list(ef.preprocess(images))
        ef.embed_prepared(tensors[:batch])
        ef.embed_texts(captions[:batch])
        with Timer() as t:
            img = ef.embed_prepared(tensors)
        img_rate[precision] = len(tensors) / t.seconds
        with Timer() as t:
            txt = ef.embed_texts(captions)
        txt_rate[precision] = len(captions) / t.seconds
        vecs[precision] = (img, txt)
        del ef
    ci = _cos(vecs["fp32"][0], vecs["bf16"][0])
    ct = _cos(vecs["fp32"][1], vecs["bf16"][1])
    return PrecisionResult(img_rate, txt_rate, float(ci.min()), float(ci.mean()),
                           float(ct.min()), float(ct.mean()))
