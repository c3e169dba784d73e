"""A real ``streamer serve`` process against the local Apache Kafka broker (compose/kafka),
and the topic prefixes a run hands out. Run from a checkout: the broker starts with
``compose/kafka/start`` and the service runs from the repository root."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: streamer/testing/ is two below
BOOTSTRAP = os.environ.get("STREAMER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def broker_up() -> bool:
    host, port = BOOTSTRAP.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def ensure_broker() -> None:
    if not broker_up():
        subprocess.run([str(ROOT / "compose/kafka/start")], check=True, timeout=180)


@dataclass
class ServiceProcess:
    prefix: str
    data_dir: Path
    instance: str = "0"
    extra_env: dict[str, str] | None = None
    args: list[str] | None = None  # extra `streamer serve` arguments, e.g. ["--source", FILE]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    url: str | None = None  # the gateway's, from the "streamer: gateway on URL" line

    @property
    def port(self) -> int:
        assert self.url is not None, "the service has not printed its gateway URL"
        return int(self.url.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        return {**os.environ, "STREAMER_KAFKA_BOOTSTRAP": BOOTSTRAP,
                "STREAMER_KAFKA_TOPIC_PREFIX": self.prefix, "STREAMER_DATA_DIR": str(self.data_dir),
                "STREAMER_LOG_LEVEL": "WARNING", "STREAMER_CHECKPOINT_EVERY": "500",
                "STREAMER_INSTANCE_ID": self.instance, "STREAMER_HTTP_PORT": "0",
                **(self.extra_env or {})}

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.with_suffix(".log")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", *(self.args or [])],
                                     cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=log)
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 90
        line = b""
        while time.monotonic() < deadline and b"serving" not in line:
            line = self.proc.stdout.readline()
            if line.startswith(b"streamer: gateway on "):
                self.url = line.split()[-1].decode()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_path.read_text()[-2000:]}")
        if b"serving" not in line:
            raise RuntimeError("service did not start in time")

    def problems(self) -> list[str]:
        """The log lines of streamer's own loggers at WARNING or above, tracebacks included."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if not line.startswith('{"') or ('"logger":"aiokafka' not in line
                                                 and '"level":"INFO"' not in line
                                                 and '"level":"DEBUG"' not in line)]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(timeout=timeout)
        self._close()
        return code

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def starter(started: list[ServiceProcess], prefix: str, data_dir: Path, instance: str,
            env: dict[str, str]) -> Callable[[], ServiceProcess]:
    """Starts a fresh ``streamer serve`` of one instance and data dir each call, kept in
    ``started`` (the test's ``services``) so it is killed when the test ends."""
    def start() -> ServiceProcess:
        svc = ServiceProcess(prefix, data_dir, instance=instance, extra_env=env)
        svc.start()
        started.append(svc)
        return svc
    return start


class KillLoop:
    """SIGKILLs a service at random gaps and starts it again, on a thread: ``times`` kills, or
    with ``until_done`` at least ``times`` and on until :meth:`done` (the workload is all
    acknowledged). ``start`` returns a started service; the loop keeps the newest in
    ``service``, and a restarted one keeps the instance id, so its transactional id fences the
    dead one."""

    def __init__(self, start: Callable[[], ServiceProcess], *, times: int, seed: int,
                 gap_s: tuple[float, float] = (0.5, 2.0), until_done: bool = False) -> None:
        self.service = start()
        self.kills = 0
        self._start, self._times, self._until_done = start, times, until_done
        self._rng, self._gap_s = random.Random(seed), gap_s
        self._done, self._stopped = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer")

    def _more(self) -> bool:
        return self.kills < self._times or (self._until_done and not self._done.is_set())

    def _run(self) -> None:
        while self._more():
            if self._stopped.wait(self._rng.uniform(*self._gap_s)):
                return
            self.service.kill()  # SIGKILL: whatever batch, transaction or fsync is in flight
            self.kills += 1
            self.service = self._start()

    def __enter__(self) -> KillLoop:
        self._thread.start()
        return self

    def done(self, timeout: float) -> int:
        """The workload is acknowledged: let the loop finish its kills; how many it made."""
        self._done.set()
        self._thread.join(timeout=timeout)
        assert not self._thread.is_alive(), "the kill loop did not finish"
        return self.kills

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=120)


def refused_start(svc: ServiceProcess, within_s: float = 60) -> str:
    """Start ``svc``, which must exit (a misconfiguration) within ``within_s``: its log."""
    started = time.monotonic()
    try:
        svc.start()
    except RuntimeError as exc:
        if "service exited" not in str(exc):
            raise
    else:
        raise AssertionError("the service started")
    finally:
        svc.kill()
    assert time.monotonic() - started < within_s
    assert svc.log_path is not None
    return svc.log_path.read_text()


# Every prefix this test process handed out: their topics are deleted when the session ends,
# so the developer's broker does not grow by thousands of partitions per run (a broker that
# must load them all at start-up no longer answers within compose/kafka/start's wait).
_PREFIXES: set[str] = set()


def new_prefix() -> str:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    _PREFIXES.add(prefix)
    return prefix


def delete_test_topics() -> int:
    """Deletes the topics under the prefixes this process handed out; returns how many."""
    if not _PREFIXES or not broker_up():
        return 0
    return asyncio.run(_delete_topics(tuple(f"{p}." for p in _PREFIXES)))


async def _delete_topics(starts: tuple[str, ...]) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=30_000)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(starts)]
        for i in range(0, len(doomed), 100):
            await admin.delete_topics(doomed[i:i + 100], timeout_ms=30_000)
        return len(doomed)
    finally:
        await admin.close()


def service(tmp: Path, prefix: str, name: str = "svc") -> Iterator[ServiceProcess]:
    svc = ServiceProcess(prefix, tmp / name)
    svc.start()
    try:
        yield svc
    finally:
        svc.kill()
