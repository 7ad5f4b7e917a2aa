"""WebShop expert quality: oracle / heuristic / random win rate and mean score on train and
test goals, the heuristic's failure modes by kind, and (when spaCy is installed) how often the
rule-based noun tagger changes the type factor of a wrong purchase compared with spaCy.

    python benchmarks/webshop_experts.py [--quick] [--json]
"""

from __future__ import annotations

import collections
import random

from _util import emit, parser, table


def main() -> None:
    args = parser(__doc__).parse_args()
    import eef.envs as envs
    from eef.experts.webshop import failure_kind
    from eef.policy import load_policy
    from eef.rollout.episode import run_episode, summarize
    env = envs.make("webshop")
    rows, figs, fails = [], {}, {}
    for split in ("train", "test", "all"):
        ids = [t.id for t in env.tasks(split)]
        if args.quick:
            ids = random.Random(0).sample(ids, min(len(ids), 300))
        for name in ("oracle", "heuristic", "random") if split != "all" else ("oracle",):
            pol = load_policy(f"expert:{name}", env)
            trajs = [run_episode(env, pol, i) for i in ids]
            s = summarize(trajs)
            rows.append([name, split, s["n"], f"{100 * s['win_rate']:.1f}", f"{s['mean_score']:.1f}",
                         f"{s['mean_steps']:.2f}"])
            figs[f"{name}_{split}_win_rate"] = s["win_rate"]
            figs[f"{name}_{split}_mean_score"] = s["mean_score"]
            if name == "heuristic":
                fails[split] = collections.Counter(failure_kind(t, env) for t in trajs)
            if name == "oracle":
                wrong = [t for t in trajs if not t.success]
                figs[f"oracle_{split}_failures"] = len(wrong)
    table("WebShop experts", ["expert", "split", "goals", "win %", "mean score", "mean steps"], rows)
    kinds = sorted({k for c in fails.values() for k in c})
    table("Heuristic expert: outcome by kind", ["kind", *fails], [
        [k, *[fails[s][k] for s in fails]] for k in kinds])
    figs["heuristic_outcomes"] = {s: dict(c) for s, c in fails.items()}

    try:
        import spacy  # noqa: F401
        from eef.envs.webshop.nouns import nouns_spacy
        nouns_spacy("test")
        have_spacy = True
    except Exception as e:  # noqa: BLE001
        have_spacy = False
        print(f"spaCy comparison skipped: {e}")
    if have_spacy:
        from eef.envs.webshop.reward import type_reward
        heu = load_policy("expert:heuristic", env)
        ids = [t.id for t in env.tasks("train")]
        ids = random.Random(0).sample(ids, 300 if args.quick else len(ids))
        diff = n = 0
        for i in ids:
            t = run_episode(env, heu, i)
            bought = [s.action[6:-1].upper() for s in t.steps
                      if s.action.lower().startswith("click[") and s.action[6:-1].upper() in env.cat.products]
            g = env.goal(i)
            if not bought or bought[-1] == g.asin:
                continue
            p = env.cat.products[bought[-1]]
            n += 1
            a = type_reward(p, g.query, g.product_category, g.name, "rule")[0]
            b = type_reward(p, g.query, g.product_category, g.name, "spacy")[0]
            diff += a != b
        table("Noun tagger: type factor of wrong purchases, rule vs spaCy", ["wrong purchases",
              "factor differs", "share"], [[n, diff, diff / max(n, 1)]])
        figs["tagger_wrong_purchases"] = n
        figs["tagger_factor_differs"] = diff
    emit(figs, args.json)


if __name__ == "__main__":
    main()
