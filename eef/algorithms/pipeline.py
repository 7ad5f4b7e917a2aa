"""``eef run`` and ``eef compare``: whole experiments in a resumable run directory."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from eef.algorithms.common import (Context, base_stage, expert_stage, explore_subset, make_env,
                                   select_tasks)
from eef.algorithms.config import METHODS, ExperimentConfig, to_dict
from eef.algorithms.rundir import RunDir


def prepare(cfg: ExperimentConfig, out: str | Path) -> Context:
    run = RunDir(out, to_dict(cfg))
    env = make_env(cfg)
    ctx = Context(cfg, run, env)
    ctx.train_ids, _dev, ctx.eval_ids = select_tasks(env, cfg)
    ctx.explore_ids = explore_subset(ctx.train_ids, cfg.method.explore_tasks, cfg.seed)
    ctx.experts = expert_stage(ctx)
    ctx.base = base_stage(ctx)
    return ctx


def rft_n_for(ctx: Context) -> float:
    """N of RFT×N: ``method.rft_n``, else matched to the counted env steps of the EEF run in the
    same run directory: N = mean over iterations of (s_0 steps + simulation steps) /
    (s_0 steps / S), so RFT×N's rollouts cost what EEF's rollouts and simulations cost
    (rounded to an integer >= 1 with ``method.rft_match: round``)."""
    m = ctx.cfg.method
    if m.rft_n:
        return m.rft_n
    rows = [r for r in ctx.run.metrics()
            if r.get("method") == "eef" and "budget_sim" in r]
    if not rows:
        raise ValueError("method rft_xn with method.rft_n=0 needs an EEF run in the same run "
                         "directory (run method eef first, or set method.rft_n)")
    # one RFT rollout per task costs s_0 steps / S (EEF ran S samples per task at s_0)
    ratios = [(r["budget_s0"]["env_steps"] + r["budget_sim"]["env_steps"]) * r["samples_per_state"]
              / max(1, r["budget_s0"]["env_steps"]) for r in rows]
    n = sum(ratios) / len(ratios)
    return max(1, round(n)) if m.rft_match == "round" else max(1.0, n)


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
    """Expert + every evaluation in the run dir, in order."""
    rows = []
    for r in run.metrics():
        st = str(r.get("stage", ""))
        if st == "expert" or st.startswith("eval/"):
            rows.append({"what": "expert (train)" if st == "expert" else st[5:],
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
            train_seeds: int = 1) -> list[dict[str, Any]]:
    """Each method at each seed (EEF first, so RFT×N can match its budget); a table of the
    final iteration's test win rate and score, mean ± std over all runs.  ``train_seeds`` > 1
    retrains every seed's methods with more training seeds on the same tasks and expert data
    (``compare_runs``), so the spread includes retraining noise at fixed data."""
    order = sorted(methods, key=lambda m: (m != "eef", METHODS.index(m)))
    finals: dict[str, list[dict[str, Any]]] = {m: [] for m in order}
    spent: dict[str, list[dict[str, int]]] = {m: [] for m in order}
    for seed, train_seed, name in compare_runs(seeds, train_seeds):
        c = dataclasses.replace(cfg, seed=seed, train_seed=train_seed)
        ctx = prepare(c, Path(out) / name)
        try:
            for m in order:
                run_method(ctx, m)
                rows = ctx.run.metrics()
                evals = [r for r in rows
                         if str(r.get("stage", "")).startswith("eval/") and r.get("method") == m]
                finals[m].append(max(evals, key=lambda r: r.get("iteration") or 0))
                spent[m].append(method_budget(rows, m))
        finally:
            ctx.env.close()
    table = []
    for m in order:
        wr = [r["win_rate"] for r in finals[m]]
        sc = [r["mean_score"] for r in finals[m]]
        table.append({"method": m, "seeds": len(seeds), "runs": len(wr),
                      "win_rate_mean": statistics.mean(wr), "win_rate_std": _std(wr),
                      "score_mean": statistics.mean(sc), "score_std": _std(sc),
                      **{f"{k}_mean": statistics.mean(b[k] for b in spent[m])
                         for k in ("env_steps", "generated_tokens")}})
    import json
    (Path(out) / "results.json").write_text(json.dumps(table, indent=1))
    return table


def method_budget(rows: list[dict[str, Any]], method: str) -> dict[str, int]:
    """Env steps and generated tokens a method counted over all its iterations (its
    ``<method>/itI/budget`` rows: rollouts from s_0 and, for EEF, simulations)."""
    out = {"env_steps": 0, "generated_tokens": 0}
    for r in rows:
        st = str(r.get("stage", ""))
        if st.startswith(f"{method}/it") and st.endswith("/budget") and "budget" in r:
            for k in out:
                out[k] += int(r["budget"].get(k, 0))
    return out


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0
