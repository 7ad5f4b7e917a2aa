"""Gold action sequences of ScienceWorld variations, generated once and cached on disk.

Generating a gold path means loading the variation with ``generateGoldPath=True``: 0.1 s for
most tasks, up to 60 s on mendelian genetics.  Paths are cached under
``<cache dir>/sciworld/<scienceworld version>/gold/<simplification>/<task>.jsonl``, one
``{"variation", "actions", "seconds"}`` object a line, appended as they are made (a killed run
keeps what it finished; several processes may append to the same file: the last line of a
variation wins and all lines of one variation are equivalent).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import scienceworld

from eef.paths import cache_dir
from eef.envs.sciworld.jvm import Simulator


def sciworld_cache(*parts: str) -> Path:
    """A folder of the eef cache keyed by the ScienceWorld package version."""
    p = cache_dir().joinpath("sciworld", scienceworld.__version__, *parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


class GoldCache:
    """Disk cache of gold paths for one simplification string."""

    def __init__(self, simplification: str, folder: Path | None = None):
        self.simplification = simplification
        key = simplification.replace(",", "+") or "none"
        self.folder = folder or sciworld_cache("gold", key)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._mem: dict[str, dict[int, list[str]]] = {}
        self.seconds: dict[tuple[str, int], float] = {}

    def _file(self, task: str) -> Path:
        return self.folder / f"{task}.jsonl"

    def _read(self, task: str) -> dict[int, list[str]]:
        if task not in self._mem:
            paths: dict[int, list[str]] = {}
            f = self._file(task)
            if f.exists():
                for line in f.read_text(encoding="utf-8").split("\n"):
                    try:
                        d = json.loads(line)
                        paths[int(d["variation"])] = [str(a) for a in d["actions"]]
                        self.seconds[(task, int(d["variation"]))] = float(d.get("seconds", 0))
                    except (ValueError, KeyError, TypeError):
                        continue  # a half-written line of a killed writer
            self._mem[task] = paths
        return self._mem[task]

    def get(self, task: str, variation: int) -> list[str] | None:
        got = self._read(task).get(int(variation))
        if got is None:  # another process may have added it since we read the file
            self._mem.pop(task, None)
            got = self._read(task).get(int(variation))
        return got

    def put(self, task: str, variation: int, actions: list[str], seconds: float) -> None:
        self._read(task)[int(variation)] = list(actions)
        self.seconds[(task, int(variation))] = seconds
        line = json.dumps({"variation": int(variation), "actions": list(actions),
                           "seconds": round(seconds, 3)}) + "\n"
        fd = os.open(self._file(task), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))  # one write: concurrent appenders do not interleave
        finally:
            os.close(fd)

    def generate(self, sim: Simulator, task: str, variation: int) -> list[str]:
        """Load with gold-path generation on ``sim`` (this replaces its current episode)."""
        t0 = time.perf_counter()
        sim.load(task, variation, self.simplification, gold=True)
        actions = sim.gold_actions()
        self.put(task, variation, actions, time.perf_counter() - t0)
        return actions


def teleport_shortcuts(actions: list[str]) -> list[str]:
    """Replace each run of navigation actions (``open door to X`` / ``go to X``) by one
    ``teleport to <last destination>``.  Needs the ``teleportAction`` simplification (part of
    ``easy``, which also opens every door).  Gold paths walk room by room; without this they
    exceed ETO's step limits on many boil / freeze / melt / grow / find / paint variations."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        dest = [a[len("go to "):] for a in run if a.startswith("go to ")]
        if dest:
            out.append(f"teleport to {dest[-1]}")
        run.clear()

    for a in actions:
        if a.startswith(("go to ", "open door to ")):
            run.append(a)
            continue
        flush()
        out.append(a)
    flush()
    return out
