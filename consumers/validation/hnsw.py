"""Chroma's HNSW configuration (``configuration={"hnsw": {...}}``): which keys a create and a
modify take, their types and messages (chromadb 1.5.9's, from its Rust validation), Chroma's
defaults, and the usearch parameters they become (``max_neighbors`` -> connectivity,
``ef_construction`` -> expansion_add, ``ef_search`` -> expansion_search)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.errors import InvalidArgumentError
from schemas.records import CollectionSpec

#: Chroma's defaults, as its ``configuration_json`` reports them.
DEFAULTS: dict[str, Any] = {"ef_construction": 100, "ef_search": 100, "max_neighbors": 16,
                            "resize_factor": 1.2, "sync_threshold": 1000}
CREATE_KEYS = ("space", "ef_construction", "ef_search", "max_neighbors", "num_threads",
               "resize_factor", "sync_threshold", "batch_size")
MODIFY_KEYS = ("ef_search", "max_neighbors", "num_threads", "resize_factor", "sync_threshold",
               "batch_size")
#: What ``configuration_json["hnsw"]`` shows (num_threads and batch_size are not shown).
SHOWN = ("ef_construction", "ef_search", "max_neighbors", "resize_factor", "sync_threshold")
SPACES = ("l2", "cosine", "ip")


def _usize(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = {str: "string", bool: "boolean"}.get(type(value), type(value).__name__)
        shown = f'"{value}"' if isinstance(value, str) else f"`{value}`"
        raise InvalidArgumentError(f"invalid type: {kind} {shown}, expected usize")
    if isinstance(value, float):
        raise InvalidArgumentError(f"invalid type: floating point `{value}`, expected usize")
    if value < 0:
        raise InvalidArgumentError(f"invalid value: integer `{value}`, expected usize")
    return value


def parse(section: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The keys of one ``hnsw`` section, checked as Chroma checks them; ``space`` included
    when given (the caller decides the space)."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise InvalidArgumentError(f"invalid type: expected struct HnswConfiguration, got {section!r}")
    out: dict[str, Any] = {}
    for key, value in section.items():
        if value is None:
            continue
        if key not in allowed:
            expected = ", ".join(f"`{k}`" for k in allowed)
            raise InvalidArgumentError(f"unknown field `{key}`, expected one of {expected}")
        if key == "space":
            if value not in SPACES:
                raise InvalidArgumentError(
                    f"unknown variant `{value}`, expected one of `l2`, `cosine`, `ip`")
            out[key] = value
        elif key == "resize_factor":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgumentError(f"invalid type: {value!r}, expected f64")
            out[key] = float(value)
        else:
            out[key] = _usize(value)
    return out


def modified(spec: CollectionSpec, configuration: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The spec's HNSW parameters after a modify's ``configuration``."""
    if configuration is None:
        return spec.hnsw
    unknown = set(configuration) - {"hnsw", "spann", "embedding_function"}
    if unknown:
        raise InvalidArgumentError(f"unknown field `{sorted(unknown)[0]}`, expected one of "
                                   "`hnsw`, `spann`, `embedding_function`")
    changes = parse(configuration.get("hnsw"), MODIFY_KEYS)
    return {**(spec.hnsw or {}), **changes} or None


def shown(spec: CollectionSpec) -> dict[str, Any]:
    """``configuration_json["hnsw"]``: the space and every shown parameter."""
    given = spec.hnsw or {}
    return {"space": spec.space, **{k: given.get(k, DEFAULTS[k]) for k in SHOWN}}


def index_params(spec: CollectionSpec) -> dict[str, int]:
    """usearch's parameters for the spec: connectivity below 2 is not a graph, so it is 2."""
    given = {**DEFAULTS, **(spec.hnsw or {})}
    return {"connectivity": max(2, int(given["max_neighbors"])),
            "expansion_add": max(1, int(given["ef_construction"])),
            "expansion_search": max(1, int(given["ef_search"]))}
