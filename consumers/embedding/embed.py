"""The embed stage: ``OpenCLIPEmbeddingFunction``, the real open_clip model, batched.

Texts and images in one call are grouped by modality and run through the model in batches
of ``batch_size`` (never one at a time), under ``inference_mode`` with the model in ``eval``
mode and open_clip's validation transform. Weights are resolved as Chroma users name them
(consumers/embedding/weights.py): an open_clip pretrained tag through the Hugging Face hub cache, a
local file, a built-in model's shipped checkpoint, or "random" when asked for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from consumers.embedding import backends as B
from consumers.embedding import weights as W
from schemas.errors import EmbeddingError
from schemas.records import Image, Vector

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]


@runtime_checkable
class EmbeddingFunction(Protocol):
    """Chroma's protocol: any callable mapping documents or images to vectors."""

    def __call__(self, input: Any) -> Sequence[Any]: ...


@runtime_checkable
class PreparingEmbeddingFunction(EmbeddingFunction, Protocol):
    """An embedding function whose image preprocessing can run apart from the model."""

    def prepare_image(self, image: Image) -> Any: ...

    def embed_prepared(self, prepared: Sequence[Any]) -> list[Vector]: ...


def as_uint8_rgb(image: Image) -> Image:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise EmbeddingError(f"Expected an HxW or HxWx3 image array, got shape {arr.shape}")
    return arr


