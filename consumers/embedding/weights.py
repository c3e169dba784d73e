"""Where an OpenCLIP model's weights come from, as Chroma users name them.

``checkpoint`` is one of: an open_clip pretrained tag (``laion2b_s34b_b79k``), resolved
through open_clip's own pretrained registry and downloaded once into the Hugging Face hub
cache by huggingface_hub (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and a
``cache_dir`` apply as for any open_clip user); a local ``.pt/.pth/.bin/.safetensors`` file;
a built-in model's own weights; or ``"random"``, the only way to get random weights.

A file's sha256 is what a collection's spec records, so every process embedding for it can
check that it holds the same weights (``check``)."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from schemas.errors import WeightsError, WeightsMismatchError, WeightsNotFoundError

RANDOM = "random"
#: Chroma's default tag; for a built-in model, which has no tags, it means its own weights.
DEFAULT_CHECKPOINT = "laion2b_s34b_b79k"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

Source = Literal["random", "builtin", "file", "pretrained"]


@dataclass(frozen=True)
class Weights:
    """Resolved weights: a file to load (None for random) and where it came from."""

    source: Source
    path: Path | None = None
    tag: str | None = None
    repo: str | None = None

    @property
    def label(self) -> str:
        """What a person is told ran: 'pretrained laion2b_s34b_b79k', 'built-in', a file name."""
        if self.source == "pretrained":
            return f"pretrained {self.tag} ({self.repo})"
        if self.source == "file" and self.path is not None:
            return self.path.name
        return "built-in weights" if self.source == "builtin" else "RANDOM weights"


def is_path(checkpoint: str) -> bool:
    """A checkpoint naming a file rather than a tag; open_clip tags never hold a separator."""
    return checkpoint.lower().endswith(WEIGHT_SUFFIXES) or "/" in checkpoint or os.sep in checkpoint


def resolve(model_name: str, checkpoint: str | None, cache_dir: str | None = None, *,
            download: bool = True) -> Weights | None:
    """The weights ``checkpoint`` names for ``model_name``. With ``download=False`` nothing
    touches the network and None means "pretrained but not cached here"."""
    from consumers.embedding.models import BUILTIN_MODELS

    builtin = BUILTIN_MODELS.get(model_name)
    if checkpoint == RANDOM:
        return Weights("random")
    if builtin is not None and checkpoint in (None, DEFAULT_CHECKPOINT, model_name):
        return Weights("builtin", builtin.checkpoint_path)
    if checkpoint is None:
        raise WeightsError(
            f"OpenCLIP {model_name} needs weights: pass checkpoint= an open_clip pretrained tag "
            f"({_tags_hint(model_name)}), a local .pt/.bin/.safetensors file, or {RANDOM!r} "
            "for random weights")
    if is_path(checkpoint):
        return Weights("file", _local_file(checkpoint, cache_dir))
    return _pretrained(model_name, checkpoint, cache_dir, download)


def _local_file(checkpoint: str, cache_dir: str | None) -> Path:
    path = Path(checkpoint).expanduser()
    if path.is_file():
        return path
    # A spec names the file its creator used; a server finds its own copy in its model cache.
    if cache_dir is not None and (Path(cache_dir) / path.name).is_file():
        return Path(cache_dir) / path.name
    where = f" nor in the model cache {cache_dir}" if cache_dir else ""
    raise WeightsNotFoundError(f"checkpoint {checkpoint!r} is not a local file{where}: pass the "
                               "path of an open_clip .pt/.bin or .safetensors file, or a pretrained tag")


def _tags_hint(model_name: str) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    return "one of " + ", ".join(tags) if tags else f"open_clip has none for {model_name}"


def _pretrained(model_name: str, tag: str, cache_dir: str | None, download: bool) -> Weights | None:
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg: dict[str, Any] = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        raise WeightsError(f"{tag!r} is neither a file nor an open_clip pretrained tag of {model_name} "
                           f"({_tags_hint(model_name)})")
    hub = str(cfg.get("hf_hub") or "")
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    if not repo:  # weights open_clip fetches by URL (OpenAI's), into its own cache
        url = str(cfg.get("url"))
        target = Path(cache_dir or Path("~/.cache/clip").expanduser()) / os.path.basename(url)
        if not download:
            return Weights("pretrained", target, tag, url) if target.is_file() else None
        try:
            return Weights("pretrained", Path(download_pretrained(cfg, cache_dir=cache_dir)), tag, url)
        except OSError as exc:
            raise WeightsNotFoundError(
                f"OpenCLIP {model_name} weights {tag!r} are not cached and cannot be downloaded "
                f"({exc}): download {url} on a connected machine and place it at {target}, or pass "
                "its path as checkpoint=") from exc
    if not download:
        cached = _cached(repo, filename, cache_dir)
        return Weights("pretrained", cached, tag, repo) if cached else None
    try:
        # open_clip's own download (safetensors first, with huggingface_hub's progress bar).
        path = download_pretrained(cfg, cache_dir=cache_dir)
    except (OSError, ValueError, RuntimeError) as exc:
        raise WeightsNotFoundError(_not_found(model_name, tag, repo, filename, cache_dir)) from exc
    return Weights("pretrained", Path(path), tag, repo)


def _safe_name(filename: str) -> str | None:
    """The safetensors file open_clip prefers to ``filename`` on the hub, if any."""
    if filename == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors"
    return filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None


def _cached(repo: str, filename: str, cache_dir: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in (_safe_name(filename), filename):
        if name is not None:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(hit, str):
                return Path(hit)
    return None


def hub_cache(cache_dir: str | None) -> str:
    from huggingface_hub import constants

    return cache_dir or constants.HF_HUB_CACHE


def _not_found(model_name: str, tag: str, repo: str, filename: str, cache_dir: str | None) -> str:
    cache = hub_cache(cache_dir)
    folder = Path(cache) / f"models--{repo.replace('/', '--')}"
    names = " or ".join(n for n in (_safe_name(filename), filename) if n)
    return (f"OpenCLIP {model_name} pretrained {tag!r} is not in the Hugging Face cache {cache} and "
            f"cannot be downloaded here (offline or no network). It is the file {names} of "
            f"https://huggingface.co/{repo}: on a connected machine run `hf download {repo} {filename}` "
            f"and copy its {folder.name} folder into {cache}, or place the file at "
            f"{folder}/snapshots/<revision>/{filename} and write <revision> into {folder}/refs/main, "
            "or pass the file's path as checkpoint=")


_hashes: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256(path: Path) -> str:
    """The file's sha256, remembered per (path, size, mtime): specs ask for it often."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        known = _hashes.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    with _hash_lock:
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def fingerprint(weights: Weights | None) -> str | None:
    """What a spec records: the file's sha256, 'random', or None when not resolvable here."""
    if weights is None:
        return None
    if weights.path is None:
        return RANDOM
    return sha256(weights.path)


def check(weights: Weights, expected: str | None, model_name: str, checkpoint: str | None) -> None:
    """Refuses weights that differ from those a collection's spec records."""
    got = fingerprint(weights)
    if expected is not None and got != expected:
        raise WeightsMismatchError(
            f"OpenCLIP {model_name} checkpoint {checkpoint!r} resolved to {weights.path or RANDOM} "
            f"(sha256 {got}), but the collection was created with weights of sha256 {expected}: "
            "every process must embed with the same weights")
