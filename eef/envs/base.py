"""The text-environment contract every eef environment implements.

In the spirit of Gymnasium's ``Env`` but text in / text out and keyed by task ids:

* ``reset(task_id) -> str``: start the episode of one task; returns the first observation.
* ``step(action) -> StepResult``: apply one action string.  Malformed or unknown actions never
  raise: they return the same page with a short note and ``info["valid"] = False``; the step
  still counts towards the step limit.
* ``available_actions() -> list[str]``: the actions the current state admits (may be computed
  lazily: only when asked).
* ``replay(task_id, actions, expected=...)``: reset and re-apply an action prefix.  This is the
  primitive EEF's simulations start from ("restore expert state s_k").
* ``restart_step_limit()`` (optional, ``restarts_step_limit``): count the step limit from the
  current state, so a simulation from s_k may take the env's whole limit after s_k.
* ``close()``: release every resource (processes, files).

Rewards.  ``StepResult.reward`` is the reward of that step on the env's [0, 1] scale (WebShop:
0 until the purchase, then the purchase reward).  ``info["score"]`` is the episode score so far on
[0, 1], and when ``done`` is true ``info["success"]`` says whether the task was solved.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence

Observation = str
Split = Literal["train", "dev", "test", "all"]


class EnvError(RuntimeError):
    """Base class of environment errors (bad task id, dead simulator, ...)."""


class UnknownTaskError(EnvError, KeyError):
    """The task id is not one of the env's tasks."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown task"


class EnvDiedError(EnvError):
    """The env's backing process died mid-episode.  The episode can be retried on a fresh env
    (the rollout engine does that); the env that raised must be closed and recreated."""


class EpisodeNotStartedError(EnvError):
    """``step`` was called before ``reset``."""


@dataclass(frozen=True)
class Task:
    """One task of an env: a stable string id, its split and its metadata."""

    id: str
    env: str
    split: str | None
    instruction: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "env": self.env, "split": self.split,
                "instruction": self.instruction, **self.meta}


@dataclass
class StepResult:
    observation: Observation
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


ReplayMatch = Literal["exact", "unordered", "different", "unchecked"]


@dataclass
class ReplayResult:
    """What ``TextEnv.replay`` did.

    ``match`` compares the replayed observations with the expected ones: ``exact`` (same text),
    ``unordered`` (same ``[SEP]``/line-separated pieces in another order), ``different``, or
    ``unchecked`` when no expected observations were given.  ``first_divergence`` is the index
    of the first step whose observation was not exact.
    """

    observation: Observation
    initial_observation: Observation
    results: list[StepResult]
    match: ReplayMatch = "unchecked"
    first_divergence: int | None = None
    done: bool = False
    #: how many replays it took (envs that retry a diverged replay on a fresh load)
    attempts: int = 1


def compare_observations(got: str, want: str) -> ReplayMatch:
    """``exact`` / ``unordered`` (same pieces, different order) / ``different``."""
    if got == want:
        return "exact"

    def pieces(s: str) -> list[str]:
        import re
        return sorted(p.strip() for p in re.split(r"\[SEP\]|\n|,", s) if p.strip())

    return "unordered" if pieces(got) == pieces(want) else "different"


class TextEnv(abc.ABC):
    """Abstract text environment. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str] = "env"
    #: True when ``snapshot``/``restore`` are implemented (cheap copies of the episode state).
    supports_snapshot: ClassVar[bool] = False
    #: True when ``restart_step_limit`` is implemented.
    restarts_step_limit: ClassVar[bool] = False
    max_steps: int = 15

    # -- tasks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def tasks(self, split: Split = "all") -> list[Task]:
        """Tasks of a split (``all``: every task, including those in no split)."""

    def task(self, task_id: str) -> Task:
        for t in self.tasks("all"):
            if t.id == task_id:
                return t
        raise UnknownTaskError(f"unknown {self.name} task id: {task_id!r}")

    # -- episode -------------------------------------------------------------------------
    @abc.abstractmethod
    def reset(self, task_id: str) -> Observation:
        """Start the episode of ``task_id``; return the first observation."""

    @abc.abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply one action; never raises on a bad action string."""

    @abc.abstractmethod
    def available_actions(self) -> list[str]:
        """Actions admitted by the current state."""

    def close(self) -> None:
        """Release resources. Idempotent."""

    # -- state copies (optional) ---------------------------------------------------------
    def snapshot(self) -> Any:
        raise NotImplementedError(f"{self.name} cannot snapshot its state; use replay()")

    def restore(self, snap: Any) -> Observation:
        raise NotImplementedError(f"{self.name} cannot restore a state; use replay()")

    # -- step limit (optional) -----------------------------------------------------------
    def restart_step_limit(self) -> None:
        """Count the episode's step limit from the current state: ``max_steps`` more steps (the
        task's limit) are allowed from here.  EEF's ``method.sim_steps: full`` calls it after
        restoring expert state s_k."""
        raise EnvError(f"{self.name} cannot count its step limit from a later state")

    # -- replay --------------------------------------------------------------------------
    def replay(self, task_id: str, actions: Sequence[str],
               expected: Sequence[str] | None = None) -> ReplayResult:
        """Reset to ``task_id`` and re-apply ``actions``.

        ``expected`` are the observations recorded after each action (same length as
        ``actions``); the result says whether the replay reproduced them.  Replay stops early if
        the episode ends (the remaining actions are not applied).
        """
        obs0 = self.reset(task_id)
        results: list[StepResult] = []
        match: ReplayMatch = "unchecked" if expected is None else "exact"
        first_div = None
        for i, a in enumerate(actions):
            r = self.step(a)
            results.append(r)
            if expected is not None and i < len(expected):
                m = compare_observations(r.observation, expected[i])
                if m != "exact" and first_div is None:
                    first_div = i
                if m == "different" or (m == "unordered" and match == "exact"):
                    match = m
            if r.done:
                break
        obs = results[-1].observation if results else obs0
        return ReplayResult(obs, obs0, results, match, first_div,
                            bool(results and results[-1].done))

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> "TextEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task_family(task_id: str) -> str:
    """The family of a task: the tasks that share one world and differ in their instance.  The
    built-in envs' ids read ``ENV/FAMILY/INDEX`` (WebShop ``webshop/ASIN/k``: the goals of one
    target product; ScienceWorld ``sciworld/TASK/VARIATION``: the variations of one task
    type), whose family is the id up to its last '/'; any other id is its own family.  Tasks
    of one family are not independent draws (the paired comparison resamples whole families)."""
    head, sep, _ = task_id.rpartition("/")
    return head if sep and "/" in head else task_id


def round_robin_by_type(ids: list[str]) -> list[str]:
    """Interleave task ids over their types (the id up to its last '/': ``task_family`` of the
    built-in envs' ids), types in order of first appearance, each type's ids in their given
    order: a prefix of the result covers every type."""
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(i.rsplit("/", 1)[0], []).append(i)
    lanes = list(groups.values())
    return [lane[k] for k in range(max(map(len, lanes), default=0)) for lane in lanes
            if k < len(lane)]
