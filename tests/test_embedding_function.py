"""``OpenCLIPEmbeddingFunction`` with a real (tiny) open_clip model: batching, mixed inputs,
output format, offline-only checkpoints, config round trips and bf16.

The model is the shipped ``streamer-tiny`` (its checkpoint is part of the package)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamer
from streamer.data_loaders import ImageLoader
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.errors import EmbeddingError
from tests.helpers import random_image

TEXTS = ["a photo of a cat", "a red square", "streamer", "two dogs on a beach", "x"]


@pytest.fixture(scope="module")
def model_name() -> str:
    return "streamer-tiny"


def make_ef(model_name: str, **kwargs: Any) -> OpenCLIPEmbeddingFunction:
    """A loaded embedding function."""
    ef = OpenCLIPEmbeddingFunction(model_name, **kwargs)
    ef.load()
    return ef


def count_calls(model: Any, method: str) -> list[int]:
    """Replace ``model.<method>`` with a wrapper recording the batch size of every call."""
    sizes: list[int] = []
    inner = getattr(model, method)

    def counted(batch: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(int(batch.shape[0]))
        return inner(batch, *args, **kwargs)

    setattr(model, method, counted)
    return sizes


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every attempt to resolve a host or open a connection is recorded and refused."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def guard(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network access attempted in a test: {name}")
        return guard

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    yield attempts


def test_one_call_runs_the_image_tower_once_per_batch(model_name: str) -> None:
    ef = make_ef(model_name, batch_size=16)
    image_calls = count_calls(ef.model, "encode_image")
    text_calls = count_calls(ef.model, "encode_text")
    images = [random_image(i) for i in range(64)]
    batched = ef(images)
    assert image_calls == [16, 16, 16, 16]
    assert text_calls == []
    singles = [ef([im])[0] for im in images]
    assert image_calls == [16] * 4 + [1] * 64
    np.testing.assert_allclose(np.stack(batched), np.stack(singles), atol=1e-5)


@pytest.mark.parametrize(("batch_size", "text_batches", "image_batches"),
                         [(8, [5], [7]), (4, [4, 1], [4, 3])])
def test_mixed_texts_and_images_keep_input_order(model_name: str, batch_size: int,
                                                 text_batches: list[int],
                                                 image_batches: list[int]) -> None:
    ef = make_ef(model_name, batch_size=batch_size)
    images = [random_image(100 + i) for i in range(7)]
    # Interleaved: t i i t i t i i t i t i
    order = "tiitititiiti"
    texts_left, images_left = iter(TEXTS), iter(images)
    inputs: list[Any] = [next(texts_left) if c == "t" else next(images_left) for c in order]
    image_calls = count_calls(ef.model, "encode_image")
    text_calls = count_calls(ef.model, "encode_text")
    out = ef(inputs)
    assert text_calls == text_batches and image_calls == image_batches
    assert len(out) == len(inputs)
    singles = [ef([x])[0] for x in inputs]
    for x, got, want in zip(inputs, out, singles):
        label = x if isinstance(x, str) else "an image"
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"input {label}")
    # Texts and images land in different places: the order is not an artefact of equal rows.
    assert not np.allclose(out[0], out[1], atol=1e-3)


def test_outputs_are_float32_unit_vectors(model_name: str) -> None:
    ef = make_ef(model_name, batch_size=3)
    inputs: list[Any] = [*TEXTS, random_image(1), random_image(2, size=50),
                         random_image(3)[:, :, 0],  # greyscale HxW
                         np.dstack([random_image(4), np.full((24, 24), 255, np.uint8)]),  # RGBA
                         random_image(5).astype(np.float32) / 255.0]  # floats in [0, 1]
    out = ef(inputs)
    assert len(out) == len(inputs)
    dims = {v.shape for v in out}
    assert len(dims) == 1 and len(next(iter(dims))) == 1
    for v in out:
        assert isinstance(v, np.ndarray) and v.dtype == np.float32
        assert np.isfinite(v).all()
        assert float(np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-5)
    # A float image in [0, 1] is read as the same picture as its uint8 original.
    np.testing.assert_allclose(out[-1], ef([random_image(5)])[0], atol=1e-5)
    assert [v.tolist() for v in ef.embed_query(TEXTS[:2])] == [v.tolist() for v in out[:2]]


def test_prepared_images_equal_open_clips_own_transform(model_name: str) -> None:
    """The loader threads prepare images without torch ops; the floats must be open_clip's."""
    from PIL import Image as PILImage
    from skimage import data

    ef = make_ef(model_name)
    ef.load()
    photos = [getattr(data, n)() for n in ("astronaut", "coffee", "camera")]  # camera: greyscale
    for image in [*photos, random_image(6, size=50)]:
        ours = ef.prepare_image(image)
        assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
        rgb = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        theirs = ef._preprocess(PILImage.fromarray(rgb)).numpy()
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["missing", "directory", "url"])
def test_checkpoint_that_is_not_a_file_fails_offline(tmp_path: Path, no_network: list[str],
                                                      kind: str) -> None:
    checkpoint = {"missing": str(tmp_path / "nope.safetensors"), "directory": str(tmp_path),
                  "url": "https://example.com/open_clip_model.safetensors"}[kind]
    ef = OpenCLIPEmbeddingFunction("ViT-B-32", checkpoint=checkpoint)
    with pytest.raises(EmbeddingError, match="is not a local file") as info:
        ef(["a photo"])
    assert checkpoint in str(info.value)
    with pytest.raises(EmbeddingError, match="is not a local file"):
        ef.load()  # still failing, not half-loaded
    assert no_network == []


