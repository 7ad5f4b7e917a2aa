"""The paired comparison of run directories (eef.report.comparison): per-goal differences
from the evaluation episodes the run dirs hold, the expert's row, the solvable-state shares
of EEF's labels, the files `eef compare` writes and the report's section.  Hand-made run
directories with known numbers; no model is trained."""

from __future__ import annotations

import json
import sys
from html import escape as html_escape
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import QUIET, find_table  # noqa: E402

from eef.algorithms.labels import LabelRecord  # noqa: E402
from eef.report.comparison import (NO_EXPERT_NOTE, UNITS, comparison, default_pairs,  # noqa: E402
                                   parse_pairs, solvable_failures, write_comparison)
from eef.report.html import ReportConfig, build_report  # noqa: E402
from eef.report.rundata import ReportError, load_runs  # noqa: E402
from eef.rollout.episode import summarize  # noqa: E402
from eef.trajectory import Step, Trajectory, write_jsonl  # noqa: E402

GOALS = [f"webshop/B0G{i}/0" for i in range(6)]


def _eps(scores: list[float]) -> list[Trajectory]:
    return [Trajectory(g, "webshop", "buy", "obs", [Step("click[buy now]", "done")], s / 100,
                       s == 100, True, {"kind": "policy"}) for g, s in zip(GOALS, scores)]


def _rec(parent: str, success, solved: list[bool], diverged=None) -> dict:
    n = len(solved)
    return LabelRecord(parent.split("#")[0], parent, "expert:x", success, list(range(0, 2 * n, 2)),
                       solved, diverged or [False] * n, ["neutral"] * (2 * n), [], 0).to_dict()


