"""Section 4: bf16 vs fp32 for the same weights: throughput and agreement (cosine between the
two precisions' embeddings of the same inputs)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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


def run(model: str, checkpoint: str, uris: list[str], n_texts: int, batch: int,
        rounds: int = 2) -> PrecisionResult:
    """Both precisions loaded, measured in alternating rounds (best kept) on one worker thread,
    like the engine's model thread."""
    with ThreadPoolExecutor(1, thread_name_prefix="precision") as pool:
        return pool.submit(_run, model, checkpoint, uris, n_texts, batch, rounds).result()


def _run(model: str, checkpoint: str, uris: list[str], n_texts: int, batch: int,
         rounds: int) -> PrecisionResult:
    images = [im for im in ImageLoader()(uris) if im is not None]
    captions = texts(n_texts)
    efs = {p: OpenCLIPEmbeddingFunction(model, checkpoint, batch_size=batch, precision=p,
                                        backend="torch")
           for p in ("fp32", "bf16")}
    tensors = list(efs["fp32"].preprocess(images))
    vecs: dict[str, tuple[list[Any], list[Any]]] = {}
    img_rate = dict.fromkeys(efs, 0.0)
    txt_rate = dict.fromkeys(efs, 0.0)
    for ef in efs.values():
        ef.embed_prepared(tensors[:batch])
        ef.embed_texts(captions[:batch])
    for _ in range(rounds):
        for p, ef in efs.items():
            with Timer() as t:
                img = ef.embed_prepared(tensors)
            img_rate[p] = max(img_rate[p], len(tensors) / t.seconds)
            with Timer() as t:
                txt = ef.embed_texts(captions)
            txt_rate[p] = max(txt_rate[p], len(captions) / t.seconds)
            vecs[p] = (img, txt)
    ci = _cos(vecs["fp32"][0], vecs["bf16"][0])
    ct = _cos(vecs["fp32"][1], vecs["bf16"][1])
    return PrecisionResult(img_rate, txt_rate, float(ci.min()), float(ci.mean()),
                           float(ct.min()), float(ct.mean()))
