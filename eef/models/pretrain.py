"""Self-supervised pre-training of the tiny/small presets: teach a from-scratch model to read a
page and copy an identifier from it before any agent training.

Why.  With WebShop's product-level split the agent must *copy* an ASIN it has never seen from
the results page into ``click[ASIN]``.  A 4.2M-parameter model trained from scratch on oracle
picks memorised train ASINs and reached 0% on test products (``tiny-model-probe.md`` in the
project notes); a pretrained LLM copies for free.  ``build_preset`` gives the preset that
ability with environment text alone.

What the model sees (``eef_preset.json`` of a build records the counts).  Every identifier
is one token of the preset tokenizer (``eef.models.preset``), so copying an ASIN is copying one
token.  The drills and relabelled sequences use the catalogue's ASINs as arbitrary labels:
drawn at random from ALL of them and attached to train products' titles.  A test product's
title, goal or page is never a drill, and a test product is never a target, but its ASIN
token does occur as a label: when labels were drawn from the train products' ASINs only, the
model learnt never to output any other identifier token (all 43 of its copies on the 116 test
pages were train ASINs although 42% of the listed ASINs were test ones; pick accuracy 0%), the
tied output embedding of a token that is never a target being pushed down by every softmax.

* ``lookup_short`` (the warm-up, ``warmup_steps`` of ``warmup_batch_size``): 1-4 hits of 1-3
  title words each, with identifiers drawn at random from the catalogue's ASINs; the
  instruction names hits by one word each, the thought looks them up (``<word> is <id>.``)
  and the action clicks the first.  Copying formed on these after a plateau of ~150-250 steps
  of 64 and did not form within the same budget on page-length sequences (docs/tiny-preset.md).
* ``lookup``: the same on page-shaped drills (2-6 hits of 3-8 words, page header, search step).
* ``explore``: random-exploration transcripts: the ``expert:random`` policy on **train** goals
  (uniform clicks, searches of 3 random instruction words), cut before the purchase, so no
  done page and no score (goal-outcome information) is ever shown.  Loss on every valid action.
* ``search`` (``search_drills``, off by default): a **train** goal's first page, then the
  trained action ``search[<content words of the instruction's product phrase>]``: the first
  turn of an episode, which SFT on a few expert successes otherwise unlearns
  (docs/tiny-preset.md, "The agent after SFT").
* ``copy`` (``copy_drills``, off by default): ``Find me <words>`` with 2-14 random words of
  train products' titles (or a span of one title), then ``search[find me <the same words>]``:
  the copying of free text that an instruction-to-search turn needs.  They form a phase of
  their own (short sequences, batches of ``warmup_batch_size``, ``copy_lr``) on top of the
  build without them, which is taken from the cache.
* ``pick``: copy tasks built from the catalogue.  A results page from a search with a few title
  words of a random train product; the "instruction" names one listed **train** product by a
  few words of its title (words that single it out on that page); the trained action is
  ``click[<its ASIN>]`` (with a short thought naming the ASIN in ``thought_share`` of them).
  Test products appear only as distractors.  Optionally (``option_share``) the item page
  follows and the named option values are clicked: ``click[<value>]``.
* ``relabel``: the share of transcripts and copy tasks whose ASINs are all replaced (the same
  way in pages and actions) by other catalogue ASINs drawn at random, so an identifier can
  only be produced by copying it from the page, never by recalling it.

No expert, no goal instruction of a test product, no reward and no goal-outcome enters the
corpus; the trained actions are random clicks or the naming tasks' answers.  Training uses
``eef.models.train.train_sft`` (loss on action tokens only, resumable checkpoints).

Cache.  ``build_preset("tiny", "webshop")`` builds once per machine under
``<cache dir>/presets/<preset>-<env>-<key>``, the key hashing the preset, the env, the
checksums of the data files, every option and ``CODE_VERSION``.  The build runs in
``<dir>.tmp`` (corpus, initial weights, SFT checkpoints: a killed build resumes there) and is
renamed into place when done.  The warm-up phase is also kept under
``<cache dir>/presets/warmup/`` (keyed by its initial weights, corpus and options), so builds
that differ only in their main phase share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from eef.models.preset import PresetError, get_preset, init_preset
from eef.trajectory import Step, Trajectory, iter_jsonl, write_jsonl

if TYPE_CHECKING:
    from eef.envs.webshop import WebShopEnv

#: bump when the corpus or the training recipe changes: cached presets are rebuilt
CODE_VERSION = "4"

#: the file a finished build writes last (its presence marks a complete preset directory)
INFO_FILE = "eef_preset.json"


class PretrainError(PresetError):
    """Bad pre-training options, an env without a pre-training corpus, or an unusable build."""


@dataclass
class PretrainConfig:
    """Options of a preset build (``build_preset(..., **options)``); all enter the cache key."""

    short_drills: int = field(default=25600, metadata={
        "help": "short lookup drills (the warm-up corpus): 1-4 hits of 1-3 title words with "
                "random train identifiers, no page header; the thought looks the named hits up"})
    warmup_steps: int = field(default=400, metadata={
        "help": "optimizer steps on the short drills alone (constant learning rate) before "
                "the whole corpus (0: none); copying formed after ~150-250 steps of 64"})
    warmup_batch_size: int = field(default=64, metadata={
        "help": "sequences per warm-up step"})
    short_replay: int = field(default=1000, metadata={
        "help": "short drills that also enter the main phase (the rest are warm-up only)"})
    lookup_drills: int = field(default=1500, metadata={
        "help": "page-shaped lookup drills in the main phase: 2-6 hits of 3-8 title words, "
                "page header and search step"})
    explore_episodes: int = field(default=100, metadata={
        "help": "random-exploration episodes on train goals (purchase step removed)"})
    search_drills: int = field(default=0, metadata={
        "help": "search drills (WebShop): a train goal's first page, then the trained action "
                "search[<content words of the goal's product phrase>] (0: none)"})
    copy_drills: int = field(default=0, metadata={
        "help": "span-copy drills (WebShop): a search page whose instruction is 'Find me "
                "<2-14 words>' (random train-title words or a span of a train title), then "
                "the trained action search[find me <the same words>]; trained in a phase of "
                "their own on top of the build without them (0: none).  The phase wears away "
                "identifier copying: use it with train.id_aliases"})
    copy_lr: float = field(default=1e-3, metadata={
        "help": "learning rate of the copy-drill phase (constant; batches of "
                "warmup_batch_size)"})
    pick_tasks: int = field(default=1500, metadata={
        "help": "copy tasks: a results page, then click[ASIN] of the product named by a few of "
                "its title words"})
    option_share: float = field(default=0.25, metadata={
        "help": "share of copy tasks continued on the item page with click[<named option "
                "value>]"})
    thought_share: float = field(default=0.5, metadata={
        "help": "share of copy-task turns with a short thought naming what is clicked"})
    relabel: float = field(default=1.0, metadata={
        "help": "share of transcripts / copy tasks whose ASINs are replaced by other catalogue "
                "ASINs drawn at random (copying cannot be replaced by recall)"})
    min_hits: int = field(default=2, metadata={
        "help": "fewest hits of a copy task's results page (pages are cut to a random number "
                "of hits in [min_hits, max_hits]: shorter sequences, more steps)"})
    max_hits: int = field(default=10, metadata={
        "help": "most hits of a copy task's results page"})
    name_words: int = field(default=3, metadata={
        "help": "title words naming the target (more are added until they single it out)"})
    steps: int = field(default=0, metadata={
        "help": "optimizer steps (0: one pass over the corpus)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per main-phase step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW, cosine)"})
    max_tokens: int = field(default=1536, metadata={"help": "context budget per example"})
    seed: int = field(default=0, metadata={"help": "seed of the corpus, init and data order"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every N steps (resume)"})

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "PretrainConfig":
        known = {f.name: f for f in fields(cls)}
        bad = sorted(set(options) - set(known))
        if bad:
            raise PretrainError(f"unknown preset option(s) {', '.join(bad)}; known: "
                                f"{', '.join(known)}")
        cfg = cls(**options)
        for name in ("option_share", "thought_share", "relabel"):
            v = getattr(cfg, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise PretrainError(f"preset option {name} must be in [0, 1], got {v!r}")
        for name in ("short_drills", "short_replay", "lookup_drills", "warmup_steps",
                     "explore_episodes", "search_drills", "copy_drills", "pick_tasks",
                     "steps"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 0:
                raise PretrainError(f"preset option {name} must be an int >= 0")
        if min(cfg.short_replay, cfg.short_drills) + cfg.lookup_drills + cfg.explore_episodes \
                + cfg.search_drills + cfg.pick_tasks == 0:
            raise PretrainError("empty main-phase corpus: short_replay, lookup_drills, "
                                "explore_episodes, search_drills and pick_tasks are all 0")
        if not isinstance(cfg.copy_lr, (int, float)) or not cfg.copy_lr > 0:
            raise PretrainError(f"preset option copy_lr must be > 0, got {cfg.copy_lr!r}")
        if cfg.warmup_steps and not cfg.short_drills:
            raise PretrainError("warmup_steps > 0 needs short_drills > 0 (the warm-up trains "
                                "on them)")
        if not 1 <= cfg.min_hits <= cfg.max_hits <= 10 or cfg.name_words < 1 \
                or cfg.batch_size < 1 or cfg.warmup_batch_size < 1:
            raise PretrainError("preset options need 1 <= min_hits <= max_hits <= 10, "
                                "name_words >= 1, batch_size >= 1")
        return cfg


# -- WebShop corpus ----------------------------------------------------------------------------
_SEP = " [SEP] "
_WORD = re.compile(r"[a-z0-9]+")
_STOP = set("""a an and are as at be by for from in into is it of on or the to with x
pack count size oz inch inches""".split())
_NAMING = ("{w}", "find {w}", "i want {w}", "i am looking for {w}", "i need {w}")
_PICK_THOUGHTS = ("{a} matches the description.", "I open {a}.", "{a} is the one named.")


def _page_parts(obs: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """A results page split into its header pieces and its (ASIN, title, price) hits."""
    from eef.experts.webshop import parse_page
    parts = obs.split(_SEP)
    info = parse_page(obs)
    if info["kind"] != "results":
        raise PretrainError(f"not a results page: {obs[:80]!r}")
    n_head = len(parts) - 3 * len(info["hits"])
    return parts[:n_head], info["hits"]


def _join_page(head: list[str], hits: Sequence[tuple[str, str, str]]) -> str:
    return _SEP.join([*head, *(x for h in hits for x in h)])


class _Relabel:
    """Consistent replacement of the catalogue's ASINs by other identifiers drawn from
    ``pool`` (the catalogue's ASINs used as arbitrary labels; each is one token of the preset
    tokenizer)."""

    def __init__(self, asins: Sequence[str], rng: random.Random,
                 pool: Sequence[str] | None = None):
        self.rng = rng
        self.real = set(asins)
        self.pool = sorted(pool if pool is not None else asins)
        self.map: dict[str, str] = {}
        self.pattern = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{10}(?![A-Za-z0-9])")

    def fresh(self) -> str:
        used = set(self.map.values())
        if len(used) >= len(self.pool):
            raise PretrainError("identifier pool exhausted")
        while True:
            a = self.rng.choice(self.pool)
            if a not in used:
                return a

    def __call__(self, text: str) -> str:
        def sub(m: re.Match) -> str:
            key = m.group(0).upper()
            if key not in self.real:
                return m.group(0)
            if key not in self.map:
                self.map[key] = self.fresh()
            new = self.map[key]
            return new if m.group(0).isupper() or m.group(0).isdigit() else new.lower()
        return self.pattern.sub(sub, text)

    def trajectory(self, t: Trajectory) -> Trajectory:
        t.initial_observation = self(t.initial_observation)
        t.instruction = self(t.instruction)
        for s in t.steps:
            s.action, s.observation = self(s.action), self(s.observation)
            s.thought = self(s.thought)
        return t


def strip_outcome(traj: Trajectory) -> Trajectory:
    """``traj`` cut before its purchase (the step that reached the done page), with reward,
    success and done cleared: the done page's score is goal-outcome information."""
    keep = []
    for s in traj.steps:
        if s.observation.startswith("Thank you for shopping") or \
                "Your score (min 0.0, max 1.0)" in s.observation:
            break
        keep.append(s)
    for s in keep:
        s.reward = 0.0
    return Trajectory(traj.task_id, traj.env, traj.instruction, traj.initial_observation, keep,
                      0.0, False, False, dict(traj.source), {})


