"""Real photos for tests and benchmarks: scikit-image's samples, cropped and resized (written
as JPEG and PNG files), or resized with sensor-like noise as pixel arrays, and their encoded
bytes. scikit-image is a dev extra, imported only when photos are made."""

from __future__ import annotations

import io
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


def photo(name: str, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A real sample photo resized to (width, height), with sensor-like noise so that it
    compresses like a camera's output rather than like a smooth upscale."""
    from skimage import data as samples

    base = Image.fromarray(getattr(samples, name)()).convert("RGB").resize((width, height),
                                                                           Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).integers(-3, 4, (height, width, 3), dtype=np.int16)
    pixels: np.ndarray = np.clip(np.asarray(base, np.int16) + noise, 0, 255).astype(np.uint8)
    return pixels


def encode(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()
