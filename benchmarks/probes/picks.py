"""The pick probe: results pages of WebShop goals, what a model clicks there, and reference
pickers that read the page (the first hit, ``rule_pick``, ``PageRanker``, a causal LM's
likelihood of each title: ``lm_title_scores``).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

from eef.experts.webshop import content_words, instruction_parts, parse_page, parse_price
from eef.presets.webshop import join_page, page_parts
from eef.react import parse_turn
from eef.trajectory import Step, Trajectory
from probes import ProbeError, greedy_turns

if TYPE_CHECKING:
    from eef.envs.webshop import WebShopEnv


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
        raise ProbeError(f"{t.task_id}: not a pick example (no results page before the pick)")
    page = t.steps[-2]
    head, hits = page_parts(page.observation)
    hits = list(hits)
    rng.shuffle(hits)
    page.observation = join_page(head, hits)
    return t


def webshop_pick_pages(env: "WebShopEnv", split: str, limit: int | None = None, *,
                       queries: int = 0, seed: int = 0,
                       only: Sequence[str] | None = None) -> list[PickPage]:
    """Per goal of ``split``: the oracle's search page -> ``search[<instruction phrase>]`` ->
    first results page, with the listed ASINs and the goal's target.  ``pick`` is the oracle's
    turn on that page (``click[target]`` when listed, else its ``click[next >]``).

    Goals of one product share its phrase, hence its page: the 4,690 train goals give 252
    distinct first pages listing the target.  ``queries=K`` adds, per goal, the first pages of
    K searches with 2-8 random words of the instruction's product phrase (in their order,
    seeded by ``seed``), kept when they list the target and their (page, instruction) pair is
    new: more distinct pages to train and to measure a pick on.  ``only``: these goals of
    ``split`` (in their order in the split), before ``limit``."""
    from eef.experts import make_expert
    oracle = make_expert(env, "oracle")
    rng = random.Random(f"pick-pages/{split}/{seed}")
    out: list[PickPage] = []
    seen: set[tuple[str, str]] = set()
    tasks = env.tasks(split)
    if only is not None:
        keep = set(only)
        unknown = keep - {t.id for t in tasks}
        if unknown:
            raise ProbeError(f"{len(unknown)} goal(s) not in {split}, e.g. {sorted(unknown)[0]}")
        tasks = [t for t in tasks if t.id in keep]
    for task in tasks[:limit]:
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
    hits = parse_page(page.context.steps[-1].observation).get("hits") or []
    if not hits:
        raise ProbeError(f"{page.context.task_id}: the context does not end on results")
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
            raise ProbeError(f"PageRanker groups must be a non-empty subset of "
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
            raise ProbeError("no pages listing their target to fit the ranker on")
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
            raise ProbeError("PageRanker.pick before fit")
        scores = self._x(page) @ self.w
        return page.listed[int(torch.argmax(scores))]

    def accuracy(self, pages: Sequence[PickPage]) -> float:
        """Share of the ``pages`` listing their target where ``pick`` clicks it (0 if none)."""
        listing = [p for p in pages if p.target_listed]
        return sum(self.pick(p) == p.target for p in listing) / len(listing) if listing else 0.0


def clicked_label(response: str) -> str | None:
    """The label of a ``click[...]`` action in a model's turn, else None."""
    m = re.fullmatch(r"click\[(.*)\]", parse_turn(response)[1].strip(), re.DOTALL)
    return m.group(1) if m else None



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


#: the text before a title in ``lm_title_scores`` (the instruction's line comes first when
#: the score is conditional)
TITLE_LEAD = "The product that fits best:"


