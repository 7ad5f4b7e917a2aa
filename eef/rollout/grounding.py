"""Action grounding: map a free-text action the state does not admit to the closest one it does.

A policy that writes its actions as text can name things that are not there (a product id that
is not on the page, a misspelt button).  The env then returns the same page with a note and the
step is wasted.  Grounding is an *optional* decoding rule of the rollout engine
(``rollout.ground_actions``), off by default, in the spirit of the action-selection policies of
text-game and WebShop agents (WebShop's own imitation baseline picks among the clickable
elements): before the env steps, the action is compared with ``env.available_actions()``:

1. no admissible action is listed, or the action is admissible (case and outer whitespace
   ignored), or it fills a listed template such as ``search[<query>]``: the action is kept;
2. otherwise it is replaced by the listed concrete action with the highest
   ``rapidfuzz.fuzz.ratio`` (first one on ties); a state that lists only templates keeps it.

The trajectory records the executed action; the model's own text of each replaced action is kept
in ``trajectory.meta["grounded"]`` as ``[step_index, raw_action]`` pairs, so reports can count
how often grounding acted.

Further rules (``rollout.ground_by``, ``rollout.avoid_repeats``,
``rollout.fill_without_thought``; together a ``Grounding``):

- ``likelihood``: in rule 2 the replacement is the concrete action the *model* finds most
  likely after its own thought (``policy.rank_actions``: the log-probability of the turn
  ``Thought: <its thought>\nAction: <candidate>``), i.e. constrained decoding over the
  admissible actions instead of string similarity.  A policy that cannot rank (an API model)
  falls back to ``fuzzy``.  A state that lists only templates (WebShop's search page) and an
  action that fills none of them: the model's turn is continued from ``Action: <verb>[``
  (``policy.continue_turns``), so the action fills the first template.
  ``fill_without_thought``: that continuation starts from ``Action: <verb>[`` alone, without
  the model's thought, which argued for an action the state does not admit (measured on
  WebShop: after ``#1 looks closest to what I need.`` on the search page a SmolLM2 agent
  continued ``search[#1]`` and lost the episode, docs/rollout.md).
- ``avoid_repeats``: an action the episode already took from the same observation (a click
  that changed nothing, or the inspect-and-go-back loop ``click[X]``, ``< prev``,
  ``click[X]``) counts as inadmissible there, and the candidates exclude such repeats.  The
  env is deterministic, so a repeat can only loop.  With ``likelihood`` the alternatives to a
  repeat are ranked without the model's thought (``Action: <candidate>``): that thought argues
  for the repeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from rapidfuzz import fuzz, process

from eef.react import parse_turn, render_turn

if TYPE_CHECKING:
    from eef.policy import Sampling
    from eef.trajectory import Trajectory

_TEMPLATE = re.compile(r"^(\w+)\[<[^<>\]]*>\]$")

RULES = ("fuzzy", "likelihood")


@dataclass(frozen=True)
class Grounding:
    """The grounding rules of the module docstring (``rollout.ground_by`` and its companions
    in configs)."""

    by: str = "fuzzy"
    avoid_repeats: bool = False
    fill_without_thought: bool = False

    def __post_init__(self) -> None:
        if self.by not in RULES:
            raise ValueError(f"grounding rule {self.by!r}: expected 'fuzzy' or 'likelihood'")

    @staticmethod
    def of(ground: "bool | Grounding") -> "Grounding | None":
        """The rules of a ``ground`` argument: a ``Grounding`` as given, True the defaults,
        False None (no grounding)."""
        if isinstance(ground, Grounding):
            return ground
        return Grounding() if ground else None

    @property
    def needs_policy(self) -> bool:
        """Whether grounding needs the policy and the trajectory (else the env's own
        ``step_grounded`` does it: plain fuzzy matching)."""
        return self.by != "fuzzy" or self.avoid_repeats


def _norm(a: str) -> str:
    return " ".join(a.strip().lower().split())


def _split(action: str, available: Sequence[str]) -> tuple[bool, list[str]]:
    """(whether ``action`` fills one of the listed templates, the listed concrete actions)."""
    a = _norm(action)
    fills, concrete = False, []
    for cand in available:
        m = _TEMPLATE.match(cand.strip())
        if m:
            fills = fills or (a.startswith(m.group(1).lower() + "[") and a.endswith("]")
                              and len(a) > len(m.group(1)) + 2)
        else:
            concrete.append(cand)
    return fills, concrete


def ground_action(action: str, available: Sequence[str]) -> str:
    """The action to execute for the model's ``action`` given the state's admissible actions
    (the rule of the module docstring)."""
    cands = choices(None, action, available)
    return _closest(action, cands) if cands else action


def _closest(action: str, cands: Sequence[str]) -> str:
    """The candidate with the highest ``fuzz.ratio`` to ``action`` (first one on ties)."""
    best = process.extractOne(_norm(action), [_norm(c) for c in cands], scorer=fuzz.ratio)
    return cands[best[2]]


def repeated(traj: "Trajectory", action: str) -> bool:
    """Whether the episode already took ``action`` from an observation equal to its current
    one (case and outer whitespace of the action ignored)."""
    a, now = _norm(action), traj.observation
    prev = traj.initial_observation
    for s in traj.steps:
        if prev == now and _norm(s.action) == a:
            return True
        prev = s.observation
    return False


def choices(traj: "Trajectory | None", action: str, available: Sequence[str],
            avoid_repeats: bool = False) -> list[str] | None:
    """The concrete actions to choose among instead of ``action``, or None when ``action``
    is kept (rule 1; with ``avoid_repeats``, a repeated action is never kept and repeats are
    not offered; it needs ``traj``).  An empty list: nothing to choose from, ``action`` is
    kept."""
    if not available:
        return None
    fills, concrete = _split(action, available)
    if avoid_repeats:
        concrete = [c for c in concrete if not repeated(traj, c)]
        if repeated(traj, action):
            return concrete
    if fills or _norm(action) in {_norm(c) for c in concrete} or not concrete:
        return None
    return concrete


def template_to_fill(action: str, available: Sequence[str]) -> str | None:
    """The verb of the template ``action`` must fill instead (``search`` of
    ``search[<query>]``) when the state lists templates but no concrete action and ``action``
    fills none of them; else None."""
    fills, concrete = _split(action, available)
    if fills or concrete:
        return None
    for cand in available:
        m = _TEMPLATE.match(cand.strip())
        if m:
            return m.group(1)
    return None


def ground_batch(policy: Any, trajs: Sequence["Trajectory"], thoughts: Sequence[str],
                 actions: Sequence[str], available: Sequence[Sequence[str]],
                 rule: Grounding = Grounding(), sampling: "Sampling | None" = None,
                 seeds: Sequence[int] | None = None) -> list[str]:
    """The action to execute for each episode (the rules of the module docstring);
    ``available[i]``: the admissible actions of episode ``i``'s state.  ``rule.by``:
    ``likelihood`` needs ``policy.rank_actions`` (else fuzzy); ``seeds``: per episode, for a
    sampled template continuation."""
    out = list(actions)
    todo: list[tuple[int, list[str]]] = []
    fill: list[tuple[int, str]] = []
    for i, (t, a, av) in enumerate(zip(trajs, actions, available)):
        cands = choices(t, a, av, rule.avoid_repeats)
        if cands:
            todo.append((i, cands))
        elif rule.by == "likelihood" and av and (verb := template_to_fill(a, av)):
            fill.append((i, verb))
    cont = getattr(policy, "continue_turns", None)
    if fill and cont is not None:
        texts = cont([trajs[i] for i, _ in fill],
                     [render_turn("" if rule.fill_without_thought else thoughts[i], f"{verb}[")
                      for i, verb in fill], sampling,
                     [seeds[i] for i, _ in fill] if seeds is not None else None)
        for (i, _), text in zip(fill, texts):
            out[i] = parse_turn(text)[1]
    if not todo:
        return out
    rank = getattr(policy, "rank_actions", None) if rule.by == "likelihood" else None
    if rank is None:
        for i, cands in todo:
            out[i] = _closest(actions[i], cands)
        return out
    # a repeat's thought argues for the repeat: the alternatives are ranked on their own
    scores = rank([trajs[i] for i, _ in todo],
                  ["" if rule.avoid_repeats and repeated(trajs[i], actions[i]) else thoughts[i]
                   for i, _ in todo], [c for _, c in todo], sampling)
    for (i, cands), sc in zip(todo, scores):
        out[i] = cands[max(range(len(cands)), key=lambda j: sc[j])]
    return out


def note_grounding(traj: "Trajectory", raw: str, executed: str) -> str:
    """Record in ``traj.meta["grounded"]`` that the next step executes ``executed`` for the
    model's ``raw`` action (nothing when they are equal); returns ``executed``."""
    if executed != raw:
        traj.meta.setdefault("grounded", []).append([len(traj.steps), raw])
    return executed
