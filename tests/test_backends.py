"""Runtime backends behind the parity gate (consumers/embedding/backends.py), on the shipped
streamer-tiny model: the gate refuses a backend that disagrees with torch fp32, the OpenVINO
export is cached on disk and reused by another process, a change of weights makes a new one,
and vectors from any backend that passes the gate are interchangeable in one collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import streamer
from consumers.embedding import backends as B
from consumers.embedding.embed import Precision
from consumers.embedding.models import BUILTIN_MODELS
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from tests.helpers import random_image

TINY = "streamer-tiny"
TEXTS = ["a red circle", "a blue square", "a green triangle", "a yellow star", "two dots"]


def _perturbed(scale: float) -> Any:
    def build(model: B.Model, precision: str) -> B.Runner:
        torch.manual_seed(1)
        runner = B.TorchRunner(model, "fp32")
        copy = deepcopy(model.module)
        with torch.no_grad():
            for p in copy.parameters():
                p.add_(torch.randn_like(p) * scale * p.abs().mean())
        runner.module = copy
        return runner
    return build


@pytest.fixture
def perturbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(B.RUNTIMES, "perturbed", _perturbed(0.5))
    monkeypatch.setitem(B.RUNTIMES, "jittered", _perturbed(1e-5))


def test_the_gate_refuses_a_backend_that_disagrees(perturbed: None,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ef = OpenCLIPEmbeddingFunction(TINY, backend="perturbed", precision="fp32")
    ef.load()
    assert ef.choice is not None
    assert ef.choice.label == "torch/fp32"
    assert ef.choice.refused and ef.choice.refused[0].startswith("perturbed/fp32 cosine")
    assert "perturbed/fp32 refused" in caplog.text
    reference = OpenCLIPEmbeddingFunction(TINY, backend="torch", precision="fp32")
    np.testing.assert_allclose(np.stack(ef(TEXTS)), np.stack(reference(TEXTS)), atol=1e-6)

    # The gate is not a wall: a backend within rounding of fp32 passes it.
    ok = OpenCLIPEmbeddingFunction(TINY, backend="jittered", precision="fp32")
    ok.load()
    assert ok.choice is not None and ok.choice.label == "jittered/fp32"
    assert ok.choice.min_cosine is not None and ok.choice.min_cosine >= B.PARITY


def test_auto_on_the_builtin_model_pays_no_export(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_COMPILED_CACHE", str(tmp_path / "compiled"))
    ef = OpenCLIPEmbeddingFunction(TINY)
    ef.load()
    assert ef.choice is not None and ef.choice.label == "torch/fp32"
    assert not (tmp_path / "compiled").exists()
    assert ef.get_config()["backend"] == "auto" and ef.get_config()["precision"] == "auto"


def test_bf16_only_where_the_cpu_has_it() -> None:
    got = B.candidates("auto", "auto", "cpu")
    assert got[-1] == ("torch", "fp32")
    assert (("openvino", "bf16") in got) == B.native_bf16()
    assert B.candidates("auto", "auto", "cuda")[0][0] == "torch"  # no OpenVINO on CUDA


_LOAD = """
import json, sys
import numpy as np
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
ef = OpenCLIPEmbeddingFunction("streamer-tiny", checkpoint=sys.argv[1], backend="openvino",
                               precision="fp32")
ef.load()
vec = ef(["a red circle"])[0]
print(json.dumps({"label": ef.choice.label, "cached": ef.choice.cached,
                  "load_s": ef.choice.load_s, "vec": [float(x) for x in vec]}))
"""


def _load_in_process(checkpoint: Path, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "STREAMER_COMPILED_CACHE": str(cache),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", _LOAD, str(checkpoint)], env=env, check=True,
                         capture_output=True, text=True, timeout=600)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow  # three processes, two OpenVINO exports: ~2 min on 2 loaded cores
def test_the_export_is_reused_across_processes_and_redone_for_other_weights(tmp_path: Path) -> None:
    cache = tmp_path / "compiled"
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(BUILTIN_MODELS[TINY].checkpoint_path.read_bytes())
    first = _load_in_process(weights, cache)
    assert first["label"] == "openvino/fp32" and first["cached"] is False
    exports = sorted(p.name for p in cache.iterdir())
    assert len(exports) == 1 and not any(n.startswith(".tmp") for n in exports)

    second = _load_in_process(weights, cache)  # a restart: the export on disk is reused
    assert second["label"] == "openvino/fp32" and second["cached"] is True
    np.testing.assert_allclose(second["vec"], first["vec"], atol=1e-6)

    state = load_file(str(weights))
    torch.manual_seed(3)
    save_file({k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in state.items()}, str(weights))
    third = _load_in_process(weights, cache)  # new weights: a new export, not the old one
    assert third["cached"] is False
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2
    assert not np.allclose(third["vec"], first["vec"], atol=1e-3)


def test_vectors_from_any_backend_are_comparable(perturbed: None, tmp_path: Path) -> None:
    """A writer on one backend and a replica answering queries on another: same neighbours."""
    images = [random_image(40 + i) for i in range(12)]
    configs: dict[str, tuple[str, Precision]] = {"fp32": ("torch", "fp32"), "bf16": ("torch", "bf16"),
                                                 "jittered": ("jittered", "fp32")}
    efs = {name: OpenCLIPEmbeddingFunction(TINY, backend=b, precision=p) for name, (b, p) in configs.items()}
    vecs = {name: (np.stack(ef(images)), np.stack(ef(TEXTS))) for name, ef in efs.items()}
    assert [ef.choice.label for ef in efs.values() if ef.choice] == \
        ["torch/fp32", "torch/bf16", "jittered/fp32"]
    for name, (img, txt) in vecs.items():
        cos = np.concatenate([(img * vecs["fp32"][0]).sum(1), (txt * vecs["fp32"][1]).sum(1)])
        assert cos.min() >= B.PARITY, (name, cos.min())

    ids = [f"im{i}" for i in range(len(images))]
    with streamer.Client(tmp_path / "store") as client:
        for writer in efs:
            col = client.create_collection(f"by-{writer}", embedding_function=None)
            col.add(ids=ids, embeddings=list(vecs[writer][0]))
        for writer in efs:
            col = client.get_collection(f"by-{writer}", embedding_function=None)
            answers = [col.query(query_embeddings=list(vecs[reader][1]), n_results=3)["ids"]
                       for reader in efs]
            assert all(a == answers[0] for a in answers), (writer, answers)
