"""An evaluation renderer written apart from shapes.py: PIL ImageDraw instead of the numpy
rasteriser, CSS colour values instead of the training palette, its own outlines, free
placement on plain backgrounds, any image size, with or without antialiasing, and JPEG
compression. Nothing here is used in training, so a score on these images measures how the
model reads shapes drawn the way a person would draw them.

Captions are plain, as people type them: "a red circle".
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageColor, ImageDraw

from streamer.training.shapes import COLOURS, HELDOUT_PAIRS, SHAPES, Colour, ImageArray, Shape

# Backgrounds a drawing program offers; each shape colour is drawn only on those it stands out from.
_BACKGROUNDS = ("white", "whitesmoke", "ivory", "lightgray", "silver", "gray", "dimgray", "#202124")
_SIZES = (96, 128, 160, 200, 224, 256)


@dataclass(frozen=True)
class Drawing:
    shape: Shape
    colour: Colour

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape}"

    @property
    def heldout(self) -> bool:
        return (self.shape, self.colour) in HELDOUT_PAIRS


def all_drawings() -> list[Drawing]:
    """Every colour x shape pair, in a fixed order."""
    return [Drawing(shape, colour) for shape, colour in itertools.product(SHAPES, COLOURS)]


def _contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return float(sum(abs(x - y) for x, y in zip(a, b)))


def _outline(shape: Shape, cx: float, cy: float, r: float, turn: float, rng: np.random.Generator
             ) -> list[tuple[float, float]]:
    """Polygon points around (cx, cy) with radius r (circles are drawn apart)."""
    if shape == "square":
        points = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
        scale = 1.0
    elif shape == "triangle":
        points = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
        scale = 1.1
    elif shape == "diamond":
        aspect = rng.uniform(0.65, 1.0)  # a rhombus, often narrower than tall, corners up and down
        points = [(0.0, -1.0), (aspect, 0.0), (0.0, 1.0), (-aspect, 0.0)]
        scale = 1.05
    elif shape == "star":
        inner = rng.uniform(0.38, 0.5)
        points = [((1.0 if k % 2 == 0 else inner) * math.cos(a), (1.0 if k % 2 == 0 else inner) * math.sin(a))
                  for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))]
        scale = 1.15
    else:  # cross: a plus sign
        w = rng.uniform(0.25, 0.36)
        points = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                  (-1, -w), (-w, -w)]
        scale = 0.95
    cos, sin = math.cos(turn), math.sin(turn)
    return [(cx + scale * r * (x * cos - y * sin), cy + scale * r * (x * sin + y * cos)) for x, y in points]


def draw(drawing: Drawing, rng: np.random.Generator) -> ImageArray:
    """One RGB image of the drawing: random size, background, place, turn, AA and JPEG."""
    size = int(rng.choice(_SIZES))
    colour = ImageColor.getrgb(drawing.colour)
    backgrounds = [b for b in _BACKGROUNDS if _contrast(ImageColor.getrgb(b), colour) > 200]
    background = ImageColor.getrgb(str(rng.choice(backgrounds)))
    scale = 4 if rng.random() < 0.5 else 1  # drawn large and reduced: antialiased edges
    canvas = Image.new("RGB", (size * scale, size * scale), background)
    pen = ImageDraw.Draw(canvas)
    r = rng.uniform(0.14, 0.3) * size * scale
    margin = 1.2 * r
    cx = rng.uniform(margin, size * scale - margin)
    cy = rng.uniform(margin, size * scale - margin)
    if drawing.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        pen.polygon(_outline(drawing.shape, cx, cy, r, rng.uniform(-0.25, 0.25), rng), fill=colour)
    if scale > 1:
        canvas = canvas.resize((size, size), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=int(rng.integers(30, 90)))
        canvas = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return np.asarray(canvas, dtype=np.uint8)


def gallery(per_pair: int, seed: int) -> tuple[list[ImageArray], list[Drawing]]:
    """per_pair drawings of every colour x shape pair."""
    rng = np.random.default_rng([seed, 7])
    drawings = [d for d in all_drawings() for _ in range(per_pair)]
    return [draw(d, rng) for d in drawings], drawings
