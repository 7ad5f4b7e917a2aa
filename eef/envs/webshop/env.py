"""WebShop's text mode, re-implemented in-process (no Flask, no browser, no Java).

Pages and their observations (visible strings joined by `` [SEP] ``):

* search:  ``WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search``
* results: ``Back to Search [SEP] [< Prev [SEP]] Page p (Total results: n) [SEP] [Next > [SEP]]``
  then per hit ``ASIN [SEP] Title [SEP] $price`` (10 per page, top 50 BM25 hits)
* item:    ``Back to Search [SEP] < Prev [SEP]`` per option group ``name [SEP] value ...``, then
  ``Title [SEP] Price: $.. [SEP] Rating: .. [SEP] Description [SEP] Features [SEP] Reviews
  [SEP] Buy Now``
* sub-pages (Description / Features / Reviews): ``Back to Search [SEP] < Prev [SEP] <text>``
* done:    ``Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] <r>``

As in WebShop's text env the instruction is shown on the search page (``instruction_on_every_page``
repeats it on every page), and ``< Prev`` on a results page appears from page 2.

Actions: ``search[query]`` and ``click[label]``; the label is matched case-insensitively against
the page's clickables (``back to search``, ``next >``, ``< prev``, an ASIN on the page, an option
value, ``description``, ``features``, ``reviews``, ``buy now``).  As in WebShop's text env a
search is accepted from any page unless ``search_anywhere=False``.  A bad action (empty, unknown
verb, not clickable here, too long, ...) leaves the page as it is and returns it prefixed by
``Invalid action: <reason> [SEP]`` with ``info["valid"] = False``; the step counts.  After
``max_steps`` steps without a purchase the episode ends with reward 0 (``info["truncated"]``).

``shuffle_hits=True`` (not WebShop's) lists each results page's hits in an order drawn from the
task and the query (the same search shows the same order, so replays and snapshots agree): a
page's set of hits stays the search's, its ranking no longer shows.
"""

from __future__ import annotations

import copy
import random
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from eef.envs.base import (EpisodeNotStartedError, StepResult, Task, TextEnv, UnknownTaskError,
                           Split)
from eef.envs.webshop.data import Catalogue, Goal, load_catalogue
from eef.envs.webshop.reward import purchase_reward
from eef.envs.webshop.search import get_index

SEP = " [SEP] "
PER_PAGE = 10
MAX_ACTION_CHARS = 500
BACK_TO_SEARCH, NEXT_PAGE, PREV_PAGE, BUY_NOW = "back to search", "next >", "< prev", "buy now"
SUB_PAGES = {"description": "Description", "features": "Features", "reviews": "Reviews"}
_ACTION = re.compile(r"^\s*([A-Za-z_]+)\s*\[(.*)\]\s*$", re.DOTALL)


@dataclass
class _State:
    task_id: str
    page: str = "search"              # search | results | item | sub | done
    keywords: str | None = None
    results: list[str] = field(default_factory=list)
    page_num: int = 1
    asin: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    sub: str | None = None
    steps: int = 0
    limit_from: int = 0               # the step limit counts steps after this many
    done: bool = False
    score: float = 0.0
    reward_info: dict[str, Any] | None = None


