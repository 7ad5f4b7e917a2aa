"""EEF — Exploring Expert Failures (Lan et al. 2025, Algorithm 1).

    π_0 = SFT(base, expert successes)                                    (iteration 0)
    D+  = {}                                                             positive repository
    for i in 1..I:
        1. roll π_{i-1} out from s_0 of every training task (S samples)   D+ += successes
        2. for every failed expert trajectory τ (and successful ones if configured; every
           expert's trajectories of a task, each on its own):
               l = floor(|τ| / (M + 1));  simulate π_{i-1} from s_l, s_2l, ..., s_Ml  (S each)
        3. a state is solvable when one of its samples succeeded;
               unsolvable → solvable: the expert actions between are beneficial (trained)
               solvable → unsolvable: harmful (masked out of the loss)
        4. important states: s_0 of unsolved tasks and recovery states (unsolvable right after
           solvable); each yields expert prefix (harmful masked) + the agent's solution from the
           next solvable state                                            D+ += those samples
        5. π_i = fine-tune(base or π_{i-1}, expert successes + D+);  evaluate π_i

The simulated states and their rollout requests, the labelling, the sample assembly and the
label records are in ``eef.algorithms.labels``; choices the paper leaves open are ``method.*``
options (see ``eef.algorithms.config.MethodConfig``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from eef.algorithms.context import Context
from eef.algorithms.labels import (LabelRecord, StateOutcome, eef_samples, simulation_requests,
                                   simulation_states)
from eef.algorithms.positives import PositiveRepository
from eef.algorithms.sft import run_sft
from eef.algorithms.stages import eval_stage, rollout_stage, train_sampling, train_stage
from eef.rollout.budget import Budget
from eef.rollout.engine import RolloutRequest, trajectory_id


def run_eef(ctx: Context, method: str = "eef") -> Path:
    cfg = ctx.cfg.method
    S = cfg.samples_per_state
    model = run_sft(ctx)                                          # π_0
    positives = PositiveRepository(cfg.rft_keep)                  # D+ (the rule of RFT)
    explored = [τ for τ in ctx.explored_experts if not τ.success or cfg.simulate_successful]
    budget = Budget()
    for i in range(1, cfg.iterations + 1):
        seed, sampling = ctx.iteration_seed(i), train_sampling(ctx.cfg)
        # 1. roll out from s_0 of every training task (or of method.explore_tasks of them)
        s0 = rollout_stage(ctx, f"{method}/it{i}/s0", model, [
            RolloutRequest(t, samples=S, sampling=sampling, seed=seed) for t in ctx.explore_ids])
        by_task = defaultdict(list)
        for t in s0:
            by_task[t.task_id].append(t)
            positives.offer(("s0", t.task_id), t)
        solved_from_start = {task: any(t.success for t in ts) for task, ts in by_task.items()}

        # 2. simulate from the expert states s_l, s_2l, ..., s_Ml
        #    (method.sim_steps: the env's step limit counts from s_k, or from s_0)
        sims = rollout_stage(ctx, f"{method}/it{i}/sim", model, [
            r for τ in explored for r in simulation_requests(
                τ, cfg.M, S, sampling=sampling, seed=seed, include_start=False,
                fresh_step_limit=cfg.sim_steps == "full")])
        at_state = defaultdict(list)
        for t in sims:
            at_state[(t.source.parent, t.source.start_state)].append(t)

        # 3-4. label states and actions; samples from the important states
        n_samples = n_recovery = 0
        records = []
        for τ in explored:
            pid = trajectory_id(τ)
            outcomes = [StateOutcome(k, list(by_task[τ.task_id]) if k == 0 else at_state[(pid, k)])
                        for k in simulation_states(len(τ), cfg.M)]
            samples, labels, important = eef_samples(
                τ, outcomes, solved_from_start.get(τ.task_id, False), cfg.train_neutral,
                cfg.rft_keep)
            for s in samples:
                if positives.offer(("eef", pid, s.meta["important_state"]), s):
                    n_samples += 1
                    n_recovery += bool(s.meta["recovery"])
            records.append(LabelRecord.of(τ, pid, outcomes, labels, important, len(samples)))
        (ctx.run / "labels").mkdir(exist_ok=True)
        (ctx.run / f"labels/{method}-it{i}.jsonl").write_text(
            "".join(json.dumps(r.to_dict()) + "\n" for r in records))

        # 5. fine-tune on expert successes + D+; evaluate
        data = (ctx.expert_successes if cfg.keep_expert_successes else []) + \
            positives.trajectories()
        init = ctx.base if cfg.train_from == "base" else model
        model = train_stage(ctx, f"{method}/it{i}", init, data, ctx.cfg.method.iteration_lr)
        row = eval_stage(ctx, method, i, f"{method}/it{i}", model)
        b_s0, b_sim = Budget.of(s0), Budget.of(sims)
        budget += b_s0 + b_sim
        ctx.run.log_metrics({
            "stage": f"{method}/it{i}/budget", "method": method, "iteration": i,
            "positives": len(positives), "new_eef_samples": n_samples,
            "new_recovery_samples": n_recovery,
            "solvable_states": sum(sum(r.solved) for r in records),
            "simulated_states": sum(len(r.states) for r in records),
            "diverged_states": sum(sum(r.diverged) for r in records),
            "samples_per_state": S, "budget_s0": b_s0.counts(), "budget_sim": b_sim.counts(),
            "budget_it": (b_s0 + b_sim).counts(), "budget": budget.counts(),
            "eval": row["win_rate"]})
    return model
