"""The TypeScript client's Node examples run as a new user runs them: ``npm init -y`` in an
empty folder, ``npm install`` of the packed client (``npm pack`` of clients/typescript, and
``ws`` packed from its lockfile install, so nothing is fetched), each ``js`` block of
README.md and clients/typescript/README.md written verbatim to the file name its text says
("Save this as `example.mjs`"), and ``node FILE`` against a real running gateway
(``streamer serve --embedded``): it must exit 0 in bounded time and print what it promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.gateway import TOKEN, TOKENS
from streamer.testing.kafka import ROOT
from tests import test_typescript_client as ts

READMES = [ROOT / "README.md", ROOT / "clients" / "typescript" / "README.md"]
SAVE_AS = re.compile(r"[Ss]aved? (?:this )?as `([\w.-]+\.(?:mjs|cjs|js))`")
#: What each example must print (regexes, each matching one whole line of its output).
EXPECTED = {
    "example.mjs": [r"duplicate_id false", r"live match: circle-\d+ 0\.000"],
    "example.js": [r"count: 1"],
}


def node_examples(readme: Path) -> list[tuple[str, str]]:
    """``(file name, code)`` of each ```js block whose preceding text names the file."""
    text = readme.read_text()
    found, last_end = [], 0
    for m in re.finditer(r"^```js\n(.*?)^```$", text, re.S | re.M):
        names = SAVE_AS.findall(text[last_end:m.start()])
        if names:
            found.append((names[-1], m.group(1)))
        last_end = m.end()
    return found


EXAMPLES = [(readme, name, code) for readme in READMES for name, code in node_examples(readme)]


def test_the_readmes_show_the_node_examples() -> None:
    """One ES-module example (the same in both READMEs) and one CommonJS example."""
    by_file = {(str(readme.relative_to(ROOT)), name): code for readme, name, code in EXAMPLES}
    assert set(by_file) == {("README.md", "example.mjs"), ("clients/typescript/README.md", "example.mjs"),
                            ("clients/typescript/README.md", "example.js")}
    assert by_file["README.md", "example.mjs"] == by_file["clients/typescript/README.md", "example.mjs"]
    assert set(EXPECTED) == {name for _, name in by_file}


def _node_version() -> tuple[int, ...]:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    return tuple(int(part) for part in out.strip().lstrip("v").split("."))


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh ``npm init -y`` project with the packed client and ws installed offline."""
    if not shutil.which("node") or not shutil.which("npm") or _node_version() < (20,):
        pytest.skip("needs node >= 20 and npm (.ci/run installs them)")
    if not (ts.PACKAGE / "node_modules" / ".package-lock.json").exists():
        ts._npm("ci", "--no-audit", "--no-fund")
    packed = tmp_path_factory.mktemp("packed")
    ts._npm("pack", "--silent", "--pack-destination", str(packed))  # prepack: tsc
    ts._npm("pack", "--silent", "./node_modules/ws", "--pack-destination", str(packed))
    tarballs = sorted(str(p) for p in packed.glob("*.tgz"))
    assert len(tarballs) == 2, tarballs
    project = tmp_path_factory.mktemp("your-app")
    for argv in (["npm", "init", "-y"],
                 ["npm", "install", "--offline", "--no-audit", "--no-fund", *tarballs]):
        done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return project


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamer serve --embedded`` on a free port: its URL."""
    data = tmp_path_factory.mktemp("gateway")
    log = open(data / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "serve", "--embedded", "--data-dir", str(data / "db"),
         "--http-port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=log,
        env={**os.environ, "PYTHONPATH": str(ROOT), "STREAMER_AUTH_TOKENS": TOKENS,
             "STREAMER_LOG_LEVEL": "WARNING"})
    log.close()
    assert proc.stdout is not None
    url, deadline = None, time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError((data / "serve.log").read_text()[-2000:])
            if found := re.search(r"gateway on (http://\S+)", line):
                url = found.group(1)
            if "serving" in line:
                break
        assert url is not None, "the gateway did not start"
        yield url
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("readme, name, code", EXAMPLES,
                         ids=[f"{r.relative_to(ROOT)}:{n}" for r, n, _ in EXAMPLES])
def test_node_example_runs_as_written(app: Path, gateway: str, readme: Path, name: str,
                                      code: str) -> None:
    if name == "example.js" and _node_version() < (20, 19):
        pytest.skip("require() of an ES module needs Node >= 20.19, as the README says")
    (app / name).write_text(code)
    done = subprocess.run(["node", name], cwd=app, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TOKEN": TOKEN, "STREAMER_URL": gateway})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for pattern in EXPECTED[name]:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, done.stdout)


@pytest.mark.slow
def test_the_es_module_example_saved_as_js_fails_as_the_readme_says(app: Path) -> None:
    """Why the README says .mjs: in an ``npm init -y`` (CommonJS) project a .js file with
    ``import`` stops at once."""
    code = next(code for _, name, code in EXAMPLES if name == "example.mjs")
    (app / "wrong-name.js").write_text(code)
    done = subprocess.run(["node", "wrong-name.js"], cwd=app, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "Cannot use import statement outside a module" in done.stderr
