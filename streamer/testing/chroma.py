"""Servers for the Chroma HTTP API tests: ``chroma run`` from the chromadb 1.5.9 wheel (the
oracle) and ``streamer serve`` (``--embedded`` or on the local broker) with the Chroma API
open to anonymous clients (``STREAMER_HTTP_ANONYMOUS``) next to a bearer token."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from streamer.testing.kafka import ServiceProcess, ensure_broker, new_prefix
from streamer.testing.servers import free_port

TOKEN = "http-test-rw"
TOKENS = f"{TOKEN}:rw:*;http-reader:r:*"
CHROMA = Path(sys.executable).parent / "chroma"


@dataclass
class Server:
    url: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def wait_heartbeat(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no heartbeat from {url}: {log.read_text()[-2000:]}")


@contextmanager
def chroma_run(tmp: Path) -> Iterator[Server]:
    """``chroma run --path TMP --port P``: Chroma's own server, offline."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "chroma.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(CHROMA), "run", "--path", str(tmp / "chroma"), "--port",
                                 str(port), "--host", "127.0.0.1"], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_heartbeat(url, proc, log)
        yield Server(url)
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def streamer_serve(tmp: Path, *, kafka: bool, allow_reset: bool = False,
                   **env: str) -> Iterator[ServiceProcess]:
    """``streamer serve`` (``--embedded`` unless ``kafka``) with the Chroma API open."""
    if kafka:
        ensure_broker()
    extra = {"STREAMER_HTTP_PORT": str(free_port()), "STREAMER_AUTH_TOKENS": TOKENS,
             "STREAMER_HTTP_ANONYMOUS": "rw", "STREAMER_ALLOW_RESET": str(allow_reset).lower(),
             "STREAMER_FSYNC": "false", **env}
    svc = ServiceProcess(new_prefix() if kafka else "embedded", tmp / ("kafka" if kafka else "emb"),
                         instance="http", extra_env=extra, args=[] if kafka else ["--embedded"])
    svc.start()
    try:
        yield svc
    finally:
        svc.kill()
