"""The ``streamer`` command line: ingest a folder (twice: the second run adds nothing), query
it, list and describe collections, help and exit codes, one-line errors."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamer.cli.demo import has_trained_checkpoint, random_checkpoint
from streamer.cli.ingest import Progress, discover
from streamer.cli.main import main
from streamer.training.shapes import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def streamer_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def model_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The built-in model when its trained checkpoint is installed, else seeded random
    weights: either way an image's nearest neighbour is itself."""
    if has_trained_checkpoint():
        return []
    return ["--checkpoint", str(random_checkpoint(tmp_path_factory.mktemp("model")))]


def make_folder(root: Path, n: int, seed: int) -> list[str]:
    images, _, specs = make_dataset(n, "train", seed, 64)
    names = []
    for i, (image, spec) in enumerate(zip(images, specs)):
        rel = f"{'sub/' if i % 3 == 0 else ''}{i:02d}-{spec.colour}-{spec.shape}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)
        names.append(rel)
    return names


def table_ids(stdout: str) -> list[str]:
    """The id column of a printed query table (after the header and rule lines)."""
    return [line.split()[1] for line in stdout.splitlines()[2:] if line.strip() and line.split()[0].isdigit()]


def test_ingest_twice_then_query_finds_the_image(tmp_path: Path, model_args: list[str]) -> None:
    folder, store = tmp_path / "photos", tmp_path / "store"
    names = make_folder(folder, 12, seed=3)
    (folder / "notes.txt").write_text("Shopping list: paint, brushes, a ladder\n")
    (folder / "data.csv").write_text("a,b\n")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.png").write_bytes(b"")

    first = streamer_cli("ingest", folder, "--collection", "photos", "--path", store,
                         "--batch-size", "5", *model_args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ingested 13 new items into 'photos'")
    assert "1 other files ignored" in first.stdout
    assert "13/13" in first.stderr and "items/s" in first.stderr  # progress, not a terminal

    again = streamer_cli("ingest", folder, "-c", "photos", "--path", store, *model_args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("ingested 0 new items into 'photos'")
    assert "13 already there" in again.stdout

    target = next(n for n in names if n.startswith("sub/"))
    page = tmp_path / "hits.html"
    hit = streamer_cli("query", "--image", folder / target, "-c", "photos", "--path", store,
                       "-n", "3", "--html", page)
    assert hit.returncode == 0, hit.stderr
    assert table_ids(hit.stdout)[0] == target
    assert hit.stdout.splitlines()[2].split()[2] == "0.0000"
    html = page.read_text()
    assert target in html and html.count("data:image/png;base64,") == 4  # query + 3 hits

    text = streamer_cli("query", "Shopping list: paint, brushes, a ladder", "-c", "photos",
                        "--path", store, "-n", "2")
    assert text.returncode == 0, text.stderr
    assert table_ids(text.stdout)[0] == "notes.txt"

    listing = streamer_cli("collections", "--path", store)
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if line.startswith("photos"))
    assert row.split()[1] == "13" and str(folder) in row
    stats = dict(line.split(None, 1) for line in streamer_cli("stats", "photos", "--path", store)
                 .stdout.splitlines() if line.strip() and not line.startswith("index"))
    assert stats["records"].strip() == "13"
    assert int(stats["dimension"]) > 0
    assert stats["embedding"].startswith("auto/auto: first passing the parity gate of")


def test_failed_files_are_summarised_and_the_rest_go_in(tmp_path: Path, model_args: list[str]) -> None:
    folder = tmp_path / "in"
    make_folder(folder, 4, seed=5)
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "empty.txt").write_text("   \n")
    run = streamer_cli("ingest", folder, "-c", "mixed", "--path", tmp_path / "store", *model_args)
    assert run.returncode == 1
    assert run.stdout.startswith("ingested 4 new items")
    assert "2 failed:" in run.stderr
    assert "broken.png: Could not load" in run.stderr and "empty.txt: empty" in run.stderr
    assert "Traceback" not in run.stderr


