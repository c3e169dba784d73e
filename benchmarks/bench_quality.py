"""Retrieval quality of the built-in model next to random weights: on the project's held-out
split (shapes.py, shape x colour pairs training never shows), and on images of an independent
renderer (drawn.py: PIL drawings of all 48 colour x shape pairs, plain captions).

    python -m benchmarks.bench_quality [--n 200] [--per-pair 3] [--seed 0]
"""

from __future__ import annotations

import argparse

import open_clip
import torch

from benchmarks.common import machine
from consumers.embedding.models import BUILTIN_MODELS, register_builtin_configs
from streamer.training.evaluate import evaluate, evaluate_drawn

HELDOUT = {"t2i_r1": "caption→image top-1", "t2i_r5": "caption→image R@5", "i2t_r1": "image→caption top-1",
           "t2i_free_r5": "free caption→image R@5", "i2i_r5": "image→image R@5"}
DRAWN = {"top1": "caption→image top-1", "r5": "caption→image R@5",
         "top1_seen": "top-1, 36 training pairs", "top1_unseen": "top-1, 12 held-out pairs"}


def _table(title: str, columns: dict[str, str], rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print("| weights | " + " | ".join(columns.values()) + " |")
    print("|---|" + "---|" * len(columns))
    for label, metrics in rows.items():
        print(f"| {label} | " + " | ".join(f"{metrics[k]:.3f}" for k in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--per-pair", type=int, default=3, help="drawings per colour x shape pair")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    register_builtin_configs()
    tiny = BUILTIN_MODELS["streamer-tiny"]
    tokenizer = open_clip.get_tokenizer(tiny.name)
    heldout, drawn = {}, {}
    for label, pretrained in (("streamer-tiny", str(tiny.checkpoint_path)), ("random weights", None)):
        torch.manual_seed(args.seed)
        model, _, preprocess = open_clip.create_model_and_transforms(tiny.name, pretrained=pretrained)
        model.eval()
        heldout[label] = evaluate(model, preprocess, tokenizer, n=args.n, seed=args.seed)
        drawn[label] = evaluate_drawn(model, preprocess, tokenizer, per_pair=args.per_pair, seed=args.seed)
    print(f"machine: {machine()}; seed {args.seed}")
    _table(f"held-out split (shapes.py), {args.n} distinct specs, canonical captions", HELDOUT, heldout)
    _table(f"independent renderer (drawn.py), 48 plain captions ('a red circle') over "
           f"{48 * args.per_pair} drawings", DRAWN, drawn)


if __name__ == "__main__":
    main()