def explore_transcripts(env: "WebShopEnv", n: int, seed: int = 0, relabel: float = 0.0
                        ) -> Iterator[Trajectory]:
    """``n`` random-exploration episodes on train goals, outcome stripped (see module doc)."""
    from eef.experts import make_expert
    from eef.rollout.episode import run_episode
    rng = random.Random(f"explore/{seed}")
    goals = [t.id for t in env.tasks("train")]
    policy = make_expert(env, "random")
    asins = pool = sorted(env.cat.products)
    for i in range(n):
        tid = rng.choice(goals)
        t = strip_outcome(run_episode(env, policy, tid, seed=rng.randrange(1 << 30)))
        if not t.steps:
            continue
        for s in t.steps:  # invalid actions stay in the context, out of the loss
            s.train = s.valid
        t.task_id = f"pretrain/explore/{i}"
        t.source = {"kind": "pretrain", "task": "explore", "goal_split": "train"}
        if rng.random() < relabel:
            t = _Relabel(asins, random.Random(f"relabel/explore/{seed}/{i}"),
                         pool).trajectory(t)
            t.source["relabelled"] = True
        yield t


def search_drills(env: "WebShopEnv", n: int, seed: int = 0) -> Iterator[Trajectory]:
    """``n`` one-step drills on **train** goals: the goal's first page (its instruction), then
    the trained action ``search[<content words of the instruction's product phrase>]`` (the
    phrase before the options and the price cap; stop words and "find me" dropped).  They
    teach the first turn of an episode: carry the instruction's words into the query."""
    from eef.experts.webshop import content_words, instruction_parts
    rng = random.Random(f"search/{seed}")
    goals = env.tasks("train")
    made = 0
    for _ in range(20 * n + 100):
        if made >= n:
            return
        t = rng.choice(goals)
        words = [w for w in content_words(instruction_parts(t.instruction)[0])
                 if w not in ("find", "me")]
        if not words:
            continue
        obs = env.reset(t.id)
        yield Trajectory(f"pretrain/search/{made}", "webshop", t.instruction, obs,
                         [Step(f"search[{' '.join(words)}]", "", "", train=True)],
                         source={"kind": "pretrain", "task": "search", "goal_split": "train"})
        made += 1
    raise PretrainError(f"could not build {n} search drills ({made} built)")


