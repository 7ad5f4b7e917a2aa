"""Where WebShop experts fail: win rate, mean score and mean steps of scripted experts on a
seeded sample of N train goals, and their failures by stage (``eef.experts.webshop.failure_stage``): a
wrong product or out of steps before the target (early), the right product with a wrong
option, or out of steps on the target's pages (late).  What EEF can mine from an expert's
failures depends on where they are: the comparison of ``heuristic`` (mostly wrong products)
with ``late``.

    python benchmarks/webshop_failures.py [--goals 500] [--max-steps 10 15] [--json]
        [--write-tasks ids.txt]

``--goals 0`` takes all 4,690 train goals.  The win rate, mean score and mean steps are what
``eef eval webshop --policy expert:NAME --tasks ids.txt --max-steps S --json`` prints for the
goals written by ``--write-tasks ids.txt``.
"""

from __future__ import annotations

import random
from pathlib import Path

from _util import emit, parser, table


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--goals", type=int, default=500,
                   help="a seeded sample of N train goals (0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--write-tasks", type=Path, help="write the goals' ids here, one a line")
    p.add_argument("--max-steps", type=int, nargs="+", default=[10, 15])
    p.add_argument("--experts", nargs="+", default=["heuristic", "noisy", "late"],
                   help="expert specs after 'expert:', e.g. 'late(dawdle=0.5)'")
    args = p.parse_args()
    import eef.envs as envs
    from eef.experts.webshop import STAGES, failure_breakdown
    from eef.policy import load_policy
    from eef.rollout.episode import run_episode, summarize
    n = min(args.goals or 100, 100) if args.quick else args.goals
    rows, stage_rows, figs = [], [], {}
    for max_steps in args.max_steps:
        env = envs.make("webshop", max_steps=max_steps)
        ids = [t.id for t in env.tasks("train")]
        ids = random.Random(args.seed).sample(ids, n) if 0 < n < len(ids) else ids
        if args.write_tasks:
            args.write_tasks.write_text("".join(f"{i}\n" for i in ids))
        for name in args.experts:
            trajs = [run_episode(env, load_policy(f"expert:{name}", env), i) for i in ids]
            s, counts = summarize(trajs), failure_breakdown(trajs, env)
            fails = len(trajs) - counts["success"]
            rows.append([name, max_steps, s["n"], f"{100 * s['win_rate']:.1f}",
                         f"{s['mean_score']:.1f}", f"{s['mean_steps']:.2f}"])
            stage_rows.append([name, max_steps, fails, *[counts[k] for k in STAGES[1:]],
                               f"{counts['late']} ({100 * counts['late'] / max(fails, 1):.0f}%)"])
            figs[f"{name}/{max_steps}"] = {**s, **counts}
        env.close()
    table(f"WebShop experts, {len(ids)} train goals",
          ["expert", "max_steps", "goals", "win %", "mean score", "mean steps"], rows)
    table("Failures by stage", ["expert", "max_steps", "failures", *STAGES[1:], "late"],
          stage_rows)
    emit(figs, args.json)


if __name__ == "__main__":
    main()
