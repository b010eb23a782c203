"""The package's import graph, read from the source with `ast` (nothing is imported).

Every `import` / `from ... import` statement of every module under src/fishertune counts, at module level
and inside functions, absolute and relative. An edge goes to the most specific module the statement names:
`from fishertune.engine import trainer` -> fishertune.engine.trainer, `from fishertune.models.backbones
import Backbone` -> fishertune.models.backbones (the package's `__init__`). Parent packages that Python
runs on the way (`fishertune.engine` for `import fishertune.engine.trainer`) are not edges: a package's
`__init__` importing its own submodules would otherwise make every package a cycle.

Checked: no import cycle; no module imports the package root `fishertune` (the root is lazy, and re-exports;
modules import the module that defines a name); the layering (the sparse core knows no models, engine,
data, tuners, cli, benchmark or report; only the CLI imports the CLI; the library does not import the
embedded benchmark).
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "fishertune"

ROOT_IMPORT_ALLOWED = {"fishertune.method"}
"""Modules allowed to import the package root: the deprecated alias `fishertune.method` (until 0.2) does
`from fishertune import sparse` and replaces itself by that module."""

LAYERS = {
    # importer pattern: module patterns it must not import
    "fishertune.sparse*": ["fishertune.models*", "fishertune.engine*", "fishertune.data*",
                           "fishertune.tuners*", "fishertune.cli*", "fishertune.benchmark*",
                           "fishertune.report*"],
    "fishertune.engine*": ["fishertune.cli*"],
    # the layers below the engine never reach up into it (cli → engine → sparse/tuners/models/data/report)
    "fishertune.tuners*": ["fishertune.engine*"],
    "fishertune.models*": ["fishertune.engine*", "fishertune.tuners*"],
    "fishertune.data*": ["fishertune.engine*", "fishertune.tuners*", "fishertune.models*"],
    "fishertune.report*": ["fishertune.engine*", "fishertune.tuners*"],
    # only the CLI imports the CLI; only the CLI and the benchmark import the benchmark (exempted below)
    "fishertune.*": ["fishertune.cli*", "fishertune.benchmark*"],
}
LAYER_EXEMPT = {("fishertune.cli*", "fishertune.cli*"), ("fishertune.cli*", "fishertune.benchmark*"),
                ("fishertune.benchmark*", "fishertune.benchmark*")}


# -- reading the graph -------------------------------------------------------------------------------------
def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its `__init__`)."""
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def source(module: str, path: Path, added: dict[str, str] | None) -> str:
    """A module's text, with `added[module]` appended as the body of a function (the tests' violations)."""
    text = path.read_text(encoding="utf-8")
    if added and module in added:
        text += f"\n\ndef _added():\n    {added[module]}\n"
    return text


def imported_names(module: str, path: Path, added: dict[str, str] | None = None
                   ) -> Iterator[tuple[str, int, str]]:
    """(absolute module name a statement names, line, where: "" at module level, "in a function" or "type
    checking only") for every import statement; `from X import a, b` yields X.a and X.b too, to be resolved
    against the known modules."""
    tree = ast.parse(source(module, path, added), filename=str(path))
    package = module if is_package(path) else module.rpartition(".")[0]

    def visit(node: ast.AST, where: str) -> Iterator[tuple[str, int, str]]:
        for child in ast.iter_child_nodes(node):
            inside = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and not where:
                inside = "in a function"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inside = "type checking only"
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, where
            elif isinstance(child, ast.ImportFrom):
                target = absolute(child, package)
                yield target, child.lineno, where
                for alias in child.names:
                    if alias.name != "*":
                        yield f"{target}.{alias.name}", child.lineno, where
            yield from visit(child, inside)

    yield from visit(tree, "")


def absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, a relative one resolved against `package`."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(type_checking: bool = True, added: dict[str, str] | None = None
                 ) -> dict[str, dict[str, list[str]]]:
    """importer -> {imported module -> ["line N", "line M (in a function)", ...]}, between the package's own
    modules; without `type_checking`, the imports under `if TYPE_CHECKING:` (never run) are left out.
    `added`: {module: an import statement} added to the sources (the tests of the checks themselves).

    `from X import a` is an edge to X.a when that is a module, else to X."""
    modules = module_files()
    edges: dict[str, dict[str, list[str]]] = {m: {} for m in modules}
    for module, path in modules.items():
        statements: dict[int, list[tuple[str, str]]] = {}
        for name, line, where in imported_names(module, path, added):
            if type_checking or where != "type checking only":
                statements.setdefault(line, []).append((name, where))
        for line, names in statements.items():
            targets = [n for n, _ in names if n in modules]
            # `from X import a, b`: X itself only when none of a, b is a submodule of it
            specific = {t for t in targets if not any(o != t and o.startswith(t + ".") for o in targets)}
            where = names[0][1]
            for target in specific - {module}:
                edges[module].setdefault(target, []).append(f"line {line}" + (f" ({where})" if where else ""))
    return edges