def copy_drills(env: "WebShopEnv", n: int, seed: int = 0) -> Iterator[Trajectory]:
    """``n`` span-copy drills: a search page whose instruction is ``Find me <words>`` (half
    of them 2-14 words drawn at random from the words of **train** products' titles, half a
    2-14-word span of a train product's title; a price cap in half of them), then the
    trained action ``search[find me <the same words>]``.  Random word strings cannot be
    recalled, only copied: they form the in-context copying of free text that a search from
    an instruction needs (the ASIN drills copy one token at a time)."""
    from eef.envs.webshop.env import SEP
    asins = sorted({t.meta["asin"] for t in env.tasks("train")})
    titles = [str(env.cat.products[a]["Title"]) for a in asins]
    vocab = sorted({w for t in titles for w in re.findall(r"[A-Za-z][A-Za-z'&-]*", t.lower())
                    if len(w) > 1})
    if not titles or not vocab:
        raise PretrainError("no train product titles to build copy drills from")
    rng = random.Random(seed)
    for i in range(n):
        if rng.random() < 0.5:
            text = " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 14)))
        else:
            ws = titles[rng.randrange(len(titles))].lower().split()
            k = rng.randint(2, min(14, len(ws))) if len(ws) >= 2 else len(ws)
            j = rng.randrange(len(ws) - k + 1)
            text = " ".join(ws[j:j + k])
        cap = f", and price lower than {rng.randint(1, 99)}0.00 dollars"
        instruction = f"Find me {text}" + rng.choice(["", cap])
        yield Trajectory(f"pretrain/copy/{i}", "webshop", instruction,
                         SEP.join(["WebShop", "Instruction:", instruction, "Search"]),
                         [Step(f"search[find me {text}]", "", "", train=True)],
                         source={"kind": "pretrain", "task": "copy", "goal_split": "train"})


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and not w.isdigit()]


def _naming_words(target: str, others: Sequence[str], k: int, rng: random.Random
                  ) -> list[str] | None:
    """A few words of ``target``'s title that no other listed title contains all of (title
    order kept), or None when no such set exists."""
    words = list(dict.fromkeys(_words(target)))
    if not words:
        return None
    other_sets = [set(_words(o)) for o in others]
    # prefer words rare on the page
    rare = sorted(words, key=lambda w: (sum(w in s for s in other_sets), rng.random()))
    chosen = set(rng.sample(words, min(k, len(words))))
    for w in rare:
        if not any(chosen <= s for s in other_sets):
            break
        chosen.add(w)
    if any(chosen <= s for s in other_sets):
        return None
    return [w for w in words if w in chosen]


def pick_tasks(env: "WebShopEnv", n: int, seed: int = 0, *, min_hits: int = 3,
               max_hits: int = 10,
               name_words: int = 3, option_share: float = 0.25, thought_share: float = 0.5,
               relabel: float = 0.0, title_words: int = 0) -> Iterator[Trajectory]:
    """``n`` copy tasks (see module doc).  Each is a trajectory: a search page whose
    instruction names the target, ``search[<words of another train product>]`` (not trained),
    the results page (cut to a random number of hits), ``click[<target ASIN>]`` (trained), and
    with ``option_share`` the item page and ``click[<value>]`` per named option (trained)."""
    from eef.envs.webshop.env import SEP
    rng = random.Random(f"pick/{seed}")
    train = sorted(env.cat.split["train"])
    train_set = set(train)
    goal0 = env.tasks("train")[0].id  # any train goal: only its env state is used
    asins = list(env.cat.products)
    made = tries = 0
    while made < n:
        tries += 1
        if tries > 20 * n + 100:
            raise PretrainError(f"could not build {n} copy tasks ({made} after {tries} tries)")
        src = env.cat.products[rng.choice(train)]["Title"]
        ws = _words(src)
        if not ws:
            continue
        query = " ".join(rng.sample(ws, min(len(ws), rng.randint(2, 4))))
        env.reset(goal0)
        page = env.step(f"search[{query}]").observation
        head, hits = _page_parts(page)
        if not hits:
            continue
        hits = hits[: rng.randint(min(min_hits, len(hits)), min(max_hits, len(hits)))]
        if title_words:  # short drills: titles cut to their first words
            hits = [(a, " ".join(tt.split()[:title_words]), pr) for a, tt, pr in hits]
        cands = [i for i, h in enumerate(hits) if h[0] in train_set]
        if not cands:
            continue
        ti = rng.choice(cands)
        target = hits[ti][0]
        named = _naming_words(hits[ti][1], [h[1] for j, h in enumerate(hits) if j != ti],
                              name_words, rng)
        if named is None:
            continue
        opts = env.cat.products[target].get("options") or {}
        with_opts: dict[str, str] = {}
        if opts and rng.random() < option_share:
            names = sorted(opts)
            for name in rng.sample(names, rng.randint(1, min(2, len(names)))):
                if opts[name]:
                    with_opts[name] = rng.choice(opts[name])
        text = rng.choice(_NAMING).format(w=" ".join(named))
        if with_opts:
            text += " with " + ", and ".join(f"{k}: {v}" for k, v in sorted(with_opts.items()))
        first = SEP.join(["WebShop", "Instruction:", text, "Search"])
        item = env.step(f"click[{target}]").observation
        think = rng.random() < thought_share
        steps = [Step(f"search[{query}]", _join_page(head, hits), train=False),
                 Step(f"click[{target}]", item,
                      rng.choice(_PICK_THOUGHTS).format(a=target) if think else "")]
        for name, value in sorted(with_opts.items()):
            r = env.step(f"click[{value}]")
            if not r.info.get("valid", True):
                break
            obs = r.observation
            steps.append(Step(f"click[{value}]", obs,
                              f"I select {name}: {value}." if think else ""))
        t = Trajectory(f"pretrain/pick/{made}", "webshop", text, first, steps,
                       source={"kind": "pretrain", "task": "pick", "target_rank": ti,
                               "hits": len(hits), "options": len(with_opts)})
        if rng.random() < relabel:
            t = _Relabel(asins, random.Random(f"relabel/pick/{seed}/{made}"),
                         asins).trajectory(t)
            t.source["relabelled"] = True
        made += 1
        yield t


