"""Bare images/s and texts/s of every runtime backend and precision on real photos, with each
one's worst cosine to torch fp32 and what ``backend="auto"`` picks here.

    python -m benchmarks.backends [--images 32] [--texts 64] [--batch 32] [--device cpu]

One worker thread runs every model, like the service's model thread; the photos are decoded
and prepared once, so only the model is timed. Random weights (seed 0) unless --checkpoint."""

from __future__ import annotations

import argparse
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Timer
from benchmarks.paths import texts
from consumers.embedding import backends as B
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.testing.images import photo_files


@dataclass
class Row:
    backend: str
    precision: str
    images_per_s: float
    texts_per_s: float
    cosine_min: float
    load_s: float


def _cos_min(a: list[Any], b: list[Any]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))).min())


def measure(model: str, checkpoint: str, uris: list[str], n_texts: int, batch: int,
            device: str = "cpu", rounds: int = 2) -> tuple[list[Row], str]:
    with ThreadPoolExecutor(1, thread_name_prefix="backends") as pool:
        return pool.submit(_measure, model, checkpoint, uris, n_texts, batch, device,
                           rounds).result()


def _measure(model: str, checkpoint: str, uris: list[str], n_texts: int, batch: int,
             device: str, rounds: int) -> tuple[list[Row], str]:
    images = [im for im in ImageLoader()(uris) if im is not None]
    captions = texts(n_texts)
    combos = [("torch", "fp32")] + [c for c in B.candidates("auto", "auto", device)
                                    if c != ("torch", "fp32")]
    if device == "cpu" and ("openvino", "fp32") not in combos:
        combos.append(("openvino", "fp32"))
    rows: list[Row] = []
    reference: tuple[list[Any], list[Any]] | None = None
    prepared: list[Any] | None = None
    for backend, precision in combos:
        ef = OpenCLIPEmbeddingFunction(model, checkpoint, device, batch_size=batch,
                                       backend=backend, precision=precision)  # type: ignore[arg-type]
        with Timer() as load:
            ef.load()
        assert ef.choice is not None
        if ef.choice.label != f"{backend}/{precision}":  # refused by the gate: not measured
            print(f"  {backend}/{precision}: refused here ({'; '.join(ef.choice.refused)})")
            continue
        if prepared is None:
            prepared = [ef.prepare_image(im) for im in images]
        ef.embed_prepared(prepared[:batch])
        ef.embed_texts(captions[:batch])
        img_rate = txt_rate = 0.0
        for _ in range(rounds):
            with Timer() as t:
                img = ef.embed_prepared(prepared)
            img_rate = max(img_rate, len(prepared) / t.seconds)
            with Timer() as t:
                txt = ef.embed_texts(captions)
            txt_rate = max(txt_rate, len(captions) / t.seconds)
        reference = reference or (img, txt)
        cos = min(_cos_min(img, reference[0]), _cos_min(txt, reference[1]))
        rows.append(Row(backend, precision, img_rate, txt_rate, cos, load.seconds))
    auto = OpenCLIPEmbeddingFunction(model, checkpoint, device, batch_size=batch)
    auto.load()
    assert auto.choice is not None
    return rows, auto.choice.label


def print_rows(rows: list[Row], auto: str) -> None:
    print(f"  {'backend':<16} {'images/s':>9} {'texts/s':>9} {'min cos':>9} {'load s':>7}")
    for r in rows:
        mark = "  <- auto" if f"{r.backend}/{r.precision}" == auto else ""
        print(f"  {r.backend + '/' + r.precision:<16} {r.images_per_s:9.1f} {r.texts_per_s:9.1f} "
              f"{r.cosine_min:9.5f} {r.load_s:7.1f}{mark}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or random_weights(args.model, work)
        uris = photo_files(args.images, work / "photos")
        rows, auto = measure(args.model, checkpoint, uris, args.texts, args.batch, args.device)
    print(f"{args.model}, batch {args.batch}, {args.images} photos, {args.texts} texts, "
          f"{args.device}; bf16 native: {B.native_bf16()}")
    print_rows(rows, auto)


def random_weights(model: str, work: Path) -> str:
    import open_clip
    import torch

    path = work / f"{model}-random-seed0.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(model).state_dict(), path)
    return str(path)


if __name__ == "__main__":
    main()
