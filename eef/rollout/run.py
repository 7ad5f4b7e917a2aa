"""Playing one policy over an env's tasks (``eef eval``, ``eef expert collect``).

Scripted experts play sequentially (``episode.collect``: they are fast); model policies, and any
policy with ``num_envs > 1``, ``workers`` or ``ground``, go through the batched engine,
``workers > 0`` with that many env worker processes (``rollout.backend: process``).  Both
append to ``out`` as they go and resume from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eef.envs.base import TextEnv, UnknownTaskError
from eef.errors import PolicySpecError
from eef.policy import Sampling, load_policy
from eef.rollout.grounding import Grounding
from eef.trajectory import Trajectory


class PolicyRunError(ValueError):
    """The env, the tasks or the policy of a run cannot be set up (the message says which)."""


def read_task_ids(path: str | os.PathLike) -> list[str]:
    """The task ids of a file: one per line (the first tab-separated column, so ``eef tasks``
    output works as it is), blank lines and ``#`` comments skipped."""
    p = Path(path)
    if not p.exists():
        raise PolicyRunError(f"{p}: no such file")
    return [ln.split("\t", 1)[0].strip() for ln in p.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]


def open_env(name: str, options: dict[str, Any] | None = None) -> TextEnv:
    """``eef.envs.make(name, **options)``, its failures as one ``PolicyRunError``."""
    import eef.envs as envs
    try:
        return envs.make(name, **(options or {}))
    except KeyError as e:
        raise PolicyRunError(str(e.args[0]) if e.args else str(e)) from e
    except (FileNotFoundError, ValueError, TypeError, RuntimeError) as e:
        raise PolicyRunError(str(e)) from e


def task_ids(env: TextEnv, split: str | None = "test", tasks_file: str | os.PathLike | None = None,
             limit: int | None = None) -> list[str]:
    """The first ``limit`` tasks of ``tasks_file`` (every id checked) or else of ``split``."""
    if tasks_file is not None:
        ids = read_task_ids(tasks_file)
        try:
            for t in ids:
                env.task(t)
        except UnknownTaskError as e:
            raise PolicyRunError(f"{tasks_file}: {e}") from e
    else:
        try:
            ids = [t.id for t in env.tasks(split or "test")]
        except ValueError as e:
            raise PolicyRunError(str(e)) from e
    return ids[:limit] if limit else ids


def run_policy(env_name: str, policy: str, *, env_options: dict[str, Any] | None = None,
               split: str | None = "test", tasks_file: str | os.PathLike | None = None,
               limit: int | None = None, out: str | os.PathLike | None = None,
               sampling: Sampling | None = None, seed: int = 0, num_envs: int = 0,
               workers: int = 0, ground: bool | Grounding = False, progress: bool = False,
               **policy_kw: Any) -> list[Trajectory]:
    """Play ``policy`` (a spec string; ``policy_kw`` go to ``load_policy``) once on each task
    of ``tasks_file`` or ``split`` (the first ``limit``), appending to ``out``.  ``num_envs``:
    episodes in flight (0: 16 for the engine); ``workers``: env worker processes, one episode
    each; ``ground``: action grounding (``eef.rollout.grounding``; True: its default
    ``Grounding``).  Set-up failures raise ``PolicyRunError``, a corrupt ``out`` a
    ``TrajectoryFormatError``."""
    from eef.rollout.episode import collect
    env = open_env(env_name, env_options)
    try:
        ids = task_ids(env, split, tasks_file, limit)
        try:
            pol = load_policy(policy, env, **policy_kw)
        except PolicySpecError as e:
            raise PolicyRunError(str(e)) from e
        sampling = sampling or Sampling()
        if policy.startswith("expert:") and num_envs <= 1 and not ground and not workers:
            return collect(env, pol, ids, out, sampling=sampling, seed=seed, progress=progress)
        from eef.rollout.engine import EngineConfig, RolloutRequest, rollout
        from eef.rollout.pool import EnvSpec
        rule = Grounding.of(ground) or Grounding()
        res = rollout(EnvSpec(env_name, dict(env_options or {})), pol,
                      [RolloutRequest(t, sampling=sampling, seed=seed) for t in ids], out,
                      EngineConfig(num_envs=workers or (num_envs if num_envs > 1 else 16),
                                   backend="process" if workers else "local",
                                   progress=progress, ground_actions=bool(ground),
                                   ground_by=rule.by, avoid_repeats=rule.avoid_repeats,
                                   fill_without_thought=rule.fill_without_thought))
        return res.trajectories
    finally:
        env.close()