def lookup_drills(env: "WebShopEnv", n: int, seed: int = 0, *, min_hits: int = 2,
                  max_hits: int = 6, min_words: int = 3, max_words: int = 8,
                  short: bool = False) -> Iterator[Trajectory]:
    """``n`` dense copy drills in the shape of a results page.  Each lists ``min_hits`` to
    ``max_hits`` hits ``<id> [SEP] <first words of a train product's title> [SEP] <price>``
    whose identifiers are drawn at random from all catalogue ASINs (so they say nothing
    about the titles: only copying from the page can produce them).  The instruction names
    one or more hits by a word of their title each (unique on the page); the trained turn
    looks them up in that order in its thought (``<word> is <id>.``) and clicks the first.
    Every looked-up identifier is a copy: many copy targets per short sequence.  ``short``
    drills show the hits alone (no page header, no search step): a few dozen tokens."""
    from eef.envs.webshop.env import SEP
    rng = random.Random(f"lookup/{seed}")
    train = sorted(env.cat.split["train"])
    pool = sorted(env.cat.products)  # labels: any catalogue ASIN (see the module doc)
    titles = [env.cat.products[a]["Title"] for a in train]
    prices = [env.cat.products[a].get("pricing") or env.cat.products[a].get("Price")
              for a in train]
    made = tries = 0
    while made < n:
        tries += 1
        if tries > 20 * n + 100:
            raise PretrainError(f"could not build {n} lookup drills ({made} after {tries})")
        k = rng.randint(min_hits, max_hits)
        src = rng.sample(range(len(train)), k)
        ids = rng.sample(pool, k)
        hits = []
        for i, a in zip(src, ids):
            words = str(titles[i]).split()
            hits.append((a, " ".join(words[:rng.randint(min_words, max_words)]),
                         _price_text(prices[i])))
        unique = []
        for j, h in enumerate(hits):
            others = [x[1] for i, x in enumerate(hits) if i != j]
            w = _naming_words(h[1], others, 1, rng)
            unique.append(w)
        ok = [j for j, w in enumerate(unique) if w]
        if not ok:
            continue
        looked = rng.sample(ok, rng.randint(1, len(ok)))
        named = looked[0]
        thought = " ".join(f"{' '.join(unique[j])} is {hits[j][0]}." for j in looked)
        page = _join_page(["Back to Search", "Page 1 (Total results: 50)", "Next >"], hits)
        text = rng.choice(_NAMING).format(w=", ".join(" ".join(unique[j]) for j in looked))
        first = SEP.join(["WebShop", "Instruction:", text, "Search"])
        click = Step(f"click[{hits[named][0]}]", "", thought)
        steps = [Step(f"search[{' '.join(unique[named])}]", page, train=False), click]
        if short:
            first, steps = _join_page([], hits), [click]
        yield Trajectory(f"pretrain/lookup/{made}", "webshop", text, first, steps,
                         source={"kind": "pretrain", "hits": k,
                                 "task": "lookup_short" if short else "lookup",
                                 "lookups": len(looked), "short": short})
        made += 1


def _price_text(p: Any) -> str:
    if isinstance(p, (list, tuple)) and p:
        p = p[0]
    try:
        return f"${float(p):.2f}"
    except (TypeError, ValueError):
        return "$10.00"


def webshop_corpus(cfg: PretrainConfig, data_dir: str | os.PathLike | None = None
                   ) -> Iterator[Trajectory]:
    """The whole WebShop pre-training corpus of ``cfg`` (deterministic given ``cfg.seed``)."""
    from eef.envs.webshop import WebShopEnv
    env = WebShopEnv(str(data_dir) if data_dir else None)
    yield from lookup_drills(env, cfg.short_drills, cfg.seed, short=True, min_hits=1,
                             max_hits=4, min_words=1, max_words=3)
    yield from lookup_drills(env, cfg.lookup_drills, cfg.seed + 1)
    yield from explore_transcripts(env, cfg.explore_episodes, cfg.seed, cfg.relabel)
    yield from search_drills(env, cfg.search_drills, cfg.seed)
    yield from pick_tasks(env, cfg.pick_tasks, cfg.seed, min_hits=cfg.min_hits,
                          max_hits=cfg.max_hits,
                          name_words=cfg.name_words, option_share=cfg.option_share,
                          thought_share=cfg.thought_share, relabel=cfg.relabel)


# -- the pick probe: copy rate and pick accuracy on results pages ------------------------------
@dataclass
class PickPage:
    """A results page reached by the oracle's first search for a goal's instruction (the
    context ends on it) and what a model should click there."""

    context: Trajectory
    listed: list[str]
    target: str
    pick: Step

    @property
    def target_listed(self) -> bool:
        return self.target in self.listed

    def sft_example(self) -> Trajectory:
        """The context plus the oracle's pick turn, the only trained step."""
        t = self.context.prefix(len(self.context.steps))
        for s in t.steps:
            s.train = False
        t.steps.append(Step(**asdict(self.pick)))
        t.steps[-1].train = True
        return t


def shuffled_hits(example: Trajectory, rng: random.Random) -> Trajectory:
    """A copy of a pick example (``PickPage.sft_example``) whose results page, the observation
    its last (trained) turn follows, lists the same hits in a random order: the pick must
    then be read from titles and prices, not from the hit's position."""
    t = example.prefix(len(example.steps))
    if len(t.steps) < 2:
        raise PretrainError(f"{t.task_id}: not a pick example (no results page before the pick)")
    page = t.steps[-2]
    head, hits = _page_parts(page.observation)
    hits = list(hits)
    rng.shuffle(hits)
    page.observation = _join_page(head, hits)
    return t