def strongly_connected(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def describe_cycle(component: list[str], edges: dict[str, dict[str, list[str]]]) -> str:
    """The component's modules and the imports between them."""
    inside = set(component)
    lines = [f"{a} -> {b} ({', '.join(where)})" for a in component for b, where in sorted(edges[a].items())
             if b in inside]
    return "import cycle through " + ", ".join(component) + ":\n    " + "\n    ".join(lines)


def root_imports(added: dict[str, str] | None = None) -> list[str]:
    """`import fishertune` / `from fishertune import X` inside the package (X a submodule or a name)."""
    found = []
    for module, path in module_files().items():
        if module == ROOT or module in ROOT_IMPORT_ALLOWED:
            continue
        package = module if is_package(path) else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(source(module, path, added))):
            if isinstance(node, ast.Import) and any(a.name == ROOT for a in node.names):
                found.append(f"{module} line {node.lineno}: import {ROOT}")
            elif isinstance(node, ast.ImportFrom) and absolute(node, package) == ROOT:
                names = ", ".join(a.name for a in node.names)
                found.append(f"{module} line {node.lineno}: from {ROOT} import {names}")
    return found


def layer_violations(edges: dict[str, dict[str, list[str]]]) -> list[str]:
    found = []
    for importer, targets in edges.items():
        for pattern, forbidden in LAYERS.items():
            if not fnmatch.fnmatchcase(importer, pattern):
                continue
            for target, where in targets.items():
                for bad in forbidden:
                    exempt = any(fnmatch.fnmatchcase(importer, a) and fnmatch.fnmatchcase(target, b)
                                 for a, b in LAYER_EXEMPT)
                    if fnmatch.fnmatchcase(target, bad) and not exempt:
                        found.append(f"{importer} imports {target} ({', '.join(where)}): {pattern} must not "
                                     f"import {bad}")
    return sorted(set(found))


# -- the checks ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def edges():
    return import_edges()


def test_the_graph_is_read(edges):
    assert "fishertune.models.backbones.base" in edges
    assert "fishertune.models.backbones.base" in edges["fishertune.models.backbones.dinov2"]
    assert "fishertune.engine.trainer" in edges["fishertune.engine.fisher_map"]
    assert "fishertune.sparse" in edges["fishertune.engine.trainer"]


def test_no_import_cycle():
    edges = import_edges(type_checking=False)
    cycles = list(strongly_connected(edges))
    assert not cycles, "\n".join(describe_cycle(c, edges) for c in cycles)


def test_no_module_imports_the_package_root():
    found = root_imports()
    assert not found, ("modules inside the package import the root (import the defining module instead):\n"
                       + "\n".join(found))


def test_layering(edges):
    found = layer_violations(edges)
    assert not found, "\n".join(found)


# -- the checks catch real violations (one import statement added to a module's source) --------------------
def test_a_cycle_is_found_and_named():
    base = "fishertune.models.backbones.base"
    edges = import_edges(added={base: "from fishertune.models.segmentor import x"})
    (cycle,) = [c for c in strongly_connected(edges) if "fishertune.models.segmentor" in c]
    assert base in cycle
    message = describe_cycle(cycle, edges)
    assert f"{base} -> fishertune.models.segmentor (line" in message and "(in a function)" in message


def test_a_relative_import_cycle_is_found():
    edges = import_edges(added={"fishertune.engine.checkpoint": "from .build import load_run"})
    assert any({"fishertune.engine.build", "fishertune.engine.checkpoint"} <= set(c)
               for c in strongly_connected(edges))


def test_an_import_for_type_checking_only_makes_no_cycle():
    statement = "if TYPE_CHECKING:\n        from fishertune.engine.build import load_run"
    edges = import_edges(added={"fishertune.engine.checkpoint": statement})
    assert "fishertune.engine.build" in edges["fishertune.engine.checkpoint"]  # still an edge for the layers
    cycles = strongly_connected(import_edges(type_checking=False,
                                             added={"fishertune.engine.checkpoint": statement}))
    assert not any("fishertune.engine.checkpoint" in c for c in cycles)


@pytest.mark.parametrize("line", ["import fishertune", "from fishertune import __version__",
                                  "from fishertune import report", "from .. import errors"])
def test_a_root_import_is_found(line):
    found = root_imports(added={"fishertune.engine.export": line})
    assert any(f.startswith("fishertune.engine.export line") for f in found)


@pytest.mark.parametrize(("module", "line", "rule"), [
    ("fishertune.sparse", "from fishertune.models import Backbone", "fishertune.models*"),
    ("fishertune.sparse", "from ..tuners.base import Tuner", "fishertune.tuners*"),
    ("fishertune.engine.trainer", "from fishertune.cli.main import main", "fishertune.cli*"),
    ("fishertune.report.plots", "import fishertune.cli.commands", "fishertune.cli*"),
    ("fishertune.engine.trainer", "from fishertune.benchmark import demo", "fishertune.benchmark*"),
])
def test_a_layer_violation_is_found(module, line, rule):
    found = layer_violations(import_edges(added={module: line}))
    assert any(f.startswith(f"{module} imports") and f.endswith(f"import {rule}") for f in found), found


# -- the version -------------------------------------------------------------------------------------------
def test_the_version_lives_in_one_module():
    """`fishertune.version` holds it, the root re-exports it, and pyproject.toml declares the same."""
    tomllib = pytest.importorskip("tomllib")
    import fishertune
    from fishertune.version import __version__

    assert fishertune.__version__ == __version__
    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == __version__
