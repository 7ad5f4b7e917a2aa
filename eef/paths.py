"""Where eef finds its data and keeps its caches.

Data dir (catalogues, splits): ``--data-dir`` > ``EEF_DATA_DIR`` > ``~/.cache/eef/data``.
Cache dir (search indexes, gold paths, built presets): ``EEF_CACHE_DIR`` > ``~/.cache/eef``.
A run directory records the data dir its run read (``record_data_dir``), so ``eef report`` finds
it again without ``EEF_DATA_DIR``.
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


#: the file of a run directory naming the data dir the run read
RUN_DATA_DIR_FILE = "data_dir.txt"


def record_data_dir(run_dir: str | os.PathLike) -> None:
    """Write the data dir in force (absolute) into ``run_dir``."""
    p = Path(run_dir)
    p.mkdir(parents=True, exist_ok=True)
    (p / RUN_DATA_DIR_FILE).write_text(str(data_dir().resolve()) + "\n", encoding="utf-8")


def recorded_data_dir(run_dir: str | os.PathLike) -> Path | None:
    """The data dir recorded in ``run_dir`` or the directory above it (an ``eef compare``
    output holds one run dir per method and seed), when it still exists."""
    for d in (Path(run_dir), Path(run_dir).parent):
        f = d / RUN_DATA_DIR_FILE
        if f.is_file():
            p = Path(f.read_text(encoding="utf-8").strip())
            return p if p.is_dir() else None
    return None
