"""Procedural images of coloured shapes with matching captions, deterministic by seed.

Every image holds 1-3 identical shapes; a spec fixes shape, colour, size, position, count and
texture, and the rendering adds background tint, gradient, noise and small jitter. The
held-out split owns 12 of the 48 shape x colour pairs, which the training split never shows,
so a retrieval score on it measures composition rather than memorised pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

Shape = Literal["circle", "square", "triangle", "star", "cross", "diamond"]
Colour = Literal["red", "orange", "yellow", "green", "blue", "purple", "white", "black"]
Size = Literal["small", "large"]
Position = Literal["left", "right", "top", "bottom", "center"]
Count = Literal[1, 2, 3]
Texture = Literal["solid", "striped", "dotted"]
Attribute = Literal["shape", "colour", "size", "position", "count", "texture"]
Split = Literal["train", "heldout"]

SHAPES: tuple[Shape, ...] = get_args(Shape)
COLOURS: tuple[Colour, ...] = get_args(Colour)
SIZES: tuple[Size, ...] = get_args(Size)
POSITIONS: tuple[Position, ...] = get_args(Position)
COUNTS: tuple[Count, ...] = get_args(Count)
TEXTURES: tuple[Texture, ...] = get_args(Texture)
ATTRIBUTES: frozenset[Attribute] = frozenset(get_args(Attribute))

# Two colours per shape, and most of these colours with two shapes, so that the held-out
# gallery needs the shape as well as the colour; training still shows every shape and every
# colour, only never in these pairs.
HELDOUT_PAIRS: frozenset[tuple[Shape, Colour]] = frozenset(
    {
        ("circle", "red"),
        ("circle", "green"),
        ("square", "orange"),
        ("square", "blue"),
        ("triangle", "yellow"),
        ("triangle", "purple"),
        ("star", "green"),
        ("star", "white"),
        ("cross", "blue"),
        ("cross", "black"),
        ("diamond", "purple"),
        ("diamond", "red"),
    }
)

ImageArray = npt.NDArray[np.uint8]
_Floats = npt.NDArray[np.float64]
_Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Style:
    """How a rendering departs from the plain one (Style() is the plain one): training draws
    varied styles so the model does not learn this rasteriser's look."""

    supersample: int = 2  # drawn this many times larger and averaged; 1 leaves jagged edges
    background: tuple[float, float, float] | None = None  # flat RGB in [0, 1]; None: tinted grey
    shade: float = 1.0  # brightness of the shape's colour
    zoom: float = 1.0  # radius factor
    shift: tuple[float, float] = (0.0, 0.0)  # the group's offset, in frames
    keep_inside: bool = False  # pull shapes that would cross the border back in


PLAIN = Style()


@dataclass(frozen=True)
class ShapeSpec:
    """What one image shows: `count` identical shapes in one region of the frame."""

    shape: Shape
    colour: Colour
    size: Size
    position: Position
    count: Count
    texture: Texture


def matches(a: ShapeSpec, b: ShapeSpec, attributes: Collection[Attribute]) -> bool:
    """True when the specs agree on every attribute a caption mentions."""
    return all(getattr(a, name) == getattr(b, name) for name in attributes)


def all_specs(split: Split) -> list[ShapeSpec]:
    """Every attribute combination of a split, in a fixed order."""
    combos = itertools.product(SHAPES, COLOURS, SIZES, POSITIONS, COUNTS, TEXTURES)
    specs = [ShapeSpec(*combo) for combo in combos]
    return [s for s in specs if ((s.shape, s.colour) in HELDOUT_PAIRS) == (split == "heldout")]


def sample_specs(n: int, split: Split, seed: int) -> list[ShapeSpec]:
    """n specs of a split: distinct while the split has enough combinations, then each
    combination equally often, so a pool covers the attribute space evenly."""
    rng = np.random.default_rng(seed)
    pool = all_specs(split)
    out: list[ShapeSpec] = []
    while len(out) < n:
        out.extend(pool[i] for i in rng.permutation(len(pool))[: n - len(out)])
    return out


# Display colours; render jitters them so that a colour name covers a small range.
_RGB: dict[Colour, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "blue": (40, 80, 230),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Radius as a fraction of the frame; small and large differ enough to survive the jitter.
_RADIUS: dict[Size, float] = {"small": 0.095, "large": 0.15}
# (x, y) of the group's middle and whether the group runs down a column or along a row.
_ANCHOR: dict[Position, tuple[float, float, bool]] = {
    "left": (0.22, 0.5, True),
    "right": (0.78, 0.5, True),
    "top": (0.5, 0.22, False),
    "bottom": (0.5, 0.78, False),
    "center": (0.5, 0.5, False),
}
def _star() -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.15, 0.48)
    return [(float(r * np.cos(a)), float(r * np.sin(a))) for r, a in zip(radii, angles)]