def test_config_round_trips(model_name: str, tmp_path: Path) -> None:
    ef = make_ef(model_name, batch_size=7, precision="fp32", num_threads=None)
    config = ef.get_config()
    assert json.loads(json.dumps(config)) == config  # persisted as JSON in the catalog
    rebuilt = OpenCLIPEmbeddingFunction.build_from_config(config)
    assert rebuilt == ef and rebuilt.get_config() == config
    assert rebuilt.name() == "open_clip"
    inputs: list[Any] = [TEXTS[0], random_image(9)]
    np.testing.assert_allclose(np.stack(rebuilt(inputs)), np.stack(ef(inputs)), atol=1e-6)
    assert OpenCLIPEmbeddingFunction.build_from_config({**config, "batch_size": 8}) != ef

    # The client persists the config and rebuilds the function from it on reopen.
    with streamer.Client(tmp_path / "store") as client:
        client.create_collection("clip", embedding_function=ef)
    with streamer.Client(tmp_path / "store") as client:
        col = client.get_collection("clip")
        assert isinstance(col.embedding_function, OpenCLIPEmbeddingFunction)
        assert col.embedding_function == ef


def test_sync_collection_exposes_its_embedding_function(model_name: str, tmp_path: Path) -> None:
    ef = OpenCLIPEmbeddingFunction(model_name, checkpoint=None if model_name == "streamer-tiny" else "random")
    loader = ImageLoader(roots=[tmp_path])
    with streamer.Client(tmp_path / "store") as client:
        col = client.create_collection("clip", embedding_function=ef, data_loader=loader)
        assert col.embedding_function is ef and col.data_loader is loader
        again = client.get_collection("clip")  # rebuilt from the persisted configs
        assert again.embedding_function == ef and again.data_loader == loader


def test_bf16_agrees_with_fp32(model_name: str) -> None:
    fp32 = make_ef(model_name)
    bf16 = make_ef(model_name, precision="bf16")
    inputs: list[Any] = [random_image(20 + i) for i in range(4)] + TEXTS[:3]
    a, b = np.stack(fp32(inputs)), np.stack(bf16(inputs))
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
