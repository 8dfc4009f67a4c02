"""The package-level dependency graph of ``lipbound/`` from an AST scan of its imports.

Every subpackage (``lipbound/cli``) and top-level module (``lipbound/api.py``) is one unit;
an edge A -> B means some module of A imports from B, at module level or inside a function
(local imports are dependencies too). The units sit on layers (``LAYERS``, lowest first);
an edge may point down or sideways, never up, and the graph must have no cycles. The package
root ``lipbound/__init__.py`` is the public facade: it may import anything, and nothing inside
the package may import from it.

    python experiments/import_graph.py            # the graph, upward edges and cycles
    python experiments/import_graph.py --local    # also list the function-local imports

Exit status 1 when an edge points up the layering or the graph has a cycle.
``tests/test_layering.py`` runs the same checks.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "lipbound"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
FACADE = "__init__"

#: lowest first; a unit may import from its own layer (acyclically) and the layers below
LAYERS: tuple[tuple[str, ...], ...] = (
    # shared helpers and value types (no engine knowledge)
    ("errors", "version", "norms", "specs", "jsonutil", "progress", "results", "models", "io",
     "highs", "devices", "autodiff", "gradmode"),
    # the engine
    ("graph.ir", "graph", "ops", "bounds", "inputs", "propagate", "jacobian", "exact", "bab"),
    # the public bound API and attacks on top of it
    ("api", "attack", "global_api"),
    # the outer ring
    ("audit", "smoothing", "verify", "report", "executor", "jobs"),
    # argument parsing
    ("cli",),
)
ENGINE = LAYERS[1]


@dataclass(frozen=True)
class Import:
    unit: str  # the importing unit
    target: str  # the imported unit
    module: str  # the importing module (dotted)
    line: int
    local: bool  # inside a function


#: modules that are units of their own inside a subpackage: the graph's value types sit below
#: the operators (which lower composite ops into nodes), the tracer and normaliser above them
SUBUNITS = {"lipbound.graph.ir": "graph.ir"}


def unit_of(module: str) -> str:
    """``lipbound.bab.anytime`` -> ``bab``; ``lipbound`` -> the facade; see ``SUBUNITS``."""
    if module in SUBUNITS:
        return SUBUNITS[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _units(root: Path = ROOT) -> set[str]:
    return {p.stem if p.is_file() else p.name for p in root.iterdir()
            if (p.is_dir() and (p / "__init__.py").exists())
            or (p.suffix == ".py" and p.stem != "__init__")} | set(SUBUNITS.values())


def _targets(node: ast.AST, package: str, units: set[str]) -> list[str]:
    """The lipbound modules an import statement reads from (dotted)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module.split(".")[0] != PACKAGE:
        return []
    if module == PACKAGE:  # from lipbound import audit, local_lipschitz
        return [f"{PACKAGE}.{a.name}" if a.name in units else PACKAGE for a in node.names]
    return [module]


def scan(root: Path = ROOT) -> list[Import]:
    """Every import of a lipbound module by a module of the package (a copy at ``root``
    is scanned as if it were lipbound)."""
    units = _units(root)
    found = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        local_nodes = {id(n) for f in ast.walk(tree)
                       if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, package, units):
                found.append(Import(unit_of(module), unit_of(target), module, node.lineno,
                                    id(node) in local_nodes))
    return found


def local_imports(root: Path = ROOT) -> list[tuple[str, int, str]]:
    """(module, line, statement) of every import inside a function, lipbound's or not."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        seen: set[int] = set()
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(f):
                if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in seen:
                    seen.add(id(n))
                    out.append((_module_name(path, root), n.lineno, ast.unparse(n)))
    return sorted(out)


def graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if imp.target != imp.unit:
            edges[imp.unit].add(imp.target)
    return dict(edges)


def layer_of(unit: str) -> int:
    if unit == FACADE:
        return len(LAYERS)
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise KeyError(f"unit {unit!r} is on no layer: add it to LAYERS in {__file__}")


def upward(imports: list[Import]) -> list[Import]:
    """Imports from a higher layer (or from the package facade)."""
    return [i for i in imports if i.target != i.unit and layer_of(i.target) > layer_of(i.unit)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return sorted(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--local", action="store_true", help="list the function-local imports")
    args = ap.parse_args()
    imports = scan()
    edges = graph(imports)
    print("# lipbound package dependency graph (unit -> units it imports)")
    for layer in (*LAYERS, (FACADE,)):
        for unit in layer:
            if unit in edges:
                print(f"  {unit:10} -> {' '.join(sorted(edges[unit]))}")
    unknown = sorted({u for i in imports for u in (i.unit, i.target)}
                     - {u for layer in LAYERS for u in layer} - {FACADE})
    bad = upward([i for i in imports if i.unit not in unknown and i.target not in unknown])
    print(f"# upward edges: {len(bad)}")
    for i in bad:
        kind = "local" if i.local else "top"
        print(f"  {i.unit} -> {i.target}  ({i.module}:{i.line}, {kind})")
    found = cycles(edges)
    print(f"# cycles: {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    if unknown:
        print(f"# units on no layer: {' '.join(unknown)}")
    locals_ = local_imports()
    print(f"# function-local import statements: {len(locals_)} "
          f"({sum(1 for i in imports if i.local)} of them import lipbound modules)")
    if args.local:
        for module, line, stmt in locals_:
            print(f"  {module}:{line}: {stmt}")
    return 1 if bad or found or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
