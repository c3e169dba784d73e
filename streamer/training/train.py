"""Trains the built-in streamer-tiny OpenCLIP model on procedural shapes, on CPU, and saves
its checkpoint next to its config; ends with held-out retrieval, trained against random.

    python -m streamer.training.train --out consumers/embedding/models --steps 800 --seed 0
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from consumers.embedding.models import BUILTIN_MODELS, register_builtin_configs
from streamer.training.augment import render_varied
from streamer.training.evaluate import Preprocess, evaluate, evaluate_drawn
from streamer.training.shapes import (
    ATTRIBUTES,
    Attribute,
    ShapeSpec,
    canonical_caption,
    caption_and_attributes,
    make_dataset,
    matches,
    sample_specs,
)

MODEL = "streamer-tiny"


def _image_pool(
    preprocess: Preprocess, n: int, seed: int, size: int, varied_share: float
) -> tuple[torch.Tensor, list[ShapeSpec]]:
    """Training images, already through the model's own inference preprocess, so training
    sees exactly what embedding a user's image produces. Captions are drawn per step. A
    varied_share of them are varied renderings (augment.py) of further specs."""
    varied = round(n * varied_share)
    images, _, specs = make_dataset(n - varied, "train", seed, size)
    varied_specs = sample_specs(varied, "train", seed + 1)
    rng = np.random.default_rng([seed, 3])
    images += [render_varied(spec, rng) for spec in varied_specs]
    return torch.stack([preprocess(Image.fromarray(im)) for im in images]), specs + varied_specs


def _captions(
    specs: Sequence[ShapeSpec], canonical_share: float, rng: np.random.Generator
) -> tuple[list[str], list[frozenset[Attribute]]]:
    texts: list[str] = []
    mentioned: list[frozenset[Attribute]] = []
    for spec in specs:
        if rng.random() < canonical_share:
            text, attrs = canonical_caption(spec), ATTRIBUTES
        else:
            text, attrs = caption_and_attributes(spec, rng)
        texts.append(text)
        mentioned.append(attrs)
    return texts, mentioned


def multi_positive_loss(
    image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric contrastive loss with every image a caption describes as a positive.
    A partial caption ('red circles') fits several images of a batch, and plain ClipLoss
    would push those apart. positives[i, j]: image i fits caption j; the diagonal is set."""
    logits = scale * image @ text.T
    p = positives.float()
    image_to_text = F.cross_entropy(logits, p / p.sum(dim=1, keepdim=True))
    text_to_image = F.cross_entropy(logits.T, (p / p.sum(dim=0, keepdim=True)).T)
    return (image_to_text + text_to_image) / 2


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # As open_clip's trainer: no decay on gains, biases and the logit scale.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_at(step: int, steps: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train(args: argparse.Namespace) -> Path:
    """Runs the training loop and writes the fp16 checkpoint; returns its path."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    # Fine-tuning starts from a checkpoint (the shipped one, say) instead of random weights.
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=args.init)
    tokenizer = open_clip.get_tokenizer(MODEL)
    size = int(open_clip.get_model_config(MODEL)["vision_cfg"]["image_size"])
    started = time.monotonic()
    pool, pool_specs = _image_pool(preprocess, args.pool, args.seed, size, args.varied_share)
    print(f"pool of {len(pool_specs)} images in {time.monotonic() - started:.0f}s", flush=True)
    optimizer = _optimizer(model, args.lr, args.weight_decay)
    warmup = max(1, args.steps // 20)
    order = rng.permutation(len(pool_specs))
    cursor = 0
    model.train()
    for step in range(args.steps):
        if cursor + args.batch > len(order):
            order, cursor = rng.permutation(len(pool_specs)), 0
        idx = order[cursor : cursor + args.batch]
        cursor += args.batch
        specs = [pool_specs[i] for i in idx]
        texts, mentioned = _captions(specs, args.canonical_share, rng)
        positives = torch.tensor([[matches(a, b, mentioned[j]) for j, b in enumerate(specs)] for a in specs])
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, args.steps, warmup, args.lr)
        image_features, text_features, scale = model(pool[torch.from_numpy(idx)], tokenizer(texts))
        loss = multi_positive_loss(image_features, text_features, scale, positives)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # Tensor.backward is untyped in torch's stubs
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            elapsed = time.monotonic() - started
            print(
                f"step {step:5d} loss {loss.item():.3f} scale {scale.item():5.1f} {elapsed:5.0f}s", flush=True
            )
        if args.eval_every and step % args.eval_every == args.eval_every - 1:
            model.eval()
            print(f"step {step:5d} drawn.py {evaluate_drawn(model, preprocess, tokenizer)}", flush=True)
            model.train()
    out = Path(args.out) / BUILTIN_MODELS[MODEL].checkpoint_path.name
    # fp16 halves the file; open_clip's loader copies into the fp32 model, casting back.
    # BatchNorm's integer batch counters stay as they are.
    state = {
        k: (v.detach().half() if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(out))
    print(f"trained in {time.monotonic() - started:.0f}s; wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def report(checkpoint: Path, n: int, seed: int) -> None:
    """Held-out retrieval of the saved checkpoint, loaded the way users load it, next to the
    same architecture with random weights; the train split shows the generalisation gap."""
    trained, _, preprocess = open_clip.create_model_and_transforms(MODEL, pretrained=str(checkpoint))
    torch.manual_seed(seed)
    untrained, _, _ = open_clip.create_model_and_transforms(MODEL)
    tokenizer = open_clip.get_tokenizer(MODEL)
    rows = {
        "trained, held-out": evaluate(trained.eval(), preprocess, tokenizer, n, seed),
        "random, held-out": evaluate(untrained.eval(), preprocess, tokenizer, n, seed),
        "trained, train split": evaluate(trained.eval(), preprocess, tokenizer, n, seed, split="train"),
    }
    names = list(next(iter(rows.values())))
    print(f"{'':22}" + "".join(f"{name:>13}" for name in names))
    for label, metrics in rows.items():
        print(f"{label:22}" + "".join(f"{metrics[name]:13.3f}" for name in names))
    drawn = {"trained, drawn.py": evaluate_drawn(trained.eval(), preprocess, tokenizer, seed=seed),
             "random, drawn.py": evaluate_drawn(untrained.eval(), preprocess, tokenizer, seed=seed)}
    names = list(next(iter(drawn.values())))
    print(f"{'':22}" + "".join(f"{name:>13}" for name in names))
    for label, metrics in drawn.items():
        print(f"{label:22}" + "".join(f"{metrics[name]:13.3f}" for name in names))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(BUILTIN_MODELS[MODEL].checkpoint_path.parent))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--pool", type=int, default=20000, help="distinct training images")
    parser.add_argument("--canonical-share", type=float, default=0.3, help="captions in canonical wording")
    parser.add_argument("--varied-share", type=float, default=0.5, help="varied renderings in the pool")
    parser.add_argument("--init", default=None, help="checkpoint to fine-tune from (default: random)")
    parser.add_argument("--eval-every", type=int, default=0, help="steps between drawn.py checks")
    parser.add_argument("--eval-n", type=int, default=200, help="distinct specs in the eval gallery")
    args = parser.parse_args()
    torch.set_num_threads(2)
    register_builtin_configs()
    report(train(args), args.eval_n, args.seed)


if __name__ == "__main__":
    main()
