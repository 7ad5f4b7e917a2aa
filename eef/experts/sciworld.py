"""Scripted ScienceWorld experts: ``gold``, ``noisy`` and ``random``.

* ``GoldExpert`` plays the simulator's gold action sequence (cached on disk, see
  ``eef.envs.sciworld.gold``) with short templated thoughts.  Under the ``easy``
  simplification its room-by-room walks become ``teleport to`` actions
  (``teleport_shortcuts``): the raw gold paths exceed ETO's step limits on 20% of test tasks.
* ``NoisyExpert`` stands in for an imperfect LLM expert whose failures are natural: it plans an
  episode from the gold path but, at configurable rates, focuses on the wrong object (the
  simulator then ends the task with -100), applies a gold action to a related object instead,
  skips a step, or takes a detour; it then carries on with the gold path, and when its plan is
  used up without success it keeps looking around until the step limit.  Its failed
  trajectories keep the gold prefix before the first error: the useful prefixes EEF explores.
* ``RandomExpert`` picks uniformly among the task's gold actions and a few generic ones.

All are deterministic given (task, history, seed).  The seed of an episode is
``seeds[i] - len(context.steps)`` (``eef.rollout.episode.run_episode`` passes
``seed + step index``).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from eef.policy import Sampling
from eef.react import render_turn

if TYPE_CHECKING:
    from eef.envs.base import TextEnv
    from eef.trajectory import Trajectory

GIVE_UP = "look around"
#: tasks whose gold paths are timed by simulator ticks (a life stage appears after N ticks):
#: one teleport takes fewer ticks than the walk it replaces, so the gold path would focus on a
#: stage before it exists (measured: identify-life-stages-2 fell from 4/4 to 1/4 on test)
TIMED_TASKS = frozenset({"identify-life-stages-1", "identify-life-stages-2"})


def _rng(*key: Any) -> random.Random:
    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# -- thoughts -----------------------------------------------------------------------------------
_THOUGHTS: list[tuple[re.Pattern[str], str]] = [(re.compile(p), t) for p, t in [
    (r"^look around$", "I look around to see what is here."),
    (r"^inventory$", "I check what I am carrying."),
    (r"^wait1?$", "I wait for things to change."),
    (r"^\d+$", "Several things match that; I choose option {0}."),
    (r"^focus on (.+)$", "The task is about the {1}, so I focus on it."),
    (r"^open door to (.+)$", "I open the door to the {1}."),
    (r"^(?:go to|teleport to) (.+)$", "Next I need to be in the {1}."),
    (r"^pick up (.+)$", "I will need the {1}, so I pick it up."),
    (r"^move (.+) to (.+)$", "I move the {1} to the {2}."),
    (r"^pour (.+) (?:into|in) (.+)$", "I pour the {1} into the {2}."),
    (r"^use (.+) on (.+)$", "I use the {1} on the {2}."),
    (r"^connect (.+) to (.+)$", "I connect the {1} to the {2}."),
    (r"^activate (.+)$", "I turn on the {1}."),
    (r"^deactivate (.+)$", "I turn off the {1}."),
    (r"^(?:examine|look at|look in) (.+)$", "I examine the {1} to check its state."),
    (r"^open (.+)$", "I open the {1} to get at what is inside."),
    (r"^close (.+)$", "I close the {1}."),
    (r"^mix (.+)$", "I mix what is in the {1}."),
]]


def thought_for(action: str) -> str:
    """A short templated thought for a ScienceWorld action."""
    for pat, tpl in _THOUGHTS:
        m = pat.match(action)
        if m:
            return tpl.format(action, *m.groups())
    return f"Next, I {action}."


# -- objects of actions -------------------------------------------------------------------------
_ARGS = re.compile(r"^(focus on|pick up|open door to|go to|teleport to|move|pour|use|connect|"
                   r"activate|deactivate|examine|look at|look in|open|close|mix|put down|eat|"
                   r"read|flush|dunk) (.+?)(?: (to|into|in|on) (.+))?$")


def action_objects(action: str) -> list[str]:
    m = _ARGS.match(action)
    if not m:
        return []
    return [x for x in (m.group(2), m.group(4)) if x]


def _replace_object(action: str, others: Sequence[str], rng: random.Random) -> str | None:
    m = _ARGS.match(action)
    if not m:
        return None
    objs = [x for x in (m.group(2), m.group(4)) if x]
    pick = rng.randrange(len(objs))
    choices = [o for o in others if o not in objs]
    if not choices:
        return None
    new = rng.choice(choices)
    if pick == 0:
        return f"{m.group(1)} {new}" + (f" {m.group(3)} {m.group(4)}" if m.group(4) else "")
    return f"{m.group(1)} {m.group(2)} {m.group(3)} {new}"


# -- the experts --------------------------------------------------------------------------------
class _SciWorldExpert:
    """Shared plumbing: gold paths (from the env, or from a private env when the given env is
    not a local ``SciWorldEnv``), plan following and turn rendering."""

    spec = "expert:sciworld"

    def __init__(self, env: "TextEnv", simplification: str | None = None,
                 teleport: bool | None = None):
        self.env = env
        self.simplification = (simplification if simplification is not None
                               else getattr(env, "simplification", "easy"))
        #: shorten navigation with `teleport to` (on when the simplification allows it)
        self.teleport = (teleport if teleport is not None else
                         self.simplification == "easy" or "teleportAction" in self.simplification)
        self._own: Any = None
        self._plans: dict[tuple[str, int], list[tuple[str, str | None]]] = {}

    def gold(self, task_id: str) -> list[str]:
        """The gold action sequence of ``task_id`` (with teleport shortcuts if enabled)."""
        from eef.envs.sciworld import SciWorldEnv
        from eef.envs.sciworld.gold import teleport_shortcuts
        env = self.env
        if not (isinstance(env, SciWorldEnv) and env.simplification == self.simplification):
            if self._own is None:
                self._own = SciWorldEnv(simplification=self.simplification)
            env = self._own
        actions = env.gold_actions(task_id)
        if self.teleport and task_id.split("/")[1] not in TIMED_TASKS:
            actions = teleport_shortcuts(actions)
        return actions

    def prepare(self, task_ids: Sequence[str]) -> None:
        """Compute (and cache) the gold paths of ``task_ids`` before any episode starts."""
        from rich.progress import track
        for tid in track(list(task_ids), description=f"{self.spec}: gold paths",
                         disable=len(task_ids) < 20):
            self.gold(tid)

    def plan(self, task_id: str, seed: int) -> list[tuple[str, str | None]]:
        """``[(action, error kind or None), ...]``: the episode the expert intends to play."""
        key = (task_id, seed)
        if key not in self._plans:
            self._plans[key] = self._make_plan(task_id, seed)
        return self._plans[key]

    def _make_plan(self, task_id: str, seed: int) -> list[tuple[str, str | None]]:
        return [(a, None) for a in self.gold(task_id)]

    def _next(self, ctx: "Trajectory", seed: int) -> tuple[str, str]:
        plan = self.plan(ctx.task_id, seed)
        # follow the plan through the history; a history that deviates keeps the pointer
        k = 0
        for a in ctx.actions:
            if k < len(plan) and a == plan[k][0]:
                k += 1
        if k >= len(plan):
            return "I have run out of ideas; I look around again.", GIVE_UP
        action = plan[k][0]
        return thought_for(action), action

    def act(self, contexts: Sequence["Trajectory"], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        out = []
        for i, ctx in enumerate(contexts):
            base = (seeds[i] if seeds is not None else len(ctx.steps)) - len(ctx.steps)
            out.append(render_turn(*self._next(ctx, base)))
        return out

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None


class GoldExpert(_SciWorldExpert):
    """The simulator's gold path with templated thoughts (seed-independent)."""

    spec = "expert:gold"

    def plan(self, task_id: str, seed: int) -> list[tuple[str, str | None]]:
        return super().plan(task_id, 0)


