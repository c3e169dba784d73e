"""The README and docs/ say only what holds: every test they name exists, every guarantee
names its test, every link and nav entry resolves, every ```python example runs as written
(and prints what its comments say), and every ``streamer`` command line shown parses.

Examples are run in a fresh temporary directory, each in its own interpreter. A marker comment
on the line above a block changes how: ``<!-- example: kafka -->`` runs it in the
kafka-marked test against a real ``streamer serve`` (Chroma's HTTP API on the port in
``STREAMER_HTTP_PORT``); ``<!-- example: skip REASON -->`` skips
it, with the reason shown (few, and each must say why)."""

from __future__ import annotations

import ast
import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from streamer.cli.main import build_parser
from streamer.testing.kafka import ROOT, ServiceProcess, ensure_broker, new_prefix

DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "clients/typescript/README.md", *DOCS.rglob("*.md")])
MARKER = re.compile(r"^<!--\s*example:\s*(\w+)\s*(.*?)\s*-->\s*$")
MAX_SKIPS = 3


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str  # "run", "kafka" or "skip"
    reason: str

    @property
    def id(self) -> str:
        return f"{_rel(self.page)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the example marker of the line above each."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.match(lines[i - 1]) if i else None
        mode, reason = (marker.group(1), marker.group(2)) if marker else ("run", "")
        found.append(Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                           mode, reason))
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


# ---- tests named by the docs ---------------------------------------------------------------

REF = re.compile(r"(?P<file>tests/[\w/]+\.py)(?:::(?P<name>[\w:]+))?|`::(?P<more>[\w:]+)(?:\[[^\]`]*\])?`")


