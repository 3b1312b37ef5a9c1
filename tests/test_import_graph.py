"""The package's import structure: the core stays Butler-free, and sub-packages import in layers.

Both checks list the modules by walking the source tree, so new modules are
covered without editing this file.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "lsst.meas.extensions.residual"
ROOT = Path(__file__).resolve().parent.parent / "python" / Path(*PACKAGE.split("."))
#: Only these may import the Butler middleware: the PipelineTasks and the demo command.
BUTLER_ADAPTERS = ("tasks",)
BUTLER_COMMANDS = ("cli.demo",)
BUTLER_PACKAGES = ("lsst.daf.butler", "lsst.pipe.base")


def _modules(directory: Path = ROOT, prefix: str = "") -> list[tuple[str, Path]]:
    """(dotted name relative to the package, file) of every module, packages included."""
    found = []
    for info in pkgutil.iter_modules([str(directory)]):
        name = prefix + info.name
        if info.ispkg:
            found.append((name, directory / info.name / "__init__.py"))
            found.extend(_modules(directory / info.name, name + "."))
        else:
            found.append((name, directory / f"{info.name}.py"))
    return found


def _core_modules() -> list[str]:
    return [
        f"{PACKAGE}.{name}"
        for name, _ in _modules()
        if name.split(".")[0] not in BUTLER_ADAPTERS and name not in BUTLER_COMMANDS
    ]


_IMPORT_ALL = """
import importlib, json, sys
forbidden = {forbidden!r}
first = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    for package in forbidden:
        if package not in first and package in sys.modules:
            first[package] = name
print(json.dumps(first))
"""


def test_core_modules_do_not_import_the_butler():
    modules = _core_modules()
    assert f"{PACKAGE}.chain.first_pass" in modules and f"{PACKAGE}.cli.main" in modules
    script = _IMPORT_ALL.format(forbidden=BUTLER_PACKAGES, modules=modules)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    culprits = json.loads(result.stdout.strip().splitlines()[-1])
    assert not culprits, "Butler middleware imported outside tasks/: " + ", ".join(
        f"{package} (first seen after importing {module})" for package, module in culprits.items()
    )


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute names of the modules an import statement in ``module`` may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    # ``from X import name``: name may be a submodule of X.
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _imports(module: str, is_package: bool, source: str) -> list[tuple[str, int]]:
    """(absolute name, line) of every name an import in ``source`` may load, in functions too."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.extend((absolute, node.lineno) for absolute in _resolve(module, is_package, node))
    return found


def _subpackage(absolute: str, known: set[str]) -> str | None:
    """The first component under the package (a sub-package or top-level module), or None."""
    if absolute == PACKAGE:
        return None
    if not absolute.startswith(PACKAGE + "."):
        return None
    head = absolute[len(PACKAGE) + 1 :].split(".")[0]
    return head if head in known else None


def _import_graph() -> dict[str, dict[str, list[str]]]:
    """{importer: {imported: ["file:line", ...]}} between the package's first-level parts.

    Every import statement counts, at module level or inside a function.
    """
    modules = _modules()
    known = {name.split(".")[0] for name, _ in modules}
    graph: dict[str, dict[str, list[str]]] = {name: {} for name in known}
    for name, path in modules:
        here = name.split(".")[0]
        for absolute, line in _imports(f"{PACKAGE}.{name}", path.name == "__init__.py", path.read_text()):
            there = _subpackage(absolute, known)
            if there is not None and there != here:
                where = f"{path.relative_to(ROOT)}:{line}"
                sites = graph[here].setdefault(there, [])
                if where not in sites:
                    sites.append(where)
    return graph


def _find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _reaches(graph: dict[str, dict[str, list[str]]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, {}))
    return False


def test_sub_package_import_graph_has_no_cycle():
    graph = _import_graph()
    assert {"training", "evaluation", "groundtruth", "chain", "network"} <= set(graph)
    cycle = _find_cycle(graph)
    if cycle:
        steps = "\n".join(
            f"  {a} -> {b}: {', '.join(graph[a][b])}" for a, b in zip(cycle, cycle[1:], strict=False)
        )
        raise AssertionError(f"Import cycle {' -> '.join(cycle)}:\n{steps}")


def test_training_and_evaluation_do_not_import_each_other():
    graph = _import_graph()
    for a, b in (("training", "evaluation"), ("evaluation", "training")):
        assert not _reaches(graph, a, b), f"{a} imports {b} (directly or through another part): {graph[a]}"


def test_imports_are_resolved_in_functions_and_relative_to_the_module():
    source = (
        "import numpy\n"
        "from ..groundtruth import labels\n"
        "from . import dataset\n"
        "def f():\n"
        "    from ..evaluation.metrics import count_curve\n"
    )
    found = _imports(f"{PACKAGE}.training.train", False, source)
    names = {name for name, _ in found}
    assert {"numpy", f"{PACKAGE}.groundtruth.labels", f"{PACKAGE}.training.dataset"} <= names
    assert (f"{PACKAGE}.evaluation.metrics", 5) in found
    # In a package's __init__, "." is the package itself.
    assert (f"{PACKAGE}.training.dataset", 1) in _imports(
        f"{PACKAGE}.training", True, "from .dataset import *"
    )
    known = {"training", "evaluation"}
    assert _subpackage(f"{PACKAGE}.evaluation.metrics.count_curve", known) == "evaluation"
    assert _subpackage("numpy", known) is None
    graph = {"a": {"b": ["a.py:1"]}, "b": {"c": ["b.py:1"]}, "c": {"a": ["c.py:1"]}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": []}, "b": {}}) is None
    assert _reaches(graph, "a", "c") and not _reaches({"a": {}, "c": {"a": []}}, "a", "c")
