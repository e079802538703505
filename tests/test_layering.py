"""The package's layers (docs/architecture.md): no module imports a layer to its right, and no import cycles.

Checked from the source with :mod:`ast`, so a new upward import or a new cycle fails here before it can
tangle the code. Every import counts for the layers and for the cycles between modules, those inside a
function and under ``TYPE_CHECKING`` included: a function-level import only hides a cycle, it does not
remove it. No module is longer than :data:`MAX_LINES`: past that a module holds more than one concept. A module
of a shared layer has two consumers or is public API: what one experiment alone uses lives in its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advspatial"

#: left to right: a unit may import units of its own layer or of layers to its left
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"errors", "environment", "files", "runtime", "rundir", "passes", "stacked_runs", "host_syncs",
                    "progress", "distributed", "registry", "model_work", "keyed_random", "phase_clock"}),
    ("data and models", {"data", "models"}),
    ("attacks", {"attacks"}),
    ("maps", {"maps"}),
    ("regions, statistics and the faithfulness gate", {"regions", "statistics", "faithfulness"}),
    ("defence, analyses, training, masks, streaming",
     {"defence", "analysis", "training", "training_modes", "data_parallel", "model_cache", "masks"}),
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


# -- one research question, one folder ---------------------------------------------------------------------------
#: the packages that each answer one research question (a registered experiment) and the other consumers of the
#: shared layers: a module that only one of them uses belongs inside it
EXPERIMENT_PACKAGES = ("localized", "maps", "perceptual", "propagation", "pse", "spatial")
#: the packages in experiments/ that are machinery the experiments share (the RoI/RoA measurement), not experiments
SHARED_PACKAGES = ("measurement",)
#: the experiments that are one module each
EXPERIMENT_MODULES = ("advspatial.experiments.analyze", "advspatial.experiments.baseline")


def consumer_of(module: str) -> str | None:
    """The consumer a module belongs to (an experiment package, a stand-alone experiment, the studies, the CLI, the
    Python entry points), or None for a module of a shared layer."""
    parts = module.split(".") + ["", ""]
    if parts[1] == "experiments" and parts[2] in EXPERIMENT_PACKAGES:
        return f"experiments.{parts[2]}"
    if module in EXPERIMENT_MODULES:
        return module.removeprefix("advspatial.")
    if parts[1] in ("studies", "cli", "api", "__main__") or module == "advspatial":
        return parts[1] or "advspatial"
    return None


def single_user_modules(graph: dict[str, set[str]], packages: set[str]) -> dict[str, set[str]]:
    """Modules of the shared layers with fewer than two consumers that are not public API, with their consumers.

    ``graph``: each module's imports; ``packages``: the modules that are packages (``__init__``). A shared module is
    public API when its own package's ``__init__`` imports it (it re-exports or registers what it defines) or when a
    public module of a shared layer imports it (it implements public API); otherwise it needs two consumers, counted
    through any chain of shared modules.
    """
    importers: dict[str, set[str]] = {m: set() for m in graph}
    for module, targets in graph.items():
        for target in targets:
            importers.setdefault(target, set()).add(module)
    shared = {m for m in graph if consumer_of(m) is None and m not in packages}

    def consumers(module: str) -> set[str]:
        seen, todo, found = {module}, [module], set()
        while todo:
            for user in importers.get(todo.pop(), ()):
                if user in seen:
                    continue
                seen.add(user)
                owner = consumer_of(user)
                if owner is not None:
                    found.add(owner)
                elif user not in packages:
                    todo.append(user)
        return found

    public = {m for m in shared if m.rsplit(".", 1)[0] in importers.get(m, set()) & packages
              and consumer_of(m.rsplit(".", 1)[0]) is None and m.rsplit(".", 1)[0] != "advspatial.experiments"}
    reach = public | {m for m in shared if len(consumers(m)) >= 2}
    todo = list(reach)
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target in shared and target not in reach:
                reach.add(target)
                todo.append(target)
    return {m: consumers(m) for m in sorted(shared - reach)}


def test_single_user_modules_finds_a_module_only_one_experiment_uses():
    graph = {
        "advspatial.analysis": {"advspatial.analysis.public"},
        "advspatial.analysis.public": {"advspatial.analysis.helper"},
        "advspatial.analysis.helper": set(),
        "advspatial.analysis.lonely": set(),
        "advspatial.analysis.shared": set(),
        "advspatial.analysis.via": {"advspatial.analysis.shared"},
        "advspatial.experiments.pse.stages": {"advspatial.analysis.lonely", "advspatial.analysis.via"},
        "advspatial.experiments.maps.stages": {"advspatial.analysis.shared", "advspatial.analysis.public"},
    }
    found = single_user_modules(graph, {"advspatial.analysis"})
    # public and its helper are public API; shared has two consumers (one through via); via and lonely have one
    assert found == {"advspatial.analysis.lonely": {"experiments.pse"}, "advspatial.analysis.via": {"experiments.pse"}}


def test_a_shared_module_has_two_users_or_is_public_api():
    graph = {name: {t for t in imports(path, top_level_only=False) if t in KNOWN and t != name}
             for path in MODULES for name in [module_name(path)]}
    packages = {module_name(p) for p in MODULES if p.name == "__init__.py"}
    found = single_user_modules(graph, packages)
    assert not found, ("modules of a shared layer that one consumer alone uses (move each into its consumer's "
                       "package, or make it public API): "
                       + "; ".join(f"{m} (used by {', '.join(sorted(c)) or 'nothing'})" for m, c in found.items()))


# -- one experiment never reaches into another ------------------------------------------------------------------
def experiment_of(module: str) -> str | None:
    """The experiment a module belongs to (its package, or the module of a one-module experiment), else None."""
    parts = module.split(".") + [""]
    if parts[1] == "experiments" and parts[2] in EXPERIMENT_PACKAGES:
        return f"advspatial.experiments.{parts[2]}"
    return module if module in EXPERIMENT_MODULES else None


def cross_experiment_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of one experiment's module by a module outside it, as ``importer -> imported``; the experiments'
    package ``__init__`` (which imports every experiment to register it) is the one exception."""
    found = []
    for module, targets in sorted(graph.items()):
        if module == "advspatial.experiments":
            continue
        for target in sorted(targets):
            owner = experiment_of(target)
            if owner is not None and experiment_of(module) != owner:
                found.append(f"{module} -> {target}")
    return found


