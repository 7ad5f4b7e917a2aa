"""Where eef finds its data and keeps its caches.

Data dir (catalogues, splits): ``--data-dir`` > ``EEF_DATA_DIR`` > ``~/.cache/eef/data``.
Cache dir (search indexes, gold paths, built presets): ``EEF_CACHE_DIR`` > ``~/.cache/eef``.
"""

from __future__ import annotations

import os
from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    """A data file is missing; the message says how to get it."""


def cache_dir() -> Path:
    p = Path(os.environ.get("EEF_CACHE_DIR") or Path.home() / ".cache" / "eef")
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("EEF_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def set_data_dir(path: str | os.PathLike | None) -> None:
    """Make ``path`` the data dir of this process (and its children)."""
    if path:
        os.environ["EEF_DATA_DIR"] = str(Path(path).expanduser().resolve())
