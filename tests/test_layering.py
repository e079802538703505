"""The package's layers (docs/architecture.md): no module imports a layer to its right, and no import cycles.

Checked from the source with :mod:`ast`, so a new upward import or a new cycle fails here before it can
tangle the code. Every import counts for the layers and for the cycles between modules, those inside a
function and under ``TYPE_CHECKING`` included: a function-level import only hides a cycle, it does not
remove it. No module is longer than :data:`MAX_LINES`: past that a module holds more than one concept.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advspatial"

#: left to right: a unit may import units of its own layer or of layers to its left
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"errors", "environment", "files", "runtime", "rundir", "passes", "progress", "distributed",
                    "registry"}),
    ("data and models", {"data", "models"}),
    ("attacks", {"attacks"}),
    ("maps", {"maps"}),
    ("regions, statistics and the faithfulness gate", {"regions", "statistics", "faithfulness"}),
    ("defence, analyses, training, masks, streaming",
     {"defence", "analysis", "training", "data_parallel", "finetuning", "model_cache", "masks", "pipeline"}),
    ("report rendering", {"report"}),
    ("experiments", {"experiments"}),
    ("studies across models", {"studies"}),
    ("entry points", {"api", "cli", "__init__", "__main__"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Absolute module names an ``from ... import`` names (a package's submodules included)."""
    if node.level == 0:
        base = node.module or ""
        return [base] if base.startswith("advspatial") else []
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    base = ".".join(package + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports(path: Path, top_level_only: bool) -> set[str]:
    module = module_name(path)
    tree = ast.parse(path.read_text())
    nodes = list(tree.body) if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom):
            found.update(resolve(module, path.name == "__init__.py", node))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("advspatial"))
    return found


MODULES = sorted(SRC.rglob("*.py"))
#: the longest a module may be
MAX_LINES = 450
KNOWN = {module_name(p) for p in MODULES}


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in MODULES}
    assert units <= set(LAYER_OF), f"units without a layer: {sorted(units - set(LAYER_OF))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_reaches_to_the_right(path):
    here = LAYER_OF[unit_of(module_name(path))]
    for target in imports(path, top_level_only=False):
        if target not in KNOWN:
            continue
        there = LAYER_OF[unit_of(target)]
        assert there <= here, (f"{module_name(path)} ({LAYERS[here][0]}) imports {target} "
                               f"({LAYERS[there][0]}), a layer to its right")


def test_no_import_cycles_at_import_time():
    graph = {module_name(p): {t for t in imports(p, top_level_only=True) if t in KNOWN and t != module_name(p)}
             for p in MODULES}
    # a package's __init__ importing its own submodules is not a cycle of the submodule importing the package
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + "."):  # a package importing its own submodule
                continue
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if state.get(nxt) is None:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if state.get(name) is None:
            visit(name, [name])


def module_graph() -> dict[str, set[str]]:
    """Every module's imports of other advspatial modules, at any depth; an import of a module's own ancestor
    package (``from . import x`` names the package too) is left out, as is a package importing its own
    submodules: neither is a cycle between two concepts."""
    graph = {}
    for path in MODULES:
        name = module_name(path)
        graph[name] = {t for t in imports(path, top_level_only=False)
                       if t in KNOWN and t != name and not name.startswith(t + ".") and not t.startswith(name + ".")}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_strongly_connected_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_even_through_function_level_imports():
    cycles = strongly_connected(module_graph())
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_is_longer_than_the_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines (limit {MAX_LINES}): split it by concept"
