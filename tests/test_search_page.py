"""The search page end to end in headless Chromium (Debian's chromium driven by
playwright-core; no browser download): a text search shows the expected image first, with
its thumbnail, and live mode shows a newly ingested match by itself; the page runs on the
TypeScript client the gateway serves, and a second page imports that client, queries with a
canvas and shows its match. Screenshots are saved under the test's tmp dir."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import streamer
from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from streamer.data_loaders import ImageLoader
from streamer.testing.gateway import TOKEN
from streamer.training.shapes import ShapeSpec, render
from tests.gateway_helpers import embedded_gateway
from tests.helpers import HashEmbedding, write_png

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star"),
          ("purple", "diamond"), ("white", "cross")]


class CaptionEmbedding(HashEmbedding):
    """Without the trained model: a known caption embeds exactly as its image does."""

    def __init__(self, captions: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.captions = captions

    def vector(self, x: Any) -> np.ndarray:
        return super().vector(self.captions.get(x, x) if isinstance(x, str) else x)


def shape_image(colour: str, shape: str, seed: int) -> np.ndarray:
    spec = ShapeSpec(shape=shape, colour=colour, size="large", position="center", count=1,  # type: ignore[arg-type]
                     texture="solid")
    return render(spec, 96, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def playwright() -> Path:
    if not CHROMIUM.exists() or shutil.which("node") is None:
        pytest.skip("needs Debian's chromium and node: apt-get install -y chromium chromium-driver nodejs npm")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BROWSER_DIR, check=True,
                       timeout=240, capture_output=True)
    return BROWSER_DIR / "search_page.mjs"


async def test_text_search_shows_the_expected_image_first_and_live_matches(
        tmp_path: Path, playwright: Path) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images = {f"{c}-{s}": shape_image(c, s, i) for i, (c, s) in enumerate(SHAPES)}
    uris = {k: write_png(images_dir / f"{k}.png", v) for k, v in images.items()}
    ef: Any = OpenCLIPEmbeddingFunction("streamer-tiny")  # its checkpoint ships in the package
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw):
        col = await streamer.AsyncClient(backend=engine).create_collection(
            "shapes", embedding_function=ef, data_loader=ImageLoader(roots=[images_dir]))
        await col.add(ids=list(uris), uris=list(uris.values()),
                      metadatas=[{"shape": k} for k in uris])
        await col.add(ids=["note"], documents=["a note with no picture"])
        want = await col.query(query_texts=["a red circle"], n_results=12)
        shots = tmp_path / "search.png", tmp_path / "search-live.png"
        proc = await asyncio.create_subprocess_exec(
            "node", str(playwright), gw.url, TOKEN, "shapes", "a red circle",
            str(tmp_path / "chromium-profile"), *map(str, shots), cwd=BROWSER_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None

        async def step() -> dict[str, Any]:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)  # type: ignore[union-attr]
            if not line:
                raise AssertionError((await proc.stderr.read()).decode()[-3000:])  # type: ignore[union-attr]
            return dict(json.loads(line))

        try:
            shown = await step()
            assert shown["step"] == "search" and shown["problems"] == []
            ids = [r["id"] for r in shown["results"]]
            assert ids[0] == "red-circle" and shown["results"][0]["thumb"]
            assert ids == want["ids"][0]  # the page shows exactly what the client gets
            np.testing.assert_allclose([r["distance"] for r in shown["results"]],
                                       want["distances"][0], atol=1e-4)
            assert (await step())["step"] == "live"
            fresh = shape_image("red", "circle", 99)
            uri = write_png(images_dir / "red-circle-new.png", fresh)
            await col.add(ids=["red-circle-new"], uris=[uri])
            pushed = await step()
            assert pushed["id"] == "red-circle-new" and pushed["problems"] == []
            new_distance = (await col.query(query_texts=["a red circle"], ids=["red-circle-new"],
                                            n_results=1))["distances"][0][0]
            assert pushed["rank"] == sum(d < new_distance for d in want["distances"][0])
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    for shot in shots:
        with Image.open(shot) as img:
            assert img.size[0] >= 1000 and img.size[1] >= 700


async def test_a_page_importing_the_client_sends_a_canvas_and_shows_its_match(
        tmp_path: Path, playwright: Path) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    images = {f"{c}-{s}": shape_image(c, s, i) for i, (c, s) in enumerate(SHAPES)}
    uris = {k: write_png(images_dir / f"{k}.png", v) for k, v in images.items()}
    ef: Any = OpenCLIPEmbeddingFunction("streamer-tiny")  # its checkpoint ships in the package
    async with embedded_gateway(tmp_path / "store", ef) as (engine, gw):
        col = await streamer.AsyncClient(backend=engine).create_collection(
            "shapes", embedding_function=ef, data_loader=ImageLoader(roots=[images_dir]))
        await col.add(ids=list(uris), uris=list(uris.values()))
        shot = tmp_path / "client-page.png"
        proc = await asyncio.create_subprocess_exec(
            "node", str(BROWSER_DIR / "client_page.mjs"), gw.url, TOKEN, "shapes",
            str(tmp_path / "chromium-profile"), str(shot), cwd=BROWSER_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, err.decode()[-3000:]
        shown = json.loads(out)
        assert shown["problems"] == [] and shown["id"] == "red-circle", shown
        # The canvas's pixels give the Python client the same best match and distance.
        pixels = np.frombuffer(base64.b64decode(shown["b64"]), dtype=np.uint8).reshape(shown["shape"])
        want = await col.query(query_images=[pixels], n_results=1)
        assert want["ids"][0][0] == shown["id"]
        assert abs(want["distances"][0][0] - shown["distance"]) < 1e-4
        # A PNG of the canvas is lossless: the Blob path finds the same match at the same distance.
        assert shown["fileId"] == shown["id"] and abs(shown["fileDistance"] - shown["distance"]) < 1e-4
    with Image.open(shot) as img:
        assert img.size == (400, 300)
