"""The TypeScript client (clients/typescript) end to end: its ``node --test`` suites run
against a real ``streamer serve`` on the local broker (the built-in streamer-tiny model
server-side), and its generated wire types must match ``schemas/generated``. The package is
installed from its lockfile (``npm ci``) and built with ``tsc`` once per session."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from streamer.testing.gateway import TOKEN, TOKENS
from streamer.testing.kafka import ROOT, ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import free_port
from streamer.training.shapes import ShapeSpec, render
from tests.helpers import require_node

PACKAGE = ROOT / "clients" / "typescript"


def _npm(*args: str, timeout: float = 300) -> None:
    done = subprocess.run(["npm", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="session")
def package() -> Path:
    """The built package (npm ci when node_modules is missing, then tsc)."""
    require_node()
    if not (PACKAGE / "node_modules" / ".package-lock.json").exists():
        _npm("ci", "--no-audit", "--no-fund")
    _npm("run", "build")
    return PACKAGE


@pytest.mark.parametrize("script", ["gen-wire", "vendor"])
def test_generated_files_are_current(package: Path, script: str) -> None:
    """Wire types = schemas/generated; the gateway's /static/client = the fresh build."""
    done = subprocess.run(["node", f"scripts/{script}.mjs", "--check"], cwd=package,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def photos(directory: Path) -> Path:
    """Photo-sized encoded files the node suites load by URI: PNG and JPEG shapes."""
    directory.mkdir()
    for i, (colour, shape, ext) in enumerate([("red", "circle", "png"), ("blue", "square", "jpg"),
                                              ("green", "triangle", "jpg")]):
        spec = ShapeSpec(shape=shape, colour=colour, size="large", position="center",  # type: ignore[arg-type]
                         count=1, texture="solid")
        pixels = render(spec, 480, np.random.default_rng(i))
        Image.fromarray(pixels).resize((640, 480)).save(directory / f"{colour}-{shape}.{ext}",
                                                        quality=90)
    return directory


@pytest.mark.kafka
@pytest.mark.timeout(900)
async def test_node_suites_against_streamer_serve(package: Path, tmp_path: Path) -> None:
    ensure_broker()
    fixtures = photos(tmp_path / "photos")
    port = free_port()
    svc = ServiceProcess(new_prefix(), tmp_path / "svc", instance="ts",
                         extra_env={"STREAMER_HTTP_PORT": str(port), "STREAMER_AUTH_TOKENS": TOKENS})
    await asyncio.to_thread(svc.start)
    try:
        env = {**os.environ, "STREAMER_URL": f"http://127.0.0.1:{port}", "STREAMER_TOKEN": TOKEN,
               "STREAMER_PREFIX": svc.prefix, "STREAMER_PYTHON": sys.executable,
               "STREAMER_ROOT": str(ROOT), "PYTHONPATH": str(ROOT), "STREAMER_FIXTURES": str(fixtures)}
        proc = await asyncio.create_subprocess_exec(
            "node", "--test", "--test-reporter=tap", "--test-concurrency=1",
            *sorted(str(p.relative_to(package)) for p in package.glob("test/*.test.mjs")), cwd=package,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 840)
    finally:
        svc.kill()
    text = out.decode()
    summary = dict(re.findall(r"^# (tests|pass|fail|cancelled|skipped) (\d+)$", text, re.M))
    assert proc.returncode == 0, text[-12000:]
    assert summary.get("fail") == "0" and summary.get("cancelled") == "0", text[-6000:]
    assert int(summary.get("pass", 0)) >= 12 and summary.get("skipped") == "0", summary


def test_results_are_typed_by_include(package: Path) -> None:
    """tsc rejects reading a field the call did not include (test/typing.ts)."""
    _npm("run", "typecheck")


WSS_SCRIPT = """
import WebSocket from "ws";
import { StreamerClient } from "./dist/index.js";
const c = new StreamerClient({ url: process.env.STREAMER_URL, token: process.env.STREAMER_TOKEN,
                               WebSocket });
const col = await c.createCollection({ name: "over-wss", embeddingFunction: null });
await col.add({ ids: ["a", "b"], embeddings: [[1, 0], [0, 1]], documents: ["one", "two"] });
const hit = await col.query({ queryEmbeddings: [[0.9, 0.1]], nResults: 1, include: ["documents"] });
console.log(JSON.stringify({ count: await col.count(), ids: hit.ids, docs: hit.documents }));
c.close();
"""


def test_node_reaches_the_gateway_over_wss(package: Path, tmp_path: Path) -> None:
    """``streamer serve`` with a certificate serves wss: Node's client connects when it trusts
    the CA (NODE_EXTRA_CA_CERTS, as an operator sets it) and refuses the server otherwise."""
    tls = tmp_path / "tls"
    subprocess.run([str(ROOT / "compose/kafka/certs"), str(tls)], check=True, timeout=60,
                   capture_output=True)
    svc = ServiceProcess("embedded", tmp_path / "svc", instance="wss", args=["--embedded"],
                         extra_env={"STREAMER_AUTH_TOKENS": TOKENS, "STREAMER_HTTP_PORT": "0",
                                    "STREAMER_HTTP_TLS_CERTFILE": str(tls / "broker.pem"),
                                    "STREAMER_HTTP_TLS_KEYFILE": str(tls / "broker.key")})
    svc.start()
    try:
        assert svc.url is not None and svc.url.startswith("https://")
        script = package / f"wss-check-{os.getpid()}.mjs"  # beside dist/ and node_modules/
        script.write_text(WSS_SCRIPT)
        env = {**os.environ, "STREAMER_URL": svc.url.replace("https://", "wss://"),
               "STREAMER_TOKEN": TOKEN}
        try:
            trusted = subprocess.run(["node", script.name], cwd=package, capture_output=True,
                                     text=True, timeout=120,
                                     env={**env, "NODE_EXTRA_CA_CERTS": str(tls / "ca.pem")})
            untrusted = subprocess.run(["node", script.name], cwd=package, capture_output=True,
                                       text=True, timeout=120, env=env)
        finally:
            script.unlink()
    finally:
        svc.kill()
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert json.loads(trusted.stdout) == {"count": 2, "ids": [["a"]], "docs": [["one"]]}
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr, untrusted.stderr[-3000:]
