"""Scripted WebShop experts.

Each expert is a policy: from the task and the steps so far (a partial trajectory) it decides the
next ``Thought: ... Action: ...`` turn.  It keeps no hidden state, so it can act from any state,
and its trajectories are reproducible.

* ``oracle`` knows the target product and options.  It searches with the instruction, pages
  through the results (``Next >``) until it sees the target, and falls back to a search for the
  target's title; then it picks the goal's options and buys.
* ``heuristic`` does not know the target (a stand-in for an LLM expert such as GPT-4).  It
  searches with the instruction's product phrase, scores the listed products by word overlap with
  the instruction and by price, opens the best candidate (going to ``Next >`` when the page holds
  no good one), selects the options the instruction names (closest listed value), checks the
  price, goes back for another candidate when over budget, and buys.  Its failures are natural:
  a similar but wrong product, an option it could not find, over budget, out of steps.
  With ``name_rejected=True`` its thoughts say which product it turns down ("B07... has no
  size L; I look for another one.") and, back on the results, which of the listed ones it has
  turned down before its next pick ("Not B07...; B08... looks closest to what I need."), so an
  agent trained on a window that no longer shows the rejected click still reads what was
  rejected (with identifier aliases: "#2 has no size L", "Not #2; #5 looks closest ...").
  With ``quote_pick=True`` a pick's thought first quotes the chosen hit's title and the
  instruction words it holds ('"Men's Lace-Up Sneakers ..." has sneakers, lace: #5 looks
  closest ...'), so the choice is copied from the page before the identifier is written.
* ``noisy`` is ``heuristic`` that slips: at each step, with probability ``slip`` (seeded by
  task, step and seed), it takes ``random``'s action instead, then carries on from wherever that
  led.  A weaker second expert whose failures hold detours and recoveries.
* ``late`` is ``oracle`` that errs late: it sees the target as ``oracle`` does and reaches
  its page, then, per requested option, with probability ``option_error`` selects a value of
  that group the goal's value does not cover, and with probability ``dawdle`` (per episode)
  stops after a seeded number of the options and browses the item's sub-pages (Description,
  Features, Reviews and ``< Prev`` back) until the step limit ends the episode unbought.  A
  weaker second expert (the role of the paper's GPT-3.5) whose failures all come after the
  right product is found.
* ``random`` clicks / searches uniformly at random among the page's actions (a floor).

``failure_kind`` says why an episode failed; ``failure_stage`` sorts failures into early (a
wrong product, out of steps before the target) and late (the target reached: a wrong option,
out of steps on its pages) and ``failure_breakdown`` counts them over episodes.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from rapidfuzz import fuzz

from eef.envs.webshop.env import SEP, SUB_PAGES, WebShopEnv
from eef.envs.webshop.reward import option_matches
from eef.policy import Sampling
from eef.react import render_turn
from eef.trajectory import Trajectory

_ASIN = re.compile(r"^[A-Z0-9]{10}$")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOP = set("""a an and are as at be but by for if in into is it no not of on or such that the
their then there these they this to was will with i me my need want find looking am im i'm
would like please buy get some one also lower than price dollars""".split())
MAX_PAGES = 3


def parse_page(obs: str) -> dict:
    """Recognise a WebShop text page: kind, product hits / options / price."""
    parts = [p.strip() for p in obs.split(SEP.strip())]
    parts = [p for p in parts if p]
    if parts and parts[0].startswith("Invalid action:"):
        parts = parts[1:]
    if parts and parts[0] == "Instruction:":
        parts = parts[2:]
    if not parts:
        return {"kind": "unknown"}
    if parts[0] == "WebShop":
        return {"kind": "search"}
    if parts[0].startswith("Thank you"):
        return {"kind": "done"}
    page = next((p for p in parts if p.startswith("Page ") and "Total results" in p), None)
    if page is not None:
        i = parts.index(page)
        rest = parts[i + 1:]
        if rest and rest[0] == "Next >":
            rest = rest[1:]
        hits = [(rest[j], rest[j + 1], rest[j + 2]) for j in range(0, len(rest) - 2, 3)
                if _ASIN.match(rest[j])]
        m = re.search(r"Page (\d+)", page)
        return {"kind": "results", "hits": hits, "page": int(m.group(1)) if m else 1,
                "has_next": "Next >" in parts}
    if "Buy Now" in parts:
        body = parts[2:]  # after Back to Search, < Prev
        try:
            price_i = next(i for i, p in enumerate(body) if p.startswith("Price: "))
        except StopIteration:
            return {"kind": "unknown"}
        title = body[price_i - 1]
        return {"kind": "item", "title": title, "price": body[price_i][len("Price: "):],
                "option_text": body[: price_i - 1]}
    return {"kind": "sub"}


def parse_price(text: str) -> float | None:
    vals = [float(v) for v in re.findall(r"\$\s*([0-9]+(?:\.[0-9]+)?)", text.replace(",", ""))]
    return min(vals) if vals else None


def instruction_parts(instruction: str) -> tuple[str, dict[str, str], float | None]:
    """(product phrase, {option: value}, price cap) from a WebShop goal instruction."""
    text = instruction
    cap = None
    m = re.search(r",? and price lower than ([0-9.]+) dollars", text)
    if m:
        cap = float(m.group(1))
        text = text[: m.start()]
    options: dict[str, str] = {}
    opt_start = None
    for mm in re.finditer(r"(?:with |, and )([a-z][a-z0-9 &'-]*?): ", text):
        opt_start = mm.start() if opt_start is None else opt_start
    if opt_start is not None:
        pairs = re.split(r", and ", text[opt_start + len(" with"):].strip())
        for pair in pairs:
            k, _, v = pair.partition(": ")
            if k and v:
                options[k.strip()] = v.strip()
        text = text[:opt_start]
    return text.strip(), options, cap


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class _ScriptedWebShop:
    spec = "expert:?"

    def __init__(self, env: WebShopEnv, **kw):
        if not isinstance(env, WebShopEnv):
            raise TypeError(f"{type(self).__name__} needs a WebShopEnv, got {type(env).__name__}")
        self.env = env

    def act(self, contexts: Sequence[Trajectory], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        seeds = list(seeds) if seeds is not None else [0] * len(contexts)
        return [render_turn(*self.decide(c, s)) for c, s in zip(contexts, seeds)]

    def decide(self, ctx: Trajectory, seed: int) -> tuple[str, str]:
        raise NotImplementedError


class OracleExpert(_ScriptedWebShop):
    spec = "expert:oracle"

    def decide(self, ctx: Trajectory, seed: int) -> tuple[str, str]:
        goal = self.env.goal(ctx.task_id)
        target = goal.asin
        page = parse_page(ctx.observation)
        searches = [s.action for s in ctx.steps if s.action.startswith("search[")]
        if page["kind"] == "search":
            if searches:  # second search: the target's title
                title = self.env.cat.products[target]["Title"].lower()
                return "The target was not in the results; I search for its title.", f"search[{title}]"
            query, _, _ = instruction_parts(goal.instruction_text)
            return "I search for the product the instruction describes.", f"search[{query.lower()}]"
        if page["kind"] == "results":
            asins = [h[0] for h in page["hits"]]
            if target in asins:
                return f"{target} is the product I want.", f"click[{target}]"
            if page["has_next"] and page["page"] < 5:
                return "The target is not on this page; I look at the next one.", "click[next >]"
            return "The target is not in these results; I search again.", "click[back to search]"
        if page["kind"] == "item":
            clicked = _clicks_on_this_item(ctx)
            for name, value in goal.goal_options.items():
                if value not in clicked:
                    return f"I select {name}: {value}.", f"click[{value}]"
            return "All options are set; I buy it.", "click[buy now]"
        if page["kind"] == "sub":
            return "Back to the product.", "click[< prev]"
        return "I go back to the search page.", "click[back to search]"


class HeuristicExpert(_ScriptedWebShop):
    spec = "expert:heuristic"

    def __init__(self, env: WebShopEnv, min_overlap: float = 0.4, rank_weight: float = 0.1,
                 option_lapse: float = 0.1, name_rejected: bool = False,
                 quote_pick: bool = False, **kw):
        """``min_overlap``: word-overlap score a result needs before it is opened rather than
        paging on; ``rank_weight``: weight of the search rank in that score;
        ``option_lapse``: probability (fixed per task) of forgetting the last of >= 2 requested
        options, as LLM experts do; ``name_rejected``: thoughts name the products turned down;
        ``quote_pick``: the thought before a pick quotes the start of the chosen hit's title and
        the instruction words it holds (the actions are the same either way).  Defaults were
        chosen on train goals only."""
        super().__init__(env)
        for name, flag in (("name_rejected", name_rejected), ("quote_pick", quote_pick)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, not {flag!r}")
        self.min_overlap = min_overlap
        self.rank_weight = rank_weight
        self.option_lapse = option_lapse
        self.name_rejected = name_rejected
        self.quote_pick = quote_pick

    def _score(self, kind: list[str], attrs: list[str], title: str, price: str,
               cap: float | None, rank: int) -> float:
        """Word overlap with the product kind (weight 2) and the attributes (weight 1), a small
        bonus for the search rank, a penalty when over budget."""
        hit = _holder(title)
        total = 2 * len(kind) + len(attrs)
        if not total:
            return 0.0
        s = (2 * sum(map(hit, kind)) + sum(map(hit, attrs))) / total + self.rank_weight * (1 - rank / 10)
        p = parse_price(price)
        if cap is not None and p is not None and p > cap:
            s -= 0.5
        return s

    def decide(self, ctx: Trajectory, seed: int) -> tuple[str, str]:
        task = self.env.task(ctx.task_id)
        phrase, options, cap = instruction_parts(task.instruction)
        kind_text, _, attr_text = re.sub(r"^(find me|i need|i want|i am looking for)\s+", "",
                                         phrase.lower()).partition(" with ")
        kind, attrs = content_words(kind_text), content_words(attr_text)
        page = parse_page(ctx.observation)
        opened = [s.action[6:-1].upper() for s in ctx.steps if s.action.startswith("click[")
                  and s.action[6:-1].upper() in self.env.cat.products]
        tried = set(opened)
        # the product whose page (or sub-page) this is: the last one opened
        this = opened[-1] if opened and self.name_rejected else "This product"
        if page["kind"] == "search":
            q = " ".join(content_words(phrase) + list(options.values()))
            return f"I search for {q}.", f"search[{q}]"
        if page["kind"] == "results":
            ranked = sorted(((self._score(kind, attrs, t, p, cap, i), i, a) for i, (a, t, p)
                             in enumerate(page["hits"]) if a not in tried),
                            key=lambda x: (-x[0], x[1]))
            if ranked and (ranked[0][0] >= self.min_overlap or not page["has_next"]
                           or page["page"] >= MAX_PAGES):
                sc, _, asin = ranked[0]
                here = [a for a, _, _ in page["hits"] if a in tried]
                turned = f"Not {', '.join(here)}; " if here and self.name_rejected else ""
                if self.quote_pick:
                    title = next(t for a, t, _ in page["hits"] if a == asin)
                    turned += _quote(title, kind + attrs)
                return f"{turned}{asin} looks closest to what I need.", f"click[{asin}]"
            if page["has_next"] and page["page"] < MAX_PAGES:
                return "No product here matches well; I check the next page.", "click[next >]"
            return "Nothing fits; I search again.", "click[back to search]"
        if page["kind"] == "item":
            p = parse_price(page["price"])
            if cap is not None and p is not None and p > cap and len(tried) < 3:
                what = f"{this} costs" if self.name_rejected else "It costs"
                return (f"{what} {page['price']}, above the budget of {cap:.2f}; I go back.",
                        "click[< prev]")
            clicked = _clicks_on_this_item(ctx)
            listed = page["option_text"]
            wanted = list(options.items())
            if len(wanted) >= 2 and random.Random(f"lapse/{ctx.task_id}").random() < self.option_lapse:
                wanted = wanted[:-1]
            for name, value in wanted:
                best = _closest(value, listed)
                if best is None and len(tried) < 3:
                    return f"{this} has no {name} {value}; I look for another one.", "click[< prev]"
                if best is not None and best not in clicked:
                    return f"The instruction asks for {name}: {value}; I select {best}.", f"click[{best}]"
            return "The product and options fit the instruction; I buy it.", "click[buy now]"
        if page["kind"] == "sub":
            return "Back to the product page.", "click[< prev]"
        return "I start over from the search page.", "click[back to search]"


def _holder(title: str):
    """Whether a word is in ``title`` (its content words, a trailing "s" ignored)."""
    tw = set(content_words(title))
    tw |= {w.rstrip("s") for w in tw}
    return lambda w: w in tw or w.rstrip("s") in tw


def _quote(title: str, words: list[str], n: int = 8) -> str:
    """The start of a hit's title in quotes and the instruction ``words`` it holds, as the
    lead of a pick's thought: '"Men's Lace-Up Sneakers ..." has sneakers, lace: '."""
    head = title.split()
    short = " ".join(head[:n]) + (" ..." if len(head) > n else "")
    held = list(dict.fromkeys(filter(_holder(title), words)))
    return f'"{short}" has {", ".join(held)}: ' if held else f'"{short}" has none of my words: '


