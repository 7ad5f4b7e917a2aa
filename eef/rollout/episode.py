"""Sequential episodes: one env, one policy, one episode at a time.

The batched engine (``eef.rollout.engine``) is the fast path; this is the reference loop it is
checked against, and what expert collection and small evaluations use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from eef.envs.base import TextEnv
from eef.rollout.grounding import Grounding, ground_batch, note_grounding
from eef.policy import Policy, Sampling
from eef.react import parse_turn
from eef.trajectory import (Provenance, Step, Trajectory, TrajectoryFormatError, dumps_line,
                            iter_jsonl)


def start_context(env: TextEnv, task_id: str, observation: str) -> Trajectory:
    return Trajectory(task_id, env.name, env.task(task_id).instruction, observation)


def run_episode(env: TextEnv, policy: Policy, task_id: str, *, sampling: Sampling | None = None,
                seed: int = 0, source: dict[str, Any] | None = None,
                prefix: Trajectory | None = None, ground: bool | Grounding = False,
                fresh_step_limit: bool = False) -> Trajectory:
    """Play one episode of ``task_id``.  With ``prefix`` (a recorded trajectory cut at state
    s_k), its actions are replayed first and kept in the context (``source.start_state = k``);
    ``fresh_step_limit``: the env's step limit then counts from s_k.
    ``ground``: map inadmissible actions to admissible ones (``eef.rollout.grounding``; True:
    its default ``Grounding``)."""
    if prefix is not None and prefix.steps:
        rep = env.replay(task_id, prefix.actions, prefix.observations)
        traj = prefix.prefix(len(prefix.steps))
        traj.initial_observation = rep.initial_observation
        for s, r in zip(traj.steps, rep.results):
            s.observation, s.reward = r.observation, r.reward
        traj.meta["replay_match"] = rep.match
        start = len(prefix.steps)
        done = rep.done
        last = rep.results[-1] if rep.results else None
        if fresh_step_limit and not done:
            env.restart_step_limit()
    else:
        traj = start_context(env, task_id, env.reset(task_id))
        start, done, last = 0, False, None
    traj.source = Provenance.from_dict({"kind": "policy", "policy": policy.spec,
                                        "start_state": start, "seed": seed, **(source or {})})
    rule = Grounding.of(ground)
    while not done:
        response = policy.act([traj], sampling, [seed + len(traj.steps)])[0]
        thought, action = parse_turn(response)
        if rule is not None:
            executed = ground_batch(policy, [traj], [thought], [action],
                                    [env.available_actions()], rule, sampling,
                                    [seed + len(traj.steps)])[0]
            action = note_grounding(traj, action, executed)
        last = env.step(action)
        traj.steps.append(Step(action, last.observation, thought, float(last.reward),
                               train=True, valid=bool(last.info.get("valid", True))))
        done = last.done
    info = last.info if last is not None else {}
    traj.done = True
    traj.reward = float(info.get("score", last.reward if last else 0.0))
    traj.success = bool(info.get("success", False))
    return traj


def summarize(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    """Win rate (share of successes) and mean score (0-100) of finished episodes."""
    n = len(trajs)
    wins = sum(t.success for t in trajs)
    return {"n": n, "win_rate": wins / n if n else 0.0,
            "mean_score": 100.0 * sum(t.reward for t in trajs) / n if n else 0.0,
            "mean_steps": sum(len(t) for t in trajs) / n if n else 0.0}


def collect(env: TextEnv, policy: Policy, task_ids: Iterable[str], out: str | os.PathLike | None = None,
            *, sampling: Sampling | None = None, seed: int = 0, progress: bool = True,
            source: dict[str, Any] | None = None) -> list[Trajectory]:
    """Run one episode per task, appending each finished trajectory to ``out`` (JSONL) as it
    ends.  A rerun with the same ``out`` resumes: tasks already in the file are not replayed."""
    task_ids = list(task_ids)
    done: dict[str, Trajectory] = {}
    if out is not None and Path(out).exists():
        try:
            for t in iter_jsonl(out):
                done[t.task_id] = t
        except TrajectoryFormatError as e:
            raise TrajectoryFormatError(f"cannot resume from {out}: {e}") from e
        _truncate_partial_line(Path(out))
    todo = [t for t in task_ids if t not in done]
    from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from eef.progress import Progress
    wins = sum(done[t].success for t in task_ids if t in done)
    t0 = time.time()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("win {task.fields[win]:.1%}"), TimeElapsedColumn(),
                  TimeRemainingColumn(), disable=not progress, transient=False) as bar:
        job = bar.add_task(f"{policy.spec} on {env.name}", total=len(task_ids),
                           completed=len(task_ids) - len(todo), win=0.0)
        f = open(out, "a", encoding="utf-8") if out is not None else None
        try:
            for i, tid in enumerate(todo):
                traj = run_episode(env, policy, tid, sampling=sampling, seed=seed, source=source)
                traj.meta.setdefault("wall_s", round(time.time() - t0, 3))
                done[tid] = traj
                wins += traj.success
                if f is not None:
                    f.write(dumps_line(traj.to_dict()))
                    f.flush()
                n_done = len(task_ids) - len(todo) + i + 1
                bar.update(job, advance=1, win=wins / n_done)
                t0 = time.time()
        finally:
            if f is not None:
                f.close()
    return [done[t] for t in task_ids]


def _truncate_partial_line(path: Path) -> None:
    """Drop a half-written last line left by a killed writer, so appends stay valid JSONL."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
