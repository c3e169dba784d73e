"""``streamer demo``: generate coloured-shape images into a temporary folder, index them by URI
with an ``ImageLoader``, then search them by text. Embedded (no Kafka), a few seconds on two
cores. It runs real CLIP weights when they are in the Hugging Face cache (Chroma's default,
ViT-B-32 laion2b_s34b_b79k; nothing is downloaded), and always the built-in ``streamer-tiny``,
and says which model ran. Without the trained checkpoint the built-in model runs on seeded
random weights, and the demo says so."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.embedding.models import BUILTIN_MODELS, register_builtin_configs
from consumers.embedding.weights import DEFAULT_CHECKPOINT, hub_cache, resolve
from consumers.loading.load import ImageLoader
from streamer.client.clients import DEFAULT_MODEL, Client
from streamer.training.shapes import (
    Colour,
    Shape,
    ShapeSpec,
    canonical_caption,
    make_dataset,
    render,
    sample_specs,
)

#: (query, shape, colour): every pair is in the training split, and the demo draws two of each.
QUERIES: tuple[tuple[str, Shape, Colour], ...] = (
    ("a red circle", "circle", "red"),
    ("a blue square", "square", "blue"),
    ("a yellow star", "star", "yellow"),
    ("a green triangle", "triangle", "green"),
    ("a white cross", "cross", "white"),
)
TOP = 3


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """open_clip warns through the root logger when it builds a model without weights."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def has_trained_checkpoint(model: str = DEFAULT_MODEL) -> bool:
    builtin = BUILTIN_MODELS.get(model)
    return builtin is not None and builtin.checkpoint_path.is_file()


def random_checkpoint(directory: Path, model: str = DEFAULT_MODEL, seed: int = 0) -> Path:
    """Seeded random weights for a built-in model, saved as a checkpoint OpenCLIP loads:
    the same vectors every run, so the demo and tests work before a trained one exists.

    BatchNorm statistics are measured on generated shapes: with the initial ones (and the
    zero-initialised residual scales) a random ResNet tower gives every image the same vector."""
    import open_clip
    import torch

    register_builtin_configs()
    path = directory / f"{model}-random-{seed}.pt"
    with torch.random.fork_rng(), _quiet():
        torch.manual_seed(seed)
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a plain average over the calibration batch
        images, _, _ = make_dataset(64, "train", seed, 64)
        batch = torch.stack([preprocess(PILImage.fromarray(im)) for im in images])
        net.train()
        with torch.no_grad():
            net.encode_image(batch)
    torch.save(net.state_dict(), path)
    return path


def _specs(n: int) -> list[ShapeSpec]:
    """Two images of every queried shape and colour, then varied ones from the dataset."""
    wanted = [ShapeSpec(shape, colour, "large", "center", 1, "solid") for _, shape, colour in QUERIES]
    wanted += [ShapeSpec(shape, colour, "small", "left", 2, "striped") for _, shape, colour in QUERIES]
    return (wanted + sample_specs(max(0, n - len(wanted)), "train", seed=7))[:n]


def _models(root: Path) -> Iterator[tuple[str, OpenCLIPEmbeddingFunction]]:
    """(what ran, its embedding function): real weights when cached, then the built-in model."""
    real = OpenCLIPEmbeddingFunction()  # Chroma's default: ViT-B-32, laion2b_s34b_b79k
    cached = resolve(real.model_name, real.checkpoint, download=False)
    if cached is not None:
        yield f"{real.model_name}, {cached.label}: real CLIP weights from the Hugging Face cache", real
    else:
        print(f"real weights: {real.model_name} {DEFAULT_CHECKPOINT} is not in the Hugging Face cache "
              f"{hub_cache(None)} (docs/models.md: 'The model and its weights'); "
              "running the built-in model only\n")
    if has_trained_checkpoint():
        yield f"{DEFAULT_MODEL} (built-in, trained checkpoint)", OpenCLIPEmbeddingFunction(DEFAULT_MODEL)
    else:
        yield (f"{DEFAULT_MODEL} with RANDOM weights: its trained checkpoint is not installed, so the "
               "hits below are arbitrary",
               OpenCLIPEmbeddingFunction(DEFAULT_MODEL, checkpoint=str(random_checkpoint(root))))


def run_demo(n: int = 48) -> int:
    started = time.monotonic()
    n = max(n, len(QUERIES) * 2)
    with tempfile.TemporaryDirectory(prefix="streamer-demo-") as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        specs = _specs(n)
        uris = []
        for i, spec in enumerate(specs):
            path = images / f"{i:03d}-{spec.colour}-{spec.shape}.png"
            PILImage.fromarray(render(spec, 64, rng)).save(path)
            uris.append(str(path))
        for number, (label, ef) in enumerate(_models(root)):
            print(f"model: {label}")
            _search(root / f"store-{number}", ef, images, uris, specs)
        print(f"done in {time.monotonic() - started:.1f} s")
    return 0


def _search(store: Path, ef: OpenCLIPEmbeddingFunction, images: Path, uris: list[str],
            specs: list[ShapeSpec]) -> None:
    n = len(uris)
    with Client(store) as client:
        col = client.create_collection("shapes", embedding_function=ef,
                                       data_loader=ImageLoader(roots=[images]))
        t0 = time.monotonic()
        col.add(ids=[Path(u).name for u in uris], uris=uris,
                metadatas=[{"caption": canonical_caption(s), "shape": s.shape, "colour": s.colour}
                           for s in specs])
        took = time.monotonic() - t0
        print(f"indexed {n} generated images by URI in {took:.1f} s ({n / took:.0f} images/s)\n")
        res = col.query(query_texts=[q for q, _, _ in QUERIES], n_results=TOP,
                        include=["distances", "metadatas"])
    right = 0
    for (query, shape, colour), ids, dists, metas in zip(QUERIES, res["ids"], res["distances"],
                                                         res["metadatas"]):
        print(f'"{query}"')
        for rank, (id_, dist, meta) in enumerate(zip(ids, dists, metas), 1):
            ok = meta["shape"] == shape and meta["colour"] == colour
            right += ok
            print(f"  {rank}. {dist:.3f}  {id_:<22} {meta['caption']}{'  <- match' if ok else ''}")
    chance = sum(sum(s.shape == sh and s.colour == c for s in specs) for _, sh, c in QUERIES) / n
    print(f"\n{right}/{len(QUERIES) * TOP} top-{TOP} hits show the asked shape and colour "
          f"(chance: {chance * TOP:.1f})\n")
