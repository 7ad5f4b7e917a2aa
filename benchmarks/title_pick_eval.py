"""An agent whose pick among search hits is its own title likelihood: does the reading the
model's likelihoods hold (``benchmarks/lm_picks.py``) win WebShop goals when it makes the pick?

    python benchmarks/title_pick_eval.py hf:MODEL OUT.jsonl [--limit N] [--quick] [--json]

Runs ``MODEL`` on the test goals as ``eef eval`` does with the comparison's decoding rules
(greedy, 10 steps, ``--no-repeat-ngram 4 --ground --ground-by likelihood --max-new-tokens 96
--trim-block 4 --max-context 1024 --num-envs 16``), except that whenever the agent clicks a hit
on a results page the click goes to the hit with the largest title PMI under the same model
(``probes.picks.lm_title_scores``) among the hits under the instruction's price cap, and the
thought names that hit instead.  ``--prior``: the hit with the largest PMI + the agent's own
log-probability of clicking it (``Action: click[<hit>]`` without its thought, through
``rank_actions``): the title evidence added to the agent's learnt pick (mostly the rank) as a
likelihood ratio, with no weight to tune.  ``--rank-weight W [--rank-form log|first]``: the
hit with the largest PMI + ``probes.picks.rank_bonus`` (WebShop's rank weighed against the title,
W fit by ``benchmarks/rank_pmi_fit.py`` on goals the model never trained on).  Everything else
is the agent's.  OUT is resumed like ``eef eval --out``.  A research probe: the rule knows
WebShop's results page.
JSON keys: ``n``, ``win_rate``, ``mean_score``, ``picks``, ``picks_changed``.
"""

from __future__ import annotations

import re
import time
from typing import Any, Sequence

from _util import emit, parser


class TitlePick:
    """``inner`` (an HF policy) with its clicks on results pages moved to the hit whose title
    the same model finds most likely after the instruction (PMI, under the price cap)."""

    def __init__(self, inner: Any, prior: bool = False, rank_weight: float = 0.0,
                 rank_form: str = "log"):
        self.inner, self.prior = inner, prior
        self.rank_weight, self.rank_form = rank_weight, rank_form
        self.picks = self.changed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def act(self, contexts: Sequence[Any], sampling: Any = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        from eef.experts.webshop import parse_page
        from eef.react import parse_turn, render_turn
        from probes.picks import clicked_label, lm_title_scores, rank_pmi_index
        outs = self.inner.act(contexts, sampling, seeds)
        todo = []
        for k, (ctx, out) in enumerate(zip(contexts, outs)):
            page = parse_page(ctx.observation)
            label = (clicked_label(out) or "").strip()
            if page["kind"] == "results" and label.upper() in [h[0] for h in page["hits"]]:
                todo.append((k, ctx.instruction, page["hits"], parse_turn(out)[0], label))
        if todo:
            scores = lm_title_scores(self.inner.model, self.inner.tokenizer,
                                     [(ins, [h[1] for h in hits]) for _, ins, hits, _, _ in todo])
            prior = self.inner.rank_actions(
                [contexts[k] for k, *_ in todo], [""] * len(todo),
                [[f"click[{h[0]}]" for h in hits] for _, _, hits, _, _ in todo], sampling) \
                if self.prior else [[0.0] * len(hits) for _, _, hits, _, _ in todo]
            for (k, ins, hits, thought, chosen), sc, pr in zip(todo, scores, prior):
                best = hits[rank_pmi_index([x + y for x, y in zip(sc["pmi"], pr)], ins,
                                           [h[2] for h in hits], self.rank_weight,
                                           self.rank_form)][0]
                self.picks += 1
                if best != chosen.upper():
                    self.changed += 1
                    thought = re.sub(re.escape(chosen), best, thought, flags=re.I)
                outs[k] = render_turn(thought, f"click[{best}]")
        return outs


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("model", help="hf: model directory (a LoRA adapter directory works)")
    p.add_argument("out", help="episodes JSONL (resumed)")
    p.add_argument("--prior", action="store_true",
                   help="add the agent's own log-probability of each click to the PMI")
    p.add_argument("--rank-weight", type=float, default=0.0,
                   help="weight of the hit's rank against its title PMI (0: PMI alone)")
    p.add_argument("--rank-form", choices=("log", "first"), default="log",
                   help="rank bonus: -W log(1 + i) for hit i, or W for the first hit only")
    p.add_argument("--limit", type=int, default=None, help="first N test goals (quick: 8)")
    a = p.parse_args()
    from eef.policy import Sampling, load_policy
    from eef.rollout.engine import EngineConfig, RolloutRequest, rollout
    from eef.rollout.episode import summarize
    from eef.rollout.pool import EnvSpec
    from eef.rollout.run import open_env, task_ids

    t0 = time.time()
    opts = {"max_steps": 10}
    env = open_env("webshop", opts)
    ids = task_ids(env, "test", None, a.limit if a.limit is not None else (8 if a.quick else None))
    pol = TitlePick(load_policy(a.model, env, dtype="auto", trim_block=4, prefix_cache_mb=512,
                                max_context=1024), prior=a.prior,
                   rank_weight=a.rank_weight, rank_form=a.rank_form)
    env.close()
    res = rollout(EnvSpec("webshop", opts), pol,
                  [RolloutRequest(t, sampling=Sampling(0.0, 1.0, 96, 4), seed=0) for t in ids],
                  a.out, EngineConfig(num_envs=16, backend="local", progress=True,
                                      ground_actions=True, ground_by="likelihood"))
    s = summarize(res.trajectories)
    rule = "title picks" + (" + prior" if a.prior else "") + \
        (f" + rank ({a.rank_form}, {a.rank_weight:g})" if a.rank_weight else "")
    print(f"{a.model} with {rule}: {s['n']} goals, win rate {s['win_rate']:.1%}, "
          f"score {s['mean_score']:.1f}; {pol.picks} picks, {pol.changed} moved")
    emit({"n": s["n"], "win_rate": s["win_rate"], "mean_score": s["mean_score"],
          "picks": pol.picks, "picks_changed": pol.changed, "seconds": time.time() - t0}, a.json)


if __name__ == "__main__":
    main()