def test_glob_targets_take_ids_relative_to_the_fixed_part(tmp_path: Path) -> None:
    make_folder(tmp_path / "a", 6, seed=1)
    (tmp_path / "a" / "readme.md").write_text("hello")
    base, items, ignored = discover(str(tmp_path / "a" / "**" / "*.png"))
    assert base == tmp_path / "a"
    assert sorted(i.id for i in items) == sorted(
        p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.png"))
    assert all(i.kind == "image" for i in items) and ignored == 0
    base, items, _ = discover(str(tmp_path / "a" / "readme.md"))
    assert base == tmp_path / "a" and [(i.id, i.kind) for i in items] == [("readme.md", "text")]


def test_progress_reports_rate_and_eta_on_a_plain_stream() -> None:
    out = io.StringIO()
    bar = Progress(40, "ingest", out)
    for _ in range(8):
        bar.advance(5)
    lines = out.getvalue().splitlines()
    assert len(lines) == 8 and lines[-1].startswith("ingest ") and "40/40" in lines[-1]
    assert "items/s" in lines[0] and "ETA" in lines[0] and "5/40" in lines[0]


@pytest.mark.parametrize("command", [[], ["ingest"], ["query"], ["collections"], ["stats"],
                                     ["serve"], ["demo"]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    assert "usage: streamer" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["query", "-c", "x", "--path", "{tmp}/nope"], "streamer query: error: give a query text or --image"),
    (["query", "hi", "-c", "x", "--path", "{tmp}/nope"], "streamer query: error: no store at"),
    (["ingest", "{tmp}/missing", "-c", "x", "--path", "{tmp}/s"], "error: {tmp}/missing: no such file"),
    (["ingest", "{tmp}", "-c", "x"], "give --path DIR (embedded store) or --kafka BOOTSTRAP"),
    (["ingest", "{tmp}", "-c", "x", "--path", "{tmp}/s", "--checkpoint", "{tmp}/w.pt"],
     "--checkpoint {tmp}/w.pt: no such file"),
    (["stats", "x", "--path", "{tmp}/s", "--prefix", "p"], "--prefix applies to --kafka only"),
    (["serve", "--source", "{tmp}/bad.toml"], "streamer serve: error: {tmp}/bad.toml: unknown key(s) colour"),
    (["demo", "-n", "0"], "streamer demo: error: -n must be at least 1"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text('colour = "red"\n')
    (tmp_path / "a.png").write_bytes(b"")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.replace("{tmp}", str(tmp_path)) in err


def test_unknown_collection_and_bad_command_from_a_real_process(tmp_path: Path,
                                                                model_args: list[str]) -> None:
    make_folder(tmp_path / "p", 2, seed=9)
    assert streamer_cli("ingest", tmp_path / "p", "-c", "one", "--path", tmp_path / "s",
                        *model_args).returncode == 0
    missing = streamer_cli("query", "hello", "-c", "two", "--path", tmp_path / "s")
    assert missing.returncode == 2
    assert missing.stderr == "streamer query: error: no collection named 'two' (see `streamer collections`)\n"
    assert streamer_cli("frobnicate").returncode == 2


@pytest.mark.slow
def test_demo_finishes_quickly_and_prints_hits() -> None:
    run = streamer_cli("demo", "-n", "24")
    assert run.returncode == 0, run.stderr
    assert "indexed 24 generated images by URI" in run.stdout
    assert '"a red circle"' in run.stdout and "  1. " in run.stdout
    assert ("RANDOM weights" in run.stdout) != has_trained_checkpoint()
    hits = [line for line in run.stdout.splitlines() if line.startswith("  ")]
    assert len(hits) % 15 == 0 and all(float(h.split()[1]) >= 0 for h in hits)
    assert np.isfinite([float(h.split()[1]) for h in hits]).all()


def test_runtime_env_fills_what_is_missing_and_keeps_what_the_user_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streamer.settings import RUNTIME_ENV, with_runtime_env

    for key in RUNTIME_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    env = with_runtime_env()
    assert env is not None
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice stands
    assert env["MALLOC_MMAP_MAX_"] == RUNTIME_ENV["MALLOC_MMAP_MAX_"]
    forced = with_runtime_env(force=True)
    assert forced is not None and forced["OMP_WAIT_POLICY"] == "PASSIVE"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert with_runtime_env() is None  # in place: no re-exec
