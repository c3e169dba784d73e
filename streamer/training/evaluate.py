"""Retrieval metrics of any OpenCLIP model on procedural shape images.

The gallery holds one image per distinct spec, so a canonical caption, which names every
attribute, has exactly one right image. A free caption names only some attributes: any
image agreeing with it on those is a hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from streamer.training.drawn import all_drawings, gallery
from streamer.training.shapes import (
    ATTRIBUTES,
    Attribute,
    ImageArray,
    ShapeSpec,
    Split,
    canonical_caption,
    caption_and_attributes,
    matches,
    render,
    sample_specs,
)


class ClipModel(Protocol):
    """The two encoders of an open_clip model; any open_clip CLIP fits."""

    def encode_image(self, image: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor) -> torch.Tensor: ...


Preprocess = Callable[[Image.Image], torch.Tensor]
Tokenizer = Callable[[list[str]], torch.Tensor]


@torch.no_grad()
def embed_images(model: ClipModel, preprocess: Preprocess, images: Sequence[ImageArray]) -> torch.Tensor:
    """Unit-norm image embeddings, through the same preprocess a user's image takes."""
    batch = torch.stack([preprocess(Image.fromarray(im)) for im in images])
    return torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)


@torch.no_grad()
def embed_texts(model: ClipModel, tokenizer: Tokenizer, texts: list[str]) -> torch.Tensor:
    """Unit-norm text embeddings."""
    return torch.nn.functional.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


def _recall(
    sims: torch.Tensor,
    k: int,
    query_specs: Sequence[ShapeSpec],
    gallery_specs: Sequence[ShapeSpec],
    mentioned: Sequence[frozenset[Attribute]],
) -> float:
    """Share of queries (rows) with a matching gallery item (column) among their top k."""
    top = sims.topk(k, dim=1).indices.tolist()
    hits = [
        any(matches(gallery_specs[g], query_specs[q], mentioned[q]) for g in row) for q, row in enumerate(top)
    ]
    return sum(hits) / len(hits)


def evaluate(
    model: ClipModel,
    preprocess: Preprocess,
    tokenizer: Tokenizer,
    n: int = 200,
    seed: int = 0,
    *,
    split: Split = "heldout",
    size: int = 64,
) -> dict[str, float]:
    """Recall@k over n distinct specs of a split (the held-out one by default):

    t2i_r1/t2i_r5: canonical caption -> its image; i2t_r1: image -> its canonical caption;
    t2i_free_r1/t2i_free_r5: a varied, possibly partial caption -> an image it describes;
    i2i_r5: an image -> another rendering of the same spec among n such renderings.
    """
    specs = sample_specs(n, split, seed)
    rng = np.random.default_rng([seed, 2])
    gallery = embed_images(model, preprocess, [render(s, size, rng) for s in specs])
    twins = embed_images(model, preprocess, [render(s, size, rng) for s in specs])
    canonical = embed_texts(model, tokenizer, [canonical_caption(s) for s in specs])
    free_captions = [caption_and_attributes(s, rng) for s in specs]
    free = embed_texts(model, tokenizer, [text for text, _ in free_captions])
    everything = [ATTRIBUTES] * n
    partial = [attrs for _, attrs in free_captions]
    return {
        "t2i_r1": _recall(canonical @ gallery.T, 1, specs, specs, everything),
        "t2i_r5": _recall(canonical @ gallery.T, 5, specs, specs, everything),
        "i2t_r1": _recall(gallery @ canonical.T, 1, specs, specs, everything),
        "t2i_free_r1": _recall(free @ gallery.T, 1, specs, specs, partial),
        "t2i_free_r5": _recall(free @ gallery.T, 5, specs, specs, partial),
        "i2i_r5": _recall(gallery @ twins.T, 5, specs, specs, everything),
    }


def evaluate_drawn(
    model: ClipModel, preprocess: Preprocess, tokenizer: Tokenizer, per_pair: int = 3, seed: int = 0
) -> dict[str, float]:
    """Plain captions ("a red circle") -> images of the independent renderer (drawn.py):
    per_pair drawings of each of the 48 colour x shape pairs in one gallery; a hit is a
    drawing of the caption's pair. top1/r5 over all 48 captions; top1_seen/top1_unseen over
    the pairs the training split shows and the 12 held-out pairs it never shows."""
    images, drawings = gallery(per_pair, seed)
    pairs = all_drawings()
    captions = embed_texts(model, tokenizer, [p.caption for p in pairs])
    sims = captions @ embed_images(model, preprocess, images).T
    top = sims.topk(5, dim=1).indices.tolist()
    hit1 = [drawings[row[0]] == pair for pair, row in zip(pairs, top)]
    hit5 = [any(drawings[g] == pair for g in row) for pair, row in zip(pairs, top)]
    seen = [i for i, p in enumerate(pairs) if not p.heldout]
    unseen = [i for i, p in enumerate(pairs) if p.heldout]
    return {
        "top1": float(np.mean(hit1)),
        "r5": float(np.mean(hit5)),
        "top1_seen": float(np.mean([hit1[i] for i in seen])),
        "top1_unseen": float(np.mean([hit1[i] for i in unseen])),
    }
