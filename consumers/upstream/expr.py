"""The expression language of source mappings (``consumers/upstream/mapping.py``): JSON paths over an
upstream record, with alternatives, literals, filters and templates. Pure.

``$`` is the event value (or the current element of a mapping's ``records``), ``$key`` the
record key (parsed as JSON when it is JSON, else text), ``$headers.NAME`` a header as text,
``$topic``, ``$partition``, ``$offset``, ``$timestamp``. Steps: ``.name``, ``["any name"]``,
``[3]``, ``[-1]``. ``a ?? b`` takes the first present, non-null alternative, ``'text'`` is
a literal and ``| f`` applies a filter (str, int, float, lower, urldecode, base64, json).
A template puts expressions in braces: ``"{$.bucket}/{$.key | urldecode}"``.

Hand-written rather than a JSONPath library: the roots beyond the value (key, headers,
offsets), null-as-absent coalescing, filters and templates are the point, and they are not
JSONPath; the path subset itself is a dozen lines."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import unquote_plus

import orjson

from schemas.errors import InvalidArgumentError, SchemaError


class _Absent:
    """An expression found nothing (a missing key, an index out of range, or null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True, slots=True)
class Context:
    value: Any
    key: Any
    headers: dict[str, str]
    meta: dict[str, Any]

    def root(self, name: str) -> Any:
        if name == "":
            return self.value
        if name == "key":
            return self.key
        if name == "headers":
            return self.headers
        return self.meta.get(name, ABSENT)


# ---- expressions --------------------------------------------------------------------
_ROOTS = ("", "key", "headers", "topic", "partition", "offset", "timestamp")
_PATH = re.compile(r"""\$([a-z]*)((?:\.[\w\-:]+|\[-?\d+\]|\["[^"]*"\]|\['[^']*'\])*)""")
_STEP = re.compile(r"""\.([\w\-:]+)|\[(-?\d+)\]|\["([^"]*)"\]|\['([^']*)'\]""")
_TOKEN = re.compile(r"""\s*(?:(\?\?)|(\|)\s*([a-z0-9]+)|'([^']*)'|(\$))""")
_NAME_STEP = re.compile(r"[\w\-:]+")
_PLACEHOLDER = re.compile(r"\{(\$[^{}]*)\}")


def _to_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    raise SchemaError(f"expected a text or number, got {type(v).__name__} {_short(v)}")


