"""The import graph of eef/: each layer imports only the layers below it, models/ stays
env-agnostic, and no module imports itself back (the contracts of ``[tool.importlinter]`` in
pyproject.toml; the layer table is in the README)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_graph_keeps_its_contracts():
    pytest.importorskip("importlinter")
    # in a process of its own: import-linter configures logging, and `eef` must be this tree's
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kept, 0 broken" in r.stdout