def make_run(path: Path, evals: dict[str, list[float]], expert: list[float] | None = None,
             labels: dict[int, list[dict]] | None = None, cfg: dict | None = None) -> Path:
    """A run dir with one final evaluation per method (iteration 1, SFT 0) on GOALS, the
    expert's evaluation when given, and EEF label files per iteration."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg or {"env": {"name": "webshop"}}))
    rows = []
    for m, scores in evals.items():
        name = m if m == "sft" else f"{m}/it1"
        write_jsonl(path / f"rollouts/eval/{name}.jsonl", _eps(scores))
        rows.append({"stage": f"eval/{name}", "method": m, "iteration": 0 if m == "sft" else 1,
                     "split": "test", **summarize(_eps(scores))})
    if expert is not None:
        write_jsonl(path / "rollouts/eval/expert.jsonl", _eps(expert))
        rows.append({"stage": "expert/eval", "method": "expert", "iteration": None,
                     "policy": "expert:heuristic", "output": "rollouts/eval/expert.jsonl",
                     "split": "test", **summarize(_eps(expert))})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for it, recs in (labels or {}).items():
        (path / "labels").mkdir(exist_ok=True)
        (path / f"labels/eef-it{it}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.fixture
def cmp_dir(tmp_path):
    root = tmp_path / "cmp"
    # seed 0 / seed 1: per goal, EEF = SFT + 20 (seed 0) and + 10 (seed 1) on every goal
    sft0 = [0, 20, 40, 60, 80, 50]
    sft1 = [10, 10, 30, 50, 70, 40]
    make_run(root / "seed0", {"sft": sft0, "eef": [s + 20 for s in sft0],
                              "rft_xn": [s + 20 for s in sft0]},
             expert=[100, 100, 0, 0, 100, 100],
             labels={1: [_rec("e/a", False, [False, True, False]),   # solvable after s0
                         _rec("e/b", False, [True, False]),          # solvable at s0 only
                         _rec("e/c", False, [False, True], [False, True]),  # diverged: not
                         _rec("e/d", True, [True, True])],           # a success: left out
                     2: [_rec("e/a", False, [False, False, False]),
                         _rec("e/b", False, [False, False]),
                         _rec("e/c", False, [False, False, True])]})
    make_run(root / "seed1", {"sft": sft1, "eef": [s + 10 for s in sft1],
                              "rft_xn": [s + 20 for s in sft1]},
             expert=[100, 100, 0, 0, 100, 100],
             labels={1: [_rec("e/a", None, [False, False])]})  # older record: no success field
    return root


def test_paired_differences_from_the_run_dirs(cmp_dir):
    c = comparison(load_runs([cmp_dir]))
    by = {(p.a, p.b): p for p in c.pairs}
    assert list(by) == [("rft_xn", "sft"), ("eef", "sft"), ("eef", "rft_xn"), ("eef", "expert")]
    p = by[("eef", "sft")]
    assert (p.goals, p.runs_a, p.runs_b) == (6, 2, 2)
    assert p.score_diff == pytest.approx(15.0)  # (20 + 10) / 2 on every goal
    assert p.score_lo == pytest.approx(15.0) and p.score_hi == pytest.approx(15.0)
    assert (p.a_better, p.b_better, p.ties) == (6, 0, 0)
    q = by[("eef", "rft_xn")]
    assert q.score_diff == pytest.approx(-5.0) and q.b_better == 6
    e = by[("eef", "expert")]
    # expert: 100 on g0, g1, g4, g5; 0 on g2, g3; EEF's per-goal means below
    eef = [(s0 + 20 + s1 + 10) / 2 for s0, s1 in zip([0, 20, 40, 60, 80, 50],
                                                     [10, 10, 30, 50, 70, 40])]
    exp = [100, 100, 0, 0, 100, 100]
    assert e.score_diff == pytest.approx(sum(a - b for a, b in zip(eef, exp)) / 6)
    # EEF wins g4 in seed 0 only (80 + 20): a win rate of 1/2 on g4, 1/12 over the goals
    assert e.win_rate_a == pytest.approx(1 / 12) and e.win_rate_b == pytest.approx(4 / 6)
    assert e.win_rate_diff == pytest.approx(1 / 12 - 4 / 6)
    assert e.win_rate_lo < e.win_rate_diff < e.win_rate_hi < 0
    assert (e.a_better, e.b_better) == (2, 4)
    assert c.notes == []


def test_solvable_failures_per_iteration_and_overall(cmp_dir):
    rows = {(r.method, r.iteration): r for r in solvable_failures(load_runs([cmp_dir]))}
    assert list(rows) == [("eef", 1), ("eef", 2), ("eef", None)]
    it1, it2, all_ = rows[("eef", 1)], rows[("eef", 2)], rows[("eef", None)]
    # it1: seed0 a, b, c failed (d succeeded), seed1 a (expert_success None: failures only)
    assert (it1.runs, it1.failed, it1.with_solvable, it1.with_solvable_after_s0) == (2, 4, 2, 1)
    assert it1.share == 0.5 and it1.share_after_s0 == 0.25
    assert (it2.runs, it2.failed, it2.with_solvable, it2.with_solvable_after_s0) == (1, 3, 1, 1)
    # over both iterations, per run: seed0 a (it1), b (it1), c (it2) solvable; seed1 a not
    assert (all_.runs, all_.failed, all_.with_solvable, all_.with_solvable_after_s0) == (2, 4, 3, 2)


def test_simulate_successful_runs_leave_unknown_records_out(tmp_path):
    run = make_run(tmp_path / "r", {"sft": [0] * 6},
                   labels={1: [_rec("e/a", None, [True]), _rec("e/b", False, [True])]},
                   cfg={"env": {"name": "webshop"}, "method": {"simulate_successful": True}})
    (row, _) = solvable_failures(load_runs([run]))
    assert (row.failed, row.with_solvable) == (1, 1)


def test_default_and_given_pairs():
    assert default_pairs(["sft", "rft", "rft_xn", "eef", "expert"]) == [
        ("rft", "sft"), ("rft_xn", "sft"), ("eef", "sft"), ("rft", "rft_xn"),
        ("eef", "rft_xn"), ("eef", "expert")]
    assert default_pairs(["eef", "expert/0", "expert/1"]) == [("eef", "expert/0"),
                                                              ("eef", "expert/1")]
    assert default_pairs(["sft"]) == []
    assert parse_pairs("eef-rft_xn, eef-expert,") == [("eef", "rft_xn"), ("eef", "expert")]
    with pytest.raises(ReportError, match="A-B"):
        parse_pairs("eef")


def test_no_expert_and_unknown_pairs_are_notes(tmp_path):
    run = make_run(tmp_path / "r", {"sft": [0, 0, 0, 0, 0, 100], "eef": [100] * 6})
    c = comparison(load_runs([run]))
    assert [(p.a, p.b) for p in c.pairs] == [("eef", "sft")]
    assert c.notes == [NO_EXPERT_NOTE]
    c = comparison(load_runs([run]), [("eef", "expert"), ("eef", "sft")])
    assert [(p.a, p.b) for p in c.pairs] == [("eef", "sft")]
    assert "eef - expert: no evaluation of expert" in c.notes[1]


def test_unequal_goal_sets_are_noted(tmp_path):
    a = make_run(tmp_path / "a", {"sft": [0] * 6, "eef": [50] * 6})
    lines = (a / "rollouts/eval/eef/it1.jsonl").read_text().splitlines()
    (a / "rollouts/eval/eef/it1.jsonl").write_text("\n".join(lines[:4]) + "\n")
    (p,) = comparison(load_runs([a])).pairs
    assert (p.goals, p.only_a, p.only_b) == (4, 0, 2)
    assert "compared on the 4 goals both evaluated" in comparison(load_runs([a])).notes[-1]


def test_write_comparison_files(cmp_dir):
    c = write_comparison([cmp_dir], cmp_dir)
    data = json.loads((cmp_dir / "paired.json").read_text())
    assert [(p["a"], p["b"]) for p in data["pairs"]] == [(p.a, p.b) for p in c.pairs]
    assert data["pairs"][1]["score_diff"] == pytest.approx(15.0)
    assert data["solvable_failures"][0]["share"] == 0.5
    md = (cmp_dir / "paired.md").read_text()
    assert "| eef - sft | 6 (6) | 2/2 |" in md and "+15.0 [+15.0, +15.0]" in md
    assert "interval over task families" in md and data["unit"] == "family"
    assert UNITS["family"] in md and c.resampled == UNITS["family"]
    write_comparison([cmp_dir], cmp_dir / "g", unit="goal")
    md_goal = (cmp_dir / "g" / "paired.md").read_text()
    assert "| eef - sft | 6 | 2/2 |" in md_goal and UNITS["goal"] in md_goal
    with pytest.raises(ReportError, match="unit 'product'"):
        write_comparison([cmp_dir], cmp_dir / "x", unit="product")
    assert "| eef | all | 2 | 4 | 3 (75.0%) | 2 (50.0%) |" in md


def test_report_shows_the_expert_row_and_the_paired_section(cmp_dir, tmp_path):
    html = build_report([cmp_dir], tmp_path / "r.html", QUIET).read_text(encoding="utf-8")
    summary = {r["method"]: r for r in find_table(html, "method", "split", "runs", "episodes")}
    assert summary["expert"]["split"] == "test" and summary["expert"]["win rate (%)"] == "66.7 ± 0.0"
    assert html_escape(UNITS["family"]) in html  # the markdown's words, one source
    pairs = {r["A - B"]: r for r in find_table(html, "A - B", "goals (families)")}
    assert pairs["eef - sft"]["score diff"] == "+15.0 [+15.0, +15.0]"
    assert pairs["eef - expert"]["win rate diff (pp)"].startswith("-58.3 [")
    solv = find_table(html, "method", "iteration", "runs", "failed expert trajectories")
    assert [r["with a solvable state"] for r in solv] == ["2 (50.0%)", "1 (33.3%)", "3 (75.0%)"]
    only = build_report([cmp_dir], tmp_path / "o.html",
                        ReportConfig(progress=False, pairs=[("rft_xn", "eef")]))
    shown = find_table(only.read_text(encoding="utf-8"), "A - B", "goals (families)")
    assert [r["A - B"] for r in shown] == ["rft_xn - eef"]
