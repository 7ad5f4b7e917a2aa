"""The object-copy probe: held-out ScienceWorld room listings, an instruction naming one listed
object, and the share of a model's greedy actions that name a listed object exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from eef.experts.sciworld import action_objects
from eef.presets.sciworld import (instruction_for, naming_words, targets, train_only_pairs,
                                  verb_for, visit)
from eef.react import parse_turn
from eef.trajectory import Step, Trajectory
from probes import ProbeError, greedy_turns

if TYPE_CHECKING:
    from eef.envs.sciworld import SciWorldEnv


@dataclass
class ObjectPage:
    """A held-out room listing, an instruction naming one listed object, and what a model
    should answer there."""

    context: Trajectory
    listed: list[str]
    target: str
    verb: str

    @property
    def answer(self) -> str:
        return f"{self.verb} {self.target}"


def sciworld_object_pages(env: "SciWorldEnv", split: str = "test", limit: int | None = None,
                          seed: int = 0, rooms: int = 0) -> list[ObjectPage]:
    """Per variation of ``split`` (first ``limit``): the start room's ``look around`` and an
    instruction naming one of its listed objects (drawn with ``seed``), in the prompt shape of
    the copy tasks.  With ``rooms``, also that many other rooms (drawn), each a page whose
    context goes on with ``teleport to <room>`` and ``look around``.  Rooms that list no
    nameable object are skipped."""
    if split not in ("train", "dev", "test"):
        raise ProbeError(f"split must be train | dev | test, not {split!r}")
    pairs = train_only_pairs(env) if split == "train" else list(env.splits()[split])
    out = []
    for pair in pairs[:limit]:
        rng = random.Random(f"sciworld/pages/{seed}/{pair[0]}/{pair[1]}")
        v = visit(env, pair, rooms, rng)
        for room in v.rooms:
            cands = [o for o in targets(room)
                     if naming_words(o, room.listed, 1, rng) is not None]
            if not cands:
                continue
            target = rng.choice(cands)
            words = naming_words(target, room.listed, 2, rng)
            verb = verb_for(target, room.look, rng)
            text = instruction_for(verb, " ".join(words or [target]), rng)
            ctx = Trajectory(v.task_id, "sciworld", text, f"{text}\n\n{v.rooms[0].look}",
                             source={"kind": "probe", "split": split, "room": room.room})
            if room is not v.rooms[0]:
                ctx.steps = [Step(f"teleport to {room.room}", room.arrival, train=False),
                             Step("look around", room.look, train=False)]
            out.append(ObjectPage(ctx, room.listed, target, verb))
    return out


def named_objects(action: str) -> list[str]:
    """The object arguments of an action (``move a to b`` -> ``[a, b]``), else ``[]``."""
    return action_objects(action.strip())


def corpus_names(trajs: Iterable[Trajectory]) -> set[str]:
    """Every object name listed in the copy drills and tasks of a corpus (``seen`` of
    ``evaluate_object_copies``)."""
    return {n for t in trajs for n in t.source.extra.get("listed", [])}


def evaluate_object_copies(policy: Any, pages: Sequence[ObjectPage], max_new_tokens: int = 48,
                           seen: Iterable[str] | None = None) -> dict[str, Any]:
    """Greedy turns of ``policy`` (a Policy or an HF model directory) on ``pages``.

    ``copy_rate``: share of pages whose action names objects and every one of them is a name
    listed on that page, exactly (same case and words).  ``target_rate``: share whose action
    names the instruction's object (any verb); ``exact_rate``: share whose action is exactly
    ``<verb> <target>``.  With ``seen`` (the object names of the training text, e.g.
    ``corpus_names(corpus)``), ``unseen_pages`` / ``unseen_target_rate`` restrict the target
    rate to the pages whose target name was never seen: those can only be copied."""
    outs = greedy_turns(policy, [p.context for p in pages], max_new_tokens)
    actions = [parse_turn(o)[1] for o in outs]
    objs = [named_objects(a) for a in actions]
    n = len(pages)
    copied = [bool(o) and all(x in p.listed for x in o) for o, p in zip(objs, pages)]
    hit = [p.target in o for o, p in zip(objs, pages)]
    out: dict[str, Any] = {
        "pages": n, "copy_rate": sum(copied) / n, "target_rate": sum(hit) / n,
        "exact_rate": sum(a == p.answer for a, p in zip(actions, pages)) / n}
    if seen is not None:
        known = set(seen)
        new = [h for h, p in zip(hit, pages) if p.target not in known]
        out["unseen_pages"] = len(new)
        out["unseen_target_rate"] = sum(new) / len(new) if new else None
    out["examples"] = [{"task": p.context.task_id, "output": o, "answer": p.answer}
                       for o, p in list(zip(outs, pages))[:5]]
    return out