def _number(kind: type[int] | type[float]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise SchemaError(f"cannot convert {_short(v)} to {kind.__name__}")
        try:
            return kind(v)
        except ValueError:
            raise SchemaError(f"cannot convert {_short(v)} to {kind.__name__}") from None
    return convert


def _b64(v: Any) -> bytes:
    try:
        return base64.b64decode(_to_str(v), validate=True)
    except binascii.Error as exc:
        raise SchemaError(f"not base64: {exc}") from None


FILTERS: dict[str, Callable[[Any], Any]] = {
    "str": _to_str, "int": _number(int), "float": _number(float),
    "lower": lambda v: _to_str(v).lower(), "urldecode": lambda v: unquote_plus(_to_str(v)),
    "base64": _b64, "json": lambda v: orjson.dumps(v).decode(),
}


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class _Path:
    root: str
    steps: tuple[str | int, ...]

    def eval(self, ctx: Context) -> Any:
        node = ctx.root(self.root)
        for step in self.steps:
            found = (isinstance(step, int) and isinstance(node, list) and -len(node) <= step < len(node)) \
                or (isinstance(step, str) and isinstance(node, dict) and step in node)
            if not found:
                return ABSENT
            node = node[step]
        return ABSENT if node is None else node


@dataclass(frozen=True, slots=True)
class Expr:
    """``alt ?? alt ... | filter ...``: the first alternative that is present, filtered."""

    alternatives: tuple[_Path | str, ...]
    filters: tuple[str, ...] = ()

    def eval(self, ctx: Context) -> Any:
        for alt in self.alternatives:
            v = alt if isinstance(alt, str) else alt.eval(ctx)
            if v is not ABSENT:
                for name in self.filters:
                    try:
                        v = FILTERS[name](v)
                    except SchemaError as exc:
                        raise SchemaError(f"{self}: {exc}") from None
                return v
        return ABSENT

    def __str__(self) -> str:
        alts = " ?? ".join(repr(a) if isinstance(a, str) else _path_text(a) for a in self.alternatives)
        return " | ".join([alts, *self.filters])


def _path_text(p: _Path) -> str:
    return "$" + p.root + "".join(
        f"[{s}]" if isinstance(s, int) else f".{s}" if _NAME_STEP.fullmatch(s) else f'["{s}"]'
        for s in p.steps)


def parse_expr(text: str) -> Expr:
    alts: list[_Path | str] = []
    filters: list[str] = []
    pos, want_alt = 0, True
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise InvalidArgumentError(f"Bad expression {text!r} at {text[pos:]!r}")
        if m.group(1) and not want_alt and not filters:
            want_alt, pos = True, m.end()
        elif m.group(2) and not want_alt:
            if m.group(3) not in FILTERS:
                raise InvalidArgumentError(
                    f"Unknown filter {m.group(3)!r} in {text!r}; use one of {', '.join(FILTERS)}")
            filters.append(m.group(3))
            pos = m.end()
        elif m.group(4) is not None and want_alt:
            alts.append(m.group(4))
            want_alt, pos = False, m.end()
        elif m.group(5) and want_alt:
            path = _PATH.match(text, m.start(5))
            if path is None or path.group(1) not in _ROOTS:
                raise InvalidArgumentError(f"Bad path in {text!r}: roots are $, "
                                           + ", ".join(f"${r}" for r in _ROOTS[1:]))
            steps = tuple(int(s[1]) if s[1] else next(g for g in (s[0], s[2], s[3]) if g)
                          for s in _STEP.findall(path.group(2)))
            alts.append(_Path(path.group(1), steps))
            want_alt, pos = False, path.end()
        else:
            raise InvalidArgumentError(f"Bad expression {text!r} at {text[pos:]!r}")
    if want_alt:
        raise InvalidArgumentError(f"Incomplete expression {text!r}")
    return Expr(tuple(alts), tuple(filters))


@dataclass(frozen=True, slots=True)
class Template:
    """Literal text with ``{expression}`` placeholders; absent if any placeholder is."""

    parts: tuple[str | Expr, ...]

    def eval(self, ctx: Context) -> Any:
        out: list[str] = []
        for part in self.parts:
            v = part if isinstance(part, str) else part.eval(ctx)
            if v is ABSENT:
                return ABSENT
            out.append(_to_str(v))
        return "".join(out)


@dataclass(frozen=True, slots=True)
class Field:
    """A mapped value: alternatives (expressions, templates or constants), then an optional
    lookup table whose keys may be glob patterns, then a default."""

    sources: tuple[Expr | Template | Any, ...]
    table: tuple[tuple[str, Any], ...] = ()
    default: Any = ABSENT

    def eval(self, ctx: Context) -> Any:
        v = ABSENT
        for src in self.sources:
            v = src.eval(ctx) if isinstance(src, (Expr, Template)) else src
            if v is not ABSENT:
                break
        if v is not ABSENT and self.table:
            text = _to_str(v)
            hit = next((out for pat, out in self.table if pat == text), ABSENT)
            if hit is ABSENT:
                hit = next((out for pat, out in self.table if fnmatchcase(text, pat)), ABSENT)
            if hit is ABSENT:
                raise SchemaError(f"No mapping for {text!r}; expected one of "
                                  + ", ".join(p for p, _ in self.table))
            v = hit
        return self.default if v is ABSENT else v


def _source(raw: Any) -> Expr | Template | Any:
    if isinstance(raw, str) and raw.lstrip().startswith("$"):
        return parse_expr(raw)
    if isinstance(raw, str) and "{$" in raw:
        parts: list[str | Expr] = []
        last = 0
        for m in _PLACEHOLDER.finditer(raw):
            parts += [raw[last:m.start()], parse_expr(m.group(1))]
            last = m.end()
        return Template(tuple(p for p in [*parts, raw[last:]] if p != ""))
    return raw


def compile_field(raw: Any, where: str) -> Field:
    try:
        if isinstance(raw, dict):
            unknown = set(raw) - {"value", "map", "default"}
            if unknown or ("value" not in raw and "default" not in raw):
                raise InvalidArgumentError(
                    f"use keys value, map, default (got {', '.join(sorted(raw))})")
            inner = compile_field(raw.get("value", []), where)
            table = raw.get("map") or {}
            if not isinstance(table, dict):
                raise InvalidArgumentError("map must be a table")
            return Field(inner.sources, tuple((str(k), v) for k, v in table.items()),
                         raw.get("default", ABSENT))
        raw_list = raw if isinstance(raw, list) else [raw]
        return Field(tuple(_source(r) for r in raw_list))
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{where}: {exc}") from None
