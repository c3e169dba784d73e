"""Varied renderings for training: other image sizes, flat light or dark backgrounds,
jagged or smooth edges, shades of each colour, bigger shapes anywhere in the frame, and
JPEG compression. The same specs and captions as the plain renderings; only the look moves."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from streamer.training.shapes import ImageArray, ShapeSpec, Style, render

SIZES = (40, 48, 64, 80, 96, 128, 160)
# Radius factors per size word that keep small below large at every zoom.
_ZOOM = {"small": (0.9, 1.5), "large": (1.0, 2.0)}


def _background(spec: ShapeSpec, rng: np.random.Generator) -> tuple[float, float, float] | None:
    """None (the plain tinted grey) or a flat near-neutral colour the shape stands out from."""
    kind = rng.choice(["plain", "light", "mid", "dark"])
    if kind == "light" and spec.colour in ("white", "yellow"):
        kind = "dark"
    if kind == "dark" and spec.colour in ("black", "blue", "purple"):
        kind = "light"
    if kind == "plain":
        return None
    level = {"light": (0.82, 1.0), "mid": (0.4, 0.65), "dark": (0.05, 0.25)}[str(kind)]
    grey = rng.uniform(*level)
    r, g, b = np.clip(grey + rng.normal(0.0, 0.015, size=3), 0.0, 1.0)
    return float(r), float(g), float(b)


def varied_style(spec: ShapeSpec, rng: np.random.Generator) -> tuple[int, Style]:
    """An image size and a style for one training image."""
    size = int(rng.choice(SIZES))
    single = spec.count == 1
    zoom = rng.uniform(*_ZOOM[spec.size]) if single else rng.uniform(1.0, 1.2)
    shift = tuple(rng.uniform(-0.12, 0.12, size=2)) if single else (0.0, 0.0)
    # Darker shades of a colour keep its name; yellow and orange turn olive and brown first.
    shades = {"white": (1.0, 1.0), "black": (1.0, 1.0), "yellow": (0.85, 1.05), "orange": (0.8, 1.05)}
    return size, Style(
        supersample=int(rng.choice([1, 1, 2, 3])),
        background=_background(spec, rng),
        shade=rng.uniform(*shades.get(spec.colour, (0.55, 1.1))),
        zoom=zoom,
        shift=(float(shift[0]), float(shift[1])),
        keep_inside=True,
    )


def jpeg(image: ImageArray, quality: int) -> ImageArray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.uint8)


def render_varied(spec: ShapeSpec, rng: np.random.Generator) -> ImageArray:
    """One training image of the spec in a varied style, JPEG-compressed half the time."""
    size, style = varied_style(spec, rng)
    image = render(spec, size, rng, style)
    return jpeg(image, int(rng.integers(25, 95))) if rng.random() < 0.5 else image
