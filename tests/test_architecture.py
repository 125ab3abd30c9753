"""The import rule: modules of ulmfit_lab import each other one way only (no cycles), and packages in layers.

Imports inside functions count too: a local import that points back up the graph is the cycle this test
exists to catch, hidden. `from pkg import name` counts as an import of the submodule `pkg.name` when one
exists, else of `pkg` (a package's `__init__` is imported before its submodules anyway, so that parent
edge alone is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ulmfit_lab"

# The layers, lowest first (README, "Architecture"): a package imports only from packages of a lower rank.
# `serving` and `training` share a rank, so neither imports the other: a deployment needs no training code.
RANK = {"_version": 0, "config": 0, "fileio": 0, "logs": 0, "toy": 0, "plots": 0, "device": 1, "data": 2, "text": 3,
        "models": 4, "training": 5, "serving": 5, "stages": 6, "pipeline": 7, "api": 8, "lab": 8, "insight": 9,
        "cli": 10, "": 11}  # "": ulmfit_lab/__init__.py, the public API

# Cycles known and not yet broken, each as the sorted module names of one strongly connected component.
# Empty: keep it so. A new cycle fails the test; remove an entry once its cycle is gone.
ALLOWED_CYCLES: list[list[str]] = []


def module_files() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package `__init__`)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the ulmfit_lab modules it imports anywhere in its file (module level or in a function)."""
    mods = module_files()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: `from ..x import y` climbs level - 1 packages above this one
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in mods and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    """The edges inside one cycle, one module a line, for the failure message."""
    return "\n".join(f"  {m} -> {', '.join(sorted(graph[m] & set(component)))}" for m in component)


def layer(module: str) -> str:
    """The top-level part of ulmfit_lab a module belongs to: its subpackage, or the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "ulmfit_lab.serving.batch" in graph["ulmfit_lab.cli"]  # inside a function
    assert "ulmfit_lab.serving.predict" in graph["ulmfit_lab.serving.ensemble"]  # module level
    assert "ulmfit_lab.training.distributed" in graph["ulmfit_lab.stages.lm"]  # `from ..training import distributed`
    assert "ulmfit_lab.insight.html" in graph["ulmfit_lab.insight.report"]  # `from . import html as H`


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    new = [c for c in cycles(graph) if c not in ALLOWED_CYCLES]
    assert not new, "import cycles in ulmfit_lab (imports must flow one way):\n" + "\n\n".join(
        describe(c, graph) for c in new)


def test_packages_import_only_lower_layers():
    graph = import_graph()
    unknown = sorted({layer(m) for m in graph} - set(RANK))
    assert not unknown, f"new top-level parts {unknown}: give each a rank in RANK (and README, Architecture)"
    wrong = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                   if layer(m) != layer(d) and not RANK[layer(d)] < RANK[layer(m)])
    assert not wrong, "imports against the layers (a package imports only lower ones):\n" + "\n".join(wrong)


def test_serving_needs_no_training_code():
    graph = import_graph()
    serving = [m for m in graph if layer(m) == "serving"]
    assert serving
    assert not {d for m in serving for d in graph[m] if layer(d) in ("training", "stages", "pipeline", "api")}


def test_at_most_ten_modules_at_the_top_level():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, f"{len(top)} modules at the top of ulmfit_lab ({top}): put new ones in a subpackage"


def test_old_flat_module_paths_still_import(recwarn):
    import importlib

    from ulmfit_lab.serving import onnx_export

    old = importlib.import_module("ulmfit_lab.onnx_export")  # README before the subpackages
    assert old is onnx_export and old.OnnxPredictor is onnx_export.OnnxPredictor
    assert any("moved to ulmfit_lab.serving.onnx_export" in str(w.message) for w in recwarn)


# ---------------------------------------------------------------- function length

MAX_FUNCTION_LINES = 80  # def line to last line, nested functions and methods alike
ONE_PIECE = "# one piece:"  # a comment line in a longer function's body saying why it stays whole (a hot path)


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function in `source` longer than `limit` lines whose body holds
    no comment line starting with `ONE_PIECE`."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            body = lines[node.lineno - 1:node.end_lineno]
            if n > limit and not any(line.strip().startswith(ONE_PIECE) for line in body):
                found.append((node.name, node.lineno, n))
    return found


def test_long_functions_are_found_unless_they_say_why():
    def source(n_lines: int, comment: str = "") -> str:
        body = [f"    x{i} = {i}" for i in range(n_lines - 2)]
        return "\n".join(["def f():", *([f"    {comment}"] if comment else []), *body, "    return 0"])

    assert long_functions(source(80)) == []
    assert long_functions(source(81)) == [("f", 1, 81)]
    assert long_functions(source(81, "# one piece: the inner loop of every batch")) == []
    assert long_functions(source(81, "# one more piece")) == [("f", 1, 82)]
    nested = "class A:\n    def m(self):\n        def g():\n" + "\n".join(f"            y = {i}" for i in range(90))
    assert [name for name, _, _ in long_functions(nested)] == ["m", "g"]


def test_no_function_over_80_lines():
    long = [f"{path.relative_to(PACKAGE.parent)}:{line} {name}: {n} lines"
            for path, _ in module_files().values()
            for name, line, n in long_functions(path.read_text(encoding="utf-8"))]
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines: split each into named steps, or say why it "
                      f"stays whole in a comment line starting `{ONE_PIECE}` in its body:\n" + "\n".join(long))
