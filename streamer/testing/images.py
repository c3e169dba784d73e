"""Real photos for tests and benchmarks: scikit-image's samples, cropped and resized, written
as JPEG and PNG files. scikit-image is a dev extra, imported only when photos are made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(640, 480), (1024, 768), (320, 240), (800, 600)]


def photo_files(n: int, directory: Path) -> list[str]:
    """N real photos (scikit-image samples, cropped and resized) as JPEG and PNG files."""
    from skimage import data

    samples = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    sources = [getattr(data, name)() for name in samples]  # skimage.data is untyped
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = Image.fromarray(src[y:y + 3 * h // 4, x:x + 3 * w // 4]).convert("RGB")
        img = crop.resize(SIZES[i % len(SIZES)])
        path = directory / (f"img{i:05d}.jpg" if i % 3 else f"img{i:05d}.png")
        img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path)
        paths.append(str(path))
    return paths
