"""Weights the way Chroma users name them, offline: open_clip pretrained tags resolved through
a Hugging Face hub cache these tests build (random weights of the right shape, in the layout
huggingface_hub reads offline), local files, built-in names, and the typed errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from consumers.embedding.models import BUILTIN_MODELS
from streamer.embedding_functions import OpenCLIPEmbeddingFunction
from streamer.errors import EmbeddingError, WeightsError, WeightsNotFoundError
from tests.helpers import write_png

ROOT = Path(__file__).resolve().parents[1]
TINY = BUILTIN_MODELS["streamer-tiny"]
B32_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # open_clip's hf_hub for ViT-B-32 laion2b_s34b_b79k
SIGLIP_REPO = "timm/ViT-B-16-SigLIP"  # ... and for ViT-B-16-SigLIP webli


def seed_hub(cache: Path, repo: str, filename: str, model_name: str, seed: int) -> Path:
    """Random weights of ``model_name``'s shape, fp16 to halve the file, written where
    huggingface_hub looks offline: models--org--name/snapshots/<rev>/file plus refs/main."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(model_name)
    state = {k: v.half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = f"{seed:040x}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    target = snapshot / filename
    if filename.endswith(".safetensors"):
        save_file(state, str(target))
    else:
        torch.save(state, target)
    return target


def assert_loaded(model: Any, seeded: Path) -> None:
    """The model's state dict is the seeded file's, tensor for tensor."""
    want = load_file(str(seeded)) if seeded.suffix == ".safetensors" else torch.load(seeded)
    got = model.state_dict()
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key].to(value.dtype), value), key


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME whose hub cache holds ViT-B-32 'laion2b_s34b_b79k' (Chroma's default)."""
    home = tmp_path_factory.mktemp("hf_home")
    seed_hub(home / "hub", B32_REPO, "open_clip_model.safetensors", "ViT-B-32", seed=1)
    return home


def test_seed_guide_snippet_runs_unchanged_offline_on_the_cached_weights(hf_home: Path, tmp_path: Path) -> None:
    """The guide's code in a fresh process, offline, with HF_HOME pointing at the cache:
    OpenCLIPEmbeddingFunction() resolves Chroma's default tag there and uses those weights."""
    rng = np.random.default_rng(0)
    for i in (1, 2):
        write_png(tmp_path / f"{i}.png", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    guide = textwrap.dedent("""
        import streamer as chromadb
        from streamer.data_loaders import ImageLoader
        from streamer.embedding_functions import OpenCLIPEmbeddingFunction

        client = chromadb.Client()

        data_loader = ImageLoader()
        embedding_function = OpenCLIPEmbeddingFunction()

        collection = client.create_collection(
            name='multimodal_collection',
            embedding_function=embedding_function,
            data_loader=data_loader
        )
        collection.add(
            ids=["id1", "id2"],
            uris=["1.png", "2.png"]
        )
        results = collection.query(
            query_texts=["This is a query document", "This is another query document"]
        )
    """)
    check = textwrap.dedent("""
        import sys
        from pathlib import Path
        from tests.test_weights import assert_loaded
        [seeded] = Path(sys.argv[1]).glob("hub/models--*/snapshots/*/open_clip_model.safetensors")
        assert_loaded(embedding_function.model, seeded)
        print("ids", sorted(results["ids"][0]), embedding_function.weights.label)
        print("spec", collection.get(ids=["id1"], include=["embeddings"])["embeddings"].shape)
        client.close()
    """)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-c", guide + check, str(hf_home)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"ids ['id1', 'id2'] pretrained laion2b_s34b_b79k ({B32_REPO})" in run.stdout
    assert "spec (1, 512)" in run.stdout


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 for this process (huggingface_hub read the variable at import)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_offline_and_not_cached_is_a_typed_error_naming_tag_repository_and_file(
        tmp_path: Path, offline: None) -> None:
    ef = OpenCLIPEmbeddingFunction(model_name="ViT-B-32", checkpoint="laion2b_s34b_b79k",
                                   cache_dir=str(tmp_path / "empty"))
    with pytest.raises(WeightsNotFoundError) as info:
        ef(["a cat"])
    err = info.value
    assert isinstance(err, EmbeddingError) and isinstance(err, FileNotFoundError)
    assert err.code == "weights_not_found" and not err.retriable
    folder = tmp_path / "empty" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    for part in ("'laion2b_s34b_b79k'", f"https://huggingface.co/{B32_REPO}", "open_clip_pytorch_model.bin",
                 f"{folder}/snapshots/<revision>/open_clip_pytorch_model.bin", f"{folder}/refs/main"):
        assert part in err.message, part
    assert ef.get_config()["weights_sha256"] is None  # not here: the spec cannot pin a hash


def test_random_weights_only_when_asked(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"laion2b_s34b_b79k.*'random'"):
        OpenCLIPEmbeddingFunction("ViT-B-32", checkpoint=None).load()
    with pytest.raises(WeightsError, match=r"neither a file nor an open_clip pretrained tag.*laion2b_s34b_b79k"):
        OpenCLIPEmbeddingFunction("ViT-B-32", checkpoint="laion2b_typo").load()
    with pytest.raises(WeightsNotFoundError, match="not a local file"):
        OpenCLIPEmbeddingFunction("ViT-B-32", checkpoint=str(tmp_path / "nope.pt")).load()
    shipped = OpenCLIPEmbeddingFunction("streamer-tiny")
    random = OpenCLIPEmbeddingFunction("streamer-tiny", checkpoint="random")
    assert random.get_config()["weights_sha256"] == "random"
    assert random(["a red circle"])[0] @ shipped(["a red circle"])[0] < 0.9
    assert random.weights is not None and random.weights.label == "RANDOM weights"


@pytest.mark.skipif(not TINY.checkpoint_path.exists(), reason="the streamer-tiny checkpoint is not built")
def test_a_local_file_and_a_built_in_name_still_work(tmp_path: Path) -> None:
    copy = tmp_path / "weights.safetensors"
    shutil.copy(TINY.checkpoint_path, copy)
    by_default = OpenCLIPEmbeddingFunction("streamer-tiny")
    by_name = OpenCLIPEmbeddingFunction("streamer-tiny", checkpoint="streamer-tiny")
    by_file = OpenCLIPEmbeddingFunction("streamer-tiny", checkpoint=str(copy))
    assert by_default.checkpoint == "streamer-tiny" == by_name.checkpoint
    texts = ["a red circle", "two blue squares"]
    want = np.stack(by_default(texts))
    np.testing.assert_array_equal(np.stack(by_name(texts)), want)
    np.testing.assert_array_equal(np.stack(by_file(texts)), want)
    assert by_file.fingerprint() == by_default.fingerprint() == by_name.get_config()["weights_sha256"]
    assert_loaded(by_file.model, copy)


def seed_word_tokenizer(snapshot: Path, words: list[str]) -> dict[str, int]:
    """A Hugging Face fast tokenizer (word level) in the snapshot, as SigLIP's text tower
    loads its tokenizer from the same repository; the real one is a SentencePiece model."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(snapshot / "tokenizer.json"))
    (snapshot / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 64}))
    # transformers reads the repository's config.json first; timm's names the architecture.
    (snapshot / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_siglip_224"}))
    return vocab


def test_a_siglip_model_loads_its_tag_from_the_hub_cache(tmp_path: Path, offline: None) -> None:
    """ViT-B-16-SigLIP 'webli' (timm image tower, SigLIP's own preprocessing and Hugging Face
    tokenizer), seeded as the .bin file open_clip falls back to without a safetensors file."""
    seeded = seed_hub(tmp_path, SIGLIP_REPO, "open_clip_pytorch_model.bin", "ViT-B-16-SigLIP", seed=2)
    vocab = seed_word_tokenizer(seeded.parent, ["a", "red", "circle"])
    ef = OpenCLIPEmbeddingFunction("ViT-B-16-SigLIP", checkpoint="webli", cache_dir=str(tmp_path))
    rng = np.random.default_rng(1)
    image, text = ef([rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), "a red circle"])
    assert image.shape == text.shape == (768,)
    assert abs(float(np.linalg.norm(image)) - 1.0) < 1e-5 and abs(float(np.linalg.norm(text)) - 1.0) < 1e-5
    assert_loaded(ef.model, seeded)
    assert ef.tokenizer(["a red circle"])[0, :3].tolist() == [vocab["a"], vocab["red"], vocab["circle"]]
    assert ef._normalize is not None and np.allclose(ef._normalize[0], 0.5)  # the tag's mean, not CLIP's
    assert ef.get_config()["weights_sha256"] is not None