# Outlines in units of the radius, y pointing down; sized so that areas are comparable.
_POLYGONS: dict[Shape, list[tuple[float, float]]] = {
    "square": [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)],
    "diamond": [(0.0, -1.12), (1.12, 0.0), (0.0, 1.12), (-1.12, 0.0)],
    "triangle": [(0.0, -1.08), (1.0, 0.72), (-1.0, 0.72)],
    "cross": [
        (-0.34, -1.0),
        (0.34, -1.0),
        (0.34, -0.34),
        (1.0, -0.34),
        (1.0, 0.34),
        (0.34, 0.34),
        (0.34, 1.0),
        (-0.34, 1.0),
        (-0.34, 0.34),
        (-1.0, 0.34),
        (-1.0, -0.34),
        (-0.34, -0.34),
    ],
    "star": _star(),
}


@lru_cache(maxsize=32)
def _grid(pixels: int) -> tuple[_Floats, _Floats]:
    """Pixel-centre coordinates in [0, 1]; cached because every image of a size shares it."""
    axis = (np.arange(pixels) + 0.5) / pixels
    ys, xs = np.meshgrid(axis, axis, indexing="ij")
    return xs, ys


def _shape_mask(shape: Shape, u: _Floats, v: _Floats) -> _Mask:
    if shape == "circle":
        return np.asarray(u * u + v * v <= 1.0)
    # Even-odd ray casting, which also handles the concave star and cross.
    inside = np.zeros(u.shape, dtype=bool)
    verts = _POLYGONS[shape]
    for (x1, y1), (x2, y2) in zip(verts, verts[1:] + verts[:1]):
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        inside ^= crosses & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
    return inside


def _texture_mask(texture: Texture, xs: _Floats, ys: _Floats, rng: np.random.Generator) -> _Mask:
    """Where a textured shape's interior takes the colour; the rest shows the background."""
    if texture == "solid":
        return np.ones(xs.shape, dtype=bool)
    period = rng.uniform(0.055, 0.07)
    if texture == "striped":
        angle = rng.choice([0.0, 0.25, 0.5, 0.75]) * np.pi + rng.uniform(-0.15, 0.15)
        phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period + rng.uniform()
        return np.asarray(phase % 1.0 < 0.5)
    period *= 1.3
    gx = (xs / period + rng.uniform()) % 1.0 - 0.5
    gy = (ys / period + rng.uniform()) % 1.0 - 0.5
    return np.asarray(gx * gx + gy * gy < 0.27**2)


def _centres(
    spec: ShapeSpec, radius: float, rng: np.random.Generator, style: Style
) -> list[tuple[float, float]]:
    x0, y0, column = _ANCHOR[spec.position]
    x0 += rng.uniform(-0.03, 0.03) + style.shift[0]
    y0 += rng.uniform(-0.03, 0.03) + style.shift[1]
    offsets = (np.arange(spec.count) - (spec.count - 1) / 2) * 2.15 * radius
    out = []
    for off in offsets:
        dx, dy = rng.uniform(-0.015, 0.015, size=2)
        x, y = (x0 + dx, y0 + off + dy) if column else (x0 + off + dx, y0 + dy)
        out.append((float(x), float(y)))
    if style.keep_inside:
        edge = min(0.5, 1.2 * radius)
        out = [(min(max(x, edge), 1 - edge), min(max(y, edge), 1 - edge)) for x, y in out]
    return out


def _span(centre: float, radius: float, pixels: int) -> tuple[int, int]:
    lo = int((centre - 1.25 * radius) * pixels)
    return max(0, lo), min(pixels, int((centre + 1.25 * radius) * pixels) + 2)


def render(spec: ShapeSpec, size: int, rng: np.random.Generator, style: Style = PLAIN) -> ImageArray:
    """An RGB uint8 image (size x size x 3) showing the spec."""
    supersample = style.supersample
    pixels = size * supersample
    xs, ys = _grid(pixels)
    # Mid grey with a tint and a gradient: far from every named colour, so white and black
    # shapes stay visible and no background reads as a colour.
    base = rng.uniform(0.3, 0.7) + rng.normal(0.0, 0.04, size=3)
    slope = rng.normal(0.0, 0.08, size=2)
    canvas = base + ((xs - 0.5) * slope[0] + (ys - 0.5) * slope[1])[..., None]
    if style.background is not None:
        canvas = np.broadcast_to(np.asarray(style.background), canvas.shape).copy()
    colour = (np.asarray(_RGB[spec.colour]) / 255.0 + rng.normal(0.0, 0.04, size=3)) * style.shade
    radius = _RADIUS[spec.size] * rng.uniform(0.9, 1.1) * style.zoom
    pattern = _texture_mask(spec.texture, xs, ys, rng)
    for cx, cy in _centres(spec, radius, rng, style):
        turn = rng.uniform(-0.2, 0.2)
        # Only the box around the shape is tested: every outline lies within 1.2 radii.
        box = (slice(*_span(cy, radius, pixels)), slice(*_span(cx, radius, pixels)))
        du, dv = (xs[box] - cx) / radius, (ys[box] - cy) / radius
        u = du * np.cos(turn) + dv * np.sin(turn)
        v = -du * np.sin(turn) + dv * np.cos(turn)
        body = _shape_mask(spec.shape, u, v)
        # Textured shapes keep a solid rim so their outline stays as readable as a solid one.
        rim = body & ~_shape_mask(spec.shape, u / 0.72, v / 0.72)
        canvas[box][body & (pattern[box] | rim)] = colour
    small = canvas.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    small += rng.normal(0.0, rng.uniform(0.005, 0.04), size=small.shape)
    return np.asarray(np.clip(small * 255.0 + 0.5, 0, 255), dtype=np.uint8)