def webshop_pick_pages(env: "WebShopEnv", split: str, limit: int | None = None, *,
                       queries: int = 0, seed: int = 0) -> list[PickPage]:
    """Per goal of ``split``: the oracle's search page -> ``search[<instruction phrase>]`` ->
    first results page, with the listed ASINs and the goal's target.  ``pick`` is the oracle's
    turn on that page (``click[target]`` when listed, else its ``click[next >]``).

    Goals of one product share its phrase, hence its page: the 4,690 train goals give 252
    distinct first pages listing the target.  ``queries=K`` adds, per goal, the first pages of
    K searches with 2-8 random words of the instruction's product phrase (in their order,
    seeded by ``seed``), kept when they list the target and their (page, instruction) pair is
    new: more distinct pages to train and to measure a pick on."""
    from eef.experts import make_expert
    from eef.experts.webshop import content_words, instruction_parts, parse_page
    from eef.react import parse_turn
    oracle = make_expert(env, "oracle")
    rng = random.Random(f"pick-pages/{split}/{seed}")
    out: list[PickPage] = []
    seen: set[tuple[str, str]] = set()
    for task in env.tasks(split)[:limit]:
        words = [w for w in content_words(instruction_parts(task.instruction)[0])
                 if w not in ("find", "me")]
        extra = [" ".join(words[i] for i in sorted(rng.sample(
            range(len(words)), min(len(words), rng.randint(2, 8))))) for _ in range(queries)]
        for q in [None, *(x for x in extra if x)]:
            obs = env.reset(task.id)
            ctx = Trajectory(task.id, env.name, task.instruction, obs)
            thought, action = ("", f"search[{q}]") if q else \
                parse_turn(oracle.act([ctx], None, [0])[0])
            r = env.step(action)
            ctx.steps.append(Step(action, r.observation, thought, train=False))
            page = parse_page(r.observation)
            if page["kind"] != "results":
                continue
            listed, target = [h[0] for h in page["hits"]], env.goal(task.id).asin
            if q and (target not in listed or (r.observation, task.instruction) in seen):
                continue
            seen.add((r.observation, task.instruction))
            thought, action = parse_turn(oracle.act([ctx], None, [1])[0])
            out.append(PickPage(ctx, listed, target, Step(action, "", thought)))
    return out


def rule_pick(page: PickPage) -> str:
    """What a page-reading rule clicks: among the hits priced under the instruction's cap (all
    hits if none is), the one whose title shares the largest share of content words with the
    instruction (Jaccard; ties to the higher hit).  A reference for ``pick_accuracy``: how far
    reading titles and prices on the page gets without knowing the target."""
    from eef.experts.webshop import content_words, instruction_parts, parse_price
    hits = _page_hits(page)
    cap = instruction_parts(page.context.instruction)[2]
    query = set(content_words(page.context.instruction))

    def score(i: int) -> float:
        title = set(content_words(hits[i][1]))
        return len(query & title) / max(1, len(query | title))

    prices = [parse_price(h[2]) for h in hits]
    ok = [i for i, p in enumerate(prices) if cap is None or (p is not None and p < cap)] \
        or list(range(len(hits)))
    return hits[max(ok, key=lambda i: (score(i), -i))][0]


def _page_hits(page: PickPage) -> list[tuple[str, str, str]]:
    from eef.experts.webshop import parse_page
    hits = parse_page(page.context.steps[-1].observation).get("hits") or []
    if not hits:
        raise PretrainError(f"{page.context.task_id}: the context does not end on results")
    return hits