class WebShopEnv(TextEnv):
    name = "webshop"
    supports_snapshot = True
    restarts_step_limit = True

    def __init__(self, data_dir: str | None = None, max_steps: int = 15, tagger: str = "rule",
                 search_anywhere: bool = True, instruction_on_every_page: bool = False,
                 shuffle_hits: bool = False):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        for name, value in (("search_anywhere", search_anywhere),
                            ("instruction_on_every_page", instruction_on_every_page),
                            ("shuffle_hits", shuffle_hits)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        self.max_steps = max_steps
        self.tagger = tagger
        self.search_anywhere = search_anywhere
        self.instruction_on_every_page = instruction_on_every_page
        self.shuffle_hits = shuffle_hits
        self.cat: Catalogue = load_catalogue(str(data_dir) if data_dir else None)
        asins = list(self.cat.contents)
        self.index = get_index(asins, [self.cat.contents[a] for a in asins])
        self._tasks: dict[str, Task] | None = None
        self._s: _State | None = None
        self._goal: Goal | None = None

    # -- tasks -----------------------------------------------------------------------------
    def _all_tasks(self) -> dict[str, Task]:
        if self._tasks is None:  # shared by every env of the process over this catalogue
            self._tasks = getattr(self.cat, "_tasks", None)
        if self._tasks is None:
            self._tasks = self.cat._tasks = {g.task_id: Task(g.task_id, self.name, g.split, g.instruction_text, {
                "asin": g.asin, "goal_index": g.index, "attributes": list(g.attributes),
                "goal_options": dict(g.goal_options), "price_upper": g.price_upper,
                "query": g.query, "category": g.category, "product_category": g.product_category,
            }) for g in self.cat.goals}
        return self._tasks

    def tasks(self, split: Split = "all") -> list[Task]:
        if split not in ("train", "test", "all"):
            raise ValueError(f"webshop has splits train | test | all, not {split!r}")
        ts = self._all_tasks().values()
        return list(ts) if split == "all" else [t for t in ts if t.split == split]

    def task(self, task_id: str) -> Task:
        try:
            return self._all_tasks()[task_id]
        except KeyError:
            raise UnknownTaskError(f"unknown webshop task id: {task_id!r} "
                                   "(ids look like webshop/B07B6DVG41/0; see `eef tasks webshop`)")

    def goal(self, task_id: str) -> Goal:
        self.task(task_id)
        return self.cat.goal_by_id[task_id]

    # -- episode ---------------------------------------------------------------------------
    def reset(self, task_id: str) -> str:
        self._goal = self.goal(task_id)
        self._s = _State(task_id)
        return self._render()

    def snapshot(self) -> Any:
        if self._s is None:
            raise EpisodeNotStartedError("snapshot() before reset()")
        return copy.deepcopy(self._s)

    def restore(self, snap: Any) -> str:
        if not isinstance(snap, _State):
            raise TypeError("restore() takes a snapshot() of a WebShopEnv")
        self._goal = self.goal(snap.task_id)
        self._s = copy.deepcopy(snap)
        return self._render()

    def restart_step_limit(self) -> None:
        self.state.limit_from = self.state.steps

    @property
    def state(self) -> _State:
        if self._s is None:
            raise EpisodeNotStartedError("call reset(task_id) before step()")
        return self._s

    def clickables(self) -> list[str]:
        s = self.state
        if s.page == "results":
            out = [BACK_TO_SEARCH]
            if s.page_num > 1:
                out.append(PREV_PAGE)
            if s.page_num * PER_PAGE < len(s.results):
                out.append(NEXT_PAGE)
            return out + [a.lower() for a in self._page_hits()]
        if s.page == "item":
            p = self.cat.products[s.asin]
            vals = [v for vs in p.get("options", {}).values() for v in vs]
            return [BACK_TO_SEARCH, PREV_PAGE, *vals, *SUB_PAGES, BUY_NOW]
        if s.page == "sub":
            return [BACK_TO_SEARCH, PREV_PAGE]
        return []

    def available_actions(self) -> list[str]:
        s = self.state
        acts = ["search[<query>]"] if s.page == "search" or (
            self.search_anywhere and s.page != "done") else []
        return acts + [f"click[{c}]" for c in self.clickables()]

    def step(self, action: str) -> StepResult:
        s = self.state
        if s.done:
            return self._result(False, "the episode is over", 0.0)
        s.steps += 1
        reason = self._apply(action if isinstance(action, str) else "")
        reward = s.score if s.done else 0.0  # only the purchase step is rewarded
        if not s.done and s.steps - s.limit_from >= self.max_steps:
            s.done = True
        return self._result(reason is None, reason, reward)

    # -- internals -------------------------------------------------------------------------
    def _apply(self, action: str) -> str | None:
        """Apply an action; return None when valid, else a short reason (state unchanged)."""
        if len(action) > MAX_ACTION_CHARS:
            return f"action longer than {MAX_ACTION_CHARS} characters"
        m = _ACTION.match(action)
        if not m:
            return "expected search[...] or click[...]" if action.strip() else "empty action"
        verb, arg = m.group(1).lower(), m.group(2).strip().lower()
        s = self.state
        if verb == "search":
            if not arg:
                return "empty search query"
            if s.page != "search" and not self.search_anywhere:
                return "no search bar on this page (click[back to search] first)"
            s.page, s.keywords, s.page_num, s.asin, s.options, s.sub = \
                "results", arg, 1, None, {}, None
            s.results = self.index.search(arg)
            if self.shuffle_hits:
                s.results = _shuffled_pages(s.results, f"{s.task_id}\n{arg}")
            return None
        if verb != "click":
            return f"unknown action {verb!r}"
        if arg not in self.clickables():
            return f"'{_short(arg)}' is not clickable on this page"
        if arg == BACK_TO_SEARCH:
            s.page, s.keywords, s.results, s.asin, s.options, s.sub = \
                "search", None, [], None, {}, None
        elif arg == NEXT_PAGE:
            s.page_num += 1
        elif arg == PREV_PAGE:
            if s.page == "results":
                s.page_num -= 1
            elif s.page == "item":
                s.page, s.asin, s.options = "results", None, {}
            else:  # sub page -> item page
                s.page, s.sub = "item", None
        elif s.page == "results":
            s.page, s.asin, s.options = "item", arg.upper(), {}
        elif arg in SUB_PAGES:
            s.page, s.sub = "sub", SUB_PAGES[arg]
        elif arg == BUY_NOW:
            self._purchase()
        else:  # an option value: select it in its group (the last group listing it, as WebShop)
            p = self.cat.products[s.asin]
            group = [n for n, vs in p.get("options", {}).items() if arg in vs][-1]
            s.options[group] = arg
        return None

    def _purchase(self) -> None:
        s, g = self.state, self._goal
        assert g is not None and s.asin is not None
        info = purchase_reward(self.cat.products[s.asin], self.cat.prices[s.asin], s.options,
                               attributes=g.attributes, goal_options=g.goal_options,
                               price_upper=g.price_upper, query=g.query,
                               product_category=g.product_category, name=g.name,
                               tagger=self.tagger)
        s.page, s.done, s.score, s.reward_info = "done", True, info.reward, info.__dict__

    def _page_hits(self) -> list[str]:
        s = self.state
        return s.results[(s.page_num - 1) * PER_PAGE: s.page_num * PER_PAGE]

    def _render(self) -> str:
        s, g = self.state, self._goal
        assert g is not None
        if s.page == "search":
            return SEP.join(["WebShop", "Instruction:", g.instruction_text, "Search"])
        head = ["Instruction:", g.instruction_text] if self.instruction_on_every_page else []
        if s.page == "done":
            return SEP.join(["Thank you for shopping with us!", "Your score (min 0.0, max 1.0)",
                             f"{s.score:.2f}"])
        if s.page == "results":
            parts = head + ["Back to Search"]
            if s.page_num > 1:
                parts.append("< Prev")
            parts.append(f"Page {s.page_num} (Total results: {len(s.results)})")
            if s.page_num * PER_PAGE < len(s.results):
                parts.append("Next >")
            for a in self._page_hits():
                p = self.cat.products[a]
                parts += [a, p["Title"], p["Price"]]
            return SEP.join(parts)
        p = self.cat.products[s.asin]
        parts = head + ["Back to Search", "< Prev"]
        if s.page == "item":
            for name, vals in p.get("options", {}).items():
                parts += [name, *vals]
            parts += [p["Title"], f"Price: {p['Price']}", f"Rating: {p.get('Rating', 'N.A.')}",
                      "Description", "Features", "Reviews", "Buy Now"]
        elif s.sub == "Description":
            parts.append(p.get("Description", ""))
        elif s.sub == "Features":
            parts += [b.strip() for b in p.get("BulletPoints") or []]
        else:
            for r in p.get("Reviews") or []:
                parts += [str(r.get("title", "")), str(r.get("score", "")), str(r.get("body", ""))]
        return SEP.join(x for x in parts if x != "")

    def _result(self, valid: bool, reason: str | None, reward: float) -> StepResult:
        s = self.state
        obs = self._render()
        if not valid:
            obs = f"Invalid action: {reason}.{SEP}{obs}"
        info: dict[str, Any] = {"valid": valid, "score": s.score, "page": s.page,
                                "steps": s.steps}
        if s.done:
            info["success"] = s.score >= 1.0 - 1e-9
            info["truncated"] = s.reward_info is None
            if s.reward_info is not None:
                info["reward_info"] = s.reward_info
        return StepResult(obs, float(reward), s.done, info)


def _short(text: str, n: int = 40) -> str:
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= n else text[: n - 3] + "..."


def _shuffled_pages(hits: list[str], key: str) -> list[str]:
    """``hits`` with each page of ``PER_PAGE`` permuted by a generator seeded from ``key``."""
    rng = random.Random(zlib.crc32(key.encode("utf-8")))
    out: list[str] = []
    for i in range(0, len(hits), PER_PAGE):
        page = hits[i:i + PER_PAGE]
        rng.shuffle(page)
        out += page
    return out
