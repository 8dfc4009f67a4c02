"""Module and function size counts of a package (AST-based), printed as a table.

Usage: python experiments/code_size.py [PACKAGE_DIR] [--list N]

Module length is the file's line count.  Function length is the span of its
``def`` (first decorator to last line, docstring included); nested functions
are counted on their own and inside their parent.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            yield node.name, start, node.end_lineno - start + 1


def measure(root: Path):
    modules, functions = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        modules.append((str(path), len(text.splitlines())))
        for name, line, length in _functions(ast.parse(text)):
            functions.append((f"{path}:{line} {name}", length))
    return modules, functions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="lipbound")
    parser.add_argument("--list", type=int, default=10, metavar="N",
                        help="also list the N longest modules and functions")
    args = parser.parse_args()
    modules, functions = measure(Path(args.root))
    mod_len = [n for _, n in modules]
    fn_len = [n for _, n in functions]
    rows = [
        ("modules", len(mod_len)),
        ("modules > 500 lines", sum(n > 500 for n in mod_len)),
        ("modules > 300 lines", sum(n > 300 for n in mod_len)),
        ("max module length", max(mod_len, default=0)),
        ("functions", len(fn_len)),
        ("functions > 80 lines", sum(n > 80 for n in fn_len)),
        ("functions > 50 lines", sum(n > 50 for n in fn_len)),
        ("max function length", max(fn_len, default=0)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value:>6}")
    if args.list:
        print("\nlongest modules:")
        for name, n in sorted(modules, key=lambda r: -r[1])[: args.list]:
            print(f"  {n:5d}  {name}")
        print("\nlongest functions:")
        for name, n in sorted(functions, key=lambda r: -r[1])[: args.list]:
            print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
