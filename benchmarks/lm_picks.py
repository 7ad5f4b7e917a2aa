"""Can the language model itself read which search hit fits?  The pick probe's results pages
(the oracle's first search per test goal, ``probes.picks``) scored by a causal LM's likelihood
of each hit's title after the instruction, against the reference pickers.

    python benchmarks/lm_picks.py [--model hf:smollm2-135m-instruct] [--quick] [--json]

Pickers, each on the test pages that list their target (share of them where it is picked):
``first_hit`` (WebShop's rank), ``rule_pick`` (title/instruction word overlap under the price
cap), ``ranker_pick`` (``PageRanker`` fit on the train pages: position, words, prices),
``lm_cond`` / ``lm_mean`` / ``lm_pmi`` (the title scores of ``probes.picks.lm_title_scores``:
summed, per token, and with the instruction's contribution only), and ``lm_pmi_capped`` (PMI
among the hits under the instruction's price cap, as ``rule_pick`` does).  A model directory
with a LoRA adapter (an agent) works too: its title likelihoods are then the agent's.
JSON keys: ``pages``, ``pages_with_target``, ``distinct_pages`` and one per picker.
"""

from __future__ import annotations

import time

from _util import emit, parser, table


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="hf:smollm2-135m-instruct",
                   help="hf: model (named, directory or LoRA adapter directory)")
    p.add_argument("--limit", type=int, default=None, help="first N test goals (quick: 30)")
    a = p.parse_args()
    from eef.envs.webshop import WebShopEnv
    from eef.models.hf import load_model_and_tokenizer
    from probes.picks import (PageRanker, _page_hits, best_index, lm_title_scores,
                              rank_pmi_index, rule_pick, webshop_pick_pages)

    t0 = time.time()
    env = WebShopEnv()
    limit = a.limit if a.limit is not None else (30 if a.quick else None)
    pages = webshop_pick_pages(env, "test", limit=limit)
    listing = [pg for pg in pages if pg.target_listed]
    train = [pg for pg in webshop_pick_pages(env, "train", limit=400 if a.quick else None)
             if pg.target_listed]
    ranker = PageRanker().fit(train)
    spec = a.model[3:] if a.model.startswith("hf:") else a.model
    model, tok = load_model_and_tokenizer(spec, dtype="auto")
    model.eval()
    scores = lm_title_scores(model, tok, [(pg.context.instruction, [h[1] for h in _page_hits(pg)])
                                          for pg in listing])

    picks = {
        "first_hit": [pg.listed[0] for pg in listing],
        "rule_pick": [rule_pick(pg) for pg in listing],
        "ranker_pick": [ranker.pick(pg) for pg in listing],
        **{f"lm_{k}": [pg.listed[best_index(s[k])] for pg, s in zip(listing, scores)]
           for k in ("cond", "mean", "pmi")},
        "lm_pmi_capped": [pg.listed[rank_pmi_index(s["pmi"], pg.context.instruction,
                                                   [h[2] for h in _page_hits(pg)], 0.0)]
                          for pg, s in zip(listing, scores)],
    }
    acc = {k: sum(x == pg.target for x, pg in zip(v, listing)) / max(1, len(listing))
           for k, v in picks.items()}
    on_first = {k: sum(x == pg.listed[0] for x, pg in zip(v, listing)) for k, v in picks.items()}
    table(f"{a.model}: picks on {len(listing)} test pages listing the target "
          f"({len(pages)} pages)", ["picker", "accuracy", "picks hit #1"],
          [[k, acc[k], on_first[k]] for k in picks])
    emit({"model": a.model, "pages": len(pages), "pages_with_target": len(listing),
          "distinct_pages": len({pg.context.steps[-1].observation for pg in listing}),
          **acc, "seconds": time.time() - t0}, a.json)


if __name__ == "__main__":
    main()
