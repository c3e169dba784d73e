"""Retrieval quality of the built-in model on the held-out split, next to random weights.

    python -m benchmarks.bench_quality [--n 200] [--seed 0]
"""

from __future__ import annotations

import argparse

import open_clip
import torch

from benchmarks.common import machine
from consumers.models import BUILTIN_MODELS, register_builtin_configs
from streamer.training.evaluate import evaluate

COLUMNS = {"t2i_r1": "text→image R@1", "t2i_r5": "text→image R@5", "i2t_r1": "image→text R@1",
           "t2i_free_r5": "free caption→image R@5", "i2i_r5": "image→image R@5"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    register_builtin_configs()
    tiny = BUILTIN_MODELS["streamer-tiny"]
    tokenizer = open_clip.get_tokenizer(tiny.name)
    rows = {}
    for label, pretrained in (("trained", str(tiny.checkpoint_path)), ("random weights", None)):
        torch.manual_seed(args.seed)
        model, _, preprocess = open_clip.create_model_and_transforms(tiny.name, pretrained=pretrained)
        model.eval()
        rows[label] = evaluate(model, preprocess, tokenizer, n=args.n, seed=args.seed)
    print(f"machine: {machine()}; held-out split, {args.n} distinct specs, seed {args.seed}")
    print("| weights | " + " | ".join(COLUMNS.values()) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for label, metrics in rows.items():
        print(f"| {label} | " + " | ".join(f"{metrics[k]:.3f}" for k in COLUMNS) + " |")


if __name__ == "__main__":
    main()
