"""Test set-up: the data dir defaults to ../shared/data beside the repository (as in CI)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_shared = ROOT.parent / "shared" / "data"
if not os.environ.get("EEF_DATA_DIR") and _shared.is_dir():
    os.environ["EEF_DATA_DIR"] = str(_shared)
os.environ.setdefault("EEF_CACHE_DIR", str(ROOT / ".cache" / "eef"))


def pytest_collection_modifyitems(config, items):
    data = Path(os.environ.get("EEF_DATA_DIR", ""))
    if not (data / "webshop").is_dir():
        skip = pytest.mark.skip(reason="no data dir: set EEF_DATA_DIR (see README)")
        for item in items:
            if "needs_data" in item.keywords:
                item.add_marker(skip)
