"""ETO — Exploration-based Trajectory Optimization (Song et al. 2024, "Trial and Error:
Exploration-Based Trajectory Optimization for LLM Agents").

    π_0 = SFT(base, expert successes)                                     (iteration 0)
    for i in 1..I:
        1. explore: roll π_{i-1} out once from s_0 of every training task the expert solved
           (of method.explore_tasks of them)
        2. pairs, per task, the rollout τ against the expert's success τ_e:
               r(τ) < r(τ_e): (chosen τ_e, rejected τ cut to |τ_e| + 5 steps)
               r(τ) > r(τ_e): (chosen τ, rejected τ_e)
               r(τ) = r(τ_e): no pair
        3. π_i = DPO(π_{i-1}, pairs) with reference π_{i-1} (ETO's released script; the SFT
           model at i = 1) or always π_0 (dpo.reference: sft);  evaluate π_i

The pairing rule is ETO's ``construct_preference.py``: the expert data are the SFT data (the
expert's successes), compared by final reward.  A pair's loss counts the assistant (action)
tokens of both sides only, with SFT's masks (``eef.models.dpo``).  Budget: the exploration
rollouts' env steps and generated tokens, counted as RFT's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from eef.algorithms.config import to_dict
from eef.algorithms.context import Context
from eef.algorithms.rundir import digest, model_key
from eef.algorithms.sft import run_sft
from eef.algorithms.stages import eval_stage, rollout_stage, train_sampling
from eef.models.dpo import Pair
from eef.rollout.budget import Budget
from eef.rollout.engine import RolloutRequest
from eef.trajectory import Trajectory

#: ETO cuts a failed rollout to the expert's length plus this many steps
EXTRA_STEPS = 5


def _trained(t: Trajectory, n: int | None = None) -> Trajectory:
    """``t`` (its first ``n`` steps) with every step trained: DPO counts all its actions."""
    steps = t.steps if n is None else t.steps[:n]
    return dataclasses.replace(t, steps=[dataclasses.replace(s, train=True) for s in steps],
                               source=t.source.copy(), meta=dict(t.meta))


def best_successes(experts: list[Trajectory]) -> dict[str, Trajectory]:
    """The expert's best success per task (highest reward, then fewest steps)."""
    best: dict[str, Trajectory] = {}
    for t in experts:
        cur = best.get(t.task_id)
        if t.success and (cur is None or (-t.reward, len(t)) < (-cur.reward, len(cur))):
            best[t.task_id] = t
    return best


def eto_pairs(experts: list[Trajectory], rollouts: list[Trajectory],
              extra_steps: int = EXTRA_STEPS) -> tuple[list[Pair], dict[str, int]]:
    """ETO's preference pairs of ``rollouts`` against the expert's successes on the same task,
    in a canonical order (task, sample), and the counts of the comparisons (``lose``: the
    rollout scored below the expert, ``win``: above, ``tie``, ``unpaired``: no expert success
    on the task)."""
    best = best_successes(experts)
    pairs: list[tuple[tuple[str, int], Pair]] = []
    counts = {"lose": 0, "win": 0, "tie": 0, "unpaired": 0}
    for t in rollouts:
        e = best.get(t.task_id)
        if e is None:
            counts["unpaired"] += 1
            continue
        order = (t.task_id, int(t.source.sample or 0))
        if t.reward < e.reward:
            counts["lose"] += 1
            pairs.append((order, Pair(_trained(e), _trained(t, len(e) + extra_steps))))
        elif t.reward > e.reward:
            counts["win"] += 1
            pairs.append((order, Pair(_trained(t), _trained(e))))
        else:
            counts["tie"] += 1
    return [p for _, p in sorted(pairs, key=lambda x: x[0])], counts


def dpo_stage(ctx: Context, name: str, init: Path, reference: Path, pairs: list[Pair]) -> Path:
    """DPO of ``init`` on ``pairs`` against ``reference`` into ``models/NAME`` (resumable);
    the pairs are kept in ``data/NAME.pairs.jsonl``."""
    from eef.models.dpo import train_dpo, write_pairs
    run = ctx.run
    rel, data_rel = f"models/{name}", f"data/{name}.pairs.jsonl"
    cfg = dataclasses.replace(ctx.cfg.dpo.train_config(ctx.cfg.train), seed=ctx.agent_seed,
                              system=ctx.cfg.model.system)

    def go() -> dict[str, Any]:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        write_pairs(run / data_rel, pairs)
        res = train_dpo(str(init), run / data_rel, run / rel, cfg, beta=ctx.cfg.dpo.beta,
                        reference=None if reference == init else str(reference),
                        key=digest(key), progress=ctx.cfg.rollout.progress)
        return {"steps": res["steps"], "pairs": res["pairs"],
                "skipped_pairs": res["skipped_pairs"], "seconds": res["seconds"],
                "final_loss": res["losses"][-1], "final_accuracy": res["accuracies"][-1]}

    key = {"init": str(init), "init_key": model_key(init), "reference": str(reference),
           "reference_key": model_key(reference), "pairs": digest([p.to_dict() for p in pairs]),
           "train": cfg.key(), "dpo": to_dict(ctx.cfg.dpo)}
    res = run.stage(f"train/{name}", key, [rel], go)
    run.log_metrics({"stage": f"train/{name}", "key": digest(key), "pairs": len(pairs), **res})
    return run / rel


def run_eto(ctx: Context, method: str = "eto") -> Path:
    sft = run_sft(ctx)
    model, budget = sft, Budget()
    solved = set(best_successes(ctx.experts))
    explore = [t for t in ctx.explore_ids if t in solved]
    for i in range(1, ctx.cfg.method.iterations + 1):
        seed = ctx.iteration_seed(i)
        reqs = [RolloutRequest(t, samples=1, sampling=train_sampling(ctx.cfg), seed=seed)
                for t in explore]
        trajs = rollout_stage(ctx, f"{method}/it{i}/s0", model, reqs)
        budget += Budget.of(trajs)
        pairs, counts = eto_pairs(ctx.experts, trajs)
        if pairs:  # no pair (the agent matched the expert everywhere): the model stays
            ref = model if ctx.cfg.dpo.reference == "previous" else sft
            model = dpo_stage(ctx, f"{method}/it{i}", model, ref, pairs)
        row = eval_stage(ctx, method, i, f"{method}/it{i}", model)
        ctx.run.log_metrics({"stage": f"{method}/it{i}/budget", "method": method,
                             "iteration": i, "pairs": len(pairs), **counts,
                             "budget": budget.counts(), "eval": row["win_rate"]})
    return model
