"""Figure 1 of Lan et al. 2025 for every explored expert trajectory: its simulated states
s_0, s_l, ..., s_Ml (solved / unsolved / diverged), its actions (beneficial / harmful /
neutral / unused), the important states, and the agent's continuations from each state.

Built from ``labels/METHOD-itI.jsonl`` (written by ``eef.algorithms.eef``), the expert
trajectories (``expert.jsonl``), the simulations (``rollouts/METHOD/itI/sim.jsonl``; s_0's
outcome is the iteration's start-state rollout ``rollouts/METHOD/itI/s0.jsonl``) and the
iteration's training set (``data/METHOD/itI.jsonl``), whose EEF samples mark the continuation
they were built from.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from eef.algorithms.labels import LabelRecord, expert_name
from eef.report.rundata import Run, as_int
from eef.trajectory import Trajectory

SOLVED, UNSOLVED, DIVERGED = "solved", "unsolved", "diverged"


def _reward(x: float) -> float | None:
    """A reward for the page's JSON: NaN / infinity (JSON has neither) become null."""
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


def _clip(text: str, limit: int) -> str:
    text = str(text or "")
    if limit <= 0 or len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters)"


def _steps(t: Trajectory, start: int, obs_chars: int) -> list[dict[str, Any]]:
    return [{"a": s.action, "o": _clip(s.observation, obs_chars), "th": _clip(s.thought, obs_chars),
             "v": s.valid} for s in t.steps[start:]]


def figure1_entries(runs: list[Run], obs_chars: int = 300, max_sims_per_state: int = 8
                    ) -> list[dict[str, Any]]:
    """One entry per (run, method, iteration, explored expert trajectory), JSON-ready: several
    trajectories of one task (``expert.policies``, several ``expert.trajectories`` files) are
    entries of their own.

    Keys: ``run``, ``method``, ``it``, ``task``, ``parent`` (the trajectory's id),
    ``instruction``, ``expert`` (``name``: which expert, ``success``,
    ``reward``, ``steps``: ``a`` action, ``o`` observation (clipped to ``obs_chars``), ``l``
    label), ``states`` (``k``, ``status`` solved | unsolved | diverged, ``important``,
    ``recovery``, ``sims``: continuation episodes with ``sample``, ``success``, ``reward``,
    ``match`` (replay), ``used`` (became a training sample), ``steps`` after s_k), ``samples``
    (training samples built), ``missing`` (notes on absent inputs).
    """
    entries: list[dict[str, Any]] = []
    for run in runs:
        for method, it, rel in run.label_files():
            records = run.label_records(rel)
            if not records:
                continue
            sims_at: dict[tuple[str, int], list[Trajectory]] = defaultdict(list)
            for t in run.simulations(method, it):
                sims_at[(str(t.source.parent), as_int(t.source.start_state))].append(t)
            s0_of: dict[str, list[Trajectory]] = defaultdict(list)
            for t in run.start_rollouts(method, it):
                s0_of[t.task_id].append(t)
            used: set[tuple[str, int, tuple[str, ...]]] = set()
            for t in run.training_set(method, it) or []:
                if t.source.kind == "eef":
                    used.add((str(t.source.parent), as_int(t.source.start_state),
                              tuple(t.actions)))
            for rec in records:
                entries.append(_entry(run, method, it, rec, sims_at, s0_of, used, obs_chars,
                                      max_sims_per_state))
    return entries


def _entry(run: Run, method: str, it: int, rec: LabelRecord, sims_at, s0_of, used,
           obs_chars: int, max_sims: int) -> dict[str, Any]:
    pid = str(rec.parent or "")
    task = rec.task_id
    expert = run.experts_by_id.get(pid) or next(
        (t for t in run.experts if t.task_id == task), None)
    labels = [str(x) for x in rec.labels]
    important = {int(k) for k in rec.important}
    missing = []
    if expert is None:
        missing.append("expert trajectory not found in expert.jsonl")
        e_steps = [{"a": "", "o": "", "th": "", "v": True, "l": lab} for lab in labels]
    else:
        e_steps = _steps(expert, 0, obs_chars)
        for i, s in enumerate(e_steps):
            s["l"] = labels[i] if i < len(labels) else "unused"
    states = []
    for k, solved, div in zip(rec.states, rec.solved, rec.diverged):
        k = int(k)
        trajs = s0_of.get(task, []) if k == 0 else sims_at.get((pid, k), [])
        sims = []
        for t in trajs[:max_sims]:
            start = as_int(t.source.start_state)
            sims.append({"sample": t.source.sample, "success": bool(t.success),
                         "reward": _reward(t.reward),
                         "match": t.meta.get("replay_match"),
                         "used": (pid, start, tuple(t.actions)) in used,
                         "steps": _steps(t, start, obs_chars)})
        states.append({"k": k, "status": DIVERGED if div else SOLVED if solved else UNSOLVED,
                       "important": k in important, "recovery": k in important and k > 0,
                       "sims": sims, "more_sims": max(0, len(trajs) - max_sims)})
    return {"run": run.name, "method": method, "it": it, "task": task, "parent": pid,
            "instruction": expert.instruction if expert else "",
            "expert": {"name": str(rec.expert or (expert_name(expert) if expert else "")),
                       "success": bool(expert.success if rec.expert_success is None and expert
                                       else rec.expert_success),
                       "reward": _reward(expert.reward) if expert else None,
                       "steps": e_steps},
            "states": states, "samples": as_int(rec.samples), "missing": missing}
