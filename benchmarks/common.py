"""Shared benchmark helpers: real photos from scikit-image's samples, timing, machine info."""

from __future__ import annotations

import os
import platform
import statistics
import time
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


def percentiles(samples: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return qs[49] * 1000, qs[98] * 1000


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