_COUNT_WORDS: dict[Count, tuple[str, ...]] = {1: ("a", "one"), 2: ("two",), 3: ("three",)}
_SIZE_WORDS: dict[Size, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
_TEXTURE_WORDS: dict[Texture, tuple[str, ...]] = {
    "solid": ("solid", "plain", "filled"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
}
_TEXTURE_SUFFIX: dict[Texture, tuple[str, ...]] = {
    "solid": (),
    "striped": ("with stripes",),
    "dotted": ("with dots", "with polka dots"),
}
_POSITION_WORDS: dict[Position, tuple[str, ...]] = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "top": ("at the top", "near the top", "along the top"),
    "bottom": ("at the bottom", "near the bottom", "along the bottom"),
    "center": ("in the center", "in the middle", "in the centre"),
}
_FRAMES = ("{}", "{}", "an image with {}", "a picture of {}", "a photo of {}", "there is {}")
_OPTIONAL: tuple[Attribute, ...] = ("colour", "size", "position", "count", "texture")


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _noun(shape: Shape, count: Count | None) -> str:
    if count == 1:
        return shape
    return shape + ("es" if shape == "cross" else "s")


def _with_article(words: str) -> str:
    """Fixes 'a' before a vowel, wherever the phrase starts."""
    return words.replace("a ", "an ", 1) if words.startswith("a ") and words[2] in "aeiou" else words


def _noun_phrase(spec: ShapeSpec, mentioned: Collection[Attribute], rng: np.random.Generator) -> str:
    count = spec.count if "count" in mentioned else None
    adjectives = []
    if "size" in mentioned:
        adjectives.append(_pick(rng, _SIZE_WORDS[spec.size]))
    suffix = ""
    if "texture" in mentioned:
        suffixes = _TEXTURE_SUFFIX[spec.texture]
        if suffixes and rng.random() < 0.3:
            suffix = " " + _pick(rng, suffixes)
        else:
            adjectives.append(_pick(rng, _TEXTURE_WORDS[spec.texture]))
    if "colour" in mentioned:
        # Colour right before the noun is the usual order; the other order is seen too.
        adjectives.insert(len(adjectives) if rng.random() < 0.8 else 0, spec.colour)
    words = [_pick(rng, _COUNT_WORDS[count])] if count is not None else []
    words += [*adjectives, _noun(spec.shape, count)]
    return _with_article(" ".join(words) + suffix)


def caption_and_attributes(spec: ShapeSpec, rng: np.random.Generator) -> tuple[str, frozenset[Attribute]]:
    """A caption in varied wording and the attributes it mentions. Half of the captions
    mention everything; the rest drop some attributes, the shape always stays."""
    if rng.random() < 0.5:
        mentioned = ATTRIBUTES
    else:
        mentioned = frozenset(["shape", *(a for a in _OPTIONAL if rng.random() < 0.6)])
    thing = _noun_phrase(spec, mentioned, rng)
    frame = _pick(rng, _FRAMES)
    if frame == "there is {}" and (spec.count > 1 or "count" not in mentioned):
        frame = "there are {}"
    if "position" not in mentioned:
        return frame.format(thing), mentioned
    where = _pick(rng, _POSITION_WORDS[spec.position])
    if frame == "{}" and rng.random() < 0.3:
        return f"{where}, {thing}", mentioned
    return frame.format(f"{thing} {where}"), mentioned


def caption(spec: ShapeSpec, rng: np.random.Generator) -> str:
    """A caption in varied wording; see caption_and_attributes."""
    return caption_and_attributes(spec, rng)[0]


def canonical_caption(spec: ShapeSpec) -> str:
    """The one fixed wording that mentions every attribute, e.g.
    'two small striped red circles on the left'."""
    count = _COUNT_WORDS[spec.count][0]
    where = _POSITION_WORDS[spec.position][0]
    noun = _noun(spec.shape, spec.count)
    return _with_article(f"{count} {spec.size} {spec.texture} {spec.colour} {noun} {where}")


def make_dataset(
    n: int, split: Split, seed: int, size: int
) -> tuple[list[ImageArray], list[str], list[ShapeSpec]]:
    """n rendered images, one varied caption each, and their specs."""
    specs = sample_specs(n, split, seed)
    # A stream separate from sample_specs', so the same seed does not reuse its numbers.
    rng = np.random.default_rng([seed, 1])
    images = [render(s, size, rng) for s in specs]
    captions = [caption(s, rng) for s in specs]
    return images, captions, specs
