"""Pick drills that teach the price cap: SFT examples whose one trained turn is a pick on a
train goal's results page that skips the hits over the instruction's price cap.

    python benchmarks/cap_drill_data.py OUT.jsonl [--successes OK.jsonl --mix N]
        [--over N] [--under N] [--say-prices] [--seed S] [--quick] [--json]

Pages: the pick probe's (``probes.picks.webshop_pick_pages``, the oracle's first search) of
every train goal with a price cap and a hit under it.  The trained turn clicks the first hit under the cap
(``probes.picks.under_cap``); when hits above it are over the cap its thought says so first
(``#1, #2 cost more than 30.00 dollars; #3 looks closest to what I need.``), else it is the
heuristic expert's pick thought (``#1 looks closest to what I need.``).  With ``--say-prices``
the thought reads each price up to the pick against the cap first, so the comparison is made
next to the two numbers (``#1 costs $45.00, more than 30.00 dollars; #2 costs $12.99, less
than 30.00 dollars; #2 looks closest to what I need.``).  ``--over`` pages whose
first hit is over the cap, ``--under`` pages whose first hit is under it, and ``--mix`` whole
trajectories of ``--successes`` (all trained as they are), shuffled with ``--seed``.  A research
probe: can the agent learn to read a price against the cap from the page (the rule it would
copy wins the all-data agent +6.0 points, docs/RESULTS.md, "The pick among hits")?
JSON keys: ``pages``, ``over``, ``under``, ``mixed``, ``examples``.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from _util import emit, parser


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("out", help="SFT examples JSONL (written)")
    p.add_argument("--successes", default=None, help="trajectories JSONL to mix in")
    p.add_argument("--mix", type=int, default=0, help="how many of --successes (seeded sample)")
    p.add_argument("--over", type=int, default=200, help="pages whose first hit is over the cap")
    p.add_argument("--under", type=int, default=100, help="pages whose first hit is under it")
    p.add_argument("--say-prices", action="store_true",
                   help="the thought reads each price up to the pick against the cap")
    p.add_argument("--seed", type=int, default=0, help="sampling and order")
    a = p.parse_args()
    from eef.envs.webshop import WebShopEnv
    from eef.experts.webshop import instruction_parts, parse_price
    from eef.trajectory import Step, TrajectoryFormatError, dumps_line, iter_jsonl
    from probes.picks import _page_hits, under_cap, webshop_pick_pages

    t0 = time.time()
    if a.mix and not a.successes:
        p.error("--mix needs --successes")
    env = WebShopEnv()
    pages = webshop_pick_pages(env, "train", limit=300 if a.quick else None)
    over, under = [], []
    for pg in pages:
        ins = pg.context.instruction
        cap = instruction_parts(ins)[2]
        if cap is None:
            continue
        hits = _page_hits(pg)
        first = under_cap(ins, [h[2] for h in hits])[0]
        if any(parse_price(h[2]) is None for h in hits[:first + 1]) or \
                parse_price(hits[first][2]) >= cap:  # no hit under the cap, or a price unread
            continue
        skipped = [h[0] for h in hits[:first]]
        if a.say_prices:
            lead = "".join(f"{h[0]} costs {h[2]}, {'less' if i == first else 'more'} than "
                           f"{cap:.2f} dollars; " for i, h in enumerate(hits[:first + 1]))
        elif skipped:
            lead = (f"{', '.join(skipped)} cost{'s' if len(skipped) == 1 else ''} more than "
                    f"{cap:.2f} dollars; ")
        else:
            lead = ""
        ex = pg.context.prefix(len(pg.context.steps))
        for s in ex.steps:
            s.train = False
        ex.steps.append(Step(f"click[{hits[first][0]}]", "",
                             f"{lead}{hits[first][0]} looks closest to what I need.", train=True))
        (over if skipped else under).append(ex)
    rng = random.Random(f"cap-drill/{a.seed}")
    picked = rng.sample(over, min(a.over, len(over))) + rng.sample(under, min(a.under, len(under)))
    mixed: list[dict] = []
    if a.mix:
        try:
            rows = [t.to_dict() for t in iter_jsonl(a.successes, skip_partial_last_line=False)]
        except TrajectoryFormatError as e:  # no such file, bad JSON, not a trajectory
            p.error(f"--successes {e}")
        mixed = rng.sample(rows, min(a.mix, len(rows)))
    out = [t.to_dict() for t in picked] + mixed
    rng.shuffle(out)
    Path(a.out).write_text("".join(dumps_line(r) for r in out))
    print(f"{len(pages)} pages, {len(over)} with the first hit over the cap, {len(under)} under "
          f"it: wrote {len(out)} examples ({len(picked)} drills, {len(mixed)} successes) to {a.out}")
    emit({"pages": len(pages), "over": len(over), "under": len(under), "mixed": len(mixed),
          "examples": len(out), "seconds": time.time() - t0}, a.json)


if __name__ == "__main__":
    main()