def test_cross_experiment_imports_finds_one_experiment_importing_another():
    graph = {"advspatial.experiments.spatial.run": {"advspatial.experiments.maps.stages",
                                                    "advspatial.experiments.measurement.stages",
                                                    "advspatial.experiments.spatial.stages"},
             "advspatial.studies.measure": {"advspatial.experiments.maps.run"},
             "advspatial.experiments.analyze": {"advspatial.experiments.measurement.run"},
             "advspatial.experiments": {"advspatial.experiments.analyze"}}
    assert cross_experiment_imports(graph) == [
        "advspatial.experiments.spatial.run -> advspatial.experiments.maps.stages",
        "advspatial.studies.measure -> advspatial.experiments.maps.run"]


def test_every_package_in_experiments_is_an_experiment_or_shared():
    folders = {p.parent.name for p in (SRC / "experiments").glob("*/__init__.py")}
    assert folders == set(EXPERIMENT_PACKAGES) | set(SHARED_PACKAGES)


def test_no_experiment_imports_another_experiment():
    """An experiment imports the shared machinery (the measurement among it), never another experiment; nor do the
    studies, the CLI or the Python entry points reach into an experiment's modules (they name it by its registry
    line)."""
    graph = {name: {t for t in imports(path, top_level_only=False) if t in KNOWN and t != name}
             for path in MODULES for name in [module_name(path)]}
    found = cross_experiment_imports(graph)
    assert not found, "imports of one experiment's modules from outside it: " + "; ".join(found)


# -- one name, one home ------------------------------------------------------------------------------------------

def defined_names(tree: ast.Module) -> set[str]:
    """The names a module defines at its top level (under ``if``/``try`` included): functions, classes and
    assignments; an imported name is not defined there."""
    found: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.add(node.name)
            elif isinstance(node, ast.Assign):
                found.update(n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
                found.add(node.target.id)
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                    walk(block)

    walk(tree.body)
    return found


def public_names(tree: ast.Module) -> set[str]:
    """A module's ``__all__``, empty when it has none."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def misplaced_imports(sources: dict[str, tuple[str, bool]]) -> list[tuple[str, str, str]]:
    """Every ``from X import name`` of an advspatial module (relative or absolute, at any depth) whose X does not
    define ``name``, as ``(importer, X, name)``.

    ``sources``: each module's source and whether it is a package (``__init__``). Allowed besides a name's home: a
    submodule of a package (``from . import x``); a package's public name (in its ``__init__``'s ``__all__``)
    imported from outside that package, as a user would; everything else imports the module that defines it, so a
    name has one home and a facade that only forwards names has no reason to exist.
    """
    trees = {name: ast.parse(text) for name, (text, _) in sources.items()}
    defined = {name: defined_names(tree) for name, tree in trees.items()}
    public = {name: public_names(tree) for name, tree in trees.items() if sources[name][1]}
    found = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            targets = resolve(module, sources[module][1], node)
            if not targets or targets[0] not in trees:
                continue
            home = targets[0]
            for alias in node.names:
                name = alias.name
                if name in defined[home] or f"{home}.{name}" in trees:
                    continue
                if name in public.get(home, ()) and not (module == home or module.startswith(home + ".")):
                    continue
                found.append((module, home, name))
    return found


def test_misplaced_imports_finds_a_name_imported_through_a_facade():
    sources = {
        "advspatial.analysis": ("from .pse import PSEResult\n__all__ = ['PSEResult']\n", True),
        "advspatial.analysis.pse_types": ("class PSEResult: ...\n", False),
        "advspatial.analysis.pse": ("from .pse_types import PSEResult\nfrom . import pse_types\n", False),
        "advspatial.analysis.user": ("from .pse import PSEResult\nfrom . import PSEResult as R\n", False),
        "advspatial.experiments.pse": ("from ...analysis import PSEResult\n"
                                       "from ...analysis.pse_types import PSEResult as P\n", True),
    }
    # the package's __init__ itself names the facade; inside the package the __init__ is no home either
    assert misplaced_imports(sources) == [
        ("advspatial.analysis", "advspatial.analysis.pse", "PSEResult"),
        ("advspatial.analysis.user", "advspatial.analysis.pse", "PSEResult"),
        ("advspatial.analysis.user", "advspatial.analysis", "PSEResult"),
    ]


def test_every_name_is_imported_from_its_home():
    """A name is imported from the module that defines it (or, from outside a package, from the package's public
    ``__all__``): a re-export chain hides where a name lives and lets two homes drift apart."""
    sources = {module_name(p): (p.read_text(), p.name == "__init__.py") for p in MODULES}
    found = list(misplaced_imports(sources))
    assert not found, "names imported from a module that does not define them: " + "; ".join(
        f"{module} imports {name} from {home}" for module, home, name in found)
