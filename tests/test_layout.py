"""Imports point one way: ``schemas`` <- ``consumers`` <- ``streamer``; inside ``consumers``
runtime <- loading <- validation <- embedding/storage <- reads/write/upstream; inside
``streamer`` settings/errors/metrics/data_loaders/embedding_functions <- client <- kafka <-
gateway <- server <- cli/training/reference, with ``streamer.testing`` (what tests and benchmarks
share) above them all. No cycle between rooms, none between modules, and nothing of ours
or of the benchmarks imports the test suite. Read from the source (an AST walk over every
import), so nothing is imported to check it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("schemas", "consumers", "streamer")

#: A room of ``consumers`` and its layer; a room may import from its own layer or lower ones.
#: ``consumers`` itself is the package's ``__init__`` (it imports only OpenVINO, first).
CONSUMERS_LAYERS = {
    "consumers": 0, "consumers.runtime": 0, "consumers.loading": 1, "consumers.validation": 2,
    "consumers.embedding": 3, "consumers.storage": 3,
    "consumers.reads": 4, "consumers.write": 4, "consumers.upstream": 4,
}

#: A room of ``streamer`` and its layer, read the same way.
STREAMER_LAYERS = {
    "streamer.settings": 0, "streamer.errors": 0, "streamer.metrics": 0, "streamer.tracing": 0,
    "streamer.data_loaders": 0, "streamer.embedding_functions": 0, "streamer.expression": 0,
    "streamer.schema": 0,
    "streamer.client": 1, "streamer.kafka": 2, "streamer.gateway": 3, "streamer.server": 4,
    "streamer.cli": 5, "streamer.training": 5,
    # Generates docs/reference/ from the settings and schemas/generated; nothing imports it.
    "streamer.reference": 5,
    # The package itself and ``python -m streamer``: the entry points, above everything.
    "streamer": 6, "streamer.__main__": 6,
    # The harness the tests and the benchmarks drive the system with: nothing of ours uses it.
    "streamer.testing": 7,
}
LAYERS = {**CONSUMERS_LAYERS, **STREAMER_LAYERS}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, tops: tuple[str, ...] = OURS) -> set[str]:
    """Every module under ``tops`` that ``path`` imports, resolved to full dotted names (lazy
    ones inside functions and ``if TYPE_CHECKING`` ones included)."""
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
    return {name for name in found if name.split(".")[0] in tops}


def _room(module: str) -> str:
    """The unit the layering speaks of: the package for schemas, the subpackage (or the
    package's own ``__init__``) for consumers, the subpackage or top-level module for
    streamer."""
    parts = module.split(".")
    if parts[0] == "schemas":
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
            elif src.startswith("consumers") and not dst.startswith(("consumers", "schemas")):
                bad.append(f"{module} -> {target}: consumers imports only schemas")
            elif dst != "schemas" and src.split(".")[0] == dst.split(".")[0]:
                if src not in LAYERS or dst not in LAYERS:
                    bad.append(f"{module} -> {target}: {src} or {dst} has no layer; add it")
                elif LAYERS[dst] > LAYERS[src]:
                    bad.append(f"{module} -> {target}: {src} (layer {LAYERS[src]}) "
                               f"imports upward into {dst} (layer {LAYERS[dst]})")
    return bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    rooms: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if _room(module) != _room(target):
                rooms[_room(module)].add(_room(target))
    return _cycles_in(rooms)


def _cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` meets (at least one wherever there is one)."""
    rooms = graph
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


def test_no_cycle_between_modules() -> None:
    """Module by module, inside a room too. Lazy imports inside functions and ``if
    TYPE_CHECKING`` ones count: they cannot break an import at start-up, but deferring an
    import of our own module is exactly how a cycle hides (kafka/client.py <-> scatter.py
    was one, through TYPE_CHECKING); what modules defer for speed (torch, aiokafka, open_clip)
    is not ours and is not read. A parent package that Python imports on the way
    (``streamer`` for ``streamer.kafka.client``) is no edge."""
    assert _cycles_in(_graph()) == []


def test_the_module_check_finds_a_cycle() -> None:
    assert _cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_nothing_imports_the_test_suite() -> None:
    """The benchmarks and the product import what they share with the tests from
    ``streamer.testing``; only the tests import ``tests``."""
    bad = [f"{path.relative_to(ROOT)} -> {name}"
           for top in (*OURS, "benchmarks") for path in sorted((ROOT / top).rglob("*.py"))
           for name in sorted(_imports(path, tops=("tests",)))]
    assert bad == []


def test_consumers_is_rooms_only() -> None:
    """No module sits flat in consumers/ beside its rooms, and every room has a layer."""
    assert sorted(p.name for p in (ROOT / "consumers").glob("*.py")) == ["__init__.py"]
    rooms = {f"consumers.{p.parent.name}" for p in (ROOT / "consumers").glob("*/*.py")}
    assert rooms == set(CONSUMERS_LAYERS) - {"consumers"}
    for room in rooms:
        assert (ROOT / room.replace(".", "/") / "__init__.py").is_file(), room


@pytest.mark.parametrize("room, source, cycle", [
    ("streamer/client", "from streamer.kafka.client import KafkaClient", True),
    ("streamer/client", "def f():\n    from streamer.server import serve", True),
    ("streamer/client", "from streamer import gateway", True),
    ("streamer/client", "from streamer.testing.kafka import BOOTSTRAP", False),
    ("consumers/storage", "from consumers.write.pipeline import Pipeline", True),
    ("consumers/runtime", "def f():\n    from consumers.loading import load", False),
])
def test_the_check_catches_an_upward_import(room: str, source: str, cycle: bool) -> None:
    """The walk sees module-level and lazy imports alike (checked on a planted file); where
    the target room imports the planted one's, that is a cycle between rooms too."""
    planted = ROOT / room / "_planted_for_test.py"
    planted.write_text(source + "\n")
    try:
        assert any("imports upward" in v for v in _violations(_graph()))
        assert (_cycles(_graph()) != []) is cycle
    finally:
        planted.unlink()


def test_every_package_says_what_it_owns() -> None:
    for init in sorted([*ROOT.glob("schemas/**/__init__.py"), *ROOT.glob("consumers/**/__init__.py"),
                        *ROOT.glob("streamer/**/__init__.py")]):
        if "generated" in init.parts or "static" in init.parts:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 12, f"{init.relative_to(ROOT)} needs a docstring"