def _item_clicks(ctx: Trajectory) -> list[str]:
    """Labels clicked (validly) since the current item page was opened from the results, in
    order."""
    out: list[str] = []
    for i in range(len(ctx.steps) - 1, -1, -1):
        s = ctx.steps[i]
        before = ctx.steps[i - 1].observation if i else ctx.initial_observation
        if parse_page(before)["kind"] != "item" and parse_page(before)["kind"] != "sub":
            break  # this click opened the item page
        a = s.action.lower()
        if s.valid and a.startswith("click["):
            out.append(a[6:-1])
    return out[::-1]


def _clicks_on_this_item(ctx: Trajectory) -> set[str]:
    """Labels clicked (validly) since the current item page was opened from the results."""
    return set(_item_clicks(ctx))


def _closest(value: str, listed: list[str]) -> str | None:
    if not listed:
        return None
    if value in listed:
        return value
    best = max(listed, key=lambda v: fuzz.token_set_ratio(v, value))
    return best if fuzz.token_set_ratio(best, value) >= 80 else None


class RandomExpert(_ScriptedWebShop):
    """Uniform over the page's actions (search uses random instruction words)."""

    spec = "expert:random"

    def decide(self, ctx: Trajectory, seed: int) -> tuple[str, str]:
        rng = random.Random(f"{ctx.task_id}/{len(ctx.steps)}/{seed}")
        page = parse_page(ctx.observation)
        if page["kind"] == "search":
            words = content_words(self.env.task(ctx.task_id).instruction)
            q = " ".join(rng.sample(words, min(3, len(words)))) or "product"
            return "", f"search[{q}]"
        if page["kind"] == "results":
            acts = ["back to search"] + (["next >"] if page["has_next"] else []) + \
                   [a for a, _, _ in page["hits"]]
        elif page["kind"] == "item":
            acts = ["back to search", "< prev", *page["option_text"], "description", "features",
                    "reviews", "buy now"]
        else:
            acts = ["back to search", "< prev"]
        return "", f"click[{rng.choice(acts)}]"


