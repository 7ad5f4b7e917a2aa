"""How much should a hit's rank count against its title?  A pick that weighs the model's title
PMI (``benchmarks/lm_picks.py``) against WebShop's rank, its weight fit on train goals whose
product the model never trained on, then measured on the test pages.

    python benchmarks/rank_pmi_fit.py hf:MODEL [--trained OK.jsonl] [--quick] [--json]

``OK.jsonl``: the trajectories ``MODEL`` was fine-tuned on (leave it out for the pretrained
model: every train product is then held out).  The fit uses the pick probe's pages
(``probes.picks.webshop_pick_pages``: the oracle's first search, plus ``--queries`` searches with
random instruction words) of up to ``--per-product`` train goals per target product that no
trajectory of ``OK.jsonl`` is a goal of: the model saw neither those goals nor their products.
Scores: ``probes.picks.rank_pmi_index`` (PMI + ``rank_bonus``, under the price cap), both bonus
forms over a grid of weights; the best (form, weight) on the fit pages (ties to the smaller
weight) is then measured on the test pages of ``lm_picks.py``, beside the first hit and PMI alone.
References on both page sets: the first hit, the first hit under the price cap (the largest
weight), ``rule_pick`` (word overlap) and PMI alone.  JSON keys: ``fit_pages``,
``fit_products``, ``form``, ``weight``, ``curve`` (fit accuracy per form and weight), and per
page set (``fit_``, ``test_``): ``accuracy`` (the fitted pick; ``fit_accuracy``,
``test_accuracy``), ``first_hit``, ``first_under_cap``, ``word_overlap``, ``pmi``, plus
``test_pages``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _util import emit, parser, table

#: rank weights tried; the last is the rank alone under the price cap (PMI breaks no tie)
GRID = [0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 1e6]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("model", help="hf: model (a LoRA adapter directory works)")
    p.add_argument("--trained", default=None,
                   help="JSONL of the trajectories MODEL trained on (none: a model that saw "
                        "no WebShop goal, so every train product is held out)")
    p.add_argument("--per-product", type=int, default=3,
                   help="fit goals per held-out product (quick: 1)")
    p.add_argument("--queries", type=int, default=1,
                   help="extra random-word searches per fit goal (pick probe's queries=)")
    a = p.parse_args()
    from eef.envs.webshop import WebShopEnv
    from eef.models.hf import load_model_and_tokenizer
    from probes.picks import (_page_hits, lm_title_scores, rank_pmi_index, rule_pick,
                              webshop_pick_pages)

    t0 = time.time()
    env = WebShopEnv()
    seen: set[str] = set()
    trained = Path(a.trained or "")
    if a.trained and not trained.is_file():
        p.error(f"--trained {trained}: no such file")
    for n, line in enumerate(trained.read_text().splitlines() if a.trained else [], 1):
        if line.strip():
            try:
                seen.add(env.goal(json.loads(line)["task_id"]).asin)
            except (ValueError, KeyError, TypeError) as e:  # bad JSON, no task, unknown
                p.error(f"{trained}:{n}: not a trajectory of a WebShop goal ({e})")
    per_product: dict[str, list[str]] = {}
    for t in env.tasks("train"):
        asin = env.goal(t.id).asin
        if asin not in seen and len(per_product.setdefault(asin, [])) < (
                1 if a.quick else a.per_product):
            per_product[asin].append(t.id)
    goals = [g for ids in per_product.values() for g in ids]
    fit = [pg for pg in webshop_pick_pages(env, "train", queries=a.queries, only=goals)
           if pg.target_listed]
    test = [pg for pg in webshop_pick_pages(env, "test", limit=30 if a.quick else None)
            if pg.target_listed]
    print(f"{len(seen)} trained products; fit on {len(fit)} pages of {len(goals)} goals of "
          f"{len(per_product)} held-out products; test {len(test)} pages", flush=True)

    spec = a.model[3:] if a.model.startswith("hf:") else a.model
    model, tok = load_model_and_tokenizer(spec, dtype="auto")
    model.eval()

    def scored(pages):
        return lm_title_scores(model, tok, [(pg.context.instruction, [h[1] for h in _page_hits(pg)])
                                            for pg in pages])

    def accuracy(pages, scores, weight, form):
        return sum(pg.listed[rank_pmi_index(s["pmi"], pg.context.instruction,
                                            [h[2] for h in _page_hits(pg)], weight, form)]
                   == pg.target for pg, s in zip(pages, scores)) / max(1, len(pages))

    fs, ts = scored(fit), scored(test)
    grid = [(accuracy(fit, fs, w, form), -w, form) for form in ("log", "first") for w in GRID]
    best_acc, neg_w, form = max(grid)
    w = -neg_w

    def first_hit(pages):
        return sum(pg.listed[0] == pg.target for pg in pages) / max(1, len(pages))

    def rule(pages):
        return sum(rule_pick(pg) == pg.target for pg in pages) / max(1, len(pages))

    rows = {"fit": [first_hit(fit), accuracy(fit, fs, GRID[-1], "log"), rule(fit),
                    accuracy(fit, fs, 0.0, "log"), best_acc],
            "test": [first_hit(test), accuracy(test, ts, GRID[-1], "log"), rule(test),
                     accuracy(test, ts, 0.0, "log"), accuracy(test, ts, w, form)]}
    table(f"{a.model}: picks, rank weighed against title PMI ({form}, weight {w:g})",
          ["pages", "n", "first hit", "first under cap", "word overlap", "PMI (capped)",
           "PMI + rank"],
          [[k, len(fit if k == "fit" else test), *v] for k, v in rows.items()])
    curve = {f: {f"{g:g}": round(acc, 4) for g, (acc, _, ff) in
                 zip(GRID, [x for x in grid if x[2] == f])} for f in ("log", "first")}
    print("fit accuracy by weight", curve)
    emit({"model": a.model, "fit_pages": len(fit), "fit_products": len(per_product),
          "form": form, "weight": w, "fit_accuracy": best_acc, "fit_first_hit": rows["fit"][0],
          "fit_first_under_cap": rows["fit"][1], "fit_word_overlap": rows["fit"][2],
          "fit_pmi": rows["fit"][3], "test_pages": len(test), "test_accuracy": rows["test"][4],
          "test_first_hit": rows["test"][0], "test_first_under_cap": rows["test"][1],
          "test_word_overlap": rows["test"][2], "test_pmi": rows["test"][3], "curve": curve,
          "seconds": time.time() - t0}, a.json)


if __name__ == "__main__":
    main()
