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
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

from rapidfuzz import fuzz, process

if TYPE_CHECKING:
    from eef.trajectory import Trajectory

_TEMPLATE = re.compile(r"^(\w+)\[<[^<>\]]*>\]$")


def _norm(a: str) -> str:
    return " ".join(a.strip().lower().split())


def ground_action(action: str, available: Sequence[str]) -> str:
    """The action to execute for the model's ``action`` given the state's admissible actions
    (the rule of the module docstring)."""
    if not available:
        return action
    a = _norm(action)
    concrete: list[str] = []
    for cand in available:
        m = _TEMPLATE.match(cand.strip())
        if m:
            if a.startswith(m.group(1).lower() + "[") and a.endswith("]") and len(a) > len(m.group(1)) + 2:
                return action
        else:
            concrete.append(cand)
    norms = [_norm(c) for c in concrete]
    if a in norms or not concrete:
        return action
    best = process.extractOne(a, norms, scorer=fuzz.ratio)
    return concrete[best[2]]


def note_grounding(traj: "Trajectory", raw: str, executed: str) -> str:
    """Record in ``traj.meta["grounded"]`` that the next step executes ``executed`` for the
    model's ``raw`` action (nothing when they are equal); returns ``executed``."""
    if executed != raw:
        traj.meta.setdefault("grounded", []).append([len(traj.steps), raw])
    return executed
