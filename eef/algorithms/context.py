"""The context every method runs in: the config, the run directory, the env, the task lists,
the expert trajectories and the base model.  ``eef.algorithms.pipeline.prepare`` builds it
once, fully; nothing changes it afterwards (``dataclasses.replace`` makes a changed copy)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from eef.algorithms.config import ExperimentConfig
from eef.algorithms.rundir import RunDir
from eef.envs.base import TextEnv, round_robin_by_type
from eef.trajectory import Trajectory

#: the agent's seed of iteration i is agent_seed x ITERATION_SEED_PRIME + i (every method)
ITERATION_SEED_PRIME = 7919


@dataclass(frozen=True)
class Context:
    """``train_ids``: the seeded training tasks; ``explore_ids``: those RFT / EEF / ETO roll
    out on (``method.explore_tasks``); ``eval_ids``: the evaluation tasks; ``experts``: the
    expert trajectories on the training tasks; ``base``: the base model directory;
    ``replay``: the ``model.replay`` pre-training sequences added to every training stage."""

    cfg: ExperimentConfig
    run: RunDir
    env: TextEnv
    train_ids: Sequence[str] = ()
    explore_ids: Sequence[str] = ()
    eval_ids: Sequence[str] = ()
    experts: Sequence[Trajectory] = ()
    base: Path | None = None
    replay: Sequence[Trajectory] = ()

    def __post_init__(self) -> None:
        for name in ("train_ids", "explore_ids", "eval_ids", "experts", "replay"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def agent_seed(self) -> int:
        """Seed of fine-tuning and of the agent's sampling (``train_seed``, else ``seed``)."""
        c = self.cfg
        return c.seed if c.train_seed is None else c.train_seed

    def iteration_seed(self, i: int) -> int:
        """The seed of iteration ``i``'s rollouts (every method's)."""
        return self.agent_seed * ITERATION_SEED_PRIME + i

    @property
    def expert_successes(self) -> list[Trajectory]:
        return [t for t in self.experts if t.success]

    @property
    def explored_experts(self) -> list[Trajectory]:
        """The expert's trajectories on the tasks RFT / EEF explore."""
        ids = set(self.explore_ids)
        return [t for t in self.experts if t.task_id in ids]


def make_env(cfg: ExperimentConfig) -> TextEnv:
    import eef.envs as envs
    return envs.make(cfg.env.name, **cfg.env.options)


def select_tasks(env: TextEnv, cfg: ExperimentConfig) -> tuple[list[str], list[str], list[str]]:
    """(train ids, dev ids, eval ids): a seeded subset of the train split (the dev slice is
    held out of it), and the first ``eval_tasks`` of the eval split (in ``eval_order``)."""
    train = [t.id for t in env.tasks(cfg.env.train_split)]
    random.Random(cfg.seed).shuffle(train)
    dev = train[: cfg.env.dev_tasks]
    train = train[cfg.env.dev_tasks:]
    if cfg.env.train_tasks is not None:
        train = train[: cfg.env.train_tasks]
    ev = [t.id for t in env.tasks(cfg.env.eval_split)]
    if cfg.env.eval_order == "by_type":
        ev = round_robin_by_type(ev)
    if cfg.env.eval_tasks is not None:
        ev = ev[: cfg.env.eval_tasks]
    return sorted(train), sorted(dev), ev


def explore_subset(train_ids: Sequence[str], n: int | None, seed: int) -> list[str]:
    """The training tasks RFT / EEF roll out on: all, or a seeded subset of ``n`` (sorted)."""
    if n is None or n >= len(train_ids):
        return list(train_ids)
    return sorted(random.Random(seed * 104729 + 1).sample(list(train_ids), n))
