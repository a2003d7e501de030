"""No import cycles among the harness's modules.

Every module under ``harness/`` is parsed with :mod:`ast` (nothing is imported) and each
``import harness...`` / ``from harness... import ...`` (relative ones resolved) becomes an
edge of the import graph. Counted, deliberately, wherever they stand:

- module-level imports;
- imports under ``if TYPE_CHECKING:``: they run for the type checker, and a type-only
  edge back to a module is still a cycle in the design (the module is not "below" the
  other one); the fix is a small protocol or passing what is needed, not hiding it;
- imports inside function bodies: deferring an import hides a cycle from the interpreter,
  not from the design, so a lazy import is allowed only where it does not close a cycle
  (optional heavy dependencies such as nnsight stay lazy; they point one way).

``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``. Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``: that is an edge to
the package too, except for the importer's own packages, which Python initialises
before the importer starts. The test fails naming each cycle (each strongly connected
group of modules, with the import lines that tie it together).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "harness"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, dict[str, list[int]]]:
    """``{importer: {imported module: [line numbers]}}`` over the harness's modules."""
    modules = _modules()
    graph: dict[str, dict[str, list[int]]] = {m: defaultdict(list) for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")) + 1)}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target.split(".")[0] != PACKAGE:
                    continue
                parts = target.split(".")
                # the module itself and every package __init__ on the way to it
                for i in range(2, len(parts) + 1):
                    dep = ".".join(parts[:i])
                    if dep in modules and dep not in own:
                        graph[name][dep].append(node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, {}):
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _describe(group: list[str], graph) -> str:
    members = set(group)
    lines = [f"cycle among {', '.join(group)}:"]
    for a in group:
        for b, linenos in sorted(graph[a].items()):
            if b in members:
                lines.append(f"    {a} imports {b} (line {', '.join(map(str, sorted(set(linenos))))})")
    return "\n".join(lines)


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "harness.session" in graph and "harness.trace" in graph["harness.session"]
    # imports inside functions and under TYPE_CHECKING are edges too
    assert "harness.lenses" in graph["harness.trace"]


def test_no_import_cycles_among_harness_modules():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in harness/:\n" + "\n".join(_describe(g, graph) for g in found)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": [1]}, "b": {"c": [2]}, "c": {"a": [3]}, "d": {"a": [4]}}
    assert cycles(graph) == [["a", "b", "c"]]
