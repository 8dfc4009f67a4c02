"""Dependencies between lipbound's subpackages point one way: no cycles, no edge up the layers
of ``experiments/import_graph.py`` (engine -> outer ring -> CLI), nothing imports the package
facade, and every unit sits on a layer. Imports inside functions count like top-level ones."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_scanner():
    spec = importlib.util.spec_from_file_location("import_graph",
                                                  ROOT / "experiments" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    return module


ig = _load_scanner()


def _report(imports) -> str:
    return "; ".join(f"{i.module}:{i.line} imports {i.target} ({i.unit} -> {i.target})"
                     for i in imports)


def test_every_unit_is_on_a_layer():
    for unit in {u for i in ig.scan() for u in (i.unit, i.target)}:
        ig.layer_of(unit)  # KeyError names a unit missing from LAYERS


def test_no_cycles_between_subpackages():
    assert ig.cycles(ig.graph(ig.scan())) == []


def test_no_edge_points_up_the_layers():
    bad = ig.upward(ig.scan())
    assert not bad, _report(bad)


def test_engine_never_imports_the_outer_ring():
    outer = {u for layer in ig.LAYERS[2:] for u in layer} | {ig.FACADE}
    bad = [i for i in ig.scan() if i.unit in ig.ENGINE and i.target in outer]
    assert not bad, _report(bad)


@pytest.mark.parametrize("path, line", [
    ("executor/local.py", "from lipbound.cli import common"),
    ("propagate/crown.py", "    from lipbound.api import output_bounds"),
    ("report/files.py", "import lipbound"),
])
def test_the_checks_catch_a_wrong_import(tmp_path, path, line):
    """Mutation check: the scan of a copy of the package with one wrong import added (at the
    top, or inside a function) finds an upward edge and a cycle."""
    pkg = tmp_path / "lipbound"
    shutil.copytree(ROOT / "lipbound", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    target = pkg / path
    text = target.read_text()
    if line.startswith(" "):
        text += f"\n\ndef _mutant():\n{line}\n"
    else:
        text = text.replace("from __future__ import annotations\n",
                            f"from __future__ import annotations\n\n{line}\n", 1)
    target.write_text(text)
    imports = ig.scan(pkg)
    assert ig.upward(imports)
    assert ig.cycles(ig.graph(imports))
