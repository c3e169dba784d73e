"""Built-in OpenCLIP models that ship in the repository: an open_clip config and a checkpoint
each, loadable offline by name once their configs are registered with open_clip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

MODELS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BuiltinModel:
    """A model name open_clip knows after register_builtin_configs, and its weights."""

    name: str
    config_path: Path
    checkpoint_path: Path


def _builtin(name: str) -> BuiltinModel:
    return BuiltinModel(name, MODELS_DIR / f"{name}.json", MODELS_DIR / f"{name}.safetensors")


BUILTIN_MODELS: Mapping[str, BuiltinModel] = MappingProxyType({"streamer-tiny": _builtin("streamer-tiny")})


@cache
def register_builtin_configs() -> None:
    """Adds this folder's configs to open_clip's registry; cached, as every call would
    otherwise append the folder again and rescan."""
    # Imported here: open_clip pulls in torch, and reading BUILTIN_MODELS should not.
    import open_clip

    open_clip.add_model_config(MODELS_DIR)
