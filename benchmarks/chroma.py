"""Chroma in its own venv (``.bench-venv-chroma``, created on first use): chromadb's pins
conflict with this project's, so it never goes into ``.venv``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.paths import Load, PathResult

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench-venv-chroma"
CHROMA = "chromadb==1.5.9"
# The same torch pair as ours, so both sides run the same kernels.
DEPS = [CHROMA, "open_clip_torch", "torch==2.15.0", "torchvision==0.29.2", "pillow"]


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import chromadb, open_clip; assert chromadb.__version__ == '1.5.9'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {VENV} with {CHROMA} (first run only)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *DEPS], check=True)
    return python


def run(python: Path, model: str, checkpoint: str, uris: list[str], chunk: int, load: Load,
        queries: bool = True) -> PathResult:
    """Chroma's ingestion of ``uris`` in a fresh store, then (``queries``) its query figures."""
    job = {"model": model, "checkpoint": checkpoint, "uris": uris, "chunk": chunk,
           "text": load.text, "image": load.image, "throughput": load.throughput,
           "concurrency": load.concurrency, "warmup": load.warmup, "queries": queries}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.run([str(python), "-m", "benchmarks.chroma_worker"], input=json.dumps(job),
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"chroma worker failed: {proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not queries:
        return PathResult(f"Chroma {out['chromadb']}", out["images_per_s"])
    return PathResult(f"Chroma {out['chromadb']}", out["images_per_s"], tuple(out["text_ms"]),
                      tuple(out["image_ms"]), out["sequential_qps"], out["concurrent_qps"])
