"""The package's layers (docs/architecture.md): no module imports a layer to its right, and no import cycles.

Checked from the source with :mod:`ast`, so a new upward import or a new cycle fails here before it can
tangle the code. Only imports that run when a module is imported count for cycles (top level, not under
``TYPE_CHECKING``); every import counts for the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advspatial"

#: left to right: a unit may import units of its own layer or of layers to its left
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"errors", "runtime", "progress", "distributed", "registry"}),
    ("data and models", {"data", "models"}),
    ("attacks", {"attacks"}),
    ("maps", {"maps"}),
    ("regions and statistics", {"regions"}),
    ("defence, analyses, training, masks, streaming",
     {"defense", "analysis", "training", "finetuning", "model_cache", "masks", "pipeline"}),
    ("report rendering", {"report"}),
    ("experiments", {"experiments"}),
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
