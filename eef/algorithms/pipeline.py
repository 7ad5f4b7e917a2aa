"""``eef run`` and ``eef compare``: whole experiments in a resumable run directory."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics
from pathlib import Path
from typing import Any, Callable

from eef.algorithms.config import METHODS, ExperimentConfig, to_dict
from eef.algorithms.context import Context, explore_subset, make_env, select_tasks
from eef.algorithms.rundir import RunDir
from eef.algorithms.stages import (EXPERT_EVAL_STAGE, base_stage, expert_eval_stage, expert_stage,
                                   replay_data)
from eef.rollout.budget import BUDGET_KEYS, Budget


def prepare(cfg: ExperimentConfig, out: str | Path) -> Context:
    """The context of an experiment in run directory ``out``: its tasks, the expert
    trajectories (collected or imported: the first stage) and the base model."""
    run = RunDir(out, to_dict(cfg))
    env = make_env(cfg)
    train_ids, _dev, eval_ids = select_tasks(env, cfg)
    return Context(cfg, run, env, train_ids,
                   explore_subset(train_ids, cfg.method.explore_tasks, cfg.seed), eval_ids,
                   expert_stage(cfg, run, env, train_ids), base_stage(cfg), replay_data(cfg))


def rft_n_for(ctx: Context) -> float | list[float]:
    """N of RFT×N: ``method.rft_n``, else matched to the EEF run in the same run directory.

    One RFT rollout per task costs what EEF's s_0 rollouts cost divided by S (EEF ran S samples
    per task at s_0), so iteration i's ratio is N_i = (s_0 + simulation cost) x S / s_0 cost,
    the cost being counted in episodes, policy env steps or tokens (generated + prompt tokens
    after prefix reuse) by ``method.rft_match``; N is the mean of the N_i (``exact``: the list
    of the N_i of env steps, one per iteration).  ``method.rft_round`` rounds to integers
    >= 1; N is never below 1."""
    m = ctx.cfg.method
    if m.rft_n:
        return m.rft_n
    rows = sorted((r for r in ctx.run.metrics() if r.get("method") == "eef" and "budget_sim" in r),
                  key=lambda r: r["iteration"])
    if not rows:
        raise ValueError("method rft_xn with method.rft_n=0 needs an EEF run in the same run "
                         "directory (run method eef first, or set method.rft_n)")

    def cost(b: dict[str, Any]) -> float:
        if m.rft_match == "episodes":
            return b["episodes"]
        if m.rft_match == "tokens":
            return Budget(**{k: int(b.get(k) or 0) for k in BUDGET_KEYS}).tokens
        return b["env_steps"]

    ratios = []
    for r in rows:
        one = cost(r["budget_s0"])
        if not one:
            raise ValueError(f"method.rft_match: {m.rft_match}: EEF's s_0 rollouts of iteration "
                             f"{r['iteration']} counted none (does the policy report tokens?)")
        ratios.append((one + cost(r["budget_sim"])) * r["samples_per_state"] / one)
    ns = ratios if m.rft_match == "exact" else [sum(ratios) / len(ratios)]
    ns = [max(1, round(n)) if m.rft_round else max(1.0, n) for n in ns]
    return ns if m.rft_match == "exact" else ns[0]


def run_method(ctx: Context, method: str) -> Path:
    from eef.algorithms.eef import run_eef
    from eef.algorithms.eto import run_eto
    from eef.algorithms.rft import run_rft
    from eef.algorithms.sft import run_sft, run_sft_all
    if method == "sft":
        return run_sft(ctx)
    if method == "sft_all":
        return run_sft_all(ctx)
    if method == "eto":
        return run_eto(ctx)
    if method == "rft":
        return run_rft(ctx, 1, "rft")
    if method == "rft_xn":
        return run_rft(ctx, rft_n_for(ctx), "rft_xn")
    if method == "eef":
        return run_eef(ctx)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def run_experiment(cfg: ExperimentConfig, out: str | Path) -> list[dict[str, Any]]:
    ctx = prepare(cfg, out)
    try:
        run_method(ctx, cfg.method.name)
    finally:
        ctx.env.close()
    return summary_rows(ctx.run)


def summary_rows(run: RunDir) -> list[dict[str, Any]]:
    """Expert (on its training tasks, and on the eval tasks when evaluated there) + every
    evaluation in the run dir, in order."""
    rows = []
    for r in run.metrics():
        st = str(r.get("stage", ""))
        if st == "expert" or st.startswith("eval/") or st.startswith(EXPERT_EVAL_STAGE):
            what = ("expert (train)" if st == "expert" else st[5:] if st.startswith("eval/")
                    else f"{r.get('method')} (eval)")
            rows.append({"what": what,
                         "method": r.get("method"), "iteration": r.get("iteration"),
                         "split": r.get("split"), "n": r.get("n"),
                         "win_rate": r.get("win_rate"), "mean_score": r.get("mean_score")})
    return rows


def compare_runs(seeds: list[int], train_seeds: int = 1) -> list[tuple[int, int | None, str]]:
    """(seed, train_seed, run dir name) of every run of ``eef compare``: per seed (task
    subset, expert data) ``train_seeds`` trainings, the first with the seed itself (run dir
    ``seed<S>``), the k-th with training seed 1000 k + S (``seed<S>-train<T>``)."""
    if train_seeds < 1:
        raise ValueError(f"train_seeds must be >= 1, not {train_seeds}")
    return [(s, None, f"seed{s}") if k == 0 else (s, 1000 * k + s, f"seed{s}-train{1000 * k + s}")
            for s in seeds for k in range(train_seeds)]


def compare(cfg: ExperimentConfig, methods: list[str], seeds: list[int], out: str | Path,
            train_seeds: int = 1,
            after_run: Callable[[list[dict[str, Any]]], None] | None = None
            ) -> list[dict[str, Any]]:
    """Each method at each seed (EEF first, so RFT×N can match its budget); a table of the
    final iteration's test win rate and score, mean ± std over all runs, then the expert on
    the same evaluation tasks (``expert_eval_stage``; no row for imported expert
    trajectories).  ``train_seeds`` > 1 retrains every seed's methods with more training seeds
    on the same tasks and expert data (``compare_runs``), so the spread includes retraining
    noise at fixed data.  The paired per-goal differences are ``eef.report.comparison``'s.

    The table is written to ``OUT/results.json`` after every finished run (``runs`` counts
    the runs in it so far, ``seeds`` the seeds asked for), then ``after_run(table)`` is
    called: hours of runs show their results as they come, and a killed comparison keeps
    those of its finished runs."""
    order = sorted(methods, key=lambda m: (m != "eef", METHODS.index(m)))
    finals: dict[str, list[dict[str, Any]]] = {m: [] for m in order}
    spent: dict[str, list[dict[str, int]]] = {m: [] for m in order}
    experts: dict[str, list[dict[str, Any]]] = {}
    table: list[dict[str, Any]] = []
    for seed, train_seed, name in compare_runs(seeds, train_seeds):
        c = dataclasses.replace(cfg, seed=seed, train_seed=train_seed)
        ctx = prepare(c, Path(out) / name)
        try:
            for row in expert_eval_stage(ctx):
                experts.setdefault(row["method"], []).append(row)
            for m in order:
                run_method(ctx, m)
                rows = ctx.run.metrics()
                evals = [r for r in rows
                         if str(r.get("stage", "")).startswith("eval/") and r.get("method") == m]
                finals[m].append(max(evals, key=lambda r: r.get("iteration") or 0))
                spent[m].append(method_budget(rows, m))
        finally:
            ctx.env.close()
        table = compare_table(finals, spent, experts, len(seeds))
        (Path(out) / "results.json").write_text(json.dumps(table, indent=1))
        if after_run is not None:
            after_run(table)
    return table


def compare_table(finals: dict[str, list[dict[str, Any]]], spent: dict[str, list[dict[str, int]]],
                  experts: dict[str, list[dict[str, Any]]], seeds: int) -> list[dict[str, Any]]:
    """``eef compare``'s rows: per method (in ``finals``' order) the mean ± std over its runs
    of the final iteration's eval win rate and score and the mean counted budget, then one row
    per expert policy (not trained: no budget)."""
    table = []
    for m, rows in finals.items():
        wr = [r["win_rate"] for r in rows]
        sc = [r["mean_score"] for r in rows]
        table.append({"method": m, "seeds": seeds, "runs": len(wr),
                      "win_rate_mean": statistics.mean(wr), "win_rate_std": _std(wr),
                      "score_mean": statistics.mean(sc), "score_std": _std(sc),
                      **{f"{k}_mean": statistics.mean(b[k] for b in spent[m])
                         for k in BUDGET_KEYS}})
    for m, rows in experts.items():
        wr = [r["win_rate"] for r in rows]
        sc = [r["mean_score"] for r in rows]
        table.append({"method": m, "policy": rows[0]["policy"], "seeds": seeds,
                      "runs": len(rows), "win_rate_mean": statistics.mean(wr),
                      "win_rate_std": _std(wr), "score_mean": statistics.mean(sc),
                      "score_std": _std(sc)})
    return table


def method_budget(rows: list[dict[str, Any]], method: str) -> dict[str, int]:
    """What a method counted over all its iterations (``BUDGET_KEYS``): the cumulative budget
    of its last ``<method>/itI/budget`` row (rollouts from s_0 and, for EEF, simulations)."""
    last: dict[str, Any] = {}
    for r in rows:
        m = re.fullmatch(rf"{re.escape(method)}/it(\d+)/budget", str(r.get("stage", "")))
        if m and "budget" in r and int(m.group(1)) >= last.get("it", 0):
            last = {"it": int(m.group(1)), **r["budget"]}
    return {k: int(last.get(k) or 0) for k in BUDGET_KEYS}


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0
