"""`eef compare` writes its table after every finished run, so hours of runs show results as
they come and a killed comparison keeps those of its finished runs (the stages are faked:
this is about the bookkeeping, the end-to-end runs are in test_pipeline.py)."""

import json
from types import SimpleNamespace

import pytest

from eef.algorithms import pipeline
from eef.algorithms.config import load_config
from test_models_util import TINY


def _fake_stages(monkeypatch, crash_at=None):
    """Each run dir gets a metrics list; method m at seed s wins (s + 1) / 10 for sft and
    (s + 2) / 10 for eef; the expert 0.5.  ``crash_at`` = (run name, method) raises there."""
    calls = []

    def prepare(cfg, out):
        rows = []
        return SimpleNamespace(name=out.name, seed=cfg.seed, run=SimpleNamespace(metrics=lambda: rows),
                               env=SimpleNamespace(close=lambda: calls.append(("close", out.name))),
                               rows=rows)

    def expert_eval_stage(ctx):
        return [{"method": "expert", "policy": "expert:heuristic", "win_rate": 0.5,
                 "mean_score": 60.0}]

    def run_method(ctx, m):
        if crash_at == (ctx.name, m):
            raise RuntimeError("killed")
        calls.append((ctx.name, m))
        wr = (ctx.seed + (2 if m == "eef" else 1)) / 10
        ctx.rows.append({"stage": f"eval/{m}/it1", "method": m, "iteration": 1,
                         "win_rate": wr, "mean_score": 100 * wr})
        ctx.rows.append({"stage": f"{m}/it1/budget", "env_steps": 10 if m == "eef" else 0,
                         "episodes": 1, "train_examples": 5, "train_tokens": 50})
        return ctx.name

    monkeypatch.setattr(pipeline, "prepare", prepare)
    monkeypatch.setattr(pipeline, "expert_eval_stage", expert_eval_stage)
    monkeypatch.setattr(pipeline, "run_method", run_method)
    monkeypatch.setattr(pipeline, "method_budget", lambda rows, m: {
        k: sum(r.get(k, 0) for r in rows if r["stage"] == f"{m}/it1/budget")
        for k in pipeline.BUDGET_KEYS})
    return calls


def test_results_are_written_after_every_run(tmp_path, monkeypatch):
    _fake_stages(monkeypatch)
    seen = []

    def after_run(table):  # results.json is already on disk when the hook runs
        seen.append((json.loads((tmp_path / "results.json").read_text()), table))

    table = pipeline.compare(load_config(TINY), ["sft", "eef"], [0, 1], tmp_path,
                             after_run=after_run)
    assert len(seen) == 2 and all(on_disk == t for on_disk, t in seen)
    first = {r["method"]: r for r in seen[0][1]}
    assert [r["method"] for r in seen[0][1]] == ["eef", "sft", "expert"]
    assert first["sft"]["runs"] == 1 and first["sft"]["seeds"] == 2
    assert first["sft"]["win_rate_mean"] == pytest.approx(0.1)
    assert first["eef"]["win_rate_std"] == 0.0
    final = {r["method"]: r for r in table}
    assert final["sft"]["runs"] == 2 and final["sft"]["win_rate_mean"] == pytest.approx(0.15)
    assert final["eef"]["win_rate_mean"] == pytest.approx(0.25)
    assert final["eef"]["env_steps_mean"] == 10 and final["sft"]["env_steps_mean"] == 0
    assert final["expert"]["runs"] == 2 and "env_steps_mean" not in final["expert"]
    assert json.loads((tmp_path / "results.json").read_text()) == table


def test_a_killed_comparison_keeps_the_finished_runs_results(tmp_path, monkeypatch):
    calls = _fake_stages(monkeypatch, crash_at=("seed1", "sft"))
    with pytest.raises(RuntimeError, match="killed"):
        pipeline.compare(load_config(TINY), ["sft", "eef"], [0, 1], tmp_path)
    kept = {r["method"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert kept["sft"]["runs"] == 1 and kept["eef"]["runs"] == 1  # seed 0 only
    assert ("close", "seed1") in calls  # the env of the interrupted run was closed