def lm_title_scores(model: Any, tokenizer: Any, pages: Sequence[tuple[str, Sequence[str]]],
                    batch_size: int = 20) -> list[dict[str, list[float]]]:
    """Per ``(instruction, titles)`` page, per title: how likely a causal LM finds the title
    after the instruction.

    ``cond``: log P(title | ``Instruction: <instruction>\n`` + ``TITLE_LEAD``), summed over
    the title's tokens (its first 48); ``plain``: the same after ``TITLE_LEAD`` alone; ``pmi``:
    cond - plain (the domain-conditional PMI of Holtzman et al., 2021: what the instruction
    adds to the title's likelihood, so a short or common title does not win by being likely
    anyway); ``mean``: cond per title token.  The model reads the titles only: no price, no
    position."""
    import torch
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    plain = tokenizer(TITLE_LEAD, add_special_tokens=False)["input_ids"]
    rows: list[tuple[int, int, str, list[int], list[int]]] = []
    for i, (instruction, titles) in enumerate(pages):
        lead = tokenizer(f"Instruction: {instruction}\n{TITLE_LEAD}",
                         add_special_tokens=False)["input_ids"]
        for j, title in enumerate(titles):
            cont = tokenizer(" " + title, add_special_tokens=False)["input_ids"][:48]
            rows += [(i, j, "cond", lead, cont), (i, j, "plain", plain, cont)]
    out: list[dict[str, list[float]]] = [
        {k: [0.0] * len(titles) for k in ("cond", "plain", "pmi", "mean")} for _, titles in pages]
    with torch.inference_mode():
        for b in range(0, len(rows), batch_size):
            chunk = rows[b:b + batch_size]
            seqs = [r[3] + r[4] for r in chunk]
            n = max(map(len, seqs))
            ids = torch.tensor([q + [pad] * (n - len(q)) for q in seqs])
            mask = torch.tensor([[1] * len(q) + [0] * (n - len(q)) for q in seqs])
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(),
                                     -1)
            for k, (i, j, kind, prompt, cont) in enumerate(chunk):
                pos = torch.arange(len(prompt) - 1, len(prompt) + len(cont) - 1)
                out[i][kind][j] = float(logp[k, pos, torch.tensor(cont)].sum())
                if kind == "cond":
                    out[i]["mean"][j] = out[i][kind][j] / max(1, len(cont))
    for sc in out:
        sc["pmi"] = [c - u for c, u in zip(sc["cond"], sc["plain"])]
    return out


def best_index(scores: Sequence[float], among: Sequence[int] | None = None) -> int:
    """The index of the largest of ``scores`` (of those in ``among``, default all); ties to the
    higher hit."""
    return max(among or range(len(scores)), key=lambda i: (scores[i], -i))


def rank_bonus(n: int, weight: float, form: str = "log") -> list[float]:
    """What a hit's position adds to its title score in ``rank_pmi_index``: ``log``,
    ``-weight * log(1 + i)`` for hit ``i`` (0 = the first); ``first``, ``weight`` for the first
    hit only."""
    if form == "log":
        return [-weight * math.log1p(i) for i in range(n)]
    if form == "first":
        return [weight if i == 0 else 0.0 for i in range(n)]
    raise ProbeError(f"rank bonus form must be 'log' or 'first', not {form!r}")


def rank_pmi_index(pmi: Sequence[float], instruction: str, prices: Sequence[str],
                   weight: float, form: str = "log") -> int:
    """The hit with the largest title PMI + ``rank_bonus`` among those under the instruction's
    price cap: the title evidence weighed against WebShop's rank (``weight`` 0: PMI alone)."""
    bonus = rank_bonus(len(pmi), weight, form)
    return best_index([x + b for x, b in zip(pmi, bonus)], under_cap(instruction, prices))


def under_cap(instruction: str, prices: Sequence[str]) -> list[int]:
    """Indices of the ``prices`` under the instruction's price cap (all when it has none, or
    when none is under it), as ``rule_pick`` filters."""
    cap = instruction_parts(instruction)[2]
    vals = [parse_price(x) for x in prices]
    return [i for i, v in enumerate(vals) if cap is None or (v is not None and v < cap)] \
        or list(range(len(vals)))