class NoisyExpert(HeuristicExpert):
    """``heuristic`` taking ``random``'s action at a share ``slip`` of its steps."""

    spec = "expert:noisy"

    def __init__(self, env: WebShopEnv, slip: float = 0.25, **kw):
        super().__init__(env, **kw)
        if not 0.0 <= slip <= 1.0:
            raise ValueError(f"slip must be in [0, 1], got {slip}")
        self.slip = slip
        self.random = RandomExpert(env)

    def decide(self, ctx: Trajectory, seed: int) -> tuple[str, str]:
        if random.Random(f"slip/{ctx.task_id}/{len(ctx.steps)}/{seed}").random() < self.slip:
            return self.random.decide(ctx, seed)
        return super().decide(ctx, seed)


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class LateExpert(OracleExpert):
    """``oracle`` whose failures come late: it sees the target (as ``oracle`` does), reaches its
    page, then errs on the options or runs out of steps there.

    Per requested option group, with probability ``option_error`` it selects a wrong value: one
    of the group's listed values that WebShop's reward does not count as the goal's (none when
    every other value would count, then it selects the right one).  With probability ``dawdle``
    (per episode) it selects only the first k of the requested options (k seeded, 0 to all) and
    then browses the item's sub-pages (Description, Features, Reviews, each followed by
    ``< Prev``) without buying, until the env's step limit ends the episode.  Its choices are
    fixed per (task, episode seed); the episode seed is ``seeds[i] - len(context.steps)``, as
    ``eef.rollout.episode.run_episode`` passes ``seed + step index``.  Defaults were chosen on
    train goals for a win rate near ``heuristic``'s at ``max_steps`` 10 (docs/webshop.md)."""

    spec = "expert:late"

    def __init__(self, env: WebShopEnv, option_error: float = 0.3, dawdle: float = 0.35, **kw):
        super().__init__(env)
        self.option_error = _probability("option_error", option_error)
        self.dawdle = _probability("dawdle", dawdle)

    def act(self, contexts: Sequence[Trajectory], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        return [render_turn(*self.decide(c, (seeds[i] if seeds is not None else len(c.steps))
                                         - len(c.steps)))
                for i, c in enumerate(contexts)]

    def plan(self, task_id: str, seed: int = 0) -> tuple[dict[str, str], int | None]:
        """({option group: the wrong value it selects}, k: the options it selects before
        dawdling, None when it does not dawdle) of an episode with this seed."""
        goal = self.env.goal(task_id)
        product = self.env.cat.products[goal.asin]
        groups = product.get("options", {})
        wanted = list(goal.goal_options.values())
        wrong: dict[str, str] = {}
        for name, value in goal.goal_options.items():
            rng = random.Random(f"late/option/{task_id}/{name}/{seed}")
            if rng.random() < self.option_error:
                bad = [v for v in groups.get(name, []) if v != value
                       and not option_matches(product, wanted, {name: v})]
                if bad:
                    wrong[name] = rng.choice(bad)
        rng = random.Random(f"late/dawdle/{task_id}/{seed}")
        stop = rng.randint(0, len(wanted)) if rng.random() < self.dawdle else None
        return wrong, stop

    def decide(self, ctx: Trajectory, seed: int) -> tuple[str, str]:
        """The next turn; ``seed`` is the episode seed (see the class)."""
        goal = self.env.goal(ctx.task_id)
        page = parse_page(ctx.observation)
        if page["kind"] != "item" or page["title"] != self.env.cat.products[goal.asin]["Title"]:
            return super().decide(ctx, seed)
        wrong, stop = self.plan(ctx.task_id, seed)
        clicks = _item_clicks(ctx)
        picks = [(n, wrong.get(n, v)) for n, v in goal.goal_options.items()]
        for name, value in picks[:stop]:
            if value not in clicks:
                return f"I select {name}: {value}.", f"click[{value}]"
        if stop is None:
            return "All options are set; I buy it.", "click[buy now]"
        sub = list(SUB_PAGES)[sum(c in SUB_PAGES for c in clicks) % len(SUB_PAGES)]
        return f"Before buying I read its {sub}.", f"click[{sub}]"


def failure_kind(traj: Trajectory, env: WebShopEnv) -> str:
    """Why a WebShop episode failed: ``success``, ``out of steps`` (no purchase), ``wrong
    product``, ``wrong option``, ``over budget`` or ``attribute mismatch``."""
    if traj.success:
        return "success"
    bought = None
    for s in traj.steps:
        label = s.action[6:-1].upper() if s.action.lower().startswith("click[") else ""
        if s.valid and label in env.cat.products:
            bought = label
    if not traj.steps or traj.steps[-1].action.lower() != "click[buy now]" or bought is None:
        return "out of steps"
    goal = env.goal(traj.task_id)
    if bought != goal.asin:
        return "wrong product"
    if env.cat.prices[bought] > goal.price_upper:
        return "over budget"
    clicked = _clicks_on_this_item(traj.prefix(len(traj.steps) - 1))
    if any(v not in clicked for v in goal.goal_options.values()):
        return "wrong option"
    return "attribute mismatch"


def reached_target(traj: Trajectory, env: WebShopEnv) -> bool:
    """Whether the episode opened the goal's product page."""
    target = env.goal(traj.task_id).asin
    return any(s.valid and s.action.lower() == f"click[{target.lower()}]" for s in traj.steps)


#: ``failure_stage``'s labels, early failures first; ``LATE``: those after the target was reached
STAGES = ("success", "wrong product", "out of steps before the target",
          "right product, wrong option", "right product, other", "out of steps on the target")
LATE = frozenset(STAGES[3:])


def failure_stage(traj: Trajectory, env: WebShopEnv) -> str:
    """``failure_kind`` by where the episode went wrong: before the target's page (``wrong
    product``, ``out of steps before the target``) or after it (``right product, wrong
    option``, ``right product, other``: over budget or an attribute mismatch, ``out of steps
    on the target``: its page was opened, nothing bought)."""
    kind = failure_kind(traj, env)
    if kind in ("success", "wrong product", "wrong option"):
        return "right product, wrong option" if kind == "wrong option" else kind
    if kind == "out of steps":
        return "out of steps " + ("on" if reached_target(traj, env) else "before") + " the target"
    return "right product, other"


def failure_breakdown(trajs: Sequence[Trajectory], env: WebShopEnv) -> dict[str, int]:
    """Episodes per ``failure_stage``, every label in ``STAGES`` order (zeros kept), plus
    ``late``: the failures after the target was reached."""
    out = dict.fromkeys(STAGES, 0)
    for t in trajs:
        out[failure_stage(t, env)] += 1
    out["late"] = sum(out[k] for k in LATE)
    return out
