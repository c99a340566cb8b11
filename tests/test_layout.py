"""The package's layout rule, read from the source: layers import downwards only, no cycles.

Every import statement counts, function-local ones included (a lazy import is still a
dependency); only those under `if TYPE_CHECKING:` are left out, since they never run. The
implicit import of a module's parent packages is not an edge (Python initialises a package
before its submodules, so it cannot form a cycle that matters).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "layerinv"

# Lowest first. A module may import from its own layer or from lower ones, never higher.
LAYERS: dict[str, int] = {
    "base": 0,          # errors, argument checks, BLAS threads, local processes
    "core": 1,          # activations, layers, networks, results, solvers, the walk
    "applications": 2,  # measurement operators, inverse problems, exact answers, the model zoo
    "reproduction": 3,  # experiments, the trial store, parallel trials, reports, training
    "cli": 4,           # the command line
    "facade": 5,        # the package root and `python -m layerinv`
}
BASE = {"errors", "_validation", "_blas", "_linalg", "_sparse_picks", "_processes", "_version"}
APPLICATIONS = {"measurements", "_reconstruct", "exact", "pretrained", "datasets", "vnnlib"}


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts or parts == ["__main__"]:
        return "facade"
    head = parts[0]
    if head in ("reproduction", "cli"):
        return head
    if head in BASE:
        return "base"
    if head in APPLICATIONS:
        return "applications"
    return "core"


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` imports (resolved to modules, not names in them)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import name` imports the submodule pkg.name where there is one.
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == PACKAGE or t.startswith(PACKAGE + "."))
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {module: imports_of(module, path, known) for module, path in files.items()}


GRAPH = import_graph()


def test_every_module_has_a_layer_and_the_graph_is_read():
    assert len(GRAPH) > 30
    assert "layerinv._walk" in GRAPH["layerinv"]  # the facade re-exports the walk
    # A function-local import is an edge: the walk's gradient methods import it lazily.
    assert "layerinv._gradient" in GRAPH["layerinv._walk"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers(module):
    here = LAYERS[layer_of(module)]
    upward = sorted(t for t in GRAPH[module] if LAYERS[layer_of(t)] > here)
    assert not upward, (f"{module} ({layer_of(module)}) imports from a higher layer: "
                        f"{[(t, layer_of(t)) for t in upward]}")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None, f"import cycle: {' -> '.join(find_cycle(GRAPH))}"


def test_the_checks_catch_a_cycle_and_an_upward_import():
    # The rule must be able to fail: a planted cycle and a planted upward edge are found.
    planted = {name: set(targets) for name, targets in GRAPH.items()}
    planted["layerinv.network"].add("layerinv._walk")
    assert find_cycle(planted) is not None
    assert LAYERS[layer_of("layerinv.reproduction.store")] > LAYERS[layer_of("layerinv._walk")]


def test_the_public_api_is_curated_and_documented():
    import layerinv

    for name in layerinv.__all__:
        value = getattr(layerinv, name)  # every exported name exists
        if callable(value) or isinstance(value, type(layerinv)):
            assert (value.__doc__ or "").strip(), f"layerinv.{name} has no docstring"
    # Only public names are exported: no private name, no private module.
    assert not [n for n in layerinv.__all__ if n.startswith("_") and n != "__version__"]
    modules = [getattr(layerinv, n) for n in layerinv.__all__
               if isinstance(getattr(layerinv, n), type(layerinv))]
    assert modules and not [m.__name__ for m in modules
                            if any(part.startswith("_") for part in m.__name__.split("."))]
