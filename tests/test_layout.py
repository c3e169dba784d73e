"""Imports point one way: ``schemas`` <- ``consumers`` <- ``streamer``, and inside ``streamer``
settings/errors/metrics/data_loaders/embedding_functions <- client <- kafka <- gateway <-
server <- cli/training/reference, with no cycle between rooms. Read from the source (an AST walk over
every import, lazy ones inside functions included), so nothing is imported to check it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("schemas", "consumers", "streamer")

#: A room of ``streamer`` and its layer; a room may import from its own layer or lower ones.
STREAMER_LAYERS = {
    "streamer.settings": 0, "streamer.errors": 0, "streamer.metrics": 0,
    "streamer.data_loaders": 0, "streamer.embedding_functions": 0,
    "streamer.client": 1, "streamer.kafka": 2, "streamer.gateway": 3, "streamer.server": 4,
    "streamer.cli": 5, "streamer.training": 5,
    # Generates docs/reference/ from the settings and schemas/generated; nothing imports it.
    "streamer.reference": 5,
    # The package itself and ``python -m streamer``: the entry points, above everything.
    "streamer": 6, "streamer.__main__": 6,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, resolved to full dotted names."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else \
        _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from streamer import metrics`` imports the module streamer.metrics.
                sub = ROOT / Path(*base.split("."), alias.name)
                is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                found.add(f"{base}.{alias.name}" if is_module else base)
    return {name for name in found if name.split(".")[0] in OURS}


def _room(module: str) -> str:
    """The unit the layering speaks of: a top-level package for schemas/consumers, the
    subpackage or top-level module for streamer."""
    parts = module.split(".")
    if parts[0] != "streamer":
        return parts[0]
    return ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for top in OURS:
        for path in sorted((ROOT / top).rglob("*.py")):
            module = _module_name(path)
            for target in _imports(path):
                edges[module].add(target)
    return edges


def _violations(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(edges.items()):
        src = _room(module)
        for target in sorted(targets):
            dst = _room(target)
            if src == dst or (src == "streamer" and module == "streamer" and dst == "streamer"):
                continue
            if src == "schemas":
                bad.append(f"{module} -> {target}: schemas imports nothing of ours")
            elif src == "consumers" and dst != "schemas":
                bad.append(f"{module} -> {target}: consumers imports only schemas")
            elif src.startswith("streamer") and dst.startswith("streamer"):
                if src not in STREAMER_LAYERS or dst not in STREAMER_LAYERS:
                    bad.append(f"{module} -> {target}: {src} or {dst} has no layer; add it")
                elif STREAMER_LAYERS[dst] > STREAMER_LAYERS[src]:
                    bad.append(f"{module} -> {target}: {src} (layer {STREAMER_LAYERS[src]}) "
                               f"imports upward into {dst} (layer {STREAMER_LAYERS[dst]})")
    return bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    rooms: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if _room(module) != _room(target):
                rooms[_room(module)].add(_room(target))
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(rooms.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for room in sorted(rooms):
        if room not in state:
            visit(room, [room])
    return found


def test_imports_point_one_way() -> None:
    edges = _graph()
    assert sum(len(t) for t in edges.values()) > 100  # the walk found the real imports
    assert _violations(edges) == []


def test_no_cycle_between_rooms() -> None:
    assert _cycles(_graph()) == []


@pytest.mark.parametrize("source, expected", [
    ("from streamer.kafka.client import KafkaClient", "imports upward"),
    ("def f():\n    from streamer.server import serve", "imports upward"),
    ("from streamer import gateway", "imports upward"),
])
def test_the_check_catches_an_upward_import(tmp_path: Path, source: str, expected: str) -> None:
    """The walk sees module-level and lazy imports alike (checked on a planted file)."""
    planted = ROOT / "streamer" / "client" / "_planted_for_test.py"
    planted.write_text(source + "\n")
    try:
        assert any(expected in v for v in _violations(_graph()))
        assert _cycles(_graph()) != []
    finally:
        planted.unlink()


def test_every_package_says_what_it_owns() -> None:
    for init in sorted([*ROOT.glob("schemas/**/__init__.py"), *ROOT.glob("consumers/**/__init__.py"),
                        *ROOT.glob("streamer/**/__init__.py")]):
        if "generated" in init.parts or "static" in init.parts:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 12, f"{init.relative_to(ROOT)} needs a docstring"