class PageRanker:
    """A learnt page-reading reference for ``pick_accuracy``: a conditional logit (softmax over
    the page's hits of a linear score) on hand features of each hit, fit on pick pages of the
    train goals.  Features: the hit's position (one-hot, 10), the title's share of the
    instruction's content words (Jaccard; share of the instruction, of its product phrase, of
    its option values), the share of title words not in the instruction, price under the cap,
    no price, log price over cap, title length.  It knows nothing of the target on a page it
    picks from: an estimate of what titles, prices and positions give a learner.

    ``groups`` keeps a subset of the features (``GROUPS``: ``position``, ``words`` -- the
    five title/instruction overlaps and the title length --, ``price``), to measure what each
    part of the page carries."""

    #: feature columns of each group (19 features in all)
    GROUPS = {"position": tuple(range(10)), "words": (10, 11, 12, 13, 14, 18),
              "price": (15, 16, 17)}

    def __init__(self, l2: float = 1e-3, groups: Sequence[str] = ("position", "words", "price")):
        bad = sorted(set(groups) - set(self.GROUPS))
        if bad or not groups:
            raise PretrainError(f"PageRanker groups must be a non-empty subset of "
                                f"{', '.join(self.GROUPS)}; got {list(groups)}")
        self.l2 = l2
        self.groups = tuple(groups)
        self.columns = sorted(c for g in self.groups for c in self.GROUPS[g])
        self.w: Any = None

    def _x(self, page: PickPage) -> Any:
        import torch
        return torch.tensor(self.features(page))[:, self.columns]

    @staticmethod
    def features(page: PickPage) -> list[list[float]]:
        import math

        from eef.experts.webshop import content_words, instruction_parts, parse_price
        phrase, opts, cap = instruction_parts(page.context.instruction)
        q, qp = set(content_words(page.context.instruction)), set(content_words(phrase))
        qo = {w for v in opts.values() for w in content_words(v)}
        rows = []
        for i, (_, title, price) in enumerate(_page_hits(page)):
            t, p = set(content_words(title)), parse_price(price)
            rows.append([float(i == k) for k in range(10)] + [
                len(q & t) / max(1, len(q | t)), len(q & t) / max(1, len(q)),
                len(qp & t) / max(1, len(qp)), len(qo & t) / max(1, len(qo)),
                len(t - q) / max(1, len(t)),
                float(cap is not None and p is not None and p < cap), float(p is None),
                math.log1p(p or 0.0) - (math.log1p(cap) if cap else 0.0), len(t) / 20])
        return rows

    def fit(self, pages: Sequence[PickPage]) -> "PageRanker":
        import torch
        data = [(self._x(p), p.listed.index(p.target)) for p in pages if p.target_listed]
        if not data:
            raise PretrainError("no pages listing their target to fit the ranker on")
        w = torch.zeros(len(self.columns), dtype=torch.float32, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

        def closure() -> Any:
            opt.zero_grad()
            loss = sum(-torch.log_softmax(x @ w, 0)[y] for x, y in data) / len(data) \
                + self.l2 * (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.w = w.detach()
        return self

    def pick(self, page: PickPage) -> str:
        import torch
        if self.w is None:
            raise PretrainError("PageRanker.pick before fit")
        scores = self._x(page) @ self.w
        return page.listed[int(torch.argmax(scores))]

    def accuracy(self, pages: Sequence[PickPage]) -> float:
        """Share of the ``pages`` listing their target where ``pick`` clicks it (0 if none)."""
        listing = [p for p in pages if p.target_listed]
        return sum(self.pick(p) == p.target for p in listing) / len(listing) if listing else 0.0


def clicked_label(response: str) -> str | None:
    """The label of a ``click[...]`` action in a model's turn, else None."""
    from eef.react import parse_turn
    m = re.fullmatch(r"click\[(.*)\]", parse_turn(response)[1].strip(), re.DOTALL)
    return m.group(1) if m else None


def greedy_turns(policy: Any, contexts: Sequence[Trajectory], max_new_tokens: int
                 ) -> list[str]:
    """The greedy turns of ``policy`` (a Policy or an HF model directory) on ``contexts``."""
    from eef.policy import Sampling
    if isinstance(policy, (str, os.PathLike)):
        from eef.models.hf import load_hf_policy
        policy = load_hf_policy(str(policy))
    if not contexts:
        raise PretrainError("no pages to evaluate")
    return policy.act(list(contexts), Sampling(0.0, 1.0, max_new_tokens),
                      list(range(len(contexts))))


def evaluate_picks(policy: Any, pages: Sequence[PickPage], max_new_tokens: int = 64, *,
                   ranker: PageRanker | None = None) -> dict[str, Any]:
    """Greedy turns of ``policy`` (a Policy or an HF model directory) on ``pages``.

    ``copy_rate``: share of all pages where the action is ``click[<an ASIN listed there>]``,
    exactly (same case).  ``pick_accuracy``: share of the pages listing the target where the
    action clicks it; ``first_hit`` and ``rule_pick``: the same for "click the first hit" and
    for the page-reading rule of ``rule_pick`` on those pages (and ``ranker_pick`` for a fitted
    ``PageRanker``).  ``distinct_pages``: how many different results pages ``pages`` holds
    (goals of one product share their first page)."""
    outs = greedy_turns(policy, [p.context for p in pages], max_new_tokens)
    labels = [clicked_label(o) for o in outs]
    copied = [lab is not None and lab in p.listed for lab, p in zip(labels, pages)]
    with_target = [(lab, p) for lab, p in zip(labels, pages) if p.target_listed]
    n_t = len(with_target)

    def share(click: Any) -> float:  # share of the pages listing the target where it is clicked
        return sum(click(lab, p) == p.target for lab, p in with_target) / n_t if n_t else 0.0

    return {"pages": len(pages), "copy_rate": sum(copied) / len(pages),
            "pages_with_target": n_t,
            "pick_accuracy": share(lambda lab, p: lab),
            "first_hit": share(lambda lab, p: p.listed[0]),
            "rule_pick": share(lambda lab, p: rule_pick(p)),
            **({"ranker_pick": share(lambda lab, p: ranker.pick(p))} if ranker else {}),
            "distinct_pages": len({p.context.steps[-1].observation for p in pages}),
            "examples": [{"task": p.context.task_id, "output": o, "target": p.target}
                         for o, p in list(zip(outs, pages))[:5]]}


# -- the build ---------------------------------------------------------------------------------
def _sciworld_corpus(cfg: PretrainConfig, data_dir: str | os.PathLike | None = None
                     ) -> Iterator[Trajectory]:
    from eef.models.pretrain_sciworld import sciworld_corpus
    return sciworld_corpus(cfg, data_dir)


CORPUS_BUILDERS = {"webshop": webshop_corpus, "sciworld": _sciworld_corpus}
#: data files each env's corpus reads (under ``<data dir>/<env>/``; the first existing of a tuple)
DATA_FILES: dict[str, list[tuple[str, ...]]] = {
    "webshop": [("products_1k.jsonl", "items_shuffle_1000.json"), ("items_ins_v2_1000.json",),
                ("split.json",)],
    "sciworld": [("train_indices.json",), ("dev_indices.json",), ("test_indices.json",),
                 ("max_steps.json",)],
}


class BuildInterrupted(PretrainError):
    """A build stopped on purpose (``stop_after``) before it finished; calling again resumes."""


def data_checksums(env: str, data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of each data file the env's corpus reads (``DataNotFoundError`` if missing)."""
    from eef.config import DataNotFoundError, data_dir as _dd
    root = Path(_dd(data_dir)) / env
    out = {}
    for names in DATA_FILES.get(env, []):
        path = next((root / n for n in names if (root / n).exists()), None)
        if path is None:
            raise DataNotFoundError(f"{root / names[0]} not found: get the {env} data first "
                                    f"(eef data download {env}) or set EEF_DATA_DIR")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[path.name] = h.hexdigest()
    return out


def replay_sequences(env: str, options: dict[str, Any], n: int, seed: int = 0,
                     data_dir: str | os.PathLike | None = None) -> list[Trajectory]:
    """``n`` sequences of the pre-training corpus of a preset built with ``options`` (a seeded
    sample of its main-phase tasks; the warm-up's short drills left out), for mixing into
    fine-tuning data against forgetting (``model.replay`` of the pipeline).  A build with
    ``copy_drills`` adds ``n`` more: fresh copy drills (seeded by ``seed + 1``)."""
    if n <= 0:
        return []
    if env not in CORPUS_BUILDERS:
        raise PretrainError(f"no pre-training corpus for env {env!r} (known: "
                            f"{', '.join(CORPUS_BUILDERS)})")
    cfg = PretrainConfig.from_options(options)
    pool = [t for t in CORPUS_BUILDERS[env](cfg, data_dir)
            if t.source.get("task") != "lookup_short"]
    if not pool:
        raise PretrainError("the pre-training corpus has no main-phase sequence to replay")
    rng = random.Random(f"replay/{seed}")
    picked = rng.sample(range(len(pool)), min(n, len(pool)))
    out = [pool[i] for i in sorted(picked)]
    if cfg.copy_drills and env == "webshop":  # and as many fresh copy drills
        from eef.envs.webshop import WebShopEnv
        out += copy_drills(WebShopEnv(str(data_dir) if data_dir else None),
                           min(n, cfg.copy_drills), seed + 1)
    return out


#: options added after builds were cached: left out of the key while at their default, so
#: the keys (and caches) of builds that do not use them stay valid
_LATER_OPTIONS = {"search_drills": 0, "copy_drills": 0, "copy_lr": 1e-3}


def _key_options(cfg: PretrainConfig) -> dict[str, Any]:
    opts = asdict(cfg)
    for k, default in _LATER_OPTIONS.items():
        if opts.get(k) == default:
            del opts[k]
    return opts


def build_key(preset: str, env: str, cfg: PretrainConfig,
              data_dir: str | os.PathLike | None = None) -> tuple[str, dict[str, Any]]:
    """The cache key of a build and what it hashes (preset size, env, data checksums, every
    option, ``CODE_VERSION``)."""
    payload = {"preset": preset, "size": asdict(get_preset(preset)), "env": env,
               "data": data_checksums(env, data_dir), "options": _key_options(cfg),
               "code_version": CODE_VERSION}
    if env == "sciworld":  # the simulator's text differs between versions
        import scienceworld
        payload["simulator"] = getattr(scienceworld, "__version__", "unknown")
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return digest, payload


def preset_dir(preset: str, env: str, key: str) -> Path:
    from eef.config import cache_dir
    return cache_dir() / "presets" / f"{preset}-{env}-{key}"


def _is_built(path: Path, key: str) -> bool:
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (info.get("pretraining") or {}).get("key") == key


def _corpus_stats(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    kinds: dict[str, dict[str, int]] = {}
    for t in trajs:
        k = kinds.setdefault(t.source.get("task", "?"), {"sequences": 0, "trained_actions": 0,
                                                         "relabelled": 0})
        k["sequences"] += 1
        k["trained_actions"] += sum(s.train for s in t.steps)
        k["relabelled"] += bool(t.source.get("relabelled"))
    return kinds


def build_preset(preset: str, env: str, *, out: str | os.PathLike | None = None,
                 progress: bool = True, data_dir: str | os.PathLike | None = None,
                 stop_after: int | None = None, threads: int | None = None,
                 reuse_warmup: bool = True, **options: Any) -> Path:
    """The pre-trained preset ``preset`` for ``env``: built once, then read from the cache.

    ``options`` are ``PretrainConfig`` fields.  The model goes to ``out`` when given, else to
    ``<cache dir>/presets/<preset>-<env>-<key>``; either way it is built in ``<dir>.tmp``
    (initial weights, corpus, ``train_sft`` checkpoints) and renamed when complete, so a killed
    build resumes on the next call and a finished directory is always whole.  ``stop_after``
    (tests) stops a training phase after that many steps of this call and raises
    ``BuildInterrupted``.  ``threads`` sets torch's CPU threads for the build (on a busy
    2-core machine 1 thread is much faster than 2; see docs/models.md); it is not part of the
    key.  ``reuse_warmup``: take the warm-up phase from the cache when an earlier build ran
    the same one (same initial weights, warm-up corpus and warm-up options; see
    ``warmup_key``), and store it there after running it; False runs it (to time a build).
    Returns the model directory (``hf:<dir>`` loads it).
    """
    cfg = PretrainConfig.from_options(options)
    get_preset(preset)
    if env not in CORPUS_BUILDERS:
        raise PretrainError(f"no pre-training corpus for env {env!r} (known: "
                            f"{', '.join(CORPUS_BUILDERS)}); use preset init without "
                            "pre-training for it")
    key, payload = build_key(preset, env, cfg, data_dir)
    final = Path(out) if out is not None else preset_dir(preset, env, key)
    if _is_built(final, key):
        return final
    if final.exists():
        raise PretrainError(f"{final} exists but is not this build (other options, data or "
                            "code version): remove it or choose another output directory")
    base = None
    if cfg.copy_drills and env != "webshop":
        raise PretrainError(f"copy_drills are WebShop drills; env {env!r} has none")
    if cfg.copy_drills:  # the build without copy drills (cached), then their own phase
        base = build_preset(preset, env, progress=progress, data_dir=data_dir,
                            stop_after=stop_after, threads=threads, reuse_warmup=reuse_warmup,
                            **{**asdict(cfg), "copy_drills": 0,
                               "copy_lr": _LATER_OPTIONS["copy_lr"]})
    work = final.with_name(final.name + ".tmp")
    work.mkdir(parents=True, exist_ok=True)
    import torch
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if base is not None:
            _build_copy(base, env, cfg, key, payload, final, work, progress, data_dir,
                        stop_after)
        else:
            _build(preset, env, cfg, key, payload, final, work, progress, data_dir,
                   stop_after, reuse_warmup)
    finally:
        torch.set_num_threads(old_threads)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _stamp(work: Path, key: str, payload: dict[str, Any]) -> None:
    """Mark ``work`` as the directory of build ``key`` (leftovers of another build go)."""
    stamp = work / "key.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") != key:
        shutil.rmtree(work)  # leftovers of a different build with the same output
        work.mkdir(parents=True)
    stamp.write_text(json.dumps({"key": key, **payload}, indent=2))


def _build(preset: str, env: str, cfg: PretrainConfig, key: str, payload: dict[str, Any],
           final: Path, work: Path, progress: bool, data_dir: str | os.PathLike | None,
           stop_after: int | None, reuse_warmup: bool = True) -> None:
    with _Lock(work / "lock"):
        if _is_built(final, key):  # another process finished it while we waited
            return
        _stamp(work, key, payload)
        t0 = time.time()
        init = work / "init"
        if not (init / "config.json").exists():
            tmp = work / "init.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            init_preset(preset, env, tmp, seed=cfg.seed, data_dir=data_dir)
            tmp.rename(init)
        corpus = work / "corpus.jsonl"
        if not corpus.exists():
            tmp = work / "corpus.jsonl.tmp"
            write_jsonl(tmp, _progress(CORPUS_BUILDERS[env](cfg, data_dir),
                                       cfg.short_drills + cfg.lookup_drills
                                       + cfg.explore_episodes
                                       + cfg.pick_tasks,
                                       f"{preset}/{env} corpus", progress))
            tmp.rename(corpus)
        trajs = list(iter_jsonl(corpus))
        short = [t for t in trajs if t.source.get("short")]
        main = [t for t in trajs if not t.source.get("short")] + short[:cfg.short_replay]
        # the warm-up keeps its learning rate: copying forms late and abruptly (docs)
        phases = [("warmup", short, cfg.warmup_steps, "constant", cfg.warmup_batch_size)] \
            if cfg.warmup_steps else []
        phases.append(("model", main, cfg.steps, "cosine", cfg.batch_size))
        start, results, reused = init, [], False
        for name, data, steps, schedule, batch in phases:
            shared = None
            if name == "warmup" and reuse_warmup:
                shared = warmup_dir(preset, env, warmup_key(payload, cfg, data))
                reused = _take_phase(shared, work / name)
            res = train_pretrain(start, data, work / name, cfg, steps=steps, schedule=schedule,
                                 batch_size=batch, progress=progress, stop_after=stop_after)
            results.append(res)
            if res["steps"] < res["total_steps"]:
                raise BuildInterrupted(f"build of {final} stopped at step {res['steps']} of "
                                       f"{res['total_steps']} ({name}); call again to resume")
            if shared is not None and not reused:
                _keep_phase(work / name, shared)
            start = work / name
        info = json.loads((init / INFO_FILE).read_text())
        info["weights"] = "self-supervised pre-training (eef.models.pretrain)"
        info["pretraining"] = {
            "key": key, "code_version": CODE_VERSION, "options": asdict(cfg),
            "data": payload["data"], "corpus": _corpus_stats(trajs),
            "what": ("short and page-shaped lookup drills (hits with random train-product "
                     "identifiers, the thought looks named hits up by a title word), "
                     "random-exploration transcripts on train goals (purchase step and score "
                     "removed) and copy tasks on catalogue pages (click the listed train "
                     "product named by words of its title, then its named option values); no "
                     "expert, no reward, no test product's goal, title or page as a target; "
                     "identifiers are arbitrary labels drawn from the whole catalogue"
                     + ("; search drills: a train goal's instruction, then search[<its product "
                        "phrase's content words>]" if cfg.search_drills else "")),
            "sequences": res["examples"], "warmup_steps": cfg.warmup_steps,
            "warmup_reused": reused,
            "steps": sum(r["steps"] for r in results),
            "tokens": sum(r["tokens"] for r in results),
            "trained_tokens": sum(r["trained_tokens"] for r in results),
            "train_minutes": round(sum(r["seconds"] for r in results) / 60, 2),
            "build_minutes_this_call": round((time.time() - t0) / 60, 2)}
        (work / "model" / INFO_FILE).write_text(json.dumps(info, indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        (work / "model").rename(final)


def copy_train_config(cfg: PretrainConfig) -> Any:
    """Training options of the copy-drill phase: one pass, short windows, constant rate."""
    from eef.models.train import TrainConfig
    return TrainConfig(lr=cfg.copy_lr, epochs=1.0, batch_size=cfg.warmup_batch_size,
                       max_tokens=256, weight_decay=0.0, warmup_ratio=0.02,
                       schedule="constant", seed=cfg.seed, save_every=cfg.save_every)


def _build_copy(base: Path, env: str, cfg: PretrainConfig, key: str, payload: dict[str, Any],
                final: Path, work: Path, progress: bool, data_dir: str | os.PathLike | None,
                stop_after: int | None) -> None:
    """The copy-drill phase on top of the finished build ``base`` (see ``copy_drills``)."""
    from eef.envs.webshop import WebShopEnv
    with _Lock(work / "lock"):
        if _is_built(final, key):
            return
        _stamp(work, key, payload)
        t0 = time.time()
        ws = WebShopEnv(str(data_dir) if data_dir else None)
        drills = list(copy_drills(ws, cfg.copy_drills, cfg.seed))
        res = train_pretrain(base, drills, work / "copy", cfg, steps=0,
                             train_cfg=copy_train_config(cfg), progress=progress,
                             stop_after=stop_after)
        if res["steps"] < res["total_steps"]:
            raise BuildInterrupted(f"build of {final} stopped at step {res['steps']} of "
                                   f"{res['total_steps']} (copy drills); call again to resume")
        info = json.loads((base / INFO_FILE).read_text())
        pre = info["pretraining"]
        pre.update({
            "key": key, "options": asdict(cfg), "base": base.name,
            "what": pre["what"] + ("; then span-copy drills: 'Find me <words of train "
                                   "product titles>', then search[find me <the same words>]"),
            "copy_phase": {"sequences": res["examples"], "steps": res["steps"],
                           "tokens": res["tokens"], "trained_tokens": res["trained_tokens"],
                           "train_minutes": round(res["seconds"] / 60, 2)},
            "steps": pre["steps"] + res["steps"], "tokens": pre["tokens"] + res["tokens"],
            "trained_tokens": pre["trained_tokens"] + res["trained_tokens"],
            "train_minutes": round(pre["train_minutes"] + res["seconds"] / 60, 2),
            "build_minutes_this_call": round((time.time() - t0) / 60, 2)})
        pre["corpus"]["copy"] = {"sequences": len(drills), "trained_actions": len(drills),
                                 "relabelled": 0}
        (work / "copy" / INFO_FILE).write_text(json.dumps(info, indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        (work / "copy").rename(final)


def warmup_key(payload: dict[str, Any], cfg: PretrainConfig, data: Sequence[Trajectory]
               ) -> str:
    """Key of a warm-up phase: what fixes its result (preset, env, data files, code version,
    seed of the initial weights and data order, the warm-up's training options) and the
    content of its corpus.  Builds that differ only in their main phase share it."""
    h = hashlib.sha256(json.dumps(
        {k: payload.get(k) for k in ("preset", "size", "env", "data", "simulator",
                                     "code_version")}
        | {"seed": cfg.seed, "lr": cfg.lr, "max_tokens": cfg.max_tokens,
           "steps": cfg.warmup_steps, "batch_size": cfg.warmup_batch_size},
        sort_keys=True).encode())
    for t in data:
        h.update(json.dumps(t.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def warmup_dir(preset: str, env: str, key: str) -> Path:
    from eef.config import cache_dir
    return cache_dir() / "presets" / "warmup" / f"{preset}-{env}-{key}"


def _take_phase(shared: Path, dst: Path) -> bool:
    """Copy a finished phase from the cache into the build (True when there was one)."""
    if (dst / "eef_phase.json").exists() or not (shared / "eef_phase.json").exists():
        return False
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(shared, dst)
    return True


def _keep_phase(src: Path, shared: Path) -> None:
    """Store a finished phase (without its resume checkpoint) in the cache."""
    if (shared / "eef_phase.json").exists() or not (src / "eef_phase.json").exists():
        return
    tmp = shared.with_name(shared.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoint*"))
    try:
        tmp.rename(shared)
    except OSError:  # another build stored it first
        shutil.rmtree(tmp, ignore_errors=True)


def pretrain_train_config(cfg: PretrainConfig, steps: int, schedule: str = "cosine",
                          batch_size: int | None = None) -> Any:
    from eef.models.train import TrainConfig
    return TrainConfig(lr=cfg.lr, epochs=1.0, max_steps=steps,
                       batch_size=batch_size or cfg.batch_size,
                       max_tokens=cfg.max_tokens, weight_decay=0.0, warmup_ratio=0.03,
                       schedule=schedule, seed=cfg.seed, save_every=cfg.save_every)


def train_pretrain(init: Path, trajs: Sequence[Trajectory], out: Path, cfg: PretrainConfig, *,
                   steps: int, schedule: str = "cosine", batch_size: int | None = None,
                   progress: bool = True, stop_after: int | None = None,
                   train_cfg: Any = None) -> dict[str, Any]:
    """Train ``init`` on ``trajs`` with ``train_sft`` (action-token loss, resumable), with the
    phase options of ``pretrain_train_config`` or, when given, ``train_cfg``."""
    from eef.models.train import train_sft
    if (out / "eef_phase.json").exists():  # this phase finished in an earlier call
        return json.loads((out / "eef_phase.json").read_text())
    res = train_sft(str(init), trajs, out,
                    train_cfg or pretrain_train_config(cfg, steps, schedule, batch_size),
                    progress=progress, stop_after=stop_after)
    if res["steps"] >= res["total_steps"]:
        (out / "eef_phase.json").write_text(json.dumps(
            {k: res[k] for k in ("steps", "total_steps", "tokens", "trained_tokens", "seconds",
                                 "examples")}))
    return res


def _progress(items: Iterator[Trajectory], total: int, label: str, show: bool
              ) -> Iterator[Trajectory]:
    from tqdm.auto import tqdm
    with tqdm(total=total, desc=label, unit="seq", disable=not show) as bar:
        for t in items:
            yield t
            bar.update(1)


class _Lock:
    """An exclusive advisory lock on a file (two processes never build the same directory)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "_Lock":
        import fcntl
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()
