"""The package's layers, enforced: imports go one way, and no module imports itself in a cycle.

    errors, utils  <-  preprocess, text, classes, heads, clip_arch, kernels  <-  model, teacher, data
    <-  checkpoint, bundled  <-  train, infer  <-  evaluation  <-  shapeworld  <-  cli, bench, export, serve

A module may import its own layer and the layers to its left. Every import counts: top-level, lazy
(inside a function) and type-only (`if TYPE_CHECKING:`), so a layering fault cannot hide in a
function body. The top layer has three extra rules: bench and export share only `zeroseg.utils.console`
with the CLI (never a command module), nothing imports `zeroseg.bench`, and export does not need the
toy world (`zeroseg.shapeworld`: its sample scenes and the `bundled` resolver live below it).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (pyproject's package-dir).
SOURCES = {
    "zeroseg": "zeroseg",
    "kernels": "zeroseg.kernels",
    "bench": "zeroseg.bench",
    "export": "zeroseg.export",
    "serve": "zeroseg.serve",
}
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "utils", ""}),  # "": the package facade (__version__, ZerosegError)
    frozenset({"preprocess", "text", "classes", "heads", "clip_arch", "kernels"}),
    frozenset({"model", "teacher", "data"}),
    frozenset({"checkpoint", "bundled"}),
    frozenset({"train", "infer"}),
    frozenset({"evaluation"}),
    frozenset({"shapeworld"}),
    frozenset({"cli", "bench", "export", "serve", "__main__"}),
)
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _unit(module: str) -> str:
    """The layer unit of a dotted name: 'zeroseg.train.loop' -> 'train'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(module: str, path: Path) -> set[str]:
    """Dotted zeroseg modules (or names inside them) imported anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "zeroseg")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "zeroseg":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in MODULES else base)
    return out


def _resolve(name: str) -> str:
    """The module a dotted import lands in (a name inside a module -> that module)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


GRAPH = {m: {_resolve(i) for i in _imports(m, p)} - {m} for m, p in MODULES.items()}


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in MODULES}
    assert units <= set(LAYER), f"modules outside every layer: {sorted(units - set(LAYER))}"


def test_imports_point_down_the_layers():
    bad = []
    for module, targets in GRAPH.items():
        for target in targets:
            if LAYER[_unit(target)] > LAYER[_unit(module)]:
                bad.append(f"{module} imports {target}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_top_layer_shares_only_the_cli_plumbing():
    bad = []
    for module, targets in GRAPH.items():
        unit = _unit(module)
        for target in targets:
            if _unit(target) == "bench" and unit != "bench":
                bad.append(f"{module} imports {target} (nothing may import the benchmarks)")
            if unit in ("bench", "export") and _unit(target) == "cli" and target != "zeroseg.utils.console":
                bad.append(f"{module} imports {target} (only zeroseg.utils.console is shared)")
            if unit == "export" and _unit(target) == "shapeworld":
                bad.append(f"{module} imports {target} (exporters do not need the toy world)")
    assert not bad, "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


@pytest.mark.parametrize("level", ["module", "unit"])
def test_no_import_cycles(level):
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in GRAPH.items():
        for target in targets:
            if level == "module":
                graph[module].add(target)
            elif _unit(target) != _unit(module):
                graph[_unit(module)].add(_unit(target))
    assert not _cycles(graph), f"import cycles ({level} level): {_cycles(graph)}"


def test_the_check_sees_a_violation(tmp_path):
    """The parser resolves absolute, relative and lazy imports (so the tests above can fail)."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from zeroseg.cli.segment import segment\nfrom . import labels\n")
    got = _imports("zeroseg.infer.base", path)
    assert {"zeroseg.cli.segment", "zeroseg.infer.labels"} <= got
    assert LAYER[_unit(_resolve("zeroseg.cli.segment"))] > LAYER["infer"]


def test_public_names_resolve_and_import_zeroseg_stays_light():
    """Every lazy public name (`zeroseg.Segmenter`, ...) resolves; `import zeroseg` loads no torch."""
    import subprocess
    import sys

    code = (
        "import sys, zeroseg; assert 'torch' not in sys.modules, 'import zeroseg loaded torch'; "
        "[getattr(zeroseg, n) for n in zeroseg._LAZY]; print(len(zeroseg._LAZY))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 9
