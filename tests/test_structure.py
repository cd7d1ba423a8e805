"""The architecture, checked: small modules, no import circle, layers that only look down.

Read from the source with `ast` (nothing is imported): every `import`/`from … import` of a
continualcode module, at module level or inside a function, is an edge of the module graph; an
import under `if TYPE_CHECKING:` (annotations only, never run) is not.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "continualcode"
MAX_FILE_LINES = 500
MAX_CLASS_LINES = 250


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _imports(path: Path, name: str) -> set[str]:
    """The continualcode modules `name` imports (a `from pkg import sub` names the submodule when it is one)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # drop the annotation-only imports
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in MODULES and t != name}
    return out


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def test_no_file_over_500_lines_and_no_class_over_250():
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert not {n: k for n, k in big.items() if k > MAX_FILE_LINES}
    classes = {}
    for n, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                classes[f"{n}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert not classes


def test_no_import_circle():
    """Tarjan's strongly connected components of the import graph: each must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles


def test_layers_only_look_down():
    # nothing imports the entry point; only the entry point imports the benchmarks
    assert not [m for m, deps in GRAPH.items() if "continualcode.cli" in deps and m != "continualcode.__main__"]
    outside = [m for m, deps in GRAPH.items() if not m.startswith("continualcode.bench") and m != "continualcode.cli"
               and any(d.startswith("continualcode.bench") for d in deps)]
    assert not outside
    # the benchmarks build through build.py and config.py, never through the app
    assert not [m for m, deps in GRAPH.items() if m.startswith("continualcode.bench") and "continualcode.app" in deps]
    # the bottom layers import nothing above them
    bottom = {"continualcode.records", "continualcode.fsio", "continualcode.learn.types"}
    for m in bottom:
        assert GRAPH[m] <= bottom, (m, GRAPH[m] - bottom)
    # the loss module is pure: no backends, agent or models
    assert GRAPH["continualcode.learn.losses"] <= {"continualcode.learn.types"}
    # learning knows nothing of the session it is injected into
    learn = [m for m in GRAPH if m.startswith("continualcode.learn")]
    assert not [m for m in learn if GRAPH[m] & {"continualcode.agent", "continualcode.app", "continualcode.ui"}]
    # a backend knows nothing of tools, the agent or the learner's steps
    for m in [m for m in GRAPH if m.startswith("continualcode.backends")]:
        assert not [d for d in GRAPH[m] if d.startswith(("continualcode.tools", "continualcode.agent",
                                                         "continualcode.app", "continualcode.learn.step"))], m


def test_the_graph_sees_imports():
    """The checks above would pass vacuously on an empty graph: the graph has the known edges."""
    assert "continualcode.records" in GRAPH["continualcode.agent"]
    assert "continualcode.learn.types" in GRAPH["continualcode.learn.losses"]
    assert "continualcode.bench.cli" in GRAPH["continualcode.cli"]  # a function-level import counts
