"""ScienceWorld tasks, splits and step limits: the ETO protocol, read from its files or derived.

ETO (Song et al. 2024, ``eval_agent/data/sciworld``) evaluates on 24 of ScienceWorld's 30 task
types (it leaves out the three inclined-plane tasks, the two mendelian-genetics tasks and
measure-melting-point-unknown-substance) with three lists of ``[task_name, variation]`` pairs:
1,483 train / 194 dev ("seen") / 211 test ("unseen"), and a per-task step limit (10-120).

When those files are in the data dir (``sciworld/{train,dev,test}_indices.json``,
``max_steps.json``) they are used as they are.  Otherwise the protocol is derived from the
simulator's own variation ranges:

* test: the first 10 test variations of each of the 24 tasks (fewer when the task has fewer):
  211 pairs, identical to ETO's test file;
* dev: the first 10 dev variations of each task: 199 pairs (ETO's file has 194: it lacks
  boil/18 and 2 + 2 power-component variations);
* train: up to 120 variations per task drawn with a fixed seed from the task's train *and* dev
  ranges minus the derived dev set (ETO's train file draws from both ranges too): 1,513 pairs
  (ETO's file has 1,483: 21 fewer grow-fruit, 5 fewer lifespan-longest-lived-then-shortest-lived,
  2 + 2 fewer power-component; the filter behind that is not published).

ETO's own files also put 54 variations in both train and dev; the derived splits are disjoint.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from scienceworld.constants import TASKS as _SW_TASKS
from scienceworld.utils import infer_task

SPLITS = ("train", "dev", "test")

#: the six ScienceWorld task types ETO leaves out of its protocol
NON_PROTOCOL = frozenset({
    "inclined-plane-determine-angle", "inclined-plane-friction-named-surfaces",
    "inclined-plane-friction-unnamed-surfaces", "mendelian-genetics-known-plant",
    "mendelian-genetics-unknown-plant", "measure-melting-point-unknown-substance"})

#: ETO's per-task step limits (eval_agent/data/sciworld/max_steps.json), by simulator task name.
#: Used when the data dir does not hold that file; tests check the two agree.
ETO_MAX_STEPS: dict[str, int] = {
    "boil": 100, "change-the-state-of-matter-of": 80, "freeze": 80, "melt": 80,
    "measure-melting-point-known-substance": 120, "use-thermometer": 30,
    "power-component": 20, "power-component-renewable-vs-nonrenewable-energy": 30,
    "test-conductivity": 30, "test-conductivity-of-unknown-substances": 30,
    "find-animal": 15, "find-living-thing": 15, "find-non-living-thing": 15, "find-plant": 15,
    "grow-fruit": 60, "grow-plant": 30, "chemistry-mix": 60,
    "chemistry-mix-paint-secondary-color": 15, "chemistry-mix-paint-tertiary-color": 30,
    "lifespan-longest-lived": 10, "lifespan-longest-lived-then-shortest-lived": 12,
    "lifespan-shortest-lived": 10, "identify-life-stages-1": 30, "identify-life-stages-2": 30}

#: step limit of the six non-protocol tasks (ScienceWorld's own ``envStepLimit`` default)
DEFAULT_MAX_STEPS = 100

#: ScienceWorld's task metadata (tasks.json of the package): id like "1-1", topic, title
TASK_INFO: dict[str, dict[str, str]] = {
    t["task_name"]: {"task_type": t["task_id"], "topic": t["topic"], "title": t["task"]}
    for t in _SW_TASKS}
ALL_TASKS: tuple[str, ...] = tuple(sorted(TASK_INFO))
PROTOCOL_TASKS: tuple[str, ...] = tuple(t for t in ALL_TASKS if t not in NON_PROTOCOL)


class ProtocolError(ValueError):
    """A protocol file is malformed or names an unknown task."""


def canonical_task(name: str) -> str:
    """The simulator's task name for a new-style name, an ETO-style name (``task-1-boil``) or
    a ScienceWorld task id (``1-1``)."""
    t = infer_task(str(name))
    if t not in TASK_INFO:
        raise ProtocolError(f"unknown ScienceWorld task {name!r}; known: {', '.join(ALL_TASKS)}")
    return t


# -- files --------------------------------------------------------------------------------------
def read_split_files(folder: Path) -> dict[str, list[tuple[str, int]]] | None:
    """ETO's split files from ``folder`` (``None`` when any is missing)."""
    paths = {s: folder / f"{s}_indices.json" for s in SPLITS}
    if not all(p.is_file() for p in paths.values()):
        return None
    out: dict[str, list[tuple[str, int]]] = {}
    for s, p in paths.items():
        try:
            rows = json.loads(p.read_text(encoding="utf-8"))
            out[s] = [(canonical_task(n), int(v)) for n, v in rows]
        except (ValueError, TypeError) as e:
            raise ProtocolError(f"{p}: not a list of [task_name, variation] pairs ({e})") from e
    return out


def read_max_steps(folder: Path) -> dict[str, int] | None:
    p = folder / "max_steps.json"
    if not p.is_file():
        return None
    try:
        return {canonical_task(k): int(v)
                for k, v in json.loads(p.read_text(encoding="utf-8")).items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise ProtocolError(f"{p}: not a {{task_name: steps}} object ({e})") from e


# -- derivation ---------------------------------------------------------------------------------
def derive_splits(ranges: dict[str, dict[str, list[int]]], *, train_cap: int = 120,
                  dev_n: int = 10, test_n: int = 10, seed: int = 0,
                  tasks: tuple[str, ...] = PROTOCOL_TASKS) -> dict[str, list[tuple[str, int]]]:
    """The protocol from the simulator's variation ranges (``{task: {split: [ids]}}``), by the
    rule in the module docstring.  Deterministic given ``seed``."""
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for t in tasks:
        r = ranges[t]
        dev = sorted(r["dev"])[:dev_n]
        out["test"] += [(t, v) for v in sorted(r["test"])[:test_n]]
        out["dev"] += [(t, v) for v in dev]
        pool = sorted((set(r["train"]) | set(r["dev"])) - set(dev))
        if len(pool) > train_cap:
            pool = sorted(random.Random(f"sciworld-train/{t}/{seed}").sample(pool, train_cap))
        out["train"] += [(t, v) for v in pool]
    return out


def placeholder(task: str, variation: int) -> str:
    """Instruction of a task whose description has not been loaded yet."""
    return f"{TASK_INFO[task]['title']} (variation {int(variation)})"


def task_meta(task: str, variation: int, max_steps: int) -> dict[str, Any]:
    info = TASK_INFO[task]
    return {"task_name": task, "variation": int(variation), "task_type": info["task_type"],
            "topic": info["topic"], "title": info["title"], "max_steps": int(max_steps),
            "protocol": task in PROTOCOL_TASKS}