class OpenCLIPEmbeddingFunction:
    """Chroma's constructor and defaults (ViT-B-32, laion2b_s34b_b79k, cpu). ``cache_dir``
    is the Hugging Face hub cache to use (default: huggingface_hub's, from HF_HOME);
    ``weights_sha256``, recorded in a collection's spec, makes loading refuse other weights.
    ``backend`` and ``precision`` ("auto": the fastest that passes the parity gate here) pick
    the runtime (consumers/embedding/backends.py); ``choice`` says what load() picked and why."""

    def __init__(self, model_name: str = "ViT-B-32", checkpoint: str | None = W.DEFAULT_CHECKPOINT,
                 device: str = "cpu", *, batch_size: int = 32, precision: Precision = "auto",
                 backend: str = "auto",
                 num_threads: int | None = None, cache_dir: str | None = None,
                 weights_sha256: str | None = None) -> None:
        from consumers.embedding.models import BUILTIN_MODELS

        self.model_name = model_name
        # A built-in model has no pretrained tags: Chroma's default tag means its own weights.
        builtin = model_name in BUILTIN_MODELS and checkpoint in (None, W.DEFAULT_CHECKPOINT)
        self.checkpoint = model_name if builtin else checkpoint
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.backend = backend
        B.candidates(backend, precision, device)  # a typed error now for an unknown name
        #: what load() chose; None before
        self.choice: B.Choice | None = None
        self._runner: B.Runner | None = None
        self.num_threads = num_threads
        self.cache_dir = cache_dir
        self.weights_sha256 = weights_sha256
        #: what load() resolved; None before
        self.weights: W.Weights | None = None
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Any = None
        self._pil_steps: list[Any] | None = None
        self._normalize: tuple[np.ndarray, np.ndarray] | None = None
        self._tokenizer: Any = None

    @staticmethod
    def name() -> str:
        return "open_clip"

    def get_config(self) -> dict[str, Any]:
        """The persisted identity; the weights' sha256 when they are on this machine, so
        that every process embedding for a collection can check it holds the same weights.
        cache_dir is where, not what: each process brings its own."""
        return {"model_name": self.model_name, "checkpoint": self.checkpoint,
                "device": self.device, "batch_size": self.batch_size,
                "precision": self.precision, "backend": self.backend,
                "num_threads": self.num_threads,
                "weights_sha256": self.fingerprint()}

    def fingerprint(self) -> str | None:
        """sha256 of the weights (or 'random'), without downloading; None if not here."""
        if self.weights_sha256 is not None:
            return self.weights_sha256
        if self.weights is not None:
            return W.fingerprint(self.weights)
        try:
            return W.fingerprint(W.resolve(self.model_name, self.checkpoint, self.cache_dir,
                                           download=False))
        except EmbeddingError:
            return None

    @classmethod
    def build_from_config(cls, config: dict[str, Any]) -> OpenCLIPEmbeddingFunction:
        return cls(**config)

    @staticmethod
    def default_space() -> str:
        """Chroma's OpenCLIP default (the space of a collection whose metadata names none)."""
        return "cosine"

    @staticmethod
    def supported_spaces() -> list[str]:
        return ["cosine", "l2", "ip"]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpenCLIPEmbeddingFunction) and \
            other.get_config() == self.get_config()

    __hash__ = None  # type: ignore[assignment]

    def resolve(self) -> W.Weights:
        """Finds (downloading once if need be) and checks the weights; no model is built."""
        weights = W.resolve(self.model_name, self.checkpoint, self.cache_dir)
        assert weights is not None  # only download=False answers None
        W.check(weights, self.weights_sha256, self.model_name, self.checkpoint)
        return weights

    def load(self) -> None:
        """Load the model now (otherwise the first call does)."""
        with self._lock:
            if self._model is not None:
                return
            import open_clip
            import torch

            from consumers.embedding.models import BUILTIN_MODELS, register_builtin_configs

            register_builtin_configs()
            weights = self.resolve()
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            # A tag goes to open_clip as a tag, so that it applies the tag's own preprocessing
            # and activation; the file is already in the cache, so nothing downloads twice.
            pretrained = weights.tag if weights.source == "pretrained" else \
                (None if weights.path is None else str(weights.path))
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=pretrained, device=self.device, cache_dir=self.cache_dir)
            model.eval()
            log.info("OpenCLIP %s: %s", self.model_name, weights.label)
            self._preprocess = preprocess
            self._pil_steps, self._normalize = _split_transform(preprocess)
            self._runner, self.choice = B.select(
                model, self.model_name, W.fingerprint(weights), self.device, self.backend,
                self.precision, builtin=self.model_name in BUILTIN_MODELS, prepare=self._transform,
                tokenize=open_clip.get_tokenizer(self.model_name, cache_dir=self.cache_dir))
            self.weights = weights
            self._model = model

    @property
    def tokenizer(self) -> Any:
        """Loaded on first use: some models (SigLIP) fetch a Hugging Face tokenizer."""
        if self._tokenizer is None:
            import open_clip

            self.load()
            self._tokenizer = open_clip.get_tokenizer(self.model_name, cache_dir=self.cache_dir)
        return self._tokenizer

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    def __call__(self, input: Sequence[str | Image]) -> list[Vector]:
        items = list(input)
        out: list[Vector | None] = [None] * len(items)
        texts = [i for i, x in enumerate(items) if isinstance(x, str)]
        images = [i for i, x in enumerate(items) if isinstance(x, np.ndarray)]
        if len(texts) + len(images) != len(items):
            bad = next(x for x in items if not isinstance(x, (str, np.ndarray)))
            raise EmbeddingError(f"Cannot embed {type(bad).__name__}: expected str or numpy array")
        if texts:
            for i, v in zip(texts, self.embed_texts([items[i] for i in texts])):  # type: ignore[misc]
                out[i] = v
        if images:
            for i, v in zip(images, self.embed_images([items[i] for i in images])):  # type: ignore[misc]
                out[i] = v
        return out  # type: ignore[return-value]

    def embed_query(self, input: Sequence[str | Image]) -> list[Vector]:
        return self(input)

    @property
    def runner(self) -> B.Runner:
        self.load()
        assert self._runner is not None
        return self._runner

    def embed_texts(self, texts: Sequence[str]) -> list[Vector]:
        runner = self.runner
        rows: list[Vector] = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start:start + self.batch_size]))
            rows.extend(runner.encode_text(np.asarray(tokens, dtype=np.int64)))
        return rows

    def prepare_image(self, image: Image) -> Any:
        """open_clip's validation transform for one image; thread-safe, so the pipeline runs
        it on its loader threads while the model thread encodes the previous batch."""

        self.load()
        return self._transform(image)

    def _transform(self, image: Image) -> Any:
        from PIL import Image as PILImage

        pil = PILImage.fromarray(as_uint8_rgb(image))
        if self._pil_steps is None or self._normalize is None:
            return self._preprocess(pil)
        for step in self._pil_steps:
            pil = step(pil)
        if pil.mode != "RGB":
            return self._preprocess(PILImage.fromarray(as_uint8_rgb(image)))
        # ToTensor + Normalize in numpy, in torch's order of operations (same floats): torch
        # ops on these threads would start OpenMP teams spinning against the model's threads.
        mean, std = self._normalize
        chw = np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
        chw /= np.float32(255.0)
        chw -= mean
        chw /= std
        return chw

    def preprocess(self, images: Sequence[Image]) -> Any:
        return _stack([self.prepare_image(im) for im in images])

    def embed_prepared(self, prepared: Sequence[Any]) -> list[Vector]:
        """Encode already transformed images (arrays or tensors) in batches of ``batch_size``."""
        runner = self.runner
        rows: list[Vector] = []
        for start in range(0, len(prepared), self.batch_size):
            rows.extend(runner.encode_image(_stack(prepared[start:start + self.batch_size])))
        return rows

    def embed_images(self, images: Sequence[Image]) -> list[Vector]:
        rows: list[Vector] = []
        for start in range(0, len(images), self.batch_size):
            rows.extend(self.embed_prepared(
                [self.prepare_image(im) for im in images[start:start + self.batch_size]]))
        return rows


def _split_transform(preprocess: Any) -> tuple[list[Any] | None, tuple[np.ndarray, np.ndarray] | None]:
    """open_clip's image transform as (PIL steps, (mean, std)) when it is PIL steps followed
    by ToTensor and Normalize, as every open_clip model's is; (None, None) otherwise, and
    the transform then runs as it is."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or \
            not isinstance(steps[-1], T.Normalize):
        return None, None
    norm = steps[-1]
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(-1, 1, 1)
    if any(isinstance(t, (T.ToTensor, T.Normalize)) for t in steps[:-2]) or mean.shape[0] != 3:
        return None, None
    return steps[:-2], (mean, std)


def _stack(prepared: Sequence[Any]) -> np.ndarray:
    """One batch array from prepared images (numpy arrays or CPU tensors)."""
    return np.stack([np.asarray(x, dtype=np.float32) for x in prepared])
