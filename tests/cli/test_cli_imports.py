"""Plotting is imported only by the commands that plot: ``lipbound --help`` and ``lipbound
bound`` must not pay for matplotlib's import (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import contextlib, io, json, sys
from lipbound.cli import main

def plotting():
    return sorted(m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib."))

seen = {}
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
    seen["help"] = plotting()
    seen["bound_rc"] = main(["bound", "--method", "ibp", "--lipschitz-method", "none",
                             "--index", "0", "--json"])
    seen["bound"] = plotting()
    main(["bound", "--method", "ibp", "--lipschitz-method", "ibp", "--index", "0",
          "--output", sys.argv[1]])
    seen["report_rc"] = main(["report", sys.argv[1], "-o", sys.argv[2]])
    seen["report"] = plotting()
print(json.dumps(seen))
"""


def test_help_and_bound_do_not_import_matplotlib(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "r.jsonl"), str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=300, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["help"] == [] and seen["bound"] == []
    assert seen["bound_rc"] == 0 and seen["report_rc"] == 0
    assert "matplotlib" in seen["report"]  # the check does see plotting when it happens
