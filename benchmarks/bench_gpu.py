"""The same backends on a GPU: images/s, texts/s and parity to fp32 for ``device="cuda"``
(torch fp32, bf16 or fp16 behind the same gate, pinned host memory, a batch sized to the
device). Prints a skip line and exits 0 where no GPU is present.

    python -m benchmarks.bench_gpu [--images 256] [--texts 512] [--batch 0 (auto)]"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def device_batch(free_bytes: int, per_item_bytes: int = 24 << 20) -> int:
    """A power of two whose activations fit in a quarter of the free memory (ViT-B-32 needs
    about 24 MiB per image in bf16 with headroom), between 32 and 1024."""
    n = 32
    while n < 1024 and 2 * n * per_item_bytes <= free_bytes // 4:
        n *= 2
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--batch", type=int, default=0, help="0: sized to the device's free memory")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: skipped, no CUDA device here")
        return 0
    from benchmarks import backends
    from streamer.testing.images import photo_files

    free, _ = torch.cuda.mem_get_info()
    batch = args.batch or device_batch(free)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = args.checkpoint or backends.random_weights(args.model, work)
        uris = photo_files(args.images, work / "photos")
        rows, auto = backends.measure(args.model, checkpoint, uris, args.texts, batch, "cuda")
    print(f"{torch.cuda.get_device_name()}: {args.model}, batch {batch}, {args.images} photos, "
          f"{args.texts} texts")
    backends.print_rows(rows, auto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
