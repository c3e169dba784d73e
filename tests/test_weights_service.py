"""Every replica of `streamer serve` embeds with the weights a collection's spec records: one
whose model cache holds other weights under the same name is refused at startup."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from consumers.embedding.models import BUILTIN_MODELS
from consumers.embedding.weights import sha256
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.kafka.client import KafkaClient
from streamer.testing.kafka import BOOTSTRAP, ServiceProcess, ensure_broker, new_prefix

pytestmark = pytest.mark.kafka


def test_a_replica_with_other_weights_is_refused_at_startup(tmp_path: Path, services: list[ServiceProcess]) -> None:
    ensure_broker()
    prefix = new_prefix()
    shipped = BUILTIN_MODELS["streamer-tiny"].checkpoint_path
    name = "tiny.safetensors"
    for folder in ("creator", "good", "bad"):
        (tmp_path / folder).mkdir()
    shutil.copy(shipped, tmp_path / "creator" / name)
    shutil.copy(shipped, tmp_path / "good" / name)
    # Same name, same shapes, one weight nudged: only the hash tells them apart.
    state = load_file(str(shipped))
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + torch.ones_like(state[first]) * 1e-2
    save_file(state, str(tmp_path / "bad" / name))

    def start(instance: str, cache: str) -> ServiceProcess:
        svc = ServiceProcess(prefix, tmp_path / f"svc-{instance}", instance=instance,
                             extra_env={"STREAMER_MODEL_CACHE": str(tmp_path / cache)})
        services.append(svc)
        svc.start()
        return svc

    start("0", "good")
    client = KafkaClient(BOOTSTRAP, kafka_topic_prefix=prefix)
    try:
        ef = OpenCLIPEmbeddingFunction("streamer-tiny", checkpoint=str(tmp_path / "creator" / name))
        col = client.create_collection("shapes", embedding_function=ef)
        # The spec names the creator's path; servers find their own copy in their model cache.
        (tmp_path / "creator" / name).unlink()
        col.add(ids=["a"], images=[np.full((64, 64, 3), 200, np.uint8)])
        assert col.count() == 1
    finally:
        client.close()

    with pytest.raises(RuntimeError, match="service exited") as info:
        start("1", "bad")
    log = info.value.args[0]
    assert "every process must embed with the same weights" in log
    assert sha256(shipped) in log and sha256(tmp_path / "bad" / name) in log
    start("2", "good")  # the same weights start fine
