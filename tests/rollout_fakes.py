"""A small deterministic env and policy for the rollout / env-server tests.

``CountingEnv``: each task asks to bring a counter from 0 to a target and ``submit``; actions
``inc`` / ``dec`` / ``submit``.  ``CountingPolicy``: moves towards the target, or with
probability ``noise`` (drawn from the per-step seed) takes a random action.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import Sequence

from eef.envs.base import EnvDiedError, EpisodeNotStartedError, StepResult, Task, TextEnv
from eef.policy import Sampling


def _consume(flag: str) -> bool:
    """True for the one caller that deletes ``flag`` (processes may race for it)."""
    try:
        os.unlink(flag)
        return True
    except FileNotFoundError:
        return False


class CountingEnv(TextEnv):
    name = "counting"

    def __init__(self, n_tasks: int = 20, max_steps: int = 12, snapshots: bool = False,
                 die_after: int | None = None, die_flag: str | None = None,
                 hang_flag: str | None = None):
        self.n_tasks, self.max_steps = n_tasks, max_steps
        self.supports_snapshot = snapshots  # instance attribute shadows the ClassVar
        self.die_after = die_after  # raise EnvDiedError on this instance's N-th step
        self.die_flag = die_flag  # or when this file exists (consumed: deleted)
        self.hang_flag = hang_flag  # hang (sleep) in step when this file exists (consumed)
        self.calls = 0
        self.resets = 0
        self.state: tuple | None = None  # (task_id, n, steps, done)

    def tasks(self, split="all"):
        return [Task(f"t{i}", self.name, "train", f"reach {i % 5 + 2} then submit")
                for i in range(self.n_tasks)]

    def task(self, task_id):
        from eef.envs.base import UnknownTaskError
        if not re.fullmatch(r"t\d+", task_id) or int(task_id[1:]) >= self.n_tasks:
            raise UnknownTaskError(f"unknown counting task id: {task_id!r}")
        return Task(task_id, self.name, "train", f"reach {int(task_id[1:]) % 5 + 2} then submit")

    def reset(self, task_id):
        self.task(task_id)
        self.resets += 1
        self.state = (task_id, 0, 0, False)
        return f"{task_id}: count=0"

    def step(self, action):
        if self.state is None:
            raise EpisodeNotStartedError("step before reset")
        self.calls += 1
        if self.die_after is not None and self.calls >= self.die_after:
            raise EnvDiedError("counting env died (die_after)")
        if self.die_flag and _consume(self.die_flag):
            raise EnvDiedError("counting env died (die_flag)")
        if self.hang_flag and _consume(self.hang_flag):
            time.sleep(3600)
        tid, n, steps, done = self.state
        target = int(tid[1:]) % 5 + 2
        valid = action in ("inc", "dec", "submit")
        n += {"inc": 1, "dec": -1}.get(action, 0)
        steps += 1
        success = action == "submit" and n == target
        done = action == "submit" or steps >= self.max_steps
        self.state = (tid, n, steps, done)
        obs = f"count={n}" if valid else f"count={n} (invalid action {action!r})"
        info = {"valid": valid, "score": 1.0 if success else 0.0}
        if done:
            info["success"] = success
        return StepResult(obs, 1.0 if success else 0.0, done, info)

    def available_actions(self):
        return ["inc", "dec", "submit"]

    def snapshot(self):
        if not self.supports_snapshot:
            return super().snapshot()
        return self.state

    def restore(self, snap):
        if not self.supports_snapshot:
            return super().restore(snap)
        self.state = snap
        return f"count={snap[1]}"


class CountingPolicy:
    """Deterministic given the per-step seed."""

    def __init__(self, noise: float = 0.0, spec: str = "test:counting"):
        self.noise, self.spec = noise, spec
        self.batches: list[int] = []
        self.last_generated_tokens: list[int] = []

    def act(self, contexts, sampling: Sampling | None = None, seeds: Sequence[int] | None = None):
        seeds = list(seeds) if seeds is not None else [0] * len(contexts)
        out = []
        for ctx, seed in zip(contexts, seeds):
            n = int(re.search(r"count=(-?\d+)", ctx.observation).group(1))
            target = int(re.search(r"reach (\d+)", ctx.instruction).group(1))
            rng = random.Random(seed)
            if rng.random() < self.noise:
                a = rng.choice(["inc", "dec", "submit"])
            else:
                a = "inc" if n < target else "dec" if n > target else "submit"
            out.append(f"Thought: count is {n}, target {target}\nAction: {a}")
        self.batches.append(len(contexts))
        self.last_generated_tokens = [len(o.split()) for o in out]
        return out