@dataclass
class NoisyConfig:
    """Error rates of ``NoisyExpert`` (per gold action).  The defaults give a 46% win rate on
    10 train variations of each of the 24 protocol tasks (gold: ~88%); see docs/sciworld.md."""

    wrong_focus: float = field(default=0.2, metadata={
        "help": "Chance that a `focus on X` of the gold path focuses on another object of the "
                "task instead (ScienceWorld then fails the task with -100)."})
    wrong_object: float = field(default=0.05, metadata={
        "help": "Chance that a gold action is applied to another object of the task instead "
                "(the intended action is not taken)."})
    skip: float = field(default=0.03, metadata={
        "help": "Chance that a gold action (not a focus) is skipped."})
    detour: float = field(default=0.04, metadata={
        "help": "Chance of 1-3 extra actions (look at / go to another place of the task) "
                "before a gold action: costs steps against the limit."})
    max_errors: int = field(default=3, metadata={
        "help": "At most this many errors per episode."})


class NoisyExpert(_SciWorldExpert):
    """Gold path with natural mistakes (see ``NoisyConfig``); deterministic given the seed."""

    spec = "expert:noisy"
    KINDS = ("wrong_focus", "wrong_object", "skip", "detour")

    def __init__(self, env: "TextEnv", simplification: str | None = None,
                 teleport: bool | None = None, **rates: Any):
        super().__init__(env, simplification, teleport)
        self.config = NoisyConfig(**rates)

    def _make_plan(self, task_id: str, seed: int) -> list[tuple[str, str | None]]:
        gold = self.gold(task_id)
        rng = _rng("noisy", task_id, seed)
        c = self.config
        objects = sorted({o for a in gold for o in action_objects(a)})
        places = sorted({o for a in gold for o in action_objects(a)
                         if a.startswith(("go to", "teleport to", "open door to"))})
        plan: list[tuple[str, str | None]] = []
        errors = 0
        for a in gold:
            r = rng.random()
            if errors < c.max_errors:
                if a.startswith("focus on") and r < c.wrong_focus:
                    wrong = _replace_object(a, objects, rng)
                    if wrong:
                        plan.append((wrong, "wrong_focus"))
                        errors += 1
                        continue
                elif not a.startswith("focus on"):
                    if r < c.wrong_object:
                        wrong = _replace_object(a, objects, rng)
                        if wrong:
                            plan.append((wrong, "wrong_object"))
                            errors += 1
                            continue
                    elif r < c.wrong_object + c.skip:
                        plan.append(("", "skip"))  # marker, dropped below
                        errors += 1
                        continue
                    elif r < c.wrong_object + c.skip + c.detour:
                        for _ in range(rng.randint(1, 3)):
                            if places and rng.random() < 0.5:
                                plan.append((f"go to {rng.choice(places)}", "detour"))
                            elif objects:
                                plan.append((f"look at {rng.choice(objects)}", "detour"))
                        errors += 1
            plan.append((a, None))
        # a skip is recorded on the next planned action so that every entry is playable
        out: list[tuple[str, str | None]] = []
        pending = None
        for a, kind in plan:
            if kind == "skip":
                pending = "skip"
                continue
            out.append((a, kind or pending))
            pending = None
        return out

    def errors(self, task_id: str, seed: int = 0) -> list[tuple[int, str]]:
        """``[(plan index, kind), ...]`` of the mistakes planned for an episode."""
        return [(i, k) for i, (_, k) in enumerate(self.plan(task_id, seed)) if k]


class RandomExpert(_SciWorldExpert):
    """Uniform over the task's gold actions plus ``look around`` / ``inventory`` / ``wait1``."""

    spec = "expert:random"

    def _next(self, ctx: "Trajectory", seed: int) -> tuple[str, str]:
        pool = sorted(set(self.gold(ctx.task_id)) | {"look around", "inventory", "wait1"})
        action = _rng("random", ctx.task_id, seed, len(ctx.steps)).choice(pool)
        return thought_for(action), action


def failure_kind(traj: "Trajectory", expert: NoisyExpert | None = None, seed: int = 0) -> str:
    """Why an episode failed: ``success``, the first planned error that was played
    (``wrong_focus`` / ``wrong_object`` / ``skip`` / ``detour``), else ``step_limit`` (the plan
    ran out of steps) or ``gave_up`` (the plan ended without success)."""
    if traj.success:
        return "success"
    if expert is not None:
        plan = expert.plan(traj.task_id, seed)
        played = plan[: len(traj.steps)]
        for _, kind in played:
            if kind:
                return kind
        return "step_limit" if len(traj.steps) < len(plan) else "gave_up"
    return "gave_up" if traj.steps and traj.steps[-1].action == GIVE_UP else "step_limit"
