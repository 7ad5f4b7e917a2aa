"""The ScienceWorld curriculum of the tiny preset: tokenizer text and the pre-training corpus.

ScienceWorld's agent must name objects exactly as the simulator knows them (``focus on red
light bulb``, ``pick up dove egg``): the corpus teaches a from-scratch model to copy an object
name from a room listing into its action.

Only **train** variations are ever loaded for the corpora: ETO's train file, minus the 54
variations it shares with the dev file (``train_only_pairs``; no test variation is in it).  No
gold action, expert trajectory, score or goal outcome enters them.

* ``texts``: the tokenizer corpus: the env's action templates, task descriptions,
  ``look around`` listings of a few rooms, random-exploration observations and object names of
  ``TEXT_VARIATIONS_PER_TASK`` train variations per task type.
* ``corpus(cfg)``: the pre-training corpus, with ``PretrainConfig``'s fields mapped:

  ====================  =====================================================================
  ``explore_episodes``  random-exploration transcripts on train variations: a uniform sampler
                        over the env's templates (``focus on`` excluded: a random focus ends
                        the task with -100) and the objects of the current state (an
                        "Ambiguous request" is answered with one of its option numbers); at
                        most ``EXPLORE_STEPS`` steps; cut before any step that ends the
                        episode by success or failure (goal outcome), every reward 0; loss on
                        valid actions only (invalid ones stay in the context).
  ``short_drills``      the warm-up drills: 1-4 object
                        lines of a train room listing alone (no room header); the instruction
                        names 1-3 listed objects by a word each; the thought looks each up
                        (``The <word> is the <name>.``) and the action applies the
                        instruction's verb to the first, with the name exactly as listed.
                        Source ``task`` ``lookup_short``, ``short`` true.
  ``lookup_drills``     the same on a room listing with its header, cut to
                        ``min_hits``-``max_hits`` of its object lines (no door lines).
  ``pick_tasks``        episode-shaped copy tasks: the instruction names one object of a room
                        listing (by ``name_words`` words, more when needed to single it out),
                        the prompt is that instruction and the start room's ``look around``;
                        in half of them the object is in another room, reached by the
                        untrained steps ``teleport to <room>`` and ``look around``; the trained
                        action is ``focus on`` / ``pick up`` / ``open`` (closed things only)
                        ``<name>``, with a short thought in ``thought_share`` of them.
  ``seed``              seeds every draw (variations, objects, verbs, actions).
  ====================  =====================================================================

  ``relabel``, ``option_share`` do not apply (ScienceWorld has no identifiers and no options).

Object names.  A *listed* object of a room is a name of ``env.objects()`` (the names the
simulator's parser accepts) that occurs in the room's ``look around`` text as whole words,
lower case (``glass jar``; ``freezer`` in "a ultra low temperature freezer").  The agent, the
air, rooms and doors are never targets.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from eef.presets.base import Curriculum, DataDir, PretrainConfig, PretrainError
from eef.trajectory import Step, Trajectory

if TYPE_CHECKING:
    from eef.envs.sciworld import SciWorldEnv

#: train variations per task type whose text the tokenizer sees (24 x 10 loads, ~1 min)
TEXT_VARIATIONS_PER_TASK = 10
#: rooms visited (``teleport to``) per variation besides the start room
ROOMS_PER_VARIATION = 3
#: longest random-exploration transcript (steps); shorter than most ETO step limits so that a
#: transcript fits the pre-training context
EXPLORE_STEPS = 20
#: ScienceWorld's locations (the ``teleport to`` targets of the ``easy`` simplification)
LOCATIONS = ("art studio", "bathroom", "bedroom", "foundry", "greenhouse", "hallway",
             "kitchen", "living room", "outside", "workshop")
#: the env's action templates (``getPossibleActions`` of the simulator, ``OBJ`` -> ``{}``;
#: ``go``/``teleport`` take ``to``; ``reset task`` is blocked by eef).  ``connect`` and
#: ``disconnect`` exist on the electrical tasks only.
TEMPLATES = ("activate {}", "close {}", "connect {} to {}", "deactivate {}", "disconnect {}",
             "dunk {} in {}", "eat {}", "flush {}", "focus on {}", "go to {}", "inventory",
             "look around", "look at {}", "look in {}", "mix {}", "move {} to {}", "open {}",
             "pick up {}", "pour {} in {}", "put down {}", "read {}", "task", "teleport to {}",
             "use {} on {}", "wait", "wait1")
#: verbs of the copy tasks (``open`` only for things the listing says are closed)
VERBS = ("focus on", "pick up", "open")
#: names that are never copy targets
NOT_TARGETS = frozenset({"agent", "air", "inventory", "ground"})
#: goal-outcome wording; a step whose observation matches is cut with everything after it
OUTCOME = re.compile(r"\b(score|task (is )?(complete|completed|failed|over)|you (have )?"
                     r"(won|lost|completed the task)|game over)\b", re.IGNORECASE)
_NAMING = ("Your task is to {verb} the {w}.", "{Verb} the {w}.",
           "Find the {w} and {verb_it}.", "Your task is to find the {w}. First, {verb_it}.")
_THOUGHTS = ("The {w} is the {name}, so I {verb_it}.", "I {verb} the {name}.",
             "The {name} is what the task names.")
#: the verbs with a pronoun object
_VERB_IT = {"focus on": "focus on it", "pick up": "pick it up", "open": "open it"}
#: the simulator's answer to an action naming several matching objects (it then expects the
#: number of one of the listed options) and to input it cannot read in that state
AMBIGUOUS = "Ambiguous request"
UNKNOWN = "Unknown action"


# -- variations and room views -----------------------------------------------------------------
def train_only_pairs(env: "SciWorldEnv") -> list[tuple[str, int]]:
    """The protocol's train variations that are in no dev or test list (ETO's train file shares
    54 variations with its dev file), in file order."""
    sp = env.splits()
    held = set(sp["dev"]) | set(sp["test"])
    return [p for p in sp["train"] if p not in held]


def _spread(pairs: Sequence[tuple[str, int]], n: int, rng: random.Random
            ) -> list[tuple[str, int]]:
    """``n`` pairs drawn round-robin over task types (each type's variations shuffled), so a
    small draw covers every task type."""
    by_task: dict[str, list[tuple[str, int]]] = {}
    for p in pairs:
        by_task.setdefault(p[0], []).append(p)
    queues = []
    for t in sorted(by_task):
        q = list(by_task[t])
        rng.shuffle(q)
        queues.append(q)
    out: list[tuple[str, int]] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


@dataclass
class RoomView:
    """One room of a variation as ``look around`` shows it, with its listed object names."""

    task_id: str
    room: str
    look: str
    listed: list[str]
    #: the observation of ``teleport to <room>`` (empty for the start room)
    arrival: str = ""


@dataclass
class VariationVisit:
    """What one load of a variation showed: its description, first observation, rooms."""

    task_id: str
    description: str
    first_observation: str
    rooms: list[RoomView] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)


def room_name(look: str) -> str:
    """The room of a ``look around`` text (``This room is called the kitchen.``)."""
    m = re.search(r"is called the ([^.]+)\.", look)
    return m.group(1).strip() if m else ""


def listed_objects(look: str, objects: Iterable[str]) -> list[str]:
    """Names of ``objects`` that occur as whole words in the object lines of ``look`` (the
    part before ``You also see``), sorted."""
    body = look.split("You also see")[0].lower()
    return sorted({o for o in objects
                   if o and re.search(rf"(?<![a-z0-9]){re.escape(o.lower())}(?![a-z0-9])", body)})


def targets(view: RoomView) -> list[str]:
    """The listed names of ``view`` that a copy task may name (no agent, air, room or door)."""
    rooms = set(LOCATIONS) | {view.room}
    return [o for o in view.listed if o not in NOT_TARGETS and o not in rooms
            and "door" not in o.split()]


def visit(env: "SciWorldEnv", pair: tuple[str, int], rooms: int, rng: random.Random
          ) -> VariationVisit:
    """Load ``pair``, read the start room, then ``teleport to`` ``rooms`` other locations and
    read each (``look around`` and ``objects()``)."""
    tid = env.task_id(*pair)
    first = env.reset(tid)
    desc, _, look = first.partition("\n\n")
    objs = env.objects()
    v = VariationVisit(tid, desc, first, objects=sorted(objs))
    start = room_name(look)
    v.rooms.append(RoomView(tid, start, look, listed_objects(look, objs)))
    others = [r for r in LOCATIONS if r != start]
    for r in rng.sample(others, min(rooms, len(others))):
        arrive = env.step(f"teleport to {r}")
        if arrive.done:
            break
        if not arrive.info.get("valid", True) or not arrive.observation.startswith("You "):
            continue  # no such location in this world
        lk = env.step("look around")
        if lk.done:
            break
        objs = env.objects()
        v.objects = sorted(set(v.objects) | set(objs))
        v.rooms.append(RoomView(tid, room_name(lk.observation) or r, lk.observation,
                                listed_objects(lk.observation, objs), arrive.observation))
    return v


def _visits(env: "SciWorldEnv", pairs: Sequence[tuple[str, int]], rooms: int, seed: Any,
            progress: bool, label: str) -> Iterator[VariationVisit]:
    from eef.progress import tqdm
    for pair in tqdm(pairs, desc=label, unit="variation", disable=not progress, leave=False):
        yield visit(env, pair, rooms, random.Random(f"visit/{seed}/{pair[0]}/{pair[1]}"))


# -- random exploration --------------------------------------------------------------------------
def random_action(objects: Sequence[str], rng: random.Random, electrical: bool = False) -> str:
    """A uniform draw: a template (never ``focus on``), then its objects among ``objects``."""
    skip = {"focus on {}"} | (set() if electrical else {"connect {} to {}", "disconnect {}"})
    templates = [t for t in TEMPLATES if t not in skip]
    objs = sorted(objects)
    while True:
        t = rng.choice(templates)
        k = t.count("{}")
        if k == 0:
            return t
        if len(objs) >= k:
            return t.format(*rng.sample(objs, k))


def _outcome_step(r: Any) -> bool:
    """True when a step shows the goal outcome: it ended the episode by success or failure
    (step-limit truncation is not an outcome), or its text speaks of one."""
    info = r.info or {}
    return bool(info.get("success") or info.get("failed") or OUTCOME.search(r.observation))


def explore_transcripts(env: "SciWorldEnv", n: int, seed: int = 0, *,
                        pairs: Sequence[tuple[str, int]] | None = None,
                        max_steps: int = EXPLORE_STEPS, thought_share: float = 0.5
                        ) -> Iterator[Trajectory]:
    """``n`` random-exploration episodes on train variations (see the module doc).  The
    prompt is the env's first observation (task description and start-room listing)."""
    from eef.experts.sciworld import thought_for
    rng = random.Random(f"sciworld/explore/{seed}")
    pool = sorted(pairs if pairs is not None else train_only_pairs(env))
    if not pool and n:
        raise PretrainError("no train variations to explore")
    for i in range(n):
        pair = rng.choice(pool)
        tid = env.task_id(*pair)
        first = env.reset(tid)
        desc = first.partition("\n\n")[0]
        electrical = "power-component" in pair[0] or "conductivity" in pair[0]
        steps: list[Step] = []
        for _ in range(min(max_steps, env.max_steps)):
            last = steps[-1].observation if steps else ""
            options = re.findall(r"^(\d+):", last, re.MULTILINE)
            if last.startswith(AMBIGUOUS) and options:  # answer the question it asks
                action = rng.choice(options)
            else:
                action = random_action(env.objects(), rng, electrical)
            r = env.step(action)
            if _outcome_step(r):
                break
            valid = bool(r.info.get("valid", True)) and not r.observation.startswith(UNKNOWN)
            think = thought_for(action) if rng.random() < thought_share else ""
            steps.append(Step(action, r.observation, think, 0.0, train=valid, valid=valid))
            if r.done:
                break
        if not steps:  # the first action ended the task: nothing to show
            continue
        yield Trajectory(f"pretrain/explore/{i}", "sciworld", desc, first, steps,
                         source={"kind": "pretrain", "task": "explore", "variation": tid,
                                 "goal_split": "train"})


# -- copy drills and copy tasks -----------------------------------------------------------------
def naming_words(target: str, others: Sequence[str], k: int, rng: random.Random
                ) -> list[str] | None:
    """Up to ``k`` words of ``target`` (name order kept, more added when needed) that no other
    listed name contains all of; None when even the whole name is inside another name."""
    words = list(dict.fromkeys(target.lower().split()))
    sets = [set(o.lower().split()) for o in others if o != target]
    chosen = set(rng.sample(words, min(k, len(words))))
    for w in sorted(words, key=lambda w: (sum(w in s for s in sets), words.index(w))):
        if not any(chosen <= s for s in sets):
            break
        chosen.add(w)
    if any(chosen <= s for s in sets):
        return None
    return [w for w in words if w in chosen]


def verb_for(name: str, look: str, rng: random.Random) -> str:
    """``open`` for a thing the listing says is closed (sometimes), else focus on / pick up."""
    closed = re.search(rf"{re.escape(name)}[^\n]*?\bis closed", look.lower()) is not None
    if closed and rng.random() < 0.5:
        return "open"
    return rng.choice(VERBS[:2])


def instruction_for(verb: str, words: str, rng: random.Random) -> str:
    return rng.choice(_NAMING).format(verb=verb, Verb=verb[0].upper() + verb[1:], w=words,
                                      verb_it=_VERB_IT[verb])


def _cut_listing(look: str, keep: Sequence[str], lo: int, hi: int, rng: random.Random) -> str:
    """The header and a random ``lo``-``hi`` of the object lines of ``look`` (order kept),
    always including the lines that mention a name of ``keep``; no door lines."""
    lines = look.split("You also see")[0].rstrip().split("\n")
    head, items = lines[0], [x for x in lines[1:] if x.startswith("\t")]
    must = [i for i, x in enumerate(items) if any(k in x.lower() for k in keep)]
    rest = [i for i in range(len(items)) if i not in must]
    n = max(len(must), min(len(items), rng.randint(lo, hi)))
    chosen = sorted(must + rng.sample(rest, max(0, n - len(must))))
    return "\n".join([head] + [items[i] for i in chosen])


def lookup_drills(views: Sequence[RoomView], n: int, seed: int = 0, *, min_hits: int = 2,
                  max_hits: int = 10, short: bool = False) -> Iterator[Trajectory]:
    """``n`` dense copy drills on train room listings (see the module doc).  ``short`` drills
    show the kept object lines alone (no room header): a few dozen tokens."""
    rng = random.Random(f"sciworld/lookup{'_short' if short else ''}/{seed}")
    usable = [v for v in views if targets(v)]
    if n and not usable:
        raise PretrainError("no room listing with a nameable object")
    made = tries = 0
    while made < n:
        tries += 1
        if tries > 20 * n + 100:
            raise PretrainError(f"could not build {n} lookup drills ({made} after {tries})")
        v = rng.choice(usable)
        cands = targets(v)
        looked = rng.sample(cands, rng.randint(1, min(3, len(cands))))
        named = [(o, naming_words(o, v.listed, 1, rng)) for o in looked]
        if any(w is None for _, w in named):
            continue
        page = _cut_listing(v.look, looked, min_hits, max_hits, rng)
        if short:
            page = page.split("\n", 1)[1] if "\n" in page else ""
        listed = listed_objects(page, v.listed)
        if not all(o in listed for o in looked):
            continue
        verb = verb_for(looked[0], v.look, rng)
        words = [" ".join(w) for _, w in named]  # type: ignore[arg-type]
        text = instruction_for(verb, ", then the ".join(words), rng)
        thought = " ".join(f"The {w} is the {o}." for w, (o, _) in zip(words, named))
        kind = "lookup_short" if short else "lookup"
        yield Trajectory(f"pretrain/{kind}/{made}", "sciworld", text,
                         page if short else f"{text}\n\n{page}",
                         [Step(f"{verb} {looked[0]}", "", thought)],
                         source={"kind": "pretrain", "task": kind, "short": short,
                                 "variation": v.task_id, "room": v.room,
                                 "lookups": len(looked), "target": looked[0], "listed": listed})
        made += 1


def pick_tasks(visits: Sequence[VariationVisit], n: int, seed: int = 0, *, name_words: int = 3,
               thought_share: float = 0.5) -> Iterator[Trajectory]:
    """``n`` episode-shaped copy tasks on train variations (see the module doc)."""
    rng = random.Random(f"sciworld/pick/{seed}")
    usable = [v for v in visits if any(targets(r) for r in v.rooms)]
    if n and not usable:
        raise PretrainError("no variation with a nameable object")
    made = tries = 0
    while made < n:
        tries += 1
        if tries > 20 * n + 100:
            raise PretrainError(f"could not build {n} copy tasks ({made} after {tries})")
        v = rng.choice(usable)
        start = v.rooms[0]
        rooms = [r for r in v.rooms if targets(r)]
        away = [r for r in rooms if r is not start]
        room = rng.choice(away) if away and (rng.random() < 0.5 or start not in rooms) \
            else start
        target = rng.choice(targets(room))
        words = naming_words(target, room.listed, rng.randint(1, name_words), rng)
        if words is None:
            continue
        verb = verb_for(target, room.look, rng)
        text = instruction_for(verb, " ".join(words), rng)
        steps = []
        if room is not start:
            steps = [Step(f"teleport to {room.room}", room.arrival, train=False),
                     Step("look around", room.look, train=False)]
        think = rng.choice(_THOUGHTS).format(w=" ".join(words), name=target, verb=verb,
                                             verb_it=_VERB_IT[verb]) \
            if rng.random() < thought_share else ""
        steps.append(Step(f"{verb} {target}", "", think))
        yield Trajectory(f"pretrain/pick/{made}", "sciworld", text, f"{text}\n\n{start.look}",
                         steps, source={"kind": "pretrain", "task": "pick",
                                        "variation": v.task_id, "room": room.room,
                                        "target": target, "listed": room.listed})
        made += 1


# -- the corpora ---------------------------------------------------------------------------------
def _open_env(data_dir: DataDir) -> "SciWorldEnv":
    from eef.envs.sciworld import SciWorldEnv
    return SciWorldEnv(str(data_dir) if data_dir else None)


def texts(data_dir: DataDir = None, *,
                   env: "SciWorldEnv | None" = None,
                   variations_per_task: int = TEXT_VARIATIONS_PER_TASK, seed: int = 0,
                   progress: bool = True) -> Iterator[str]:
    """The tokenizer corpus of ScienceWorld: the action vocabulary and the text of
    ``variations_per_task`` train variations of each task type (task description, the start
    room and ``ROOMS_PER_VARIATION`` other rooms as ``look around`` shows them, the
    observations of a few random actions, the object names and actions on them).  No dev or
    test variation is loaded.  ``env`` reuses a running env (its JVM); otherwise one is
    started and closed."""
    own = env is None
    env = env or _open_env(data_dir)
    try:
        # the interface words, repeated so that each becomes a token of its own
        vocab = " ".join(t.replace("{}", "").strip() for t in TEMPLATES)
        for _ in range(200):
            yield (f"Task: Thought: Action: Observation: {vocab} to in on "
                   "This room is called the In it, you see: You also see: A door to the "
                   "(that is open) a substance called which is turned off containing nothing "
                   "In your inventory, you see: No known action matches that input. "
                   "You move to the You teleport to the You focus on the")
        pairs = train_only_pairs(env)
        n = variations_per_task * len({t for t, _ in pairs})
        picked = _spread(pairs, n, random.Random(f"sciworld/texts/{seed}"))
        rng = random.Random(f"sciworld/texts/actions/{seed}")
        for v in _visits(env, picked, ROOMS_PER_VARIATION, seed, progress,
                         "sciworld tokenizer text"):
            yield v.description
            for r in v.rooms:
                yield r.look
                if r.arrival:
                    yield r.arrival
                yield " ".join(f"{rng.choice(VERBS)} {o}" for o in r.listed)
            yield " ".join(v.objects)
            for _ in range(5):  # a few random actions in the last room
                a = random_action(env.objects(), rng, "power" in v.task_id
                                  or "conductivity" in v.task_id)
                r = env.step(a)
                if _outcome_step(r):
                    break
                yield f"{a}\n{r.observation}"
                if r.done:
                    break
    finally:
        if own:
            env.close()


def identifiers(data_dir: DataDir = None) -> list[str]:
    """No identifier tokens for ScienceWorld: object names are ordinary English words
    (``red light bulb``, ``dove egg``) that BPE learns as word tokens from the listings, and a
    test variation's objects (e.g. an animal seen only in test) must still be spelt from
    sub-word pieces; adding names as tokens would need the test variations' text."""
    return []


def corpus(cfg: PretrainConfig, data_dir: DataDir = None, *,
                    env: "SciWorldEnv | None" = None, progress: bool = True
                    ) -> Iterator[Trajectory]:
    """The ScienceWorld pre-training corpus of ``cfg``: ``lookup_drills`` copy drills,
    ``explore_episodes`` exploration transcripts and ``pick_tasks`` copy tasks, all on train
    variations (see the module doc for the mapping of the options).  Deterministic given
    ``cfg.seed`` up to the simulator's own non-determinism (temperatures and the like in
    observations).  ``env`` reuses a running env; ``progress`` shows a bar while the rooms
    of the drawn variations are read (the first minute or so of a default build)."""
    own = env is None
    env = env or _open_env(data_dir)
    try:
        pairs = train_only_pairs(env)
        short = cfg.short_drills
        # each visit gives ~4 rooms; ~8 drills or tasks per room keep the text varied
        need = short + cfg.lookup_drills + cfg.pick_tasks
        n_visits = min(len(pairs), max(24, math.ceil(need / 32))) if need else 0
        visits = list(_visits(env, _spread(pairs, n_visits,
                                           random.Random(f"sciworld/corpus/{cfg.seed}")),
                              ROOMS_PER_VARIATION, cfg.seed, progress, "sciworld rooms"))
        views = [r for v in visits for r in v.rooms]
        yield from lookup_drills(views, short, cfg.seed, min_hits=1, max_hits=4, short=True)
        yield from lookup_drills(views, cfg.lookup_drills, cfg.seed + 1, min_hits=cfg.min_hits,
                                 max_hits=cfg.max_hits)
        yield from explore_transcripts(env, cfg.explore_episodes, cfg.seed, pairs=pairs,
                                       thought_share=cfg.thought_share)
        yield from pick_tasks(visits, cfg.pick_tasks, cfg.seed, name_words=cfg.name_words,
                              thought_share=cfg.thought_share)
    finally:
        if own:
            env.close()


def versions() -> dict[str, str]:
    """The simulator's version: its text differs between versions."""
    import scienceworld
    return {"simulator": getattr(scienceworld, "__version__", "unknown")}


CURRICULUM = Curriculum(
    env="sciworld", texts=texts, identifiers=identifiers, corpus=corpus, versions=versions,
    texts_what="sciworld action templates and text of train variations only (task "
               "descriptions, rooms, object names, random actions; no dev/test variation, no "
               "expert)",
    data_files=(("train_indices.json",), ("dev_indices.json",), ("test_indices.json",),
                ("max_steps.json",)))
