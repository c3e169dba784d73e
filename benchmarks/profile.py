"""A py-spy profile of the service during ingestion, summarised as where the time goes."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

PY_SPY = Path(sys.executable).with_name("py-spy")


def available() -> bool:
    return PY_SPY.exists()


def record(pid: int, out: Path, rate: int = 50) -> subprocess.Popen[bytes]:
    """Sample ``pid`` (all threads, idle ones left out) until SIGINT; collapsed stacks."""
    return subprocess.Popen([str(PY_SPY), "record", "-p", str(pid), "-r", str(rate), "-f", "raw",
                             "--threads", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _name(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    fn, _, where = frame.partition(" (")
    return f"{fn} ({Path(where.rstrip(')').rsplit(':', 1)[0]).name})" if where else fn


def _thread(frame: str) -> str:
    # "thread (123): loader_1" -> "loader" (the pool's threads together)
    name = frame.split(": ", 1)[1] if frame.startswith("thread (") and ": " in frame else frame
    return re.sub(r"[_-]\d+$", "", name)


def summarise(raw: Path, top: int = 12) -> str:
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[_thread(frames[0])] += n
        names = [_name(f) for f in frames[1:]] or [frames[0]]
        leaf[names[-1]] += n
        for name in set(names):
            inclusive[name] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} active samples", "", "| busy thread | share |", "|---|---|"]
    lines += [f"| {t} | {n / total:.0%} |" for t, n in threads.most_common(6)]
    lines += ["", "| self time (leaf frame) | share |", "|---|---|"]
    lines += [f"| `{f}` | {n / total:.1%} |" for f, n in leaf.most_common(top)]
    lines += ["", "| inclusive (frame on stack) | share |", "|---|---|"]
    lines += [f"| `{f}` | {n / total:.1%} |" for f, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)