def references(text: str) -> list[tuple[str, str | None]]:
    """``(file, test)`` for each ``tests/x.py::name`` and each ``::name`` that continues the
    last file named in its paragraph; parametrized ids (``[...]``) are stripped."""
    refs: list[tuple[str, str | None]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        current: str | None = None
        for m in REF.finditer(paragraph):
            if m.group("file"):
                current = m.group("file")
                refs.append((current, m.group("name")))
            else:
                assert current is not None, f"`::{m.group('more')}` follows no tests/ file"
                refs.append((current, m.group("more")))
    return refs


@functools.cache
def defined_tests(path: Path) -> frozenset[str]:
    """``name`` of each module-level function and ``Class::name`` of each method."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
    return frozenset(names)


def test_the_reference_parser_reads_the_forms_the_docs_use() -> None:
    text = ("`tests/test_a.py::test_x[http]`, `[https]`, `::test_y`\n"
            "and `tests/test_b.py` (whole file), `tests/test_c.py::TestK::test_z`\n\n"
            "`tests/test_d.py::test_w`")
    assert references(text) == [("tests/test_a.py", "test_x"), ("tests/test_a.py", "test_y"),
                                ("tests/test_b.py", None), ("tests/test_c.py", "TestK::test_z"),
                                ("tests/test_d.py", "test_w")]


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_test_the_docs_name_exists(page: Path) -> None:
    missing = []
    for file, name in references(page.read_text()):
        path = ROOT / file
        if not path.exists():
            missing.append(f"{file} (no such file)")
        elif name is not None and name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert not missing, f"{_rel(page)} names tests that do not exist: {missing}"


def test_every_guarantee_names_the_test_that_proves_it() -> None:
    """Each row of a "Promise | Proved by" table names at least one test as file::name."""
    rows, in_table = 0, False
    for line in (DOCS / "guarantees.md").read_text().splitlines():
        if line.startswith("| Promise | Proved by"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("| ---"):
            rows += 1
            proof = line.rstrip(" |").rsplit(" | ", 1)[-1]
            assert any(name for _, name in references(proof)), f"names no test::name: {line[:100]}"
    assert rows >= 40, rows  # the tables were found


# ---- links and the site ----------------------------------------------------------------------

LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


@pytest.mark.parametrize("page", [ROOT / "README.md", ROOT / "clients/typescript/README.md"], ids=_rel)
def test_readme_links_resolve(page: Path) -> None:
    """mkdocs checks docs/; the READMEs' relative links (into docs/ pages) are checked here."""
    broken = [target for target in LINK.findall(page.read_text())
              if not (page.parent / target.split("#")[0]).exists()]
    assert not broken, broken


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def test_the_nav_lists_every_page() -> None:
    nav = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """What .ci/run does: a broken link, anchor or image, or a page off the nav, fails."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra: compose/local/setup")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "img" / "results.png").stat().st_size > 10_000  # the chart


# ---- examples --------------------------------------------------------------------------------

def expected_output(code: str) -> list[str]:
    """The comment after each top-level ``print(...)`` line: what the example says it prints."""
    return [m.group(1) for m in re.finditer(r"^print\(.*\)\s+#\s*(.+?)\s*$", code, re.M)]


def run_example(block: Block, cwd: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run([sys.executable, "-c", block.code], cwd=cwd, capture_output=True,
                          text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    said = expected_output(block.code)
    if said:
        assert done.stdout.splitlines()[-len(said):] == said, (block.id, done.stdout)


def test_examples_are_found_and_skips_are_few_and_explained() -> None:
    assert len(PYTHON) >= 3 and any(b.mode == "kafka" for b in PYTHON)
    assert {b.mode for b in PYTHON} <= {"run", "kafka", "skip"}
    skips = [b for b in PYTHON if b.mode == "skip"]
    assert all(b.reason for b in skips), [b.id for b in skips if not b.reason]
    assert len(skips) <= MAX_SKIPS, [b.id for b in skips]


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in PYTHON if b.mode != "kafka"], ids=lambda b: b.id)
def test_embedded_example_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.mode == "skip":
        pytest.skip(f"{block.id}: {block.reason}")
    run_example(block, tmp_path)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kafka_examples_run_as_written(tmp_path: Path) -> None:
    """Each kafka example against one real ``streamer serve`` (its own topic prefix), whose
    HTTP port (Chroma's API, for ``chromadb.HttpClient``) is ``STREAMER_HTTP_PORT`` and whose
    token is the docs' ``s3cret``."""
    ensure_broker()
    svc = ServiceProcess(new_prefix(), tmp_path / "svc", instance="docs",
                         extra_env={"STREAMER_AUTH_TOKENS": "s3cret:rw:*"})
    svc.start()
    try:
        for block in (b for b in PYTHON if b.mode == "kafka"):
            cwd = tmp_path / f"example-{block.line}"
            cwd.mkdir()
            run_example(block, cwd, {"STREAMER_KAFKA_TOPIC_PREFIX": svc.prefix,
                                     "STREAMER_HTTP_PORT": str(svc.port)})
    finally:
        svc.kill()


# ---- command lines ---------------------------------------------------------------------------

def command_lines() -> list[tuple[str, list[str]]]:
    """``(where, argv after 'streamer')`` for each ``streamer`` command of a shell block."""
    found = []
    for block in ALL_BLOCKS:
        if block.lang not in ("sh", "bash", "shell", "console"):
            continue
        for line in block.code.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line)
            for part in re.split(r";|&&|\|\|", line):
                words = shlex.split(part.replace("[", " ").replace("]", " "))
                if words and Path(words[0]).name == "streamer":
                    found.append((block.id, words[1:]))
    return found


def test_every_streamer_command_shown_exists() -> None:
    """Each subcommand and each flag of a ``streamer`` line in a shell block is the CLI's."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(sub.choices, dict)
    commands = command_lines()
    assert len(commands) >= 8
    for where, argv in commands:
        assert argv and argv[0] in sub.choices, (where, argv)
        flags = {s for a in sub.choices[argv[0]]._actions for s in a.option_strings}
        unknown = [w.split("=")[0] for w in argv[1:] if w.startswith("-") and w.split("=")[0] not in flags]
        assert not unknown, (where, argv[0], unknown)


def test_every_script_and_module_shown_exists() -> None:
    """``compose/...`` scripts in shell blocks and ``python -m`` modules of ours anywhere."""
    missing = []
    for block in ALL_BLOCKS:
        if block.lang in ("sh", "bash"):
            missing += [f"{block.id}: {p}" for p in re.findall(r"(?<![\w/])(compose/[\w/.-]+)", block.code)
                        if not (ROOT / p).exists()]
    for page in PAGES:
        for module in re.findall(r"python -m ([\w.]+)", page.read_text()):
            if module.split(".")[0] in ("schemas", "consumers", "streamer", "benchmarks", "tests"):
                path = ROOT / Path(*module.split("."))
                if not (path.with_suffix(".py").exists() or (path / "__main__.py").exists()):
                    missing.append(f"{_rel(page)}: python -m {module}")
    assert not missing, missing

