"""The WebShop curriculum of the tiny preset: tokenizer text, identifier tokens and the
pre-training corpus, built from the catalogue and train goals only.

The corpus teaches a from-scratch model to read a results page and copy an identifier from it
(docs/tiny-preset.md says why and what each part does to the model):

* ``lookup_drills`` (``short=True``: the warm-up): hits with identifiers drawn at random from
  the catalogue's ASINs; the instruction names hits by a title word, the thought looks them
  up (``<word> is <id>.``) and the action clicks the first.
* ``explore_transcripts``: ``expert:random`` on train goals, cut before the purchase (no
  score, no goal outcome); loss on every valid action.
* ``search_drills``: a train goal's first page, then ``search[<its product phrase>]``.
* ``copy_drills``: ``Find me <words>``, then ``search[find me <the same words>]``.
* ``pick_tasks``: a results page, an instruction naming one listed train product by a few
  title words, the trained ``click[<its ASIN>]`` (and its named option values).

``relabel`` replaces a sequence's ASINs consistently by others drawn from the whole catalogue,
so an identifier can only be produced by copying it from the page.  No expert, test goal,
reward or goal outcome enters the corpus.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from eef.presets.base import Curriculum, DataDir, PretrainConfig, PretrainError
from eef.trajectory import Provenance, Step, Trajectory

if TYPE_CHECKING:
    from eef.envs.webshop import WebShopEnv

_SEP = " [SEP] "
_WORD = re.compile(r"[a-z0-9]+")
_STOP = set("""a an and are as at be by for from in into is it of on or the to with x
pack count size oz inch inches""".split())
_NAMING = ("{w}", "find {w}", "i want {w}", "i am looking for {w}", "i need {w}")
_PICK_THOUGHTS = ("{a} matches the description.", "I open {a}.", "{a} is the one named.")


def page_parts(obs: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """A results page split into its header pieces and its (ASIN, title, price) hits."""
    from eef.experts.webshop import parse_page
    parts = obs.split(_SEP)
    info = parse_page(obs)
    if info["kind"] != "results":
        raise PretrainError(f"not a results page: {obs[:80]!r}")
    n_head = len(parts) - 3 * len(info["hits"])
    return parts[:n_head], info["hits"]


def join_page(head: list[str], hits: Sequence[tuple[str, str, str]]) -> str:
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
                      0.0, False, False, traj.source.copy(), {})


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
        t.source = Provenance("pretrain", extra={"task": "explore", "goal_split": "train"})
        if rng.random() < relabel:
            t = _Relabel(asins, random.Random(f"relabel/explore/{seed}/{i}"),
                         pool).trajectory(t)
            t.source.extra["relabelled"] = True
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
        head, hits = page_parts(page)
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
        steps = [Step(f"search[{query}]", join_page(head, hits), train=False),
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
            t.source.extra["relabelled"] = True
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
        page = join_page(["Back to Search", "Page 1 (Total results: 50)", "Next >"], hits)
        text = rng.choice(_NAMING).format(w=", ".join(" ".join(unique[j]) for j in looked))
        first = SEP.join(["WebShop", "Instruction:", text, "Search"])
        click = Step(f"click[{hits[named][0]}]", "", thought)
        steps = [Step(f"search[{' '.join(unique[named])}]", page, train=False), click]
        if short:
            first, steps = join_page([], hits), [click]
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


def texts(data_dir: DataDir = None) -> Iterator[str]:
    """Text of the WebShop catalogue (titles, descriptions, bullet points, options, prices,
    ASINs, search text) and the action vocabulary.  No goal, instruction or trajectory: test
    products' instructions never reach the tokenizer."""
    from eef.paths import DataNotFoundError, data_dir as _dd
    path = Path(_dd(data_dir)) / "webshop" / "products_1k.jsonl"
    if not path.exists():
        raise DataNotFoundError(f"{path} not found: get the WebShop data first (eef data "
                                "download webshop) or set EEF_DATA_DIR")
    # the env's fixed interface words, repeated so that each is a token of its own
    for _ in range(200):
        yield ("Instruction: [SEP] WebShop [SEP] Search Back to Search < Prev Next > "
               "Description Features Reviews Buy Now search[ click[ ] Thought: Action: "
               "Observation: Page 1 (Total results: 50) Your score (min 0.0, max 1.0) "
               "i need i want i am looking for find me with and price lower than dollars")
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            p = d.get("product") or {}
            yield f"{d['id']} [SEP] {p.get('Title') or p.get('name', '')} [SEP] {p.get('Price', '')}"
            yield d.get("contents", "")
            yield str(p.get("Description", ""))
            for b in p.get("BulletPoints") or []:
                yield str(b)
            for name, values in (p.get("options") or {}).items():
                yield f"{name} [SEP] " + " [SEP] ".join(map(str, values))
                yield " ".join(f"click[{v}]" for v in values)
            yield f"click[{d['id']}] click[{str(d['id']).lower()}]"


def identifiers(data_dir: DataDir = None) -> list[str]:
    """The catalogue's ASINs (upper case, as pages show them), sorted: added tokens."""
    from eef.paths import data_dir as _dd
    path = Path(_dd(data_dir)) / "webshop" / "products_1k.jsonl"
    with open(path, encoding="utf-8") as f:
        return sorted({str(json.loads(line)["id"]).upper() for line in f if line.strip()})


def corpus(cfg: PretrainConfig, data_dir: DataDir = None) -> Iterator[Trajectory]:
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


def env_copy_drills(data_dir: DataDir, n: int, seed: int) -> Iterator[Trajectory]:
    """``copy_drills`` on the WebShop env of ``data_dir``."""
    from eef.envs.webshop import WebShopEnv
    return copy_drills(WebShopEnv(str(data_dir) if data_dir else None), n, seed)


CURRICULUM = Curriculum(
    env="webshop", texts=texts, identifiers=identifiers, extra_tokens=("[SEP]",),
    texts_what="webshop catalogue text and the action vocabulary only (no instructions, "
               "expert or test trajectories)",
    corpus=corpus, copy_drills=env_copy_drills,
    data_files=(("products_1k.jsonl", "items_shuffle_1000.json"), ("items_ins_v2_1000.json",),
                ("split.json",)))
