"""Runtime backends for an OpenCLIP model, chosen at load behind a parity gate.

A backend runs both towers of one loaded open_clip model: PyTorch eager (fp32, bf16 on a CPU
that does bf16 natively, fp16/bf16 on CUDA) or OpenVINO (f32, bf16). OpenVINO rather than ONNX
Runtime: on this machine kind it was the faster of the two in f32 and the only one with a bf16
path on CPU (issue 15's measurements), and its wheel needs no torch.

``backend="auto"`` / ``precision="auto"`` try candidates fastest first (the order measured on
AVX-512 BF16 CPUs: OpenVINO bf16, torch bf16, OpenVINO f32, torch fp32) and keep the first
that passes the gate: a fixed probe of images and texts embedded by the candidate and by torch
fp32, every cosine >= ``PARITY``. A refused candidate is logged with its worst cosine.

OpenVINO exports are cached on disk per (architecture, weights hash, runtime, input shapes):
a directory of IR files written under a temporary name, fsynced, then renamed into place, so
concurrent processes never see half a model; OpenVINO's own compiled-blob cache sits beside
it and is keyed by OpenVINO on precision and the CPU. The batch dimension is dynamic: one
export serves every batch size."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from prometheus_client import Gauge

from consumers.runtime.files import fsync_path
from schemas.errors import EmbeddingError

log = logging.getLogger(__name__)

#: every probe cosine of a candidate against torch fp32 must reach this
PARITY = 0.9995
BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
Precision = Literal["auto", "fp32", "bf16", "fp16"]

EMBEDDING_BACKEND = Gauge("streamer_embedding_backend",
                          "1 for the backend/precision each loaded model runs with",
                          ["model", "backend", "precision"])
PROBE_TEXTS = ("a photo of a dog", "a red circle on a white background",
               "two people walking on a beach at sunset", "a close-up of a green leaf",
               "a city street at night with cars", "an empty room")


class Runner(Protocol):
    """Both towers; inputs as numpy (float images NCHW, int64 tokens), outputs L2-normalised
    float32 rows."""

    def encode_image(self, batch: np.ndarray) -> np.ndarray: ...

    def encode_text(self, tokens: np.ndarray) -> np.ndarray: ...


@dataclass
class Choice:
    """What a loaded model runs with and why; ``load_s`` is the first-load cost of the
    choice (export or cache read, compile, gate)."""

    backend: str
    precision: str
    device: str
    reason: str
    load_s: float = 0.0
    cached: bool = False
    min_cosine: float | None = None
    refused: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass(frozen=True)
class Model:
    """The loaded fp32 model and what identifies it for the export cache."""

    module: Any
    name: str
    weights: str  # sha256 of the weights file, or of the parameters for random weights
    image_size: int
    context_length: int
    device: str
    cache_dir: Path


# ---- runners ----------------------------------------------------------------------------
class TorchRunner:
    """PyTorch eager; bf16/fp16 on a cast copy so the fp32 reference stays intact."""

    def __init__(self, model: Model, precision: str) -> None:
        import torch

        self.device = model.device
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.module = model.module if precision == "fp32" else \
            copy.deepcopy(model.module).to(self.dtype)
        self._cuda = self.device.startswith("cuda")

    def _run(self, encode: Callable[[Any], Any], array: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(array))
        if self._cuda:  # pinned host memory: the copy overlaps the previous batch's compute
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            if x.is_floating_point():
                x = x.to(self.dtype)
            feats = torch.nn.functional.normalize(encode(x).float(), dim=-1)
        out: np.ndarray = feats.cpu().numpy().astype(np.float32, copy=False)
        return out

    def encode_image(self, batch: np.ndarray) -> np.ndarray:
        return self._run(self.module.encode_image, batch)

    def encode_text(self, tokens: np.ndarray) -> np.ndarray:
        return self._run(self.module.encode_text, tokens)


class OpenVINORunner:
    """Both towers exported to OpenVINO IR (cached), compiled for the CPU at ``precision``."""

    def __init__(self, model: Model, precision: str) -> None:
        import openvino as ov

        if not model.device.startswith("cpu"):
            raise EmbeddingError(f"OpenVINO runs on the CPU here, not {model.device}")
        directory, self.cached = export_openvino(model)
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(directory / "compiled")})
        hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
        cfg = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        self._image = core.compile_model(str(directory / "image.xml"), "CPU", cfg)
        self._text = core.compile_model(str(directory / "text.xml"), "CPU", cfg)

    def encode_image(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._image(np.ascontiguousarray(batch, dtype=np.float32))[0],
                          dtype=np.float32)

    def encode_text(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(self._text(np.ascontiguousarray(tokens, dtype=np.int64))[0],
                          dtype=np.float32)


#: backend name -> runner factory; tests add a perturbed one to see the gate refuse it
RUNTIMES: dict[str, Callable[[Model, str], Runner]] = {
    "torch": TorchRunner, "openvino": OpenVINORunner}


# ---- export cache -----------------------------------------------------------------------
def cache_root() -> Path:
    env = os.environ.get("STREAMER_COMPILED_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) \
        / "streamer" / "compiled"
    return base


def export_key(model: Model, runtime: str, version: str) -> str:
    ident = {"arch": model.name, "weights": model.weights, "runtime": runtime, "version": version,
             "image": [-1, 3, model.image_size, model.image_size],
             "text": [-1, model.context_length]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def export_openvino(model: Model) -> tuple[Path, bool]:
    """The IR directory for this model, exported once; True when it came from the cache.

    The export runs in a child process: torch.jit.trace, which OpenVINO's converter uses,
    crawls for minutes in a process that has loaded usearch's OpenMP runtime (every server
    has), and a child also returns the converter's memory when it exits."""
    import openvino as ov
    import torch

    final = model.cache_dir / export_key(model, "openvino", ov.__version__)
    if (final / "done").is_file():
        return final, True
    model.cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in model.cache_dir.glob(".tmp-*"):  # left by a process killed mid-export
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = model.cache_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        torch.save(model.module.state_dict(), tmp / "state.pt")
        root = str(Path(__file__).resolve().parents[2])  # above consumers/embedding/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        done = subprocess.run(
            [sys.executable, "-m", "consumers.embedding.backends", model.name, str(tmp),
             str(model.image_size), str(model.context_length)],
            env=env, capture_output=True, text=True, check=False)
        (tmp / "state.pt").unlink()
        if done.returncode != 0:
            raise EmbeddingError(f"OpenVINO export of {model.name} failed: "
                                 f"{done.stderr.strip()[-2000:]}")
        (tmp / "done").write_text(json.dumps({"model": model.name, "weights": model.weights}))
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: its export is as good as ours
            if not (final / "done").is_file():
                raise
        fsync_path(model.cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, False


def _export_child(name: str, directory: Path, size: int, ctx: int) -> None:
    """In the child: rebuild the model from the saved state and write both towers' IR."""
    import open_clip
    import openvino as ov
    import torch

    from consumers.embedding.models import register_builtin_configs

    register_builtin_configs()
    module = open_clip.create_model(name, pretrained=None)
    module.load_state_dict(torch.load(directory / "state.pt", weights_only=True))
    module.eval()
    with torch.no_grad():
        image = ov.convert_model(_tower(module, "image"),
                                 example_input=torch.zeros(2, 3, size, size),
                                 input=[((-1, 3, size, size), ov.Type.f32)])
        text = ov.convert_model(_tower(module, "text"),
                                example_input=torch.zeros(2, ctx, dtype=torch.int64),
                                input=[((-1, ctx), ov.Type.i64)])
    # f32 IR: the precision is chosen at compile time, so one export serves f32 and bf16.
    ov.save_model(image, str(directory / "image.xml"), compress_to_fp16=False)
    ov.save_model(text, str(directory / "text.xml"), compress_to_fp16=False)


def _tower(model: Any, which: str) -> Any:
    import torch

    class Tower(torch.nn.Module):
        """One tower with the normalisation inside the graph."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            enc = self.model.encode_image if which == "image" else self.model.encode_text
            return torch.nn.functional.normalize(enc(x), dim=-1)

    return Tower()


# ---- choice -----------------------------------------------------------------------------
@cache
def native_bf16() -> bool:
    """The CPU does bf16 in hardware (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def candidates(backend: str, precision: str, device: str) -> list[tuple[str, str]]:
    """Fastest first, torch fp32 (the reference) always last."""
    if backend not in RUNTIMES and backend != "auto":
        raise EmbeddingError(f"Unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise EmbeddingError(f"Unknown precision {precision!r}: one of {', '.join(PRECISIONS)}")
    cuda = device.startswith("cuda")
    runtimes = (["torch"] if cuda else ["openvino", "torch"]) if backend == "auto" else [backend]
    if precision != "auto":
        precs = [precision]
    elif cuda:
        precs = ["bf16" if _cuda_bf16() else "fp16", "fp32"]
    else:
        precs = (["bf16"] if native_bf16() else []) + ["fp32"]
    out = [(r, p) for p in precs for r in runtimes]
    if ("torch", "fp32") not in out:
        out.append(("torch", "fp32"))
    return out


def policy(backend: str, precision: str, device: str) -> str:
    """What a spec's backend/precision mean on this machine, for ``streamer stats``."""
    order = " > ".join(f"{r}/{p}" for r, p in candidates(backend, precision, device))
    return f"{backend}/{precision}: first passing the parity gate of {order}"


def _cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a.astype(np.float64) * b).sum(1).min())


def choose(model: Model, backend: str, precision: str, probe_images: np.ndarray,
           probe_tokens: np.ndarray) -> tuple[Runner, Choice]:
    """The first candidate whose probe embeddings all reach ``PARITY`` against torch fp32."""
    reference = TorchRunner(model, "fp32")
    refused: list[str] = []
    ref: tuple[np.ndarray, np.ndarray] | None = None
    for runtime, prec in candidates(backend, precision, model.device):
        if (runtime, prec) == ("torch", "fp32"):
            why = "; ".join(refused) or "asked for"
            return reference, Choice("torch", "fp32", model.device, f"reference ({why})",
                                     refused=refused)
        try:
            runner = RUNTIMES[runtime](model, prec)
            if ref is None:
                ref = (reference.encode_image(probe_images), reference.encode_text(probe_tokens))
            cos = min(_min_cos(runner.encode_image(probe_images), ref[0]),
                      _min_cos(runner.encode_text(probe_tokens), ref[1]))
        except Exception as exc:  # a runtime that cannot load here is skipped, not fatal
            refused.append(f"{runtime}/{prec} failed: {exc}")
            log.warning("embedding backend %s/%s unavailable: %s", runtime, prec, exc)
            continue
        if cos < PARITY:
            refused.append(f"{runtime}/{prec} cosine {cos:.5f} < {PARITY}")
            log.warning("embedding backend %s/%s refused: probe cosine %.5f < %s vs torch fp32",
                        runtime, prec, cos, PARITY)
            continue
        return runner, Choice(runtime, prec, model.device, "passed the parity gate",
                              cached=bool(getattr(runner, "cached", False)), min_cosine=cos,
                              refused=refused)
    raise EmbeddingError("no embedding backend passed the parity gate")  # torch fp32 is last


def publish(model_name: str, choice: Choice) -> None:
    EMBEDDING_BACKEND.labels(model_name, choice.backend, choice.precision).set(1)


def probe_arrays(size: int, n: int = 4) -> list[np.ndarray]:
    """Fixed uint8 RGB images (smooth gradients, blocks, detail), the same in every process."""
    rng = np.random.default_rng(15)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    out = []
    for k in range(n):
        base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * 255
        blocks = rng.integers(0, 255, (4, 4, 3)).repeat(-(-size // 4), 0).repeat(-(-size // 4), 1)
        noise = rng.normal(0, 20 * k, (size, size, 3))
        img = 0.5 * base + 0.5 * blocks[:size, :size] + noise
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def params_hash(module: Any) -> str:
    """Random weights differ per load: the cache key hashes the parameters themselves."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def select(module: Any, name: str, weights: str | None, device: str, backend: str,
           precision: str, *, builtin: bool, prepare: Callable[[np.ndarray], Any],
           tokenize: Callable[[list[str]], Any]) -> tuple[Runner, Choice]:
    """The runner a freshly loaded fp32 model embeds with. A built-in architecture (whatever
    its weights) left on auto runs torch (fp32 without a gate unless a precision is asked
    for) and is never exported unless a backend is named: it is tiny (a runtime gains nothing
    measurable) and the test suite loads it everywhere, so it must not pay an export."""
    start = time.perf_counter()
    if builtin and backend == "auto":
        backend = "torch"
    if builtin and backend == "torch" and precision == "auto":
        runner: Runner = TorchRunner(Model(module, name, "", 0, 0, device, cache_root()), "fp32")
        choice = Choice("torch", "fp32", device, "built-in model: torch fp32, no gate")
    else:
        size = module.visual.image_size
        size = int(size[0] if isinstance(size, (tuple, list)) else size)
        ident = params_hash(module) if weights in (None, "random") else weights
        model = Model(module, name, ident, size, int(module.context_length), device, cache_root())
        images = np.stack([np.asarray(prepare(im), dtype=np.float32) for im in probe_arrays(size)])
        tokens = np.asarray(tokenize(list(PROBE_TEXTS)), dtype=np.int64)
        runner, choice = choose(model, backend, precision, images, tokens)
    choice.load_s = time.perf_counter() - start
    log.info("OpenCLIP %s embeds with %s on %s (%s; first load %.1f s%s)", name, choice.label,
             device, choice.reason, choice.load_s, ", export cached" if choice.cached else "")
    publish(name, choice)
    return runner, choice


if __name__ == "__main__":
    _export_child(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
