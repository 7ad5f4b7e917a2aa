"""RFT and RFT×N (rejection-sampling fine-tuning).

    model = SFT(base, expert successes)
    for i in 1..I:
        roll out `model` N times from the start state s_0 of every training task
            (or of method.explore_tasks of them)
        positives += the successful rollouts (kept per task by method.rft_keep)
        model = fine-tune(base or model, expert successes + positives)      # method.train_from
        evaluate(model)

RFT is N = 1.  RFT×N is the paper's equal-budget baseline: N rollouts per task so that its
counted budget matches EEF's (method.rft_n, or derived from an EEF run's budget by
method.rft_match; a list of N, one per iteration, with rft_match: exact).  A fractional
N = k + f runs k rollouts of every task and one more of a seeded share f of them.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

from eef.algorithms.context import Context
from eef.algorithms.positives import PositiveRepository
from eef.algorithms.sft import run_sft
from eef.algorithms.stages import eval_stage, rollout_stage, train_sampling, train_stage
from eef.rollout.budget import Budget
from eef.rollout.engine import RolloutRequest


def samples_per_task(task_ids: list[str], n: float, seed: int) -> dict[str, int]:
    """Rollouts per task for N = ``n``: floor(n) each, plus one for round(frac(n) x tasks) tasks
    drawn with ``seed`` (so the total is N x tasks, rounded)."""
    k = math.floor(n)
    extra = set(random.Random(seed).sample(task_ids, round((n - k) * len(task_ids))))
    return {t: k + (t in extra) for t in task_ids}


def run_rft(ctx: Context, n: float | Sequence[float] = 1, method: str = "rft") -> Path:
    iterations = ctx.cfg.method.iterations
    ns = [float(n)] * iterations if isinstance(n, (int, float)) else list(n)
    if len(ns) < iterations:
        raise ValueError(f"{method}: {len(ns)} values of N for {iterations} iterations")
    sft = run_sft(ctx)
    model, positives, budget = sft, PositiveRepository(ctx.cfg.method.rft_keep), Budget()
    for i in range(1, iterations + 1):
        seed = ctx.iteration_seed(i)
        n = ns[i - 1]
        per_task = samples_per_task(ctx.explore_ids, n, seed)
        reqs = [RolloutRequest(t, samples=per_task[t], sampling=train_sampling(ctx.cfg),
                               seed=seed) for t in ctx.explore_ids]
        trajs = rollout_stage(ctx, f"{method}/it{i}/s0", model, reqs)
        b_it = Budget.of(trajs)
        budget += b_it
        for t in trajs:
            positives.offer(t.task_id, t)
        data = (ctx.expert_successes if ctx.cfg.method.keep_expert_successes else []) + \
            positives.trajectories()
        init = ctx.base if ctx.cfg.method.train_from == "base" else model
        model = train_stage(ctx, f"{method}/it{i}", init, data, ctx.cfg.method.iteration_lr)
        row = eval_stage(ctx, method, i, f"{method}/it{i}", model)
        ctx.run.log_metrics({"stage": f"{method}/it{i}/budget", "method": method, "iteration": i,
                             "n": n, "positives": len(positives),
                             "budget_it": b_it.counts(), "budget": budget.counts(),
                             "eval": row["win_rate"]})
    return model
